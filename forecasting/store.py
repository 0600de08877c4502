"""The SQLite store: schema, migrations, idempotent upserts, queries and retention.

One file in WAL mode so readers (dashboard, API) never block the writer (worker).
Writes that belong together go through :meth:`Store.transaction`, so a crash
leaves the previous state, never half of the new one. The tables are a public,
documented contract (docs/store.md): users may query them with ``sqlite3``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

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
        basis TEXT NOT NULL,          -- 'mean' (point forecast crosses), 'likely' (≥ 40 % chance) or 'upper' (only the bound does)
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


@dataclass(frozen=True)
class Instance:
    """One monitored instance as stored."""

    instance_id: str
    name: str | None
    threshold: float
    first_seen: int
    last_seen: int


class Store:
    """A connection to the Headroom database; safe to share between threads of one process."""

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

    # ---- plumbing -------------------------------------------------------
    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        """Run a read query (for the store's own functions and tests; pages use the named queries)."""
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    @property
    def schema_version(self) -> int:
        """The applied migration count (``PRAGMA user_version``)."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

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

    def integrity_ok(self) -> bool:
        """True when ``PRAGMA integrity_check`` reports ok."""
        return self.query("PRAGMA integrity_check")[0][0] == "ok"

    # ---- meta -----------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        """A small persistent value (e.g. when the last digest went out)."""
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def retrain_requests(self) -> set[str]:
        """Instances queued for retraining before their turn (their champion could not be used)."""
        return set(json.loads(self.get_meta("retrain_requested") or "[]"))

    def request_retrain(self, instance_ids: Iterable[str], done: Iterable[str] = ()) -> None:
        """Add instances to the retrain queue and take the ``done`` ones off it, in one write."""
        with self.transaction():
            wanted = (self.retrain_requests() | set(instance_ids)) - set(done)
            self.set_meta("retrain_requested", json.dumps(sorted(wanted)))

    # ---- samples --------------------------------------------------------
    def upsert_samples(self, rows: Iterable[tuple[str, str, int, float]]) -> int:
        """Insert or replace (instance_id, metric, ts, value) rows; returns how many were written.

        Rows whose value is NaN or infinite are dropped (``value`` is NOT NULL), so one bad point
        never rolls back the rest of an ingest cycle.
        """
        batch = [(i, m, int(t), float(v)) for i, m, t, v in rows]
        batch = [row for row in batch if math.isfinite(row[3])]
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO samples (instance_id, metric, ts, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(instance_id, metric, ts) DO UPDATE SET value = excluded.value",
                batch,
            )
        return len(batch)

    def last_sample_ts(self) -> dict[tuple[str, str], int]:
        """The newest stored timestamp of every (instance, metric) series."""
        rows = self.query("SELECT instance_id, metric, MAX(ts) FROM samples GROUP BY instance_id, metric")
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def samples(self, instance_id: str, start: int | None = None, end: int | None = None, metrics: Iterable[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Samples of one instance as {metric: (timestamps, values)}, oldest first, ``start <= ts <= end``."""
        sql = "SELECT metric, ts, value FROM samples WHERE instance_id = ? AND ts >= ? AND ts <= ?"
        params: list[Any] = [instance_id, start if start is not None else -(2**62), end if end is not None else 2**62]
        if metrics is not None:
            wanted = list(metrics)
            sql += f" AND metric IN ({','.join('?' * len(wanted))})"
            params += wanted
        out: dict[str, tuple[list[int], list[float]]] = {}
        for metric, ts, value in self.query(sql + " ORDER BY metric, ts", params):
            series = out.setdefault(metric, ([], []))
            series[0].append(ts)
            series[1].append(value)
        return {m: (np.asarray(t, dtype=np.int64), np.asarray(v, dtype=float)) for m, (t, v) in out.items()}

    def latest_values(self, metric: str = "cpu") -> dict[str, tuple[int, float]]:
        """The newest (ts, value) of one metric for every instance."""
        rows = self.query(
            "SELECT s.instance_id, s.ts, s.value FROM samples s JOIN "
            "(SELECT instance_id, MAX(ts) AS ts FROM samples WHERE metric = ? GROUP BY instance_id) m "
            "ON s.instance_id = m.instance_id AND s.ts = m.ts WHERE s.metric = ?",
            (metric, metric),
        )
        return {r[0]: (int(r[1]), float(r[2])) for r in rows}

    def recent_series(self, since: int, metric: str = "cpu") -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """One metric of every instance since a time, e.g. for sparklines."""
        out: dict[str, tuple[list[int], list[float]]] = {}
        for iid, ts, value in self.query("SELECT instance_id, ts, value FROM samples WHERE metric = ? AND ts >= ? ORDER BY instance_id, ts", (metric, since)):
            series = out.setdefault(iid, ([], []))
            series[0].append(ts)
            series[1].append(value)
        return {i: (np.asarray(t, dtype=np.int64), np.asarray(v, dtype=float)) for i, (t, v) in out.items()}

    def sample_count(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM samples")[0][0])

    def prune(self, older_than: int) -> int:
        """Retention: delete samples with ``ts < older_than``; returns rows removed."""
        with self.transaction() as conn:
            return conn.execute("DELETE FROM samples WHERE ts < ?", (older_than,)).rowcount

    # ---- instances ------------------------------------------------------
    def upsert_instance(self, instance_id: str, name: str | None, threshold: float, seen_at: int) -> None:
        """Record an instance (first sight sets first_seen; later ones update name, threshold, last_seen)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO instances (instance_id, name, threshold, first_seen, last_seen) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(instance_id) DO UPDATE SET name = COALESCE(excluded.name, name), "
                "threshold = excluded.threshold, last_seen = MAX(last_seen, excluded.last_seen)",
                (instance_id, name, threshold, seen_at, seen_at),
            )

    def instances(self) -> list[Instance]:
        return [Instance(*row) for row in self.query("SELECT instance_id, name, threshold, first_seen, last_seen FROM instances ORDER BY instance_id")]

    def instance(self, instance_id: str) -> Instance | None:
        rows = self.query("SELECT instance_id, name, threshold, first_seen, last_seen FROM instances WHERE instance_id = ?", (instance_id,))
        return Instance(*rows[0]) if rows else None

    # ---- training runs, scores, backtests --------------------------------
    def record_training_run(self, run: dict[str, Any], scores: list[dict[str, Any]], backtest: list[tuple[str, int, int, float, float, float, float]]) -> int:
        """Store one training run with its model scores and backtest points, atomically; returns run_id.

        ``run`` keys: instance_id, started_at, finished_at, train_start, train_end, points, champion, model_dir.
        ``scores`` items: model, status, reason, mape, smape, mase, rmse, coverage, fit_seconds, predict_seconds.
        ``backtest`` rows: (model, origin_ts, ts, actual, mean, lower, upper).
        """
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO training_runs (instance_id, started_at, finished_at, train_start, train_end, points, champion, model_dir) "
                "VALUES (:instance_id, :started_at, :finished_at, :train_start, :train_end, :points, :champion, :model_dir)",
                run,
            )
            run_id = int(cur.lastrowid)
            fields = ("model", "status", "reason", "mape", "smape", "mase", "rmse", "coverage", "fit_seconds", "predict_seconds")
            conn.executemany(
                f"INSERT INTO model_scores (run_id, instance_id, {', '.join(fields)}) VALUES (?, ?, {', '.join('?' * len(fields))})",
                [(run_id, run["instance_id"], *(_finite_or_none(s.get(f)) for f in fields)) for s in scores],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO backtest_points (run_id, model, origin_ts, ts, actual, mean, lower, upper) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, *row) for row in backtest if _all_finite(row[3:])],  # a NaN point is left out, not the run
            )
            # Only the newest run's backtest is shown (Models page); older runs keep their scores, not their points.
            conn.execute(
                "DELETE FROM backtest_points WHERE run_id IN (SELECT run_id FROM training_runs WHERE instance_id = ? AND run_id < ?)",
                (run["instance_id"], run_id),
            )
        return run_id

    def latest_runs(self) -> dict[str, sqlite3.Row]:
        """The newest training run of every instance."""
        rows = self.query("SELECT * FROM training_runs WHERE run_id IN (SELECT MAX(run_id) FROM training_runs GROUP BY instance_id)")
        return {r["instance_id"]: r for r in rows}

    def training_runs(self, instance_id: str, limit: int = 100) -> list[sqlite3.Row]:
        """Training runs of one instance, newest first (the champion's history)."""
        return self.query("SELECT * FROM training_runs WHERE instance_id = ? ORDER BY run_id DESC LIMIT ?", (instance_id, limit))

    def scores(self, instance_id: str | None = None, run_id: int | None = None) -> list[sqlite3.Row]:
        """Model scores of the latest run of each instance (or of one instance / one run)."""
        if run_id is not None:
            return self.query("SELECT * FROM model_scores WHERE run_id = ? ORDER BY model", (run_id,))
        sql = "SELECT s.* FROM model_scores s WHERE s.run_id IN (SELECT MAX(run_id) FROM training_runs GROUP BY instance_id)"
        params: tuple[Any, ...] = ()
        if instance_id is not None:
            sql += " AND s.instance_id = ?"
            params = (instance_id,)
        return self.query(sql + " ORDER BY s.instance_id, s.model", params)

    def backtest_points(self, run_id: int, model: str | None = None) -> list[sqlite3.Row]:
        sql = "SELECT * FROM backtest_points WHERE run_id = ?"
        params: list[Any] = [run_id]
        if model is not None:
            sql += " AND model = ?"
            params.append(model)
        return self.query(sql + " ORDER BY model, origin_ts, ts", params)

    # ---- forecasts ------------------------------------------------------
    def record_forecasts(self, rows: list[dict[str, Any]]) -> None:
        """Store forecasts atomically; each dict: instance_id, run_id, model, is_champion, made_at, origin_ts, timestamps, mean, lower, upper."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO forecasts (instance_id, run_id, model, is_champion, made_at, origin_ts, timestamps, mean, lower, upper) "
                "VALUES (:instance_id, :run_id, :model, :is_champion, :made_at, :origin_ts, :timestamps, :mean, :lower, :upper)",
                [
                    {**r, "is_champion": int(bool(r["is_champion"])), **{k: json.dumps([_round(x) for x in r[k]]) for k in ("timestamps", "mean", "lower", "upper")}}
                    for r in rows
                ],
            )

    def champion_forecast_before(self, instance_id: str, made_by: int) -> dict[str, Any] | None:
        """The newest champion forecast of an instance made at or before ``made_by`` (arrays decoded), or None."""
        rows = self.query("SELECT * FROM forecasts WHERE instance_id = ? AND is_champion = 1 AND made_at <= ? "
                          "ORDER BY forecast_id DESC LIMIT 1", (instance_id, int(made_by)))
        return _decode_forecast(rows[0]) if rows else None

    def latest_forecasts(self, instance_id: str | None = None, champion_only: bool = True) -> list[dict[str, Any]]:
        """The newest forecast per instance (and per model unless champion_only), arrays decoded."""
        where = "WHERE is_champion = 1" if champion_only else "WHERE 1 = 1"
        params: list[Any] = []
        if instance_id is not None:
            where += " AND instance_id = ?"
            params.append(instance_id)
        group = "instance_id" if champion_only else "instance_id, model"
        rows = self.query(
            f"SELECT * FROM forecasts WHERE forecast_id IN (SELECT MAX(forecast_id) FROM forecasts {where} GROUP BY {group}) ORDER BY instance_id, model",
            params,
        )
        return [_decode_forecast(r) for r in rows]

    def champion_forecast_times(self) -> dict[str, int]:
        """When each instance's latest champion forecast was made (index walk, as ``latest_forecasts``)."""
        rows = self.query("SELECT instance_id, made_at FROM forecasts WHERE forecast_id IN "
                          "(SELECT MAX(forecast_id) FROM forecasts WHERE is_champion = 1 GROUP BY instance_id)")
        return {r[0]: int(r[1]) for r in rows}

    def prune_forecasts(self, keep_after: int) -> int:
        """Drop forecasts made before a time, keeping each instance's and model's newest one."""
        with self.transaction() as conn:
            return conn.execute(
                # old rows come from the made_at index; each is checked against a newer one of its instance and
                # model through forecasts_latest, so the cost follows what is deleted, not the table's size
                "DELETE FROM forecasts WHERE made_at < ? AND EXISTS (SELECT 1 FROM forecasts AS newer WHERE "
                "newer.instance_id = forecasts.instance_id AND newer.model = forecasts.model AND newer.forecast_id > forecasts.forecast_id)",
                (keep_after,),
            ).rowcount

    # ---- alerts ---------------------------------------------------------
    def alerts(self, state: str | None = None, instance_id: str | None = None, limit: int = 1000) -> list[sqlite3.Row]:
        """Alerts, newest first, optionally filtered by state ('open' / 'cleared') or instance."""
        sql, params = "SELECT * FROM alerts WHERE 1 = 1", []
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        if instance_id is not None:
            sql += " AND instance_id = ?"
            params.append(instance_id)
        return self.query(sql + " ORDER BY alert_id DESC LIMIT ?", [*params, limit])

    def alert_events(self, alert_id: int) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM alert_events WHERE alert_id = ? ORDER BY event_id", (alert_id,))

    # ---- heartbeats -----------------------------------------------------
    def record_heartbeat(self, job: str, started_at: float, duration: float, error: str | None, detail: str | None = None,
                         state: str | None = None, counts: dict[str, int] | None = None) -> None:
        """Remember the last run of a worker job (shown by the dashboard and the API).

        ``state`` is 'ok', 'degraded' (it ran, but part of it failed: ``error`` says what first) or 'failed';
        by default 'ok' without an error, else 'failed'. ``ok`` is 1 only for 'ok'.
        """
        state = state or ("ok" if error is None else "failed")
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO heartbeats (job, started_at, finished_at, duration_seconds, ok, error, detail, state, counts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(job) DO UPDATE SET started_at = excluded.started_at, finished_at = excluded.finished_at, "
                "duration_seconds = excluded.duration_seconds, ok = excluded.ok, error = excluded.error, detail = excluded.detail, "
                "state = excluded.state, counts = excluded.counts",
                (job, int(started_at), int(started_at + duration), round(duration, 3), int(state == "ok"), error, detail,
                 state, json.dumps(counts or {})),
            )

    def heartbeats(self) -> dict[str, sqlite3.Row]:
        return {r["job"]: r for r in self.query("SELECT * FROM heartbeats ORDER BY job")}

    # ---- added for the dashboard ----
    def trailing_series(self, seconds: int, metric: str = "cpu") -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The last ``seconds`` of one metric for every instance, ending at each one's newest sample.

        Walks the instances and uses the (instance, metric, ts) key for each, so it stays fast
        however long the stored history is (the Fleet page's sparklines and current values).
        """
        rows = self.query(
            "WITH last AS (SELECT i.instance_id AS instance_id, "
            "(SELECT MAX(m.ts) FROM samples m WHERE m.instance_id = i.instance_id AND m.metric = ?) AS ts FROM instances i) "
            "SELECT s.instance_id, s.ts, s.value FROM last CROSS JOIN samples s "  # CROSS JOIN keeps instances as the outer loop
            "ON s.instance_id = last.instance_id AND s.metric = ? AND s.ts >= last.ts - ? ORDER BY s.instance_id, s.ts",
            (metric, metric, int(seconds)),
        )
        if not rows:
            return {}
        ids, stamps, values = zip(*rows, strict=True)
        ts = np.asarray(stamps, dtype=np.int64)
        vals = np.asarray(values, dtype=float)
        cuts = [0, *(k for k in range(1, len(ids)) if ids[k] != ids[k - 1]), len(ids)]
        return {ids[a]: (ts[a:b], vals[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)}

    def newest_sample_ts(self, instance_id: str, metric: str = "cpu") -> int | None:
        """The newest stored timestamp of one series (None without samples); an index lookup."""
        rows = self.query("SELECT MAX(ts) FROM samples WHERE instance_id = ? AND metric = ?", (instance_id, metric))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    # ---- added for alerts, email and fleet ----
    ALERT_COLUMNS = frozenset({
        "instance_id", "state", "opened_at", "updated_at", "cleared_at", "threshold", "crossing_ts", "lead_minutes",
        "peak", "model", "basis", "below_count", "actual_crossing_ts", "outcome", "emailed_at", "email_error",
    })

    def insert_alert(self, fields: dict[str, Any]) -> int:
        """Insert one alert row (columns of ``alerts``); returns its alert_id."""
        names = [name for name in fields if name in self.ALERT_COLUMNS]
        with self.transaction() as conn:
            cur = conn.execute(f"INSERT INTO alerts ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                               [fields[name] for name in names])
        return int(cur.lastrowid)

    def update_alert(self, alert_id: int, fields: dict[str, Any]) -> None:
        """Set some columns of one alert (unknown column names are refused)."""
        unknown = set(fields) - self.ALERT_COLUMNS
        if unknown:
            raise ValueError(f"not an alerts column: {sorted(unknown)[0]}")
        if not fields:
            return
        with self.transaction() as conn:
            conn.execute(f"UPDATE alerts SET {', '.join(f'{name} = ?' for name in fields)} WHERE alert_id = ?",
                         [*fields.values(), alert_id])

    def add_alert_event(self, alert_id: int, ts: int, kind: str, detail: str | None = None) -> None:
        """Append one state change of an alert to ``alert_events``."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO alert_events (alert_id, ts, kind, detail) VALUES (?, ?, ?, ?)", (alert_id, int(ts), kind, detail))

    def unresolved_alerts(self) -> list[sqlite3.Row]:
        """Alerts still open or whose outcome is not known yet, newest first."""
        return self.query("SELECT * FROM alerts WHERE state = 'open' OR outcome IS NULL ORDER BY alert_id DESC")

    def alerts_to_email(self) -> list[sqlite3.Row]:
        """Open alerts that have not been mailed yet, oldest first."""
        return self.query("SELECT * FROM alerts WHERE state = 'open' AND emailed_at IS NULL ORDER BY alert_id")

    def last_emailed(self) -> dict[str, int]:
        """When an alert of each instance was last mailed (for the per-instance cooldown)."""
        rows = self.query("SELECT instance_id, MAX(emailed_at) FROM alerts WHERE emailed_at IS NOT NULL GROUP BY instance_id")
        return {r[0]: int(r[1]) for r in rows}


def _all_finite(values: Iterable[Any]) -> bool:
    """True when every value is a finite number (None, NaN and infinities are not)."""
    return all(isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v)) for v in values)


def _finite_or_none(value: Any) -> Any:
    """NaN and infinities are stored as NULL, never as NaN."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def _round(value: Any) -> Any:
    if isinstance(value, (int, np.integer)):
        return int(value)
    return round(float(value), 4)


def _decode_forecast(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in ("timestamps", "mean", "lower", "upper"):
        out[key] = json.loads(out[key])
    return out


def open_store(path: str | Path, readonly: bool = False) -> Store:
    """Open (and migrate, unless read-only) the database at ``path``."""
    return Store(path, readonly=readonly)


def now() -> int:
    """Wall clock in unix seconds (one place, so tests can reason about it)."""
    return int(time.time())
