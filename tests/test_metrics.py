"""Metrics as data: the declarations, a metric added by one declaration (moto → store → features → export → chart),
the built-in CPU credits switched on, and missing series kept missing (features, neural models, charts)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest

from app.charts import instance_figure, series_figure
from forecasting.bench.ingest import create_fleet, put_points
from forecasting.features import design_matrix, to_frame
from forecasting.ingest import run_ingest
from forecasting.metrics import METRICS, Metric, default_metrics, from_name, metric, register_metric, snake_case
from forecasting.settings import Settings, SettingsError, load_settings
from forecasting.sources.base import align
from forecasting.sources.cloudwatch import CloudWatchSource
from forecasting.sources.export import ExportError, parse_export
from forecasting.store import Store
from tests.test_features import demo_samples

P = 300
EBS_READ = Metric(
    "ebs_read",
    "AWS/EC2",
    "EBSReadBytes",
    "Sum",
    unit="Bytes",
    label="EBS read",
    symbol="bytes",
    scaling="log1p",
    aliases=("disk_read",),
)
"""The metric these tests add: everything Headroom needs to know about it, in one declaration."""


@pytest.fixture()
def ebs_read() -> Iterator[Metric]:
    """EBS_READ registered for one test, and forgotten after it."""
    register_metric(EBS_READ)
    yield EBS_READ
    del METRICS[EBS_READ.key]


def cw_settings(tmp_path: Path, metrics: list[str]) -> Settings:
    return load_settings(
        source="cloudwatch",
        db=tmp_path / "headroom.db",
        train_days=0.25,
        instances=[],
        instance_tag=None,
        thresholds={},
        metrics=metrics,
    )


def stored(db: Path) -> dict[tuple[str, str], dict[int, float]]:
    """Every sample in the SQLite file, read with plain sqlite3."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    with sqlite3.connect(db) as conn:
        for iid, key, ts, value in conn.execute("SELECT instance_id, metric, ts, value FROM samples"):
            out.setdefault((iid, key), {})[ts] = value
    return out


# ---- the declarations --------------------------------------------------------
def test_the_built_in_declarations() -> None:
    assert list(METRICS)[:4] == ["cpu", "memory", "network_in", "network_out"] == default_metrics()
    assert [m.key for m in METRICS.values() if m.required] == ["cpu"]
    cpu, memory, net_in = metric("cpu"), metric("memory"), metric("network_in")
    assert (cpu.namespace, cpu.name, cpu.statistic, cpu.unit, cpu.axis) == (
        "AWS/EC2",
        "CPUUtilization",
        "Average",
        "Percent",
        "CPU %",
    )
    assert memory.cloudwatch_name("cwagent") == ("CWAgent", "mem_used_percent")
    assert memory.cloudwatch_name("legacy") == ("System/Linux", "MemoryUtilization")
    assert net_in.axis == metric("network_out").axis == "network bytes"  # one panel for both directions
    assert (cpu.plausible(100.9), cpu.plausible(101.5), cpu.clip(100.9), net_in.plausible(-1.0)) == (True, False, 100.0, False)
    assert net_in.model_input(pd.Series([0.0, np.e - 1])).tolist() == pytest.approx([0.0, 1.0])
    assert snake_case("CPUCreditBalance") == "cpu_credit_balance" and snake_case("NetworkIn") == "network_in"
    credits = metric("cpu_credits")
    assert (credits.name, credits.default, credits.discover) == ("CPUCreditBalance", False, True)  # declared, off
    with pytest.raises(KeyError, match="unknown metric 'disk'"):
        metric("disk")


def test_the_metrics_setting_knows_the_declarations(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().metrics == ["cpu", "memory", "network_in", "network_out"]
    monkeypatch.setenv("HEADROOM_METRICS", "cpu_credits, cpu,network_in")
    assert load_settings().metrics == ["cpu", "network_in", "cpu_credits"]  # declaration order
    monkeypatch.setenv("HEADROOM_METRICS", "cpu,disk")
    with pytest.raises(SettingsError, match="HEADROOM_METRICS: unknown metric 'disk'; choose from cpu, memory"):
        load_settings()
    monkeypatch.setenv("HEADROOM_METRICS", "memory")
    with pytest.raises(SettingsError, match="HEADROOM_METRICS: cpu is required"):
        load_settings()


# ---- one declaration adds a metric ---------------------------------------------
def test_a_declared_metric_flows_from_cloudwatch_to_the_store_and_the_features(aws, tmp_path: Path, ebs_read: Metric) -> None:
    ec2, cw = boto3.client("ec2"), boto3.client("cloudwatch")
    ids = create_fleet(ec2, 2)
    now = align(time.time(), P)
    reads = {ts: 1.0e6 * k for k, ts in enumerate(range(now - 12 * P, now, P), start=1)}
    put_points(cw, [(iid, "cpu", ts, 30.0) for iid in ids for ts in reads])
    put_points(cw, [(ids[0], "ebs_read", ts, value) for ts, value in reads.items()])
    sent: list[dict] = []
    cw.meta.events.register("provide-client-params.cloudwatch.GetMetricData", lambda params, **_: sent.append(dict(params)))
    assert "ebs_read" in default_metrics()  # declared on by default: nothing else to configure
    settings = cw_settings(tmp_path, default_metrics())
    with Store(settings.db) as store:
        report = run_ingest(store, settings, now, CloudWatchSource(settings, cloudwatch=cw))
        samples = store.samples.series(ids[0])
    assert report.errors == []
    queries = [q["MetricStat"] for q in sent[0]["MetricDataQueries"] if q["MetricStat"]["Metric"]["MetricName"] == "EBSReadBytes"]
    assert sorted((q["Metric"]["Namespace"], q["Stat"], q["Metric"]["Dimensions"][0]["Value"]) for q in queries) == sorted(
        [("AWS/EC2", "Sum", ids[0]), ("AWS/EC2", "Sum", ids[1])]
    )  # not discovered: asked of every instance
    data = stored(settings.db)
    assert data[(ids[0], "ebs_read")] == reads and (ids[1], "ebs_read") not in data
    frame = to_frame(samples, P)
    inputs = design_matrix(frame, P)
    assert frame["ebs_read"].tolist() == list(reads.values())
    assert np.allclose(inputs["ebs_read"], np.log1p(list(reads.values())))  # scaled as declared
    # left out of HEADROOM_METRICS, it is not fetched
    plain = cw_settings(tmp_path / "plain", ["cpu", "memory", "network_in", "network_out"])
    with Store(plain.db) as store:
        run_ingest(store, plain, now)
    assert not any(key == "ebs_read" for _, key in stored(plain.db))


def test_a_declared_metric_is_read_from_exports_and_charted(ebs_read: Metric) -> None:
    t0 = 1_760_000_100
    stamps = ["2025-10-09T08:55:00Z", "2025-10-09T09:00:00Z"]
    doc = {
        "MetricDataResults": [
            {"Id": "cpu", "Label": "CPUUtilization", "Timestamps": stamps, "Values": [10.0, 12.0], "StatusCode": "Complete"},
            {
                "Id": "m2",
                "Label": "i-0abc1234def567890 EBSReadBytes",
                "Timestamps": stamps,
                "Values": [5.0, 6.0],
                "StatusCode": "Complete",
            },
        ]
    }
    parsed = parse_export(json.dumps(doc), instance="i-0abc1234def567890")
    assert parsed.series["i-0abc1234def567890"]["ebs_read"][1].tolist() == [5.0, 6.0]
    csv = parse_export("timestamp,cpu,disk_read\n1760000100,10,7\n", instance="i-0abc1234def567890")
    assert csv.series["i-0abc1234def567890"]["ebs_read"][1].tolist() == [7.0]
    with pytest.raises(ExportError, match="ebs_read value -1 is negative"):
        parse_export("timestamp,cpu,EBSReadBytes\n1760000100,10,-1\n", instance="i-0abc1234def567890")
    assert from_name("ebs-read-bytes") is ebs_read
    series = {"cpu": (np.array([t0]), np.array([10.0])), "ebs_read": (np.array([t0]), np.array([5.0]))}
    assert [a["title"]["text"] for a in _axes(series_figure(series))] == ["CPU %", "EBS read bytes"]
    figure = instance_figure(series, [], 80.0, None, metrics=["cpu", "ebs_read"])
    assert [t.name for t in figure.data] == ["CPU", "EBS read"]
    assert [a["title"]["text"] for a in _axes(figure)] == ["CPU %", "EBS read bytes"]


def _axes(figure) -> list:
    layout = figure.to_plotly_json()["layout"]
    return [layout[name] for name in sorted((k for k in layout if k.startswith("yaxis")), key=lambda k: int(k[5:] or 1))]


# ---- the built-in CPU credits, switched on ------------------------------------
def test_cpu_credits_are_fetched_only_when_on_and_only_where_published(aws, tmp_path: Path) -> None:
    ec2, cw = boto3.client("ec2"), boto3.client("cloudwatch")
    burstable, steady = create_fleet(ec2, 2)
    now = align(time.time(), P)
    put_points(cw, [(iid, "cpu", now - k * P, 20.0) for iid in (burstable, steady) for k in (1, 2)])
    put_points(cw, [(burstable, "cpu_credits", now - k * P, 144.0 - k) for k in (1, 2)])
    default = cw_settings(tmp_path / "default", default_metrics())
    with Store(default.db) as store:
        run_ingest(store, default, now)
    assert {key for _, key in stored(default.db)} == {"cpu"}  # off by default: never asked for
    on = cw_settings(tmp_path / "on", [*default_metrics(), "cpu_credits"])
    source = CloudWatchSource(on)
    with Store(on.db) as store:
        report = run_ingest(store, on, now, source)
    assert report.errors == []
    assert "cpu_credits" in source.metrics_of(burstable) and "cpu_credits" not in source.metrics_of(steady)  # ListMetrics
    assert stored(on.db)[(burstable, "cpu_credits")] == {now - P: 143.0, now - 2 * P: 142.0}


# ---- a missing series stays missing --------------------------------------------
def test_a_missing_series_is_not_drawn_as_a_flat_line() -> None:
    samples = demo_samples(0.5, index=4)  # the demo's cache: no memory agent
    assert "memory" not in samples
    figure = instance_figure(samples, [], 80.0, None)
    names = [t.name for t in figure.data]
    assert names == ["CPU", "network in", "network out"]
    notes = [a.text for a in figure.layout.annotations]
    assert "no memory data in this time range" in notes
    without_network = instance_figure({"cpu": samples["cpu"]}, [], 80.0, None)
    assert "no network in or network out data in this time range" in [a.text for a in without_network.layout.annotations]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["lstm", "tcn"])
def test_neural_models_train_without_an_input_and_predict_when_one_goes_missing(family: str) -> None:
    from forecasting.models.neural import LstmModel, TcnModel
    from forecasting.settings import ModelParams

    tiny = ModelParams(
        lookback=12,
        units=4,
        layers=1,
        dilations=[1, 2],
        kernel_size=2,
        epochs=2,
        batch_size=32,
        learning_rate=0.01,
        patience=1,
        max_windows=300,
        seed=3,
    )
    model_class = {"lstm": LstmModel, "tcn": TcnModel}[family]
    no_memory = to_frame(demo_samples(2.2, index=4), P)  # the cache: no memory column at all
    fitted = model_class(period=P, horizon=6, params=tiny).fit(no_memory)
    assert "memory" not in fitted.columns and "network_in" in fitted.columns
    assert np.all(np.isfinite(fitted.predict().mean))
    full = to_frame(demo_samples(2.2, index=0), P)
    with_memory = model_class(period=P, horizon=6, params=tiny).fit(full)
    assert "memory" in with_memory.columns
    gone = full.drop(columns=["memory"])  # the agent stopped: the column seen in training is missing now
    forecast = with_memory.predict(history=gone)
    assert forecast.mean.shape == (6,) and np.all(np.isfinite(forecast.mean))
