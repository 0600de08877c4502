"""Headroom's background worker: keeps data fresh, models retrained, forecasts and alerts current.

    python worker.py            run forever on the cadences from settings
    python worker.py --once     one full cycle (ingest, retrain where due, forecast, alerts, mail), then exit
    python worker.py --once --only ingest|retrain|forecast|digest

A cycle runs every job in turn, every ``HEADROOM_INGEST_EVERY`` minutes, on a ``schedule.Scheduler``;
each job does only what is due (retrain: models older than ``HEADROOM_RETRAIN_EVERY`` hours or none;
digest: ``HEADROOM_DIGEST_EVERY`` hours since the last one sent). Each job is wrapped so that its error is logged
and the loop goes on (``schedule`` itself does not catch exceptions). SIGINT and
SIGTERM finish the current job and exit; long jobs check for the stop between
instances. The business logic lives in ``forecasting``; this file only schedules.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable

import schedule

from forecasting.settings import Settings, SettingsError, load_settings
from forecasting.store import Store, now

log = logging.getLogger("headroom.worker")
JOBS = ("ingest", "retrain", "forecast", "digest")


class Worker:
    """The worker's jobs (ingest, retrain, forecast with alerts and mail, digest) bound to one store and one settings object."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store
        self.stop = threading.Event()

    # ---- the jobs (each returns a one-line summary for the log) ----------
    def ingest(self) -> str:
        from forecasting.ingest import run_ingest

        return run_ingest(self.store, self.settings, now()).summary()

    def retrain(self) -> str:
        from forecasting.fleet import retrain_due

        return retrain_due(self.store, self.settings, now(), stop=self.stop).summary()

    def forecast(self) -> str:
        """Score past forecasts whose actuals arrived, forecast with saved models, turn forecasts into alerts, mail new ones."""
        from forecasting.alerts import evaluate_alerts
        from forecasting.forecast import run_forecasts
        from forecasting.notify import send_alert_mail
        from forecasting.scoring import score_realised

        scored = score_realised(self.store, self.settings, now())
        made = run_forecasts(self.store, self.settings, now(), stop=self.stop)
        alerts = evaluate_alerts(self.store, self.settings, now())
        mailed = send_alert_mail(self.store, self.settings, now())
        return f"{scored.summary()}; {made.summary()}; {alerts.summary()}; {mailed}"

    def digest(self) -> str:
        from forecasting.notify import send_digest_if_due

        return send_digest_if_due(self.store, self.settings, now())

    # ---- running them -------------------------------------------------
    def run_job(self, name: str) -> bool:
        """Run one job, log one line with its summary and seconds, record a heartbeat; never raise."""
        job: Callable[[], str] = getattr(self, name)
        started = time.time()
        error = None
        try:
            summary = job()
            log.info("%s: %s (%.1f s)", name, summary, time.time() - started)
        except Exception as exc:  # the loop must survive any one job
            error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            summary = None
            log.exception("%s failed after %.1f s: %s", name, time.time() - started, error)
        try:
            self.store.record_heartbeat(name, started, time.time() - started, error, summary)
        except Exception:
            log.exception("could not record the %s heartbeat", name)
        return error is None

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
        return ok

    def run_forever(self) -> None:
        """Run a full cycle now, then one every ``ingest_every`` minutes until stopped."""
        scheduler = schedule.Scheduler()
        scheduler.every(self.settings.ingest_every * 60).seconds.do(self.run_once)
        self.run_once()
        while not self.stop.is_set():
            scheduler.run_pending()
            self.stop.wait(min(5.0, max(0.5, scheduler.idle_seconds or 5.0)))
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
        ok = worker.run_once(args.only)
        store.close()
        return 0 if ok else 1
    worker.run_forever()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
