"""Samples and instances on a real file: idempotent upserts, bad values, series reads, retention, typed instances."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from forecasting.store import Instance, Store
from tests.store import T0, cpu_rows


def test_upserts_are_idempotent_and_update_values(store: Store) -> None:
    rows = cpu_rows("i-a", 10) + cpu_rows("i-b", 5)
    assert store.samples.upsert(rows) == 15
    assert store.samples.upsert(rows) == 15
    assert store.samples.count() == 15
    store.samples.upsert([("i-a", "cpu", T0 + 300, 99.5)])
    ts, vals = store.samples.series("i-a")["cpu"]
    assert store.samples.count() == 15
    assert ts.tolist() == [T0 + 300 * k for k in range(10)]
    assert vals.tolist() == [10.0, 99.5, *[10.0 + k for k in range(2, 10)]]
    assert store.samples.newest_per_series() == {("i-a", "cpu"): T0 + 2700, ("i-b", "cpu"): T0 + 1200}


def test_a_failing_upsert_writes_none_of_its_rows(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        store.samples.upsert([*cpu_rows("i-a", 5), (None, "cpu", T0 + 9000, 1.0)])
    assert store.samples.count() == 0


def test_non_finite_values_are_dropped_and_the_rest_written(store: Store) -> None:
    bad = [("i-a", "cpu", T0 + 9000, math.nan), ("i-a", "cpu", T0 + 9300, math.inf), ("i-a", "memory", T0, np.float64("nan"))]
    assert store.samples.upsert([*cpu_rows("i-a", 5), *bad]) == 5
    assert store.samples.count() == 5
    assert store.db.query("SELECT COUNT(*) FROM samples WHERE value != value")[0][0] == 0


def test_series_latest_values_and_newest_timestamps(store: Store) -> None:
    store.samples.upsert(
        cpu_rows("i-a", 6) + [("i-a", "memory", T0 + 300 * k, 50.0 + k) for k in range(6)] + cpu_rows("i-b", 3, value=70)
    )
    window = store.samples.series("i-a", start=T0 + 600, end=T0 + 1200)
    assert {m: ts.tolist() for m, (ts, _) in window.items()} == {
        "cpu": [T0 + 600, T0 + 900, T0 + 1200],
        "memory": [T0 + 600, T0 + 900, T0 + 1200],
    }
    assert window["cpu"][0].dtype == np.int64 and window["cpu"][1].dtype == float
    assert list(store.samples.series("i-a", metrics=["memory"])) == ["memory"]
    assert store.samples.series("i-none") == {}
    assert store.samples.latest_values() == {}  # samples of instances the store does not know are not read
    for iid in ("i-a", "i-b"):
        store.samples.upsert_instance(iid, None, 80, T0)
    assert store.samples.latest_values() == {"i-a": (T0 + 1500, 15.0), "i-b": (T0 + 600, 72.0)}
    assert store.samples.latest_values("memory") == {"i-a": (T0 + 1500, 55.0)}
    assert store.samples.newest_ts("i-b") == T0 + 600 and store.samples.newest_ts("i-b", "memory") is None
    assert store.samples.newest_ts() == T0 + 1500 and store.samples.newest_ts(metric="network_in") is None  # of any instance


def test_retention_prunes_only_older_samples(store: Store) -> None:
    store.samples.upsert(cpu_rows("i-a", 10) + cpu_rows("i-b", 10))
    cutoff = T0 + 300 * 4
    assert store.samples.prune(cutoff) == 8
    assert store.samples.count() == 12
    assert min(int(r[0]) for r in store.db.query("SELECT ts FROM samples")) == cutoff  # the cutoff itself is kept
    assert store.samples.prune(cutoff) == 0


def test_instances_first_and_last_seen(store: Store) -> None:
    store.samples.upsert_instance("i-a", "web-1", 80, T0)
    store.samples.upsert_instance("i-a", None, 70, T0 + 600)  # no name this time: the old one stays
    store.samples.upsert_instance("i-a", "web-one", 70, T0 + 300)  # an older sighting does not move last_seen back
    store.samples.upsert_instance("i-b", None, 90, T0 + 60)
    assert store.samples.instance("i-a") == Instance("i-a", "web-one", 70.0, T0, T0 + 600)
    assert store.samples.instances() == [store.samples.instance("i-a"), Instance("i-b", None, 90.0, T0 + 60, T0 + 60)]
    assert store.samples.instance("i-none") is None


def test_trailing_series_ends_at_each_instances_newest_sample(tmp_path: Path) -> None:
    with Store(tmp_path / "h.db") as store:
        for iid in ("i-a", "i-b", "i-quiet"):
            store.samples.upsert_instance(iid, None, 80.0, 0)
        rows = [("i-a", "cpu", t, t / 100) for t in range(0, 10_000, 300)]
        rows += [("i-b", "cpu", t, 50.0) for t in range(0, 4_000, 300)]  # stopped reporting earlier
        rows += [("i-a", "memory", t, 1.0) for t in range(0, 20_000, 300)]  # other metrics do not count
        rows += [("i-orphan", "cpu", 9_900, 1.0)]  # samples without an instance row are not listed
        store.samples.upsert(rows)

        series = store.samples.trailing(1_200, "cpu")
        assert set(series) == {"i-a", "i-b"}
        ts_a, values_a = series["i-a"]
        assert ts_a.tolist() == [8_700, 9_000, 9_300, 9_600, 9_900]  # both ends included
        assert np.allclose(values_a, ts_a / 100)
        assert series["i-b"][0].tolist() == [2_700, 3_000, 3_300, 3_600, 3_900]
        assert store.samples.trailing(600, "memory")["i-a"][0].tolist() == [19_200, 19_500, 19_800]
        assert store.samples.newest_ts("i-a") == 9_900
        assert store.samples.newest_ts("i-a", "memory") == 19_800
        assert store.samples.newest_ts("i-quiet") is None


def test_trailing_series_of_an_empty_store(store: Store) -> None:
    assert store.samples.trailing(86_400) == {}
