"""The baselines every claim is measured against: last value, same time yesterday, last-hour trend.

They learn nothing but still follow the full contract (fit, predict, save, load), so
the backtest scores and calibrates them like any other model. Their saved state is the
recent CPU they need to forecast (a day and an hour), so a loaded baseline forecasts
identically even without fresh history.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from forecasting.clock import DAY
from forecasting.models.base import ForecastModel, ModelError

TREND_SECONDS = 3600
"""The linear baseline fits the last hour, as a Prometheus ``predict_linear(cpu[1h], ...)`` rule does."""


def last_values(cpu: np.ndarray, rows: np.ndarray, name: str) -> np.ndarray:
    """The newest CPU value that is not missing at or before each row (all rows at once)."""
    cpu = np.asarray(cpu, dtype=float)
    seen = np.where(np.isfinite(cpu), np.arange(len(cpu)), -1)
    newest = np.maximum.accumulate(seen)[rows] if len(cpu) else np.full(len(rows), -1)
    if np.any(newest < 0):
        raise ModelError(f"{name}: no CPU value to forecast from")
    return cpu[newest]


def last_value(history: pd.DataFrame, name: str) -> float:
    """The newest CPU value that is not missing."""
    cpu = history["cpu"].to_numpy(dtype=float) if "cpu" in history else np.empty(0)
    seen = cpu[np.isfinite(cpu)]
    if len(seen) == 0:
        raise ModelError(f"{name}: no CPU value to forecast from")
    return float(seen[-1])


class BaselineModel(ForecastModel):
    """Shared plumbing: fitting keeps the history; the state is the recent CPU the forecast needs."""

    keep_seconds: ClassVar[int] = DAY + TREND_SECONDS

    def fit(self, frame: pd.DataFrame) -> Self:
        """Check there is enough CPU history and keep it; nothing is estimated."""
        points = int(frame["cpu"].notna().sum()) if "cpu" in frame else 0
        if points < self.min_points:
            raise ModelError(f"{self.name}: needs at least {self.min_points} points with CPU, got {points}")
        self.history = frame[["cpu"]]
        return self

    def state(self) -> dict[str, Any]:
        if self.history is None or len(self.history) == 0:
            return {"ts": [], "cpu": []}
        recent = self.history["cpu"].loc[int(self.history.index[-1]) - self.keep_seconds :]
        return {"ts": [int(t) for t in recent.index], "cpu": [None if np.isnan(v) else float(v) for v in recent]}

    def set_state(self, state: dict[str, Any]) -> None:
        ts = np.asarray(state.get("ts", []), dtype=np.int64)
        cpu = np.asarray([np.nan if v is None else v for v in state.get("cpu", [])], dtype=float)
        self.history = pd.DataFrame({"cpu": cpu}, index=pd.Index(ts, name="ts")) if len(ts) else None


class NaiveModel(BaselineModel):
    """Every step equals the last CPU value seen."""

    name: ClassVar[str] = "naive"
    min_points: int = 1

    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        return np.full(horizon, last_value(history, self.name))

    def predict_at(self, frame: pd.DataFrame, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        horizon = horizon or self.horizon
        rows = np.asarray(rows, dtype=np.int64)
        return np.repeat(last_values(frame["cpu"].to_numpy(dtype=float), rows, self.name)[:, None], horizon, axis=1)


class SeasonalNaiveModel(BaselineModel):
    """Every step equals the CPU one day before it; a missing value there falls back to the last value."""

    name: ClassVar[str] = "seasonal_naive"

    def __init__(self, period: int = 300, horizon: int = 12) -> None:
        super().__init__(period, horizon)
        self.min_points = DAY // period + 1

    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        origin = int(history.index[-1])
        day_ago = origin + self.period * np.arange(1, horizon + 1, dtype=np.int64) - DAY
        values = history["cpu"].reindex(day_ago).to_numpy(dtype=float, copy=True)
        missing = ~np.isfinite(values)
        if missing.any():
            values[missing] = last_value(history, self.name)
        return values

    def predict_at(self, frame: pd.DataFrame, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        horizon = horizon or self.horizon
        rows = np.asarray(rows, dtype=np.int64)
        cpu = frame["cpu"].to_numpy(dtype=float)
        day_ago = rows[:, None] + np.arange(1, horizon + 1) - DAY // self.period  # the grid is regular
        values = np.where(day_ago >= 0, cpu[np.clip(day_ago, 0, None)], np.nan)
        missing = ~np.isfinite(values)
        if missing.any():
            fallback = np.repeat(last_values(cpu, rows, self.name)[:, None], horizon, axis=1)
            values[missing] = fallback[missing]
        return values


class LinearModel(BaselineModel):
    """Least-squares line through the last hour of CPU, extrapolated from the origin (``predict_linear``)."""

    name: ClassVar[str] = "linear"
    min_points: int = 2

    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        return linear_extrapolation(history["cpu"], horizon, self.period, self.name)

    def predict_at(self, frame: pd.DataFrame, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """The same least-squares line as ``linear_extrapolation``, for all origins at once (the grid is regular)."""
        horizon = horizon or self.horizon
        rows = np.asarray(rows, dtype=np.int64)
        cpu = frame["cpu"].to_numpy(dtype=float)
        width = max(1, TREND_SECONDS // self.period)  # the samples of the last hour, the origin's included
        padded = np.concatenate([np.full(width - 1, np.nan), cpu])
        y = np.lib.stride_tricks.sliding_window_view(padded, width)[rows]
        ok = np.isfinite(y)
        count = ok.sum(axis=1)
        x = self.period * (np.arange(width) - (width - 1.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            x_mean = (ok * x).sum(axis=1) / count
            y_mean = np.where(ok, y, 0.0).sum(axis=1) / count
            dx = np.where(ok, x - x_mean[:, None], 0.0)
            slope = (dx * np.where(ok, y - y_mean[:, None], 0.0)).sum(axis=1) / (dx**2).sum(axis=1)
        steps = self.period * np.arange(1, horizon + 1, dtype=float)
        line = (y_mean - slope * x_mean)[:, None] + slope[:, None] * steps
        flat = count < 2
        if flat.any():  # the trend is unknown: the last value, as in linear_extrapolation
            line[flat] = last_values(cpu, rows[flat], self.name)[:, None]
        return line


def linear_extrapolation(cpu: pd.Series, horizon: int, period: int, name: str = "linear") -> np.ndarray:
    """Fit ``a + b·(t − origin)`` to the samples of the last hour and read it at the future steps.

    With fewer than two samples in that hour the trend is unknown and the forecast is the last value.
    """
    origin = int(cpu.index[-1])
    recent = cpu.loc[origin - TREND_SECONDS + 1 :]
    x = (recent.index.to_numpy(dtype=np.int64) - origin).astype(float)
    y = recent.to_numpy(dtype=float)
    ok = np.isfinite(y)
    steps = period * np.arange(1, horizon + 1, dtype=float)
    if ok.sum() < 2:
        return np.full(horizon, last_value(cpu.to_frame("cpu"), name))
    x, y = x[ok], y[ok]
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
    intercept = float(y.mean() - slope * x.mean())
    return intercept + slope * steps
