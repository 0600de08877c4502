"""Rolling-origin backtest, error metrics, split-conformal intervals and the champion rule.

The backtest window is the last ``backtest_days`` of the training frame (at most half of it).
Each model is fitted once on the rows before that window, then forecasts from an origin every
15 minutes inside it, each forecast seeing only rows up to its origin (Darts'
``historical_forecasts`` with ``retrain=False``). The older half of the origins chooses (the
combination's members, the champion); the newer half calibrates the deployed model's interval
(``calibration``), so no residual does both. Scores cover all origins.

Every function here is pure maths on arrays and frames; nothing reads or writes files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecasting.calibration import Calibration, calibrate, cross_fitted_bounds, local_scale
from forecasting.clock import DAY
from forecasting.models import FAMILIES
from forecasting.models.base import ForecastModel, ModelError

ORIGIN_SECONDS = 15 * 60
"""A backtest origin every 15 minutes: 192 forecasts in two days, enough to calibrate on half of them."""
MIN_SPLIT_ORIGINS = 8
"""With fewer origins than this, all of them both choose and calibrate."""
CLEAR_EDGE = 0.05
"""A single model is deployed instead of the combination only if it is this much better on both halves."""
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
        "mape": mape(actual, mean),
        "smape": smape(actual, mean),
        "mase": mase(actual, mean, scale),
        "rmse": rmse(actual, mean),
        "coverage": coverage(actual, lower, upper),
    }


# ---- the rolling-origin backtest -------------------------------------------
@dataclass(frozen=True)
class BacktestPlan:
    """Rows [0, split) fit the model; ``origins`` are row positions forecasting rows origin+1..origin+horizon.

    The origins before ``choose_until`` (the older half) choose what is deployed (combination
    members, the champion); the later ones calibrate its interval, so no residual both picks a
    model and sizes its interval.
    """

    split: int
    origins: np.ndarray
    horizon: int
    scale: float

    @property
    def choose_until(self) -> int:
        """Index into ``origins``: [0, choose_until) choose, [choose_until, end) calibrate (all of them when too few)."""
        return len(self.origins) // 2 if len(self.origins) >= MIN_SPLIT_ORIGINS else len(self.origins)

    def calibrating(self) -> slice:
        """The origins that calibrate intervals."""
        return slice(self.choose_until if self.choose_until < len(self.origins) else 0, len(self.origins))


def plan_backtest(frame: pd.DataFrame, period: int, horizon: int, backtest_days: float) -> BacktestPlan:
    """Where the backtest window starts, its origins (every ``ORIGIN_SECONDS``), and the MASE scale of the rows before it."""
    rows = len(frame)
    window = min(int(backtest_days * DAY // period), int(rows * MAX_WINDOW_SHARE))
    split = rows - window
    every = max(1, ORIGIN_SECONDS // period)
    last_origin = rows - 1 - horizon
    origins = np.arange(split - 1, last_origin + 1, every, dtype=np.int64) if split >= 1 else np.empty(0, dtype=np.int64)
    cpu = frame["cpu"].to_numpy(dtype=float) if "cpu" in frame else np.empty(0)
    return BacktestPlan(split, origins, horizon, mase_scale(cpu[:split], DAY // period))


@dataclass
class ModelBacktest:
    """One model's backtest: forecasts from every origin, actuals, its calibration, scores and timings."""

    model: str
    origin_ts: np.ndarray
    timestamps: np.ndarray  # [origins, horizon]
    actual: np.ndarray  # [origins, horizon]; NaN where the grid has no value
    mean: np.ndarray
    lower: np.ndarray  # cross-fitted bounds (see calibration.cross_fitted_bounds)
    upper: np.ndarray
    calibration: Calibration  # from the calibrating origins: what the deployed model uses
    scores: dict[str, float | None] = field(default_factory=dict)
    choosing_mase: float | None = None  # MASE over the choosing origins only
    calibrating_mase: float | None = None  # and over the calibrating ones
    fit_seconds: float = 0.0
    predict_seconds: float = 0.0
    yardstick: ModelBacktest | None = None  # a combination's: what a single model must beat to be deployed instead

    def rows(self) -> list[tuple[str, int, int, float, float, float, float]]:
        """``backtest_points`` rows (model, origin_ts, ts, actual, mean, lower, upper) with a known actual."""
        out = []
        for i, origin in enumerate(self.origin_ts):
            for j, ts in enumerate(self.timestamps[i]):
                if np.isfinite(self.actual[i, j]):
                    out.append(
                        (
                            self.model,
                            int(origin),
                            int(ts),
                            float(self.actual[i, j]),
                            float(self.mean[i, j]),
                            float(self.lower[i, j]),
                            float(self.upper[i, j]),
                        )
                    )
        return out


def backtest_model(model: ForecastModel, frame: pd.DataFrame, plan: BacktestPlan) -> ModelBacktest:
    """Fit ``model`` once on the rows before the window and forecast from every origin; ModelError if it cannot.

    The fitted model is the one that gets deployed: it is never refitted, so the backtest
    residuals are out-of-sample errors of exactly what forecasts later.
    """
    if len(plan.origins) == 0:
        raise ModelError(f"{model.name}: {len(frame)} points are too few to backtest a {plan.horizon}-step horizon")
    started = time.perf_counter()
    model.fit(frame.iloc[: plan.split])
    fitted = time.perf_counter()
    visible = frame.iloc[: int(plan.origins[-1]) + 1]  # nothing after the last origin is ever passed in
    mean = np.asarray(model.predict_at(visible, plan.origins, plan.horizon), dtype=float)
    predicted = time.perf_counter()
    result = backtest_forecasts(model.name, frame, plan, mean)
    result.fit_seconds, result.predict_seconds = fitted - started, (predicted - fitted) / len(plan.origins)
    return result


def backtest_forecasts(name: str, frame: pd.DataFrame, plan: BacktestPlan, mean: np.ndarray) -> ModelBacktest:
    """Score and calibrate forecasts [origins, horizon] made from the plan's origins (by a model or a combination)."""
    mean = np.clip(np.asarray(mean, dtype=float), 0.0, 100.0)
    if mean.shape != (len(plan.origins), plan.horizon) or not np.all(np.isfinite(mean)):
        raise ModelError(f"{name}: backtest forecasts are not finite")
    cpu = frame["cpu"].to_numpy(dtype=float)
    index = frame.index.to_numpy(dtype=np.int64)
    ahead = plan.origins[:, None] + np.arange(1, plan.horizon + 1)
    actual = cpu[ahead]
    if not np.isfinite(actual).any():
        raise ModelError(f"{name}: the backtest window has no CPU values to score against")
    scales = local_scale(cpu, plan.origins)
    lower, upper = cross_fitted_bounds(actual, mean, scales)
    part = plan.calibrating()
    result = ModelBacktest(
        model=name,
        origin_ts=index[plan.origins],
        timestamps=index[ahead],
        actual=actual,
        mean=mean,
        lower=lower,
        upper=upper,
        calibration=calibrate(actual[part] - mean[part], scales[part]),
    )
    result.scores = score(actual, mean, lower, upper, plan.scale)
    choosing = slice(0, plan.choose_until)
    result.choosing_mase = mase(actual[choosing], mean[choosing], plan.scale)
    result.calibrating_mase = mase(actual[part], mean[part], plan.scale)
    return result


def choose_champion(scores: list[dict]) -> str | None:
    """Lowest backtest MASE among models with status 'ok'; ties go to the simpler (earlier) family."""
    rank = {name: i for i, name in enumerate(FAMILIES)}
    usable = [s for s in scores if s.get("status") == "ok" and s.get("mase") is not None and np.isfinite(s["mase"])]
    if not usable:
        return None
    return min(usable, key=lambda s: (s["mase"], rank.get(s["model"], len(rank))))["model"]


def choose_deployed(backtests: dict[str, ModelBacktest]) -> str | None:
    """What an instance deploys: the combination, unless one model beats it clearly and consistently.

    A single model replaces the combination only when its MASE is at least ``CLEAR_EDGE`` lower
    on *both* the choosing and the calibrating origins: a win in one short window is mostly
    noise, and deploying it is the weak step that combination avoids. The combination's figures
    are those of its ``yardstick`` where it has one (see ``training``). Without a combination,
    the lowest MASE over all origins wins (ties to the simpler family).
    """
    combined = next((b for b in backtests.values() if FAMILIES.get(b.model) and FAMILIES[b.model].combines), None)
    if combined is None:
        return choose_champion([{"model": n, "status": "ok", "mase": b.scores.get("mase")} for n, b in backtests.items()])
    bar = combined.yardstick or combined
    first_target, second_target = bar.choosing_mase, bar.calibrating_mase
    if first_target is None or second_target is None:
        return combined.model
    halves = {
        name: (b.choosing_mase, b.calibrating_mase)
        for name, b in backtests.items()
        if b.choosing_mase is not None and b.calibrating_mase is not None
    }
    rank = {name: i for i, name in enumerate(FAMILIES)}
    clear = [
        name
        for name, (first, second) in halves.items()
        if name != combined.model and first < (1 - CLEAR_EDGE) * first_target and second < (1 - CLEAR_EDGE) * second_target
    ]
    if not clear:
        return combined.model
    return min(clear, key=lambda name: (sum(halves[name]), rank.get(name, len(rank))))
