"""The database on a real file: WAL, migrations, read-only connections, atomic and nested transactions, concurrency."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from forecasting.store import MIGRATIONS, Store
from tests.store import T0, cpu_rows


def schema(db: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()


# ---- file, mode, migrations ---------------------------------------------------
def test_wal_mode_and_schema_version(store: Store) -> None:
    assert store.path.exists() and store.path.parent.name == "data"  # the folder is created
    assert store.db.query("PRAGMA journal_mode")[0][0] == "wal"
    assert store.schema_version == len(MIGRATIONS) >= 1
    with closing(sqlite3.connect(store.path)) as plain:
        assert plain.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    tables = {r[0] for r in store.db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "samples",
        "instances",
        "training_runs",
        "model_scores",
        "backtest_points",
        "forecasts",
        "alerts",
        "alert_events",
        "heartbeats",
        "meta",
    } <= tables
    columns = [(r["name"], r["type"], r["pk"]) for r in store.db.query("PRAGMA table_info(samples)")]
    assert columns == [("instance_id", "TEXT", 1), ("metric", "TEXT", 2), ("ts", "INTEGER", 3), ("value", "REAL", 0)]
    assert store.db.query("PRAGMA integrity_check")[0][0] == "ok"


def test_migrating_again_is_a_no_op(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with Store(db) as first:
        first.samples.upsert(cpu_rows("i-a", 3))
    before = schema(db)
    with Store(db) as second:
        second.db.migrate()
        assert second.schema_version == len(MIGRATIONS) and second.samples.count() == 3
    assert schema(db) == before


def test_a_read_only_store_reads_and_refuses_writes(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with Store(db) as writer:
        writer.samples.upsert(cpu_rows("i-a", 4))
    with Store(db, readonly=True) as reader:
        assert reader.samples.count() == 4
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.samples.upsert(cpu_rows("i-b", 1))


@pytest.mark.parametrize("name", ["a#b.db", "what?.db", "100%.db", "with space.db"])
def test_paths_with_uri_characters_open_the_named_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with Store(path) as opened:
        opened.samples.upsert(cpu_rows("i-a", 2))
    assert path.is_file()
    with Store(path, readonly=True) as reader:
        assert reader.samples.count() == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == [name]


# ---- transactions ------------------------------------------------------------
def test_a_transaction_that_raises_leaves_nothing(store: Store) -> None:
    store.samples.upsert(cpu_rows("i-a", 2))
    store.jobs.set_meta("k", "before")
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        store.samples.upsert(cpu_rows("i-b", 100))
        store.samples.upsert_instance("i-b", "web", 80, T0)
        store.jobs.set_meta("k", "after")  # a repository's own transaction joins the outer one
        assert store.samples.count() == 102  # visible inside
        raise RuntimeError("boom")
    assert store.samples.count() == 2 and store.samples.instances() == [] and store.jobs.get_meta("k") == "before"
    with store.transaction():  # the store is usable afterwards
        store.samples.upsert(cpu_rows("i-c", 1))
    assert store.samples.count() == 3


def test_a_failed_nested_transaction_undoes_only_its_own_writes(store: Store) -> None:
    with store.transaction():
        store.samples.upsert(cpu_rows("i-a", 3))
        with pytest.raises(RuntimeError, match="inner"), store.transaction():
            store.samples.upsert(cpu_rows("i-b", 4))
            store.jobs.set_meta("k", "inner")
            raise RuntimeError("inner")
        store.jobs.set_meta("k", "outer")
    assert store.samples.count() == 3 and store.jobs.get_meta("k") == "outer"
    assert set(store.samples.newest_per_series()) == {("i-a", "cpu")}


def test_repositories_share_one_connection_and_its_transaction(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with Store(db) as store, Store(db, readonly=True) as reader:
        with store.transaction():
            store.samples.upsert_instance("i-a", None, 80, T0)
            store.runs.record(
                {
                    "instance_id": "i-a",
                    "started_at": T0,
                    "finished_at": T0,
                    "train_start": None,
                    "train_end": None,
                    "points": 0,
                    "champion": None,
                    "model_dir": None,
                },
                [],
                [],
            )
            store.alerts.add_event(
                store.alerts.insert(
                    {
                        "instance_id": "i-a",
                        "state": "open",
                        "opened_at": T0,
                        "updated_at": T0,
                        "threshold": 80.0,
                        "crossing_ts": T0,
                        "lead_minutes": 0.0,
                        "peak": 90.0,
                        "model": "naive",
                        "basis": "mean",
                    }
                ),
                T0,
                "opened",
            )
            assert (
                reader.samples.instances() == [] and reader.runs.latest() == {} and reader.alerts.open() == []
            )  # nothing until commit
        assert [i.instance_id for i in reader.samples.instances()] == ["i-a"] and list(reader.runs.latest()) == ["i-a"]
        assert [e.kind for e in reader.alerts.events(reader.alerts.open()[0].alert_id)] == ["opened"]


# ---- concurrency -------------------------------------------------------------
def test_readers_are_not_blocked_while_a_write_transaction_is_open(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    writer = Store(db)
    writer.samples.upsert(cpu_rows("i-a", 5))
    inside, release = threading.Event(), threading.Event()

    def long_write() -> None:
        with writer.transaction():
            writer.samples.upsert(cpu_rows("i-b", 500))
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=long_write)
    thread.start()
    try:
        assert inside.wait(10)
        with Store(db, readonly=True, timeout=0.2) as reader:  # a short busy timeout: a lock would raise
            assert reader.samples.count() == 5  # the committed state, not the open transaction
        with closing(sqlite3.connect(db, timeout=0.2)) as plain:
            assert plain.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 5
    finally:
        release.set()
        thread.join(10)
    with Store(db, readonly=True) as reader:
        assert reader.samples.count() == 505
    writer.close()


def test_processes_opening_a_new_file_together_migrate_it_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = tmp_path / "new.db"
    code = "import sys; from forecasting.store import Store; Store(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    with Store(db, readonly=True) as reader:
        assert reader.schema_version == len(MIGRATIONS) and reader.db.query("PRAGMA integrity_check")[0][0] == "ok"
