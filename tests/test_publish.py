"""Forecasts into CloudWatch: the datums (pure), PutMetricData against the moto server read back with GetMetricData,
and the alarm and target-tracking policy of docs/alerts.md created in moto on the metrics Headroom publishes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import boto3
import numpy as np
import pytest

from forecasting.alerts import evaluate_alerts
from forecasting.publish import MAX_DATUMS, Figures, Publisher, batches, cycle_figures, datums, instance_figures, publish_cycle
from forecasting.settings import Settings, load_settings
from forecasting.store import ForecastRecord, Store
from tests.fixtures.services import MotoServer
from tests.fixtures.stores import ROOT

P = 300
README_INSTANCE = "i-0123456789abcdef0"  # the instance of the alarm example in docs/alerts.md


def forecast(iid: str, made_at: int, mean: list[float]) -> dict:
    return {
        "instance_id": iid,
        "run_id": 1,
        "model": "arima",
        "is_champion": True,
        "made_at": made_at,
        "origin_ts": made_at - P,
        "timestamps": [made_at + P * k for k in range(len(mean))],
        "mean": mean,
        "lower": [m - 5 for m in mean],
        "upper": [m + 5 for m in mean],
    }


def stored(row: dict) -> ForecastRecord:
    """A forecast row as the store reads it back."""
    return ForecastRecord(forecast_id=1, **{k: tuple(v) if isinstance(v, list) else v for k, v in row.items()})


def test_figures_follow_the_forecast_and_the_alert_crossing_rule() -> None:
    now = 1_800_000_000
    rising = stored(forecast("i-a", now, list(np.linspace(50, 95, 12))))
    f = instance_figures(rising, threshold=80, alert_on="mean", warning_open=True, now=now)
    assert (f.predicted, f.upper, f.peak, f.warning_open) == (95.0, 100.0, 95.0, True)
    assert f.minutes_to_limit == 40.0  # first step at or above 80 % is step 8: 8 × 5 min from now
    flat = instance_figures(stored(forecast("i-b", now, [30.0] * 12)), threshold=80, alert_on="mean", warning_open=False, now=now)
    assert flat.minutes_to_limit is None and flat.peak == 30.0
    near = stored(
        forecast("i-c", now, list(np.linspace(60, 79.5, 12)))
    )  # only the 60 % level (79.5 + 0.154 · 5) reaches 80, at step 11
    assert instance_figures(near, threshold=80, alert_on="mean", warning_open=False, now=now).minutes_to_limit is None
    likely = instance_figures(near, threshold=80, alert_on="likely", warning_open=False, now=now)
    assert likely.minutes_to_limit == 55.0 and likely.peak == pytest.approx(79.5 + 0.154 * 5, abs=0.01)
    # CPU already over the limit: the limit is reached now, and the peak is never below it; an older sample does not count
    over = instance_figures(stored(forecast("i-d", now, [30.0] * 12)), 80, "mean", True, now, latest=(now, 93.0))
    assert over.minutes_to_limit == 0.0 and over.peak == 93.0
    old = instance_figures(stored(forecast("i-d", now, [30.0] * 12)), 80, "mean", False, now, latest=(now - 2 * P, 93.0))
    assert old.minutes_to_limit is None and old.peak == 30.0


def test_datums_dimensions_group_aggregates_and_the_fewest_calls() -> None:
    at = 1_800_000_000
    figs = [
        Figures("i-a", at, 70.0, 80.0, 90.0, 12.0, True),
        Figures("i-b", at, 50.0, 60.0, 55.0, None, False),
        Figures("i-c", at, 20.0, 30.0, 25.0, None, False),
    ]
    items = datums(figs, {"i-a": "web-asg", "i-b": "web-asg"})
    dims = {(d["MetricName"], tuple((x["Name"], x["Value"]) for x in d["Dimensions"])): d["Value"] for d in items}
    assert dims[("PredictedCPU", (("InstanceId", "i-a"), ("AutoScalingGroupName", "web-asg")))] == 70.0
    assert dims[("MinutesToLimit", (("InstanceId", "i-a"), ("AutoScalingGroupName", "web-asg")))] == 12.0
    assert ("MinutesToLimit", (("InstanceId", "i-b"), ("AutoScalingGroupName", "web-asg"))) not in dims  # no crossing: absent
    assert dims[("WarningOpen", (("InstanceId", "i-c"),))] == 0.0  # not in a group: InstanceId alone
    group = (("AutoScalingGroupName", "web-asg"),)
    assert dims[("PredictedCPU", group)] == 60.0 and dims[("PredictedCPUUpper", group)] == 70.0  # the members' mean
    assert (
        dims[("PredictedPeakCPU", group)] == 90.0
        and dims[("WarningOpen", group)] == 1.0
        and dims[("MinutesToLimit", group)] == 12.0
    )
    assert len(items) == 5 + 4 + 4 + 5
    units = {d["MetricName"]: d["Unit"] for d in items}
    assert units == {
        "PredictedCPU": "Percent",
        "PredictedCPUUpper": "Percent",
        "PredictedPeakCPU": "Percent",
        "MinutesToLimit": "None",
        "WarningOpen": "None",
    }
    many = [{"n": k} for k in range(2 * MAX_DATUMS + 1)]
    assert [len(b) for b in batches(many)] == [1000, 1000, 1]
    assert batches([]) == []


@pytest.fixture()
def settings(tmp_path: Path, clean_env: Path, aws: MotoServer) -> Settings:
    return load_settings(db=tmp_path / "headroom.db", source="cloudwatch", region="us-east-1", cloudwatch_publish=True)


def make_group(name: str, size: int) -> list[str]:
    """An Auto Scaling group in moto; its instances carry the aws:autoscaling:groupName tag, as on AWS."""
    boto3.client("ec2").create_launch_template(
        LaunchTemplateName=f"{name}-lt", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"}
    )
    asg = boto3.client("autoscaling")
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": f"{name}-lt"},
        MinSize=size,
        MaxSize=size * 3,
        DesiredCapacity=size,
        AvailabilityZones=["us-east-1a"],
    )
    return sorted(
        i["InstanceId"]
        for i in asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]["Instances"]
    )


def read_back(metric: str, dims: dict[str, str], at: int) -> list[float]:
    """GetMetricData for one published series around ``at``."""
    response = boto3.client("cloudwatch").get_metric_data(
        MetricDataQueries=[
            {
                "Id": "q",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "Headroom",
                        "MetricName": metric,
                        "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
            }
        ],
        StartTime=datetime.fromtimestamp(at - 600, UTC),
        EndTime=datetime.fromtimestamp(at + 600, UTC),
    )
    return response["MetricDataResults"][0]["Values"]


def test_a_cycle_is_published_and_read_back_with_get_metric_data(settings: Settings) -> None:
    members = make_group("web-asg", 2)
    now = int(datetime.now(UTC).timestamp()) // 60 * 60
    with Store(settings.db) as store:
        for iid in (README_INSTANCE, *members):
            store.samples.upsert_instance(iid, None, 80.0, now - 86_400)
        store.forecasts.record(
            [
                forecast(README_INSTANCE, now, list(np.linspace(60, 90, 12))),
                forecast(members[0], now, [40.0] * 11 + [50.0]),
                forecast(members[1], now, [60.0] * 11 + [70.0]),
                {**forecast("i-0ffffffffffffffff", now - 3600, [99.0] * 12)},
            ]
        )  # an old forecast: not published
        store.samples.upsert_instance("i-0ffffffffffffffff", None, 80.0, now - 86_400)
        evaluate_alerts(store, settings, now)  # README_INSTANCE crosses: a warning opens
        publisher = Publisher()
        said = publish_cycle(store, settings, now, publisher)
        result = publisher.wait(60)
    assert said == "cloudwatch: publishing 3 instances"
    assert result is not None and result.error is None and (result.calls, result.calls_required, result.groups) == (1, 1, 1)
    assert read_back("WarningOpen", {"InstanceId": README_INSTANCE}, now) == [1.0]
    assert read_back("PredictedCPU", {"InstanceId": README_INSTANCE}, now) == [90.0]
    assert read_back("PredictedCPUUpper", {"InstanceId": README_INSTANCE}, now) == [95.0]
    assert read_back("MinutesToLimit", {"InstanceId": README_INSTANCE}, now) == [40.0]  # step 8 of 5 min
    assert read_back("PredictedCPU", {"InstanceId": members[0], "AutoScalingGroupName": "web-asg"}, now) == [50.0]
    assert read_back("MinutesToLimit", {"InstanceId": members[0], "AutoScalingGroupName": "web-asg"}, now) == []  # absent
    assert read_back("PredictedCPU", {"AutoScalingGroupName": "web-asg"}, now) == [60.0]  # the group's mean, for scaling
    assert read_back("WarningOpen", {"AutoScalingGroupName": "web-asg"}, now) == [0.0]
    assert read_back("PredictedCPU", {"InstanceId": "i-0ffffffffffffffff"}, now) == []


def test_cloudwatch_down_costs_one_line_and_never_raises(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.fixtures.services import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    now = 1_800_000_000
    with caplog.at_level("WARNING", logger="headroom.publish"):
        result = Publisher().publish([Figures("i-a", now, 50.0, 60.0, 55.0, None, False)], settings)
    assert result.error is not None and "2 failed" in result.error and "Auto Scaling groups not read" in result.error
    assert (result.calls, result.published, result.datums) == (1, 0, 4)
    [line] = [r.getMessage() for r in caplog.records if r.name == "headroom.publish"]
    assert line.startswith("cloudwatch published 0 of 4 metrics for 1 instances (0 groups) in 1 PutMetricData calls (minimum 1)")


def readme_files() -> dict[str, str]:
    """The JSON files docs/alerts.md writes with ``cat > NAME <<'EOF'``, by name."""
    text = (ROOT / "docs" / "alerts.md").read_text()
    return dict(re.findall(r"cat > (\S+\.json) <<'EOF'\n(.*?)\nEOF\n", text, flags=re.S))


def readme_cli_calls() -> list[tuple[str, str, str]]:
    """(service, operation, file) of each ``aws SERVICE OPERATION --cli-input-json file://FILE`` in docs/alerts.md."""
    text = (ROOT / "docs" / "alerts.md").read_text()
    return re.findall(r"^aws (\S+) (\S+) --cli-input-json file://(\S+)$", text, flags=re.M)


def test_the_readme_alarm_and_scaling_policy_are_created_in_moto_on_the_published_metrics(settings: Settings) -> None:
    import json

    calls = readme_cli_calls()
    files = readme_files()
    assert [(s, o) for s, o, _ in calls] == [("cloudwatch", "put-metric-alarm"), ("autoscaling", "put-scaling-policy")]
    topic = boto3.client("sns").create_topic(Name="headroom-warnings")["TopicArn"]  # `aws sns create-topic` of docs/alerts.md
    members = make_group("web-asg", 2)
    for service, operation, name in calls:  # what `aws ... --cli-input-json file://...` sends
        getattr(boto3.client(service), operation.replace("-", "_"))(**json.loads(files[name]))
    [alarm] = boto3.client("cloudwatch").describe_alarms(AlarmNames=["headroom-warning-i-0123456789abcdef0"])["MetricAlarms"]
    assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic]
    [policy] = boto3.client("autoscaling").describe_policies(AutoScalingGroupName="web-asg")["ScalingPolicies"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    spec = policy["TargetTrackingConfiguration"]["CustomizedMetricSpecification"]
    # both watch a metric Headroom really publishes, with exactly its dimensions
    now = int(datetime.now(UTC).timestamp())
    figures = [Figures(README_INSTANCE, now, 85.0, 95.0, 90.0, 20.0, True)] + [
        Figures(m, now, 70.0, 80.0, 75.0, None, False) for m in members
    ]
    assert Publisher().publish(figures, settings).error is None
    cloudwatch = boto3.client("cloudwatch")
    for namespace, metric, dims in (
        (alarm["Namespace"], alarm["MetricName"], alarm["Dimensions"]),
        (spec["Namespace"], spec["MetricName"], spec["Dimensions"]),
    ):
        listed = cloudwatch.list_metrics(Namespace=namespace, MetricName=metric, Dimensions=dims)["Metrics"]
        assert any(sorted(m["Dimensions"], key=str) == sorted(dims, key=str) for m in listed), (metric, dims)
    assert read_back(alarm["MetricName"], {d["Name"]: d["Value"] for d in alarm["Dimensions"]}, now) == [
        1.0
    ]  # the alarm would fire
    assert read_back(spec["MetricName"], {d["Name"]: d["Value"] for d in spec["Dimensions"]}, now) == [70.0]


def test_publishing_off_publishes_nothing(tmp_path: Path, clean_env: Path) -> None:
    settings = load_settings(db=tmp_path / "h.db")
    with Store(settings.db) as store:
        assert publish_cycle(store, settings, 1_800_000_000) == "cloudwatch publishing off"
        assert cycle_figures(store, 1_800_000_000, 300, "likely") == []


def test_a_hung_cloudwatch_never_holds_the_process_at_exit(tmp_path: Path, webhook_sink) -> None:
    """A publish into an endpoint that accepts and never answers: the process still ends soon after its work."""
    import subprocess
    import sys
    import time

    from tests.fixtures.stores import environ_without_settings

    webhook_sink.hang = 120
    script = (
        "from forecasting.publish import PUBLISHER, Figures; from forecasting.settings import load_settings; "
        "print(PUBLISHER.submit([Figures('i-a', 1800000000, 50.0, 60.0, 55.0, None, False)], load_settings(cloudwatch_publish=True)))"
    )
    env = {
        **environ_without_settings(),
        "AWS_ENDPOINT_URL": webhook_sink.url.rsplit("/", 1)[0],
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
        "HEADROOM_CONFIG": str(tmp_path / "none.toml"),
    }
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    took = time.monotonic() - started
    assert done.returncode == 0 and done.stdout.strip() == "cloudwatch: publishing 1 instances", done.stderr
    assert webhook_sink.received  # it did reach the endpoint, which never answered
    assert took < 25, took  # EXIT_WAIT_SECONDS (10 s) and the interpreter's start, not the 4 tries × 10 s read timeout
    assert "still running at exit" in done.stderr
