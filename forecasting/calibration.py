"""Calibrated forecast intervals: split conformal on residuals scaled by the recent volatility.

CPU is heteroscedastic: an instance that is calm for days and then turns busy makes bigger
errors while it is busy. Intervals calibrated on raw residuals are then too wide in the calm
and too narrow in the busy part (coverage far below nominal right when it matters). So each
residual is divided by the *local scale* at its origin (the mean absolute 5-minute change of CPU
over the ``SCALE_WINDOW`` steps up to it, never below a floor), the conformal quantiles are
taken of those ratios per horizon step, and a forecast's bounds are ``mean + quantile × its own
local scale`` (locally weighted split conformal, Lei et al. 2018).

Conformal coverage assumes tomorrow's errors look like the calibration day's. CPU traces break
that (a deploy, a misconfigured scaling group, a new batch job), and a model trained two days ago
keeps its old interval until the next retrain. So a deployed model also recalibrates as it goes
(:func:`recent_bounds`): its own forecasts from the origins of the last ``RECENT_ROWS`` steps
whose outcome is already known are scored against what happened, and their scaled residuals join
the stored calibration set before the quantiles are taken. Right after training the recent origins
are the calibration day itself; as days pass they are genuinely new, out-of-sample errors of the
very model that is forecasting, so the interval follows a regime change within hours instead of
waiting for a retrain (conformal prediction under drift with a recent window, Barber et al. 2023).
Every function is pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import isotonic_regression

CONFIDENCE = 0.90
"""Nominal coverage of the calibrated intervals."""
SCALE_WINDOW = 24
"""Steps (2 h at 5 min) over which the local scale is measured."""
FLOOR_SHARE = 0.25
"""The scale never drops below this share of its median over the calibration origins (a flat hour is no promise)."""
MIN_FLOOR = 0.01
"""Absolute floor of the scale, CPU points, so a constant series still gets finite ratios."""
RECENT_ROWS = 288
"""How far back (steps; one day at 5 min) a deployed model's own recent errors are used."""
RECENT_EVERY = 3
"""One recent origin every this many steps (15 min at 5 min, like the backtest's origins)."""


def local_scale(cpu: np.ndarray, rows: np.ndarray, window: int = SCALE_WINDOW) -> np.ndarray:
    """Mean absolute one-step change of ``cpu`` over the ``window`` steps up to each row (NaN where none)."""
    values = np.asarray(cpu, dtype=float)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.empty(0)
    start = max(0, int(rows.min()) - window)
    part = values[start : int(rows.max()) + 1]
    steps = pd.Series(np.abs(np.diff(part, prepend=np.nan)))
    rolling = steps.rolling(window, min_periods=max(2, window // 4)).mean().to_numpy()
    return rolling[rows - start]


def floored(raw: np.ndarray, floor: float) -> np.ndarray:
    """Local scales never below ``floor`` (a missing one counts as the floor)."""
    return np.fmax(np.nan_to_num(np.asarray(raw, dtype=float), nan=floor), floor)


def conformal_offsets(residuals: np.ndarray, confidence: float = CONFIDENCE) -> np.ndarray:
    """Per-step [lower, upper] offsets from residuals (actual − forecast) [origins, steps].

    Offsets are the α/2 and 1 − α/2 residual quantiles with the finite-sample correction
    (ranks ⌊(n+1)α/2⌋ and ⌈(n+1)(1−α/2)⌉, clamped to the sample), always around the point
    forecast (lower ≤ 0 ≤ upper), and never narrower than at an earlier step: the per-step
    quantiles are made monotone by isotonic regression (the closest monotone sequence), not by a
    running maximum, which would carry every step's sampling noise upwards into a wider interval.
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
    if len(offsets) > 1:
        offsets[:, 0] = isotonic_regression(offsets[:, 0], increasing=False).x
        offsets[:, 1] = isotonic_regression(offsets[:, 1], increasing=True).x
    return offsets


@dataclass
class Calibration:
    """Per-step offsets in units of the local scale (``adaptive``) or in CPU points (a fixed interval)."""

    offsets: np.ndarray  # [horizon, 2]: lower ≤ 0 ≤ upper
    floor: float = 1.0  # smallest local scale used, CPU points
    adaptive: bool = True
    ratios: np.ndarray | None = None  # [origins, steps]: the scaled residuals the offsets came from

    def scales(self, cpu: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The scale each origin's offsets are multiplied by (1 for a fixed interval)."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.scales_for(local_scale(cpu, rows)) if self.adaptive else np.ones(len(rows))

    def scales_for(self, raw: np.ndarray) -> np.ndarray:
        """Measured local scales with this calibration's floor applied."""
        return floored(raw, self.floor)

    def bounds(self, mean: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower/upper of point forecasts [origins, steps] clipped to 0–100; steps past the calibrated ones reuse the last."""
        mean = np.clip(np.atleast_2d(np.asarray(mean, dtype=float)), 0.0, 100.0)
        steps = mean.shape[-1]
        chosen = np.asarray(self.offsets, dtype=float)[np.minimum(np.arange(steps), len(self.offsets) - 1)]
        scale = np.asarray(scales, dtype=float).reshape(-1, 1)
        return np.clip(mean + scale * chosen[:, 0], 0.0, 100.0), np.clip(mean + scale * chosen[:, 1], 0.0, 100.0)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "offsets": np.asarray(self.offsets, dtype=float).tolist(),
            "floor": float(self.floor),
            "adaptive": self.adaptive,
        }
        if self.ratios is not None:  # NaN (no actual) is stored as null
            rounded = np.round(np.asarray(self.ratios, dtype=float), 4)
            out["ratios"] = [[v if np.isfinite(v) else None for v in row] for row in rounded.tolist()]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        ratios = data.get("ratios")
        return cls(
            np.asarray(data["offsets"], dtype=float),
            float(data.get("floor", 1.0)),
            bool(data.get("adaptive", True)),
            None if ratios is None else np.array(ratios, dtype=float),
        )


def recent_origins(rows: np.ndarray, window: int = RECENT_ROWS, every: int = RECENT_EVERY) -> np.ndarray:
    """The past origins whose errors recalibrate forecasts from ``rows``: every ``every`` steps, up to ``window`` before."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.empty(0, dtype=np.int64)
    first = max(0, int(rows.min()) - window)
    return np.arange(first - first % every, int(rows.max()), every, dtype=np.int64)


def recent_bounds(
    calibration: Calibration,
    cpu: np.ndarray,
    mean: np.ndarray,
    rows: np.ndarray,
    past: np.ndarray,
    past_mean: np.ndarray,
    window: int = RECENT_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of forecasts ``mean`` [rows, steps] recalibrated with the model's own recent errors.

    ``past_mean`` are the same model's forecasts from the ``past`` origins (``recent_origins``).
    For the forecast from row ``r``, a past forecast counts at step ``s`` only if its origin lies
    in the ``window`` steps before ``r`` and its target ``origin + s`` is at or before ``r``
    (already observed then). Those scaled residuals join the stored ones (``calibration.ratios``)
    and the per-step conformal quantiles are taken of the union.
    """
    cpu = np.asarray(cpu, dtype=float)
    rows, past = np.asarray(rows, dtype=np.int64), np.asarray(past, dtype=np.int64)
    mean = np.atleast_2d(np.asarray(mean, dtype=float))
    steps = mean.shape[1]
    targets = past[:, None] + np.arange(1, steps + 1)
    actual = np.where(targets < len(cpu), cpu[np.minimum(targets, len(cpu) - 1)], np.nan)
    ratios = (actual - np.asarray(past_mean, dtype=float)[:, :steps]) / calibration.scales(cpu, past)[:, None]
    known = np.atleast_2d(np.asarray(calibration.ratios, dtype=float))[:, :steps]
    stored = np.full((len(known), steps), np.nan)
    stored[:, : known.shape[1]] = known
    scales = calibration.scales(cpu, rows)
    lower, upper = np.empty_like(mean), np.empty_like(mean)
    for i, row in enumerate(rows):
        near = (past >= row - window) & (past < row)
        recent = np.where(targets[near] <= row, ratios[near], np.nan)
        offsets = conformal_offsets(np.vstack([stored, recent]))
        one = Calibration(offsets, calibration.floor)
        low, high = one.bounds(mean[i : i + 1], scales[i : i + 1])
        lower[i], upper[i] = low[0], high[0]
    return lower, upper


def calibrate(residuals: np.ndarray, scales: np.ndarray, confidence: float = CONFIDENCE) -> Calibration:
    """Calibration from residuals [origins, steps] and the local scale at each origin (split conformal)."""
    scales = np.asarray(scales, dtype=float)
    seen = scales[np.isfinite(scales)]
    floor = max(FLOOR_SHARE * float(np.median(seen)), MIN_FLOOR) if len(seen) else 1.0
    ratios = np.asarray(residuals, dtype=float) / floored(scales, floor)[:, None]
    return Calibration(conformal_offsets(ratios, confidence), floor, ratios=ratios)


def cross_fitted_bounds(
    actual: np.ndarray, mean: np.ndarray, scales: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds for each origin calibrated on the *other* half of the origins (earlier vs later).

    Scoring an interval on the residuals it was calibrated on would report the nominal level
    by construction; this two-fold split gives an honest coverage inside one backtest.
    """
    residuals = np.asarray(actual, dtype=float) - np.asarray(mean, dtype=float)
    count = len(residuals)
    if count < 4:
        return calibrate(residuals, scales, confidence).bounds(mean, scales)
    half = count // 2
    lower, upper = np.empty_like(residuals), np.empty_like(residuals)
    for part, other in ((slice(0, half), slice(half, count)), (slice(half, count), slice(0, half))):
        calibration = calibrate(residuals[other], scales[other], confidence)
        lower[part], upper[part] = calibration.bounds(mean[part], calibration.scales_for(scales[part]))
    return lower, upper
