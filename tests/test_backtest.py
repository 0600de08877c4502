"""Backtest: metrics by hand, conformal offsets, origins that never see the future, leaks, the champion rule."""

from __future__ import annotations

import importlib.util
import math
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from forecasting.backtest import (
    CLEAR_EDGE,
    ModelBacktest,
    backtest_model,
    choose_champion,
    choose_deployed,
    coverage,
    mape,
    mase,
    mase_scale,
    plan_backtest,
    rmse,
    smape,
)
from forecasting.calibration import conformal_offsets, cross_fitted_bounds
from forecasting.clock import DAY
from forecasting.features import to_frame
from forecasting.models import FAMILIES, MODEL_NAMES, NEURAL
from forecasting.models.base import ForecastModel, ModelError
from forecasting.models.registry import make_model
from forecasting.settings import load_settings
from tests.test_features import PERIOD, demo_samples

HAVE_NEURAL = (
    importlib.util.find_spec("forecasting.models.neural") is not None and importlib.util.find_spec("tensorflow") is not None
)


# ---- metrics against hand-computed values ------------------------------------
ACTUAL = np.array([10.0, 20.0, 0.0, 40.0])
FORECAST = np.array([12.0, 18.0, 5.0, 40.0])


def test_mape_skips_zero_actuals() -> None:
    assert mape(ACTUAL, FORECAST) == pytest.approx((0.2 + 0.1 + 0.0) / 3 * 100)
    assert mape(np.zeros(3), np.ones(3)) is None


def test_smape_counts_a_pair_of_zeros_as_no_error() -> None:
    expected = (4 / 22 + 4 / 38 + 10 / 5 + 0) / 4 * 100
    assert smape(ACTUAL, FORECAST) == pytest.approx(expected)
    assert smape(np.zeros(2), np.zeros(2)) == 0.0


def test_mase_rmse_and_coverage() -> None:
    assert mase(ACTUAL, FORECAST, scale=2.0) == pytest.approx(2.25 / 2.0)
    assert rmse(ACTUAL, FORECAST) == pytest.approx(math.sqrt(33 / 4))
    lower, upper = FORECAST - 2.5, FORECAST + 2.5
    assert coverage(ACTUAL, lower, upper) == pytest.approx(3 / 4)


def test_metrics_ignore_missing_actuals() -> None:
    actual = np.array([10.0, np.nan, 20.0])
    forecast = np.array([11.0, 99.0, 19.0])
    assert mase(actual, forecast, 1.0) == pytest.approx(1.0)
    assert rmse(np.array([np.nan]), np.array([1.0])) is None


def test_mase_scale_is_the_one_day_seasonal_naive_error_with_fallbacks() -> None:
    season = 4
    y = np.array([1.0, 2, 3, 4, 2, 3, 4, 5, 4, 5, 6, 7])
    assert mase_scale(y, season) == pytest.approx(np.mean(np.abs(y[4:] - y[:-4])))
    short = np.array([1.0, 3.0, 2.0])
    assert mase_scale(short, 288) == pytest.approx(np.mean([2.0, 1.0]))  # one-step naive when shorter than a day
    assert mase_scale(np.full(600, 5.0), 288) > 0  # a constant history never divides by zero
    assert np.isfinite(mase(np.array([5.0]), np.array([6.0]), mase_scale(np.full(600, 5.0), 288)))


# ---- split-conformal offsets -----------------------------------------------------
def test_conformal_offsets_use_finite_sample_corrected_ranks() -> None:
    residuals = np.arange(-19.0, 20.0)[:, None]  # n = 39 residuals for one step
    offsets = conformal_offsets(residuals, confidence=0.9)
    # ranks ⌊40·0.05⌋ = 2 and ⌈40·0.95⌉ = 38 of the sorted residuals −19..19
    assert offsets[0].tolist() == [-18.0, 18.0]
    small = conformal_offsets(np.arange(-9.0, 10.0)[:, None], confidence=0.9)  # n = 19: ranks 1 and 19
    assert small[0].tolist() == [-9.0, 9.0]


def test_conformal_offsets_always_bracket_the_forecast_and_never_narrow() -> None:
    rng = np.random.default_rng(3)
    residuals = rng.normal(size=(48, 12)) * np.linspace(1, 3, 12) + 5.0  # biased upwards
    offsets = conformal_offsets(residuals)
    assert (offsets[:, 0] <= 0).all() and (offsets[:, 1] >= 0).all()
    width = offsets[:, 1] - offsets[:, 0]
    assert (np.diff(width) >= 0).all() and (np.diff(offsets[:, 1]) >= 0).all() and (np.diff(offsets[:, 0]) <= 0).all()


def test_cross_fitted_bounds_calibrate_each_half_on_the_other() -> None:
    actual = np.vstack([np.full((10, 2), 1.0), np.full((10, 2), 100.0)])
    mean = np.zeros((20, 2))
    _lower, upper = cross_fitted_bounds(actual, mean, np.ones(20))
    assert upper[:10].max() == 100.0  # first half calibrated on the large residuals of the second
    assert upper[10:].max() == 1.0  # and the other way round: the second half is not covered


# ---- the plan and the origins ------------------------------------------------------
@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return to_frame(demo_samples(3, index=1), PERIOD)


def test_plan_puts_quarter_hour_origins_inside_the_last_window(frame: pd.DataFrame) -> None:
    plan = plan_backtest(frame, PERIOD, 12, backtest_days=1)
    assert plan.split == len(frame) - DAY // PERIOD
    assert plan.origins[0] == plan.split - 1
    assert set(np.diff(plan.origins)) == {3}
    assert plan.origins[-1] + 12 <= len(frame) - 1 < plan.origins[-1] + 15
    choose, calibrate = plan.origins[: plan.choose_until], plan.origins[plan.calibrating()]
    assert len(choose) == len(plan.origins) // 2 and choose.max() < calibrate.min()  # the older half chooses
    assert len(choose) + len(calibrate) == len(plan.origins)
    half = plan_backtest(frame, PERIOD, 12, backtest_days=30)
    assert half.split == len(frame) - len(frame) // 2  # the window never takes more than half


class SpyModel(ForecastModel):
    """Records the last timestamp it was shown when fitting and when forecasting."""

    name: ClassVar[str] = "naive"
    fit_last: int = -1

    def __init__(self, period: int = 300, horizon: int = 12) -> None:
        super().__init__(period, horizon)
        self.seen: list[int] = []

    def fit(self, frame: pd.DataFrame) -> SpyModel:
        self.fit_last = int(frame.index[-1])
        return self

    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        self.seen.append(int(history.index[-1]))
        return np.full(horizon, float(history["cpu"].iloc[-1]))


def test_backtest_origins_never_see_the_future(frame: pd.DataFrame) -> None:
    plan = plan_backtest(frame, PERIOD, 12, backtest_days=1)
    spy = SpyModel(PERIOD, 12)
    result = backtest_model(spy, frame, plan)
    index = frame.index.to_numpy()
    assert spy.fit_last == index[plan.split - 1]  # fitted once, on the rows before the window
    assert spy.seen == index[plan.origins].tolist()  # each forecast saw exactly up to its origin
    assert (result.timestamps[:, 0] == result.origin_ts + PERIOD).all()
    assert (result.timestamps > result.origin_ts[:, None]).all()


def test_backtest_needs_room_for_one_origin() -> None:
    tiny = to_frame(demo_samples(0.05, index=0), PERIOD)
    with pytest.raises(ModelError, match="too few"):
        backtest_model(make_model("naive", load_settings(), 12), tiny, plan_backtest(tiny, PERIOD, 12, 2))


def test_intervals_widen_with_the_horizon(frame: pd.DataFrame) -> None:
    result = backtest_model(make_model("naive", load_settings(), 12), frame, plan_backtest(frame, PERIOD, 12, 1))
    width = result.calibration.offsets[:, 1] - result.calibration.offsets[:, 0]
    assert (np.diff(width) >= 0).all() and width[-1] > width[0]
    assert 0.5 <= result.scores["coverage"] <= 1.0
    rows = result.rows()
    assert len(rows) == result.actual.size and all(lo <= mean <= hi for *_, mean, lo, hi in rows)


# ---- the champion rule ---------------------------------------------------------------
def test_champion_is_the_lowest_mase_among_models_that_fit() -> None:
    scores = [
        {"model": "naive", "status": "ok", "mase": 1.0},
        {"model": "arima", "status": "ok", "mase": 0.8},
        {"model": "lstm", "status": "skipped", "mase": None},
        {"model": "tcn", "status": "ok", "mase": float("nan")},
    ]
    assert choose_champion(scores) == "arima"
    assert (
        choose_champion([{"model": "linear", "status": "ok", "mase": 0.9}, {"model": "naive", "status": "ok", "mase": 0.9}])
        == "naive"
    )
    assert choose_champion([{"model": "lstm", "status": "skipped", "mase": None}]) is None


def _halves(name: str, choosing: float, calibrating: float) -> ModelBacktest:
    empty = np.empty((0, 12))
    result = ModelBacktest(name, np.empty(0), empty, empty, empty, empty, empty, None)  # type: ignore[arg-type]
    result.choosing_mase, result.calibrating_mase, result.scores = choosing, calibrating, {"mase": (choosing + calibrating) / 2}
    return result


def test_the_combination_is_deployed_unless_one_model_beats_it_clearly_on_both_halves() -> None:
    edge = 1 - CLEAR_EDGE
    combined = _halves("combined", 1.0, 1.0)
    lucky = _halves("arima", 0.5, 1.01)  # far better once, worse the other time: noise, not evidence
    assert choose_deployed({"combined": combined, "arima": lucky, "naive": _halves("naive", 1.2, 1.2)}) == "combined"
    close = _halves("arima", edge + 0.01, edge + 0.01)  # better on both halves, but not clearly
    assert choose_deployed({"combined": combined, "arima": close}) == "combined"
    clear = _halves("arima", edge - 0.01, edge - 0.02)
    clearer = _halves("tcn", edge - 0.2, edge - 0.1)
    assert choose_deployed({"combined": combined, "arima": clear, "tcn": clearer}) == "tcn"
    combined.yardstick = _halves(
        "combined", 0.5, 0.5
    )  # a single model must beat the yardstick, not the combination's own figures
    assert choose_deployed({"combined": combined, "arima": clear, "tcn": clearer}) == "combined"
    combined.yardstick = _halves("combined", 2.0, 2.0)
    assert choose_deployed({"combined": combined, "arima": close}) == "arima"
    assert (
        choose_deployed({"arima": _halves("arima", 0.9, 0.9), "naive": _halves("naive", 0.8, 1.2)}) == "arima"
    )  # no combination: lowest MASE
    assert choose_deployed({}) is None


# ---- leak test for every model, through the registry -----------------------------------
LEAK_MODELS = [m for m in MODEL_NAMES if (m not in NEURAL or HAVE_NEURAL) and not FAMILIES[m].combines]


@pytest.mark.slow
@pytest.mark.parametrize("name", LEAK_MODELS)
def test_changing_data_after_the_origin_changes_no_forecast_made_before_it(name: str, tmp_path) -> None:
    settings = load_settings(
        db=tmp_path / "h.db",
        model={"lookback": 12, "units": 4, "epochs": 2, "batch_size": 64, "max_windows": 400, "dilations": [1, 2], "patience": 1},
    )
    if FAMILIES[name].pooled:  # learned across other instances first, as the retrain pass does
        from forecasting.fleet_model import train_fleet_model

        others = [(f"i-{k}", demo_samples(2.6, index=k), 0) for k in (1, 2, 3)]
        now = int(others[0][1]["cpu"][0][-1])
        settings = settings.model_copy(
            update={"fleet_model": train_fleet_model([(i, s, now) for i, s, _ in others], settings, now)}
        )
    frame = to_frame(demo_samples(2.6, index=0), PERIOD)
    rows = np.array([len(frame) - 301, len(frame) - 1])  # the later origin sees a day of changed data
    model = make_model(name, settings, 12).fit(frame.iloc[: rows[0] + 1])
    changed = frame.copy()
    changed.iloc[rows[0] + 1 :] = changed.iloc[rows[0] + 1 :] * 0.5 + 20  # rewrite everything after the first origin
    before = model.predict_at(frame, rows[:1], 12)
    after = model.predict_at(changed, rows[:1], 12)
    assert np.allclose(before, after, rtol=0, atol=1e-6)
    alone = model.predict(12, history=frame.iloc[: rows[0] + 1]).mean
    assert np.allclose(alone, np.clip(before[0], 0, 100), atol=1e-4)  # the batch path equals the one-origin path
    later = model.predict_at(changed, rows[1:], 12)[0]
    assert not np.allclose(later, model.predict_at(frame, rows[1:], 12)[0])  # the change is visible after it
