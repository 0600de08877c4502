"""CloudWatch source against a real moto server over HTTP, plus botocore's Stubber for what moto cannot answer."""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from forecasting.bench.ingest import create_fleet, put_points
from forecasting.ingest import run_ingest
from forecasting.settings import Settings, load_settings
from forecasting.sources.base import SeriesRequest, align
from forecasting.sources.cloudwatch import (
    CloudWatchError,
    CloudWatchSource,
    parse_threshold,
    plan_calls,
)
from forecasting.store import Store

ROOT = Path(__file__).resolve().parents[2]
P = 300
ALL = ["cpu", "memory", "network_in", "network_out"]


def cw_settings(tmp_path: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "source": "cloudwatch",
        "db": tmp_path / "headroom.db",
        "train_days": 0.25,
        "instances": [],
        "instance_tag": None,
        "thresholds": {},
        "threshold": 80,
    }
    return load_settings(**{**base, **overrides})


def stored(db: Path) -> dict[tuple[str, str], dict[int, float]]:
    """Every sample in the SQLite file, read with plain sqlite3."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    with sqlite3.connect(db) as conn:
        for iid, metric, ts, value in conn.execute("SELECT instance_id, metric, ts, value FROM samples"):
            out.setdefault((iid, metric), {})[ts] = value
    return out


def ingest(settings: Settings, now: int, source: CloudWatchSource | None = None):
    with Store(settings.db) as store:
        return run_ingest(store, settings, now, source)


def when(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# ---- the plan (pure) -------------------------------------------------------
def test_plan_packs_a_backfill_and_an_incremental_fleet_at_the_limits() -> None:
    end = 1_800_000_000
    backfill = [SeriesRequest(f"i-{n}", m, end - 14 * 86_400) for n in range(500) for m in ALL]
    calls = plan_calls(backfill, end, P)
    assert len(calls) == math.ceil(2000 / (100_800 // 4032)) == 80
    incremental = [SeriesRequest(f"i-{n}", m, end - 20 * 60) for n in range(500) for m in ALL]
    assert [len(c.requests) for c in plan_calls(incremental, end, P)] == [500] * 4
    for call in calls:
        assert len(call.requests) <= 500 and call.expected_datapoints(P) <= 100_800


def test_plan_cuts_a_window_longer_than_one_call_into_segments() -> None:
    end = 1_800_000_000
    calls = plan_calls([SeriesRequest("i-a", "cpu", end - 100 * 86_400)], end, 60)  # 144,000 points at 60 s
    assert [c.expected_datapoints(60) for c in calls] == [100_800, 43_200]
    assert calls[0].end == end and calls[1].end == calls[0].start == end - 100_800 * 60


def _partitions(items: list[int]):
    if not items:
        yield []
        return
    for rest in _partitions(items[1:]):
        yield [[items[0]], *rest]
        for i in range(len(rest)):
            yield [*rest[:i], [items[0], *rest[i]], *rest[i + 1 :]]


@hsettings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=6), st.integers(1, 4), st.integers(12, 30))
def test_plan_is_the_minimum_the_limits_allow(windows: list[int], max_q: int, max_d: int) -> None:
    end = 1_800_000_000
    requests = [SeriesRequest(f"i-{n}", "cpu", end - w * P) for n, w in enumerate(windows)]
    calls = plan_calls(requests, end, P, max_queries=max_q, max_datapoints=max_d)
    best = min(
        len(p)
        for p in _partitions(list(range(len(windows))))
        if all(len(b) <= max_q and len(b) * max(windows[i] for i in b) <= max_d for b in p)
    )
    assert len(calls) == best
    assert sorted(r.instance_id for c in calls for r in c.requests) == sorted(r.instance_id for r in requests)
    for call in calls:
        assert len(call.requests) <= max_q and call.expected_datapoints(P) <= max_d
        assert all(call.start <= r.start for r in call.requests) and call.start % P == 0 and call.end == end


def test_threshold_tag_parsing(caplog: pytest.LogCaptureFixture) -> None:
    assert (
        parse_threshold("65", "i-a") == 65 and parse_threshold(" 72.5% ", "i-a") == 72.5 and parse_threshold(None, "i-a") is None
    )
    for bad in ("lots", "0", "150", "nan", ""):
        assert parse_threshold(bad, "i-a") is None
    assert "headroom:threshold" in caplog.text


# ---- moto over HTTP --------------------------------------------------------
def test_fleet_ingest_reads_back_exactly_and_twice_changes_nothing(aws, tmp_path: Path) -> None:
    ec2, cw = boto3.client("ec2"), boto3.client("cloudwatch")
    ids = create_fleet(ec2, 4)  # the fourth has no memory agent
    now = align(time.time(), P)
    points, expected = [], {}
    for n, iid in enumerate(ids):
        for metric in ALL if n < 3 else ALL[:1] + ALL[2:]:
            for k in range(1, 13):
                ts, low = now - k * P, 10.0 + n + k + ALL.index(metric)
                points += [(iid, metric, ts + 10, low), (iid, metric, ts + 70, low + 4)]
                expected.setdefault((iid, metric), {})[ts] = 2 * low + 4 if metric.startswith("network") else low + 2
    put_points(cw, points)
    settings = cw_settings(tmp_path)
    first = ingest(settings, now)
    assert stored(settings.db) == expected
    assert (first.instances, first.rows, first.errors) == (4, 15 * 12, [])
    assert first.calls == first.calls_required == 1
    second = ingest(settings, now + 60)
    assert stored(settings.db) == expected and second.errors == []
    with sqlite3.connect(settings.db) as conn:
        names = dict(conn.execute("SELECT instance_id, name FROM instances"))
    assert names == {iid: f"node-{n}" for n, iid in enumerate(ids, 1)}


def test_late_data_in_the_overlap_shows_up(aws, tmp_path: Path) -> None:
    ec2, cw = boto3.client("ec2"), boto3.client("cloudwatch")
    a, b, c = create_fleet(ec2, 3)
    now = align(time.time(), P)
    put_points(
        cw,
        [
            (iid, m, now - k * P, 30.0 + k)
            for iid in (a, b, c)
            for m in ("cpu", "memory")
            for k in range(1, 13)
            if not (iid == c and m == "memory" and k == 2)
        ],
    )
    settings = cw_settings(tmp_path)
    ingest(settings, now)
    before = stored(settings.db)
    assert before[(a, "cpu")][now - P] == 31.0 and now - 2 * P not in before[(c, "memory")]
    # CloudWatch fills late buckets: a second datum in the last bucket, a gap filled, the current bucket started
    put_points(cw, [(a, "cpu", now - P + 100, 41.0), (c, "memory", now - 2 * P + 5, 77.0), (b, "cpu", now + 30, 55.0)])
    report = ingest(settings, now + 120)
    after = stored(settings.db)
    assert after[(a, "cpu")][now - P] == 36.0  # the average of 31 and 41
    assert after[(c, "memory")][now - 2 * P] == 77.0 and after[(b, "cpu")][now] == 55.0
    assert sum(map(len, after.values())) == sum(map(len, before.values())) + 2 and report.errors == []


def test_a_fleet_needing_several_calls_uses_exactly_the_minimum(aws, tmp_path: Path) -> None:
    ec2 = boto3.client("ec2")
    cw = boto3.client("cloudwatch")
    ids = create_fleet(ec2, 7)
    now = align(time.time(), P)
    put_points(cw, [(iid, m, now - k * P, 20.0 + k) for iid in ids for m in ALL for k in (1, 2)])
    sent: list[dict] = []
    cw.meta.events.register("provide-client-params.cloudwatch.GetMetricData", lambda params, **_: sent.append(dict(params)))
    settings = cw_settings(tmp_path, train_days=14)  # 4032 points a series: 25 series a call
    report = ingest(settings, now, CloudWatchSource(settings, cloudwatch=cw))
    assert report.calls == report.calls_required == math.ceil(28 / (100_800 // 4032)) == 2 == len(sent)
    for params in sent:
        span = int((params["EndTime"] - params["StartTime"]).total_seconds())
        assert params["ScanBy"] == "TimestampAscending" and span % P == 0 and int(params["StartTime"].timestamp()) % P == 0
        assert len(params["MetricDataQueries"]) <= 500 and len(params["MetricDataQueries"]) * span // P <= 100_800
    assert sum(len(p["MetricDataQueries"]) for p in sent) == 28
    data = stored(settings.db)
    assert set(data) == {(iid, m) for iid in ids for m in ALL} and all(len(v) == 2 for v in data.values())


def test_discovery_by_tag_and_threshold_tags(aws, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ec2 = boto3.client("ec2")
    web = create_fleet(ec2, 3, tags={"team": "web"}, prefix="web")
    create_fleet(ec2, 2, tags={"team": "db"}, prefix="db")
    ec2.create_tags(Resources=[web[0]], Tags=[{"Key": "headroom:threshold", "Value": "65"}])
    ec2.create_tags(Resources=[web[1]], Tags=[{"Key": "headroom:threshold", "Value": "lots"}])
    ec2.stop_instances(InstanceIds=[web[2]])
    settings = cw_settings(tmp_path, instance_tag="team=web", threshold=85)
    infos = CloudWatchSource(settings).list_instances()
    assert [(i.instance_id, i.name, i.threshold_tag) for i in infos] == sorted([(web[0], "web-1", 65.0), (web[1], "web-2", None)])
    assert web[1] in caplog.text and "lots" in caplog.text
    ingest(settings, align(time.time(), P))
    with sqlite3.connect(settings.db) as conn:
        assert dict(conn.execute("SELECT instance_id, threshold FROM instances")) == {web[0]: 65.0, web[1]: 85.0}


def test_explicit_instance_list_keeps_its_order_and_unknown_ids(aws, tmp_path: Path) -> None:
    ids = create_fleet(boto3.client("ec2"), 2)
    missing = "i-0123456789abcdef0"
    infos = CloudWatchSource(cw_settings(tmp_path, instances=[ids[1], missing, ids[0]])).list_instances()
    assert [(i.instance_id, i.name) for i in infos] == [(ids[1], "node-2"), (missing, None), (ids[0], "node-1")]


def test_memory_with_agent_dimensions_and_the_legacy_metric(aws, tmp_path: Path) -> None:
    ec2, cw = boto3.client("ec2"), boto3.client("cloudwatch")
    agent, legacy = create_fleet(ec2, 2)
    now = align(time.time(), P)
    dims = {agent: [{"Name": "InstanceId", "Value": agent}, {"Name": "InstanceType", "Value": "t3.micro"}]}
    put_points(cw, [(agent, "memory", now - P, 61.0)], memory_dims=dims)
    put_points(cw, [(legacy, "memory", now - P, 42.0)], memory="legacy")
    put_points(cw, [(iid, "cpu", now - P, 5.0) for iid in (agent, legacy)])
    settings = cw_settings(tmp_path)
    source = CloudWatchSource(settings)
    ingest(settings, now, source)
    assert source.metrics_of(agent) == ["cpu", "memory", "network_in", "network_out"] and "memory" not in source.metrics_of(
        legacy
    )
    assert stored(settings.db)[(agent, "memory")] == {now - P: 61.0} and (legacy, "memory") not in stored(settings.db)
    old = cw_settings(tmp_path / "legacy", memory_metric="legacy")
    ingest(old, now)
    assert stored(old.db)[(legacy, "memory")] == {now - P: 42.0} and (agent, "memory") not in stored(old.db)


def test_worker_cli_fills_samples_from_moto(aws, tmp_path: Path) -> None:
    ec2, cw = boto3.client("ec2"), boto3.client("cloudwatch")
    ids = create_fleet(ec2, 3)
    now = align(time.time(), P)
    put_points(cw, [(iid, m, now - k * P, 12.0 + k) for iid in ids for m in ALL for k in range(1, 7)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")}
    env.update(
        HEADROOM_SOURCE="cloudwatch",
        HEADROOM_DB=str(tmp_path / "cli.db"),
        HEADROOM_TRAIN_DAYS="0.25",
        HEADROOM_CONFIG=str(tmp_path / "none.toml"),
    )
    assert env["AWS_ENDPOINT_URL"] == aws.url
    done = subprocess.run(
        [sys.executable, str(ROOT / "worker.py"), "--once", "--only", "ingest"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = stored(tmp_path / "cli.db")
    assert {key: len(series) for key, series in data.items()} == {(iid, m): 6 for iid in ids for m in ALL}
    assert "3 instances, 72 datapoints, 1 calls (minimum 1)" in done.stderr


# ---- botocore's Stubber on a real client: pages and statuses moto never returns ----
@pytest.fixture()
def stubbed(tmp_path: Path):
    client = boto3.client("cloudwatch", region_name="us-east-1", aws_access_key_id="stub", aws_secret_access_key="stub")
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="stub", aws_secret_access_key="stub")
    with Stubber(client) as stubber:
        yield CloudWatchSource(cw_settings(tmp_path), cloudwatch=client, ec2=ec2), stubber
        stubber.assert_no_pending_responses()


def _result(qid: str, stamps: list[int], values: list[float], status: str = "Complete", **extra: object) -> dict:
    return {"Id": qid, "Label": qid, "Timestamps": [when(t) for t in stamps], "Values": values, "StatusCode": status, **extra}


def test_next_token_pages_are_followed_and_counted(stubbed) -> None:
    source, stubber = stubbed
    t0, end = 1_800_000_000, 1_800_000_000 + 6 * P
    requests = [SeriesRequest("i-a", "cpu", t0), SeriesRequest("i-b", "cpu", t0 + 2 * P)]
    expect = {"MetricDataQueries": ANY, "StartTime": when(t0), "EndTime": when(end), "ScanBy": "TimestampAscending"}
    page1 = {
        "MetricDataResults": [
            _result("q0", [t0, t0 + P], [1.0, 2.0], "PartialData"),
            _result("q1", [t0 + P, t0 + 2 * P], [8.0, 9.0], "PartialData"),
        ],
        "NextToken": "page-2",
    }
    page2 = {"MetricDataResults": [_result("q0", [t0 + 2 * P, t0 + 3 * P], [3.0, 4.0]), _result("q1", [t0 + 3 * P], [10.0])]}
    stubber.add_response("get_metric_data", page1, expect)
    stubber.add_response("get_metric_data", page2, {**expect, "NextToken": "page-2"})
    result = source.fetch(requests, end)
    assert sorted(result.rows) == [("i-a", "cpu", t0 + k * P, float(k + 1)) for k in range(4)] + [
        ("i-b", "cpu", t0 + 2 * P, 9.0),
        ("i-b", "cpu", t0 + 3 * P, 10.0),
    ]
    assert (result.calls, result.calls_required, result.errors) == (2, 1, [])


def test_internal_error_and_forbidden_are_reported_per_query(stubbed, caplog: pytest.LogCaptureFixture) -> None:
    source, stubber = stubbed
    t0, end = 1_800_000_000, 1_800_000_000 + 3 * P
    requests = [SeriesRequest("i-a", "cpu", t0), SeriesRequest("i-b", "cpu", t0), SeriesRequest("i-c", "cpu", t0)]
    response = {
        "MetricDataResults": [
            _result("q0", [t0, t0 + P], [1.0, 2.0]),
            _result("q1", [], [], "InternalError", Messages=[{"Code": "InternalError", "Value": "try again later"}]),
            _result("q2", [], [], "Forbidden"),
        ],
        "Messages": [{"Code": "Notice", "Value": "whole-call message"}],
    }
    stubber.add_response(
        "get_metric_data", response, {"MetricDataQueries": ANY, "StartTime": ANY, "EndTime": ANY, "ScanBy": "TimestampAscending"}
    )
    with caplog.at_level(logging.WARNING):
        result = source.fetch(requests, end)
    assert sorted(result.rows) == [("i-a", "cpu", t0, 1.0), ("i-a", "cpu", t0 + P, 2.0)]
    assert len(result.errors) == 2
    assert (
        result.errors[0].startswith("i-b cpu") and "InternalError" in result.errors[0] and "try again later" in result.errors[0]
    )
    assert result.errors[1] == "i-c cpu: Forbidden" and "whole-call message" in caplog.text


def test_a_failed_call_loses_only_its_own_series(stubbed) -> None:
    source, stubber = stubbed
    end = 1_800_000_000
    requests = [SeriesRequest(f"i-{n:02d}", "cpu", end - 14 * 86_400) for n in range(30)]  # 25 + 5 series
    stubber.add_client_error(
        "get_metric_data", service_error_code="AccessDenied", service_message="not allowed", http_status_code=403
    )
    stubber.add_response("get_metric_data", {"MetricDataResults": [_result("q0", [end - P], [7.0])]})
    result = source.fetch(requests, end)
    assert result.rows == [("i-25", "cpu", end - P, 7.0)]
    assert (result.calls, result.calls_required) == (2, 2) and len(result.errors) == 1 and "AccessDenied" in result.errors[0]
    stubber.add_client_error("get_metric_data", service_error_code="AccessDenied", http_status_code=403)
    with pytest.raises(CloudWatchError, match="AccessDenied"):
        source.fetch(requests[:3], end)


def test_memory_is_queried_for_everyone_when_list_metrics_is_denied(stubbed, aws) -> None:
    source, stubber = stubbed
    source.ec2 = boto3.client("ec2")  # the real one, on moto
    ids = create_fleet(source.ec2, 2)
    stubber.add_client_error("list_metrics", service_error_code="AccessDenied", http_status_code=403)
    assert sorted(i.instance_id for i in source.list_instances()) == sorted(ids)
    assert all("memory" in source.metrics_of(iid) for iid in ids)


def test_implausible_values_from_cloudwatch_are_dropped_and_reported(aws, tmp_path: Path) -> None:
    ec2, cw = boto3.client("ec2"), boto3.client("cloudwatch")
    [iid] = create_fleet(ec2, 1)
    now = align(time.time(), P)
    put_points(cw, [(iid, "cpu", now - 3 * P, 40.0), (iid, "cpu", now - 2 * P, 1000.0), (iid, "cpu", now - P, 100.5)])
    settings = cw_settings(tmp_path)
    report = ingest(settings, now)
    assert stored(settings.db)[(iid, "cpu")] == {now - 3 * P: 40.0, now - P: 100.0}  # 1000 % dropped, 100.5 % clipped
    assert [e for e in report.errors if "implausible" in e] == [
        f"1 implausible datapoints dropped (e.g. {iid} cpu 1000 at {now - 2 * P})"
    ]
