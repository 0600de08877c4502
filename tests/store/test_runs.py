"""Training runs, model scores and backtest points on a real file: written together, NaN as NULL, read back typed."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest

from forecasting.store import BacktestPoint, Score, Store, TrainingRun
from tests.store import T0


def a_run(instance: str = "i-a", champion: str | None = "naive") -> dict:
    return {
        "instance_id": instance,
        "started_at": T0,
        "finished_at": T0 + 30,
        "train_start": T0 - 86_400,
        "train_end": T0,
        "points": 288,
        "champion": champion,
        "model_dir": f"models/{instance}/1",
    }


def test_training_runs_store_nan_scores_as_null_and_read_back_typed(store: Store) -> None:
    scores = [
        {
            "model": "naive",
            "status": "ok",
            "mape": 5.5,
            "smape": np.float64(5.0),
            "mase": 1.2,
            "rmse": 3.0,
            "coverage": 0.9,
            "fit_seconds": 0.01,
            "predict_seconds": 0.001,
        },
        {
            "model": "lstm",
            "status": "skipped",
            "reason": "too little history",
            "mape": math.nan,
            "mase": np.float64("nan"),
            "rmse": math.inf,
        },
    ]
    backtest = [("naive", T0 - 3600, T0 - 3300 + 300 * k, 10.0, 11.0, 9.0, 13.0) for k in range(3)]
    run_id = store.runs.record(a_run(), scores, backtest)
    by_model = {score.model: score for score in store.runs.scores(run_id=run_id)}
    assert by_model["lstm"] == Score(run_id, "i-a", "lstm", "skipped", "too little history", *[None] * 7)
    assert by_model["naive"] == Score(run_id, "i-a", "naive", "ok", None, 5.5, 5.0, 1.2, 3.0, 0.9, 0.01, 0.001)
    assert store.db.query("SELECT COUNT(*) FROM model_scores WHERE mape != mape")[0][0] == 0  # no NaN stored anywhere
    assert store.runs.backtest_points(run_id)[0] == BacktestPoint(run_id, "naive", T0 - 3600, T0 - 3300, 10.0, 11.0, 9.0, 13.0)
    assert [p.ts for p in store.runs.backtest_points(run_id)] == [T0 - 3300 + 300 * k for k in range(3)]
    second = store.runs.record(a_run(champion="linear"), scores[:1], [])
    assert store.runs.latest() == {"i-a": TrainingRun(second, "i-a", T0, T0 + 30, T0 - 86_400, T0, 288, "linear", "models/i-a/1")}
    assert [run.run_id for run in store.runs.history("i-a")] == [second, run_id]
    assert [run.run_id for run in store.runs.history("i-a", limit=1)] == [second]
    assert [(s.run_id, s.model) for s in store.runs.scores()] == [(second, "naive")]  # the latest run of each instance


def test_scores_of_every_instances_latest_run_come_by_instance_then_model(store: Store) -> None:
    ok = [{"model": m, "status": "ok", "mase": 1.0} for m in ("naive", "arima")]
    store.runs.record(a_run("i-b"), ok, [])
    store.runs.record(a_run("i-a"), ok, [])
    assert [(s.instance_id, s.model) for s in store.runs.scores()] == [
        ("i-a", "arima"),
        ("i-a", "naive"),
        ("i-b", "arima"),
        ("i-b", "naive"),
    ]


def test_a_training_run_with_a_bad_row_is_not_half_stored(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.runs.record(a_run(), [{"model": "naive", "status": "ok"}], [(None, T0, T0 + 300, 1.0, 1.0, 0.0, 2.0)])
    assert store.db.query("SELECT COUNT(*) FROM training_runs")[0][0] == 0
    assert store.db.query("SELECT COUNT(*) FROM model_scores")[0][0] == 0
    assert store.runs.latest() == {}


def test_nan_backtest_points_are_left_out_and_the_run_kept(store: Store) -> None:
    points = [
        ("naive", T0, T0 + 300, 1.0, 1.0, 0.0, 2.0),
        ("naive", T0, T0 + 600, None, 1.0, 0.0, 2.0),
        ("naive", T0, T0 + 900, 1.0, math.nan, 0.0, 2.0),
    ]
    run_id = store.runs.record(a_run(), [{"model": "naive", "status": "ok"}], points)
    assert [p.ts for p in store.runs.backtest_points(run_id)] == [T0 + 300]


def test_only_the_newest_run_of_each_instance_keeps_its_backtest(store: Store) -> None:
    point = [("naive", T0, T0 + 300, 1.0, 1.0, 0.0, 2.0)]
    old_a = store.runs.record(a_run("i-a"), [], point)
    only_b = store.runs.record(a_run("i-b"), [], point)
    new_a = store.runs.record(a_run("i-a"), [], point)
    assert [len(store.runs.backtest_points(r)) for r in (old_a, new_a, only_b)] == [0, 1, 1]
    assert len(store.runs.history("i-a")) == 2  # the champion's history stays
