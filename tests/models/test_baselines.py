"""Baselines: hand-checked forecasts, honest failures, identical forecasts after save/load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from forecasting.calibration import Calibration
from forecasting.clock import DAY
from forecasting.features import to_frame
from forecasting.models.base import ModelError
from forecasting.models.baselines import LinearModel, NaiveModel, SeasonalNaiveModel
from tests.test_features import PERIOD, START, demo_samples


def frame_of(values: list[float] | np.ndarray, start: int = START) -> pd.DataFrame:
    values = np.asarray(values, dtype=float)
    return pd.DataFrame({"cpu": values}, index=pd.Index(start + PERIOD * np.arange(len(values), dtype=np.int64), name="ts"))


def test_naive_repeats_the_last_seen_value() -> None:
    model = NaiveModel(PERIOD, 4).fit(frame_of([3.0, 5.0, 7.0, np.nan]))
    forecast = model.predict()
    assert forecast.mean.tolist() == [7.0] * 4
    assert forecast.timestamps.tolist() == [START + 3 * PERIOD + k * PERIOD for k in range(1, 5)]
    assert (forecast.lower == forecast.mean).all()  # no calibration yet: bounds equal the mean


def test_seasonal_naive_takes_the_same_time_yesterday() -> None:
    day = DAY // PERIOD
    values = np.arange(day + 10, dtype=float) % 97
    model = SeasonalNaiveModel(PERIOD, 3).fit(frame_of(values))
    origin_row = len(values) - 1
    expected = [values[origin_row + h - day] for h in (1, 2, 3)]
    assert model.predict().mean.tolist() == expected


def test_seasonal_naive_falls_back_to_the_last_value_where_yesterday_is_missing() -> None:
    day = DAY // PERIOD
    values = np.full(day + 5, 20.0)
    values[6] = np.nan  # yesterday's value for step 2 of the forecast
    values[-1] = 42.0
    mean = SeasonalNaiveModel(PERIOD, 3).fit(frame_of(values)).predict().mean
    assert mean.tolist() == [20.0, 42.0, 20.0]


def test_seasonal_naive_needs_a_day_of_history() -> None:
    with pytest.raises(ModelError, match="at least"):
        SeasonalNaiveModel(PERIOD, 3).fit(frame_of(np.ones(100)))


def test_linear_extrapolates_the_least_squares_line_of_the_last_hour() -> None:
    values = [50.0] * 20 + [10.0 + 2.0 * k for k in range(12)]  # the last hour is a straight line
    mean = LinearModel(PERIOD, 3).fit(frame_of(values)).predict().mean
    assert mean.tolist() == pytest.approx([10 + 2 * 12, 10 + 2 * 13, 10 + 2 * 14])


def test_linear_fits_noisy_points_like_a_hand_computed_regression() -> None:
    values = [1.0, 3.0, 2.0, 6.0, 5.0, 7.0, 8.0, 6.0, 9.0, 12.0, 10.0, 13.0]
    x = np.arange(-11, 1, dtype=float)
    slope, intercept = np.polyfit(x, values, 1)
    mean = LinearModel(PERIOD, 2).fit(frame_of(values)).predict().mean
    assert mean.tolist() == pytest.approx([intercept + slope, intercept + 2 * slope])


def test_linear_with_one_point_in_the_last_hour_repeats_it() -> None:
    values = [5.0] * 10 + [np.nan] * 11 + [8.0]
    assert LinearModel(PERIOD, 2).fit(frame_of(values)).predict().mean.tolist() == [8.0, 8.0]


def test_forecasts_are_clipped_to_the_cpu_range() -> None:
    values = [60.0 + 4 * k for k in range(12)]  # rising fast towards 100
    mean = LinearModel(PERIOD, 12).fit(frame_of(values)).predict().mean
    assert mean.max() == 100.0 and mean.min() >= 0.0


def test_no_cpu_at_all_is_a_clear_model_error() -> None:
    with pytest.raises(ModelError, match="naive"):
        NaiveModel(PERIOD, 3).fit(frame_of([np.nan, np.nan]))


@pytest.mark.parametrize("cls", [NaiveModel, SeasonalNaiveModel, LinearModel])
def test_save_load_round_trip_gives_identical_forecasts(cls, tmp_path) -> None:
    frame = to_frame(demo_samples(1.5, index=1), PERIOD)
    model = cls(PERIOD, 12).fit(frame)
    model.calibration = Calibration(np.column_stack([-np.linspace(1, 3, 12), np.linspace(2, 4, 12)]), floor=0.5)
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["name"] == cls.name and sorted(p.name for p in (tmp_path / "m").iterdir()) == ["meta.json"]
    loaded = cls.load(tmp_path / "m")
    for history in (None, frame.iloc[:-7]):  # from the saved state, and from new history
        a, b = model.predict(12, history=history), loaded.predict(12, history=history)
        for field in ("timestamps", "mean", "lower", "upper"):
            assert np.array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("cls", [NaiveModel, SeasonalNaiveModel, LinearModel])
def test_batched_forecasts_equal_one_origin_at_a_time(cls) -> None:
    frame = to_frame(demo_samples(days=3), PERIOD)
    frame.iloc[300:340, frame.columns.get_loc("cpu")] = np.nan  # a gap: the last seen value and yesterday fall back
    frame.iloc[300 + DAY // PERIOD : 320 + DAY // PERIOD, frame.columns.get_loc("cpu")] = np.nan
    model = cls(PERIOD, 12).fit(frame)
    rows = np.array([0, 5, 299, 303, 310, 339, 341, 300 + DAY // PERIOD + 5, len(frame) - 1])
    one_by_one = np.stack([model.predict_mean(12, frame.iloc[: r + 1]) for r in rows])
    np.testing.assert_allclose(model.predict_at(frame, rows, 12), one_by_one)
