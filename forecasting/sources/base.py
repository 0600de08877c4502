"""What every metric source gives the ingest job: a list of instances and their datapoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SourceInstance:
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

    def list_instances(self) -> list[SourceInstance]:
        """The instances to monitor now."""
        ...

    def fetch(self, requests: list[SeriesRequest], end: int) -> FetchResult:
        """Datapoints of each requested series with ``start <= ts < end``."""
        ...


def align(ts: float, period: int) -> int:
    """Round a time down to the start of its period."""
    return int(ts) // period * period
