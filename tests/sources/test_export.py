"""The export parser: get-metric-data JSON (one page, many pages) and CSV in, exact series out, or one clear error."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from forecasting.sources.demo import demo_instance_id
from forecasting.sources.export import (
    LATEST_TS,
    ExportError,
    ParsedExport,
    metric_key,
    parse_export,
    parse_timestamp,
    read_export,
    to_json_export,
)
from tests.fixtures.stores import demo_parsed

START = 1_760_000_000 // 300 * 300


def assert_same(a: ParsedExport, b: ParsedExport) -> None:
    """Same instances, metrics, timestamps and values, bit for bit."""
    assert {i: sorted(m) for i, m in a.series.items()} == {i: sorted(m) for i, m in b.series.items()}
    for iid, metrics in a.series.items():
        for metric, (ts, vals) in metrics.items():
            other_ts, other_vals = b.series[iid][metric]
            assert other_ts.dtype == np.int64
            assert np.array_equal(ts, other_ts) and np.array_equal(vals, other_vals)


def export_doc(results: list[dict]) -> str:
    return json.dumps({"MetricDataResults": results, "Messages": []})


def cpu_result(**fields: object) -> dict:
    return {
        "Id": "cpu",
        "Label": "CPUUtilization",
        "Timestamps": [START, START + 300],
        "Values": [12.5, 14.0],
        "StatusCode": "Complete",
        **fields,
    }


# ---- valid exports ---------------------------------------------------------
def test_a_demo_export_round_trips_exactly() -> None:
    parsed = demo_parsed()
    text = to_json_export(parsed)
    back = parse_export(text)
    assert_same(parsed, back)
    assert back.instances == [demo_instance_id(i) for i in (0, 2, 4)]
    assert "memory" not in back.series[demo_instance_id(4)]  # the cache publishes no memory
    assert back.points() == sum(len(ts) for m in parsed.series.values() for ts, _ in m.values())
    assert sorted(back.rows()) == sorted(parsed.rows())
    assert_same(parsed, parse_export(text.encode("utf-8")))


def test_concatenated_pages_and_a_list_of_pages_give_the_whole_export() -> None:
    parsed = demo_parsed(hours=4)
    results = json.loads(to_json_export(parsed))["MetricDataResults"]
    # NextToken paging: every query's series is cut in two, the halves arrive on different pages
    first, second = [], []
    for result in results:
        half = len(result["Timestamps"]) // 2
        first.append({**result, "Timestamps": result["Timestamps"][:half], "Values": result["Values"][:half]})
        second.append({**result, "Timestamps": result["Timestamps"][half:], "Values": result["Values"][half:]})
    pages = [{"MetricDataResults": first, "NextToken": "abc"}, {"MetricDataResults": second}]
    assert_same(parsed, parse_export(json.dumps(pages[0], indent=2) + "\n" + json.dumps(pages[1], indent=2) + "\n"))
    assert_same(parsed, parse_export(json.dumps(pages[0]) + json.dumps(pages[1])))
    assert_same(parsed, parse_export(json.dumps(pages)))


def test_points_come_back_sorted_and_a_repeated_timestamp_keeps_the_later_value() -> None:
    result = cpu_result(Timestamps=[START + 600, START, START + 300, START], Values=[3.0, 1.0, 2.0, 9.0])
    ts, vals = parse_export(export_doc([result]), instance="i-0abc12345").series["i-0abc12345"]["cpu"]
    assert ts.tolist() == [START, START + 300, START + 600]
    assert vals.tolist() == [9.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("cpu", "cpu"),
        ("CPUUtilization", "cpu"),
        ("cpu_utilization", "cpu"),
        ("CPU-Percent", "cpu"),
        ("value", "cpu"),
        ("memory", "memory"),
        ("mem_used_percent", "memory"),
        ("MemoryUtilization", "memory"),
        ("mem", "memory"),
        ("NetworkIn", "network_in"),
        ("network-in", "network_in"),
        ("net_in", "network_in"),
        ("NetworkOut", "network_out"),
        ("network out", "network_out"),
        ("net_out", "network_out"),
        ("i-0abc1234def567890 CPUUtilization", "cpu"),
        ("cpu_i_0abc1234def567890", "cpu"),
        ("m_network_out_i_0abc12345", "network_out"),
        ("CPUCreditBalance", "cpu_credits"),
        ("cpu_credit_balance_avg", "cpu_credits"),
        ("DiskReadOps", None),
        ("NetworkPacketsIn", None),
        ("StatusCheckFailed", None),
        ("m1", None),
        ("", None),
    ],
)
def test_metric_names(name: str, key: str | None) -> None:
    assert metric_key(name) == key


def test_the_instance_comes_from_the_id_or_label_else_from_the_default() -> None:
    results = [
        cpu_result(Id="m1", Label="i-0AbC12345678 CPUUtilization"),
        cpu_result(Id="mem_i_0abc12345678", Label="", Values=[40.0, 41.0]),
        cpu_result(Id="cpu", Label="CPUUtilization", Values=[1.0, 2.0]),
    ]
    parsed = parse_export(export_doc(results), instance="web-1")
    assert parsed.instances == ["i-0abc12345678", "web-1"]
    assert parsed.series["i-0abc12345678"]["memory"][1].tolist() == [40.0, 41.0]
    assert parsed.series["web-1"]["cpu"][1].tolist() == [1.0, 2.0]


def test_timestamp_forms() -> None:
    t = 1_760_000_100
    forms = [
        "2025-10-09T08:55:00Z",
        "2025-10-09T08:55:00+00:00",
        "2025-10-09T10:55:00+02:00",
        "2025-10-09 08:55:00",
        "2025-10-09T08:55:00.000Z",
        str(t),
        f"{t}.0",
        t,
        float(t),
    ]
    assert {parse_timestamp(form, "x") for form in forms} == {t}


def test_a_csv_with_timestamp_and_metric_columns() -> None:
    parsed = demo_parsed(indexes=(1,), hours=3)
    metrics = parsed.series[demo_instance_id(1)]
    ts = metrics["cpu"][0]
    lines = ["\ufeffTimestamp,CPUUtilization,mem_used_percent,NetworkIn,NetworkOut,comment"]
    for k, t in enumerate(ts):
        cells = [repr(float(metrics[m][1][k])) for m in ("cpu", "memory", "network_in", "network_out")]
        lines.append(",".join([to_iso(int(t)), *cells, "ok"]))
    back = parse_export("\r\n".join(lines) + "\r\n\r\n", instance=demo_instance_id(1))
    assert_same(parsed, back)


def test_a_csv_with_an_instance_column_and_gaps() -> None:
    text = "ts,instance_id,value,memory\n1760000000,i-0aaa11112222,5,\n1760000300,,6,50\n1760000000,i-0bbb11112222,7,8\n"
    parsed = parse_export(text, instance="default")
    assert parsed.rows() == [
        ("default", "cpu", 1_760_000_300, 6.0),
        ("default", "memory", 1_760_000_300, 50.0),
        ("i-0aaa11112222", "cpu", 1_760_000_000, 5.0),
        ("i-0bbb11112222", "cpu", 1_760_000_000, 7.0),
        ("i-0bbb11112222", "memory", 1_760_000_000, 8.0),
    ]


def to_iso(ts: int) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- bad input: one line, saying what and where ------------------------------------
BAD = {
    "not JSON": ('{"MetricDataResults": [', "not valid JSON"),
    "a second document broken": (export_doc([cpu_result()]) + '\n{"MetricDataResults": [}', "line 2"),
    "wrong shape": ('{"Datapoints": [{"Average": 3.0}]}', "page 1 has no MetricDataResults"),
    "results not a list": ('{"MetricDataResults": {"Id": "cpu"}}', "no MetricDataResults list"),
    "a result not an object": (export_doc([cpu_result(), 5]), "MetricDataResults[1] of page 1 is not an object"),
    "lengths differ": (export_doc([cpu_result(Values=[1.0])]), "2 timestamps but 1 values"),
    "values not a list": (export_doc([cpu_result(Values="1,2")]), "must be lists"),
    "non-numeric value": (export_doc([cpu_result(Values=[1.0, "high"])]), "point 1: value 'high' is not a number"),
    "null value": (export_doc([cpu_result(Values=[None, 1.0])]), "point 0: value 'None' is not a number"),
    "boolean value": (export_doc([cpu_result(Values=[True, 1.0])]), "is not a number"),
    "NaN": (export_doc([cpu_result()]).replace("14.0", "NaN"), "point 1: value 'nan' is not a finite number"),
    "Infinity": (export_doc([cpu_result()]).replace("14.0", "-Infinity"), "not a finite number"),
    "huge integer": (export_doc([cpu_result()]).replace("14.0", "1" + "0" * 400), "too large"),
    "bad timestamp": (
        export_doc([cpu_result(Timestamps=["yesterday", START])]),
        "point 0: timestamp 'yesterday' is not ISO 8601",
    ),
    "timestamp in milliseconds": (export_doc([cpu_result(Timestamps=[START * 1000, START])]), "outside 1970..9999"),
    "timestamp before 1970": (export_doc([cpu_result(Timestamps=["1969-12-31T23:00:00Z", START])]), "outside 1970..9999"),
    "no CPU series": (export_doc([cpu_result(Id="mem", Label="mem_used_percent")]), "no CPU series"),
    "no results at all": (export_doc([]), "no CPU series"),
    "unknown metric": (
        export_doc([cpu_result(), cpu_result(Id="m2", Label="DiskReadOps")]),
        "MetricDataResults[1] (m2): cannot tell which metric",
    ),
    "nested too deep": ("[" * 50_000, "nested too deeply"),
    "empty": ("", "the file is empty"),
    "blank": (" \n\t\n", "the file is empty"),
    "CSV without a timestamp column": ("when,cpu\n1760000000,3\n", "no timestamp column"),
    "CSV without CPU": ("timestamp,memory\n1760000000,3\n", "no CPU column"),
    "CSV short row": ("timestamp,cpu\n1760000000,3\n1760000300\n", "line 3 has 1 fields, the header has 2"),
    "CSV non-numeric": ("timestamp,cpu\n1760000000,3\n1760000300,n/a\n", "line 3, column 'cpu': value 'n/a' is not a number"),
    "CSV NaN": ("timestamp,cpu\n1760000000,nan\n", "line 2, column 'cpu'"),
    "CSV two CPU columns": ("timestamp,cpu,CPUUtilization\n1760000000,3,4\n", "columns 'cpu', 'CPUUtilization' are all cpu"),
    "CPU over 100 %": (export_doc([cpu_result(Values=[12.0, 250.0])]), "point 1: cpu value 250 is outside 0-100 %"),
    "negative network": (
        export_doc([cpu_result(), cpu_result(Id="net_in", Label="NetworkIn", Values=[5.0, -1.0])]),
        "network_in value -1 is negative",
    ),
    "unsafe instance": ("timestamp,instance_id,cpu\n1760000000,i-a b,3\n", "line 2: invalid instance id 'i-a b'"),
    "CSV huge field": ('timestamp,cpu\n1760000000,"' + "9" * 200_000 + '"\n', "line 2 is not valid CSV"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_saying_what_and_where(case: str) -> None:
    text, expected = BAD[case]
    with pytest.raises(ExportError) as caught:
        parse_export(text, name="upload.json")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("upload.json: ")
    assert expected in message


def test_percent_values_a_hair_outside_0_100_are_clipped() -> None:
    parsed = parse_export(export_doc([cpu_result(Values=[100.4, -0.3])]), instance="i-0abc12345")
    assert parsed.series["i-0abc12345"]["cpu"][1].tolist() == [100.0, 0.0]


def test_bytes_that_are_not_utf8_or_over_the_limit() -> None:
    with pytest.raises(ExportError, match=r"^x.csv: not UTF-8 text \(byte 14\)$"):
        parse_export(b"timestamp,cpu\n\xff\xfe", name="x.csv")
    with pytest.raises(ExportError, match=r"^x.json: 0.0 MB is over the 0 MB limit$"):
        parse_export(export_doc([cpu_result()]).encode(), name="x.json", limit_bytes=100)


def test_read_export_refuses_a_large_file_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as handle:
        handle.truncate(200 * 1024 * 1024)  # sparse: no 200 MB written
    assert big.stat().st_blocks * 512 < 1024 * 1024
    with pytest.raises(ExportError, match=r"big.json: 209.7 MB is over the 100 MB limit"):
        read_export(str(big), limit_bytes=100 * 1000 * 1000)
    with pytest.raises(ExportError, match=r"missing.json: No such file or directory"):
        read_export(str(tmp_path / "missing.json"))


# ---- property-based --------------------------------------------------------
HEX = "0123456789abcdef"
instance_ids = st.builds(lambda digits: "i-" + digits, st.text(HEX, min_size=8, max_size=17))
percent = st.floats(0, 100, allow_nan=False)
byte_count = st.floats(0, 1e18, allow_nan=False)
stamps = st.lists(st.integers(0, LATEST_TS), min_size=1, max_size=30, unique=True)


@st.composite
def valid_exports(draw: st.DrawFn) -> ParsedExport:
    """Any instances (at least one with CPU), any subset of metrics, any timestamps and plausible values."""
    ids = draw(st.lists(instance_ids, min_size=1, max_size=3, unique=True))
    parsed = ParsedExport()
    for n, iid in enumerate(ids):
        others = draw(st.lists(st.sampled_from(["memory", "network_in", "network_out"]), unique=True))
        for metric in (["cpu"] if n == 0 or draw(st.booleans()) else []) + others:
            ts = np.array(sorted(draw(stamps)), dtype=np.int64)
            values = percent if metric in ("cpu", "memory") else byte_count
            vals = np.array(draw(st.lists(values, min_size=len(ts), max_size=len(ts))), dtype=float)
            parsed.series.setdefault(iid, {})[metric] = (ts, vals)
    return parsed


@hsettings(max_examples=150, deadline=None)
@given(valid_exports(), st.booleans())
def test_any_valid_export_round_trips(parsed: ParsedExport, as_bytes: bool) -> None:
    text = to_json_export(parsed)
    assert_same(parsed, parse_export(text.encode() if as_bytes else text, instance="unused"))


def parse_or_export_error(data: str | bytes) -> None:
    """The contract for any input: a ParsedExport with a CPU series, or ExportError (nothing else)."""
    try:
        parsed = parse_export(data, limit_bytes=10_000_000)
    except ExportError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert any("cpu" in metrics for metrics in parsed.series.values())
    for metrics in parsed.series.values():
        for ts, vals in metrics.values():
            assert len(ts) == len(vals) and np.all(np.diff(ts) > 0) and np.all(np.isfinite(vals))


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), st.binary()))
def test_arbitrary_text_or_bytes_parse_or_raise_export_error(data: str | bytes) -> None:
    parse_or_export_error(data)


@hsettings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("timestampcpuvalue,\n\r\"' 0123456789.-:TZe+nafi\x00")), max_size=200))
def test_csv_like_text_parses_or_raises_export_error(text: str) -> None:
    parse_or_export_error("timestamp,cpu\n" + text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
near_results = st.fixed_dictionaries(
    {},
    optional={
        "Id": st.sampled_from(["cpu", "mem", "NetworkIn", "m1", "cpu_i_0abc12345", 7]) | json_values,
        "Label": st.sampled_from(["CPUUtilization", "i-0abc12345 memory", ""]) | json_values,
        "Timestamps": st.lists(
            st.integers(-10, 2**70)
            | st.text(max_size=30)
            | st.sampled_from(["2025-01-01T00:00:00Z", "1760000000"])
            | json_values,
            max_size=5,
        ),
        "Values": st.lists(st.floats() | st.integers() | st.text(max_size=10) | json_values, max_size=5),
        "StatusCode": st.sampled_from(["Complete", "PartialData", "InternalError"]),
    },
)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(st.fixed_dictionaries({"MetricDataResults": st.lists(near_results | json_values, max_size=4)}), json_values),
        min_size=1,
        max_size=3,
    )
)
def test_export_shaped_garbage_parses_or_raises_export_error(pages: list[object]) -> None:
    text = "\n".join(json.dumps(page) for page in pages)
    parse_or_export_error(text)
