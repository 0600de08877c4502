"""The worker: one ingest on the demo feed, no duplicates on a re-run, failing jobs logged not fatal, cycles on the
cadence of its clock (a manual one here: no test waits for time to pass), clean stop on signals."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from forecasting.clock import DAY, ManualClock
from forecasting.settings import load_settings
from forecasting.sources.demo import DemoSource
from forecasting.store import Store
from tests.fixtures.stores import environ_without_settings
from tests.fixtures.waiting import wait_until
from worker import JobOutcome, Worker

ROOT = Path(__file__).resolve().parents[1]
P = 300
NOW = 1_800_000_000  # where the in-process worker's manual clock starts (on the 5-minute grid)


def worker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A demo worker on a database in tmp_path, no headroom.toml, no HEADROOM_* from outside."""
    env = environ_without_settings()
    env.update(
        HEADROOM_SOURCE="demo", HEADROOM_DB=str(tmp_path / "headroom.db"), HEADROOM_CONFIG=str(tmp_path / "none.toml"), **extra
    )
    return env


def series(db: Path) -> dict[tuple[str, str], list[tuple[int, float]]]:
    with closing(sqlite3.connect(db)) as conn:
        out: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for iid, metric, ts, value in conn.execute("SELECT instance_id, metric, ts, value FROM samples ORDER BY 1, 2, 3"):
            out.setdefault((iid, metric), []).append((ts, value))
        return out


def test_once_only_ingest_fills_the_demo_fleet_and_a_rerun_duplicates_nothing(tmp_path: Path) -> None:
    env, db = worker_env(tmp_path), tmp_path / "headroom.db"
    command = [sys.executable, str(ROOT / "worker.py"), "--once", "--only", "ingest"]
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    demo = DemoSource(6)
    expected_series = {(i.instance_id, m) for i in demo.list_instances() for m in demo.metrics_of(i.instance_id)}
    before = series(db)
    assert set(before) == expected_series and len(expected_series) == 6 * 4 - 1  # the cache has no memory
    assert {len(points) for points in before.values()} == {14 * DAY // P}  # the training window, backfilled
    ingest_lines = [line for line in first.stderr.splitlines() if "headroom.worker: ingest:" in line]
    assert (
        len(ingest_lines) == 1
        and f"6 instances, {14 * 288 * 23} datapoints" in ingest_lines[0]
        and ingest_lines[0].endswith(" s)")
    )

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    after = series(db)
    assert set(after) == expected_series
    for key, points in after.items():
        stamps = [ts for ts, _ in points]
        assert stamps == list(range(stamps[0], stamps[-1] + P, P))  # one point per period, no gap, no duplicate
        now_stored, was_stored = dict(points), dict(before[key])
        assert {ts: now_stored[ts] for ts in was_stored} == was_stored  # the re-read overlap changed nothing
        assert stamps[-1] - before[key][-1][0] <= 2 * P  # at most the buckets that wall time added
    with closing(sqlite3.connect(db)) as conn:
        instances = conn.execute("SELECT instance_id, name, threshold FROM instances ORDER BY 1").fetchall()
        beat = conn.execute("SELECT ok, error, detail FROM heartbeats WHERE job = 'ingest'").fetchone()
        anchor = conn.execute("SELECT value FROM meta WHERE key = 'demo_anchor'").fetchone()
    assert instances == [(i.instance_id, i.name, 80.0) for i in demo.list_instances()]
    assert beat[0] == 1 and beat[1] is None and beat[2].startswith("6 instances")
    assert int(anchor[0]) % P == 0


@pytest.fixture()
def worker(tmp_path: Path, clean_env: Path):
    """An in-process Worker on the demo feed (two instances, one day of backfill), a real store and a manual clock at NOW."""
    settings = load_settings(db=tmp_path / "headroom.db", demo_instances=2, train_days=1, models=["naive"])
    with Store(settings.db) as store:
        yield Worker(settings, store, ManualClock(NOW))


def test_a_failing_job_is_logged_recorded_and_not_raised(worker: Worker, caplog: pytest.LogCaptureFixture) -> None:
    worker.store.jobs.set_meta("demo_anchor", "not-a-time")  # the demo source cannot be built from this
    with caplog.at_level(logging.INFO, logger="headroom.worker"):
        assert worker.run_job("ingest") is False
    beat = worker.store.jobs.heartbeats()["ingest"]
    assert not beat.ok and beat.error.startswith("ValueError: invalid literal for int()") and beat.detail is None
    assert "\n" not in beat.error
    assert any(r.levelno == logging.ERROR and r.getMessage().startswith("ingest failed after") for r in caplog.records)
    assert worker.store.samples.count() == 0

    worker.store.jobs.set_meta("demo_anchor", str(NOW))  # fixed: the next turn works
    assert worker.run_job("ingest") is True
    beat = worker.store.jobs.heartbeats()["ingest"]
    assert beat.ok and beat.error is None and worker.store.samples.count() == 288 * 2 * 4  # web-1 and api-1, 4 metrics, one day
    assert beat.started_at == NOW  # the worker's clock, not the wall clock


def test_a_job_that_raises_anything_still_returns_and_the_cycle_goes_on(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def broken() -> str:
        calls.append("ingest")
        raise OSError("disk on fire\nsecond line")

    monkeypatch.setattr(worker, "ingest", broken)
    assert worker.run_once("ingest") is False
    assert worker.store.jobs.heartbeats()["ingest"].error == "OSError: disk on fire"  # one line
    assert worker.run_once() is False  # the full cycle: the other jobs still get their turn
    assert calls == ["ingest", "ingest"]
    assert set(worker.store.jobs.heartbeats()) == {"ingest", "retrain", "forecast", "digest"}


def test_the_loop_runs_a_cycle_every_ingest_every_minutes_and_retries_a_failing_ingest_until_it_works(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    worker.store.jobs.set_meta("demo_anchor", "broken")
    caplog.set_level(logging.INFO, logger="headroom.worker")
    turns: list[int] = []
    ingest = worker.ingest

    def ingest_until_it_works() -> JobOutcome:
        turns.append(worker.now())
        if len(turns) == 4:
            worker.store.jobs.set_meta("demo_anchor", str(NOW))  # fixed: this turn works
        outcome = ingest()  # raises while the anchor is broken
        worker.stop.set()  # the first turn that works ends the test
        return outcome

    worker.ingest = ingest_until_it_works  # type: ignore[method-assign]
    worker.run_forever()  # returns once stopped; the manual clock makes every wait instant
    assert turns == [NOW, NOW + 300, NOW + 600, NOW + 900]  # one cycle every ingest_every (5) minutes of the clock
    assert sum(r.getMessage().startswith("ingest failed") for r in caplog.records) == 3  # retried at each turn
    beat = worker.store.jobs.heartbeats()["ingest"]
    assert (beat.ok, beat.started_at) == (True, NOW + 900) and worker.store.samples.count() > 0
    assert any(r.getMessage() == "worker stopped" for r in caplog.records)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_forever_loop_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    env = worker_env(
        tmp_path, HEADROOM_DEMO_INSTANCES="2", HEADROOM_TRAIN_DAYS="1", HEADROOM_MODELS="naive", HEADROOM_WORKERS="1"
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:  # the first cycle ends with the digest job; then the loop waits five minutes for the next
            assert wait_until(lambda: "headroom.worker: digest:" in log_path.read_text() or process.poll() is not None, 180)
            assert process.poll() is None, log_path.read_text()
            process.send_signal(signum)
            stopped = time.monotonic()
            assert process.wait(timeout=30) == 0
            assert time.monotonic() - stopped < 15  # the wait for the next cycle ends at once
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log_path.read_text()
    assert f"received {signum.name}: finishing the current job" in text and text.rstrip().endswith("worker stopped")
    assert "Traceback" not in text.split(f"received {signum.name}")[1]
    with closing(sqlite3.connect(tmp_path / "headroom.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(DISTINCT instance_id) FROM samples").fetchone()[0] == 2


@pytest.mark.parametrize("kind", ["a folder", "a text file"])
def test_a_database_path_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "place"
    if kind == "a folder":
        target.mkdir()
    else:
        target.write_text("these are my notes, not a database\n" * 10)
    env = {**worker_env(tmp_path), "HEADROOM_DB": str(target)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "worker.py"), "--once", "--only", "ingest"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()] and done.stderr.startswith(
        f"headroom: cannot open the database HEADROOM_DB={target}: "
    )
    assert kind == "a folder" or target.read_text().startswith("these are my notes")  # left alone


def test_each_cycle_trains_a_new_instance_at_once_and_leaves_fresh_models_alone(worker: Worker) -> None:
    worker.settings = worker.settings.model_copy(update={"workers": 1})
    assert worker.run_once() is True
    first = {iid: run.run_id for iid, run in worker.store.runs.latest().items()}
    assert len(first) == 2 and "retrained 2/2" in worker.store.jobs.heartbeats()["retrain"].detail
    worker.settings = worker.settings.model_copy(update={"demo_instances": 3})  # a third instance appears
    assert worker.run_once() is True
    second = {iid: run.run_id for iid, run in worker.store.runs.latest().items()}
    assert len(second) == 3 and {iid: second[iid] for iid in first} == first  # only the newcomer was trained
    assert "retrained 1/1" in worker.store.jobs.heartbeats()["retrain"].detail
    assert {f.instance_id for f in worker.store.forecasts.latest()} == set(second)


def garble_champion(store: Store, instance_id: str) -> str:
    """Overwrite the champion's saved files of an instance's latest run with bytes that are no model."""
    run = store.runs.latest()[instance_id]
    for path in Path(run.model_dir, run.champion).iterdir():
        path.write_bytes(b"\x00garbled\xff" * 10)
    return run.champion


def test_a_garbled_champion_degrades_health_is_stood_in_for_and_retrained_at_once(worker: Worker) -> None:
    from forecasting.api_models import build_health
    from forecasting.forecast import CACHE

    worker.settings = worker.settings.model_copy(update={"workers": 1, "models": ["naive", "linear"], "ingest_every": 5})
    assert worker.run_once() is True
    runs = worker.store.runs.latest()
    broken, healthy = sorted(runs)
    champion = garble_champion(worker.store, broken)
    CACHE.clear()  # as a freshly started worker: the files are read again

    assert worker.run_job("forecast") is True  # it ran ...
    beat = worker.store.jobs.heartbeats()["forecast"]
    assert beat.state == "degraded" and not beat.ok and f"{broken}: champion {champion} unusable" in beat.error
    assert beat.counts["stand_ins"] == 1
    health = build_health(worker.store, worker.settings, worker.clock.now())
    assert health.status == "degraded" and health.jobs["forecast"].state == "degraded"
    stand_in = worker.store.forecasts.latest(broken)[0]
    assert stand_in.model != champion and worker.store.jobs.retrain_requests() == {broken}

    assert worker.run_once() is True  # the next cycle retrains it at once, not in retrain_every hours
    after = worker.store.runs.latest()
    assert after[broken].run_id > runs[broken].run_id and after[healthy].run_id == runs[healthy].run_id
    assert worker.store.jobs.retrain_requests() == set() and worker.store.jobs.heartbeats()["forecast"].state == "ok"
    assert build_health(worker.store, worker.settings, worker.clock.now()).status == "ok"


def test_a_retrain_that_fails_for_one_instance_is_degraded_with_counts(worker: Worker) -> None:
    from forecasting.ids import folder_name

    worker.settings = worker.settings.model_copy(update={"workers": 1})
    assert worker.run_job("ingest") is True
    broken = worker.store.samples.instances()[0].instance_id
    worker.settings.models_dir.mkdir(parents=True, exist_ok=True)
    (worker.settings.models_dir / folder_name(broken)).write_text("a file where its model folder should go")
    assert worker.run_job("retrain") is True
    beat = worker.store.jobs.heartbeats()["retrain"]
    assert (beat.state, beat.ok) == ("degraded", False) and beat.error.startswith(f"1 problem(s): {broken}: ")
    assert beat.counts == {"due": 2, "trained": 1, "failed": 1}
