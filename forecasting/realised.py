"""Realised accuracy: how right stored forecasts were once their actuals arrived (pure maths, no I/O).

A forecast is scored step by step against the CPU sample of the same timestamp; steps whose
actual never arrived (a gap) are left out rather than counted as errors. Scores are kept as
*sums* (:class:`ErrorSums`), so they add across forecasts and hours and are turned into
MAPE, MASE and coverage only when shown: the store keeps one row of sums per instance, model
and hour instead of every forecast, and "the last day" or "the last week" is a sum over rows.

The definitions match the backtest's (``forecasting.backtest``): MAPE over actuals that are not
zero, MASE as the mean absolute error divided by the instance's mean absolute one-day
seasonal-naive error over the training window before the forecast (``scale``), coverage as the
share of actuals inside [lower, upper]. Kept apart from the store and the Prometheus exporter so
that both can share this one function.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from forecasting.backtest import MIN_SCALE

FIELDS = ("points", "abs_error", "scaled_error", "pct_error", "pct_points", "inside")


@dataclass
class ErrorSums:
    """Additive error sums of some forecast steps: scored points, Σ|e|, Σ|e|/scale, Σ|e|/|a| (%), its count, Σ inside."""

    points: int = 0
    abs_error: float = 0.0
    scaled_error: float = 0.0
    pct_error: float = 0.0
    pct_points: int = 0
    inside: int = 0

    def __add__(self, other: ErrorSums) -> ErrorSums:
        return ErrorSums(*(getattr(self, f) + getattr(other, f) for f in FIELDS))

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def scores(self) -> dict[str, float | int | None]:
        """MAPE (%), MASE, MAE, coverage (0–1) and the number of points they rest on (None where there are none)."""
        n = self.points
        return {
            "mape": self.pct_error / self.pct_points if self.pct_points else None,
            "mase": self.scaled_error / n if n else None,
            "mae": self.abs_error / n if n else None,
            "coverage": self.inside / n if n else None,
            "points": n,
        }


def score_forecast(
    timestamps: np.ndarray,
    mean: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    actual_ts: np.ndarray,
    actual: np.ndarray,
    scale: float,
) -> ErrorSums:
    """Error sums of one forecast against the actuals (``actual_ts`` sorted); steps without an actual are skipped."""
    stamps = np.asarray(timestamps, dtype=np.int64)
    actual_ts, actual = np.asarray(actual_ts, dtype=np.int64), np.asarray(actual, dtype=float)
    if len(actual_ts) == 0 or len(stamps) == 0:
        return ErrorSums()
    where = np.clip(np.searchsorted(actual_ts, stamps), 0, len(actual_ts) - 1)
    found = (actual_ts[where] == stamps) & np.isfinite(actual[where])
    a = actual[where][found]
    f = np.asarray(mean, dtype=float)[found]
    lo, hi = np.asarray(lower, dtype=float)[found], np.asarray(upper, dtype=float)[found]
    error = np.abs(a - f)
    nonzero = np.abs(a) > 1e-9
    return ErrorSums(
        points=len(a),
        abs_error=float(error.sum()),
        scaled_error=float(error.sum() / max(scale, MIN_SCALE)),
        pct_error=float(np.sum(error[nonzero] / np.abs(a[nonzero])) * 100),
        pct_points=int(nonzero.sum()),
        inside=int(np.sum((a >= lo) & (a <= hi))),
    )


def total(rows: Iterable[Mapping[str, Any] | sqlite3.Row]) -> ErrorSums:
    """The sum of stored rows (dicts or sqlite rows with the ``FIELDS`` columns)."""
    out = ErrorSums()
    for row in rows:
        out = out + ErrorSums(*(row[f] for f in FIELDS))
    return out
