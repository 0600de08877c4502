"""Model names → classes, from the declarations in ``forecasting.models.FAMILIES``.

A family's module is imported only when the family is built or loaded, so baselines and
ARIMA (and every page or job that uses only them) never import TensorFlow.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from forecasting.models import FAMILIES, family
from forecasting.models.base import ForecastModel, ModelError
from forecasting.settings import Settings


def model_class(name: str) -> type[ForecastModel]:
    """The class implementing ``name`` (its module imported on first use)."""
    try:
        module, _, attribute = family(name).target.partition(":")
    except KeyError as error:
        raise ModelError(str(error).strip("'\"")) from None
    return getattr(importlib.import_module(module), attribute)


def make_model(name: str, settings: Settings, horizon: int | None = None) -> ForecastModel:
    """A fresh, unfitted model of family ``name`` for the settings' period and the horizon."""
    cls = model_class(name)
    horizon = horizon or settings.horizon
    if family(name).takes_params:
        return cls(period=settings.period, horizon=horizon, params=settings.model)  # type: ignore[call-arg]
    if family(name).pooled:
        return cls(period=settings.period, horizon=horizon, source=fleet_source(settings))  # type: ignore[call-arg]
    return cls(period=settings.period, horizon=horizon)


def fleet_source(settings: Settings) -> Path | None:
    """The fleet model a pooled family uses: the one the retrain pass handed in, else (uploads) the newest saved one."""
    if settings.fleet_model is not None:
        return Path(settings.fleet_model)
    from forecasting.fleet_model import latest_fleet_model  # imports training, which imports this module

    latest = latest_fleet_model(settings)
    return latest[0] if latest else None


def saved_model_name(path: str | Path) -> str:
    """The family named in a saved model's meta.json (ModelError if it is missing or unreadable)."""
    meta = Path(path) / "meta.json"
    try:
        name = json.loads(meta.read_text()).get("name")
    except (OSError, ValueError) as error:
        raise ModelError(f"{meta}: cannot read ({error})".splitlines()[0]) from None
    if name not in FAMILIES:
        raise ModelError(f"{meta}: unknown model {name!r}")
    return str(name)


def load_model(path: str | Path) -> ForecastModel:
    """Load a model directory written by ``ForecastModel.save``, whatever its family."""
    return model_class(saved_model_name(path)).load(Path(path))
