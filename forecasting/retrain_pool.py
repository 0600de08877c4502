"""Fleet-scale retraining: fan ``train_instance`` out over a ``concurrent.futures`` executor.

The executor is a local process pool ('spawn' context: TensorFlow is not fork-safe) sized
to ``HEADROOM_WORKERS`` or the cores, or a Dask cluster's executor when
``HEADROOM_DASK_SCHEDULER`` names one (``distributed.Client(addr).get_executor()``).
:func:`retrain_due` only submits and collects futures, so it works the same on either.
The parent reads the samples from the store, and writes each result to the store as it
completes, keeping only ``IN_FLIGHT_PER_WORKER`` instances per worker submitted at a time (so its
memory does not grow with the fleet); a failure on one instance is logged with its id and leaves the
others' results.
Before the fan-out, the parent trains the ``fleet`` family once for the whole fleet when it is
due (``forecasting.fleet_model``, reading one instance's samples at a time) and hands every job
the saved model's path in its settings: no job retrains it.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forecasting.clock import DAY, HOUR
from forecasting.fleet_model import fleet_model_due, latest_fleet_model, train_fleet_model
from forecasting.settings import Settings
from forecasting.store import Store
from forecasting.training import train_instance

log = logging.getLogger("headroom.fleet")
IN_FLIGHT_PER_WORKER = 4
"""Instances submitted but not finished, per worker: keeps the workers busy while the parent holds the samples of
only a few instances at a time, whatever the fleet size (with Dask, set HEADROOM_WORKERS to the cluster's threads)."""


@dataclass
class RetrainReport:
    """What one retrain pass did."""

    due: int = 0
    trained: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "instance: error"
    champions: dict[str, str | None] = field(default_factory=dict)
    stopped: bool = False
    seconds: float = 0.0

    def problems(self) -> list[str]:
        """One line per instance that failed to retrain."""
        return list(self.failed)

    def summary(self) -> str:
        if not self.due:
            return "no instance due for retraining"
        counts = Counter(c or "none" for c in self.champions.values())
        text = f"retrained {len(self.trained)}/{self.due} due instances in {self.seconds:.1f} s"
        if counts:
            text += " (champions: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) + ")"
        if self.failed:
            text += f", {len(self.failed)} failed ({self.failed[0]})"
        if self.stopped:
            text += ", stopped early"
        return text


def due_instances(store: Store, retrain_every: float, now: int) -> list[str]:
    """Instances queued for retraining (their champion could not be used), never trained, or last trained
    ``retrain_every`` hours ago or more; queued and never-trained first, then oldest."""
    runs = store.runs.latest()
    limit = now - retrain_every * HOUR
    queued = store.jobs.retrain_requests()
    ids = [inst.instance_id for inst in store.samples.instances()]
    due = [
        (-1 if i in queued or i not in runs else runs[i].started_at, i)
        for i in ids
        if i in queued or i not in runs or runs[i].started_at <= limit
    ]
    return [iid for _, iid in sorted(due)]


class _DaskExecutor(cf.Executor):
    """A Dask client's executor that also closes the client on shutdown."""

    def __init__(self, address: str) -> None:
        from distributed import Client

        self._client = Client(address, timeout="20s")
        self._inner = self._client.get_executor(pure=False)  # a retrain of the same inputs must run again

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:
        return self._inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait=wait and not cancel_futures)
        self._client.close()


def worker_count(settings: Settings) -> int:
    """Local retrain processes: ``HEADROOM_WORKERS``, or one per core."""
    return settings.workers or os.cpu_count() or 1


def make_executor(settings: Settings) -> cf.Executor:
    """A Dask cluster's executor when ``dask_scheduler`` is set, else a spawn process pool sized to the workers."""
    if settings.dask_scheduler:
        log.info("retraining on the Dask cluster at %s", settings.dask_scheduler)
        return _DaskExecutor(settings.dask_scheduler)
    workers = worker_count(settings)
    log.info("retraining on a local pool of %d processes", workers)
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def retrain_due(
    store: Store, settings: Settings, now: int, stop: threading.Event | None = None, executor: cf.Executor | None = None
) -> RetrainReport:
    """Retrain every due instance on the executor; record each result as it completes (in this process)."""
    started = time.perf_counter()
    report = RetrainReport()
    due = due_instances(store, settings.retrain_every, now)
    report.due = len(due)
    if not due:
        return report
    stopping = stop.is_set if stop is not None else (lambda: False)
    own = executor is None
    executor = executor or make_executor(settings)
    futures: dict[cf.Future, str] = {}
    since = int(now - settings.train_days * DAY)
    # workers elsewhere (Dask) must write the model files where this process will look for them
    job_settings = settings.model_copy(
        update={"db": Path(settings.db).resolve(), "fleet_model": fleet_model_for(store, settings, now, since)}
    )
    queue = iter(due)
    pending: set[cf.Future] = set()
    limit = IN_FLIGHT_PER_WORKER * worker_count(settings)
    try:
        while True:
            while len(pending) < limit and not stopping():  # top up: only ``limit`` instances' samples are ever held
                instance_id = next(queue, None)
                if instance_id is None:
                    break
                samples = store.samples.series(instance_id, start=since, end=now)
                future = executor.submit(train_instance, instance_id, samples, job_settings, now)
                futures[future] = instance_id
                pending.add(future)
            if not pending:
                break
            done, pending = cf.wait(pending, timeout=1.0, return_when=cf.FIRST_COMPLETED)
            for future in done:
                _collect(store, future, futures.pop(future), report)
            if stopping() and pending:
                pending = {f for f in pending if not f.cancel()}  # queued ones are dropped, running ones finish
    finally:
        report.stopped = stopping() and len(report.trained) + len(report.failed) < report.due
        store.jobs.request_retrain([], done=report.trained)
        if own:
            executor.shutdown(wait=True, cancel_futures=True)
    report.seconds = time.perf_counter() - started
    return report


def fleet_model_for(store: Store, settings: Settings, now: int, since: int) -> Path | None:
    """The fleet model this pass hands to every job: trained now if due (one instance's samples in memory at a time)."""
    if "fleet" not in settings.models:
        return None
    if fleet_model_due(settings, now):
        series = (
            (inst.instance_id, store.samples.series(inst.instance_id, start=since, end=now, metrics=["cpu"]), now)
            for inst in store.samples.instances()
        )
        try:
            train_fleet_model(series, settings, now)
        except Exception:  # the per-instance models still train; the fleet family is skipped with its reason
            log.exception("fleet model training failed")
    latest = latest_fleet_model(settings)
    return latest[0] if latest else None


def _collect(store: Store, future: cf.Future, instance_id: str, report: RetrainReport) -> None:
    """Write one finished training to the store, or log why it failed."""
    if future.cancelled():
        return
    try:
        result = future.result()
        store.runs.record(result.run, result.scores, result.backtest)
    except Exception as error:  # this instance only; the others go on
        message = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        report.failed.append(f"{instance_id}: {message}")
        log.error("retrain %s failed: %s", instance_id, message)
        return
    report.trained.append(instance_id)
    report.champions[instance_id] = result.champion
    log.info("retrained %s: champion %s", instance_id, result.champion)
