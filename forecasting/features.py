"""From stored samples to model inputs: a regular grid, gap filling, calendar features, scaling, windows.

Pure functions only: nothing here reads files or the network. Every transform
that learns from data (the scaler) is fitted on the training part only, and
every window ends at or before its forecast origin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.clock import DAY, WEEK
from forecasting.metrics import METRICS, TARGET, inputs

MAX_FILLED_GAP_SECONDS = 30 * 60
"""Gaps up to 30 min are interpolated; longer ones stay NaN, and windows never cross them."""

MIN_INPUT_COVERAGE = 0.9
"""An input metric becomes a model column only where it has values on at least this share of the rows with CPU."""


def to_frame(samples: dict[str, tuple[np.ndarray, np.ndarray]], period: int, end: int | None = None) -> pd.DataFrame:
    """Samples {metric: (ts, values)} → a frame on the regular period grid, indexed by unix seconds.

    The grid runs from the first to the last CPU sample (or to ``end``, exclusive). Only declared
    metrics (:mod:`forecasting.metrics`) become columns, each clipped to its range (CPU and memory
    0–100, bytes ≥ 0), so bad values never reach a model. Short gaps are interpolated in time, long
    gaps left as NaN rows; a metric without samples is no column at all (missing, never zero).
    """
    if TARGET not in samples or len(samples[TARGET][0]) == 0:
        return pd.DataFrame(columns=[TARGET], index=pd.Index([], dtype=np.int64, name="ts"))
    cpu_ts = np.asarray(samples[TARGET][0], dtype=np.int64)
    first = int(cpu_ts.min()) // period * period
    last = int(cpu_ts.max()) // period * period if end is None else (int(end) - 1) // period * period
    grid = np.arange(first, last + period, period, dtype=np.int64)
    frame = pd.DataFrame(index=pd.Index(grid, name="ts"))
    for metric, (ts, values) in samples.items():
        if metric not in METRICS:
            continue
        ts = np.asarray(ts, dtype=np.int64)
        values = np.asarray(values, dtype=float)
        slot = ts // period * period  # compare grid slots, so an off-grid newest sample is kept
        keep = np.isfinite(values) & (slot >= first) & (slot <= last)
        if end is not None:
            keep &= ts < int(end)  # never look past the forecast origin
        if not keep.any():
            continue
        series = pd.Series(values[keep], index=slot[keep]).groupby(level=0).mean()
        frame[metric] = METRICS[metric].clip_series(series.reindex(grid)).to_numpy()
    return fill_short_gaps(frame, max(1, MAX_FILLED_GAP_SECONDS // period))


def fill_short_gaps(frame: pd.DataFrame, max_steps: int) -> pd.DataFrame:
    """Linearly interpolate runs of at most ``max_steps`` missing values that have data on both sides."""
    out = frame.copy()
    for column in out.columns:
        values = out[column].to_numpy(dtype=float, copy=True)
        missing = np.isnan(values)
        if not missing.any():
            continue
        filled = pd.Series(values).interpolate(limit_area="inside").to_numpy()
        run_id = np.cumsum(~missing)  # NaNs in one run share the id of the value before them
        run_len = pd.Series(missing.astype(int)).groupby(run_id).transform("sum").to_numpy()
        use = missing & (run_len <= max_steps)
        values[use] = filled[use]
        out[column] = values
    return out


def calendar_features(index: np.ndarray) -> pd.DataFrame:
    """Time of day and day of week as sin/cos pairs (UTC), so midnight sits next to 23:55."""
    ts = np.asarray(index, dtype=np.int64)
    day = 2 * np.pi * (ts % DAY) / DAY
    week = 2 * np.pi * ((ts + 3 * DAY) % WEEK) / WEEK  # phase 0 on Mondays
    return pd.DataFrame(
        {"tod_sin": np.sin(day), "tod_cos": np.cos(day), "dow_sin": np.sin(week), "dow_cos": np.cos(week)},
        index=pd.Index(ts, name="ts"),
    )


def design_matrix(frame: pd.DataFrame, period: int) -> pd.DataFrame:
    """Model inputs: CPU, CPU one day earlier (the lagged seasonal value), each other metric the instance has, calendar.

    Each input metric is scaled as declared (memory as it is, network bytes as log1p). A metric the
    instance lacks, or has on fewer than ``MIN_INPUT_COVERAGE`` of its CPU rows, is no column (so a
    late or patchy series costs no training windows); a missing value in a kept column stays NaN.
    Nothing pretends a missing memory or network series was zero.
    """
    lag = DAY // period
    out = pd.DataFrame(index=frame.index)
    out["cpu"] = frame[TARGET]
    out["cpu_day_ago"] = frame[TARGET].shift(lag)
    has_cpu = frame[TARGET].notna()
    for metric in inputs(frame.columns):
        if has_cpu.any() and frame[metric.key][has_cpu].notna().mean() >= MIN_INPUT_COVERAGE:
            out[metric.key] = metric.model_input(frame[metric.key])
    return out.join(calendar_features(frame.index.to_numpy()))


@dataclass
class Scaler:
    """Per-column standardisation fitted on training rows only; serialisable to plain JSON."""

    mean: dict[str, float]
    scale: dict[str, float]

    @classmethod
    def fit(cls, train: pd.DataFrame) -> Scaler:
        mean = train.mean(skipna=True).fillna(0.0)
        scale = train.std(skipna=True).fillna(1.0)
        scale[scale < 1e-6] = 1.0
        return cls({k: float(v) for k, v in mean.items()}, {k: float(v) for k, v in scale.items()})

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The fitted columns, standardised; a column ``frame`` lacks comes back all NaN (missing, not made up)."""
        columns = list(self.mean)
        return (frame.reindex(columns=columns) - pd.Series(self.mean)) / pd.Series(self.scale)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {"mean": self.mean, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, float]]) -> Scaler:
        return cls(dict(data["mean"]), dict(data["scale"]))


def sliding_windows(
    inputs: np.ndarray, target: np.ndarray, lookback: int, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (lookback inputs → next horizon targets) pairs that contain no NaN.

    Returns (X[n, lookback, features], Y[n, horizon], origin_index[n]) where origin_index is the row
    of the last input; a window's targets start right after it, so no input sees its own future.
    """
    rows = len(target)
    count = rows - lookback - horizon + 1
    if count <= 0:
        return np.empty((0, lookback, inputs.shape[1])), np.empty((0, horizon)), np.empty(0, dtype=np.int64)
    x = np.lib.stride_tricks.sliding_window_view(inputs, lookback, axis=0)[:count]  # [n, features, lookback]
    y = np.lib.stride_tricks.sliding_window_view(target[lookback:], horizon)[:count]
    ok = ~np.isnan(x).any(axis=(1, 2)) & ~np.isnan(y).any(axis=1)
    origins = np.arange(lookback - 1, lookback - 1 + count, dtype=np.int64)
    return np.transpose(x[ok], (0, 2, 1)).copy(), y[ok].copy(), origins[ok]


def future_timestamps(origin_ts: int, horizon: int, period: int) -> np.ndarray:
    """The timestamps of the ``horizon`` steps after an origin."""
    return origin_ts + period * np.arange(1, horizon + 1, dtype=np.int64)
