"""Prometheus metrics (``GET /metrics``): each instance's forecast, warning and accuracy, and the worker's health.

Built per scrape from the store by a custom collector on a registry of its own (the official
``prometheus_client``), so the API process keeps no state besides a short cache of the realised
accuracy. Instance series carry an ``instance_id`` label (``instance`` is Prometheus' own target
label). Values are those of the latest champion forecast, as ``/predictions`` shows them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from forecasting import __version__
from forecasting.alerts import find_crossing
from forecasting.settings import Settings
from forecasting.store import Store

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The classic text format, which every Prometheus version scrapes."""
REALISED_WINDOW = 6 * 3600
"""Champion forecasts made in this window are scored against the samples that have arrived since."""
REALISED_CACHE_SECONDS = 60.0


def realised_errors(forecasts: list[Mapping[str, Any]], actual: Mapping[int, float]) -> dict[str, float] | None:
    """MAE, MAPE and interval coverage of stored forecasts on the actual CPU at their timestamps (None: nothing to score)."""
    pred, low, high, real = [], [], [], []
    for forecast in forecasts:
        for ts, mean, lower, upper in zip(forecast["timestamps"], forecast["mean"], forecast["lower"], forecast["upper"], strict=True):
            value = actual.get(int(ts))
            if value is not None:
                pred.append(mean)
                low.append(lower)
                high.append(upper)
                real.append(value)
    if not real:
        return None
    p, y = np.asarray(pred, dtype=float), np.asarray(real, dtype=float)
    nonzero = np.abs(y) > 1e-9
    mape = float(np.mean(np.abs((p[nonzero] - y[nonzero]) / y[nonzero])) * 100) if nonzero.any() else float("nan")
    covered = (np.asarray(low) <= y) & (y <= np.asarray(high))
    return {"mae": float(np.mean(np.abs(p - y))), "mape": mape, "coverage": float(np.mean(covered)), "points": float(len(y))}


def realised_accuracy(store: Store, now: int, window: int = REALISED_WINDOW) -> dict[str, dict[str, float]]:
    """Realised scores of every instance's champion forecasts of the last ``window`` seconds."""
    since = now - window
    rows = store.query("SELECT instance_id, timestamps, mean, lower, upper FROM forecasts WHERE made_at >= ? AND is_champion = 1", (since,))
    by_instance: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_instance.setdefault(row[0], []).append({k: json.loads(row[k]) for k in ("timestamps", "mean", "lower", "upper")})
    actuals = store.recent_series(since, "cpu")
    out = {}
    for iid, forecasts in by_instance.items():
        ts, values = actuals.get(iid, (np.empty(0, dtype=np.int64), np.empty(0)))
        scores = realised_errors(forecasts, dict(zip(ts.tolist(), values.tolist(), strict=True)))
        if scores is not None:
            out[iid] = scores
    return out


class _RealisedCache:
    """The realised scores are a scan of hours of forecasts: computed at most once a minute per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: tuple[float, str, dict[str, dict[str, float]]] | None = None

    def get(self, store: Store, now: int) -> dict[str, dict[str, float]]:
        with self._lock:
            key = str(store.path)
            if self._value is None or self._value[1] != key or time.monotonic() - self._value[0] > REALISED_CACHE_SECONDS:
                self._value = (time.monotonic(), key, realised_accuracy(store, now))
            return self._value[2]


REALISED = _RealisedCache()


class StoreCollector(Collector):
    """Reads the store on each collect: forecasts, warnings, champions, accuracy, job health, data age, outbox."""

    def __init__(self, store: Store, settings: Settings, now: float | None = None) -> None:
        self.store, self.settings = store, settings
        self.now = time.time() if now is None else now

    def collect(self) -> Iterator[Any]:
        yield from self._instances()
        yield from self._worker()

    def _instances(self) -> Iterator[Any]:
        store, now = self.store, int(self.now)
        labels = ["instance_id"]
        predicted = GaugeMetricFamily("headroom_predicted_cpu_percent", "CPU percent the champion forecasts at the end of the horizon",
                                      labels=["instance_id", "bound"])
        peak = GaugeMetricFamily("headroom_predicted_peak_cpu_percent", "Highest point forecast of CPU over the horizon", labels=labels)
        limit = GaugeMetricFamily("headroom_cpu_threshold_percent", "CPU percent that counts as overload for the instance", labels=labels)
        minutes = GaugeMetricFamily("headroom_minutes_to_limit", "Minutes until the point forecast reaches the threshold (absent: no crossing)",
                                    labels=labels)
        made = GaugeMetricFamily("headroom_forecast_made_timestamp_seconds", "When the latest champion forecast was made", labels=labels)
        warning = GaugeMetricFamily("headroom_warning_open", "1 while an early warning is open for the instance", labels=labels)
        champion = InfoMetricFamily("headroom_champion", "The model deployed for the instance", labels=labels)
        mase = GaugeMetricFamily("headroom_backtest_mase", "Backtest MASE of the champion in its latest training run", labels=["instance_id", "model"])
        window = f"{REALISED_WINDOW // 3600}h"
        realised = {name: GaugeMetricFamily(f"headroom_realised_{name}", text, labels=["instance_id", "window"]) for name, text in (
            ("mae_percent", "Mean absolute error of the champion forecasts whose actual CPU has arrived, in CPU points"),
            ("mape_percent", "Mean absolute percentage error of those forecasts"),
            ("coverage_ratio", "Share of those actuals inside the forecast interval"))}
        thresholds = {inst.instance_id: inst.threshold for inst in store.instances()}
        warned = {row["instance_id"] for row in store.alerts(state="open", limit=1_000_000)}
        for forecast in store.latest_forecasts():
            iid = forecast["instance_id"]
            for bound in ("mean", "lower", "upper"):
                predicted.add_metric([iid, bound], float(forecast[bound][-1]))
            peak.add_metric([iid], float(max(forecast["mean"])))
            made.add_metric([iid], float(forecast["made_at"]))
            crossing = find_crossing(forecast, thresholds.get(iid, self.settings.threshold), "mean", now)
            if crossing is not None:
                minutes.add_metric([iid], round(crossing.lead_minutes, 1))
        for iid, threshold in thresholds.items():
            limit.add_metric([iid], threshold)
            warning.add_metric([iid], 1.0 if iid in warned else 0.0)
        runs = store.latest_runs()
        for iid, run in sorted(runs.items()):
            if run["champion"]:
                champion.add_metric([iid], {"model": run["champion"]})
        for score in store.scores():
            run = runs.get(score["instance_id"])
            if run is not None and score["model"] == run["champion"] and score["mase"] is not None:
                mase.add_metric([score["instance_id"], score["model"]], float(score["mase"]))
        for iid, scores in sorted(REALISED.get(store, now).items()):
            realised["mae_percent"].add_metric([iid, window], scores["mae"])
            realised["mape_percent"].add_metric([iid, window], scores["mape"])
            realised["coverage_ratio"].add_metric([iid, window], scores["coverage"])
        yield from (predicted, peak, limit, minutes, made, warning, champion, mase, *realised.values())

    def _worker(self) -> Iterator[Any]:
        store = self.store
        runs = GaugeMetricFamily("headroom_job_last_run_timestamp_seconds", "When the worker job last finished", labels=["job"])
        success = GaugeMetricFamily("headroom_job_last_success_timestamp_seconds",
                                    "When the worker job last finished without error (absent while its last run failed)", labels=["job"])
        duration = GaugeMetricFamily("headroom_job_last_duration_seconds", "How long the job's last run took", labels=["job"])
        ok = GaugeMetricFamily("headroom_job_last_run_ok", "1 when the job's last run succeeded", labels=["job"])
        for job, row in store.heartbeats().items():
            finished = float(row["finished_at"] if row["finished_at"] is not None else row["started_at"])
            runs.add_metric([job], finished)
            ok.add_metric([job], float(row["ok"]))
            if row["duration_seconds"] is not None:
                duration.add_metric([job], float(row["duration_seconds"]))
            if row["ok"]:
                success.add_metric([job], finished)
        yield from (runs, success, duration, ok)
        newest = store.query("SELECT MAX(ts) FROM samples WHERE metric = 'cpu'")[0][0]
        if newest is not None:
            yield GaugeMetricFamily("headroom_newest_sample_timestamp_seconds", "Start of the newest CPU sample in the store", value=float(newest))
            yield GaugeMetricFamily("headroom_data_age_seconds", "Seconds since the newest CPU sample", value=round(self.now - newest, 1))
        yield GaugeMetricFamily("headroom_instances", "Monitored instances", value=float(len(store.instances())))
        waiting = GaugeMetricFamily("headroom_webhook_pending_messages", "Webhook messages waiting in the outbox", labels=["destination"])
        try:
            for destination, count in store.query("SELECT destination, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY destination"):
                waiting.add_metric([destination], float(count))
        except sqlite3.OperationalError:  # a store the worker has not migrated to the outbox yet
            pass
        yield waiting
        build = InfoMetricFamily("headroom_build", "Headroom's version")
        build.add_metric([], {"version": __version__})
        yield build


def render(store: Store, settings: Settings, now: float | None = None) -> bytes:
    """The Prometheus text exposition of the store, as ``GET /metrics`` answers it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, settings, now))
    return generate_latest(registry)
