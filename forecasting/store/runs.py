"""Training runs with their model scores and backtest points, written together and read back typed."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecasting.store.db import Database, columns


@dataclass(frozen=True)
class TrainingRun:
    """One training run of an instance: its window, the champion chosen and where its models were saved."""

    run_id: int
    instance_id: str
    started_at: int
    finished_at: int
    train_start: int | None
    train_end: int | None
    points: int
    champion: str | None  # None when no model could fit
    model_dir: str | None


@dataclass(frozen=True)
class Score:
    """One model's backtest scores in a run ('skipped': the reason, and no scores)."""

    run_id: int
    instance_id: str
    model: str
    status: str  # 'ok' or 'skipped'
    reason: str | None
    mape: float | None
    smape: float | None
    mase: float | None
    rmse: float | None
    coverage: float | None
    fit_seconds: float | None
    predict_seconds: float | None


@dataclass(frozen=True)
class BacktestPoint:
    """One backtest forecast step: what the model said at ``ts`` from ``origin_ts``, and what happened."""

    run_id: int
    model: str
    origin_ts: int
    ts: int
    actual: float
    mean: float
    lower: float
    upper: float


SCORE_FIELDS = ("model", "status", "reason", "mape", "smape", "mase", "rmse", "coverage", "fit_seconds", "predict_seconds")
"""The keys of a score as training writes it (``Score`` without the run and instance)."""


class Runs:
    """The ``training_runs``, ``model_scores`` and ``backtest_points`` tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self, run: dict[str, Any], scores: list[dict[str, Any]], backtest: list[tuple[str, int, int, float, float, float, float]]
    ) -> int:
        """Store one training run with its model scores and backtest points, atomically; returns run_id.

        ``run`` keys: instance_id, started_at, finished_at, train_start, train_end, points, champion, model_dir.
        ``scores`` items: the ``SCORE_FIELDS`` keys. ``backtest`` rows: (model, origin_ts, ts, actual, mean, lower, upper).
        """
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO training_runs (instance_id, started_at, finished_at, train_start, train_end, points, champion, model_dir) "
                "VALUES (:instance_id, :started_at, :finished_at, :train_start, :train_end, :points, :champion, :model_dir)",
                run,
            )
            run_id = int(cur.lastrowid or 0)
            conn.executemany(
                f"INSERT INTO model_scores (run_id, instance_id, {', '.join(SCORE_FIELDS)}) VALUES (?, ?, {', '.join('?' * len(SCORE_FIELDS))})",
                [(run_id, run["instance_id"], *(_finite_or_none(s.get(f)) for f in SCORE_FIELDS)) for s in scores],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO backtest_points (run_id, model, origin_ts, ts, actual, mean, lower, upper) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, *row) for row in backtest if _all_finite(row[3:])],  # a NaN point is left out, not the run
            )
            # Only the newest run's backtest is shown (Models page); older runs keep their scores, not their points.
            conn.execute(
                "DELETE FROM backtest_points WHERE run_id IN (SELECT run_id FROM training_runs WHERE instance_id = ? AND run_id < ?)",
                (run["instance_id"], run_id),
            )
        return run_id

    def latest(self) -> dict[str, TrainingRun]:
        """The newest training run of every instance."""
        rows = self.db.query(
            f"SELECT {columns(TrainingRun)} FROM training_runs WHERE run_id IN "
            "(SELECT MAX(run_id) FROM training_runs GROUP BY instance_id)"
        )
        return {run.instance_id: run for run in (TrainingRun(*row) for row in rows)}

    def history(self, instance_id: str, limit: int = 100) -> list[TrainingRun]:
        """Training runs of one instance, newest first (the champion's history)."""
        rows = self.db.query(
            f"SELECT {columns(TrainingRun)} FROM training_runs WHERE instance_id = ? ORDER BY run_id DESC LIMIT ?",
            (instance_id, limit),
        )
        return [TrainingRun(*row) for row in rows]

    def scores(self, run_id: int | None = None) -> list[Score]:
        """Model scores of one run, or of the latest run of every instance (by instance, then model)."""
        if run_id is not None:
            rows = self.db.query(f"SELECT {columns(Score)} FROM model_scores WHERE run_id = ? ORDER BY model", (run_id,))
        else:
            rows = self.db.query(
                f"SELECT {columns(Score)} FROM model_scores WHERE run_id IN "
                "(SELECT MAX(run_id) FROM training_runs GROUP BY instance_id) ORDER BY instance_id, model"
            )
        return [Score(*row) for row in rows]

    def backtest_points(self, run_id: int) -> list[BacktestPoint]:
        """The backtest of one run, by model, origin and step."""
        rows = self.db.query(
            f"SELECT {columns(BacktestPoint)} FROM backtest_points WHERE run_id = ? ORDER BY model, origin_ts, ts", (run_id,)
        )
        return [BacktestPoint(*row) for row in rows]


def _all_finite(values: Iterable[Any]) -> bool:
    """True when every value is a finite number (None, NaN and infinities are not)."""
    return all(isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v)) for v in values)


def _finite_or_none(value: Any) -> Any:
    """NaN and infinities are stored as NULL, never as NaN."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    return value
