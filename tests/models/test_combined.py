"""The combination: which models it takes, the median that outvotes a failing member, saving and loading by siblings."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from forecasting.features import to_frame
from forecasting.models.base import ForecastModel, ModelError
from forecasting.models.combined import MIN_RECENT_ORIGINS, CombinedModel, combination_members, combine, recent_errors
from forecasting.models.registry import load_model
from forecasting.settings import load_settings
from forecasting.training import train_instance
from tests.test_features import PERIOD, demo_samples


def test_members_are_the_three_lowest_errors_and_unusable_scores_are_ignored() -> None:
    errors = {"naive": 1.0, "seasonal_naive": 0.7, "linear": None, "arima": 0.8, "lstm": float("nan"), "tcn": 0.75}
    assert combination_members(errors) == ["seasonal_naive", "tcn", "arima"]
    assert combination_members({"naive": 1.0, "arima": 1.0, "tcn": 1.0, "lstm": 1.0}) == [
        "naive",
        "arima",
        "tcn",
    ]  # ties: given order
    assert combination_members({"naive": None}) == []


def test_the_median_outvotes_one_member_that_fails_badly() -> None:
    good, also_good, broken = np.full(4, 50.0), np.full(4, 52.0), np.array([0.0, 100.0, 500.0, -50.0])
    assert combine([good, broken, also_good]).tolist() == [50.0, 52.0, 52.0, 50.0]  # never pulled towards the broken one
    assert combine([good, also_good]).tolist() == [51.0] * 4  # two members: their mean


def test_a_combination_cannot_be_fitted_on_its_own() -> None:
    with pytest.raises(ModelError, match="not fitted on its own"):
        CombinedModel().fit(to_frame(demo_samples(1, index=0), PERIOD))


def test_training_saves_the_combination_beside_its_members_and_it_reloads_to_the_same_forecast(tmp_path) -> None:
    settings = load_settings(
        db=tmp_path / "h.db", models=["naive", "seasonal_naive", "linear", "arima", "combined"], backtest_days=1
    )
    samples = demo_samples(2.5, index=2)
    result = train_instance("i-combined", samples, settings, int(samples["cpu"][0][-1]))
    scores = {s["model"]: s for s in result.scores}
    assert scores["combined"]["status"] == "ok" and scores["combined"]["mase"] > 0
    combined = load_model(f"{result.run['model_dir']}/combined")
    assert isinstance(combined, CombinedModel) and set(combined.names) == set(scores) - {"combined"}  # every fitted model
    assert combined.fitted_until is not None and combined.fitted_until < int(samples["cpu"][0][-1])
    assert scores["combined"]["fit_seconds"] == pytest.approx(sum(scores[m]["fit_seconds"] for m in combined.names), abs=1e-3)
    frame = to_frame(samples, PERIOD)
    members = [load_model(f"{result.run['model_dir']}/{name}").predict(12, history=frame).mean for name in combined.names]
    forecast = combined.predict(12, history=frame)
    assert any(np.allclose(forecast.mean, combine(list(three))) for three in itertools.combinations(members, 3))
    assert (
        (forecast.lower <= forecast.mean).all()
        and (forecast.upper >= forecast.mean).all()
        and (forecast.upper > forecast.lower).any()
    )


def test_a_combination_whose_member_is_gone_fails_to_load_with_one_line(tmp_path) -> None:
    settings = load_settings(db=tmp_path / "h.db", models=["naive", "linear", "arima", "combined"], backtest_days=1)
    samples = demo_samples(2, index=1)
    result = train_instance("i-gone", samples, settings, int(samples["cpu"][0][-1]))
    combined = load_model(f"{result.run['model_dir']}/combined")
    for path in (tmp_path / "models").rglob(f"{combined.names[0]}/meta.json"):
        path.unlink()
    with pytest.raises(ModelError, match="a member cannot be loaded") as caught:
        load_model(f"{result.run['model_dir']}/combined")
    assert "\n" not in str(caught.value)


def test_recent_errors_count_only_forecasts_whose_outcome_is_known_at_the_row() -> None:
    rows, steps = 40, 3
    actual = np.arange(rows * steps, dtype=float).reshape(rows, steps)
    forecasts = np.stack([actual + 1.0, actual - 2.0])  # errors 1 and 2 everywhere
    errors, origins = recent_errors(forecasts, actual, np.ones(rows, dtype=bool), window=10)
    assert np.isnan(errors[:, :steps]).all() and (origins[:steps] == 0).all()  # nothing realised yet
    assert np.allclose(errors[:, steps:], [[1.0], [2.0]])
    assert origins[steps] == 1 and origins[-1] == 10 - steps + 1  # origins r−10 … r−3
    later = actual.copy()
    later[25:] += 50.0  # changing what happens after row 24 changes nothing known at row 24
    assert np.allclose(recent_errors(forecasts, later, np.ones(rows, dtype=bool), window=10)[0][:, 24], errors[:, 24])
    fitted = np.arange(rows) >= 20  # origins the candidates were fitted on never count
    assert (recent_errors(forecasts, actual, fitted, window=10)[1][:23] == 0).all()


class _Constant(ForecastModel):
    """A test member that always forecasts one level."""

    name = "constant"

    def __init__(self, level: float) -> None:
        super().__init__(PERIOD, 6)
        self.level = level

    def fit(self, frame: pd.DataFrame) -> _Constant:
        return self

    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        return np.full(horizon, self.level)

    def predict_at(self, frame: pd.DataFrame, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        return np.full((len(rows), horizon or self.horizon), self.level)


def test_the_combination_follows_the_members_that_were_right_over_the_last_day() -> None:
    index = pd.Index(np.arange(600, dtype=np.int64) * PERIOD, name="ts")
    cpu = np.where(np.arange(600) < 300, 20.0, 70.0)  # the load moves from 20 % to 70 % at row 300
    frame = pd.DataFrame({"cpu": cpu}, index=index)
    members = {f"m{level}": _Constant(level) for level in (20, 25, 30, 60, 70, 75)}  # ranked best first at 20 %
    combined = CombinedModel.of(members, PERIOD, 6)
    early, late, just_after = combined.predict_at(frame, np.array([250, 599, 300 + MIN_RECENT_ORIGINS // 2]), 6)
    assert np.allclose(early, 25.0)  # m20, m25, m30 were right lately
    assert np.allclose(late, 70.0)  # a day after the shift: m60, m70, m75
    assert np.allclose(just_after, 25.0)  # right after the shift the last day still favours the old level
