"""Forecasts back into CloudWatch (``HEADROOM_CLOUDWATCH_PUBLISH``): alarms and Auto Scaling act on what is coming.

After each forecast cycle, per instance, in the ``Headroom`` namespace (``HEADROOM_CLOUDWATCH_NAMESPACE``):

==================  =======  ========================================================================
metric              unit     value
==================  =======  ========================================================================
PredictedCPU        Percent  the champion's point forecast at the end of the horizon
PredictedCPUUpper   Percent  the upper bound of its 90 % interval there
PredictedPeakCPU    Percent  the forecast's peak over the horizon, as the alerts read it (``forecasting.crossing``)
MinutesToLimit      None     minutes until the forecast reaches the threshold by the alert rule (absent: no crossing)
WarningOpen         None     1 while a Headroom warning is open for the instance, else 0
==================  =======  ========================================================================

Each carries ``InstanceId`` (plus ``AutoScalingGroupName`` when the instance belongs to a group, read
from its ``aws:autoscaling:groupName`` tag). CloudWatch never aggregates custom metrics across
dimensions, so each group also gets the same five with ``AutoScalingGroupName`` alone: the mean of its
members' predicted CPU and bound (what a target-tracking policy follows), the highest peak and warning,
the soonest crossing. The datums are pure functions of the stored forecasts and alerts; the
``PutMetricData`` calls (at most 1,000 datums each, the API's limit) run in a background thread with
botocore's ``standard`` retry mode and bounded timeouts, so a slow or failing CloudWatch never holds
the worker's cycle: it costs one log line, and the next cycle publishes fresh values.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from forecasting.clock import HOUR, MINUTE
from forecasting.crossing import outlook
from forecasting.settings import Settings
from forecasting.store import ForecastRecord, Store

log = logging.getLogger("headroom.publish")

MAX_DATUMS = 1000
"""PutMetricData takes at most 1,000 metric datums per call."""
ASG_TAG = "aws:autoscaling:groupName"
ASG_REFRESH_SECONDS = HOUR
"""How long the instance → Auto Scaling group map is reused before DescribeInstances is asked again."""
DEADLINE_SECONDS = 60.0
"""Calls still unsent this long after a publish began are dropped (the next cycle has fresher values)."""
EXIT_WAIT_SECONDS = 10.0
"""At exit (``--once``, SIGTERM) a publish still running gets this long to finish; then it is abandoned."""
CLIENT_CONFIG = {"retries": {"mode": "standard", "max_attempts": 4}, "connect_timeout": 3, "read_timeout": 10}
PERCENT = ("PredictedCPU", "PredictedCPUUpper", "PredictedPeakCPU")


@dataclass(frozen=True)
class Figures:
    """What is published for one instance in one cycle."""

    instance_id: str
    at: int  # when the forecast was made (the datums' timestamp)
    predicted: float
    upper: float
    peak: float
    minutes_to_limit: float | None
    warning_open: bool


def instance_figures(
    forecast: ForecastRecord,
    threshold: float,
    alert_on: str,
    warning_open: bool,
    now: int,
    latest: tuple[int, float] | None = None,
) -> Figures:
    """One instance's figures from its champion forecast and newest CPU sample: peak and time to limit by the alerts' rule."""
    seen = outlook(forecast, threshold, alert_on, now, latest)
    minutes = seen.minutes_to_limit
    return Figures(
        forecast.instance_id,
        forecast.made_at,
        float(forecast.mean[-1]),
        float(forecast.upper[-1]),
        seen.peak,
        None if minutes is None else round(minutes, 1),
        warning_open,
    )


def cycle_figures(store: Store, now: int, max_age: float, alert_on: str) -> list[Figures]:
    """The figures of every instance whose champion forecast was made in this cycle and still looks ahead."""
    thresholds = {inst.instance_id: inst.threshold for inst in store.samples.instances()}
    warned = {alert.instance_id for alert in store.alerts.open()}
    latest = store.samples.latest_values("cpu")
    out = []
    for forecast in store.forecasts.latest():
        iid = forecast.instance_id
        if now - forecast.made_at > max_age or forecast.timestamps[-1] <= now or iid not in thresholds:
            continue  # a failed forecast publishes nothing rather than an old value
        out.append(instance_figures(forecast, thresholds[iid], alert_on, iid in warned, now, latest.get(iid)))
    return out


def _datum(name: str, value: float, dims: list[dict[str, str]], at: int) -> dict[str, Any]:
    return {
        "MetricName": name,
        "Dimensions": dims,
        "Value": round(float(value), 4),
        "Unit": "Percent" if name in PERCENT else "None",
        "Timestamp": datetime.fromtimestamp(at, UTC),
        "StorageResolution": 60,
    }


def _values(f: Figures) -> list[tuple[str, float]]:
    values = [
        ("PredictedCPU", f.predicted),
        ("PredictedCPUUpper", f.upper),
        ("PredictedPeakCPU", f.peak),
        ("WarningOpen", 1.0 if f.warning_open else 0.0),
    ]
    if f.minutes_to_limit is not None:
        values.append(("MinutesToLimit", f.minutes_to_limit))
    return [(name, value) for name, value in values if math.isfinite(value)]


def datums(figures: Sequence[Figures], groups: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every MetricDatum of a cycle: each instance's, then each Auto Scaling group's aggregate."""
    out: list[dict[str, Any]] = []
    members: dict[str, list[Figures]] = {}
    for f in figures:
        dims = [{"Name": "InstanceId", "Value": f.instance_id}]
        if f.instance_id in groups:
            dims.append({"Name": "AutoScalingGroupName", "Value": groups[f.instance_id]})
            members.setdefault(groups[f.instance_id], []).append(f)
        out.extend(_datum(name, value, dims, f.at) for name, value in _values(f))
    for group, fs in sorted(members.items()):
        crossings = [f.minutes_to_limit for f in fs if f.minutes_to_limit is not None]
        combined = Figures(
            group,
            max(f.at for f in fs),
            sum(f.predicted for f in fs) / len(fs),
            sum(f.upper for f in fs) / len(fs),
            max(f.peak for f in fs),
            min(crossings) if crossings else None,
            any(f.warning_open for f in fs),
        )
        out.extend(
            _datum(name, value, [{"Name": "AutoScalingGroupName", "Value": group}], combined.at)
            for name, value in _values(combined)
        )
    return out


def batches(items: Sequence[dict[str, Any]], size: int = MAX_DATUMS) -> list[list[dict[str, Any]]]:
    """The fewest PutMetricData calls that carry every datum: ceil(n / 1000)."""
    return [list(items[k : k + size]) for k in range(0, len(items), size)]


# ---- I/O: the AWS calls -----------------------------------------------------------
def asg_membership(ec2: Any) -> dict[str, str]:
    """instance id → Auto Scaling group, for every instance that carries the group tag (one paginated DescribeInstances)."""
    found: dict[str, str] = {}
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[{"Name": "tag-key", "Values": [ASG_TAG]}])
    for page in pages:
        for reservation in page.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                for tag in instance.get("Tags", []):
                    if tag["Key"] == ASG_TAG:
                        found[instance["InstanceId"]] = tag["Value"]
    return found


@dataclass
class PublishResult:
    """What one publish did."""

    instances: int = 0
    datums: int = 0
    published: int = 0
    calls: int = 0
    calls_required: int = 0
    seconds: float = 0.0
    error: str | None = None
    groups: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"published {self.published} of {self.datums} metrics for {self.instances} instances ({self.groups} groups) in "
            f"{self.calls} PutMetricData calls (minimum {self.calls_required}), {self.seconds:.2f} s"
        )
        return text + (f"; {self.error}" if self.error else "")


class Publisher:
    """Publishes each cycle's figures from one background thread; a publish still running makes the next one skip."""

    def __init__(self) -> None:
        self._running: Future[PublishResult] | None = None
        self._clients: dict[str, Any] = {}
        self._groups: tuple[float, dict[str, str]] | None = None
        self._lock = threading.Lock()
        self.last: PublishResult | None = None

    def _client(self, service: str, settings: Settings) -> Any:
        """One boto3 client per service, from a session of this publisher's own (clients are thread-safe, sessions not)."""
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session()
            region = settings.region or session.region_name or "us-east-1"
            self._clients[service] = session.client(
                service, region_name=region, config=Config(user_agent_extra="headroom", **CLIENT_CONFIG)
            )
        return self._clients[service]

    def groups(self, settings: Settings, errors: list[str]) -> dict[str, str]:
        """The Auto Scaling group of each instance (CloudWatch source only), refreshed hourly; the last known map
        (or none) when it cannot be read, with the reason appended to ``errors``."""
        if settings.source != "cloudwatch":
            return {}
        if self._groups is None or time.monotonic() - self._groups[0] > ASG_REFRESH_SECONDS:
            try:
                self._groups = (time.monotonic(), asg_membership(self._client("ec2", settings)))
            except Exception as error:
                errors.append(f"Auto Scaling groups not read, published without AutoScalingGroupName: {_one_line(error)}")
                self._groups = (time.monotonic(), self._groups[1] if self._groups else {})
        return self._groups[1]

    def publish(self, figures: Sequence[Figures], settings: Settings) -> PublishResult:
        """Put every datum in the fewest calls, within the deadline; never raises."""
        started = time.monotonic()
        result = PublishResult(instances=len(figures))
        try:
            groups = self.groups(settings, result.errors)
            items = datums(figures, groups)
            planned = batches(items)
            result.datums, result.calls_required = len(items), len(planned)
            result.groups = len({groups[f.instance_id] for f in figures if f.instance_id in groups})
            client: Any = self._client("cloudwatch", settings) if planned else None
            for batch in planned:
                if time.monotonic() - started > DEADLINE_SECONDS:
                    result.errors.append(f"deadline: {len(planned) - result.calls} calls dropped")
                    break
                try:
                    client.put_metric_data(Namespace=settings.cloudwatch_namespace, MetricData=batch)
                    result.published += len(batch)
                except Exception as error:  # this call's datums are lost for this cycle; the others still go
                    result.errors.append(_one_line(error))
                result.calls += 1
        except Exception as error:
            result.errors.append(_one_line(error))
        result.seconds = time.monotonic() - started
        if result.errors:
            result.error = f"{len(result.errors)} failed: {result.errors[0]}"
            log.warning("cloudwatch %s", result.summary())
        else:
            log.info("cloudwatch %s", result.summary())
        self.last = result
        return result

    def submit(self, figures: Sequence[Figures], settings: Settings) -> str:
        """Start publishing in the background and say so in a few words (with the previous publish's outcome)."""
        with self._lock:
            if self._running is not None and not self._running.done():
                log.warning(
                    "cloudwatch: the previous publish is still running; this cycle's %d instances are skipped", len(figures)
                )
                return "cloudwatch: previous publish still running, skipped"
            for service in ("cloudwatch", "ec2") if settings.source == "cloudwatch" else ("cloudwatch",):
                self._client(service, settings)  # here, not in the thread: boto3 cannot start once the interpreter exits
            before = self.last
            future: Future[PublishResult] = Future()
            chosen = list(figures)

            def run() -> None:
                future.set_result(self.publish(chosen, settings))  # publish never raises

            self._running = future
            # a daemon thread: a hung CloudWatch never keeps the process from exiting (see wait_at_exit)
            threading.Thread(target=run, name="headroom-publish", daemon=True).start()
        text = f"cloudwatch: publishing {len(figures)} instances"
        if before is not None:
            text += f" (last cycle: {before.published} of {before.datums} metrics in {before.calls} calls{', ' + before.error if before.error else ''})"
        return text

    def wait(self, timeout: float | None = None) -> PublishResult | None:
        """The running publish's result once it is done (tests, the benchmark)."""
        running = self._running
        return running.result(timeout) if running is not None else None

    def wait_at_exit(self, timeout: float = EXIT_WAIT_SECONDS) -> None:
        """Let a running publish finish before the process ends (``worker.py --once``), but no longer than ``timeout``."""
        running = self._running
        if running is None or running.done():
            return
        try:
            running.result(timeout)
        except Exception:
            log.warning("cloudwatch: a publish was still running at exit after %.0f s; abandoned", timeout)


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]


PUBLISHER = Publisher()
atexit.register(PUBLISHER.wait_at_exit)


def publish_cycle(store: Store, settings: Settings, now: int, publisher: Publisher | None = None) -> str:
    """Read this cycle's figures and hand them to the background publisher (when publishing is on)."""
    if not settings.cloudwatch_publish:
        return "cloudwatch publishing off"
    figures = cycle_figures(store, now, settings.ingest_every * MINUTE, settings.alert_on)
    return (publisher or PUBLISHER).submit(figures, settings)
