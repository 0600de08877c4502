"""Every dashboard page under Streamlit's AppTest, against a store the worker filled (see conftest)."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app.upload import forecast_csv, forecast_json
from forecasting.models import FAMILIES
from forecasting.store import Store
from tests.app.conftest import ENTRY
from tests.fixtures.services import SmtpSink
from tests.fixtures.stores import ALERTING_INSTANCE

pytestmark = pytest.mark.usefixtures("dashboard_env")


def open_page(page: str | None = None, **query: str) -> AppTest:
    """Run the app's entry script on one page (the Fleet page by default) and check nothing raised."""
    at = AppTest.from_file(str(ENTRY), default_timeout=120)
    if page is not None:
        at.switch_page(page)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figure(at: AppTest, index: int = 0) -> dict:
    """The Plotly figure JSON of one chart on the page."""
    charts = at.get("plotly_chart")
    assert len(charts) > index, f"only {len(charts)} charts on the page"
    return json.loads(charts[index].proto.spec)


def trace_names(spec: dict) -> list[str]:
    return [trace.get("name") for trace in spec["data"]]


def trace_values(trace: dict, axis: str = "y") -> np.ndarray:
    """A trace's values, whether Plotly wrote them as a list or as base64 binary (numpy input)."""
    data = trace[axis]
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
    return np.asarray(data)


def test_fleet_has_one_row_per_instance_sorted_by_risk(worker_db: Path) -> None:
    at = open_page()
    with Store(worker_db, readonly=True) as store:
        ids = {inst.instance_id for inst in store.samples.instances()}
        forecasts = {f.instance_id for f in store.forecasts.latest()}
    table = at.dataframe[0].value
    assert set(table["instance_id"]) == ids and len(table) == len(ids)
    assert set(table["instance_id"][table["level"] != "unknown"]) == forecasts
    ranks = table["level"].map(["over", "alert", "risk", "watch", "ok", "unknown"].index).tolist()
    assert ranks == sorted(ranks)
    assert all(len(spark) > 0 for spark in table["sparkline"])
    assert all(0 <= cpu <= 100 for cpu in table["cpu_now"])
    strip = " ".join(m.value for m in at.markdown)
    assert "ingest" in strip and "data is" in strip and "min old" in strip
    assert at.metric[0].label == "Instances" and at.metric[0].value == str(len(ids))


def test_instance_page_reads_the_instance_from_the_query_string(worker_db: Path) -> None:
    with Store(worker_db, readonly=True) as store:
        batch = next(inst for inst in store.samples.instances() if inst.name == "batch-1")
        champion = store.runs.latest()[batch.instance_id].champion
    at = open_page("pages/instance.py", instance=batch.instance_id)
    assert at.selectbox(key="instance").value == batch.instance_id
    assert at.query_params["instance"] == batch.instance_id
    spec = figure(at)
    names = trace_names(spec)
    assert "CPU" in names and f"forecast ({champion})" in names and f"forecast ({champion}) interval" in names
    assert "memory" in names and "network in" in names and "network out" in names
    assert any(shape.get("y0") == batch.threshold for shape in spec["layout"]["shapes"])  # the threshold line
    assert [m.label for m in at.metric] == ["CPU now", "Predicted peak", "Time to limit", "Champion", "Alert"]
    assert at.metric[3].value == champion


def test_instance_page_draws_the_forecast_deployed_an_hour_ago_over_what_happened(
    worker_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    db = tmp_path / "copy.db"
    with sqlite3.connect(worker_db) as source, sqlite3.connect(db) as target:
        source.backup(target)  # the shared store stays as the other tests expect it
    iid = ALERTING_INSTANCE
    with Store(db) as store:
        ts, cpu = store.samples.series(iid, metrics=["cpu"])["cpu"]
        newest = int(ts[-1])
        mean = [float(v) + 1.5 for v in cpu[-24:-12]]  # made two hours ago: its twelve steps have all happened
        latest = store.forecasts.latest(iid, champion_only=False)
        store.forecasts.record(
            [
                {
                    "instance_id": iid,
                    "run_id": store.runs.latest()[iid].run_id,
                    "model": "arima",
                    "is_champion": True,
                    "made_at": newest - 7200,
                    "origin_ts": int(ts[-25]),
                    "timestamps": [int(t) for t in ts[-24:-12]],
                    "mean": mean,
                    "lower": mean,
                    "upper": mean,
                }
            ]
        )
        store.forecasts.record([asdict(f) for f in latest])  # still the newest
    monkeypatch.setenv("HEADROOM_DB", str(db))
    at = open_page("pages/instance.py", instance=iid)
    spec = figure(at)
    past = next(t for t in spec["data"] if t.get("name") == "earlier forecast (arima)")
    assert np.allclose(trace_values(past), mean) and len(past["x"]) == 12
    champion = next(f for f in latest if f.is_champion)
    assert f"forecast ({champion.model})" in trace_names(spec)  # the latest deployed forecast is drawn as before
    assert any("The dotted line is the forecast deployed" in c.value for c in at.caption)


def test_instance_page_marks_a_missing_series_as_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forecasting.ingest import run_ingest
    from forecasting.settings import load_settings
    from forecasting.sources.demo import demo_instance_id

    settings = load_settings(db=tmp_path / "cache.db", source="demo", demo_instances=5, train_days=0.25, history_days=1)
    with Store(settings.db) as store:
        run_ingest(store, settings, 1_760_000_100)
    cache = demo_instance_id(4)  # the demo's cache publishes no memory
    monkeypatch.setenv("HEADROOM_DB", str(settings.db))
    at = open_page("pages/instance.py", instance=cache)
    spec = figure(at)
    assert trace_names(spec)[:3] == ["CPU", "network in", "network out"] and "memory" not in trace_names(spec)
    assert "no memory data in this time range" in [a.get("text") for a in spec["layout"]["annotations"]]


def test_instance_overlay_and_time_range(worker_db: Path) -> None:
    with Store(worker_db, readonly=True) as store:
        iid = store.samples.instances()[0].instance_id
        models = {f.model for f in store.forecasts.latest(iid, champion_only=False)}
    at = open_page("pages/instance.py", instance=iid)
    before = trace_names(figure(at))
    cpu_points_day = len(figure(at)["data"][0]["x"])
    at.toggle(key="all_models").set_value(True)
    at.button_group(key="range").set_value("6 h")
    at.run()
    assert not at.exception
    after = trace_names(figure(at))
    assert len(after) == len(before) + len(models) - 1  # every other model's line is overlaid
    assert set(models) <= {n.removeprefix("forecast (").rstrip(")") for n in after}
    assert len(figure(at)["data"][0]["x"]) < cpu_points_day  # 6 h of CPU instead of 24 h


def test_instance_picker_rewrites_the_link(worker_db: Path) -> None:
    with Store(worker_db, readonly=True) as store:
        first, second = [inst.instance_id for inst in store.samples.instances()[:2]]
    at = open_page("pages/instance.py", instance=first)
    at.selectbox(key="instance").select(second).run()
    assert not at.exception
    assert at.query_params["instance"] == second
    assert any(second in c.value for c in at.caption)


def test_unknown_instance_in_the_link_warns_and_shows_another() -> None:
    at = open_page("pages/instance.py", instance="i-doesnotexist0000")
    assert any("i-doesnotexist0000" in w.value for w in at.warning)
    assert at.selectbox(key="instance").value is not None
    assert figure(at)["data"]


def test_models_page_shows_scores_backtest_and_champion_history(worker_db: Path) -> None:
    with Store(worker_db, readonly=True) as store:
        scores = store.runs.scores()
        runs = store.runs.latest()
    at = open_page("pages/models.py")
    table = at.dataframe[0].value
    assert len(table) == len(scores)
    assert set(table["model"]) == {score.model for score in scores}
    champions = table[table["champion"]]
    assert {(r.instance_id, r.model) for r in champions.itertuples()} == {
        (i, run.champion) for i, run in runs.items() if run.champion
    }
    assert len(at.get("plotly_chart")) == 4  # fleet scores, instance scores, backtest, champion history
    backtest = figure(at, 2)
    assert trace_names(backtest)[0] == "actual" and len(backtest["data"]) > 1
    families = at.dataframe[1].value  # the declared model families, from forecasting.models.FAMILIES
    assert list(families["model"]) == list(FAMILIES) and set(families["kind"]) >= {"baseline", "neural", "combination"}
    assert len(at.dataframe[2].value) >= 1  # training runs of the picked instance


def test_models_page_shows_the_realised_accuracy_of_stored_forecasts(
    worker_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3
    import time

    from forecasting.scoring import CURSOR, realised_scores, score_realised
    from forecasting.settings import load_settings

    db = tmp_path / "copy.db"
    with sqlite3.connect(worker_db) as source, sqlite3.connect(db) as target:
        source.backup(target)  # the shared store stays as the other tests expect it
    iid, now = ALERTING_INSTANCE, int(time.time())
    with Store(db) as store:
        ts, cpu = store.samples.series(iid, metrics=["cpu"])["cpu"]
        store.forecasts.record(
            [
                {
                    "instance_id": iid,
                    "run_id": store.runs.latest()[iid].run_id,
                    "model": "seasonal_naive",
                    "is_champion": True,
                    "made_at": now - 7200,
                    "origin_ts": int(ts[-13]),
                    "timestamps": [int(t) for t in ts[-12:]],
                    "mean": [float(cpu[-13])] * 12,
                    "lower": [0.0] * 12,
                    "upper": [100.0] * 12,
                }
            ]
        )
        store.jobs.set_meta(CURSOR, "0")  # the worker's own pass already moved past two hours ago: score from the start
        score_realised(store, load_settings(db=db), now)
        expected = realised_scores(store, now, iid)[iid]
    monkeypatch.setenv("HEADROOM_DB", str(db))
    at = open_page("pages/models.py")
    assert not [i for i in at.info if "No forecast has been scored" in i.value]
    table = at.dataframe[1].value  # after the backtest scores: realised, last day
    mine = table[table["instance_id"] == iid].set_index("model")
    assert {"seasonal_naive", "auto"} <= set(mine.index)  # the champion's forecast also counts as what was deployed
    assert mine.loc["seasonal_naive", "mase"] == pytest.approx(expected["seasonal_naive"]["day"]["mase"])
    assert (
        mine.loc["auto", "coverage"] == 1.0
        and mine.loc["seasonal_naive", "points"] == expected["seasonal_naive"]["day"]["points"]
    )
    at.radio(key="realised_window").set_value("week").run()
    assert at.dataframe[1].value["points"].sum() >= 24


def test_models_page_says_when_no_forecast_has_been_scored_yet(worker_db: Path) -> None:
    at = open_page("pages/models.py")
    assert any("No forecast has been scored yet" in i.value for i in at.info)


def test_alerts_page_lists_the_open_alert_with_a_link_and_says_email_is_off(worker_db: Path) -> None:
    with Store(worker_db, readonly=True) as store:
        opened = store.alerts.open()
    at = open_page("pages/alerts.py")
    assert next(s.value for s in at.subheader) == f"Open ({len(opened)})"
    table = at.dataframe[0].value  # the open alerts come first
    assert set(table["instance_id"]) == {a.instance_id for a in opened} and ALERTING_INSTANCE in set(table["instance_id"])
    assert (table["threshold"] > 0).all() and table["model"].notna().all()
    assert "Email is off" in at.info[0].value and at.button(key="test_mail").label == "Send test email"


def test_alerts_page_without_alerts_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(tmp_path / "no-alerts.db") as store:
        store.samples.upsert([("i-a", "cpu", 1_760_000_000, 10.0)])
    monkeypatch.setenv("HEADROOM_DB", str(tmp_path / "no-alerts.db"))
    at = open_page("pages/alerts.py")
    assert "No alerts" in at.success[0].value


def test_send_test_email_button_delivers_through_the_configured_server(
    smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADROOM_SMTP_HOST", smtp_sink.host)
    monkeypatch.setenv("HEADROOM_SMTP_PORT", str(smtp_sink.port))
    monkeypatch.setenv("HEADROOM_SMTP_TLS", "none")
    monkeypatch.setenv("HEADROOM_MAIL_TO", "ops@example.test")
    at = open_page("pages/alerts.py")
    assert f"{smtp_sink.host}:{smtp_sink.port}" in at.markdown[-1].value
    at.button(key="test_mail").click().run()
    assert not at.exception and "test message sent to ops@example.test" in at.success[-1].value
    assert [m["Subject"] for m in smtp_sink.messages] == ["[Headroom] test message"]
    smtp_sink.refuse = True
    at.button(key="test_mail").click().run()
    assert not at.exception and "test message not sent" in at.error[0].value and len(smtp_sink.messages) == 1


def test_upload_page_explains_the_export_until_a_file_comes() -> None:
    at = open_page("pages/upload.py")
    assert at.file_uploader(key="upload_file") is not None
    assert "get-metric-data" in at.info[0].value


def test_broken_upload_gives_the_import_error_and_the_page_stays_usable(demo_export: bytes) -> None:
    from forecasting.sources.export import ExportError, parse_export

    broken = b'{"MetricDataResults": [{"Id": "cpu", "Timestamps": ["2026-01-01T00:00:00Z"], "Values": []}]}'
    with pytest.raises(ExportError) as expected:
        parse_export(broken, name="broken.json")
    at = open_page("pages/upload.py")
    at.file_uploader(key="upload_file").set_value(("broken.json", broken, "application/json"))
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [str(expected.value)]
    assert "\n" not in at.error[0].value
    assert not at.get("plotly_chart")
    at.file_uploader(key="upload_file").set_value(("good.json", demo_export, "application/json"))
    at.run()
    assert not at.exception and not at.error
    assert trace_names(figure(at))[0] == "CPU"


def test_empty_store_says_how_to_start_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADROOM_DB", str(tmp_path / "nothing-yet.db"))
    for page in (None, "pages/instance.py", "pages/models.py", "pages/alerts.py"):
        at = open_page(page)
        assert any("worker.py --once" in i.value and "make worker" in i.value for i in at.info), page
    assert not (tmp_path / "nothing-yet.db").exists()  # the dashboard never creates the store


def test_store_without_models_says_training_is_running(ingest_only_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADROOM_DB", str(ingest_only_db))
    at = open_page()
    assert any("No models yet" in i.value for i in at.info)
    table = at.dataframe[0].value.set_index("instance_id")
    assert set(table["champion"]) == {"—"}
    # no forecast yet: the level comes from the current CPU alone (at or over its limit, or unknown);
    # the demo feed follows the wall clock, so which instance is over depends on when the test runs
    with Store(ingest_only_db, readonly=True) as store:
        latest = store.samples.latest_values("cpu")
        expected = {
            i.instance_id: "over" if latest[i.instance_id][1] >= i.threshold else "unknown" for i in store.samples.instances()
        }
    assert expected[ALERTING_INSTANCE] == "over"  # its 1 % limit is always under the current CPU
    assert table["level"].to_dict() == expected
    at = open_page("pages/models.py")
    assert any("No models yet" in i.value for i in at.info)


def test_upload_validate_then_predict_with_progress_and_downloads(demo_export: bytes) -> None:
    at = open_page("pages/upload.py")
    at.file_uploader(key="upload_file").set_value(("export.json", demo_export, "application/json"))
    at.run()
    assert not at.exception and not at.error
    at.button_group(key="validate_choice").set_value("ARIMA")
    at.button(key="validate").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    scores = at.dataframe[0].value
    assert {"naive", "seasonal_naive", "linear", "arima"} == set(scores["model"])
    assert scores["champion"].sum() == 1
    ok = scores[scores["status"] == "ok"]
    assert len(ok) >= 3 and ok["mase"].notna().all()
    backtest = figure(at, 1)
    assert trace_names(backtest)[0] == "actual" and len(backtest["data"]) > 1

    at.selectbox(key="predict_model").select("lstm")
    at.number_input(key="predict_horizon").set_value(6)
    at.button(key="predict").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    bar = at.get("progress")[0].proto
    assert bar.value == 100 and bar.text == "done: lstm"  # the engine reported through the page's progress bar
    spec = figure(at, 2)
    line = next(t for t in spec["data"] if t.get("name") == "forecast (lstm)")
    assert len(trace_values(line)) == 6 and np.all((trace_values(line) >= 0) & (trace_values(line) <= 100))
    result = at.session_state["upload_result"]["forecast"]
    assert result.model == "lstm" and len(result.timestamps) == 6
    assert np.all(np.diff(result.timestamps) == 300)
    csv_lines = forecast_csv(result).splitlines()
    assert csv_lines[0] == "timestamp,model,mean,lower,upper" and len(csv_lines) == 7
    assert json.loads(forecast_json(result, "i-0123456789abcdef0"))["forecast"][5]["mean"] == result.mean[5]
    downloads = [b.proto.label for b in at.get("download_button")]
    assert downloads == ["Download CSV", "Download JSON"]
