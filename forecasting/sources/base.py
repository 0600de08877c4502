"""What every metric source gives the ingest job: a list of instances and their datapoints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class InstanceInfo:
    """An instance a source can report on; ``threshold_tag`` is the EC2 tag ``headroom:threshold`` if set."""

    instance_id: str
    name: str | None = None
    threshold_tag: float | None = None


@dataclass(frozen=True)
class SeriesRequest:
    """Fetch one (instance, metric) series from ``start`` (unix seconds, inclusive)."""

    instance_id: str
    metric: str
    start: int


@dataclass
class FetchResult:
    """Datapoints fetched in one cycle, the per-series problems met, and the API calls it took."""

    rows: list[tuple[str, str, int, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    calls: int = 0
    calls_required: int = 0


class Source(Protocol):
    """A place metrics come from: CloudWatch, the demo feed."""

    def list_instances(self) -> list[InstanceInfo]:
        """The instances to monitor now."""
        ...

    def fetch(self, requests: list[SeriesRequest], end: int) -> FetchResult:
        """Datapoints of each requested series with ``start <= ts < end``."""
        ...


def align(ts: float, period: int) -> int:
    """Round a time down to the start of its period."""
    return int(ts) // period * period


PERCENT_METRICS = ("cpu", "memory")
PERCENT_TOLERANCE = 1.0
"""Percent values up to this far outside 0-100 are rounding (CloudWatch reports 100.0001 %) and are clipped."""


def plausible(metric: str, value: float) -> bool:
    """Percent metrics within 0-100 give or take the tolerance, byte counts not negative, and finite."""
    if not math.isfinite(value):
        return False
    if metric in PERCENT_METRICS:
        return -PERCENT_TOLERANCE <= value <= 100 + PERCENT_TOLERANCE
    return value >= 0


def clip(metric: str, value: float) -> float:
    """A plausible value brought into its range (percent metrics into 0-100)."""
    return min(max(value, 0.0), 100.0) if metric in PERCENT_METRICS else value
