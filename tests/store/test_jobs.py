"""The worker's records on a real file: heartbeats (typed, with their state and counts), meta values, the retrain queue."""

from __future__ import annotations

import sqlite3

import pytest

from forecasting.store import Heartbeat, Store
from tests.store import T0


def test_meta_values(store: Store) -> None:
    assert store.jobs.get_meta("demo_anchor") is None
    store.jobs.set_meta("demo_anchor", "123")
    store.jobs.set_meta("demo_anchor", "456")
    assert store.jobs.get_meta("demo_anchor") == "456"


def test_heartbeats_record_the_last_run_of_each_job(store: Store) -> None:
    store.jobs.record_heartbeat("ingest", T0, 1.23456, None, "6 instances")
    store.jobs.record_heartbeat("retrain", T0, 2.0, "ValueError: bad")
    store.jobs.record_heartbeat("ingest", T0 + 300, 0.5, "OSError: down")
    beats = store.jobs.heartbeats()
    assert sorted(beats) == ["ingest", "retrain"]
    assert beats["ingest"] == Heartbeat("ingest", T0 + 300, T0 + 300, 0.5, "failed", "OSError: down", None, {})
    assert not beats["ingest"].ok and not beats["retrain"].ok
    store.jobs.record_heartbeat("ingest", T0 + 600, 1.23456, None, "ok")
    assert (store.jobs.heartbeats()["ingest"].ok, store.jobs.heartbeats()["ingest"].duration_seconds) == (True, 1.235)
    store.jobs.record_heartbeat(
        "retrain", T0 + 600, 3.0, "1 problem(s): i-1: boom", "retrained 1/2", "degraded", {"trained": 1, "failed": 1}
    )
    degraded = store.jobs.heartbeats()["retrain"]
    assert (degraded.ok, degraded.state, degraded.counts) == (False, "degraded", {"trained": 1, "failed": 1})
    assert store.db.query("SELECT ok FROM heartbeats WHERE job = 'ingest'")[0][0] == 1  # the column users query stays 0/1


def test_heartbeats_written_before_jobs_had_a_state_read_from_their_ok_flag(store: Store) -> None:
    with store.transaction() as conn:  # as a version-2 worker left them: no state, no counts
        conn.executemany(
            "INSERT INTO heartbeats (job, started_at, finished_at, duration_seconds, ok, error, detail) "
            "VALUES (?, ?, ?, 1.0, ?, ?, NULL)",
            [("ingest", T0, T0 + 1, 1, None), ("retrain", T0, T0 + 1, 0, "boom")],
        )
    beats = store.jobs.heartbeats()
    assert (beats["ingest"].state, beats["ingest"].ok, beats["ingest"].counts) == ("ok", True, {})
    assert (beats["retrain"].state, beats["retrain"].ok, beats["retrain"].error) == ("failed", False, "boom")


def test_the_retrain_queue_adds_and_takes_off_in_one_write(store: Store) -> None:
    assert store.jobs.retrain_requests() == set()
    store.jobs.request_retrain(["i-b", "i-a"])
    store.jobs.request_retrain(["i-c"], done=["i-a"])
    assert store.jobs.retrain_requests() == {"i-b", "i-c"}
    with pytest.raises(sqlite3.IntegrityError), store.transaction():
        store.jobs.request_retrain(["i-d"])
        store.db.query("INSERT INTO meta (key, value) VALUES ('x', NULL)")  # fails: the queue change goes with it
    assert store.jobs.retrain_requests() == {"i-b", "i-c"}
