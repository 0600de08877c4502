"""The ingest job: ask the source for what is new, write it to the store in one transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from forecasting.clock import DAY, MINUTE
from forecasting.metrics import METRICS
from forecasting.settings import Settings
from forecasting.sources.base import FetchResult, SeriesRequest, Source, SourceInstance, align
from forecasting.store import Store

log = logging.getLogger("headroom.ingest")

LATE_DATA_SECONDS = 15 * MINUTE
"""CloudWatch fills late buckets: every fetch re-reads the last 15 minutes of each series."""
FORECASTS_KEPT_SECONDS = 2 * DAY
"""Forecasts older than this are dropped at ingest (each instance and model keeps its newest one)."""


@dataclass
class IngestReport:
    instances: int
    rows: int
    calls: int
    calls_required: int
    pruned: int
    errors: list[str]

    def summary(self) -> str:
        text = f"{self.instances} instances, {self.rows} datapoints, {self.calls} calls (minimum {self.calls_required}), {self.pruned} pruned"
        return text + (f", {len(self.errors)} series with errors" if self.errors else "")


def make_source(settings: Settings, store: Store, now: int) -> Source:
    """The source named by settings; the demo's anchor time is remembered in the store."""
    if settings.source == "cloudwatch":
        from forecasting.sources.cloudwatch import CloudWatchSource

        return CloudWatchSource(settings)
    from forecasting.sources.demo import DemoSource

    anchor = store.jobs.get_meta("demo_anchor")
    if anchor is None:
        anchor = str(align(now, settings.period))
        store.jobs.set_meta("demo_anchor", anchor)
    return DemoSource(settings.demo_instances, settings.demo_seed, int(anchor), settings.period, settings.metrics)


def plan_requests(
    instances: list[SourceInstance],
    metrics_of: dict[str, list[str]],
    last_ts: dict[tuple[str, str], int],
    settings: Settings,
    end: int,
) -> list[SeriesRequest]:
    """One request per series: from its last stored point minus 15 min, or the training window on first sight."""
    backfill_from = align(end - settings.train_days * DAY, settings.period)
    requests = []
    for info in instances:
        for metric in metrics_of[info.instance_id]:
            last = last_ts.get((info.instance_id, metric))
            start = backfill_from if last is None else max(backfill_from, last - LATE_DATA_SECONDS)
            requests.append(SeriesRequest(info.instance_id, metric, start))
    return requests


def run_ingest(store: Store, settings: Settings, now: int, source: Source | None = None) -> IngestReport:
    """Fetch new datapoints for every monitored instance and upsert them with the instance rows, atomically."""
    source = source or make_source(settings, store, now)
    instances = source.list_instances()
    end = align(now, settings.period) + settings.period  # the current, still-filling bucket included
    metrics_of = {info.instance_id: _metrics_of(source, info.instance_id, settings) for info in instances}
    requests = plan_requests(instances, metrics_of, store.samples.newest_per_series(), settings, end)
    result: FetchResult = source.fetch(requests, end)
    kept = [
        (iid, key, ts, METRICS[key].clip(value)) for iid, key, ts, value in result.rows if _plausible(key, value) and ts < end
    ]
    if len(kept) < len(result.rows):
        bad = next(row for row in result.rows if not (_plausible(row[1], row[3]) and row[2] < end))
        result.errors.append(
            f"{len(result.rows) - len(kept)} implausible datapoints dropped (e.g. {bad[0]} {bad[1]} {bad[3]:g} at {bad[2]})"
        )
    result.rows = kept
    for error in result.errors:
        log.warning("ingest: %s", error)
    with store.transaction():
        for info in instances:
            store.samples.upsert_instance(
                info.instance_id, info.name, settings.threshold_for(info.instance_id, info.threshold_tag), now
            )
        rows = store.samples.upsert(result.rows)
        pruned = store.samples.prune(now - int(settings.history_days * DAY))
        store.forecasts.prune(now - FORECASTS_KEPT_SECONDS)  # they grow every cycle; keep what pages and API show
    return IngestReport(len(instances), rows, result.calls, result.calls_required, pruned, result.errors)


def _plausible(key: str, value: float) -> bool:
    """A declared metric's value within its range (a source may not invent metrics the store would keep forever)."""
    return key in METRICS and METRICS[key].plausible(value)


def _metrics_of(source: Source, instance_id: str, settings: Settings) -> list[str]:
    """The metric keys to fetch for one instance: the source's own answer, or every configured metric."""
    metrics_of = getattr(source, "metrics_of", None)
    return metrics_of(instance_id) if metrics_of else list(settings.metrics)
