"""Model families behind one interface (see ``base.ForecastModel``), each declared once here.

A family is one file with its class plus one :class:`ModelFamily` line in ``FAMILIES``: training,
the benchmarks, the settings, the API and the dashboard all read this declaration (name, kind,
the history it needs, the inputs it reads, whether it combines others), so adding a family
touches nothing else. TensorFlow is imported only when a neural family is actually built or
loaded, so pages and jobs that never touch LSTM/TCN stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from forecasting.metrics import default_metrics

Kind = Literal["baseline", "statistical", "neural", "fleet", "combination"]


@dataclass(frozen=True)
class ModelFamily:
    """What a family is and needs: read by training, benchmarks, settings, API and pages."""

    name: str
    target: str  # "module:Class", imported only when the family is built or loaded
    kind: Kind
    summary: str  # one line for the docs and the dashboard
    min_history_days: float = 0.0  # with less history, training leaves the family out (with that reason)
    inputs: tuple[str, ...] = ("cpu",)  # metrics it reads (CPU is always the target)
    takes_params: bool = False  # built with ``settings.model`` (the neural hyperparameters)
    default: bool = True  # in the default ``HEADROOM_MODELS``
    pooled: bool = False  # learned across the fleet once per cycle: built with ``settings.fleet_model`` (its saved path)

    @property
    def combines(self) -> bool:
        """A combination is built from the other families' backtests rather than fitted on the frame."""
        return self.kind == "combination"


_ALL_METRICS = tuple(default_metrics())  # and any other metric HEADROOM_METRICS turns on (forecasting.metrics)
FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        ModelFamily("naive", "forecasting.models.baselines:NaiveModel", "baseline", "last value"),
        ModelFamily("seasonal_naive", "forecasting.models.baselines:SeasonalNaiveModel", "baseline", "same time yesterday"),
        ModelFamily(
            "linear",
            "forecasting.models.baselines:LinearModel",
            "baseline",
            "least-squares trend of the last hour (Prometheus predict_linear)",
        ),
        ModelFamily(
            "arima",
            "forecasting.models.arima:ArimaModel",
            "statistical",
            "ARIMA errors on daily Fourier terms, order by AIC (statsmodels)",
        ),
        # off by default since the fleet model: worse median MASE than `fleet` on the real traces at ~40× the
        # training time per instance (docs/models.md, "Which models run by default"); HEADROOM_MODELS turns them on
        ModelFamily(
            "lstm",
            "forecasting.models.neural:LstmModel",
            "neural",
            "stacked LSTM, whole horizon out (Keras)",
            min_history_days=2.0,
            inputs=_ALL_METRICS,
            takes_params=True,
            default=False,
        ),
        ModelFamily(
            "tcn",
            "forecasting.models.neural:TcnModel",
            "neural",
            "temporal convolutional network (keras-tcn)",
            min_history_days=2.0,
            inputs=_ALL_METRICS,
            takes_params=True,
            default=False,
        ),
        ModelFamily(
            "fleet",
            "forecasting.models.fleet:FleetModel",
            "fleet",
            "ridge regression on per-instance-scaled recent and day-ago CPU, learned across every instance",
            pooled=True,
        ),
        ModelFamily(
            "combined",
            "forecasting.models.combined:CombinedModel",
            "combination",
            "median of the three models that held up best in the backtest",
        ),
    )
}


def register_family(family: ModelFamily) -> None:
    """Add (or replace) a family at run time: what a plug-in or a test does instead of editing FAMILIES."""
    FAMILIES[family.name] = family


def family(name: str) -> ModelFamily:
    """The declaration of ``name`` (KeyError with the known names if there is none)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(FAMILIES)}") from None


def model_names(kind: Kind | None = None) -> tuple[str, ...]:
    """Every declared family's name (of one kind, when given), in declaration order."""
    return tuple(name for name, f in FAMILIES.items() if kind is None or f.kind == kind)


def default_models() -> list[str]:
    """What ``HEADROOM_MODELS`` is when it is not set."""
    return [name for name, f in FAMILIES.items() if f.default]


# Built-in names, for code that only needs them at import time (enums, help texts).
MODEL_NAMES: tuple[str, ...] = model_names()
BASELINES: tuple[str, ...] = model_names("baseline")
NEURAL: tuple[str, ...] = model_names("neural")
