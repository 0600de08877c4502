"""Small, pure formatting helpers shared by the dashboard pages (times, durations, percentages)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

SCORE_COLUMNS = [
    "model",
    "champion",
    "status",
    "mape",
    "smape",
    "mase",
    "rmse",
    "coverage",
    "fit_seconds",
    "predict_seconds",
    "reason",
]
"""The columns of a model score table, in the order the Models and Upload pages show them."""


def utc_text(ts: float | None, with_date: bool = True) -> str:
    """Unix seconds as a short UTC time, e.g. ``2026-11-28 14:05 UTC`` (or ``—`` when unknown)."""
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return "—"
    moment = datetime.fromtimestamp(int(ts), UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC" if with_date else "%H:%M UTC")


def duration_text(seconds: float | None) -> str:
    """A duration in the largest sensible unit: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    seconds = abs(float(seconds))
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def ago_text(ts: float | None, now: float) -> str:
    """How long ago a time was, e.g. ``4 min ago`` (``in 3 min`` for a time still ahead)."""
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return "never"
    delta = now - float(ts)
    return f"in {duration_text(-delta)}" if delta < 0 else f"{duration_text(delta)} ago"


def percent_text(value: float | None, digits: int = 0) -> str:
    """A CPU or memory value as ``73 %`` (``—`` when unknown)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f} %"


def minutes_to_text(minutes: float | None) -> str:
    """Time left until a threshold crossing: ``now``, ``25 min``, ``—`` (none predicted)."""
    if minutes is None or (isinstance(minutes, float) and math.isnan(minutes)):
        return "—"
    if minutes <= 0:
        return "now"
    return duration_text(minutes * 60)


def when_text(minutes: float | None) -> str:
    """A crossing time as a phrase: ``now``, ``in 25 min``, ``not predicted``."""
    text = minutes_to_text(minutes)
    return "not predicted" if text == "—" else text if text == "now" else f"in {text}"


def bytes_text(value: float) -> str:
    """Bytes in a readable unit (network panels): ``12.3 MB``."""
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size:.0f} B"
        size /= 1000
    return f"{size:.1f} TB"
