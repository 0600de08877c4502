"""Headroom's background worker: keeps data fresh, models retrained, forecasts and alerts current.

    python worker.py            run forever on the cadences from settings
    python worker.py --once     one full cycle (ingest, retrain where due, forecast, alerts, mail), then exit
    python worker.py --once --only ingest|retrain|forecast|digest

A cycle runs every job in turn, then the next starts ``HEADROOM_INGEST_EVERY`` minutes after it ended;
each job does only what is due (retrain: models older than ``HEADROOM_RETRAIN_EVERY`` hours or none,
or an instance whose champion could not be used, at once; digest: ``HEADROOM_DIGEST_EVERY`` hours since
the last one sent). Each job runs in a thread of its own under a deadline (``HEADROOM_JOB_TIMEOUT``,
``HEADROOM_RETRAIN_TIMEOUT``): its error, or its overrunning, is logged in one line and recorded as
``failed``, a job that ran but partly failed as ``degraded``, and the loop goes on. SIGINT and SIGTERM
let the current job finish for up to ``STOP_GRACE_SECONDS`` (long jobs check for the stop between
instances), then the worker exits whatever the job is waiting on. The business logic lives in
``forecasting``; this file only schedules. Every ``now`` comes from the worker's clock
(``forecasting.clock``): the wall clock in production, a manual one in tests, which then run cycles
without waiting for them. Deadlines and durations are real (monotonic) time: they bound real waits.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from forecasting.clock import MINUTE, SYSTEM_CLOCK, Clock
from forecasting.settings import Settings, SettingsError, load_settings
from forecasting.store import Store

log = logging.getLogger("headroom.worker")
JOBS = ("ingest", "retrain", "forecast", "digest")
STOP_GRACE_SECONDS = 5.0
"""After SIGTERM/SIGINT, how long the current job may take to reach a stopping point before the worker exits anyway."""


class JobTimeout(RuntimeError):
    """A job overran its deadline; it is left to end on its own and recorded as failed."""


class Stopped(RuntimeError):
    """The worker was told to stop while a job still ran."""


@dataclass
class JobOutcome:
    """What a job reports: a one-line summary, what partly failed (one line each) and counts for /health."""

    summary: str
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def operational(error: BaseException) -> bool:
    """Errors the world causes (network, AWS, disk, database, deadlines): one log line, the traceback at debug level."""
    from botocore.exceptions import BotoCoreError, ClientError

    from forecasting.sources.cloudwatch import CloudWatchError

    return isinstance(error, (OSError, sqlite3.Error, BotoCoreError, ClientError, CloudWatchError, JobTimeout, Stopped))


class Worker:
    """The worker's jobs (ingest, retrain, forecast with alerts and mail, digest) bound to one store, one settings object
    and one clock."""

    def __init__(self, settings: Settings, store: Store, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings, self.store, self.clock = settings, store, clock
        self.stop = threading.Event()
        self.running: dict[str, threading.Thread] = {}

    def now(self) -> int:
        """The clock's time in whole seconds: the ``now`` each step of a job is given."""
        return int(self.clock.now())

    # ---- the jobs (each returns a one-line summary for the log) ----------
    def ingest(self) -> JobOutcome:
        from forecasting.ingest import run_ingest

        report = run_ingest(self.store, self.settings, self.now())
        return JobOutcome(
            report.summary(),
            report.errors,
            {"instances": report.instances, "datapoints": report.rows, "series_failed": len(report.errors)},
        )

    def retrain(self) -> JobOutcome:
        from forecasting.retrain_pool import retrain_due

        report = retrain_due(self.store, self.settings, self.now(), stop=self.stop)
        return JobOutcome(
            report.summary(), report.problems(), {"due": report.due, "trained": len(report.trained), "failed": len(report.failed)}
        )

    def forecast(self) -> JobOutcome:
        """Score past forecasts whose actuals arrived, forecast with saved models, turn forecasts into alerts,
        mail new ones at once, then webhooks and CloudWatch."""
        from forecasting.acting import act_on_cycle
        from forecasting.alerts import evaluate_alerts
        from forecasting.forecast import run_forecasts
        from forecasting.notify import send_alert_mail
        from forecasting.scoring import score_realised

        scored = score_realised(self.store, self.settings, self.now())
        made = run_forecasts(self.store, self.settings, self.now(), stop=self.stop)
        alerts = evaluate_alerts(self.store, self.settings, self.now())
        mailed = send_alert_mail(self.store, self.settings, self.now())
        acted = act_on_cycle(self.store, self.settings, self.now())  # webhooks, CloudWatch metrics: bounded, never raises
        problems = made.problems() + ([f"alert mail: {mailed}"] if "failed (" in mailed else [])
        if any(word in acted for word in ("failed (", "waiting (", "rejected")):
            problems.append(f"acting on warnings: {acted}")
        counts = {
            "instances": made.instances,
            "forecasts": made.forecasts,
            "without_model": len(made.no_model),
            "stand_ins": len(made.fallbacks),
            "models_skipped": len(made.skipped),
            "failed": len(made.errors),
        }
        return JobOutcome(f"{scored.summary()}; {made.summary()}; {alerts.summary()}; {mailed}; {acted}", problems, counts)

    def digest(self) -> JobOutcome:
        from forecasting.notify import send_digest_if_due

        text = send_digest_if_due(self.store, self.settings, self.now())
        return JobOutcome(text, [text] if text.startswith("digest failed") else [])

    def deadline(self, name: str) -> float:
        """Seconds a job may run: ``retrain_timeout`` for retrain, ``job_timeout`` for the others."""
        return MINUTE * (self.settings.retrain_timeout if name == "retrain" else self.settings.job_timeout)

    # ---- running them -------------------------------------------------
    def run_job(self, name: str) -> bool:
        """Run one job under its deadline, log one line, record a heartbeat (ok, degraded or failed); never raise."""
        job: Callable[[], JobOutcome] = getattr(self, name)
        started, began = self.clock.now(), time.monotonic()
        error, outcome = None, None
        try:
            outcome = self._bounded(name, job)
        except Exception as exc:  # the loop must survive any one job
            error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            expected = operational(exc)
            log.error("%s failed after %.1f s: %s", name, time.monotonic() - began, error, exc_info=None if expected else exc)
            if expected:
                log.debug("%s failed", name, exc_info=exc)
        seconds = time.monotonic() - began
        state, detail, counts = "failed", None, {}
        if outcome is not None:
            detail, counts = outcome.summary, outcome.counts
            state = "degraded" if outcome.problems else "ok"
            if outcome.problems:
                error = f"{len(outcome.problems)} problem(s): {outcome.problems[0]}".splitlines()[0][:500]
                log.warning("%s: %s (%.1f s); %s", name, detail, seconds, error)
            else:
                log.info("%s: %s (%.1f s)", name, detail, seconds)
        try:
            self.store.jobs.record_heartbeat(name, started, seconds, error, detail, state, counts)
        except Exception as exc:
            log.error("could not record the %s heartbeat: %s", name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return state != "failed"

    def _bounded(self, name: str, job: Callable[[], JobOutcome]) -> JobOutcome:
        """Run ``job`` in a thread and wait for it until its deadline, or a stop plus the grace period.

        A thread cannot be killed: one that overruns is left to end on its own (its writes are whole
        transactions), and the same job is not started again while it still runs.
        """
        earlier = self.running.get(name)
        if earlier is not None and earlier.is_alive():
            raise JobTimeout(f"the {name} job of an earlier cycle is still running")
        box: dict[str, object] = {}

        def target() -> None:
            try:
                box["outcome"] = job()
            except BaseException as exc:  # handed to the waiting thread
                box["error"] = exc

        thread = threading.Thread(target=target, name=f"headroom-{name}", daemon=True)
        self.running[name] = thread
        thread.start()
        limit, stop_at = time.monotonic() + self.deadline(name), None
        while thread.is_alive():
            thread.join(0.1)
            if stop_at is None and self.stop.is_set():
                stop_at = time.monotonic() + STOP_GRACE_SECONDS
            if stop_at is not None and time.monotonic() > stop_at and thread.is_alive():
                raise Stopped(f"stopped while {name} was still running (it did not finish within {STOP_GRACE_SECONDS:g} s)")
            if time.monotonic() > limit and thread.is_alive():
                setting = "HEADROOM_RETRAIN_TIMEOUT" if name == "retrain" else "HEADROOM_JOB_TIMEOUT"
                raise JobTimeout(f"{name} did not finish within {self.deadline(name) / MINUTE:g} min ({setting})")
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        outcome = box["outcome"]
        return outcome if isinstance(outcome, JobOutcome) else JobOutcome(str(outcome))

    def busy(self) -> list[str]:
        """Jobs whose thread still runs (overran, or cut short by a stop)."""
        return [name for name, thread in self.running.items() if thread.is_alive()]

    def run_once(self, only: str | None = None) -> bool:
        """One full cycle, or one job with ``only``; True when every job succeeded.

        Every cycle runs every job; each does only what is due. Retrain trains the instances never
        trained (a new one at once) or whose model is ``retrain_every`` hours old; the digest goes
        out when ``digest_every`` hours have passed since the last one sent, so a failed digest is
        tried again next cycle.
        """
        names = [only] if only else list(JOBS)
        ok = True
        for name in names:
            if self.stop.is_set():
                break
            ok = self.run_job(name) and ok
            if name == "forecast" and only is None and not self.stop.is_set() and self.store.jobs.retrain_requests():
                log.info("retraining at once the instances whose champion could not be used")
                ok = self.run_job("retrain") and self.run_job("forecast") and ok
        return ok

    def run_forever(self) -> None:
        """Run a full cycle now, then the next ``ingest_every`` minutes (of the clock) after each one ends, until stopped."""
        every = self.settings.ingest_every * MINUTE
        while not self.stop.is_set():
            self.run_once()
            due = self.clock.now() + every
            while not self.stop.is_set() and self.clock.now() < due:
                self.clock.wait(due - self.clock.now(), self.stop)
        if self.busy():
            log.warning("exiting while %s still runs", ", ".join(self.busy()))
        log.info("worker stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Headroom background worker")
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument("--only", choices=JOBS, help="with --once: run just this job")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"headroom: {error}", file=sys.stderr)
        return 2
    try:
        store = Store(settings.db)
    except (sqlite3.Error, OSError) as error:  # HEADROOM_DB names a folder, an unwritable place, not a database
        print(f"headroom: cannot open the database HEADROOM_DB={settings.db}: {error}", file=sys.stderr)
        return 2
    worker = Worker(settings, store)

    def _stop(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the current job", signal.Signals(signum).name)
        worker.stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    log.info("worker on source=%s, database %s", settings.source, settings.db.resolve())
    if args.once or args.only:
        code = 0 if worker.run_once(args.only) else 1
    else:
        worker.run_forever()
        code = 0
    if worker.busy():  # a job cut short by a stop: do not wait for it (its work is whole transactions or nothing)
        logging.shutdown()
        os._exit(code)
    store.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
