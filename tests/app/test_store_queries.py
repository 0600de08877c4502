"""The store queries added for the dashboard, on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from forecasting.store import Store


def test_trailing_series_ends_at_each_instances_newest_sample(tmp_path: Path) -> None:
    with Store(tmp_path / "h.db") as store:
        for iid in ("i-a", "i-b", "i-quiet"):
            store.upsert_instance(iid, None, 80.0, 0)
        rows = [("i-a", "cpu", t, t / 100) for t in range(0, 10_000, 300)]
        rows += [("i-b", "cpu", t, 50.0) for t in range(0, 4_000, 300)]  # stopped reporting earlier
        rows += [("i-a", "memory", t, 1.0) for t in range(0, 20_000, 300)]  # other metrics do not count
        rows += [("i-orphan", "cpu", 9_900, 1.0)]  # samples without an instance row are not listed
        store.upsert_samples(rows)

        series = store.trailing_series(1_200, "cpu")
        assert set(series) == {"i-a", "i-b"}
        ts_a, values_a = series["i-a"]
        assert ts_a.tolist() == [8_700, 9_000, 9_300, 9_600, 9_900]  # both ends included
        assert np.allclose(values_a, ts_a / 100)
        assert series["i-b"][0].tolist() == [2_700, 3_000, 3_300, 3_600, 3_900]
        assert store.trailing_series(600, "memory")["i-a"][0].tolist() == [19_200, 19_500, 19_800]
        assert store.newest_sample_ts("i-a") == 9_900
        assert store.newest_sample_ts("i-a", "memory") == 19_800
        assert store.newest_sample_ts("i-quiet") is None


def test_trailing_series_of_an_empty_store(tmp_path: Path) -> None:
    with Store(tmp_path / "h.db") as store:
        assert store.trailing_series(86_400) == {}
