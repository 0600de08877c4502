"""The SQLite store: one connection, and one repository per aggregate that reads and writes typed rows.

``Store(path)`` opens (and migrates) the database and exposes the repositories over its one
connection: ``store.samples`` (samples and instances), ``store.runs`` (training runs, model scores,
backtest points), ``store.forecasts``, ``store.alerts`` (alerts and their events) and ``store.jobs``
(heartbeats, meta values, the retrain queue). Writes that belong together share
``store.transaction()``; a nested one is a savepoint. The schema and its migrations live in
:mod:`forecasting.store.db`; the outbox and realised tables are written by their own modules
(``forecasting.outbox``, ``forecasting.scoring``) through ``store.db``.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path

from forecasting.store.alerts import AlertEvent, AlertRecord, Alerts
from forecasting.store.db import MIGRATIONS, Database
from forecasting.store.forecasts import ForecastRecord, Forecasts
from forecasting.store.jobs import Heartbeat, Jobs
from forecasting.store.runs import BacktestPoint, Runs, Score, TrainingRun
from forecasting.store.samples import Instance, Samples

__all__ = [
    "MIGRATIONS",
    "AlertEvent",
    "AlertRecord",
    "BacktestPoint",
    "ForecastRecord",
    "Heartbeat",
    "Instance",
    "Score",
    "Store",
    "TrainingRun",
]


class Store:
    """The Headroom database: one connection (safe to share between threads of one process) and its repositories."""

    def __init__(self, path: str | Path, *, readonly: bool = False, timeout: float = 30.0) -> None:
        self.db = Database(path, readonly=readonly, timeout=timeout)
        self.path = self.db.path
        self.samples = Samples(self.db)
        self.runs = Runs(self.db)
        self.forecasts = Forecasts(self.db)
        self.alerts = Alerts(self.db)
        self.jobs = Jobs(self.db)

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """Every repository write inside is committed together or not at all (see ``Database.transaction``)."""
        return self.db.transaction()

    @property
    def schema_version(self) -> int:
        """The applied migration count (0 while the worker has not created the schema yet)."""
        return self.db.schema_version

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
