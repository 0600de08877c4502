"""The one contract every model follows: ``fit(frame) -> self``, ``predict(horizon) -> Forecast``.

A *frame* is a pandas DataFrame on the regular period grid (index: unix seconds,
int64, UTC), with a ``cpu`` column and, where the instance has them, ``memory``,
``network_in`` and ``network_out``; long gaps are NaN rows (see ``features.to_frame``).

Intervals are not the model's own: training calibrates the very fitted model that is
deployed on its out-of-sample backtest residuals (``calibration.Calibration``, split
conformal scaled by recent volatility) and sets ``calibration``; until then the bounds
equal the point forecast.

A saved model is a directory: ``meta.json`` (name, period, horizon, calibration and the
model's own plain-JSON state) plus any files the family needs (``model.keras``).
It is written under a temporary name and renamed, and loading never unpickles.
"""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from forecasting.calibration import Calibration, recent_bounds, recent_origins
from forecasting.features import future_timestamps


@dataclass
class Forecast:
    """Timestamps (unix seconds) with the point forecast and its lower/upper bound."""

    timestamps: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    model: str

    def __len__(self) -> int:
        return len(self.timestamps)


class ModelError(RuntimeError):
    """A model cannot fit or predict on this data; the message says why (logged, model skipped)."""


class ForecastModel(ABC):
    """Base class: subclasses implement ``fit``, ``predict_mean`` and their JSON state (+ extra files)."""

    name: ClassVar[str]
    min_points: int = 2  # least history (grid rows with CPU) needed to fit; an instance may raise it

    def __init__(self, period: int = 300, horizon: int = 12) -> None:
        self.period = period
        self.horizon = horizon
        self.calibration: Calibration | None = None  # set by training; None: bounds equal the forecast
        self.history: pd.DataFrame | None = None

    # ---- what a family implements ------------------------------------
    @abstractmethod
    def fit(self, frame: pd.DataFrame) -> Self:
        """Learn from the history in ``frame``; raise ModelError if the data cannot support the model."""

    @abstractmethod
    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        """Point forecast of the ``horizon`` steps after the last row of ``history``, without refitting."""

    def state(self) -> dict[str, Any]:
        """The fitted state as plain JSON-able values (no pickles)."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what ``state`` returned."""

    def save_files(self, directory: Path) -> None:
        """Write any files beyond meta.json (e.g. a Keras model)."""

    def load_files(self, directory: Path) -> None:
        """Read what ``save_files`` wrote."""

    def predict_at(self, frame: pd.DataFrame, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """Point forecasts [len(rows), horizon] from several origins (row positions in ``frame``).

        Each forecast sees only the rows up to its origin. Families with a faster batched
        path (the neural ones) override this with the same meaning.
        """
        horizon = horizon or self.horizon
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.empty((0, horizon))
        return np.stack([np.asarray(self.predict_mean(horizon, frame.iloc[: int(r) + 1]), dtype=float) for r in rows])

    # ---- shared behaviour ---------------------------------------------
    def forecast_at(
        self, frame: pd.DataFrame, rows: np.ndarray, horizon: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, lower, upper) [len(rows), horizon] from several origins, clipped to 0–100, with calibrated bounds."""
        horizon = horizon or self.horizon
        rows = np.asarray(rows, dtype=np.int64)
        mean = np.clip(np.asarray(self.predict_at(frame, rows, horizon), dtype=float).reshape(len(rows), horizon), 0.0, 100.0)
        if not np.all(np.isfinite(mean)):
            raise ModelError(f"{self.name}: forecast is not finite")
        if self.calibration is None:
            return mean, mean.copy(), mean.copy()
        cpu = frame["cpu"].to_numpy(dtype=float)
        if self.calibration.adaptive and self.calibration.ratios is not None:
            past = recent_origins(rows)
            past_mean = np.clip(
                np.asarray(self.predict_at(frame, past, horizon), dtype=float).reshape(len(past), horizon), 0.0, 100.0
            )
            lower, upper = recent_bounds(self.calibration, cpu, mean, rows, past, past_mean)
        else:
            lower, upper = self.calibration.bounds(mean, self.calibration.scales(cpu, rows))
        return mean, lower, upper

    def predict(self, horizon: int | None = None, history: pd.DataFrame | None = None) -> Forecast:
        """Forecast after the end of ``history`` (default: the fitted frame) with calibrated bounds."""
        horizon = horizon or self.horizon
        history = self.history if history is None else history
        if history is None or len(history) == 0:
            raise ModelError(f"{self.name}: no history to forecast from")
        mean, lower, upper = (part[0] for part in self.forecast_at(history, np.array([len(history) - 1]), horizon))
        stamps = future_timestamps(int(history.index[-1]), horizon, self.period)
        return Forecast(stamps, mean, lower, upper, self.name)

    def save(self, path: Path) -> None:
        """Write the model directory atomically (temporary directory, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        meta = {
            "name": self.name,
            "period": self.period,
            "horizon": self.horizon,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "state": self.state(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        self.save_files(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model directory written by ``save``."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("name") != cls.name:
            raise ModelError(f"{path} holds a {meta.get('name')!r} model, not {cls.name!r}")
        model = cls(period=int(meta["period"]), horizon=int(meta["horizon"]))
        if meta.get("calibration"):
            model.calibration = Calibration.from_dict(meta["calibration"])
        elif meta.get("interval_offsets"):  # saved before intervals scaled with volatility: fixed offsets
            model.calibration = Calibration(np.asarray(meta["interval_offsets"], dtype=float), adaptive=False)
        model.set_state(meta.get("state") or {})
        model.load_files(path)
        return model
