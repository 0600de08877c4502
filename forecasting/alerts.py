"""Early warnings: turn each instance's champion forecast into an alert, keep it, clear it, score it.

An alert opens at the forecast's crossing (``forecasting.crossing``: the first step at or above the
instance's threshold of the series ``HEADROOM_ALERT_ON`` watches, the point forecast tried first;
the alert's ``basis`` says which series crossed), or, when the forecast does not cross, at the
newest CPU sample if that is already at or over the threshold (basis ``now``). It stays open while later forecasts keep crossing
and clears with hysteresis: the forecast peak below threshold − margin for ``CLEAR_CYCLES``
consecutive cycles. The real CPU decides how it ended: ``caught`` (the first sample at or above the
threshold came after the alert opened), ``late`` (the newest sample when it opened was already at
or above it) or ``false`` (cleared and no crossing within one horizon after). A forecast that
crosses again during that grace period reopens the same alert rather than opening (and mailing) a
new one.

The decisions are pure functions on plain values; :func:`evaluate_alerts` reads the store,
applies them and writes every change (and one ``alert_events`` row per state change) in one
transaction. Nothing here sends anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from forecasting.clock import HOUR, MINUTE
from forecasting.crossing import BASIS_TEXT, Crossing, outlook
from forecasting.settings import Settings
from forecasting.store import ForecastRecord, Store

log = logging.getLogger("headroom.alerts")

CLEAR_CYCLES = 2
"""Consecutive cycles with the forecast peak below threshold − margin that clear an alert."""


def iso_utc(ts: int | float) -> str:
    """Unix seconds as ISO 8601 UTC, e.g. ``2026-05-01T12:35:00Z`` (what mails and logs show)."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class AlertPolicy:
    """The one rule that opens, holds and clears a warning, for Headroom's alerts and every rule they are compared with.

    A cycle's peak is its forecast's peak, or CPU now where that is higher (``crossing.with_cpu_now``:
    an instance over its limit is overloaded whatever was forecast). A cycle whose peak reaches
    the threshold opens (or holds) the warning; a peak within
    ``margin`` below it holds an open one; ``clear_cycles`` consecutive cycles below
    threshold − margin clear it. A warning that opens again within ``grace_cycles`` of clearing
    continues the same episode (the same alert is reopened, and not mailed again).
    """

    threshold: float
    margin: float
    clear_cycles: int = CLEAR_CYCLES
    grace_cycles: int = 12

    def next(self, is_open: bool, below: int, peak: float | None) -> tuple[bool, int]:
        """(open, consecutive cycles below) after a cycle whose forecast peaks at ``peak`` (None or NaN: no forecast, no change)."""
        if peak is None or not np.isfinite(peak):
            return is_open, below
        if peak >= self.threshold:
            return True, 0
        if not is_open:
            return False, 0
        if peak >= self.threshold - self.margin:
            return True, 0
        return below + 1 < self.clear_cycles, below + 1

    def states(self, peaks: Sequence[float] | np.ndarray) -> np.ndarray:
        """Whether the warning is open after each cycle, given each cycle's forecast peak (NaN: no forecast)."""
        is_open, below = False, 0
        out = np.zeros(len(peaks), dtype=bool)
        for k, peak in enumerate(peaks):
            is_open, below = self.next(is_open, below if is_open else 0, float(peak))
            out[k] = is_open
        return out

    def episodes(self, states: np.ndarray) -> list[tuple[int, int]]:
        """(first, last) cycle of each warning episode; a reopening within the grace period continues the episode."""
        padded = np.concatenate([[False], np.asarray(states, dtype=bool), [False]]).astype(np.int8)
        starts = np.flatnonzero(np.diff(padded) == 1).tolist()
        ends = (np.flatnonzero(np.diff(padded) == -1) - 1).tolist()
        merged: list[tuple[int, int]] = []
        for first, last in zip(starts, ends, strict=True):
            if merged and first - merged[-1][1] - 1 <= self.grace_cycles:
                merged[-1] = (merged[-1][0], last)
            else:
                merged.append((first, last))
        return merged


def actual_crossing(ts: np.ndarray, values: np.ndarray, threshold: float, opened_at: int) -> tuple[int, str] | None:
    """The real crossing of an alert's threshold and whether the alert was in time: (ts, 'caught' | 'late').

    ``ts``/``values`` are CPU samples, oldest first, from a little before the opening. Late when
    the newest sample at the opening was already at or above the threshold (the crossing is the
    start of that run); caught when the first sample at or above it came after the opening.
    """
    ts, values = np.asarray(ts, dtype=np.int64), np.asarray(values, dtype=float)
    before = np.flatnonzero(ts <= opened_at)
    if len(before) and values[before[-1]] >= threshold:
        start = int(before[-1])
        while start > 0 and values[start - 1] >= threshold:
            start -= 1
        return int(ts[start]), "late"
    after = np.flatnonzero((ts > opened_at) & (values >= threshold))
    return (int(ts[after[0]]), "caught") if len(after) else None


@dataclass
class AlertChange:
    """One alert after a cycle: its columns, what changed, and the events to record."""

    row: dict[str, Any]
    alert_id: int | None = None  # None for an alert opened in this cycle
    changed: set[str] = field(default_factory=set)
    events: list[tuple[str, str]] = field(default_factory=list)

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            if self.row.get(name) != value:
                self.row[name] = value
                self.changed.add(name)


def open_alert(instance_id: str, crossing: Crossing, threshold: float, model: str, now: int) -> AlertChange:
    """A new alert for a crossing forecast."""
    row = {
        "instance_id": instance_id,
        "state": "open",
        "opened_at": now,
        "updated_at": now,
        "cleared_at": None,
        "threshold": threshold,
        "crossing_ts": crossing.ts,
        "lead_minutes": round(crossing.lead_minutes, 1),
        "peak": round(crossing.peak, 2),
        "model": model,
        "basis": crossing.basis,
        "below_count": 0,
        "actual_crossing_ts": None,
        "outcome": None,
        "emailed_at": None,
        "email_error": None,
    }
    change = AlertChange(row, changed=set(row))
    change.events.append(("opened", describe(crossing, threshold, model)))
    return change


def describe(crossing: Crossing, threshold: float, model: str) -> str:
    """One line for logs and alert events: when, how soon, how high, by which model."""
    sure = BASIS_TEXT.get(crossing.basis, crossing.basis)
    return (
        f"crosses {threshold:g} % at {iso_utc(crossing.ts)} in {crossing.lead_minutes:.0f} min, "
        f"peak {crossing.peak:.1f} %, {model}, {sure}"
    )


def step_alert(
    change: AlertChange,
    forecast: ForecastRecord | None,
    policy: AlertPolicy,
    alert_on: str,
    now: int,
    grace: int,
    latest: tuple[int, float] | None = None,
) -> None:
    """Advance one existing alert by a cycle's forecast (and the newest CPU sample): update, count towards clearing, clear, or reopen."""
    row, threshold = change.row, policy.threshold
    seen = outlook(forecast, threshold, alert_on, now, latest) if forecast is not None else None
    crossing = seen.crossing if seen is not None else None
    if row["state"] == "cleared":  # only pending ones (within the grace period) are stepped
        if forecast is not None and crossing is not None and row["outcome"] is None and now < int(row["cleared_at"]) + grace:
            change.set(state="open", cleared_at=None, below_count=0, updated_at=now)
            _update_crossing(change, crossing, threshold, forecast.model)
            change.events.append(("reopened", describe(crossing, threshold, forecast.model)))
        return
    if forecast is None or seen is None:
        return
    still_open, below = policy.next(True, int(row["below_count"]), seen.peak)
    change.set(below_count=below, updated_at=now)
    if crossing is not None:
        before = (row["crossing_ts"], row["basis"], row["model"])
        _update_crossing(change, crossing, threshold, forecast.model)
        if (row["crossing_ts"], row["basis"], row["model"]) != before:
            change.events.append(("updated", describe(crossing, threshold, forecast.model)))
    elif not still_open:
        change.set(state="cleared", cleared_at=now)
        change.events.append(
            ("cleared", f"forecast peak {seen.peak:.1f} % below {threshold - policy.margin:g} % for {below} cycles")
        )


def _update_crossing(change: AlertChange, crossing: Crossing, threshold: float, model: str) -> None:
    change.set(crossing_ts=crossing.ts, peak=round(crossing.peak, 2), model=model, basis=crossing.basis, threshold=threshold)


def resolve_outcome(change: AlertChange, ts: np.ndarray, values: np.ndarray, now: int, grace: int) -> None:
    """Record the real crossing (caught / late) or, once the grace after clearing has passed, a false alarm."""
    row = change.row
    if row["outcome"] is not None:
        return
    opened, cleared = int(row["opened_at"]), row["cleared_at"]
    end = now if cleared is None else min(now, int(cleared) + grace)
    keep = ts <= end
    found = actual_crossing(ts[keep], values[keep], float(row["threshold"]), opened)
    if found is not None:
        crossing_ts, outcome = found
        change.set(actual_crossing_ts=crossing_ts, outcome=outcome)
        lead = (crossing_ts - opened) / MINUTE
        change.events.append(
            (
                "crossed",
                f"{outcome}: CPU reached {row['threshold']:g} % at {iso_utc(crossing_ts)}, {lead:+.0f} min from the opening",
            )
        )
    elif cleared is not None and now >= int(cleared) + grace:
        change.set(outcome="false")
        change.events.append(("resolved", f"false alarm: no crossing within {grace // MINUTE} min of clearing"))


@dataclass
class AlertReport:
    """What one alert evaluation did."""

    opened: list[str] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    crossed: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)
    open_now: int = 0
    stale: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"{len(self.opened)} alerts opened"]
        for label, items in (
            ("reopened", self.reopened),
            ("cleared", self.cleared),
            ("crossed", self.crossed),
            ("false alarms", self.false_alarms),
            ("stale forecasts", self.stale),
        ):
            if items:
                parts.append(f"{len(items)} {label}")
        return ", ".join(parts) + f", {self.open_now} open"


def evaluate_alerts(store: Store, settings: Settings, now: int) -> AlertReport:
    """Open, update, clear and score alerts from the latest champion forecasts; all writes in one transaction."""
    started = time.perf_counter()
    report = AlertReport()
    grace = settings.horizon * settings.period
    forecasts = {f.instance_id: f for f in store.forecasts.latest()}
    thresholds = {i.instance_id: i.threshold for i in store.samples.instances()}
    latest = store.samples.latest_values("cpu")
    current: dict[str, AlertChange] = {}  # the one alert of each instance a forecast acts on
    pending: list[AlertChange] = []
    for alert in store.alerts.unresolved():  # newest first
        change = AlertChange(asdict(alert), alert_id=alert.alert_id)
        pending.append(change)
        held = current.get(alert.instance_id)
        if held is None or (alert.state == "open" and held.row["state"] != "open"):
            current[alert.instance_id] = change  # an open alert wins, else the newest pending cleared one
    for instance_id in sorted(set(forecasts) | set(current)):
        threshold = thresholds.get(instance_id, settings.threshold_for(instance_id))
        forecast = forecasts.get(instance_id)
        if forecast is not None and forecast.timestamps[-1] <= now:
            report.stale.append(instance_id)  # its whole horizon has passed: it says nothing about the future
            forecast = None
        held = current.get(instance_id)
        if held is not None and held.row["state"] == "cleared" and now >= int(held.row["cleared_at"]) + grace:
            held = None  # its grace period is over: a new crossing is a new alert
        if held is not None:
            policy = AlertPolicy(threshold, settings.alert_margin)
            step_alert(held, forecast, policy, settings.alert_on, now, grace, latest.get(instance_id))
        elif forecast is not None:
            crossing = outlook(forecast, threshold, settings.alert_on, now, latest.get(instance_id)).crossing
            if crossing is not None:
                pending.append(open_alert(instance_id, crossing, threshold, forecast.model, now))
    for change in pending:  # the real CPU decides how each one ends
        row = change.row
        if row["outcome"] is None:
            start = int(row["opened_at"]) - max(grace, HOUR)
            empty = (np.empty(0, dtype=np.int64), np.empty(0))
            cpu_ts, cpu = store.samples.series(row["instance_id"], start=start, end=now, metrics=["cpu"]).get("cpu", empty)
            resolve_outcome(change, cpu_ts, cpu, now, grace)
    with store.transaction():
        for change in pending:
            _write(store, change, now)
    for change in pending:  # said once it is stored
        _report(change, report)
    report.open_now = len(store.alerts.open())
    report.seconds = time.perf_counter() - started
    return report


def _write(store: Store, change: AlertChange, now: int) -> None:
    """Insert or update one alert and append its events."""
    if change.alert_id is None:
        change.alert_id = store.alerts.insert(change.row)
    elif change.changed:
        store.alerts.update(change.alert_id, {name: change.row[name] for name in change.changed})
    for kind, detail in change.events:
        store.alerts.add_event(change.alert_id, now, kind, detail)


def _report(change: AlertChange, report: AlertReport) -> None:
    """Count one alert's events in the report and log what matters to people."""
    iid = change.row["instance_id"]
    for kind, detail in change.events:
        if kind in ("opened", "reopened"):
            (report.opened if kind == "opened" else report.reopened).append(iid)
            log.warning("ALERT %s%s: %s (alert %d)", iid, "" if kind == "opened" else " reopened", detail, change.alert_id)
        elif kind in ("cleared", "crossed", "resolved"):
            {"cleared": report.cleared, "crossed": report.crossed, "resolved": report.false_alarms}[kind].append(iid)
            log.info("alert %d on %s %s: %s", change.alert_id, iid, kind, detail)
