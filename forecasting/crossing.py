"""The one rule for what a forecast says about an instance's limit: where it crosses, how soon, how high, how worrying.

The alerts, the Fleet and Instance pages, the API (``/metrics``), the CloudWatch figures, the webhooks
and the mail all ask this module, so they cannot disagree about the same forecast. Pure functions on
plain values; ``now`` is always an argument.

- **Crossing**: the first forecast step at or above the threshold. Which series may cross is
  ``HEADROOM_ALERT_ON``: ``mean`` (the point forecast), ``likely`` (the default: a step has at least a
  40 % chance of reaching the threshold, see :func:`basis_series`) or ``upper`` (the upper bound of the
  90 % interval). The point forecast is always tried first; the series that crosses is the ``basis``.
- **Over now**: where the caller passes the newest CPU sample (the alerts do), a forecast that
  does not cross while that sample is already at or over the threshold crosses *now* (basis
  ``now``, lead 0), and the peak is never below that sample (:func:`with_cpu_now`). An instance
  over its limit is the surest sign of overload there is, whatever the forecast says: the alert
  opens at the start of an overload a forecast missed, and does not clear in the middle of one.
- **Time to limit**: minutes from now to the crossing, never negative (0 once it is due).
- **Peak**: the highest value of the series that crossed; when none does, of the widest series
  ``alert_on`` watches (what an open alert's hysteresis compares with threshold − margin).
- **Risk level**: over the limit now, alert open, will cross, near the limit (peak or CPU now within
  the margin below the limit), ok, or unknown (no forecast).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from forecasting.clock import MINUTE
from forecasting.store import ForecastRecord

LIKELY_CHANCE = 0.40
"""``likely`` warns when a step has at least this chance of reaching the threshold. For a score like
F1 the best cut-off on a calibrated probability is half the F1 that can be reached (Lipton, Elkan and
Naryanaswamy, 2014): about 0.4 for the 0.8 Headroom aims at. The point forecast alone is a 50 % cut."""
LIKELY_SHARE = 0.2533 / 1.6449
"""Where the 60 % quantile lies between the point forecast (50 %) and the upper bound (95 %) of a
bell-shaped error: z(0.60) / z(0.95). Stored forecasts keep mean and bounds only, so the 60 % level
is read from them this way."""
BASES: dict[str, tuple[str, ...]] = {"mean": ("mean",), "likely": ("mean", "likely"), "upper": ("mean", "upper")}
"""For each ``alert_on``, the series tried in order (the first that crosses is the basis)."""
BASIS_TEXT = {
    "mean": "point forecast",
    "likely": "at least a 40 % chance",
    "upper": "upper bound only",
    "now": "over the limit now",
}
"""How logs and webhooks name a basis, in short."""
BASIS_MEANING = {
    "mean": "the point forecast crosses",
    "likely": "a step has at least a 40 % chance of crossing",
    "upper": "only the upper bound of the 90 % interval crosses",
    "now": "the forecast does not cross, but the newest CPU sample is already at or over the limit",
}
"""What a basis means, in a sentence (the mail and the API's documentation)."""

RISK_LEVELS = ("over", "alert", "risk", "watch", "ok", "unknown")
"""Risk levels, worst first."""
RISK_WORDS = {
    "over": "over limit",
    "alert": "alert open",
    "risk": "will cross",
    "watch": "near limit",
    "ok": "ok",
    "unknown": "no forecast",
}
AT_RISK = ("over", "alert", "risk")
"""The levels that mean the limit is (or is about to be) reached."""


@dataclass(frozen=True)
class Crossing:
    """Where a forecast first reaches the threshold."""

    step: int  # 0-based forecast step; -1: the newest sample (basis 'now')
    ts: int  # its timestamp (unix seconds)
    lead_minutes: float  # from now to the crossing, never negative
    peak: float  # highest value of the series that crossed
    basis: str  # 'mean', 'likely' or 'upper'


def first_at_or_above(values: Sequence[float] | np.ndarray, threshold: float) -> int | None:
    """Index of the first value at or above ``threshold`` (None if none is)."""
    hits = np.flatnonzero(np.asarray(values, dtype=float) >= threshold)
    return int(hits[0]) if len(hits) else None


def basis_series(forecast: ForecastRecord, basis: str) -> np.ndarray:
    """The forecast series of one basis: ``mean``, ``upper``, or ``likely`` (the ~60 % quantile of each step)."""
    mean = np.asarray(forecast.mean, dtype=float)
    if basis == "likely":
        return mean + LIKELY_SHARE * (np.asarray(forecast.upper, dtype=float) - mean)
    return mean if basis == "mean" else np.asarray(forecast.upper, dtype=float)


def minutes_to_limit(crossing_ts: float, now: float) -> float:
    """Time to limit: minutes from ``now`` to a crossing, never negative."""
    return max(0.0, (float(crossing_ts) - float(now)) / MINUTE)


def find_crossing(forecast: ForecastRecord, threshold: float, alert_on: str, now: float) -> Crossing | None:
    """Where the forecast first reaches the threshold by the alert rule, or None when it does not.

    The series of ``BASES[alert_on]`` are tried in order, the point forecast first; the one that
    crosses names the basis.
    """
    stamps = forecast.timestamps
    for basis in BASES[alert_on]:
        series = basis_series(forecast, basis)
        step = first_at_or_above(series, threshold)
        if step is not None:
            ts = int(stamps[step])
            return Crossing(step, ts, minutes_to_limit(ts, now), float(np.max(series)), basis)
    return None


@dataclass(frozen=True)
class Outlook:
    """What one forecast says about one limit: its crossing (None: it stays below) and its peak."""

    crossing: Crossing | None
    peak: float

    @property
    def minutes_to_limit(self) -> float | None:
        """Time to limit, None when the forecast does not cross."""
        return None if self.crossing is None else self.crossing.lead_minutes


def with_cpu_now(peak: float | np.ndarray, cpu_now: float | np.ndarray | None) -> np.ndarray:
    """The level a cycle is judged by: the forecast's peak, or CPU now where that is higher (no forecast peak: NaN)."""
    peak = np.asarray(peak, dtype=float)
    return np.where(np.isfinite(peak), np.fmax(peak, np.asarray(np.nan if cpu_now is None else cpu_now, dtype=float)), np.nan)


def outlook(
    forecast: ForecastRecord, threshold: float, alert_on: str, now: float, latest: tuple[int, float] | None = None
) -> Outlook:
    """The crossing and the peak of one forecast by the alert rule (see the module's docstring).

    ``latest`` is the newest CPU sample (ts, value); it counts only when it is not older than the
    forecast's origin, so a forecast is never judged by a value from before it.
    """
    crossing = find_crossing(forecast, threshold, alert_on, now)
    cpu_now = latest[1] if latest is not None and latest[0] >= forecast.origin_ts and np.isfinite(latest[1]) else None
    if crossing is None and cpu_now is not None and cpu_now >= threshold:
        crossing = Crossing(-1, int(latest[0]), 0.0, float(cpu_now), "now")  # type: ignore[index]
    peak = crossing.peak if crossing is not None else float(np.max(basis_series(forecast, BASES[alert_on][-1])))
    return Outlook(crossing, float(with_cpu_now(peak, cpu_now)))


def shown_crossing(
    seen: Outlook | None, alert_crossing_ts: int | None, threshold: float, last_ts: int | None, cpu_now: float | None
) -> int | None:
    """The crossing pages and the digest show for an instance: its newest sample when CPU is over the limit now, else
    the forecast's crossing, else the last one its open alert predicted (an alert held open within the margin)."""
    if cpu_now is not None and last_ts is not None and cpu_now >= threshold:
        return int(last_ts)
    if seen is not None and seen.crossing is not None:
        return seen.crossing.ts
    return None if alert_crossing_ts is None else int(alert_crossing_ts)


def risk_level(cpu_now: float | None, threshold: float, margin: float, seen: Outlook | None, has_alert: bool) -> str:
    """The risk level of one instance (see ``RISK_LEVELS``) from its CPU now, its forecast's outlook (None: no
    forecast) and whether an alert is open."""
    if cpu_now is not None and cpu_now >= threshold:
        return "over"
    if has_alert:
        return "alert"
    if seen is None:
        return "unknown"
    if seen.crossing is not None:
        return "risk"
    near = threshold - margin
    if seen.peak >= near or (cpu_now is not None and cpu_now >= near):
        return "watch"
    return "ok"
