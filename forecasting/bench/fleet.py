"""Fleet benchmark: one retrain of N demo instances (fleet model once, then every instance) with time and peak memory.

    python -m forecasting.bench fleet [--instances 500] [--days 14] [--workers 2] [--models ...]
                                      [--dask] [--out FILE]

The store is filled by the real ingest job from the demo feed (a pure function of its seed and
anchor, so every run trains on the same data; the fill is timed apart). The timed part is one
:func:`forecasting.retrain_pool.retrain_due` on the local spawn pool with ``--workers`` processes: the
parent trains the ``fleet`` model once (reading one instance's samples at a time), reads each
instance's samples, trains every instance in a worker process and writes each result back. The
default model set is the settings' default. Peak memory is the largest resident size of the
whole process tree (this process and its pool) during the retrain, sampled every 0.2 s, and of this
process alone over its life; the store is filled in a child process so that neither counts the fill.

With ``--dask`` the same retrain also runs on a 2-worker Dask ``LocalCluster`` on an identical
store, and the champions of both runs must agree instance by instance (exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from forecasting.clock import DAY
from forecasting.fleet_model import latest_fleet_model
from forecasting.ingest import run_ingest
from forecasting.retrain_pool import RetrainReport, retrain_due
from forecasting.settings import Settings, load_settings
from forecasting.store import Store

NOW = 1_800_000_000 // 300 * 300
"""A fixed replay time, so every run trains on the same data."""


def fill_store(settings: Settings) -> None:
    """Write ``train_days`` of the demo feed for ``demo_instances`` instances into the settings' database."""
    Path(settings.db).parent.mkdir(parents=True, exist_ok=True)
    with Store(settings.db) as store:
        store.jobs.set_meta("demo_anchor", str(NOW - int(settings.train_days * DAY)))
        run_ingest(store, settings, NOW)


def demo_store(settings: Settings) -> Store:
    """The filled store, filled in a child process: the ingest's millions of rows never inflate this process's memory."""
    child = multiprocessing.get_context("spawn").Process(target=fill_store, args=(settings,))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"filling the demo store failed (exit status {child.exitcode})")
    return Store(settings.db)


class PeakMemory:
    """Samples the resident memory of this process and all its children until stopped; keeps the largest total."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.peak_bytes = every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:  # a process that just ended
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_retrain(store: Store, settings: Settings) -> tuple[RetrainReport, float, float]:
    """One retrain of every instance: its report, wall-clock seconds and the process tree's peak memory (MB)."""
    started = time.perf_counter()
    with PeakMemory() as peak:
        report = retrain_due(store, settings, NOW)
    return report, time.perf_counter() - started, peak.peak_bytes / 2**20


def fleet_facts(settings: Settings) -> dict:
    """What the pass's fleet model was trained on, and how long that took (empty without the fleet family)."""
    latest = latest_fleet_model(settings)
    if latest is None:
        return {}
    meta = json.loads((latest[0] / "meta.json").read_text())
    return {key: meta.get(key) for key in ("windows", "instances", "seconds")}


def _run(label: str, settings: Settings) -> dict:
    clock = time.perf_counter()
    with demo_store(settings) as store:
        fill = time.perf_counter() - clock
        report, seconds, peak_mb = timed_retrain(store, settings)
        champions = {i: run.champion for i, run in store.runs.latest().items()}
    print(f"{label}: {report.summary()} (store filled in {fill:.0f} s, not included)", flush=True)
    return {
        "executor": label,
        "seconds": seconds,
        "report": report,
        "peak_mb": peak_mb,
        "champions": champions,
        "fleet_model": fleet_facts(settings),
        "fill_seconds": round(fill, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecasting.bench fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=500, help="demo instances to retrain (default 500)")
    parser.add_argument("--days", type=float, default=14.0, help="days of history per instance (default 14)")
    parser.add_argument("--workers", type=int, default=2, help="processes of the local pool and of the Dask cluster (default 2)")
    parser.add_argument("--models", nargs="+", help="models to train (default: the settings' default set)")
    parser.add_argument("--dask", action="store_true", help="also retrain on a Dask LocalCluster and compare champions")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not 1 <= args.instances <= 5000 or args.workers < 1 or args.days <= 0:
        print("bench fleet: --instances must be 1-5000, --workers ≥ 1, --days > 0", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="headroom-fleet-") as tmp:
        base: dict = {
            "demo_instances": args.instances,
            "train_days": args.days,
            "history_days": max(args.days, 1.0),
            "workers": args.workers,
            "retrain_every": 6,
        }
        if args.models:
            base["models"] = [m for part in args.models for m in part.split(",") if m]
        local_settings = load_settings(db=Path(tmp) / "pool" / "headroom.db", **base)
        models = local_settings.models
        print(
            f"{args.instances} demo instances, {args.days:g} days each, models {', '.join(models)}, {args.workers} workers",
            flush=True,
        )
        rows.append(_run(f"local process pool (spawn, {args.workers} processes)", local_settings))
        if args.dask:
            from distributed import LocalCluster

            logging.getLogger("distributed").setLevel(logging.ERROR)
            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
                dask_settings = load_settings(
                    db=Path(tmp) / "dask" / "headroom.db", dask_scheduler=cluster.scheduler_address, **base
                )
                rows.append(_run(f"Dask LocalCluster ({args.workers} worker processes × 1 thread)", dask_settings))
    print(f"\n{'executor':52s} {'instances':>9s} {'failed':>6s} {'seconds':>8s} {'per instance':>12s} {'peak MB':>8s}")
    for row in rows:
        r = row["report"]
        print(
            f"{row['executor']:52s} {len(r.trained):9d} {len(r.failed):6d} {row['seconds']:8.1f} "
            f"{row['seconds'] / max(1, r.due):11.2f}s {row['peak_mb']:8.0f}"
        )
    if rows[0]["fleet_model"]:
        facts = rows[0]["fleet_model"]
        print(
            f"fleet model: {facts['windows']} windows from {facts['instances']} instances in {facts['seconds']} s (inside the retrain)"
        )
    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process alone {parent_mb:.0f} MB")
    agree = None
    if len(rows) == 2:
        agree = sum(rows[0]["champions"].get(i) == c for i, c in rows[1]["champions"].items())
        print(f"champions agree on {agree}/{len(rows[1]['champions'])} instances")
    if args.out:
        doc = {
            "instances": args.instances,
            "days": args.days,
            "models": models,
            "workers": args.workers,
            "champions_agree": agree,
            "parent_peak_mb": round(parent_mb),
            "runs": [
                {
                    "executor": row["executor"],
                    "seconds": round(row["seconds"], 1),
                    "trained": len(row["report"].trained),
                    "failed": len(row["report"].failed),
                    "peak_mb": round(row["peak_mb"]),
                    "fleet_model": row["fleet_model"],
                    "fill_seconds": row["fill_seconds"],
                    "seconds_per_instance": round(row["seconds"] / max(1, row["report"].due), 3),
                }
                for row in rows
            ],
        }
        args.out.write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.out}")
    return 0 if agree is None or agree == len(rows[1]["champions"]) == len(rows[0]["champions"]) else 1


if __name__ == "__main__":
    sys.exit(main())
