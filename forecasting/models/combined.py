"""A combination of the models that are forecasting best lately: the median of the three best.

Picking one model per instance from a two-day backtest is noisy: the winner of a short window
is often not the winner of the next. Combining a few good forecasts is the robust alternative
(the M3/M4 competitions' lesson), and the median is the combination that survives one member
failing badly: a seasonal-naive that looked best yesterday and misses today's level shift, or a
trend that overshoots, is outvoted by the other two rather than averaged in.

Which three is decided again at every forecast, from each candidate's own errors over the last
day (``RECENT_ROWS``): every candidate forecasts from each row of that day, and those forecasts
whose outcome is already known at the origin are scored against what happened
(:func:`recent_errors`). A ranking from a backtest that may be days old goes stale when the load
changes; the last day's errors follow it, the same reason the interval is recalibrated on recent
errors (``calibration.recent_bounds``). Only forecasts made after the candidates' fit count, so
the backtest never scores a member on rows it was fitted on. Until an hour of such forecasts is
known (``MIN_RECENT_ORIGINS``), the ranking of the backtest's choosing origins decides
(:func:`combination_members`), which is also the order ties keep. Whether the combination or a
single model is deployed is judged against its yardstick, the fixed median of the backtest's three
best (``training._combine``, ``backtest.choose_deployed``).

A saved combination holds its candidates' names in that ranking; they are the sibling model
directories of the same training run, loaded with it. A combination saved with three names
forecasts exactly as before (the median of all three).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from forecasting.calibration import RECENT_ROWS
from forecasting.models.base import ForecastModel, ModelError

MEMBERS = 3
"""How many models are combined: the smallest number whose median outvotes one failing member."""
MIN_RECENT_ORIGINS = 12
"""Realised forecasts (an hour of origins at 5 min) needed before recent errors replace the backtest ranking."""


def combination_members(errors: dict[str, float | None], count: int = MEMBERS) -> list[str]:
    """The ``count`` models with the lowest error (MASE on the choosing origins); ties keep the given order."""
    usable = [(name, float(e)) for name, e in errors.items() if e is not None and np.isfinite(e)]
    return [name for name, _ in sorted(usable, key=lambda item: item[1])[:count]]


def combine(forecasts: list[np.ndarray]) -> np.ndarray:
    """The per-step median of the members' forecasts (each clipped to 0–100 first)."""
    return np.median(np.stack([np.clip(np.asarray(f, dtype=float), 0.0, 100.0) for f in forecasts]), axis=0)


def recent_errors(
    forecasts: np.ndarray, actual: np.ndarray, usable: np.ndarray, window: int = RECENT_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's mean absolute error, at each row, over its forecasts already realised there.

    ``forecasts`` [candidates, rows, steps] come from consecutive rows and ``actual`` [rows, steps]
    are their outcomes (NaN where unknown). At row ``r`` the origins ``o`` counted are those with
    ``r − window ≤ o ≤ r − steps`` (every target observed by ``r``) and ``usable[o]``; nothing after
    ``r`` is read. Returns the errors [candidates, rows] (NaN where nothing counted) and how many
    origins counted at each row.
    """
    forecasts, actual = np.asarray(forecasts, dtype=float), np.asarray(actual, dtype=float)
    _, rows, steps = forecasts.shape
    seen = np.isfinite(actual) & np.asarray(usable, dtype=bool)[:, None]
    error_sums = np.where(seen, np.abs(forecasts - actual), 0.0).sum(axis=2)
    points = seen.sum(axis=1)

    def running(values: np.ndarray) -> np.ndarray:
        values = np.atleast_2d(values)
        return np.concatenate([np.zeros((len(values), 1)), np.cumsum(values, axis=1)], axis=1)

    at = np.arange(rows)
    start = np.clip(at - window, 0, None)
    stop = np.maximum(at - steps + 1, start)  # exclusive: origins up to r − steps
    totals = running(error_sums)[:, stop] - running(error_sums)[:, start]
    counts = (running(points)[0, stop] - running(points)[0, start]).astype(np.int64)
    origins = (running(points > 0)[0, stop] - running(points > 0)[0, start]).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        errors = np.where(counts > 0, totals / counts, np.nan)
    return errors, origins


class CombinedModel(ForecastModel):
    """Median of the ``MEMBERS`` candidates with the lowest recent error; candidates are fitted and saved on their own."""

    name: ClassVar[str] = "combined"
    min_points: int = 1

    def __init__(self, period: int = 300, horizon: int = 12) -> None:
        super().__init__(period, horizon)
        self.names: list[str] = []  # the candidates, best first on the backtest's choosing origins
        self.members: dict[str, ForecastModel] = {}
        self.fitted_until: int | None = None  # origins before this timestamp forecast rows the candidates were fitted on

    @classmethod
    def of(cls, members: dict[str, ForecastModel], period: int, horizon: int, fitted_until: int | None = None) -> CombinedModel:
        """A combination of fitted candidates ``members``, given in the backtest's ranking (best first)."""
        if not members:
            raise ModelError("combined: no members to combine")
        model = cls(period, horizon)
        model.names, model.members, model.fitted_until = list(members), dict(members), fitted_until
        return model

    def fit(self, frame: pd.DataFrame) -> Self:
        """A combination is built from fitted members (``CombinedModel.of``), never fitted on a frame."""
        raise ModelError("combined: built from the backtest of the other models, not fitted on its own")

    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        return self.predict_at(history, np.array([len(history) - 1]), horizon)[0]

    def predict_at(self, frame: pd.DataFrame, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """From each origin, the median of the ``MEMBERS`` candidates with the lowest error over the day before it."""
        horizon = horizon or self.horizon
        rows = np.asarray(rows, dtype=np.int64)
        if not self.members:
            raise ModelError("combined: no members loaded")
        if len(rows) == 0:
            return np.empty((0, horizon))
        cpu = frame["cpu"].to_numpy(dtype=float)
        seen = np.flatnonzero(np.isfinite(cpu[: int(rows.max()) + 1]))
        if len(seen) == 0 or rows.min() < seen[0]:
            raise ModelError("combined: no CPU value to forecast from")
        span = np.arange(max(int(seen[0]), int(rows.min()) - RECENT_ROWS), int(rows.max()) + 1)
        names, stack = self._candidate_forecasts(frame, span, horizon)
        targets = span[:, None] + np.arange(1, horizon + 1)
        actual = np.where(targets < len(cpu), cpu[np.minimum(targets, len(cpu) - 1)], np.nan)
        usable = np.ones(len(span), dtype=bool)
        if self.fitted_until is not None:
            usable = frame.index.to_numpy(dtype=np.int64)[span] >= self.fitted_until
        errors, origins = recent_errors(stack, actual, usable)
        at = rows - span[0]
        ranking = np.repeat(np.arange(len(names), dtype=float)[:, None], len(rows), axis=1)
        key = np.where(origins[at] >= MIN_RECENT_ORIGINS, errors[:, at], ranking)
        chosen = np.argsort(key, axis=0, kind="stable")[:MEMBERS]  # [members, rows]
        picked = stack[chosen, at[None, :]]  # [members, rows, steps]
        return np.median(picked, axis=0)

    def _candidate_forecasts(self, frame: pd.DataFrame, span: np.ndarray, horizon: int) -> tuple[list[str], np.ndarray]:
        """Every candidate's forecasts from each row of ``span`` (clipped to 0–100); one that cannot forecast is left out."""
        names, forecasts, reasons = [], [], []
        for name in self.names:
            try:
                values = np.clip(np.asarray(self.members[name].predict_at(frame, span, horizon), dtype=float), 0.0, 100.0)
            except ModelError as error:
                reasons.append(str(error).splitlines()[0])
                continue
            if values.shape == (len(span), horizon) and np.all(np.isfinite(values)):
                names.append(name)
                forecasts.append(values)
        if not names:
            raise ModelError(f"combined: no member could forecast ({'; '.join(reasons) or 'non-finite forecasts'})")
        return names, np.stack(forecasts)

    def state(self) -> dict[str, Any]:
        return {"members": self.names, "fitted_until": self.fitted_until}

    def set_state(self, state: dict[str, Any]) -> None:
        self.names = [str(name) for name in state.get("members", [])]
        until = state.get("fitted_until")
        self.fitted_until = None if until is None else int(until)

    def load_files(self, directory: Path) -> None:
        """Load the members from the sibling directories of the same run."""
        from forecasting.models.registry import load_model

        if not self.names:
            raise ModelError(f"combined: {directory} names no members")
        try:
            self.members = {name: load_model(Path(directory).parent / name) for name in self.names}
        except Exception as error:
            raise ModelError(f"combined: a member cannot be loaded: {error}".splitlines()[0]) from None
