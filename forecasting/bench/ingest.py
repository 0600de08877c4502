"""Ingest benchmark: a fleet on a local moto server, one backfill cycle, then one incremental cycle.

    python -m forecasting.bench ingest --instances 500 [--hours 0.5] [--period 300]

It starts its own moto server (a child process on a free loopback port), points
boto3 at it through ``AWS_ENDPOINT_URL`` with fake credentials, creates the
instances with ``run_instances``, writes cpu, memory (CWAgent) and network
datapoints with ``put_metric_data``, then runs the real ``run_ingest`` twice
into a temporary SQLite file and prints calls made, calls required, datapoints
stored and seconds per cycle. moto's GetMetricData scans every stored datapoint
for every query and period, so the backfill window is kept short (``--hours``,
passed as ``train_days``); the incremental cycle, the one targeted (<= 30 s),
reads the same 15-minute overlap a production cycle reads.

The helpers ``create_fleet`` and ``put_points`` are shared with the tests.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forecasting.clock import HOUR
from forecasting.metrics import METRICS, default_metrics

PUT_BATCH = 1000  # put_metric_data accepts up to 1000 datums a call


def create_fleet(ec2: Any, count: int, tags: dict[str, str] | None = None, prefix: str = "node") -> list[str]:
    """Start ``count`` instances (batches of 100), tagged Name=<prefix>-<n> plus ``tags``; their ids in order."""
    ids: list[str] = []
    while len(ids) < count:
        batch = min(100, count - len(ids))
        extra = [{"Key": key, "Value": value} for key, value in (tags or {}).items()]
        response = ec2.run_instances(
            ImageId="ami-12c6146b",
            InstanceType="t3.micro",
            MinCount=batch,
            MaxCount=batch,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": prefix}, *extra]}],
        )
        ids.extend(item["InstanceId"] for item in response["Instances"])
    for number, instance_id in enumerate(ids, 1):
        ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "Name", "Value": f"{prefix}-{number}"}])
    return ids


def put_points(
    cloudwatch: Any,
    points: Iterable[tuple[str, str, int, float]],
    memory: str = "cwagent",
    memory_dims: dict[str, list[dict[str, str]]] | None = None,
) -> int:
    """Publish (instance, metric key, ts, value) datapoints where CloudWatch would hold them; returns the count."""
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for instance_id, metric, ts, value in points:
        namespace, name = METRICS[metric].cloudwatch_name(memory)
        dims = [{"Name": METRICS[metric].dimension, "Value": instance_id}]
        if metric == "memory" and memory_dims and instance_id in memory_dims:
            dims = memory_dims[instance_id]
        datum = {"MetricName": name, "Dimensions": dims, "Timestamp": datetime.fromtimestamp(ts, UTC), "Value": float(value)}
        by_namespace.setdefault(namespace, []).append(datum)
    total = 0
    for namespace, data in by_namespace.items():
        for offset in range(0, len(data), PUT_BATCH):
            cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[offset : offset + PUT_BATCH])
        total += len(data)
    return total


def synthetic_value(metric: str, index: int, ts: int) -> float:
    """A plausible, deterministic value for one metric of instance ``index`` at ``ts``."""
    phase = (ts // 300 + 7 * index) % 288
    if metric == "cpu":
        return 20.0 + 40.0 * abs(phase - 144) / 144 + index % 10
    if metric == "memory":
        return 40.0 + (index % 30) + phase % 7
    return 1.0e6 * (1 + index % 5) + 1.0e3 * phase


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """A moto server in a child process on a free loopback port; returns it and its URL once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("moto server did not start within 60 s")


class ApiTimer:
    """Seconds spent inside AWS calls (request, server, response parsing), per operation, via botocore events."""

    def __init__(self, *clients: Any) -> None:
        self.seconds: dict[str, float] = {}
        self.sent = 0  # GetMetricData HTTP requests, retries included
        self._started: dict[str, float] = {}
        for client in clients:
            client.meta.events.register("before-call", self._before)
            client.meta.events.register("after-call", self._after)
            client.meta.events.register("before-send.cloudwatch.GetMetricData", self._count)

    def _count(self, **_: Any) -> None:
        self.sent += 1

    def _before(self, model: Any, **_: Any) -> None:
        self._started[model.name] = time.perf_counter()

    def _after(self, model: Any, **_: Any) -> None:
        elapsed = time.perf_counter() - self._started.pop(model.name, time.perf_counter())
        self.seconds[model.name] = self.seconds.get(model.name, 0.0) + elapsed

    def take(self) -> float:
        """Total seconds since the last take, then start again."""
        total, self.seconds = sum(self.seconds.values()), {}
        return total


def run(instances: int, hours: float, period: int) -> list[dict[str, Any]]:
    """Set up the fleet, run both cycles, return one row of figures per cycle."""
    import boto3
    from botocore.config import Config

    from forecasting.ingest import run_ingest
    from forecasting.settings import load_settings
    from forecasting.sources.base import align
    from forecasting.sources.cloudwatch import CloudWatchSource, client_config
    from forecasting.store import Store

    server, url = start_moto()
    os.environ.update(
        AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    os.environ.pop("AWS_PROFILE", None)
    try:
        # moto answers a big GetMetricData far slower than CloudWatch: a longer read timeout avoids retry storms
        config = client_config(load_settings()).merge(Config(read_timeout=900))
        ec2, cloudwatch = boto3.client("ec2", config=config), boto3.client("cloudwatch", config=config)
        started = time.time()
        ids = create_fleet(ec2, instances, prefix="bench")
        second = align(time.time(), period)  # the incremental cycle runs one period after the backfill
        first = second - period
        steps = int(hours * HOUR // period)
        metrics = default_metrics()
        history = [
            (iid, m, ts, synthetic_value(m, i, ts))
            for i, iid in enumerate(ids)
            for m in metrics
            for ts in range(first - steps * period, first + 1, period)
        ]
        put = put_points(cloudwatch, history)
        print(
            f"setup: {instances} instances, {put} datapoints over {hours:g} h written to moto in {time.time() - started:.1f} s",
            flush=True,
        )
        settings = load_settings(
            source="cloudwatch",
            period=period,
            train_days=hours / 24,
            history_days=max(30.0, hours / 24),
            instances=[],
            instance_tag=None,
        )
        source = CloudWatchSource(settings, cloudwatch=cloudwatch, ec2=ec2)
        timer = ApiTimer(ec2, cloudwatch)
        rows = []
        with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "bench.db") as store:
            for label, now in (("backfill", first), ("incremental", second)):
                if label == "incremental":
                    put_points(
                        cloudwatch,
                        [(iid, m, second, synthetic_value(m, i, second)) for i, iid in enumerate(ids) for m in metrics],
                    )
                timer.take()
                began = time.time()
                report = run_ingest(store, settings, now, source)
                seconds, in_aws, sent = time.time() - began, timer.take(), timer.sent
                timer.sent = 0
                rows.append(
                    {
                        "cycle": label,
                        "instances": report.instances,
                        "calls": report.calls,
                        "required": report.calls_required,
                        "datapoints": report.rows,
                        "errors": len(report.errors),
                        "seconds": seconds,
                        "aws": in_aws,
                        "client": seconds - in_aws,
                        "sent": sent,
                    }
                )
                print(
                    f"{label}: {report.summary()} in {seconds:.1f} s ({in_aws:.1f} s waiting on moto, {sent} HTTP requests)",
                    flush=True,
                )
            rows.append({"cycle": "stored", "datapoints": store.samples.count()})
        return rows
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmark, print a markdown table."""
    parser = argparse.ArgumentParser(prog="python -m forecasting.bench ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument(
        "--hours", type=float, default=0.5, help="backfill window written to moto and fetched (train_days = hours / 24)"
    )
    parser.add_argument("--period", type=int, default=300)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the moto child is stopped on the way out
    rows = run(args.instances, args.hours, args.period)
    print(
        "\n| cycle | instances | GetMetricData calls | calls required | datapoints stored | series errors | seconds | of which in AWS calls (moto) | of which in Headroom |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows[:-1]:
        print(
            f"| {row['cycle']} | {row['instances']} | {row['calls']} | {row['required']} | {row['datapoints']} | {row['errors']} "
            f"| {row['seconds']:.1f} | {row['aws']:.1f} | {row['client']:.1f} |"
        )
    print(f"\nsamples in the store afterwards: {rows[-1]['datapoints']}")
    ok = all(row["calls"] == row["required"] == row["sent"] for row in rows[:-1])
    print("calls made == calls required (no retries)" if ok else "MORE CALLS OR HTTP REQUESTS THAN REQUIRED")
    return 0 if ok else 1
