"""The JSON API over a store filled by the worker: every endpoint's answers and errors, auth, limits, a real server."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import forecasting
from forecasting.api import create_app
from forecasting.models import MODEL_NAMES
from forecasting.sources.export import ExportError, parse_export
from forecasting.store import Store
from tests.fixtures.api import (  # noqa: F401
    FAST_MODELS,
    ROOT,
    SERVER_TOKEN,
    api_settings,
    demo_export,
    export_body,
    server,
)

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"
READ_PATHS = ["/instances", "/predictions", "/compare", "/alerts"]


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


def client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    """httpx against the ASGI app in process (server errors come back as responses, as from a real server)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=120, **kwargs)


@pytest.fixture()
async def api(worker_db: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app on the worker-filled store, without a token."""
    async with client(create_app(api_settings(worker_db))) as session:
        yield session


def seconds(text: str) -> int:
    """An ISO 8601 UTC answer back to unix seconds (and it must say UTC with a Z)."""
    assert text.endswith("Z"), text
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


# ---- read endpoints -----------------------------------------------------------------
async def test_health_reports_version_data_age_and_worker_jobs(api: httpx.AsyncClient, worker_db: Path) -> None:
    answer = (await api.get("/health")).json()
    with Store(worker_db) as store:
        newest = max(store.samples.newest_ts(i.instance_id) for i in store.samples.instances())
        jobs = store.jobs.heartbeats()
    assert answer["version"] == forecasting.__version__
    assert answer["status"] == "ok" and answer["instances"] == 3
    assert seconds(answer["newest_sample_at"]) == newest
    assert abs(answer["data_age_seconds"] - (time.time() - newest)) < 30
    assert set(answer["jobs"]) == set(jobs) and "ingest" in jobs
    assert answer["jobs"]["ingest"]["ok"] is True
    assert seconds(answer["jobs"]["ingest"]["started_at"]) == jobs["ingest"].started_at


async def test_health_says_empty_then_degraded(tmp_path: Path) -> None:
    app = create_app(api_settings(tmp_path / "h.db"))
    async with client(app) as session:
        assert (await session.get("/health")).json()["status"] == "empty"
        assert (await session.get("/instances")).json()["instances"] == []
        assert not (tmp_path / "h.db").exists()  # the API never creates the store: the worker does
        with Store(tmp_path / "h.db") as store:
            store.samples.upsert_instance("i-0abc12345678", "web", 80.0, int(time.time()))
            store.samples.upsert([("i-0abc12345678", "cpu", int(time.time()) - 60, 12.0)])
            store.jobs.record_heartbeat("ingest", time.time() - 5, 1.0, "ThrottlingException: rate exceeded")
        answer = (await session.get("/health")).json()
    assert answer["status"] == "degraded"
    assert answer["jobs"]["ingest"] == {**answer["jobs"]["ingest"], "ok": False, "error": "ThrottlingException: rate exceeded"}


async def test_instances_list_champion_and_open_alert(api: httpx.AsyncClient, worker_db: Path) -> None:
    rows = (await api.get("/instances")).json()["instances"]
    with Store(worker_db) as store:
        known = {i.instance_id: i for i in store.samples.instances()}
        runs = store.runs.latest()
        open_alerts = {a.instance_id: a for a in reversed(store.alerts.open())}
    assert [r["instance_id"] for r in rows] == sorted(known)
    for row in rows:
        iid = row["instance_id"]
        assert row["threshold"] == known[iid].threshold and row["name"] == known[iid].name
        assert row["champion"] == runs[iid].champion and row["champion"] is not None
        alert = open_alerts.get(iid)
        assert (row["open_alert"] or {}).get("alert_id") == (alert.alert_id if alert else None)
    assert any(row["open_alert"] for row in rows)


async def test_predictions_are_the_latest_champion_forecasts(api: httpx.AsyncClient, worker_db: Path) -> None:
    answer = (await api.get("/predictions")).json()["predictions"]
    with Store(worker_db) as store:
        stored = {f.instance_id: f for f in store.forecasts.latest()}
        runs = store.runs.latest()
    assert len(answer) == 3 and {p["instance_id"] for p in answer} == set(stored)
    for pred in answer:
        f = stored[pred["instance_id"]]
        assert pred["model"] == f.model == runs[pred["instance_id"]].champion
        assert tuple(seconds(t) for t in pred["timestamps"]) == f.timestamps
        assert (tuple(pred["mean"]), tuple(pred["lower"]), tuple(pred["upper"])) == (f.mean, f.lower, f.upper)
        assert seconds(pred["made_at"]) == f.made_at and seconds(pred["origin_at"]) == f.origin_ts
        assert all(lo <= hi for lo, hi in zip(pred["lower"], pred["upper"], strict=True))
    one = (await api.get("/predictions", params={"instance": answer[1]["instance_id"]})).json()["predictions"]
    assert one == [answer[1]]


async def test_compare_gives_scores_and_champion(api: httpx.AsyncClient, worker_db: Path) -> None:
    iid = "i-0de00000000000002"
    answer = (await api.get("/compare", params={"instance": iid})).json()["comparisons"]
    with Store(worker_db) as store:
        run = store.runs.latest()[iid]
        stored = {score.model: asdict(score) for score in store.runs.scores(run_id=run.run_id)}
    assert len(answer) == 1 and answer[0]["champion"] == run.champion and answer[0]["run_id"] == run.run_id
    scores = {s["model"]: s for s in answer[0]["scores"]}
    assert set(scores) == set(stored) == set(MODEL_NAMES)
    for model, score in scores.items():
        for key in ("status", "mape", "smape", "mase", "rmse", "coverage", "fit_seconds"):
            assert score[key] == stored[model][key]
        assert score["is_champion"] == (model == run.champion)
    everything = (await api.get("/compare")).json()["comparisons"]
    assert [c["instance_id"] for c in everything] == sorted(store_ids(worker_db)) and answer[0] in everything


async def test_compare_shows_the_realised_accuracy_of_stored_forecasts(worker_db: Path, tmp_path: Path) -> None:
    from forecasting.scoring import CURSOR, realised_scores, score_realised

    db = tmp_path / "copy.db"
    with sqlite3.connect(worker_db) as source, sqlite3.connect(db) as target:
        source.backup(target)  # a copy of the worker's store, so the shared one stays as the other tests expect
    iid, now = "i-0de00000000000002", int(time.time())
    with Store(db) as store:
        ts, cpu = store.samples.series(iid, metrics=["cpu"])["cpu"]
        run = store.runs.latest()[iid]
        origin = int(ts[-13])  # a forecast whose twelve actuals have all arrived, made two hours ago
        store.forecasts.record(
            [
                {
                    "instance_id": iid,
                    "run_id": run.run_id,
                    "model": "naive",
                    "is_champion": False,
                    "made_at": now - 7200,
                    "origin_ts": origin,
                    "timestamps": [int(t) for t in ts[-12:]],
                    "mean": [float(cpu[-13])] * 12,
                    "lower": [0.0] * 12,
                    "upper": [100.0] * 12,
                }
            ]
        )
        store.jobs.set_meta(CURSOR, "0")  # the worker's own pass already moved past two hours ago: score from the start
        score_realised(store, api_settings(db), now)
        expected = realised_scores(store, now, iid)[iid]["naive"]
    async with client(create_app(api_settings(db))) as session:
        answer = (await session.get("/compare", params={"instance": iid})).json()["comparisons"][0]
    realised = {(r["model"], r["window"]): r for r in answer["realised"]}
    assert realised[("naive", "day")]["points"] >= 12 and expected["day"]["points"] == realised[("naive", "day")]["points"]
    for key in ("mape", "mase", "coverage"):
        assert realised[("naive", "day")][key] == pytest.approx(expected["day"][key])
    assert realised[("naive", "week")]["coverage"] == pytest.approx(expected["week"]["coverage"])


def store_ids(db: Path) -> list[str]:
    with Store(db) as store:
        return [i.instance_id for i in store.samples.instances()]


async def test_alerts_filter_by_state_and_instance(api: httpx.AsyncClient, worker_db: Path) -> None:
    with Store(worker_db) as store:
        every = store.alerts.recent()
        opened = store.alerts.open()
    everything = (await api.get("/alerts")).json()["alerts"]
    assert [a["alert_id"] for a in everything] == [a.alert_id for a in every]
    open_only = (await api.get("/alerts", params={"state": "open"})).json()["alerts"]
    assert open_only and [a["alert_id"] for a in open_only] == [a.alert_id for a in opened]
    first = open_only[0]
    assert first["state"] == "open" and seconds(first["crossing_at"]) == opened[0].crossing_ts
    assert first["lead_minutes"] == opened[0].lead_minutes and first["outcome"] == opened[0].outcome
    mine = (await api.get("/alerts", params={"instance": first["instance_id"]})).json()["alerts"]
    assert mine and all(a["instance_id"] == first["instance_id"] for a in mine)


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/predictions?instance=i-0nope", 404, "i-0nope"),
        ("/compare?instance=i-0nope", 404, "not monitored"),
        ("/alerts?instance=i-0nope", 404, "not monitored"),
        ("/alerts?state=closed", 422, "state"),
        ("/alerts?limit=0", 422, "limit"),
        ("/predictions?instance=", 422, "instance"),
        ("/predictions?instanse=i-0de00000000000001", 422, "unknown query parameter 'instanse'"),
        ("/nowhere", 404, "Not Found"),
    ],
)
async def test_bad_requests_get_a_json_error_saying_what(api: httpx.AsyncClient, path: str, status: int, says: str) -> None:
    response = await api.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json" and says in response.json()["detail"]


# ---- auth -----------------------------------------------------------------------------
async def test_token_guards_every_endpoint_and_the_docs_but_health(worker_db: Path) -> None:
    async with client(create_app(api_settings(worker_db, api_token=TOKEN))) as session:
        assert (await session.get("/health")).status_code == 200
        for path in [*READ_PATHS, "/docs", "/redoc", "/openapi.json"]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
                response = await session.get(path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"] == "Bearer" and "token" in response.json()["detail"]
            assert (await session.get(path, headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
        refused = await session.post("/predict?model=naive", content=demo_export(0.5))
        assert refused.status_code == 401
        spec = (await session.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" not in spec["paths"]["/health"]["get"] and spec["paths"]["/compare"]["get"]["security"]


async def test_without_a_token_no_header_is_needed(api: httpx.AsyncClient) -> None:
    for path in READ_PATHS:
        assert (await api.get(path)).status_code == 200


# ---- uploads ----------------------------------------------------------------------------
async def test_predict_forecasts_from_the_end_of_the_export(api: httpx.AsyncClient, export_body: bytes) -> None:  # noqa: F811
    response = await api.post("/predict", params={"model": "naive", "horizon": 6}, content=export_body)
    assert response.status_code == 200, response.text
    answer = response.json()
    last = max(parse_export(export_body).series[answer["instance_id"]]["cpu"][0])
    stamps = [seconds(t) for t in answer["timestamps"]]
    assert answer["model"] == "naive" and answer["horizon"] == 6 and answer["instance_id"] == "i-0123456789abcdef0"
    assert stamps == [last + 300 * k for k in range(1, 7)] and seconds(answer["origin_at"]) == last
    assert all(lo <= m <= hi for lo, m, hi in zip(answer["lower"], answer["mean"], answer["upper"], strict=True))


async def test_auto_picks_the_validation_champion(api: httpx.AsyncClient, export_body: bytes) -> None:  # noqa: F811
    predicted = (await api.post("/predict?model=auto", content=export_body)).json()
    validated = (await api.post("/validate", content=export_body)).json()
    assert {s["model"] for s in validated["scores"]} == set(FAST_MODELS)
    assert validated["champion"] in FAST_MODELS and predicted["model"] == validated["champion"]
    assert len(predicted["timestamps"]) == 12  # the configured horizon
    best = min((s for s in validated["scores"] if s["status"] == "ok"), key=lambda s: s["mase"])
    assert best["model"] == validated["champion"] and best["is_champion"]


@pytest.mark.slow
async def test_validate_trains_a_real_lstm(api: httpx.AsyncClient, export_body: bytes) -> None:  # noqa: F811
    response = await api.post("/validate?model=lstm", content=export_body)
    assert response.status_code == 200, response.text
    (score,) = response.json()["scores"]
    assert score["model"] == "lstm" and score["status"] == "ok" and score["mase"] > 0 and score["fit_seconds"] > 0
    assert response.json()["champion"] == "lstm"


def import_message(tmp_path: Path, content: bytes) -> str:
    """What ``python -m forecasting import`` says about a file (after its 'headroom import: NAME: ' prefix)."""
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    env = {**os.environ, "HEADROOM_DB": str(tmp_path / "import.db"), "HEADROOM_CONFIG": str(tmp_path / "none.toml")}
    done = subprocess.run(
        [sys.executable, "-m", "forecasting", "import", str(bad)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    return done.stderr.strip().removeprefix("headroom import: bad.json: ")


@pytest.mark.parametrize(
    "content",
    [
        b'{"MetricDataResults": [{"Id": "cpu", "Timestamps": ["2025-01-01T00:00:00Z"], "Values": [1, 2]}]}',
        b'{"MetricDataResults": [{"Id": "cpu", "Timestamps": ["yesterday"], "Values": [1]}]}',
        b'{"MetricDataResults": [{"Id": "disk", "Timestamps": [], "Values": []}]}',
        b'{"Metric',
        b"",
    ],
)
async def test_malformed_export_gets_the_import_commands_message(api: httpx.AsyncClient, tmp_path: Path, content: bytes) -> None:
    response = await api.post("/predict", content=content)
    assert response.status_code == 422
    detail = response.json()["detail"]
    with pytest.raises(ExportError) as parsed:
        parse_export(content, name="body")
    assert detail == str(parsed.value)
    assert detail.removeprefix("body: ") == import_message(tmp_path, content)


def two_instances() -> bytes:
    first = json.loads(demo_export(0.5, "i-0aaaaaaaaaaaaaaaa"))["MetricDataResults"]
    second = json.loads(demo_export(0.5, "i-0bbbbbbbbbbbbbbbb", profile=0))["MetricDataResults"]
    return json.dumps({"MetricDataResults": first + second}).encode()


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("?model=prophet", 422, "model"),
        ("?horizon=0", 422, "horizon"),
        ("?horizon=289", 422, "horizon"),
        ("?model=naive", 422, "choose one with ?instance="),
        ("?model=naive&instance=i-0cccccccccccccccc", 422, "is not in the export"),
        ("?model=naive&instance=i-0bbbbbbbbbbbbbbbb", 200, None),
        ("?model=lstm&instance=i-0aaaaaaaaaaaaaaaa", 422, "needs 2 days of history"),
    ],
)
async def test_predict_rejects_what_it_cannot_do(api: httpx.AsyncClient, query: str, status: int, says: str | None) -> None:
    response = await api.post("/predict" + query, content=two_instances())
    assert response.status_code == status, response.text
    if says:
        assert says in response.json()["detail"]
    else:
        assert response.json()["instance_id"] == "i-0bbbbbbbbbbbbbbbb"


async def test_ancient_points_do_not_blow_up_the_grid(api: httpx.AsyncClient, export_body: bytes) -> None:  # noqa: F811
    doc = json.loads(export_body)
    cpu = next(r for r in doc["MetricDataResults"] if r["Id"].startswith("cpu"))
    cpu["Timestamps"].insert(0, "1971-01-01T00:00:00Z")  # 55 years at 5 minutes would be 5.8 million rows
    cpu["Values"].insert(0, 50.0)
    started = time.perf_counter()
    response = await api.post("/predict?model=naive", content=json.dumps(doc).encode())
    assert response.status_code == 200 and time.perf_counter() - started < 30


# ---- limits: body size, time, concurrency -------------------------------------------------
class Chunks:
    """A large streamed body (no Content-Length) that counts how much of it was read."""

    def __init__(self, total_mb: int, chunk_kb: int = 64) -> None:
        self.chunk = b" " * (chunk_kb * 1024)
        self.count = total_mb * 1024 // chunk_kb
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.sent += 1
            yield self.chunk


async def test_body_limit_stops_reading_a_large_stream(worker_db: Path) -> None:
    app = create_app(api_settings(worker_db, api_body_limit_mb=1))
    body = Chunks(total_mb=200)
    async with client(app) as session:
        response = await session.post("/predict?model=naive", content=body)
        assert response.status_code == 413 and "1 MB limit" in response.json()["detail"]
        assert body.sent <= 1_000_000 // len(body.chunk) + 2 < body.count  # about 1 MB of the 200 read
        declared = Chunks(total_mb=2)
        response = await session.post("/validate", content=declared, headers={"Content-Length": str(2 * 1024 * 1024)})
        assert response.status_code == 413 and declared.sent == 0  # refused on the header, nothing read
        assert (await session.post("/predict?model=naive", content=demo_export(0.5))).status_code == 200


async def test_time_limit_answers_503_and_the_slot_stays_taken(worker_db: Path, export_body: bytes) -> None:  # noqa: F811
    app = create_app(api_settings(worker_db, api_timeout=0.05, api_concurrency=1))  # an LSTM fit takes far longer
    state = app.state.headroom
    async with client(app) as session:
        slow = await session.post("/predict?model=lstm", content=export_body)
        assert slow.status_code == 503 and slow.json()["detail"].startswith("the request took longer than the 0.05 s limit")
        busy = await session.post("/predict?model=naive", content=export_body)  # the LSTM still trains in its thread
        assert busy.status_code == 503 and busy.json()["detail"].startswith("busy") and busy.headers["retry-after"]
        freed = False
        for _ in range(600):
            if state.take_slot():
                state.release_slot()
                freed = True
                break
            await asyncio.sleep(0.1)
        assert freed  # the slot comes back once the LSTM's thread ends
        done = await session.post("/predict?model=naive", content=export_body)
        assert not done.json().get("detail", "").startswith("busy"), (
            done.text
        )  # (it may still hit the 0.05 s limit on a slow machine)


async def test_training_runs_off_the_event_loop(api: httpx.AsyncClient, export_body: bytes) -> None:  # noqa: F811
    finished: dict[str, float] = {}

    async def timed(name: str, call: Any) -> httpx.Response:
        response = await call
        finished[name] = time.perf_counter()
        return response

    predict = asyncio.create_task(timed("predict", api.post("/predict?model=lstm", content=export_body)))  # seconds of training
    await asyncio.sleep(0.3)
    health = await timed("health", api.get("/health"))
    assert health.status_code == 200 and not predict.done()
    assert (await predict).status_code == 200 and finished["health"] < finished["predict"]


async def test_unexpected_errors_are_a_generic_500(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "db-is-a-folder").mkdir()
    async with client(create_app(api_settings(tmp_path / "db-is-a-folder"))) as session:
        response = await session.get("/instances")
    assert response.status_code == 500 and response.json() == {"detail": "internal error (logged by the server)"}
    assert "Traceback" not in response.text and "GET /instances failed" in caplog.text


def test_api_starts_without_tensorflow(worker_db: Path) -> None:
    script = (
        "import asyncio, sys, httpx\n"
        "from forecasting.api import app\n"
        "async def main():\n"
        "    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://t') as c:\n"
        "        codes = [(await c.get(p)).status_code for p in ('/health', '/predictions', '/compare', '/instances')]\n"
        "        codes.append((await c.post('/predict?model=naive', content=open(sys.argv[1], 'rb').read())).status_code)\n"
        "    print(codes, sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tcn')))\n"
        "asyncio.run(main())\n"
    )
    export = worker_db.parent / "small-export.json"
    export.write_bytes(demo_export(0.5))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")}
    env.update(HEADROOM_DB=str(worker_db), HEADROOM_CONFIG=str(worker_db.parent / "none.toml"))
    done = subprocess.run(
        [sys.executable, "-c", script, str(export)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "[200, 200, 200, 200, 200] []", done.stderr[-2000:]


# ---- one real server (``uvicorn forecasting.api:app``, configured from the environment like ``make api``) --------
def test_real_server_answers_predictions(server: str, worker_db: Path) -> None:  # noqa: F811
    request = urllib.request.Request(f"{server}/predictions", headers={"Authorization": f"Bearer {SERVER_TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200 and response.headers["content-type"] == "application/json"
        answer = json.loads(response.read())
    assert sorted(p["instance_id"] for p in answer["predictions"]) == store_ids(worker_db)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server}/predictions", timeout=30)
    assert refused.value.code == 401


def test_real_server_refuses_a_large_stream(server: str) -> None:  # noqa: F811
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(100 * 16):  # 100 MB in 64 KB chunks
            sent += 1
            yield b" " * 65536

    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {SERVER_TOKEN}"}) as session:
        response = session.post(f"{server}/predict?model=naive", content=body())
    assert response.status_code == 413 and "1 MB limit" in response.json()["detail"]
    assert sent < 20 * 16, sent  # the server closed the connection: far less than the 100 MB went out


async def test_the_api_opens_the_store_read_only(worker_db: Path) -> None:
    app = create_app(api_settings(worker_db))
    async with client(app) as session:
        assert (await session.get("/instances")).status_code == 200
        store = app.state.headroom.store()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.jobs.set_meta("written-by", "api")
