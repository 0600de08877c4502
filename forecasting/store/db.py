"""The database itself: one SQLite file, its schema (the ``MIGRATIONS`` list) and the transaction helper.

WAL mode, so readers (dashboard, API) never block the writer (worker). Writes that belong
together go through :meth:`Database.transaction`, so a crash leaves the previous state, never
half of the new one. The tables are a public, documented contract (docs/store.md): users
may query them with ``sqlite3``, so a change to them is a new migration, never an edit.
The repositories beside this module hold the queries, one per aggregate.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

# Each entry migrates from version i to i+1; never edit a released one, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE samples (
        instance_id TEXT NOT NULL,
        metric TEXT NOT NULL,
        ts INTEGER NOT NULL,          -- unix seconds, UTC, start of the period
        value REAL NOT NULL,
        PRIMARY KEY (instance_id, metric, ts)
    ) WITHOUT ROWID;
    CREATE TABLE instances (
        instance_id TEXT PRIMARY KEY,
        name TEXT,
        threshold REAL NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
    );
    CREATE TABLE training_runs (
        run_id INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        train_start INTEGER,
        train_end INTEGER,
        points INTEGER NOT NULL,
        champion TEXT,                -- NULL when no model could fit
        model_dir TEXT
    );
    CREATE INDEX training_runs_instance ON training_runs (instance_id, run_id);
    CREATE TABLE model_scores (
        run_id INTEGER NOT NULL REFERENCES training_runs (run_id) ON DELETE CASCADE,
        instance_id TEXT NOT NULL,
        model TEXT NOT NULL,
        status TEXT NOT NULL,         -- 'ok' or 'skipped'
        reason TEXT,                  -- why a model was skipped
        mape REAL, smape REAL, mase REAL, rmse REAL, coverage REAL,
        fit_seconds REAL, predict_seconds REAL,
        PRIMARY KEY (run_id, model)
    );
    CREATE TABLE backtest_points (
        run_id INTEGER NOT NULL REFERENCES training_runs (run_id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        origin_ts INTEGER NOT NULL,   -- last timestamp the model saw
        ts INTEGER NOT NULL,          -- forecast timestamp
        actual REAL NOT NULL,
        mean REAL NOT NULL,
        lower REAL NOT NULL,
        upper REAL NOT NULL,
        PRIMARY KEY (run_id, model, origin_ts, ts)
    ) WITHOUT ROWID;
    CREATE TABLE forecasts (
        forecast_id INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        model TEXT NOT NULL,
        is_champion INTEGER NOT NULL,
        made_at INTEGER NOT NULL,     -- wall clock when it was made
        origin_ts INTEGER NOT NULL,   -- last sample it used
        timestamps TEXT NOT NULL,     -- JSON arrays of equal length
        mean TEXT NOT NULL,
        lower TEXT NOT NULL,
        upper TEXT NOT NULL
    );
    CREATE INDEX forecasts_latest ON forecasts (instance_id, model, forecast_id);
    CREATE TABLE alerts (
        alert_id INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL,
        state TEXT NOT NULL,          -- 'open' or 'cleared'
        opened_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        cleared_at INTEGER,
        threshold REAL NOT NULL,
        crossing_ts INTEGER NOT NULL, -- predicted crossing (latest forecast)
        lead_minutes REAL NOT NULL,   -- at opening
        peak REAL NOT NULL,
        model TEXT NOT NULL,
        basis TEXT NOT NULL,          -- 'mean' (point forecast crosses), 'likely' (≥ 40 % chance), 'upper' (only the bound does) or 'now' (CPU already over)
        below_count INTEGER NOT NULL DEFAULT 0,
        actual_crossing_ts INTEGER,   -- first real sample at or above threshold while open
        outcome TEXT,                 -- 'caught', 'late', 'false' once known
        emailed_at INTEGER,
        email_error TEXT
    );
    CREATE INDEX alerts_instance ON alerts (instance_id, state);
    CREATE TABLE alert_events (
        event_id INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id INTEGER NOT NULL REFERENCES alerts (alert_id) ON DELETE CASCADE,
        ts INTEGER NOT NULL,
        kind TEXT NOT NULL,           -- opened, updated, crossed, cleared, emailed, email_failed
        detail TEXT
    );
    CREATE TABLE heartbeats (
        job TEXT PRIMARY KEY,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        duration_seconds REAL,
        ok INTEGER NOT NULL,
        error TEXT,
        detail TEXT
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 1 → 2: the champion's latest forecast per instance (Fleet page, GET /predictions) without a scan,
    # and retention of old forecasts without one either.
    """
    CREATE INDEX forecasts_champion ON forecasts (instance_id, forecast_id) WHERE is_champion = 1;
    CREATE INDEX forecasts_made_at ON forecasts (made_at);
    """,
    # 2 → 3: a job's last run is ok, degraded (it ran, but part of it failed) or failed, with its counts (JSON).
    """
    ALTER TABLE heartbeats ADD COLUMN state TEXT;
    ALTER TABLE heartbeats ADD COLUMN counts TEXT;
    """,
    # 3 → 4: the outbox of webhook messages (forecasting/outbox.py): each alert event a destination must hear of,
    # kept until it is delivered, so a destination that is down loses nothing and hears nothing twice.
    """
    CREATE TABLE outbox (
        outbox_id INTEGER PRIMARY KEY AUTOINCREMENT,
        destination TEXT NOT NULL,    -- 'webhook', 'slack' or 'pagerduty'
        alert_id INTEGER NOT NULL REFERENCES alerts (alert_id) ON DELETE CASCADE,
        event_id INTEGER NOT NULL,    -- the alert_events row it announces
        kind TEXT NOT NULL,           -- 'opened', 'updated' or 'cleared'
        message TEXT NOT NULL,        -- the event as JSON (the generic webhook's body)
        body TEXT NOT NULL,           -- the JSON body for this destination (PagerDuty's without its routing key)
        created_at INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',  -- 'pending', 'delivered', or 'rejected' (a 400/413/422 answer)
        attempts INTEGER NOT NULL DEFAULT 0,
        last_attempt_at INTEGER,
        last_error TEXT,
        delivered_at INTEGER,
        UNIQUE (destination, event_id)
    );
    CREATE INDEX outbox_pending ON outbox (destination, outbox_id) WHERE state = 'pending';
    CREATE INDEX outbox_alert ON outbox (destination, alert_id, outbox_id);
    """,
    # 4 → 5: realised accuracy, error sums of stored forecasts once their actuals arrived, per instance,
    # model and hour the forecasts were made (forecasting/realised.py; written by forecasting/scoring.py).
    """
    CREATE TABLE realised (
        instance_id TEXT NOT NULL,
        model TEXT NOT NULL,
        hour INTEGER NOT NULL,        -- made_at floored to the hour
        forecasts INTEGER NOT NULL,
        points INTEGER NOT NULL, abs_error REAL NOT NULL, scaled_error REAL NOT NULL,
        pct_error REAL NOT NULL, pct_points INTEGER NOT NULL, inside INTEGER NOT NULL,
        PRIMARY KEY (instance_id, model, hour)
    ) WITHOUT ROWID;
    CREATE INDEX realised_hour ON realised (hour);
    """,
]


class Database:
    """One connection to the Headroom database; safe to share between threads of one process."""

    def __init__(self, path: str | Path, *, readonly: bool = False, timeout: float = 30.0) -> None:
        self.path = Path(path)
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{quote(str(self.path))}" + ("?mode=ro" if readonly else "")  # quoted: '#', '?', '%' in a path
        self._conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        if not readonly:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self.migrate()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside are committed together or not at all.

        A nested transaction is a savepoint of the outer one: when it fails, only its own writes are
        undone and the outer transaction goes on (or fails) as its code decides.
        """
        with self._lock:
            depth = self._depth
            savepoint = f"headroom_{depth}"
            self._conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield self._conn
            except BaseException:
                self._depth = depth
                if depth == 0:
                    self._conn.execute("ROLLBACK")
                else:
                    self._conn.execute(f"ROLLBACK TO {savepoint}")
                    self._conn.execute(f"RELEASE {savepoint}")
                raise
            self._depth = depth
            self._conn.execute("COMMIT" if depth == 0 else f"RELEASE {savepoint}")

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Run a read query (for the repositories, and for tests that check the tables themselves)."""
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    @property
    def schema_version(self) -> int:
        """The applied migration count (``PRAGMA user_version``)."""
        return int(self.query("PRAGMA user_version")[0][0])

    def migrate(self) -> None:
        """Apply the migrations this file has not seen yet, each in its own transaction.

        The version is read inside the write transaction, so processes that open a new file at the
        same moment (the worker and the API's workers) apply each migration exactly once.
        """
        while True:
            with self.transaction() as conn:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if version >= len(MIGRATIONS):
                    return
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")


def columns(row_type: type) -> str:
    """The column list of a typed row (its field names, in order), for a ``SELECT`` that builds it positionally."""
    return ", ".join(f.name for f in fields(row_type))
