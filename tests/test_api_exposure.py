"""The API is closed when exposed: no start on a non-loopback address without a token (unless meant to be open),
403 for requests that arrive on one, docs and /health details behind the token, one line for a bad setting,
hostile ids refused, no 500 while the database is being created or for an export ending in year 9999."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from forecasting.api import create_app
from tests.fixtures.api import ROOT, api_settings
from tests.fixtures.services import free_port
from tests.fixtures.stores import environ_without_settings

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


def client(app: Any, host: str = "127.0.0.1") -> httpx.AsyncClient:
    """httpx against the ASGI app; ``host`` becomes the local address the request arrived on (scope["server"])."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}", timeout=60)


def api_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = environ_without_settings()
    env.update(HEADROOM_DB=str(tmp_path / "h.db"), HEADROOM_CONFIG=str(tmp_path / "none.toml"), **extra)
    return env


def wait_for(url: str, process: subprocess.Popen[str], headers: dict[str, str] | None = None) -> int:
    """The status of ``url`` once the server answers (or the process ended)."""
    for _ in range(300):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.1)
    raise AssertionError("the server never answered")


def test_the_launcher_refuses_a_non_loopback_address_without_a_token(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "forecasting", "api"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=api_env(tmp_path, HEADROOM_API_HOST="0.0.0.0", HEADROOM_API_PORT=str(free_port())),
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "headroom api: refusing to serve on 0.0.0.0, a non-loopback address, without HEADROOM_API_TOKEN: set a token, "
        "or HEADROOM_API_OPEN=true if anyone who reaches it may read and upload"
    ]


@pytest.mark.parametrize("allowed_by", ["token", "open"])
def test_the_launcher_serves_an_exposed_address_with_a_token_or_when_meant_open(tmp_path: Path, allowed_by: str) -> None:
    port = free_port()
    extra = {"HEADROOM_API_TOKEN": TOKEN} if allowed_by == "token" else {"HEADROOM_API_OPEN": "true"}
    process = subprocess.Popen(
        [sys.executable, "-m", "forecasting", "api"],
        cwd=ROOT,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=api_env(tmp_path, HEADROOM_API_HOST="0.0.0.0", HEADROOM_API_PORT=str(port), **extra),
    )
    try:
        assert wait_for(f"http://127.0.0.1:{port}/health", process) == 200
        assert wait_for(f"http://127.0.0.1:{port}/openapi.json", process) == (401 if allowed_by == "token" else 200)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_plain_uvicorn_with_a_bad_setting_or_an_exposed_host_stops_in_one_line(tmp_path: Path) -> None:
    for extra, expected in (
        ({"HEADROOM_API_TIMEOUT": "-1"}, "invalid setting HEADROOM_API_TIMEOUT"),
        ({"HEADROOM_API_HOST": "0.0.0.0"}, "refusing to serve on 0.0.0.0"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "uvicorn", "forecasting.api:app", "--port", str(free_port())],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=api_env(tmp_path, **extra),
        )
        assert done.returncode != 0
        assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) <= 4, done.stderr  # uvicorn's own lines around the one of ours


async def test_a_request_that_arrives_on_a_non_loopback_address_without_a_token_gets_403(worker_db: Path) -> None:
    app = create_app(api_settings(worker_db))
    async with client(app, "10.1.2.3") as exposed, client(app, "127.0.0.1") as local:
        for path in ("/health", "/predictions", "/docs", "/openapi.json"):
            refused = await exposed.get(path)
            assert refused.status_code == 403 and "HEADROOM_API_TOKEN" in refused.json()["detail"]
        assert (await local.get("/predictions")).status_code == 200
        proxied = await local.get("/predictions", headers={"X-Forwarded-For": "203.0.113.9"})  # a proxy on this machine
        assert proxied.status_code == 403 and "forwarded by a proxy" in proxied.json()["detail"]
    async with client(create_app(api_settings(worker_db, api_open=True)), "10.1.2.3") as meant_open:
        assert (await meant_open.get("/predictions")).status_code == 200
    async with client(create_app(api_settings(worker_db, api_token=TOKEN)), "10.1.2.3") as with_token:
        assert (await with_token.get("/predictions", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
        assert (
            await with_token.get("/predictions", headers={"Authorization": f"Bearer {TOKEN}", "Forwarded": "for=1.2.3.4"})
        ).status_code == 200


async def test_health_details_and_job_errors_only_with_the_token(worker_db: Path) -> None:
    async with client(create_app(api_settings(worker_db, api_token=TOKEN))) as session:
        anonymous = (await session.get("/health")).json()
        full = (await session.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})).json()
    assert anonymous["details"] is False and anonymous["jobs"] is None and anonymous["instances"] is None
    assert anonymous["status"] == full["status"] and full["details"] is True
    assert set(full["jobs"]) == {"ingest", "retrain", "forecast", "digest"}
    assert {job["state"] for job in full["jobs"].values()} == {"ok"} and full["jobs"]["retrain"]["counts"]["trained"] == 3


@pytest.mark.parametrize("hostile", ["../etc", "i-0abc\n", "i-a/b", "a" * 10_000, "i-\x00", " i-1"])
async def test_hostile_instance_ids_are_refused(worker_db: Path, hostile: str) -> None:
    async with client(create_app(api_settings(worker_db))) as session:
        for path in ("/predictions", "/compare", "/alerts"):
            answer = await session.get(path, params={"instance": hostile})
            assert answer.status_code == 422, (path, answer.text)
            assert "instance" in answer.json()["detail"]


async def test_a_database_still_being_created_answers_empty_not_500(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with closing(sqlite3.connect(db)) as conn:  # the file exists, its tables do not yet (the worker is migrating)
        conn.execute("PRAGMA journal_mode = WAL")
    async with client(create_app(api_settings(db))) as session:
        health = await session.get("/health")
        instances = await session.get("/instances")
    assert health.status_code == 200 and health.json()["status"] == "empty"
    assert instances.status_code == 200 and instances.json()["instances"] == []


async def test_an_export_ending_near_year_9999_gets_422(tmp_path: Path) -> None:
    end = 253_402_300_799 // 300 * 300
    stamps = list(range(end - 86_400, end, 300))
    result = {
        "Id": "cpu",
        "Label": "CPUUtilization",
        "StatusCode": "Complete",
        "Values": [40.0 + i % 7 for i in range(len(stamps))],
        "Timestamps": [datetime.fromtimestamp(t, UTC).isoformat() for t in stamps],
    }
    async with client(create_app(api_settings(tmp_path / "none.db"))) as session:
        answer = await session.post("/predict?model=naive", content=json.dumps({"MetricDataResults": [result]}))
    assert answer.status_code == 422 and "9999" in answer.json()["detail"]
