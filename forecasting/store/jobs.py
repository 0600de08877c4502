"""The worker's own records: the last run of each job (heartbeats), small persistent values (meta), the retrain queue."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from forecasting.store.db import Database

RETRAIN_KEY = "retrain_requested"


@dataclass(frozen=True)
class Heartbeat:
    """The last run of one worker job (shown by the dashboard, the API and ``/metrics``)."""

    job: str
    started_at: int
    finished_at: int | None
    duration_seconds: float | None
    state: str  # 'ok', 'degraded' (it ran, but part of it failed) or 'failed'
    error: str | None  # why it failed, or its first problem when degraded
    detail: str | None  # the job's one-line summary
    counts: dict[str, int] = field(default_factory=dict)  # what it did, e.g. trained, failed

    @property
    def ok(self) -> bool:
        """True only when the state is ok."""
        return self.state == "ok"


class Jobs:
    """The ``heartbeats`` and ``meta`` tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- heartbeats --------------------------------------------------------
    def record_heartbeat(
        self,
        job: str,
        started_at: float,
        duration: float,
        error: str | None,
        detail: str | None = None,
        state: str | None = None,
        counts: dict[str, int] | None = None,
    ) -> None:
        """Remember the last run of a worker job.

        ``state`` is 'ok', 'degraded' (it ran, but part of it failed: ``error`` says what first) or 'failed';
        by default 'ok' without an error, else 'failed'. ``ok`` is 1 only for 'ok'.
        """
        state = state or ("ok" if error is None else "failed")
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO heartbeats (job, started_at, finished_at, duration_seconds, ok, error, detail, state, counts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(job) DO UPDATE SET started_at = excluded.started_at, finished_at = excluded.finished_at, "
                "duration_seconds = excluded.duration_seconds, ok = excluded.ok, error = excluded.error, detail = excluded.detail, "
                "state = excluded.state, counts = excluded.counts",
                (
                    job,
                    int(started_at),
                    int(started_at + duration),
                    round(duration, 3),
                    int(state == "ok"),
                    error,
                    detail,
                    state,
                    json.dumps(counts or {}),
                ),
            )

    def heartbeats(self) -> dict[str, Heartbeat]:
        """The last run of every job, by job name.

        Rows written before jobs had a state (schema version 2) read as 'ok' or 'failed' from their ``ok`` flag.
        """
        rows = self.db.query(
            "SELECT job, started_at, finished_at, duration_seconds, ok, error, detail, state, counts FROM heartbeats ORDER BY job"
        )
        return {
            job: Heartbeat(
                job,
                started,
                finished,
                duration,
                state or ("ok" if ok else "failed"),
                error,
                detail,
                json.loads(counts) if counts else {},
            )
            for job, started, finished, duration, ok, error, detail, state, counts in rows
        }

    # ---- meta --------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        """A small persistent value (e.g. when the last digest went out), or None."""
        rows = self.db.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Set a small persistent value."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value)
            )

    # ---- the retrain queue -------------------------------------------------
    def retrain_requests(self) -> set[str]:
        """Instances queued for retraining before their turn (their champion could not be used)."""
        return set(json.loads(self.get_meta(RETRAIN_KEY) or "[]"))

    def request_retrain(self, instance_ids: Iterable[str], done: Iterable[str] = ()) -> None:
        """Add instances to the retrain queue and take the ``done`` ones off it, in one write."""
        with self.db.transaction():
            wanted = (self.retrain_requests() | set(instance_ids)) - set(done)
            self.set_meta(RETRAIN_KEY, json.dumps(sorted(wanted)))
