"""The one contract every model follows: ``fit(frame) -> self``, ``predict(horizon) -> Forecast``.

A *frame* is a pandas DataFrame on the regular period grid (index: unix seconds,
int64, UTC), with a ``cpu`` column and, where the instance has them, ``memory``,
``network_in`` and ``network_out``; long gaps are NaN rows (see ``features``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import pandas as pd


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
    """Base class: subclasses implement ``_fit``, ``_predict_mean``, and the state they save."""

    name: ClassVar[str]
    min_points: ClassVar[int] = 2

    @abstractmethod
    def fit(self, frame: pd.DataFrame) -> Self:
        """Learn from the history in ``frame``; raise ModelError if the data cannot support the model."""

    @abstractmethod
    def predict(self, horizon: int, history: pd.DataFrame | None = None) -> Forecast:
        """Forecast ``horizon`` steps after the end of ``history`` (default: the fitted frame), without refitting."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the fitted model to ``path`` (write to a temporary name, then rename)."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by ``save``; never unpickles anything."""
