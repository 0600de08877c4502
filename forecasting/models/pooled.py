"""The fleet model's maths: window features scaled per instance, and a ridge regression pooled over the fleet.

Pure functions on arrays; nothing here reads files. One design row describes one forecast
origin of one instance: the last ``LOOKBACK`` CPU values, the CPU one day before each step being
forecast (with a flag saying whether that day exists), and the time of day, all *relative to
the CPU at the origin and divided by the instance's own recent spread* (up to a day of history).
Because every instance is brought to the same units, one set of coefficients serves every
instance, whatever its level or volatility, and a new instance can use them from its first
hours. The target is the next ``horizon`` steps in the same units (direct multi-output).

Training never materialises the fleet's windows: :class:`NormalEquations` adds each instance's
sampled rows into ``XᵀX`` and ``XᵀY`` (a few kilobytes, whatever the fleet size), and
:func:`solve` turns them into coefficients. Ridge shrinks towards zero, which here means
towards the last value: with little evidence the model forecasts like ``naive``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from forecasting.clock import DAY

LOOKBACK = 24
"""CPU values before (and at) the origin read by the model: 2 hours at 5-minute periods."""
MIN_SPREAD = 0.01
"""Floor of the per-instance spread (CPU points): only guards a constant history against division by zero, so a
quiet instance (CPU moving by hundredths) is still seen in its own units rather than as flat."""
CLIP = 10.0
"""Scaled inputs and targets are clipped to ±CLIP spreads: one spike cannot dominate the pooled fit."""
RIDGE = 1e-2
"""Ridge penalty per training row (the bias is not penalised): mild shrinkage towards the last value."""


def feature_count(horizon: int) -> int:
    """Columns of the design: LOOKBACK−1 lags, horizon+1 day-ago values, the day-ago flag, bias."""
    return (LOOKBACK - 1) + (horizon + 1) + 1 + 1


def fill_forward(cpu: np.ndarray) -> np.ndarray:
    """Missing CPU carried forward from the last value (and back from the first one), so every origin has inputs."""
    values = np.asarray(cpu, dtype=float).copy()
    seen = np.isfinite(values)
    if not seen.any():
        return values
    last = np.where(seen, np.arange(len(values)), -1)
    np.maximum.accumulate(last, out=last)
    first = int(np.argmax(seen))
    last[last < 0] = first
    return values[last]


def day_spread(cpu: np.ndarray, origins: np.ndarray, season: int) -> np.ndarray:
    """Standard deviation of the (filled) CPU over up to a day before each origin, floored at MIN_SPREAD."""
    x = np.nan_to_num(np.asarray(cpu, dtype=float))
    s1 = np.concatenate([[0.0], np.cumsum(x)])
    s2 = np.concatenate([[0.0], np.cumsum(x * x)])
    end = np.asarray(origins, dtype=np.int64) + 1
    start = np.maximum(0, end - season)
    n = (end - start).astype(float)
    mean = (s1[end] - s1[start]) / n
    var = np.maximum((s2[end] - s2[start]) / n - mean**2, 0.0)
    return np.maximum(np.sqrt(var), MIN_SPREAD)


def design(cpu: np.ndarray, origins: np.ndarray, period: int, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Design rows [origins, features] and each origin's centre (CPU at the origin) and spread.

    ``cpu`` must already be filled (see :func:`fill_forward`) wherever inputs are read; a day-ago
    value that does not exist (the first day of an instance) or is NaN turns that part off (flag 0).
    """
    cpu = np.asarray(cpu, dtype=float)
    origins = np.asarray(origins, dtype=np.int64)
    season = max(1, DAY // period)
    centre = cpu[origins]
    spread = day_spread(fill_forward(cpu), origins, season)  # a gap in the day before must not count as zeros
    lag_rows = np.clip(origins[:, None] + np.arange(-(LOOKBACK - 1), 0), 0, None)
    lags = (cpu[lag_rows] - centre[:, None]) / spread[:, None]
    day_rows = origins[:, None] - season + np.arange(0, horizon + 1)
    has_day = np.all(day_rows >= 0, axis=1)
    day = cpu[np.clip(day_rows, 0, None)]
    has_day &= np.all(np.isfinite(day), axis=1)
    day = np.where(has_day[:, None], (np.nan_to_num(day) - centre[:, None]) / spread[:, None], 0.0)
    x = np.column_stack([np.clip(lags, -CLIP, CLIP), np.clip(day, -CLIP, CLIP), has_day.astype(float), np.ones(len(origins))])
    return x, centre, spread


def targets(cpu: np.ndarray, origins: np.ndarray, horizon: int, centre: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """The next ``horizon`` CPU values after each origin, in the origin's units (NaN where missing)."""
    ahead = np.asarray(origins, dtype=np.int64)[:, None] + np.arange(1, horizon + 1)
    y = (np.asarray(cpu, dtype=float)[ahead] - centre[:, None]) / spread[:, None]
    return np.clip(y, -CLIP, CLIP)


def sample_origins(cpu: np.ndarray, end: int, horizon: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``count`` origins whose whole window (lookback and targets) has CPU and whose targets end before row ``end``."""
    cpu = np.asarray(cpu, dtype=float)
    last = end - 1 - horizon
    if last < LOOKBACK - 1:
        return np.empty(0, dtype=np.int64)
    finite = np.concatenate([[0], np.cumsum(np.isfinite(cpu[:end]))])
    candidates = np.arange(LOOKBACK - 1, last + 1)
    span = LOOKBACK + horizon
    complete = finite[candidates + horizon + 1] - finite[candidates - LOOKBACK + 1] == span
    candidates = candidates[complete]
    if len(candidates) > count:
        candidates = np.sort(rng.choice(candidates, size=count, replace=False))
    return candidates


@dataclass
class NormalEquations:
    """Running ``XᵀX`` and ``XᵀY`` of the pooled ridge regression: bounded memory whatever the fleet size."""

    horizon: int
    xtx: np.ndarray = field(init=False)
    xty: np.ndarray = field(init=False)
    rows: int = 0
    instances: int = 0

    def __post_init__(self) -> None:
        width = feature_count(self.horizon)
        self.xtx = np.zeros((width, width))
        self.xty = np.zeros((width, self.horizon))

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add design rows and their targets (rows with a missing target are dropped)."""
        keep = np.all(np.isfinite(y), axis=1) & np.all(np.isfinite(x), axis=1)
        x, y = x[keep], y[keep]
        if len(x):
            self.xtx += x.T @ x
            self.xty += x.T @ y
            self.rows += len(x)
            self.instances += 1


def solve(equations: NormalEquations) -> np.ndarray:
    """Ridge coefficients [features, horizon] from the pooled normal equations (bias column unpenalised)."""
    width = equations.xtx.shape[0]
    penalty = RIDGE * max(equations.rows, 1) * np.eye(width)
    penalty[-1, -1] = 0.0
    return np.linalg.solve(equations.xtx + penalty, equations.xty)


def forecast(coef: np.ndarray, cpu: np.ndarray, origins: np.ndarray, period: int, horizon: int) -> np.ndarray:
    """Point forecasts [origins, horizon] in CPU points from the coefficients (inputs filled forward)."""
    trained_horizon = coef.shape[1]
    x, centre, spread = design(fill_forward(cpu), origins, period, trained_horizon)
    return centre[:, None] + spread[:, None] * (x @ coef)[:, :horizon]
