"""Dashboard benchmark: the Fleet page's server-side render time with a large fleet.

    python -m forecasting.bench dashboard --instances 500 [--runs 7] [--hours 24] [--batches 12]

Fills a temporary SQLite store with ``--instances`` demo instances: every metric for the
last ``--hours`` (the demo feed's own numbers), one training run per instance with six
model scores, ``--batches`` rounds of forecasts from all six models (the newest marked
champion, as the forecast job writes them) and the worker's heartbeats. It then runs the
Fleet page through Streamlit's AppTest ``--runs`` times and prints the median seconds:
"cold" clears Streamlit's data cache before each run (every store query and the table
build are timed), "warm" reuses it (what a viewer sees within the cache TTL). Target: cold
median <= 2 s for 500 instances. The store read alone (``load_fleet``) is timed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from forecasting.clock import HOUR
from forecasting.models import MODEL_NAMES
from forecasting.sources.base import SeriesRequest, align
from forecasting.sources.demo import DemoSource
from forecasting.store import Store

ENTRY = Path(__file__).resolve().parents[2] / "streamlit_app.py"
PERIOD = 300
HORIZON = 12


def fill_store(db: Path, instances: int, hours: float, batches: int, now: int) -> dict[str, float]:
    """Write the fleet into ``db`` with the store's own methods; returns rows written per table."""
    source = DemoSource(count=instances, seed=42, anchor=now - HOUR, period=PERIOD)
    end = align(now, PERIOD) + PERIOD
    start = end - int(hours * HOUR)
    infos = source.list_instances()
    requests = [
        SeriesRequest(info.instance_id, metric, start) for info in infos for metric in source.metrics_of(info.instance_id)
    ]
    fetched = source.fetch(requests, end)
    rng = np.random.default_rng(7)
    with Store(db) as store:
        with store.transaction():
            for info in infos:
                store.samples.upsert_instance(info.instance_id, info.name, 80.0, now)
            store.samples.upsert(fetched.rows)
        last_cpu = store.samples.trailing(HORIZON * PERIOD, "cpu")
        forecast_rows = 0
        for info in infos:
            iid = info.instance_id
            scores = [
                {
                    "model": m,
                    "status": "ok",
                    "reason": None,
                    "mape": float(rng.uniform(3, 30)),
                    "smape": float(rng.uniform(3, 30)),
                    "mase": float(rng.uniform(0.5, 1.5)),
                    "rmse": float(rng.uniform(1, 10)),
                    "coverage": float(rng.uniform(0.7, 0.95)),
                    "fit_seconds": float(rng.uniform(0.01, 20)),
                    "predict_seconds": 0.01,
                }
                for m in MODEL_NAMES
            ]
            champion = min(scores, key=lambda s: float(s["mase"]))["model"]  # type: ignore[arg-type]
            run = {
                "instance_id": iid,
                "started_at": now - 600,
                "finished_at": now - 300,
                "train_start": start,
                "train_end": end,
                "points": int(hours * HOUR / PERIOD),
                "champion": champion,
                "model_dir": None,
            }
            run_id = store.runs.record(run, scores, [])
            ts, cpu = last_cpu[iid]
            rows = []
            for batch in range(batches):
                origin = int(ts[-1]) - (batches - 1 - batch) * PERIOD
                stamps = (origin + PERIOD * np.arange(1, HORIZON + 1)).tolist()
                for model in MODEL_NAMES:
                    mean = np.clip(cpu[-1] + np.cumsum(rng.normal(0, 2, HORIZON)), 0, 100)
                    rows.append(
                        {
                            "instance_id": iid,
                            "run_id": run_id,
                            "model": model,
                            "is_champion": model == champion,
                            "made_at": origin + 60,
                            "origin_ts": origin,
                            "timestamps": stamps,
                            "mean": mean.tolist(),
                            "lower": np.clip(mean - 8, 0, 100).tolist(),
                            "upper": np.clip(mean + 8, 0, 100).tolist(),
                        }
                    )
            store.forecasts.record(rows)
            forecast_rows += len(rows)
        for job in ("ingest", "retrain", "forecast", "digest"):
            store.jobs.record_heartbeat(job, now - 120, 1.5, None, "benchmark")
        return {"instances": len(infos), "samples": store.samples.count(), "forecasts": forecast_rows}


def time_fleet(runs: int, cold: bool) -> list[float]:
    """Seconds per run of the Fleet page script (Streamlit's data cache cleared first when ``cold``).

    One AppTest is re-run, as a viewer's session re-runs the page: a fresh AppTest spends about a
    second scanning installed packages for components, which a real server does once at start.
    """
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ENTRY), default_timeout=120)
    at.run()  # imports, first compile and the component scan: not timed
    seconds = []
    for _ in range(runs):
        if cold:
            st.cache_data.clear()
        started = time.perf_counter()
        at.run()
        seconds.append(time.perf_counter() - started)
        if at.exception:
            raise RuntimeError(f"the Fleet page raised: {at.exception[0].value}")
        if len(at.dataframe) == 0 or len(at.dataframe[0].value) == 0:
            raise RuntimeError("the Fleet page drew no table")
    return seconds


def time_load(runs: int, db: str, alert_on: str, margin: float) -> list[float]:
    """Seconds for the store reads and table build alone (``app.data.load_fleet`` without its cache)."""
    from app.data import load_fleet

    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        frame = load_fleet.__wrapped__(db, alert_on, margin)  # type: ignore[attr-defined]  # the uncached function
        seconds.append(time.perf_counter() - started)
    if frame.empty:
        raise RuntimeError("load_fleet returned no rows")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecasting.bench dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--runs", type=int, default=7, help="timed renders per mode (the median is reported)")
    parser.add_argument("--hours", type=float, default=24, help="hours of samples per instance")
    parser.add_argument("--batches", type=int, default=12, help="forecast rounds stored per instance and model")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="headroom-bench-") as tmp:
        db = Path(tmp) / "headroom.db"
        started = time.perf_counter()
        counts = fill_store(db, args.instances, args.hours, args.batches, int(time.time()))
        print(
            f"store: {counts['instances']} instances, {counts['samples']} samples, {counts['forecasts']} forecasts "
            f"({time.perf_counter() - started:.1f} s to fill)"
        )
        os.environ["HEADROOM_DB"] = str(db)
        os.environ["HEADROOM_CONFIG"] = str(Path(tmp) / "absent.toml")
        cold = time_fleet(args.runs, cold=True)
        warm = time_fleet(args.runs, cold=False)
        loads = time_load(args.runs, str(db.resolve()), "likely", 5.0)
    print(f"store read + table build: median {statistics.median(loads):.3f} s")
    print(
        f"Fleet page render, cold cache: median {statistics.median(cold):.3f} s (min {min(cold):.3f}, max {max(cold):.3f}, {args.runs} runs)"
    )
    print(
        f"Fleet page render, warm cache: median {statistics.median(warm):.3f} s (min {min(warm):.3f}, max {max(warm):.3f}, {args.runs} runs)"
    )
    verdict = "meets" if statistics.median(cold) <= 2.0 else "misses"
    print(f"target <= 2 s for the cold render: {verdict} it")
    return 0
