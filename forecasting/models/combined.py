"""A combination of the models that held up best in the backtest: the median of their forecasts.

Picking one model per instance from a two-day backtest is noisy: the winner of a short window
is often not the winner of the next. Combining a few good forecasts is the robust alternative
(the M3/M4 competitions' lesson), and the median is the combination that survives one member
failing badly: a seasonal-naive that looked best yesterday and misses today's level shift, or a
trend that overshoots, is outvoted by the other two rather than averaged in. The rule
(:func:`combination_members`) is fixed in advance and uses only the backtest origins set aside
for choosing (``backtest.BacktestPlan``): the ``MEMBERS`` lowest-MASE models. The combination is
then calibrated on its own residuals at the later origins, like any other model.

A saved combination holds only its members' names; its members are the sibling model
directories of the same training run, loaded with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from forecasting.models.base import ForecastModel, ModelError

MEMBERS = 3
"""How many models are combined: the smallest number whose median outvotes one failing member."""


def combination_members(errors: dict[str, float | None], count: int = MEMBERS) -> list[str]:
    """The ``count`` models with the lowest error (MASE on the choosing origins); ties keep the given order."""
    usable = [(name, float(e)) for name, e in errors.items() if e is not None and np.isfinite(e)]
    return [name for name, _ in sorted(usable, key=lambda item: item[1])[:count]]


def combine(forecasts: list[np.ndarray]) -> np.ndarray:
    """The per-step median of the members' forecasts (each clipped to 0–100 first)."""
    return np.median(np.stack([np.clip(np.asarray(f, dtype=float), 0.0, 100.0) for f in forecasts]), axis=0)


class CombinedModel(ForecastModel):
    """Median of member models' point forecasts; members are fitted and saved on their own."""

    name: ClassVar[str] = "combined"
    min_points: int = 1

    def __init__(self, period: int = 300, horizon: int = 12) -> None:
        super().__init__(period, horizon)
        self.names: list[str] = []
        self.members: dict[str, ForecastModel] = {}

    @classmethod
    def of(cls, members: dict[str, ForecastModel], period: int, horizon: int) -> CombinedModel:
        """A combination of fitted ``members``."""
        if not members:
            raise ModelError("combined: no members to combine")
        model = cls(period, horizon)
        model.names, model.members = list(members), dict(members)
        return model

    def fit(self, frame: pd.DataFrame) -> Self:
        """A combination is built from fitted members (``CombinedModel.of``), never fitted on a frame."""
        raise ModelError("combined: built from the backtest of the other models, not fitted on its own")

    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        return self.predict_at(history, np.array([len(history) - 1]), horizon)[0]

    def predict_at(self, frame: pd.DataFrame, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """The median of the members' forecasts from each origin."""
        horizon = horizon or self.horizon
        if not self.members:
            raise ModelError("combined: no members loaded")
        return combine([self.members[name].predict_at(frame, rows, horizon) for name in self.names])

    def state(self) -> dict[str, Any]:
        return {"members": self.names}

    def set_state(self, state: dict[str, Any]) -> None:
        self.names = [str(name) for name in state.get("members", [])]

    def load_files(self, directory: Path) -> None:
        """Load the members from the sibling directories of the same run."""
        from forecasting.models.registry import load_model

        if not self.names:
            raise ModelError(f"combined: {directory} names no members")
        try:
            self.members = {name: load_model(Path(directory).parent / name) for name in self.names}
        except Exception as error:
            raise ModelError(f"combined: a member cannot be loaded: {error}".splitlines()[0]) from None
