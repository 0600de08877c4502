"""The CloudWatch source: discover EC2 instances and fetch their metrics in as few GetMetricData calls as the limits allow.

boto3 only. Credentials, region and endpoint come from boto3's own chain (so
``AWS_ENDPOINT_URL`` points it at a moto server with no special code path);
``settings.region`` wins over the chain, ``us-east-1`` is the last resort.
Throttling and network errors are retried by botocore's adaptive retry mode, and every wait is
bounded: ``HEADROOM_AWS_TIMEOUT`` seconds to connect and to read, ``HEADROOM_AWS_MAX_ATTEMPTS``
tries per call, so an endpoint that accepts and never answers costs a bounded, logged failure.

The fetch plan packs every series of the fleet into calls of at most 500
queries and 100,800 expected datapoints. All queries of one call share
StartTime/EndTime, so series are sorted longest window first and each call takes
as many of the longest remaining ones as both limits allow, starting at the
earliest start among them (points before a series' own start are dropped). That
greedy packing is optimal: some optimal plan always puts the longest series
together in one call, and moving shorter series into a call never breaks it.
``FetchResult.calls_required`` is the length of that plan (the minimum the limits
allow); ``FetchResult.calls`` counts the requests actually sent, NextToken pages
included, so the two differ only when CloudWatch pages a call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from forecasting.metrics import METRICS, Metric
from forecasting.settings import Settings
from forecasting.sources.base import FetchResult, SeriesRequest, SourceInstance, align

log = logging.getLogger("headroom.cloudwatch")

MAX_QUERIES = 500
MAX_DATAPOINTS = 100_800
THRESHOLD_TAG = "headroom:threshold"
FILTER_VALUES_MAX = 200  # EC2 accepts at most 200 values in one filter


def client_config(settings: Settings) -> Config:
    """botocore's own timeouts and retries for every AWS call Headroom makes."""
    return Config(
        connect_timeout=settings.aws_timeout,
        read_timeout=settings.aws_timeout,
        tcp_keepalive=True,
        retries={"mode": "adaptive", "max_attempts": settings.aws_max_attempts},
        user_agent_extra="headroom",
    )


class CloudWatchError(RuntimeError):
    """CloudWatch or EC2 could not be read at all; the message is one line."""


# ---- the plan (pure) -------------------------------------------------------
@dataclass
class PlannedCall:
    """One GetMetricData call: its shared time range and the series it carries."""

    start: int
    end: int
    requests: list[SeriesRequest] = field(default_factory=list)

    def expected_datapoints(self, period: int) -> int:
        """At most one datapoint per period per series."""
        return len(self.requests) * ((self.end - self.start) // period)


def plan_calls(
    requests: Iterable[SeriesRequest], end: int, period: int, max_queries: int = MAX_QUERIES, max_datapoints: int = MAX_DATAPOINTS
) -> list[PlannedCall]:
    """The fewest calls that fetch every series from its start to ``end`` within both per-call limits."""
    end = -(-end // period) * period
    window_cap = max_datapoints * period  # longest time range one series may span in one call
    by_stop: dict[int, list[tuple[int, SeriesRequest]]] = {}
    for request in requests:
        start = align(request.start, period)
        # a window longer than one call can hold is cut into segments ending at end, end - cap, ...
        stop = end
        while stop > start:
            by_stop.setdefault(stop, []).append((max(start, stop - window_cap), request))
            stop -= window_cap
    calls: list[PlannedCall] = []
    for stop in sorted(by_stop, reverse=True):
        pending = sorted(by_stop[stop], key=lambda item: (item[0], item[1].instance_id, item[1].metric))
        while pending:
            first_start = pending[0][0]
            fits = min(max_queries, max_datapoints // ((stop - first_start) // period), len(pending))
            calls.append(PlannedCall(first_start, stop, [request for _, request in pending[:fits]]))
            pending = pending[fits:]
    return calls


def parse_threshold(raw: str | None, instance_id: str) -> float | None:
    """The ``headroom:threshold`` tag as a CPU percent in (0, 100]; an invalid value is ignored with a warning."""
    if raw is None:
        return None
    try:
        value = float(raw.strip().rstrip("%"))
    except ValueError:
        value = math.nan
    if not (0 < value <= 100):
        log.warning("instance %s: ignoring tag %s=%r (expected a CPU percent in (0, 100])", instance_id, THRESHOLD_TAG, raw[:40])
        return None
    return value


def instance_info(instance: dict[str, Any]) -> SourceInstance:
    """An SourceInstance from one DescribeInstances entry (Name tag, threshold tag)."""
    tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
    instance_id = instance["InstanceId"]
    return SourceInstance(instance_id, tags.get("Name") or None, parse_threshold(tags.get(THRESHOLD_TAG), instance_id))


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for offset in range(0, len(items), size):
        yield items[offset : offset + size]


def _when(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _one_line(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]


# ---- the source (I/O) ------------------------------------------------------
class CloudWatchSource:
    """EC2 instances and their CloudWatch metrics; clients may be injected (tests use botocore's Stubber)."""

    def __init__(self, settings: Settings, *, cloudwatch: Any = None, ec2: Any = None) -> None:
        self.settings = settings
        self.period = settings.period
        self.metrics = [METRICS[key] for key in settings.metrics]
        if cloudwatch is None or ec2 is None:
            session = boto3.session.Session()
            region = settings.region or session.region_name or "us-east-1"
            config = client_config(settings)
            cloudwatch = cloudwatch or session.client("cloudwatch", region_name=region, config=config)
            ec2 = ec2 or session.client("ec2", region_name=region, config=config)
        self.cloudwatch, self.ec2 = cloudwatch, ec2
        # metric key -> {instance: its exact dimensions}, for metrics that are discovered; None: unknown, query everyone
        self._published: dict[str, dict[str, list[dict[str, str]]] | None] = {m.key: None for m in self.metrics if m.discover}

    # ---- discovery ----------------------------------------------------------
    def list_instances(self) -> list[SourceInstance]:
        """Running instances (optionally filtered by ``instance_tag``), or the explicit ``instances`` list."""
        if self.settings.instances:
            infos = self._explicit_instances(self.settings.instances)
        else:
            filters = [{"Name": "instance-state-name", "Values": ["running"]}]
            if self.settings.instance_tag:
                key, value = self.settings.instance_tag.split("=", 1)
                filters.append({"Name": f"tag:{key.strip()}", "Values": [value.strip()]})
            try:
                infos = [instance_info(item) for item in self._describe(filters)]
            except (ClientError, BotoCoreError) as error:
                raise CloudWatchError(f"ec2 DescribeInstances failed: {_one_line(error)}") from None
            infos.sort(key=lambda info: info.instance_id)
        self._published = {m.key: self._discover(m) for m in self.metrics if m.discover}
        return infos

    def _explicit_instances(self, ids: list[str]) -> list[SourceInstance]:
        """The listed instances in any state, with names and tags where DescribeInstances finds them."""
        found: dict[str, SourceInstance] = {}
        try:
            for chunk in _chunks(ids, FILTER_VALUES_MAX):
                for item in self._describe([{"Name": "instance-id", "Values": chunk}]):
                    found[item["InstanceId"]] = instance_info(item)
        except (ClientError, BotoCoreError) as error:
            log.warning(
                "ec2 DescribeInstances failed (%s): monitoring the listed instances without names or tags", _one_line(error)
            )
        missing = [instance_id for instance_id in ids if instance_id not in found]
        if missing and found:
            log.warning("instances not found by DescribeInstances (still monitored): %s", ", ".join(missing[:10]))
        return [found.get(instance_id, SourceInstance(instance_id)) for instance_id in ids]

    def _describe(self, filters: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page.get("Reservations", []):
                yield from reservation.get("Instances", [])

    def where(self, metric: Metric) -> tuple[str, str]:
        """(namespace, name) queried for a metric: memory follows ``memory_metric`` (the agent's, or the legacy scripts')."""
        return metric.cloudwatch_name(self.settings.memory_metric)

    def _discover(self, metric: Metric) -> dict[str, list[dict[str, str]]] | None:
        """Instance -> the exact dimensions it publishes ``metric`` with (the agent may append more than InstanceId).

        None when ListMetrics is not allowed or fails: then every instance gets a query on the
        instance dimension alone, and those without the metric simply return nothing.
        """
        namespace, name = self.where(metric)
        found: dict[str, list[dict[str, str]]] = {}
        try:
            for page in self.cloudwatch.get_paginator("list_metrics").paginate(Namespace=namespace, MetricName=name):
                for listed in page.get("Metrics", []):
                    dims = listed.get("Dimensions", [])
                    ids = [dim["Value"] for dim in dims if dim["Name"] == metric.dimension]
                    if ids and (ids[0] not in found or len(dims) < len(found[ids[0]])):
                        found[ids[0]] = dims
        except (ClientError, BotoCoreError) as error:
            log.warning(
                "cloudwatch ListMetrics failed (%s): querying %s/%s for every instance", _one_line(error), namespace, name
            )
            return None
        return found

    def metrics_of(self, instance_id: str) -> list[str]:
        """The metric keys to fetch for one instance: a discovered metric only where the fleet publishes it."""
        keys = []
        for metric in self.metrics:
            published = self._published.get(metric.key)
            if not metric.discover or published is None or instance_id in published:
                keys.append(metric.key)
        return keys

    # ---- fetching -----------------------------------------------------------
    def fetch(self, requests: list[SeriesRequest], end: int) -> FetchResult:
        """Datapoints of every requested series with ``start <= ts < end``, one planned call at a time."""
        result = FetchResult()
        plan = plan_calls(requests, end, self.period)
        result.calls_required = len(plan)
        failures: list[str] = []
        for call in plan:
            try:
                self._fetch_call(call, end, result)
            except (ClientError, BotoCoreError) as error:
                failures.append(_one_line(error))
                result.errors.append(
                    f"GetMetricData failed for {len(call.requests)} series ({call.requests[0].instance_id} ...): {failures[-1]}"
                )
        if plan and len(failures) == len(plan):
            raise CloudWatchError(f"cloudwatch GetMetricData failed: {failures[0]}")
        return result

    def _query(self, query_id: str, request: SeriesRequest) -> dict[str, Any]:
        metric = METRICS[request.metric]
        namespace, name = self.where(metric)
        dims = (self._published.get(metric.key) or {}).get(request.instance_id)
        dims = dims or [{"Name": metric.dimension, "Value": request.instance_id}]
        stat = {
            "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dims},
            "Period": self.period,
            "Stat": metric.statistic,
        }
        return {"Id": query_id, "MetricStat": stat, "ReturnData": True}

    def _fetch_call(self, call: PlannedCall, end: int, result: FetchResult) -> None:
        """Run one planned call, following NextToken; record per-query problems without dropping the rest."""
        by_id = {f"q{index}": request for index, request in enumerate(call.requests)}  # Id = q<position in the call>
        params: dict[str, Any] = {
            "MetricDataQueries": [self._query(query_id, request) for query_id, request in by_id.items()],
            "StartTime": _when(call.start),
            "EndTime": _when(call.end),
            "ScanBy": "TimestampAscending",
        }
        problems: dict[str, set[str]] = {}
        last_status: dict[str, str] = {}
        while True:
            result.calls += 1  # counted when sent: a call that fails was still made
            response = self.cloudwatch.get_metric_data(**params)
            for message in response.get("Messages", []):
                log.warning("GetMetricData: %s %s", message.get("Code"), message.get("Value"))
            for item in response.get("MetricDataResults", []):
                request = by_id.get(item.get("Id", ""))
                if request is None:
                    continue
                status = item.get("StatusCode", "Complete")
                last_status[item["Id"]] = status
                notes = [f"{m.get('Code')}: {m.get('Value')}" for m in item.get("Messages", [])]
                for note in notes:
                    log.warning("GetMetricData %s %s: %s", request.instance_id, request.metric, note)
                if status in ("InternalError", "Forbidden"):
                    problems.setdefault(item["Id"], set()).update([status, *notes])
                low = max(request.start, call.start)
                for stamp, value in zip(item.get("Timestamps", []), item.get("Values", []), strict=False):
                    ts = int(stamp.timestamp())
                    if low <= ts < min(end, call.end) and math.isfinite(value):
                        result.rows.append((request.instance_id, request.metric, ts, float(value)))
            token = response.get("NextToken")
            if not token:
                break
            params["NextToken"] = token
        for query_id, status in last_status.items():
            if status == "PartialData":  # no page left, yet CloudWatch says more exists
                problems.setdefault(query_id, set()).add("PartialData after the last page")
        for query_id, found in sorted(problems.items()):
            request = by_id[query_id]
            result.errors.append(f"{request.instance_id} {request.metric}: {'; '.join(sorted(found))}")
