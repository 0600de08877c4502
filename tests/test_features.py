"""Features: the regular grid, gap filling, clipping, calendar, design matrix, scaler, windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.features import (
    DAY,
    MIN_INPUT_COVERAGE,
    Scaler,
    calendar_features,
    design_matrix,
    fill_short_gaps,
    future_timestamps,
    sliding_windows,
    to_frame,
)
from forecasting.sources.demo import DemoSource

PERIOD = 300
START = 1_700_000_000 // DAY * DAY  # a midnight, UTC


def demo_samples(
    days: float, index: int = 0, metrics: tuple[str, ...] = ("cpu", "memory", "network_in", "network_out"), start: int = START
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``days`` of the demo feed for one simulated instance, as {metric: (ts, values)} (shared by the engine tests)."""
    source = DemoSource(count=6, seed=42, anchor=start, period=PERIOD)
    ts = start + PERIOD * np.arange(int(days * DAY // PERIOD), dtype=np.int64)
    return {m: (ts.copy(), source.values(index, m, ts)) for m in metrics if m in source.metrics_of(f"i-0de{index:014x}")}


def test_to_frame_puts_samples_on_a_regular_grid_and_clips_bad_values() -> None:
    ts = np.array([0, 300, 610, 900, 1200], dtype=np.int64) + START  # 610 lands in the 600 slot
    samples = {"cpu": (ts, np.array([10.0, 120.0, -5.0, 50.0, 60.0])), "network_in": (ts, np.array([1.0, -3.0, 2.0, 3.0, 4.0]))}
    frame = to_frame(samples, PERIOD)
    assert frame.index.tolist() == [START + k * 300 for k in range(5)]
    assert frame["cpu"].tolist() == [10.0, 100.0, 0.0, 50.0, 60.0]
    assert frame["network_in"].min() == 0.0


def test_an_off_grid_newest_sample_is_kept_and_end_is_never_passed() -> None:
    ts = np.array([0, 300, 600, 950], dtype=np.int64) + START  # the newest lands 50 s into the 900 slot
    samples = {"cpu": (ts, np.array([10.0, 20.0, 30.0, 40.0])), "memory": (ts, np.array([1.0, 2.0, 3.0, 4.0]))}
    frame = to_frame(samples, PERIOD)
    assert frame.index[-1] == START + 900 and frame["cpu"].iloc[-1] == 40.0 and frame["memory"].iloc[-1] == 4.0
    cut = to_frame(samples, PERIOD, end=START + 920)  # the 950 sample lies after the origin: not seen
    assert cut.index[-1] == START + 900 and np.isnan(cut["cpu"].iloc[-1])


def test_short_gaps_are_interpolated_and_long_gaps_stay_missing() -> None:
    ts = START + PERIOD * np.arange(40, dtype=np.int64)
    values = np.arange(40, dtype=float)
    keep = np.ones(40, bool)
    keep[5:8] = False  # 15 min: filled
    keep[15:30] = False  # 75 min: kept as a gap
    frame = to_frame({"cpu": (ts[keep], values[keep])}, PERIOD)
    assert len(frame) == 40
    assert frame["cpu"].iloc[5:8].tolist() == [5.0, 6.0, 7.0]
    assert frame["cpu"].iloc[15:30].isna().all()


def test_fill_short_gaps_never_extrapolates_past_the_ends() -> None:
    frame = pd.DataFrame({"cpu": [np.nan, 1.0, np.nan, 3.0, np.nan]})
    filled = fill_short_gaps(frame, 6)
    assert np.isnan(filled["cpu"].iloc[0]) and np.isnan(filled["cpu"].iloc[-1])
    assert filled["cpu"].iloc[2] == 2.0


def test_calendar_features_wrap_around_midnight_and_the_week() -> None:
    cal = calendar_features(np.array([START, START + DAY - PERIOD, START + 7 * DAY]))
    assert cal["tod_sin"].iloc[0] == pytest.approx(0.0, abs=1e-12) and cal["tod_cos"].iloc[0] == pytest.approx(1.0)
    assert cal["tod_cos"].iloc[1] == pytest.approx(np.cos(2 * np.pi * (DAY - PERIOD) / DAY))
    assert cal["dow_sin"].iloc[0] == pytest.approx(cal["dow_sin"].iloc[2])


def test_design_matrix_leaves_a_missing_metric_out_rather_than_zero() -> None:
    full = design_matrix(to_frame(demo_samples(2, index=0), PERIOD), PERIOD)
    no_memory = design_matrix(to_frame(demo_samples(2, index=4), PERIOD), PERIOD)  # the cache: no memory agent
    calendar = ["tod_sin", "tod_cos", "dow_sin", "dow_cos"]
    assert list(full.columns) == ["cpu", "cpu_day_ago", "memory", "network_in", "network_out", *calendar]
    assert list(no_memory.columns) == ["cpu", "cpu_day_ago", "network_in", "network_out", *calendar]
    raw = to_frame(demo_samples(2, index=0), PERIOD)
    assert full["memory"].equals(raw["memory"]) and np.allclose(full["network_in"], np.log1p(raw["network_in"]))  # as declared
    lag = DAY // PERIOD
    assert full["cpu_day_ago"].iloc[lag + 3] == full["cpu"].iloc[3]
    assert full["cpu_day_ago"].iloc[:lag].isna().all()


def test_a_gap_in_an_input_stays_missing_and_a_patchy_input_is_left_out() -> None:
    samples = demo_samples(2, index=0)
    ts, memory = samples["memory"]
    gap = memory.copy()
    gap[100:130] = np.nan  # 2.5 h without memory: too long to interpolate, 5 % of the rows
    patchy = memory.copy()
    patchy[: len(ts) // 2] = np.nan  # the agent installed half-way
    kept = design_matrix(to_frame({**samples, "memory": (ts, gap)}, PERIOD), PERIOD)
    assert kept["memory"].iloc[100:130].isna().all() and kept["memory"].iloc[:100].notna().all()
    left_out = design_matrix(to_frame({**samples, "memory": (ts, patchy)}, PERIOD), PERIOD)
    assert "memory" not in left_out and "network_in" in left_out
    assert MIN_INPUT_COVERAGE == 0.9


def test_scaler_is_fitted_on_training_rows_only_and_round_trips() -> None:
    frame = pd.DataFrame({"cpu": [1.0, 2.0, 3.0, 100.0], "flat": [5.0, 5.0, 5.0, 5.0]})
    scaler = Scaler.fit(frame.iloc[:3])
    assert scaler.mean["cpu"] == pytest.approx(2.0)
    assert scaler.scale["flat"] == 1.0  # a constant column is not divided by zero
    back = Scaler.from_dict(scaler.to_dict())
    assert back.transform(frame)["cpu"].iloc[3] == pytest.approx((100.0 - 2.0) / 1.0)
    assert back.transform(frame)["cpu"].iloc[:3].tolist() == pytest.approx([-1.0, 0.0, 1.0])
    without = back.transform(frame[["cpu"]])  # a fitted column the frame lacks comes back missing, not invented
    assert list(without.columns) == ["cpu", "flat"] and without["flat"].isna().all()


def test_sliding_windows_skip_gaps_and_never_see_their_own_future() -> None:
    target = np.arange(30, dtype=float)
    target[20] = np.nan
    inputs = target[:, None].copy()
    x, y, origins = sliding_windows(inputs, target, lookback=4, horizon=3)
    assert len(x) == len(y) == len(origins)
    for xi, yi, origin in zip(x, y, origins, strict=True):
        assert xi[-1, 0] == origin  # the last input is the origin row
        assert yi.tolist() == [origin + 1, origin + 2, origin + 3]  # targets start right after it
    assert 20 not in set(np.concatenate([x[:, :, 0].ravel(), y.ravel()]).tolist())


def test_future_timestamps_follow_the_origin() -> None:
    assert future_timestamps(1000, 3, 300).tolist() == [1300, 1600, 1900]
