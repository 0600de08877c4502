"""ARIMA: real statsmodels fits on demo data, order from the grid, JSON state, gaps, hard inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forecasting.calibration import Calibration
from forecasting.clock import DAY
from forecasting.features import to_frame
from forecasting.models import arima
from forecasting.models.arima import ArimaModel, fourier_terms
from forecasting.models.base import ModelError
from tests.test_features import PERIOD, START, demo_samples


@pytest.fixture(scope="module")
def frame():
    """Two days of the demo web server (daily cycle plus noise)."""
    return to_frame(demo_samples(2, index=0, metrics=("cpu",)), PERIOD)


@pytest.fixture(scope="module")
def fitted(frame) -> ArimaModel:
    return ArimaModel(PERIOD, 12).fit(frame)


def test_fit_chooses_an_order_of_the_grid_by_aic(fitted: ArimaModel) -> None:
    assert fitted.order in arima.ORDER_GRID
    assert fitted.terms in (0, arima.FOURIER_TERMS)
    chosen = f"{fitted.order[0]},{fitted.order[1]},{fitted.order[2]} fourier={fitted.terms}"
    assert fitted.aic[chosen] == min(fitted.aic.values())
    assert np.all(np.isfinite(fitted.params))


def test_forecast_is_finite_and_follows_the_recent_level(fitted: ArimaModel, frame) -> None:
    forecast = fitted.predict(12, history=frame)
    assert len(forecast) == 12 and np.all(np.isfinite(forecast.mean))
    recent = frame["cpu"].iloc[-12:]
    assert abs(forecast.mean[0] - recent.iloc[-1]) < 4 * recent.std() + 5


def test_forecast_beats_a_far_off_guess_on_the_daily_cycle(fitted: ArimaModel, frame) -> None:
    """From six origins, ARIMA's error is well below that of forecasting the overall mean."""
    errors, mean_errors = [], []
    for back in range(30, 90, 10):
        origin = len(frame) - back
        forecast = fitted.predict(12, history=frame.iloc[: origin + 1]).mean
        actual = frame["cpu"].iloc[origin + 1 : origin + 13].to_numpy()
        errors.append(np.mean(np.abs(forecast - actual)))
        mean_errors.append(np.mean(np.abs(frame["cpu"].mean() - actual)))
    assert np.mean(errors) < np.mean(mean_errors)


def test_save_is_plain_json_and_reloads_to_identical_forecasts(fitted: ArimaModel, frame, tmp_path) -> None:
    fitted.calibration = Calibration(np.column_stack([-np.linspace(1, 2, 12), np.linspace(1, 3, 12)]), floor=0.5)
    fitted.save(tmp_path / "arima")
    files = sorted(p.name for p in (tmp_path / "arima").iterdir())
    assert files == ["meta.json"]  # no pickle, nothing but JSON
    state = json.loads((tmp_path / "arima" / "meta.json").read_text())["state"]
    assert state["order"] == list(fitted.order) and len(state["recent"]["ts"]) > 0
    loaded = ArimaModel.load(tmp_path / "arima")
    for history in (None, frame, frame.iloc[:-20]):
        a, b = fitted.predict(12, history=history), loaded.predict(12, history=history)
        assert np.array_equal(a.timestamps, b.timestamps)
        assert np.allclose(a.mean, b.mean, rtol=0, atol=1e-9)
        assert np.allclose(a.upper, b.upper, rtol=0, atol=1e-9)


def test_gaps_in_the_history_are_filtered_through(frame) -> None:
    gappy = frame.copy()
    gappy.iloc[100:160, gappy.columns.get_loc("cpu")] = np.nan  # a five-hour hole
    gappy.iloc[-5:-2, gappy.columns.get_loc("cpu")] = np.nan  # and a short one just before the origin
    model = ArimaModel(PERIOD, 12).fit(gappy)
    assert np.all(np.isfinite(model.predict(12, history=gappy).mean))


def test_constant_series_is_a_clear_model_error() -> None:
    flat = to_frame({"cpu": (START + PERIOD * np.arange(400, dtype=np.int64), np.full(400, 7.0))}, PERIOD)
    with pytest.raises(ModelError, match="constant"):
        ArimaModel(PERIOD, 12).fit(flat)


def test_too_short_series_is_a_clear_model_error() -> None:
    short = to_frame({"cpu": (START + PERIOD * np.arange(10, dtype=np.int64), np.arange(10.0))}, PERIOD)
    with pytest.raises(ModelError, match="at least"):
        ArimaModel(PERIOD, 12).fit(short)


def test_less_than_a_day_fits_without_the_daily_terms() -> None:
    frame = to_frame(demo_samples(0.5, index=3, metrics=("cpu",)), PERIOD)
    model = ArimaModel(PERIOD, 6).fit(frame)
    assert model.terms == 0 and np.all(np.isfinite(model.predict(6).mean))


def test_fourier_terms_repeat_every_day() -> None:
    ts = np.array([START, START + DAY, START + DAY // 4])
    x = fourier_terms(ts, 2)
    assert x.shape == (3, 4)
    assert np.allclose(x[0], x[1]) and x[2, 0] == pytest.approx(1.0)
