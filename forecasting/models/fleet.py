"""The ``fleet`` family: one ridge regression learned across every instance, applied to this one.

The coefficients are learned once per retrain cycle by ``forecasting.fleet_model`` from windows
sampled from every instance's history (see ``forecasting.models.pooled`` for the features and
why they are scaled per instance); ``fit`` does not learn from the frame, it reads those shared
coefficients from the file the cycle saved (``source``) and checks that the frame can feed them.
The fitted model keeps a copy of the coefficients in its own saved state (a few hundred numbers),
so a deployed instance keeps forecasting even after the fleet file has been replaced.

It needs no day of history (the day-ago inputs switch off until a day exists), so an instance a
few hours old gets forecasts from it at once: the cold start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from forecasting.models import pooled
from forecasting.models.base import ForecastModel, ModelError

MIN_POINTS = 12
"""CPU values needed before the model forecasts (an hour at 5-minute periods)."""


def read_coefficients(path: Path, period: int, horizon: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Coefficients and meta of a saved fleet model; ModelError if missing or made for another grid or a shorter horizon."""
    try:
        meta = json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelError(f"fleet: no fleet model at {path} ({error})".splitlines()[0]) from None
    coef = np.asarray(meta["coef"], dtype=float)
    if int(meta["period"]) != period or coef.shape[1] < horizon:
        raise ModelError(
            f"fleet: the fleet model at {path} is for period {meta['period']} s and horizon {coef.shape[1]}, "
            f"not {period} s and {horizon}"
        )
    return coef, meta


class FleetModel(ForecastModel):
    """Forecasts with the fleet-wide coefficients from this instance's own recent CPU."""

    name: ClassVar[str] = "fleet"
    min_points: int = MIN_POINTS

    def __init__(self, period: int = 300, horizon: int = 12, source: str | Path | None = None) -> None:
        super().__init__(period, horizon)
        self.source = None if source is None else Path(source)
        self.coef: np.ndarray | None = None
        self.trained_at: int | None = None

    def fit(self, frame: pd.DataFrame) -> Self:
        """Take the cycle's fleet coefficients (nothing is learned from ``frame``); check the frame can feed them."""
        if self.source is None:
            raise ModelError("fleet: no fleet model has been trained yet")
        points = int(frame["cpu"].notna().sum()) if "cpu" in frame else 0
        if points < self.min_points:
            raise ModelError(f"fleet: needs at least {self.min_points} points with CPU, got {points}")
        self.coef, meta = read_coefficients(self.source, self.period, self.horizon)
        self.trained_at = int(meta.get("trained_at", 0))
        self.history = frame[["cpu"]]
        return self

    def predict_at(self, frame: pd.DataFrame, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """Forecasts from many origins in one matrix product (each origin reads only rows up to itself)."""
        if self.coef is None:
            raise ModelError("fleet: not fitted")
        horizon = horizon or self.horizon
        if horizon > self.coef.shape[1]:
            raise ModelError(f"fleet: trained for {self.coef.shape[1]} steps, asked for {horizon}")
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.empty((0, horizon))
        cpu = frame["cpu"].to_numpy(dtype=float)
        if not np.isfinite(cpu[: int(rows.max()) + 1]).any():
            raise ModelError("fleet: no CPU value to forecast from")
        return pooled.forecast(self.coef, cpu, rows, self.period, horizon)

    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        return self.predict_at(history, np.array([len(history) - 1]), horizon)[0]

    def state(self) -> dict[str, Any]:
        return {"coef": [] if self.coef is None else self.coef.tolist(), "trained_at": self.trained_at}

    def set_state(self, state: dict[str, Any]) -> None:
        coef = state.get("coef") or []
        self.coef = np.asarray(coef, dtype=float) if len(coef) else None
        self.trained_at = state.get("trained_at")
