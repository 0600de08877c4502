"""Model names → classes: build a fresh model from settings, or load a saved one by its meta.json.

The neural families are imported only when one is asked for, so baselines and ARIMA
(and every page or job that uses only them) never import TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

from forecasting.models import MODEL_NAMES, NEURAL
from forecasting.models.base import ForecastModel, ModelError
from forecasting.settings import Settings


def model_class(name: str) -> type[ForecastModel]:
    """The class implementing ``name`` (importing TensorFlow only for lstm/tcn)."""
    if name == "naive":
        from forecasting.models.baselines import NaiveModel

        return NaiveModel
    if name == "seasonal_naive":
        from forecasting.models.baselines import SeasonalNaiveModel

        return SeasonalNaiveModel
    if name == "linear":
        from forecasting.models.baselines import LinearModel

        return LinearModel
    if name == "arima":
        from forecasting.models.arima import ArimaModel

        return ArimaModel
    if name == "lstm":
        from forecasting.models.neural import LstmModel

        return LstmModel
    if name == "tcn":
        from forecasting.models.neural import TcnModel

        return TcnModel
    raise ModelError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")


def make_model(name: str, settings: Settings, horizon: int | None = None) -> ForecastModel:
    """A fresh, unfitted model of family ``name`` for the settings' period and the horizon."""
    cls = model_class(name)
    horizon = horizon or settings.horizon
    if name in NEURAL:
        return cls(period=settings.period, horizon=horizon, params=settings.model)  # type: ignore[call-arg]
    return cls(period=settings.period, horizon=horizon)


def saved_model_name(path: str | Path) -> str:
    """The family named in a saved model's meta.json (ModelError if it is missing or unreadable)."""
    meta = Path(path) / "meta.json"
    try:
        name = json.loads(meta.read_text()).get("name")
    except (OSError, ValueError) as error:
        raise ModelError(f"{meta}: cannot read ({error})".splitlines()[0]) from None
    if name not in MODEL_NAMES:
        raise ModelError(f"{meta}: unknown model {name!r}")
    return str(name)


def load_model(path: str | Path) -> ForecastModel:
    """Load a model directory written by ``ForecastModel.save``, whatever its family."""
    return model_class(saved_model_name(path)).load(Path(path))
