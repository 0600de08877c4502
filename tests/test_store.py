"""The SQLite store on a real file: WAL, migrations, idempotent upserts, atomic transactions, retention, queries."""

from __future__ import annotations

import json

import math
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from forecasting.store import MIGRATIONS, Instance, Store

T0 = 1_760_000_000 // 300 * 300


@pytest.fixture()
def store(tmp_path: Path):
    with Store(tmp_path / "data" / "headroom.db") as opened:
        yield opened


def cpu_rows(instance: str, n: int, start: int = T0, value: float = 10.0) -> list[tuple[str, str, int, float]]:
    return [(instance, "cpu", start + 300 * k, value + k) for k in range(n)]


def schema(db: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()


# ---- file, mode, migrations ---------------------------------------------------
def test_wal_mode_and_schema_version(store: Store) -> None:
    assert store.path.exists() and store.path.parent.name == "data"  # the folder is created
    assert store.query("PRAGMA journal_mode")[0][0] == "wal"
    assert store.schema_version == len(MIGRATIONS) >= 1
    with closing(sqlite3.connect(store.path)) as plain:
        assert plain.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    tables = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"samples", "instances", "training_runs", "model_scores", "backtest_points", "forecasts", "alerts", "alert_events", "heartbeats", "meta"} <= tables
    columns = [(r["name"], r["type"], r["pk"]) for r in store.query("PRAGMA table_info(samples)")]
    assert columns == [("instance_id", "TEXT", 1), ("metric", "TEXT", 2), ("ts", "INTEGER", 3), ("value", "REAL", 0)]
    assert store.integrity_ok()


def test_migrating_again_is_a_no_op(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with Store(db) as first:
        first.upsert_samples(cpu_rows("i-a", 3))
    before = schema(db)
    with Store(db) as second:
        second.migrate()
        assert second.schema_version == len(MIGRATIONS) and second.sample_count() == 3
    assert schema(db) == before


def test_a_read_only_store_reads_and_refuses_writes(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with Store(db) as writer:
        writer.upsert_samples(cpu_rows("i-a", 4))
    with Store(db, readonly=True) as reader:
        assert reader.sample_count() == 4
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.upsert_samples(cpu_rows("i-b", 1))


# ---- samples ---------------------------------------------------------------
def test_upserts_are_idempotent_and_update_values(store: Store) -> None:
    rows = cpu_rows("i-a", 10) + cpu_rows("i-b", 5)
    assert store.upsert_samples(rows) == 15
    assert store.upsert_samples(rows) == 15
    assert store.sample_count() == 15
    store.upsert_samples([("i-a", "cpu", T0 + 300, 99.5)])
    ts, vals = store.samples("i-a")["cpu"]
    assert store.sample_count() == 15
    assert ts.tolist() == [T0 + 300 * k for k in range(10)]
    assert vals.tolist() == [10.0, 99.5, *[10.0 + k for k in range(2, 10)]]
    assert store.last_sample_ts() == {("i-a", "cpu"): T0 + 2700, ("i-b", "cpu"): T0 + 1200}


def test_a_transaction_that_raises_leaves_nothing(store: Store) -> None:
    store.upsert_samples(cpu_rows("i-a", 2))
    store.set_meta("k", "before")
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction():
            store.upsert_samples(cpu_rows("i-b", 100))
            store.upsert_instance("i-b", "web", 80, T0)
            store.set_meta("k", "after")  # a nested transaction joins the outer one
            assert store.sample_count() == 102  # visible inside
            raise RuntimeError("boom")
    assert store.sample_count() == 2 and store.instances() == [] and store.get_meta("k") == "before"
    with store.transaction():  # the store is usable afterwards
        store.upsert_samples(cpu_rows("i-c", 1))
    assert store.sample_count() == 3


def test_a_failing_upsert_writes_none_of_its_rows(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        store.upsert_samples([*cpu_rows("i-a", 5), (None, "cpu", T0 + 9000, 1.0)])
    assert store.sample_count() == 0


def test_non_finite_values_are_dropped_and_the_rest_written(store: Store) -> None:
    bad = [("i-a", "cpu", T0 + 9000, math.nan), ("i-a", "cpu", T0 + 9300, math.inf), ("i-a", "memory", T0, np.float64("nan"))]
    assert store.upsert_samples([*cpu_rows("i-a", 5), *bad]) == 5
    assert store.sample_count() == 5
    assert store.query("SELECT COUNT(*) FROM samples WHERE value != value")[0][0] == 0


def test_a_failed_nested_transaction_undoes_only_its_own_writes(store: Store) -> None:
    with store.transaction():
        store.upsert_samples(cpu_rows("i-a", 3))
        with pytest.raises(RuntimeError, match="inner"):
            with store.transaction():
                store.upsert_samples(cpu_rows("i-b", 4))
                store.set_meta("k", "inner")
                raise RuntimeError("inner")
        store.set_meta("k", "outer")
    assert store.sample_count() == 3 and store.get_meta("k") == "outer"
    assert set(store.last_sample_ts()) == {("i-a", "cpu")}


@pytest.mark.parametrize("name", ["a#b.db", "what?.db", "100%.db", "with space.db"])
def test_paths_with_uri_characters_open_the_named_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with Store(path) as opened:
        opened.upsert_samples(cpu_rows("i-a", 2))
    assert path.is_file()
    with Store(path, readonly=True) as reader:
        assert reader.sample_count() == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == [name]


def test_samples_queries(store: Store) -> None:
    store.upsert_samples(cpu_rows("i-a", 6) + [("i-a", "memory", T0 + 300 * k, 50.0 + k) for k in range(6)] + cpu_rows("i-b", 3, value=70))
    window = store.samples("i-a", start=T0 + 600, end=T0 + 1200)
    assert {m: ts.tolist() for m, (ts, _) in window.items()} == {"cpu": [T0 + 600, T0 + 900, T0 + 1200], "memory": [T0 + 600, T0 + 900, T0 + 1200]}
    assert list(store.samples("i-a", metrics=["memory"])) == ["memory"]
    assert store.samples("i-none") == {}
    assert store.latest_values() == {"i-a": (T0 + 1500, 15.0), "i-b": (T0 + 600, 72.0)}
    assert store.latest_values("memory") == {"i-a": (T0 + 1500, 55.0)}
    recent = store.recent_series(T0 + 900)
    assert recent["i-a"][0].tolist() == [T0 + 900, T0 + 1200, T0 + 1500] and recent["i-a"][1].dtype == float
    assert store.newest_sample_ts("i-b") == T0 + 600 and store.newest_sample_ts("i-b", "memory") is None


def test_retention_prunes_only_older_samples(store: Store) -> None:
    store.upsert_samples(cpu_rows("i-a", 10) + cpu_rows("i-b", 10))
    cutoff = T0 + 300 * 4
    assert store.prune(cutoff) == 8
    assert store.sample_count() == 12
    assert min(int(r[0]) for r in store.query("SELECT ts FROM samples")) == cutoff  # the cutoff itself is kept
    assert store.prune(cutoff) == 0


# ---- instances, meta, heartbeats ---------------------------------------------------
def test_instances_first_and_last_seen(store: Store) -> None:
    store.upsert_instance("i-a", "web-1", 80, T0)
    store.upsert_instance("i-a", None, 70, T0 + 600)  # no name this time: the old one stays
    store.upsert_instance("i-a", "web-one", 70, T0 + 300)  # an older sighting does not move last_seen back
    store.upsert_instance("i-b", None, 90, T0 + 60)
    assert store.instance("i-a") == Instance("i-a", "web-one", 70.0, T0, T0 + 600)
    assert store.instances() == [store.instance("i-a"), Instance("i-b", None, 90.0, T0 + 60, T0 + 60)]
    assert store.instance("i-none") is None


def test_meta_values(store: Store) -> None:
    assert store.get_meta("demo_anchor") is None
    store.set_meta("demo_anchor", "123")
    store.set_meta("demo_anchor", "456")
    assert store.get_meta("demo_anchor") == "456"


def test_heartbeats_record_the_last_run_of_each_job(store: Store) -> None:
    store.record_heartbeat("ingest", T0, 1.23456, None, "6 instances")
    store.record_heartbeat("retrain", T0, 2.0, "ValueError: bad")
    store.record_heartbeat("ingest", T0 + 300, 0.5, "OSError: down")
    beats = store.heartbeats()
    assert sorted(beats) == ["ingest", "retrain"]
    ingest = dict(beats["ingest"])
    assert ingest == {"job": "ingest", "started_at": T0 + 300, "finished_at": T0 + 300, "duration_seconds": 0.5, "ok": 0,
                      "error": "OSError: down", "detail": None, "state": "failed", "counts": "{}"}
    assert beats["retrain"]["ok"] == 0
    store.record_heartbeat("ingest", T0 + 600, 1.23456, None, "ok")
    assert (store.heartbeats()["ingest"]["ok"], store.heartbeats()["ingest"]["duration_seconds"]) == (1, 1.235)
    store.record_heartbeat("retrain", T0 + 600, 3.0, "1 problem(s): i-1: boom", "retrained 1/2", "degraded", {"trained": 1, "failed": 1})
    degraded = store.heartbeats()["retrain"]
    assert (degraded["ok"], degraded["state"], json.loads(degraded["counts"])) == (0, "degraded", {"trained": 1, "failed": 1})


# ---- training runs, scores, forecasts ----------------------------------------------
def a_run(instance: str = "i-a", champion: str | None = "naive") -> dict:
    return {"instance_id": instance, "started_at": T0, "finished_at": T0 + 30, "train_start": T0 - 86_400, "train_end": T0,
            "points": 288, "champion": champion, "model_dir": f"models/{instance}/1"}


def test_training_runs_store_nan_scores_as_null(store: Store) -> None:
    scores = [
        {"model": "naive", "status": "ok", "mape": 5.5, "smape": np.float64(5.0), "mase": 1.2, "rmse": 3.0, "coverage": 0.9, "fit_seconds": 0.01, "predict_seconds": 0.001},
        {"model": "lstm", "status": "skipped", "reason": "too little history", "mape": math.nan, "mase": np.float64("nan"), "rmse": math.inf},
    ]
    backtest = [("naive", T0 - 3600, T0 - 3300 + 300 * k, 10.0, 11.0, 9.0, 13.0) for k in range(3)]
    run_id = store.record_training_run(a_run(), scores, backtest)
    rows = {r["model"]: dict(r) for r in store.scores(run_id=run_id)}
    assert rows["lstm"]["mape"] is None and rows["lstm"]["mase"] is None and rows["lstm"]["rmse"] is None and rows["lstm"]["smape"] is None
    assert rows["lstm"]["reason"] == "too little history" and rows["naive"]["smape"] == 5.0 and rows["naive"]["mase"] == 1.2
    assert store.query("SELECT COUNT(*) FROM model_scores WHERE mape != mape")[0][0] == 0  # no NaN stored anywhere
    assert [r["ts"] for r in store.backtest_points(run_id, "naive")] == [T0 - 3300 + 300 * k for k in range(3)]
    second = store.record_training_run(a_run(champion="linear"), scores[:1], [])
    assert store.latest_runs()["i-a"]["run_id"] == second and store.latest_runs()["i-a"]["champion"] == "linear"
    assert [r["run_id"] for r in store.training_runs("i-a")] == [second, run_id]
    assert [r["run_id"] for r in store.scores("i-a")] == [second]


def test_a_training_run_with_a_bad_row_is_not_half_stored(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.record_training_run(a_run(), [{"model": "naive", "status": "ok"}], [(None, T0, T0 + 300, 1.0, 1.0, 0.0, 2.0)])
    assert store.query("SELECT COUNT(*) FROM training_runs")[0][0] == 0
    assert store.query("SELECT COUNT(*) FROM model_scores")[0][0] == 0


def test_nan_backtest_points_are_left_out_and_the_run_kept(store: Store) -> None:
    points = [("naive", T0, T0 + 300, 1.0, 1.0, 0.0, 2.0), ("naive", T0, T0 + 600, None, 1.0, 0.0, 2.0), ("naive", T0, T0 + 900, 1.0, math.nan, 0.0, 2.0)]
    run_id = store.record_training_run(a_run(), [{"model": "naive", "status": "ok"}], points)
    assert [r["ts"] for r in store.backtest_points(run_id)] == [T0 + 300]


def test_only_the_newest_run_of_each_instance_keeps_its_backtest(store: Store) -> None:
    point = [("naive", T0, T0 + 300, 1.0, 1.0, 0.0, 2.0)]
    old_a = store.record_training_run(a_run("i-a"), [], point)
    only_b = store.record_training_run(a_run("i-b"), [], point)
    new_a = store.record_training_run(a_run("i-a"), [], point)
    assert [len(store.backtest_points(r)) for r in (old_a, new_a, only_b)] == [0, 1, 1]
    assert len(store.training_runs("i-a")) == 2  # the champion's history stays


def forecast_row(run_id: int, model: str, champion: bool, made_at: int, level: float) -> dict:
    ts = [T0 + 300 * k for k in range(1, 4)]
    return {"instance_id": "i-a", "run_id": run_id, "model": model, "is_champion": champion, "made_at": made_at, "origin_ts": T0,
            "timestamps": np.array(ts, dtype=np.int64), "mean": np.array([level, level + 1.123456, level + 2]),
            "lower": [level - 5] * 3, "upper": [level + 5] * 3}


def test_forecasts_round_trip_and_the_latest_wins(store: Store) -> None:
    run_id = store.record_training_run(a_run(), [], [])
    store.record_forecasts([forecast_row(run_id, "naive", True, T0, 40.0), forecast_row(run_id, "arima", False, T0, 50.0)])
    store.record_forecasts([forecast_row(run_id, "naive", True, T0 + 300, 60.0), forecast_row(run_id, "arima", False, T0 + 300, 70.0)])
    champion = store.latest_forecasts("i-a")
    assert len(champion) == 1
    latest = champion[0]
    assert (latest["model"], latest["is_champion"], latest["made_at"]) == ("naive", 1, T0 + 300)
    assert latest["timestamps"] == [T0 + 300, T0 + 600, T0 + 900] and all(isinstance(t, int) for t in latest["timestamps"])
    assert latest["mean"] == [60.0, 61.1235, 62.0] and latest["lower"] == [55.0] * 3 and latest["upper"] == [65.0] * 3
    every = store.latest_forecasts(champion_only=False)
    assert [(f["model"], f["mean"][0]) for f in every] == [("arima", 70.0), ("naive", 60.0)]
    assert store.prune_forecasts(T0 + 300) == 2
    assert len(store.latest_forecasts(champion_only=False)) == 2


# ---- concurrency -------------------------------------------------------------
def test_readers_are_not_blocked_while_a_write_transaction_is_open(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    writer = Store(db)
    writer.upsert_samples(cpu_rows("i-a", 5))
    inside, release = threading.Event(), threading.Event()

    def long_write() -> None:
        with writer.transaction():
            writer.upsert_samples(cpu_rows("i-b", 500))
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=long_write)
    thread.start()
    try:
        assert inside.wait(10)
        with Store(db, readonly=True, timeout=0.2) as reader:  # a short busy timeout: a lock would raise
            assert reader.sample_count() == 5  # the committed state, not the open transaction
        with closing(sqlite3.connect(db, timeout=0.2)) as plain:
            assert plain.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 5
    finally:
        release.set()
        thread.join(10)
    with Store(db, readonly=True) as reader:
        assert reader.sample_count() == 505
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
        assert reader.schema_version == len(MIGRATIONS) and reader.integrity_ok()
