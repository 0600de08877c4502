"""Prometheus metrics (``GET /metrics``): each instance's forecast, warning and accuracy, and the worker's health.

Built per scrape from the store by a custom collector on a registry of its own (the official
``prometheus_client``), so the API process keeps no state. Realised accuracy is the one the worker
stores (``forecasting/scoring.py``), for the deployed forecasts (``auto``). Instance series carry an ``instance_id`` label (``instance`` is Prometheus' own target
label). Values are those of the latest champion forecast, as ``/predictions`` shows them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from forecasting import __version__
from forecasting.crossing import outlook
from forecasting.outbox import pending
from forecasting.scoring import realised_scores
from forecasting.settings import Settings
from forecasting.store import Store

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The classic text format, which every Prometheus version scrapes."""


class StoreCollector(Collector):
    """Reads the store on each collect: forecasts, warnings, champions, accuracy, job health, data age, outbox."""

    def __init__(self, store: Store, settings: Settings, now: float) -> None:
        self.store, self.settings, self.now = store, settings, now

    def collect(self) -> Iterator[Any]:
        yield from self._instances()
        yield from self._worker()

    def _instances(self) -> Iterator[Any]:
        store, now = self.store, int(self.now)
        labels = ["instance_id"]
        predicted = GaugeMetricFamily(
            "headroom_predicted_cpu_percent",
            "CPU percent the champion forecasts at the end of the horizon",
            labels=["instance_id", "bound"],
        )
        peak = GaugeMetricFamily(
            "headroom_predicted_peak_cpu_percent",
            "Peak of the CPU forecast over the horizon, as the alerts read it",
            labels=labels,
        )
        limit = GaugeMetricFamily(
            "headroom_cpu_threshold_percent", "CPU percent that counts as overload for the instance", labels=labels
        )
        minutes = GaugeMetricFamily(
            "headroom_minutes_to_limit",
            "Minutes until the forecast reaches the threshold by the alert rule (absent: no crossing)",
            labels=labels,
        )
        made = GaugeMetricFamily(
            "headroom_forecast_made_timestamp_seconds", "When the latest champion forecast was made", labels=labels
        )
        warning = GaugeMetricFamily("headroom_warning_open", "1 while an early warning is open for the instance", labels=labels)
        champion = InfoMetricFamily("headroom_champion", "The model deployed for the instance", labels=labels)
        mase = GaugeMetricFamily(
            "headroom_backtest_mase", "Backtest MASE of the champion in its latest training run", labels=["instance_id", "model"]
        )
        realised = {
            name: GaugeMetricFamily(f"headroom_realised_{name}", text, labels=["instance_id", "window"])
            for name, text in (
                ("mae_percent", "Mean absolute error of the deployed forecasts whose actual CPU has arrived, in CPU points"),
                ("mape_percent", "Mean absolute percentage error of those forecasts"),
                ("mase", "Their MASE (error over the instance's one-day seasonal-naive error)"),
                ("coverage_ratio", "Share of those actuals inside the forecast interval"),
            )
        }
        thresholds = {inst.instance_id: inst.threshold for inst in store.samples.instances()}
        warned = {alert.instance_id for alert in store.alerts.open()}
        newest = store.samples.latest_values("cpu")
        for forecast in store.forecasts.latest():
            iid = forecast.instance_id
            for bound, values in (("mean", forecast.mean), ("lower", forecast.lower), ("upper", forecast.upper)):
                predicted.add_metric([iid, bound], float(values[-1]))
            threshold = thresholds.get(iid, self.settings.threshold_for(iid))
            seen = outlook(forecast, threshold, self.settings.alert_on, now, newest.get(iid))
            peak.add_metric([iid], seen.peak)
            made.add_metric([iid], float(forecast.made_at))
            if seen.minutes_to_limit is not None:
                minutes.add_metric([iid], round(seen.minutes_to_limit, 1))
        for iid, threshold in thresholds.items():
            limit.add_metric([iid], threshold)
            warning.add_metric([iid], 1.0 if iid in warned else 0.0)
        runs = store.runs.latest()
        for iid, run in sorted(runs.items()):
            if run.champion:
                champion.add_metric([iid], {"model": run.champion})
        for score in store.runs.scores():
            latest = runs.get(score.instance_id)
            if latest is not None and score.model == latest.champion and score.mase is not None:
                mase.add_metric([score.instance_id, score.model], float(score.mase))
        try:
            stored = realised_scores(store, now)  # the realised accuracy the worker stores (forecasting/scoring.py)
        except sqlite3.OperationalError:  # a store the worker has not migrated to the realised table yet
            stored = {}
        for iid, by_model in sorted(stored.items()):
            for window, scores in by_model.get("auto", {}).items():
                for name, key in (
                    ("mae_percent", "mae"),
                    ("mape_percent", "mape"),
                    ("mase", "mase"),
                    ("coverage_ratio", "coverage"),
                ):
                    if scores[key] is not None:
                        realised[name].add_metric([iid, window], float(scores[key]))
        yield from (predicted, peak, limit, minutes, made, warning, champion, mase, *realised.values())

    def _worker(self) -> Iterator[Any]:
        store = self.store
        runs = GaugeMetricFamily("headroom_job_last_run_timestamp_seconds", "When the worker job last finished", labels=["job"])
        success = GaugeMetricFamily(
            "headroom_job_last_success_timestamp_seconds",
            "When the worker job last finished without error (absent while its last run failed)",
            labels=["job"],
        )
        duration = GaugeMetricFamily("headroom_job_last_duration_seconds", "How long the job's last run took", labels=["job"])
        ok = GaugeMetricFamily("headroom_job_last_run_ok", "1 when the job's last run succeeded", labels=["job"])
        for job, beat in store.jobs.heartbeats().items():
            finished = float(beat.finished_at if beat.finished_at is not None else beat.started_at)
            runs.add_metric([job], finished)
            ok.add_metric([job], float(beat.ok))
            if beat.duration_seconds is not None:
                duration.add_metric([job], float(beat.duration_seconds))
            if beat.ok:
                success.add_metric([job], finished)
        yield from (runs, success, duration, ok)
        newest = store.samples.newest_ts(metric="cpu")
        if newest is not None:
            yield GaugeMetricFamily(
                "headroom_newest_sample_timestamp_seconds", "Start of the newest CPU sample in the store", value=float(newest)
            )
            yield GaugeMetricFamily(
                "headroom_data_age_seconds", "Seconds since the newest CPU sample", value=round(self.now - newest, 1)
            )
        yield GaugeMetricFamily("headroom_instances", "Monitored instances", value=float(len(store.samples.instances())))
        waiting = GaugeMetricFamily(
            "headroom_webhook_pending_messages", "Webhook messages waiting in the outbox", labels=["destination"]
        )
        try:
            for destination, count in pending(store).items():
                waiting.add_metric([destination], float(count))
        except sqlite3.OperationalError:  # a store the worker has not migrated to the outbox yet
            pass
        yield waiting
        build = InfoMetricFamily("headroom_build", "Headroom's version")
        build.add_metric([], {"version": __version__})
        yield build


def render(store: Store, settings: Settings, now: float) -> bytes:
    """The Prometheus text exposition of the store, as ``GET /metrics`` answers it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, settings, now))
    return generate_latest(registry)
