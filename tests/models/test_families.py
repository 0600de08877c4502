"""A model family is one class plus one declaration: settings, training, combination, saving and loading follow."""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
import pandas as pd
import pytest

from forecasting import models
from forecasting.models import FAMILIES, ModelFamily, default_models, family, model_names, register_family
from forecasting.models.base import ForecastModel, ModelError
from forecasting.models.registry import load_model, make_model, model_class
from forecasting.settings import SettingsError, load_settings
from forecasting.training import train_instance
from tests.test_features import demo_samples


class DriftModel(ForecastModel):
    """A family that exists only in this test: the last value plus the average step of the fitted history."""

    name: ClassVar[str] = "drift"

    def fit(self, frame: pd.DataFrame) -> Self:
        cpu = frame["cpu"].dropna().to_numpy()
        if len(cpu) < 2:
            raise ModelError("drift: needs two points")
        self.step = float((cpu[-1] - cpu[0]) / (len(cpu) - 1))
        self.history = frame
        return self

    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        last = float(history["cpu"].dropna().iloc[-1])
        return last + self.step * np.arange(1, horizon + 1)

    def state(self) -> dict:
        return {"step": self.step}

    def set_state(self, state: dict) -> None:
        self.step = float(state["step"])


DRIFT = ModelFamily("drift", f"{__name__}:DriftModel", "statistical", "last value plus the mean step", default=False)


@pytest.fixture
def drift_family():
    register_family(DRIFT)
    yield DRIFT
    FAMILIES.pop("drift", None)


def test_every_built_in_family_is_declared_once_and_its_class_agrees() -> None:
    assert list(FAMILIES) == list(models.MODEL_NAMES)
    for name in FAMILIES:
        assert model_class(name).name == name
    assert set(models.NEURAL) == {n for n, f in FAMILIES.items() if f.kind == "neural"}
    assert default_models() == load_settings().models
    assert family("combined").combines and not family("arima").combines
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        family("nope")


def test_a_new_family_is_one_declaration_away_from_being_trained_combined_and_reloaded(drift_family, tmp_path) -> None:
    assert "drift" in model_names("statistical") and "drift" not in default_models()
    settings = load_settings(db=tmp_path / "h.db", models=["naive", "linear", "drift", "combined"], backtest_days=1)
    assert make_model("drift", settings).horizon == settings.horizon
    samples = demo_samples(2, index=3)
    result = train_instance("i-drift", samples, settings, int(samples["cpu"][0][-1]))
    scores = {s["model"]: s for s in result.scores}
    assert scores["drift"]["status"] == "ok" and scores["drift"]["mase"] > 0
    assert scores["combined"]["status"] == "ok"  # three single models: the new one is a member of the combination
    reloaded = load_model(f"{result.run['model_dir']}/drift")
    assert isinstance(reloaded, DriftModel) and reloaded.calibration is not None
    assert set(load_model(f"{result.run['model_dir']}/combined").names) == {"naive", "linear", "drift"}


def test_an_undeclared_family_is_refused_by_the_settings_with_the_known_names() -> None:
    with pytest.raises(SettingsError, match="unknown model 'drift'; choose from naive"):
        load_settings(models=["naive", "drift"])


def test_a_family_that_needs_more_history_is_left_out_with_its_reason(tmp_path) -> None:
    register_family(ModelFamily("drift", f"{__name__}:DriftModel", "statistical", "test", min_history_days=5.0, default=False))
    try:
        settings = load_settings(db=tmp_path / "h.db", models=["naive", "drift"], backtest_days=1)
        samples = demo_samples(2, index=3)
        result = train_instance("i-short", samples, settings, int(samples["cpu"][0][-1]))
        drift = next(s for s in result.scores if s["model"] == "drift")
        assert drift["status"] == "skipped" and "needs 5 days of history" in drift["reason"]
    finally:
        FAMILIES.pop("drift", None)
