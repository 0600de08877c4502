"""Calibrated intervals: the local scale by hand, offsets in scale units, and the coverage of what is deployed."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.calibration import Calibration, calibrate, local_scale, recent_bounds, recent_origins
from forecasting.features import to_frame
from forecasting.models.registry import load_model
from forecasting.settings import load_settings
from forecasting.training import train_instance
from tests.test_features import PERIOD, START


def test_local_scale_is_the_mean_absolute_step_over_the_window_up_to_each_row() -> None:
    cpu = np.array([10.0, 12.0, 11.0, 15.0, np.nan, 15.0, 20.0])
    assert local_scale(cpu, np.array([3]), window=3)[0] == pytest.approx((2 + 1 + 4) / 3)  # steps into rows 1, 2, 3
    assert local_scale(cpu, np.array([6]), window=4)[0] == pytest.approx((4 + 5) / 2)  # the steps around the gap do not count
    assert np.isnan(local_scale(cpu, np.array([6]), window=3))[0]  # one step left in the window: too few to tell
    assert np.isnan(local_scale(np.array([1.0, 2.0, 3.0]), np.array([0]), window=3))[0]  # nothing before the first row


def test_offsets_are_in_units_of_the_local_scale_and_bounds_follow_it() -> None:
    rng = np.random.default_rng(1)
    scales = rng.uniform(1, 10, size=400)
    residuals = rng.normal(size=(400, 3)) * scales[:, None]  # errors proportional to the volatility
    calibration = calibrate(residuals, scales)
    assert calibration.offsets[:, 1] == pytest.approx([1.645] * 3, rel=0.2)  # ≈ the normal 95 % point in scale units
    _lower, upper = calibration.bounds(np.full((2, 3), 50.0), np.array([1.0, 4.0]))
    assert (upper[1] - 50) == pytest.approx(4 * (upper[0] - 50))  # four times as volatile: four times as wide
    fixed = Calibration(np.array([[-2.0, 3.0]]), adaptive=False)
    assert fixed.scales(np.arange(10.0), np.array([5, 9])).tolist() == [1.0, 1.0]
    assert [b.tolist() for b in fixed.bounds(np.array([[99.0, 1.0]]), np.ones(1))] == [[[97.0, 0.0]], [[100.0, 4.0]]]


def _noisy(days: float, sigma: float, seed: int) -> np.ndarray:
    """A daily cycle with Gaussian noise of a known size, kept well inside 0–100."""
    rng = np.random.default_rng(seed)
    steps = np.arange(int(days * 86_400 / PERIOD))
    return 50 + 15 * np.sin(2 * np.pi * steps * PERIOD / 86_400) + rng.normal(scale=sigma, size=len(steps))


@pytest.mark.slow
def test_the_deployed_model_covers_90_percent_of_new_data_with_known_noise(tmp_path) -> None:
    values = _noisy(6, sigma=3.0, seed=5)
    trained_on = int(4 * 86_400 / PERIOD)
    samples = {"cpu": (START + PERIOD * np.arange(len(values), dtype=np.int64), values)}
    settings = load_settings(
        db=tmp_path / "h.db", models=["naive", "seasonal_naive", "linear", "arima", "combined"], backtest_days=1.5
    )
    seen = {"cpu": (samples["cpu"][0][:trained_on], values[:trained_on])}
    result = train_instance("i-noise", seen, settings, int(seen["cpu"][0][-1]))
    deployed = load_model(f"{result.run['model_dir']}/{result.champion}")
    frame = to_frame(samples, PERIOD)
    origins = np.arange(trained_on, len(frame) - 12, 1)  # two days the training never saw
    mean, lower, upper = deployed.forecast_at(frame, origins, 12)
    actual = frame["cpu"].to_numpy()[origins[:, None] + np.arange(1, 13)]
    covered = float(np.mean((actual >= lower) & (actual <= upper)))
    assert 0.85 <= covered <= 0.95, f"{result.champion}: coverage {covered:.3f} on unseen data"
    half_width = float(np.median(upper - mean))
    assert 3.0 < half_width < 3 * 1.645 * 3.0  # wider than one sigma of noise, not absurdly wide


def _flat_forecasts(rows: np.ndarray, level: float = 50.0, steps: int = 12) -> np.ndarray:
    return np.full((len(rows), steps), level)


def _shifted_trace(seed: int) -> tuple[np.ndarray, int]:
    """Noise of a known size around 50, then the level jumps by 8 points (a regime a flat model misses)."""
    rng = np.random.default_rng(seed)
    cpu = 50 + rng.normal(scale=2.0, size=3 * 288)
    shift = 2 * 288
    cpu[shift:] += 8.0
    return cpu, shift


def test_recent_errors_bring_coverage_back_after_a_level_shift() -> None:
    cpu, shift = _shifted_trace(seed=3)
    before = np.arange(288, shift - 12, 3)  # the calibration day, before the shift
    ahead = before[:, None] + np.arange(1, 13)
    calibration = calibrate(cpu[ahead] - 50.0, local_scale(cpu, before))
    rows = np.arange(shift + 96, len(cpu) - 12)  # from 8 hours after the shift on
    actual = cpu[rows[:, None] + np.arange(1, 13)]
    fixed_low, fixed_high = calibration.bounds(_flat_forecasts(rows), calibration.scales(cpu, rows))
    past = recent_origins(rows)
    low, high = recent_bounds(calibration, cpu, _flat_forecasts(rows), rows, past, _flat_forecasts(past))
    fixed = float(np.mean((actual >= fixed_low) & (actual <= fixed_high)))
    recent = float(np.mean((actual >= low) & (actual <= high)))
    assert fixed < 0.5  # the stored interval alone misses the new level
    assert recent >= 0.85, f"coverage with recent errors {recent:.3f}"


def test_recent_recalibration_never_reads_an_actual_after_the_origin() -> None:
    cpu, shift = _shifted_trace(seed=4)
    before = np.arange(288, shift - 12, 3)
    calibration = calibrate(cpu[before[:, None] + np.arange(1, 13)] - 50.0, local_scale(cpu, before))
    rows = np.array([shift + 60])
    past = recent_origins(rows)
    bounds = recent_bounds(calibration, cpu, _flat_forecasts(rows), rows, past, _flat_forecasts(past))
    future = cpu.copy()
    future[rows[0] + 1 :] = 99.0  # whatever happens next must not change this forecast's interval
    again = recent_bounds(calibration, future, _flat_forecasts(rows), rows, past, _flat_forecasts(past))
    assert np.array_equal(bounds[0], again[0]) and np.array_equal(bounds[1], again[1])
    assert past.max() < rows[0] and past.min() >= rows[0] - 288


def test_a_calibration_keeps_its_residuals_through_json() -> None:
    rng = np.random.default_rng(2)
    calibration = calibrate(rng.normal(size=(20, 3)), rng.uniform(1, 2, size=20))
    calibration.ratios[0, 2] = np.nan  # an origin whose last step had no actual
    back = Calibration.from_dict(calibration.to_dict())
    assert np.allclose(back.ratios, calibration.ratios, atol=1e-4, equal_nan=True)
    assert np.isnan(back.ratios[0, 2]) and np.array_equal(back.offsets, calibration.offsets)
    legacy = Calibration.from_dict({"offsets": [[-1.0, 1.0]], "floor": 0.5})  # saved before residuals were kept
    assert legacy.ratios is None and legacy.adaptive
