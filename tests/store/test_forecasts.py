"""Stored forecasts on a real file: arrays round-trip rounded, the latest wins, retention keeps the newest of each."""

from __future__ import annotations

import numpy as np

from forecasting.store import ForecastRecord, Store
from tests.store import T0


def forecast_row(model: str, champion: bool, made_at: int, level: float, instance: str = "i-a") -> dict:
    ts = [made_at + 300 * k for k in range(1, 4)]
    return {
        "instance_id": instance,
        "run_id": 7,
        "model": model,
        "is_champion": champion,
        "made_at": made_at,
        "origin_ts": made_at,
        "timestamps": np.array(ts, dtype=np.int64),
        "mean": np.array([level, level + 1.123456, level + 2]),
        "lower": [level - 5] * 3,
        "upper": [level + 5] * 3,
    }


def test_forecasts_round_trip_typed_and_the_latest_wins(store: Store) -> None:
    store.forecasts.record([forecast_row("naive", True, T0, 40.0), forecast_row("arima", False, T0, 50.0)])
    store.forecasts.record([forecast_row("naive", True, T0 + 300, 60.0), forecast_row("arima", False, T0 + 300, 70.0)])
    [latest] = store.forecasts.latest("i-a")
    assert latest == ForecastRecord(
        forecast_id=3,
        instance_id="i-a",
        run_id=7,
        model="naive",
        is_champion=True,
        made_at=T0 + 300,
        origin_ts=T0 + 300,
        timestamps=(T0 + 600, T0 + 900, T0 + 1200),
        mean=(60.0, 61.1235, 62.0),
        lower=(55.0,) * 3,
        upper=(65.0,) * 3,
    )
    assert all(type(t) is int for t in latest.timestamps)
    every = store.forecasts.latest(champion_only=False)
    assert [(f.model, f.is_champion, f.mean[0]) for f in every] == [("arima", False, 70.0), ("naive", True, 60.0)]
    assert store.forecasts.champion_times() == {"i-a": T0 + 300}
    assert store.forecasts.prune(T0 + 300) == 2
    assert len(store.forecasts.latest(champion_only=False)) == 2
    assert store.forecasts.prune(T0 + 10**6) == 0  # each instance's and model's newest one always stays


def test_earlier_champion_forecasts_and_those_made_in_a_window(store: Store) -> None:
    store.forecasts.record(
        [forecast_row("naive", True, T0 + 300 * k, 10.0 * k) for k in range(4)]
        + [forecast_row("arima", False, T0 + 600, 1.0), forecast_row("naive", True, T0 + 600, 5.0, "i-b")]
    )
    before = store.forecasts.champion_before("i-a", T0 + 700)
    assert before is not None and (before.made_at, before.mean[0]) == (T0 + 600, 20.0)
    assert store.forecasts.champion_before("i-a", T0 - 1) is None
    assert [(f.instance_id, f.model, f.made_at) for f in store.forecasts.made_between(T0, T0 + 600)] == [
        ("i-a", "naive", T0 + 300),
        ("i-a", "naive", T0 + 600),
        ("i-a", "arima", T0 + 600),
        ("i-b", "naive", T0 + 600),
    ]
