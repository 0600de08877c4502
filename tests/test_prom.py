"""``GET /metrics`` on the worker-filled store, read back with prometheus_client's own parser; realised accuracy by hand."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from forecasting.api import create_app
from forecasting.crossing import LIKELY_SHARE
from forecasting.prom import render
from forecasting.scoring import score_realised
from forecasting.settings import load_settings
from forecasting.store import Store
from tests.fixtures.api import api_settings
from tests.fixtures.stores import ALERTING_INSTANCE, ROOT

pytestmark = pytest.mark.anyio
TOKEN = "pr0m-token"


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


def samples_of(text: str) -> dict[str, list[Any]]:
    """Every sample by metric family name, as Prometheus would read the page."""
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, []).extend(family.samples)
    return out


def by_label(samples: list[Any], label: str = "instance_id", **match: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples if all(s.labels.get(k) == v for k, v in match.items())}


def by_window(samples: list[Any]) -> dict[str, float]:
    return by_label(samples, "window")


async def test_metrics_page_matches_the_store_and_follows_the_token_rule(worker_db: Path) -> None:
    app = create_app(api_settings(worker_db, api_token=TOKEN))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60) as session:
        refused = await session.get("/metrics")
        assert refused.status_code == 401
        response = await session.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        predictions = (await session.get("/predictions", headers={"Authorization": f"Bearer {TOKEN}"})).json()["predictions"]
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    metrics = samples_of(response.text)
    with Store(worker_db, readonly=True) as store:
        instances = [inst.instance_id for inst in store.samples.instances()]
        runs = store.runs.latest()
        beats = store.jobs.heartbeats()
        newest = max(store.samples.newest_ts(i) or 0 for i in instances)
    assert len(predictions) == 3
    for p in predictions:
        iid = p["instance_id"]
        for bound in ("mean", "lower", "upper"):
            assert by_label(metrics["headroom_predicted_cpu_percent"], bound=bound)[iid] == pytest.approx(p[bound][-1])
        # the peak as the alerts read it (alert_on = likely): the point forecast's when it crosses, else the 60 % level's
        likely = [m + LIKELY_SHARE * (u - m) for m, u in zip(p["mean"], p["upper"], strict=True)]
        expected = max(p["mean"]) if max(p["mean"]) >= p["threshold"] else max(likely)
        assert by_label(metrics["headroom_predicted_peak_cpu_percent"])[iid] == pytest.approx(expected)
    warnings = by_label(metrics["headroom_warning_open"])
    assert warnings[ALERTING_INSTANCE] == 1.0 and set(warnings) == set(instances)
    assert by_label(metrics["headroom_cpu_threshold_percent"])[ALERTING_INSTANCE] == 1.0  # its headroom.toml threshold
    assert ALERTING_INSTANCE in by_label(metrics["headroom_minutes_to_limit"])  # it crosses: minutes are there
    champions = {s.labels["instance_id"]: s.labels["model"] for s in metrics["headroom_champion_info"]}
    assert champions == {iid: run.champion for iid, run in runs.items()}
    assert set(by_label(metrics["headroom_backtest_mase"])) == set(instances)
    jobs = by_label(metrics["headroom_job_last_success_timestamp_seconds"], label="job")
    assert set(jobs) == {"ingest", "retrain", "forecast", "digest"} and jobs["forecast"] == beats["forecast"].finished_at
    durations = by_label(metrics["headroom_job_last_duration_seconds"], label="job")
    assert durations["retrain"] == pytest.approx(beats["retrain"].duration_seconds)
    [age] = metrics["headroom_data_age_seconds"]
    assert age.value == pytest.approx(time.time() - newest, abs=30)
    assert metrics["headroom_instances"][0].value == 3
    for rule in readme_rules():  # the alerting rules of docs/alerts.md use only metrics this page has
        used = set(re.findall(r"\bheadroom_\w+", rule["expr"]))
        assert used and used <= set(metrics), (rule["alert"], used - set(metrics))


def readme_rules() -> list[dict[str, Any]]:
    """The alerting rules of docs/alerts.md's ``headroom-rules.yml`` example."""
    import yaml

    text = (ROOT / "docs" / "alerts.md").read_text()
    block = re.search(r"```yaml\n# headroom-rules.yml\n(.*?)```", text, flags=re.S)
    assert block is not None
    rules = yaml.safe_load(block.group(1))["groups"][0]["rules"]
    assert len(rules) >= 4
    return rules


def test_realised_accuracy_is_the_stored_one_of_the_deployed_forecasts(tmp_path: Path, clean_env: Path) -> None:
    t0, p = 1_800_000_000, 300
    forecast = {
        "timestamps": [t0 + p, t0 + 2 * p, t0 + 3 * p],
        "mean": [50.0, 60.0, 70.0],
        "lower": [45.0, 55.0, 65.0],
        "upper": [55.0, 65.0, 75.0],
    }
    settings = load_settings(db=tmp_path / "h.db")
    with Store(settings.db) as store:
        store.samples.upsert_instance("i-a", None, 80.0, t0)
        store.samples.upsert([("i-a", "cpu", t0 + p, 40.0), ("i-a", "cpu", t0 + 2 * p, 60.0)])  # the third never arrived
        store.forecasts.record(
            [
                {
                    **forecast,
                    "instance_id": "i-a",
                    "run_id": 1,
                    "model": "naive",
                    "is_champion": True,
                    "made_at": t0,
                    "origin_ts": t0,
                }
            ]
        )
        now = t0 + 2 * 3600
        score_realised(store, settings, now)  # what the worker's forecast job does first
        page = samples_of(render(store, settings, now=now).decode())
    # |40 − 50| and |60 − 60|: MAE 5, MAPE (25 % + 0 %) / 2, one of the two actuals inside its interval
    assert by_label(page["headroom_realised_mae_percent"], window="day") == {"i-a": 5.0}
    assert by_window(page["headroom_realised_mae_percent"]) == {"day": 5.0, "week": 5.0}
    assert by_window(page["headroom_realised_mape_percent"]) == {"day": pytest.approx(12.5), "week": pytest.approx(12.5)}
    assert by_window(page["headroom_realised_coverage_ratio"]) == {"day": 0.5, "week": 0.5}
    assert set(by_window(page["headroom_realised_mase"])) == {"day", "week"}
    assert page["headroom_job_last_run_ok"] == []  # no worker run yet: no job series, and no error either
