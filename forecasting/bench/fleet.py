"""Fleet benchmark: one retrain of N demo instances on the local process pool, then on a 2-worker Dask LocalCluster.

    python -m forecasting.bench fleet [--instances 100] [--days 3] [--workers 2]
                                      [--models naive seasonal_naive linear arima] [--out FILE]

Both runs go through :func:`forecasting.fleet.retrain_due` on identical stores (the demo feed
is a pure function of its seed and anchor), so they do the same work: read the samples in the
parent, train every instance in a worker process, write each result back in the parent. The
local pool is the default executor (``spawn`` processes, ``--workers`` of them); the Dask run
sets ``dask_scheduler`` to a ``LocalCluster`` with ``--workers`` worker processes of one thread
each. Times include starting the pool's processes; the cluster's own start-up is reported apart.
The champions of both runs must agree instance by instance.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from forecasting.fleet import RetrainReport, retrain_due
from forecasting.ingest import run_ingest
from forecasting.settings import Settings, load_settings
from forecasting.store import Store

NOW = 1_800_000_000 // 300 * 300
"""A fixed replay time, so every run trains on the same data."""


def demo_store(folder: Path, settings: Settings) -> Store:
    """A store holding ``train_days`` of the demo feed for ``demo_instances`` instances."""
    folder.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db)
    store.set_meta("demo_anchor", str(NOW - int(settings.train_days * 86_400)))
    run_ingest(store, settings, NOW)
    return store


def timed_retrain(store: Store, settings: Settings) -> tuple[RetrainReport, float]:
    """One retrain of every instance; the wall-clock seconds it took."""
    started = time.perf_counter()
    report = retrain_due(store, settings, NOW)
    return report, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecasting.bench fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100, help="demo instances to retrain (default 100)")
    parser.add_argument("--days", type=float, default=3.0, help="days of history per instance (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="processes of the local pool and of the Dask cluster (default 2)")
    parser.add_argument("--models", nargs="+", default=["naive", "seasonal_naive", "linear", "arima"], help="models to train")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not 1 <= args.instances <= 2000 or args.workers < 1 or args.days <= 0:
        print("bench fleet: --instances must be 1-2000, --workers ≥ 1, --days > 0", file=sys.stderr)
        return 2
    from distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # worker start/stop chatter (and close-time comm noise)
    models = [m for part in args.models for m in part.split(",") if m]
    rows = []
    with tempfile.TemporaryDirectory(prefix="headroom-fleet-") as tmp:
        base = {"demo_instances": args.instances, "train_days": args.days, "history_days": max(args.days, 1.0), "models": models,
                "workers": args.workers, "retrain_every": 6}
        local_settings = load_settings(db=Path(tmp) / "pool" / "headroom.db", **base)
        print(f"{args.instances} demo instances, {args.days:g} days each, models {', '.join(models)}, {args.workers} workers", flush=True)
        with demo_store(Path(tmp) / "pool", local_settings) as store:
            report, seconds = timed_retrain(store, local_settings)
            pool_champions = {i: r["champion"] for i, r in store.latest_runs().items()}
        rows.append({"executor": f"local process pool (spawn, {args.workers} processes)", "seconds": seconds, "report": report})
        print(f"local pool: {report.summary()}", flush=True)
        clock = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            startup = time.perf_counter() - clock
            dask_settings = load_settings(db=Path(tmp) / "dask" / "headroom.db", dask_scheduler=cluster.scheduler_address, **base)
            with demo_store(Path(tmp) / "dask", dask_settings) as store:
                report, seconds = timed_retrain(store, dask_settings)
                dask_champions = {i: r["champion"] for i, r in store.latest_runs().items()}
        rows.append({"executor": f"Dask LocalCluster ({args.workers} worker processes × 1 thread)", "seconds": seconds, "report": report,
                     "cluster_start_seconds": round(startup, 1)})
        print(f"dask: {report.summary()} (cluster start-up {startup:.1f} s, not included)", flush=True)
    agree = sum(pool_champions.get(i) == c for i, c in dask_champions.items())
    print(f"\n{'executor':52s} {'instances':>9s} {'failed':>6s} {'seconds':>8s} {'per instance':>12s}")
    for row in rows:
        r = row["report"]
        print(f"{row['executor']:52s} {len(r.trained):9d} {len(r.failed):6d} {row['seconds']:8.1f} {row['seconds'] / max(1, r.due):11.2f}s")
    print(f"champions agree on {agree}/{len(dask_champions)} instances")
    if args.out:
        doc = {"instances": args.instances, "days": args.days, "models": models, "workers": args.workers, "champions_agree": agree,
               "runs": [{"executor": row["executor"], "seconds": round(row["seconds"], 1), "trained": len(row["report"].trained),
                         "failed": len(row["report"].failed), **({"cluster_start_seconds": row["cluster_start_seconds"]}
                                                                 if "cluster_start_seconds" in row else {})} for row in rows]}
        args.out.write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.out}")
    return 0 if agree == len(dask_champions) == len(pool_champions) else 1


if __name__ == "__main__":
    sys.exit(main())
