"""The combination: which models it takes, the median that outvotes a failing member, saving and loading by siblings."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.features import to_frame
from forecasting.models.base import ModelError
from forecasting.models.combined import CombinedModel, combination_members, combine
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
    assert isinstance(combined, CombinedModel) and len(combined.names) == 3 and set(combined.names) <= set(scores)
    assert scores["combined"]["fit_seconds"] == pytest.approx(sum(scores[m]["fit_seconds"] for m in combined.names), abs=1e-3)
    frame = to_frame(samples, PERIOD)
    members = [load_model(f"{result.run['model_dir']}/{name}").predict(12, history=frame).mean for name in combined.names]
    forecast = combined.predict(12, history=frame)
    assert np.allclose(forecast.mean, combine(members))
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
