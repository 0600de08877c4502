"""Every wait of the worker is bounded: an AWS endpoint that never answers (or a closed port) costs one short,
one-line failure; a job past its deadline is recorded as failed; SIGTERM stops a stuck worker within seconds."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from forecasting.settings import load_settings
from forecasting.store import Store
from tests.fixtures.services import MotoServer, SilentServer, free_port
from tests.fixtures.stores import environ_without_settings
from tests.fixtures.waiting import wait_until
from worker import Worker

ROOT = Path(__file__).resolve().parents[1]
INSTANCE = "i-0123456789abcdef0"


def cloudwatch_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """A CloudWatch worker on ``endpoint`` with fake credentials and a database in tmp_path."""
    env = environ_without_settings()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_CLOUDWATCH", "AWS_ENDPOINT_URL_EC2"):
        env.pop(name, None)
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        HEADROOM_SOURCE="cloudwatch",
        HEADROOM_INSTANCES=INSTANCE,
        HEADROOM_DB=str(tmp_path / "headroom.db"),
        HEADROOM_CONFIG=str(tmp_path / "none.toml"),
        **extra,
    )
    return env


def heartbeat(db: Path, job: str) -> tuple[int, str, str]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT ok, state, error FROM heartbeats WHERE job = ?", (job,)).fetchone()


@pytest.mark.parametrize("kind", ["silent", "closed"])
def test_an_aws_endpoint_that_never_answers_or_refuses_costs_one_short_one_line_failure(
    tmp_path: Path, silent_server: SilentServer, kind: str
) -> None:
    endpoint = silent_server if kind == "silent" else f"http://127.0.0.1:{free_port()}"
    env = cloudwatch_env(tmp_path, endpoint, HEADROOM_AWS_TIMEOUT="1", HEADROOM_AWS_MAX_ATTEMPTS="1")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "worker.py"), "--once", "--only", "ingest"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - started < 30, done.stderr
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    failed = [line for line in done.stderr.splitlines() if "ingest failed after" in line]
    assert len(failed) == 1 and "CloudWatchError: cloudwatch GetMetricData failed" in failed[0]
    ok, state, error = heartbeat(tmp_path / "headroom.db", "ingest")
    assert (ok, state) == (0, "failed") and error.startswith("CloudWatchError") and "\n" not in error


def test_a_job_past_its_deadline_is_recorded_failed_and_not_started_twice(
    tmp_path: Path, clean_env: Path, aws: MotoServer, silent_server: SilentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", silent_server)  # boto3 waits up to 30 s per read: longer than the deadline
    settings = load_settings(
        db=tmp_path / "headroom.db",
        source="cloudwatch",
        instances=[INSTANCE],
        aws_timeout=30,
        aws_max_attempts=1,
        job_timeout=0.03,
    )  # 1.8 s
    with Store(settings.db) as store:
        worker = Worker(settings, store)
        started = time.monotonic()
        assert worker.run_job("ingest") is False  # the deadline is real time: it bounds a real wait on the endpoint
        assert time.monotonic() - started < 5
        ok, state, error = heartbeat(settings.db, "ingest")
        assert (ok, state) == (0, "failed") and "did not finish within 0.03 min (HEADROOM_JOB_TIMEOUT)" in error
        assert worker.busy() == ["ingest"]  # the overrunning thread is left to end on its own ...
        assert worker.run_job("ingest") is False  # ... and no second one is started beside it
        assert "still running" in heartbeat(settings.db, "ingest")[2]
        assert worker.run_job("digest") is True  # the other jobs still run


def test_sigterm_stops_a_worker_stuck_on_a_silent_endpoint_within_seconds(tmp_path: Path, silent_server: SilentServer) -> None:
    env = cloudwatch_env(tmp_path, silent_server, HEADROOM_AWS_TIMEOUT="120")
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:  # once the endpoint holds a connection, the ingest job is waiting on it
            assert wait_until(lambda: silent_server.accepted > 0 or process.poll() is not None, 60), log_path.read_text()
            assert process.poll() is None, log_path.read_text()
            process.terminate()
            stopped = time.monotonic()
            assert process.wait(timeout=20) == 0
            assert time.monotonic() - stopped < 10
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log_path.read_text()
    assert (
        "received SIGTERM" in text and "ingest failed after" in text and "Stopped: stopped while ingest was still running" in text
    )
    assert text.rstrip().endswith("worker stopped") and "Traceback" not in text
