"""Exports in the real ``get-metric-data`` shapes, made by a moto server: read right, or refused with a reason.

An export holds no dimensions: series that do not name their instance cannot be told apart, two
statistics of one metric cannot both be the metric, and a partial export must not pass as whole.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import boto3
import pytest

from forecasting.bench.ingest import put_points
from forecasting.sources.base import align
from forecasting.sources.export import ExportError, parse_export
from tests.fixtures.services import MotoServer

P = 300
IDS = ["i-0aaa00000000000a1", "i-0bbb00000000000b2", "i-0ccc00000000000c3"]


def cli_json(response: dict[str, Any]) -> str:
    """What ``aws cloudwatch get-metric-data --output json`` prints for a response (ISO times, no metadata)."""
    body = {key: value for key, value in response.items() if key != "ResponseMetadata"}
    return json.dumps(body, indent=4, default=lambda moment: moment.isoformat() if isinstance(moment, datetime) else str(moment))


def cpu_query(query_id: str, instance_id: str, stat: str = "Average", label: str | None = None) -> dict[str, Any]:
    metric = {
        "Namespace": "AWS/EC2",
        "MetricName": "CPUUtilization",
        "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
    }
    query: dict[str, Any] = {"Id": query_id, "MetricStat": {"Metric": metric, "Period": P, "Stat": stat}, "ReturnData": True}
    if label is not None:
        query["Label"] = label
    return query


@pytest.fixture()
def fleet(aws: MotoServer) -> tuple[Any, int, dict[str, list[float]]]:
    """Three instances with different CPU over the last hour in moto; the client, the end time and each one's values."""
    cloudwatch = boto3.client("cloudwatch")
    end = align(time.time(), P)
    values = {iid: [10.0 * (n + 1) + k for k in range(12)] for n, iid in enumerate(IDS)}
    put_points(
        cloudwatch, [(iid, "cpu", end - (12 - k) * P, value) for iid, vals in values.items() for k, value in enumerate(vals)]
    )
    return cloudwatch, end, values


def fetch(cloudwatch: Any, end: int, queries: list[dict[str, Any]]) -> dict[str, Any]:
    return cloudwatch.get_metric_data(
        MetricDataQueries=queries,
        StartTime=datetime.fromtimestamp(end - 13 * P),
        EndTime=datetime.fromtimestamp(end),
        ScanBy="TimestampAscending",
    )


def test_several_instances_under_ids_m1_m3_and_default_labels_are_refused(fleet) -> None:
    cloudwatch, end, _ = fleet
    response = fetch(cloudwatch, end, [cpu_query(f"m{n}", iid) for n, iid in enumerate(IDS, 1)])
    assert [r["Id"] for r in response["MetricDataResults"]] == ["m1", "m2", "m3"] and all(
        r["Values"] for r in response["MetricDataResults"]
    )
    with pytest.raises(ExportError, match=r"3 cpu series \(m1, m2, m3\) do not say which instance each belongs to"):
        parse_export(cli_json(response), instance="i-0given000000001", name="fleet.json")


def test_the_same_instances_with_labels_that_name_them_are_read_apart(fleet) -> None:
    cloudwatch, end, values = fleet
    response = fetch(cloudwatch, end, [cpu_query(f"m{n}", iid, label=f"{iid} CPUUtilization") for n, iid in enumerate(IDS, 1)])
    parsed = parse_export(cli_json(response), instance="i-0given000000001")
    assert parsed.instances == IDS
    for iid in IDS:
        ts, vals = parsed.series[iid]["cpu"]
        assert vals.tolist() == values[iid] and ts.tolist() == [end - (12 - k) * P for k in range(12)]


def test_two_statistics_of_one_metric_are_refused(fleet) -> None:
    cloudwatch, end, _ = fleet
    response = fetch(cloudwatch, end, [cpu_query("cpu_avg", IDS[0]), cpu_query("cpu_max", IDS[0], stat="Maximum")])
    with pytest.raises(
        ExportError,
        match=r"2 cpu series \(cpu_avg, cpu_max\), e\.g\. two statistics of one metric; export one statistic per metric",
    ):
        parse_export(cli_json(response), instance=IDS[0])
    named = fetch(
        cloudwatch,
        end,
        [
            cpu_query("a", IDS[0], label=f"{IDS[0]} CPU Average"),
            cpu_query("b", IDS[0], stat="Maximum", label=f"{IDS[0]} CPU Maximum"),
        ],
    )
    with pytest.raises(ExportError, match=rf"2 cpu series for {IDS[0]} \(a, b\)"):
        parse_export(cli_json(named))


@pytest.mark.parametrize("cut", ["PartialData", "NextToken after --max-items"])
def test_a_partial_export_is_refused(fleet, cut: str) -> None:
    cloudwatch, end, _ = fleet
    response = fetch(cloudwatch, end, [cpu_query("cpu", IDS[0])])
    page = json.loads(cli_json(response))
    if cut == "PartialData":
        page["MetricDataResults"][0]["StatusCode"] = "PartialData"
    else:
        page["NextToken"] = "eyJuZXh0VG9rZW4iOiBudWxsLCAiYm90b190cnVuY2F0ZV9hbW91bnQiOiA1fQ=="
    with pytest.raises(ExportError, match=r"the export is partial"):
        parse_export(json.dumps(page), instance=IDS[0])
    complete = parse_export(cli_json(response), instance=IDS[0])  # the same page, complete, is read
    assert len(complete.series[IDS[0]]["cpu"][0]) == 12
