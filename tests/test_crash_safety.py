"""SIGKILL the worker in the middle of a large ingest: the database stays whole, and a re-run completes it."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from forecasting.sources.demo import DemoSource
from tests.fixtures.stores import environ_without_settings
from tests.fixtures.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
INSTANCES = 40  # 14 days of backfill for 40 demo instances: ~620,000 samples in one transaction
WAL_MID_WRITE = 4 * 1024 * 1024  # the ingest transaction has started spilling pages into the WAL


def worker_env(db: Path) -> dict[str, str]:
    env = environ_without_settings()
    env.update(
        HEADROOM_SOURCE="demo",
        HEADROOM_DB=str(db),
        HEADROOM_DEMO_INSTANCES=str(INSTANCES),
        HEADROOM_CONFIG=str(db.parent / "none.toml"),
    )
    return env


def ingest_command() -> list[str]:
    return [sys.executable, str(ROOT / "worker.py"), "--once", "--only", "ingest"]


def series_counts(db: Path) -> tuple[int, int, dict[tuple[str, str], int]]:
    """(samples, instances, samples per series), read after checking the file's integrity."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        samples = conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        instances = conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        per_series = {
            (i, m): n
            for i, m, n in conn.execute("SELECT instance_id, metric, COUNT(*) FROM samples GROUP BY instance_id, metric")
        }
    return samples, instances, per_series


def assert_complete(instances: int, per_series: dict[tuple[str, str], int]) -> None:
    """Every demo instance with every metric it publishes, each over the whole 14-day backfill."""
    demo = DemoSource(INSTANCES)
    assert instances == INSTANCES
    assert set(per_series) == {(info.instance_id, m) for info in demo.list_instances() for m in demo.metrics_of(info.instance_id)}
    assert min(per_series.values()) >= 14 * 288 and len(set(per_series.values())) == 1


def test_sigkill_mid_ingest_leaves_previous_or_complete_state(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    wal = tmp_path / "crash.db-wal"
    log = (tmp_path / "killed.log").open("w")
    process = subprocess.Popen(ingest_command(), cwd=tmp_path, env=worker_env(db), stdout=log, stderr=subprocess.STDOUT)
    mid_write = wait_until(lambda: process.poll() is not None or (wal.exists() and wal.stat().st_size > WAL_MID_WRITE), 300)
    assert mid_write and process.poll() is None, "the ingest finished before it could be killed: raise INSTANCES"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL

    samples, instances, per_series = series_counts(db)
    if samples == 0:  # the previous (empty) state: nothing of the cycle survived, not even its instance rows
        assert instances == 0
    else:  # the cycle committed just before the kill: then all of it is there
        assert_complete(instances, per_series)

    done = subprocess.run(ingest_command(), cwd=tmp_path, env=worker_env(db), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    samples, instances, per_series = series_counts(db)
    assert_complete(instances, per_series)
    assert samples == sum(per_series.values())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT ok, error FROM heartbeats WHERE job = 'ingest'").fetchone() == (1, None)
