"""Rolling-origin backtest, error metrics, split-conformal intervals and the champion rule.

The backtest window is the last ``backtest_days`` of the training frame (at most half of it).
Each model is fitted once on the rows before that window, then forecasts from an origin every
hour inside it, each forecast seeing only rows up to its origin (Darts' ``historical_forecasts``
with ``retrain=False``). The residuals calibrate per-step interval offsets (split conformal,
nominal 90 %), and the lowest MASE picks the champion.

Every function here is pure maths on arrays and frames; nothing reads or writes files.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecasting.features import DAY
from forecasting.models import MODEL_NAMES
from forecasting.models.base import ForecastModel, ModelError, interval_bounds

CONFIDENCE = 0.90
"""Nominal coverage of the calibrated intervals."""
MAX_WINDOW_SHARE = 0.5
"""The backtest window never takes more than this share of the rows (the rest fits the model)."""
MIN_SCALE = 1e-3
"""Floor of the MASE scale (CPU points), so a constant history cannot divide by zero."""


# ---- metrics (NaN actuals are ignored everywhere) -------------------------
def _pairs(actual: np.ndarray, forecast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    actual, forecast = np.asarray(actual, dtype=float).ravel(), np.asarray(forecast, dtype=float).ravel()
    ok = np.isfinite(actual) & np.isfinite(forecast)
    return actual[ok], forecast[ok]


def mape(actual: np.ndarray, forecast: np.ndarray) -> float | None:
    """Mean absolute percentage error (%), over actuals that are not zero; None when all are."""
    a, f = _pairs(actual, forecast)
    keep = np.abs(a) > 1e-9
    return float(np.mean(np.abs(a[keep] - f[keep]) / np.abs(a[keep])) * 100) if keep.any() else None


def smape(actual: np.ndarray, forecast: np.ndarray) -> float | None:
    """Symmetric MAPE (%, 0–200): mean of 2|a − f| / (|a| + |f|), a pair of zeros counting as 0."""
    a, f = _pairs(actual, forecast)
    if len(a) == 0:
        return None
    denominator = np.abs(a) + np.abs(f)
    terms = np.divide(2 * np.abs(a - f), denominator, out=np.zeros_like(a), where=denominator > 0)
    return float(np.mean(terms) * 100)


def mase(actual: np.ndarray, forecast: np.ndarray, scale: float) -> float | None:
    """Mean absolute error divided by ``scale`` (the in-sample seasonal-naive error)."""
    a, f = _pairs(actual, forecast)
    return float(np.mean(np.abs(a - f)) / max(scale, MIN_SCALE)) if len(a) else None


def rmse(actual: np.ndarray, forecast: np.ndarray) -> float | None:
    """Root mean squared error (CPU points)."""
    a, f = _pairs(actual, forecast)
    return float(np.sqrt(np.mean((a - f) ** 2))) if len(a) else None


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float | None:
    """Share (0–1) of actuals inside [lower, upper]."""
    a = np.asarray(actual, dtype=float).ravel()
    lo, hi = np.asarray(lower, dtype=float).ravel(), np.asarray(upper, dtype=float).ravel()
    ok = np.isfinite(a) & np.isfinite(lo) & np.isfinite(hi)
    return float(np.mean((a[ok] >= lo[ok]) & (a[ok] <= hi[ok]))) if ok.any() else None


def mase_scale(values: np.ndarray, season: int) -> float:
    """Mean |y_t − y_{t−season}| over the history (one-step naive error when it is shorter than a season).

    Floored at ``MIN_SCALE`` so a constant history still gives a finite MASE.
    """
    y = np.asarray(values, dtype=float)
    for lag in (season, 1):
        if len(y) > lag:
            diff = np.abs(y[lag:] - y[:-lag])
            diff = diff[np.isfinite(diff)]
            if len(diff) >= min(season, 12) or (lag == 1 and len(diff)):
                return max(float(np.mean(diff)), MIN_SCALE)
    return MIN_SCALE


def score(actual: np.ndarray, mean: np.ndarray, lower: np.ndarray, upper: np.ndarray, scale: float) -> dict[str, float | None]:
    """All error metrics of a set of forecasts: mape, smape, mase, rmse, coverage."""
    return {
        "mape": mape(actual, mean), "smape": smape(actual, mean), "mase": mase(actual, mean, scale),
        "rmse": rmse(actual, mean), "coverage": coverage(actual, lower, upper),
    }


# ---- split-conformal intervals ---------------------------------------------
def conformal_offsets(residuals: np.ndarray, confidence: float = CONFIDENCE) -> np.ndarray:
    """Per-step [lower, upper] offsets from residuals (actual − forecast) [origins, steps].

    Offsets are the α/2 and 1 − α/2 residual quantiles with the finite-sample correction
    (ranks ⌊(n+1)α/2⌋ and ⌈(n+1)(1−α/2)⌉, clamped to the sample), always around the point
    forecast (lower ≤ 0 ≤ upper) and never narrower than at an earlier step.
    """
    residuals = np.atleast_2d(np.asarray(residuals, dtype=float))
    alpha = 1 - confidence
    offsets = np.zeros((residuals.shape[1], 2))
    for step in range(residuals.shape[1]):
        r = np.sort(residuals[:, step][np.isfinite(residuals[:, step])])
        if len(r) == 0:
            offsets[step] = offsets[step - 1] if step else 0.0
            continue
        n = len(r)
        low_rank = min(max(math.floor((n + 1) * alpha / 2 + 1e-9), 1), n)  # 1e-9: 1 − 0.9 is not exactly 0.1
        high_rank = min(max(math.ceil((n + 1) * (1 - alpha / 2) - 1e-9), 1), n)
        offsets[step] = (min(r[low_rank - 1], 0.0), max(r[high_rank - 1], 0.0))
    offsets[:, 0] = np.minimum.accumulate(offsets[:, 0])
    offsets[:, 1] = np.maximum.accumulate(offsets[:, 1])
    return offsets


def cross_fitted_bounds(actual: np.ndarray, mean: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Bounds for each origin calibrated on the *other* half of the origins (earlier vs later).

    Scoring an interval on the residuals it was calibrated on would report the nominal level
    by construction; this two-fold split gives an honest coverage inside one backtest.
    """
    residuals = np.asarray(actual, dtype=float) - np.asarray(mean, dtype=float)
    count = len(residuals)
    if count < 4:
        return interval_bounds(mean, conformal_offsets(residuals, confidence))
    half = count // 2
    lower, upper = np.empty_like(residuals), np.empty_like(residuals)
    for part, other in ((slice(0, half), slice(half, count)), (slice(half, count), slice(0, half))):
        lower[part], upper[part] = interval_bounds(mean[part], conformal_offsets(residuals[other], confidence))
    return lower, upper


# ---- the rolling-origin backtest -------------------------------------------
@dataclass(frozen=True)
class BacktestPlan:
    """Rows [0, split) fit the model; ``origins`` are row positions forecasting rows origin+1..origin+horizon."""

    split: int
    origins: np.ndarray
    horizon: int
    scale: float


def plan_backtest(frame: pd.DataFrame, period: int, horizon: int, backtest_days: float) -> BacktestPlan:
    """Where the backtest window starts, its hourly origins, and the MASE scale of the rows before it."""
    rows = len(frame)
    window = min(int(backtest_days * DAY // period), int(rows * MAX_WINDOW_SHARE))
    split = rows - window
    every = max(1, 3600 // period)
    last_origin = rows - 1 - horizon
    origins = np.arange(split - 1, last_origin + 1, every, dtype=np.int64) if split >= 1 else np.empty(0, dtype=np.int64)
    cpu = frame["cpu"].to_numpy(dtype=float) if "cpu" in frame else np.empty(0)
    return BacktestPlan(split, origins, horizon, mase_scale(cpu[:split], DAY // period))


@dataclass
class ModelBacktest:
    """One model's backtest: forecasts from every origin, actuals, offsets, scores and timings."""

    model: str
    origin_ts: np.ndarray
    timestamps: np.ndarray  # [origins, horizon]
    actual: np.ndarray  # [origins, horizon]; NaN where the grid has no value
    mean: np.ndarray
    lower: np.ndarray  # cross-fitted bounds (see cross_fitted_bounds)
    upper: np.ndarray
    offsets: np.ndarray  # [horizon, 2] from all residuals: what the refit model uses
    scores: dict[str, float | None] = field(default_factory=dict)
    fit_seconds: float = 0.0
    predict_seconds: float = 0.0

    def rows(self) -> list[tuple[str, int, int, float, float, float, float]]:
        """``backtest_points`` rows (model, origin_ts, ts, actual, mean, lower, upper) with a known actual."""
        out = []
        for i, origin in enumerate(self.origin_ts):
            for j, ts in enumerate(self.timestamps[i]):
                if np.isfinite(self.actual[i, j]):
                    out.append((self.model, int(origin), int(ts), float(self.actual[i, j]), float(self.mean[i, j]),
                                float(self.lower[i, j]), float(self.upper[i, j])))
        return out


def backtest_model(model: ForecastModel, frame: pd.DataFrame, plan: BacktestPlan) -> ModelBacktest:
    """Fit ``model`` once on the rows before the window, forecast from every origin; ModelError if it cannot."""
    if len(plan.origins) == 0:
        raise ModelError(f"{model.name}: {len(frame)} points are too few to backtest a {plan.horizon}-step horizon")
    started = time.perf_counter()
    model.fit(frame.iloc[: plan.split])
    fitted = time.perf_counter()
    visible = frame.iloc[: int(plan.origins[-1]) + 1]  # nothing after the last origin is ever passed in
    mean = np.clip(np.asarray(model.predict_at(visible, plan.origins, plan.horizon), dtype=float), 0.0, 100.0)
    predicted = time.perf_counter()
    if mean.shape != (len(plan.origins), plan.horizon) or not np.all(np.isfinite(mean)):
        raise ModelError(f"{model.name}: backtest forecasts are not finite")
    cpu = frame["cpu"].to_numpy(dtype=float)
    index = frame.index.to_numpy(dtype=np.int64)
    ahead = plan.origins[:, None] + np.arange(1, plan.horizon + 1)
    actual = cpu[ahead]
    if not np.isfinite(actual).any():
        raise ModelError(f"{model.name}: the backtest window has no CPU values to score against")
    lower, upper = cross_fitted_bounds(actual, mean)
    result = ModelBacktest(
        model=model.name, origin_ts=index[plan.origins], timestamps=index[ahead], actual=actual, mean=mean,
        lower=lower, upper=upper, offsets=conformal_offsets(actual - mean),
        fit_seconds=fitted - started, predict_seconds=(predicted - fitted) / len(plan.origins),
    )
    result.scores = score(actual, mean, lower, upper, plan.scale)
    return result


def choose_champion(scores: list[dict]) -> str | None:
    """Lowest backtest MASE among models with status 'ok'; ties go to the simpler (earlier) family."""
    rank = {name: i for i, name in enumerate(MODEL_NAMES)}
    usable = [s for s in scores if s.get("status") == "ok" and s.get("mase") is not None and np.isfinite(s["mase"])]
    if not usable:
        return None
    return min(usable, key=lambda s: (s["mase"], rank.get(s["model"], len(rank))))["model"]
