"""Publish benchmark: a forecast cycle of N demo instances, then its forecasts put into CloudWatch (a local moto server).

    python -m forecasting.bench publish [--instances 500] [--days 3] [--groups 50] [--runs 5]
                                        [--models naive seasonal_naive linear arima] [--out FILE]

It fills a temporary store with ``--days`` of the demo feed for ``--instances`` instances and trains
them once (``retrain_due`` on the local pool), then runs ``--runs`` forecast cycles as the worker's
forecast job does (``run_forecasts`` with its model cache, then ``evaluate_alerts``), each followed
by the publish of its forecasts, timed on their own: reading the cycle's figures and putting every
datum into a moto server (a child process on a free loopback port) with the same calls the worker
makes. ``--groups`` puts the instances round-robin into that many Auto Scaling groups (seeded in
the publisher's group map, as ``DescribeInstances`` would fill it), so group aggregates are published
too. It reports the PutMetricData calls made, the minimum the 1,000-datum limit allows, the HTTP
requests sent (retries included), and the publish time against the cycle's (median over the runs;
the first, cold-cache cycle reported apart). The target: calls = minimum, and publishing adds at
most 5 % to the cycle. The worker itself only waits for the figures to be read (the puts run in a
background thread); that time is reported too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from forecasting.bench.ingest import start_moto
from forecasting.clock import DAY, MINUTE

TARGET_SHARE = 0.05


def seeded_publisher(groups: dict[str, str]) -> Any:
    """A Publisher whose instance → group map is given (the demo's ids are not EC2 instances to describe)."""
    from forecasting.publish import Publisher

    class SeededPublisher(Publisher):
        def groups(self, settings: Any, errors: list[str]) -> dict[str, str]:
            return groups

    return SeededPublisher()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up, train, run the cycles and publishes; one dict of figures."""
    from forecasting.alerts import evaluate_alerts
    from forecasting.forecast import ModelCache, run_forecasts
    from forecasting.ingest import run_ingest
    from forecasting.publish import cycle_figures
    from forecasting.retrain_pool import retrain_due
    from forecasting.settings import load_settings
    from forecasting.store import Store

    server, url = start_moto()
    os.environ.update(
        AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_CLOUDWATCH"):
        os.environ.pop(name, None)
    try:
        with tempfile.TemporaryDirectory(prefix="headroom-publish-") as tmp:
            now = int(time.time()) // 300 * 300
            settings = load_settings(
                db=Path(tmp) / "headroom.db",
                demo_instances=args.instances,
                train_days=args.days,
                history_days=max(args.days, 1.0),
                models=args.models,
                workers=args.workers,
                cloudwatch_publish=True,
                region="us-east-1",
            )
            started = time.perf_counter()
            with Store(settings.db) as store:
                store.jobs.set_meta("demo_anchor", str(now - int(args.days * DAY)))
                run_ingest(store, settings, now)
                print(
                    f"setup: {args.instances} demo instances, {args.days:g} days each, in {time.perf_counter() - started:.1f} s",
                    flush=True,
                )
                started = time.perf_counter()
                trained = retrain_due(store, settings, now)
                print(f"training: {trained.summary()} in {time.perf_counter() - started:.1f} s", flush=True)
                ids = sorted(inst.instance_id for inst in store.samples.instances())
                publisher = seeded_publisher(
                    {iid: f"bench-asg-{k % args.groups:03d}" for k, iid in enumerate(ids)} if args.groups else {}
                )
                cloudwatch = publisher._client("cloudwatch", settings)
                requests = {"n": 0}
                cloudwatch.meta.events.register(
                    "before-send.cloudwatch.PutMetricData", lambda **_: requests.__setitem__("n", requests["n"] + 1)
                )
                cache = ModelCache()
                runs = []
                for k in range(
                    args.runs + 1
                ):  # the first cycle loads every model from disk (cold cache); all forecast the same data
                    began = time.perf_counter()
                    made = run_forecasts(store, settings, now, cache=cache)
                    alerts = evaluate_alerts(store, settings, now)
                    cycle = time.perf_counter() - began
                    requests["n"] = 0
                    began = time.perf_counter()
                    figures = cycle_figures(store, now, settings.ingest_every * MINUTE, settings.alert_on)
                    read = time.perf_counter() - began
                    result = publisher.publish(figures, settings)
                    publish = time.perf_counter() - began
                    runs.append(
                        {
                            "cycle_seconds": cycle,
                            "forecasts": made.forecasts,
                            "open_alerts": alerts.open_now,
                            "figures_seconds": read,
                            "publish_seconds": publish,
                            "instances": result.instances,
                            "datums": result.datums,
                            "published": result.published,
                            "calls": result.calls,
                            "calls_required": result.calls_required,
                            "http_requests": requests["n"],
                            "error": result.error,
                        }
                    )
                    print(
                        f"cycle {k}{' (cold)' if k == 0 else ''}: {made.summary()}, {alerts.open_now} alerts open, {cycle:.2f} s; "
                        f"{result.summary()}, {requests['n']} HTTP requests, read {read * 1000:.0f} ms",
                        flush=True,
                    )
    finally:
        server.terminate()
        server.wait(timeout=30)
    warm = runs[1:]
    cycle = statistics.median(r["cycle_seconds"] for r in warm)
    publish = statistics.median(r["publish_seconds"] for r in warm)
    return {
        "instances": args.instances,
        "days": args.days,
        "models": args.models,
        "groups": args.groups,
        "runs": runs,
        "cold_cycle_seconds": round(runs[0]["cycle_seconds"], 3),
        "median_cycle_seconds": round(cycle, 3),
        "median_publish_seconds": round(publish, 3),
        "median_figures_seconds": round(statistics.median(r["figures_seconds"] for r in warm), 4),
        "publish_share_of_cycle": round(publish / cycle, 4),
        "calls_minimal": all(r["calls"] == r["calls_required"] == r["http_requests"] and r["error"] is None for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecasting.bench publish", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--days", type=float, default=3.0, help="days of demo history per instance (default 3)")
    parser.add_argument("--groups", type=int, default=50, help="Auto Scaling groups the instances are spread over (0: none)")
    parser.add_argument("--runs", type=int, default=5, help="warm forecast cycles, each followed by a publish (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="training processes (default 2)")
    parser.add_argument("--models", nargs="+", default=["naive", "seasonal_naive", "linear", "arima"], help="models to train")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    args.models = [m for part in args.models for m in part.split(",") if m]
    if not 1 <= args.instances <= 2000 or args.runs < 1 or args.groups < 0:
        print("bench publish: --instances must be 1-2000, --runs ≥ 1, --groups ≥ 0", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("headroom.alerts").setLevel(logging.ERROR)  # the demo fleet opens dozens of alerts: not news here
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the moto child is stopped on the way out
    doc = run(args)
    last = doc["runs"][-1]
    print(
        "\n| instances | groups | datums | PutMetricData calls | minimum | HTTP requests | forecast cycle (median) | publish (median) "
        "| share | worker waits (figures read) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {doc['instances']} | {doc['groups']} | {last['datums']} | {last['calls']} | {last['calls_required']} | {last['http_requests']} "
        f"| {doc['median_cycle_seconds']:.2f} s | {doc['median_publish_seconds'] * 1000:.0f} ms | {doc['publish_share_of_cycle']:.1%} "
        f"| {doc['median_figures_seconds'] * 1000:.0f} ms |"
    )
    print(f"cold first cycle: {doc['cold_cycle_seconds']:.2f} s")
    ok = doc["calls_minimal"] and doc["publish_share_of_cycle"] <= TARGET_SHARE
    print("target met: minimum calls, publish ≤ 5 % of the cycle" if ok else "TARGET MISSED")
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
