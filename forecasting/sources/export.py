"""Parse CloudWatch ``get-metric-data`` JSON exports (and simple CSVs) into samples.

This one parser serves ``python -m forecasting import``, the dashboard upload
and the API. Every problem raises :class:`ExportError` with one line saying
what is wrong and where; nothing is returned half-parsed.

Metric names come from :mod:`forecasting.metrics`: a query ``Id`` or ``Label`` (or a CSV column
header) names a metric by its key (``cpu``, ``memory``, ``network_in``, ...), its CloudWatch name as
it is or in words (``CPUUtilization``, ``cpu_utilization``) or a declared alias (``mem``, ``net_in``,
``value`` for CPU); case does not matter and ``-``/spaces count as ``_``.

An ``Id``/``Label`` may also carry the instance, e.g. ``cpu_i_0abc123`` or
``i-0abc123 CPUUtilization``; otherwise the instance comes from ``--instance``.

Refused, with a line saying why (an export read wrongly is worse than none):

- several series of one metric that do not name their instance (``get-metric-data`` output holds
  no dimensions, so ``m1``, ``m2`` with the CLI's default labels cannot be told apart);
- two series for the same instance and metric (e.g. the Average and the Maximum of CPU);
- a partial export: a result whose last ``StatusCode`` is not ``Complete``, or a ``NextToken``
  on the last page (more pages were left unfetched, e.g. after ``--max-items``);
- ``--output text`` or ``--output table`` (export with ``--output json``);
- values outside a metric's declared range (CPU or memory beyond 0-100 % give or take 1, negative bytes);
- instance ids outside the safe set (:mod:`forecasting.ids`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from forecasting.ids import InstanceIdError, check_instance_id
from forecasting.metrics import METRICS, TARGET, normalise

TIMESTAMP_COLUMNS = ("timestamp", "ts", "time", "datetime", "date")
INSTANCE_RE = re.compile(r"i[-_][0-9a-f]{8,17}", re.IGNORECASE)
DEFAULT_LIMIT_BYTES = 100 * 1024 * 1024
LATEST_TS = 253_402_300_799  # 9999-12-31T23:59:59Z: timestamps must lie in 1970..9999
STATISTIC_RE = re.compile(
    r"(?i)(?<![a-z0-9])(avg|average|mean|max|maximum|min|minimum|sum|samplecount|p\d+(?:\.\d+)?)(?![a-z0-9])"
)
STATISTIC_NAMES = {"avg": "average", "mean": "average", "max": "maximum", "min": "minimum"}
TEXT_OUTPUT_RE = re.compile(r"^(METRICDATARESULTS|MESSAGES|NEXTTOKEN|TIMESTAMPS|VALUES)\t", re.MULTILINE)
TABLE_OUTPUT_RE = re.compile(r"^\s*-{5,}\s*\n\s*\|", re.MULTILINE)


class ExportError(ValueError):
    """An export that cannot be used; ``str()`` is one line saying what and where."""


@dataclass
class ParsedExport:
    """Series read from one export: {instance_id: {metric: (timestamps, values)}}, sorted, unique timestamps."""

    series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, int, float]]:
        """(instance_id, metric, ts, value) rows ready for ``store.samples.upsert``."""
        return [
            (iid, metric, int(t), float(v))
            for iid, metrics in self.series.items()
            for metric, (ts, vals) in metrics.items()
            for t, v in zip(ts, vals, strict=True)
        ]

    @property
    def instances(self) -> list[str]:
        return sorted(self.series)

    def points(self) -> int:
        return sum(len(ts) for metrics in self.series.values() for ts, _ in metrics.values())


def metric_key(name: str) -> str | None:
    """Map an Id/Label/column name to a metric key, or None if it names none.

    An exact name wins; then the longest name found as whole words (``avg_cpu_utilization``); then the
    longest name of five letters or more found anywhere (``mycpuutilization``).
    """
    cleaned = INSTANCE_RE.sub("", normalise(name)).strip("_")
    named = [(alias, metric.key) for metric in METRICS.values() for alias in metric.names()]
    for matches in (
        [pair for pair in named if pair[0] == cleaned],
        [pair for pair in named if pair[0] != "value" and f"_{pair[0]}_" in f"_{cleaned}_"],
        [pair for pair in named if len(pair[0]) > 4 and pair[0] in cleaned],
    ):
        if matches:
            return max(matches, key=lambda pair: len(pair[0]))[1]
    return None


def _listed(words: list[str], joiner: str = "or") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {joiner} {words[-1]}"


def parse_timestamp(text: object, where: str) -> int:
    """ISO 8601 (with Z or offset; naive means UTC) or unix seconds → unix seconds."""
    if isinstance(text, bool):
        raise ExportError(f"{where}: timestamp {text!r} is not a time")
    if isinstance(text, (int, float)):
        if isinstance(text, float) and not math.isfinite(text):
            raise ExportError(f"{where}: timestamp {text!r} is not a time")
        return _in_range(text, text, where)
    if not isinstance(text, str):
        raise ExportError(f"{where}: timestamp {str(text)[:40]!r} is not a time")
    raw = text.strip()
    if re.fullmatch(r"[0-9]{9,11}(\.[0-9]+)?", raw):
        return _in_range(float(raw), text, where)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    except (ValueError, OverflowError):
        raise ExportError(f"{where}: timestamp {text[:40]!r} is not ISO 8601") from None
    return _in_range(seconds, text, where)


def _in_range(seconds: float, given: object, where: str) -> int:
    """Unix seconds as an int, refusing times before 1970 or after 9999 (they cannot be stored)."""
    if not 0 <= seconds <= LATEST_TS:
        raise ExportError(f"{where}: timestamp {str(given)[:40]!r} is outside 1970..9999")
    return int(seconds)


def _number(value: object, where: str) -> float:
    """A finite float from a JSON number or a numeric string; anything else is an ExportError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ExportError(f"{where}: value {str(value)[:40]!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise ExportError(f"{where}: value {str(value)[:40]!r} is not a number") from None
    except OverflowError:  # an integer too large for a float
        raise ExportError(f"{where}: value {str(value)[:40]}... is too large") from None
    if not math.isfinite(number):
        raise ExportError(f"{where}: value {str(value)[:40]!r} is not a finite number")
    return number


def check_value(key: str, value: float, where: str) -> float:
    """A plausible value of metric ``key``: within its declared range (a small excess is rounding, clipped)."""
    metric = METRICS[key]
    if not metric.plausible(value):
        raise ExportError(f"{where}: {key} value {value:g} is {metric.describe_range()}")
    return metric.clip(value)


def _instance_arg(instance: str, name: str) -> str:
    try:
        return check_instance_id(instance)
    except InstanceIdError as error:
        raise ExportError(f"{name}: {error}") from None


def _json_documents(text: str, name: str) -> list[object]:
    """One JSON document, or several concatenated (as paged CLI output saved together)."""
    decoder = json.JSONDecoder()
    docs, pos = [], 0
    text = text.lstrip("\ufeff")
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as error:
            raise ExportError(f"{name}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
        except RecursionError:
            raise ExportError(f"{name}: JSON nested too deeply near character {pos}") from None
        docs.append(doc)
    if not docs:
        raise ExportError(f"{name}: the file is empty")
    return docs


def _results(docs: list[object], name: str) -> list[dict]:
    pages: list[object] = []
    for doc in docs:
        pages.extend(doc if isinstance(doc, list) else [doc])
    if pages and isinstance(pages[-1], dict) and pages[-1].get("NextToken"):
        raise ExportError(
            f"{name}: the export is partial: its last page has a NextToken, so CloudWatch had more to send; "
            "fetch every page (drop --max-items, or call again with --next-token) and save them together"
        )
    results: list[dict] = []
    for p, page in enumerate(pages):
        if not isinstance(page, dict) or not isinstance(page.get("MetricDataResults"), list):
            raise ExportError(
                f"{name}: page {p + 1} has no MetricDataResults list (is this `aws cloudwatch get-metric-data` output?)"
            )
        for r, result in enumerate(page["MetricDataResults"]):
            if not isinstance(result, dict):
                raise ExportError(f"{name}: MetricDataResults[{r}] of page {p + 1} is not an object")
            results.append(result)
    return results


class _Collector:
    """Gathers points per (instance, metric), later values winning on duplicate timestamps."""

    def __init__(self) -> None:
        self.points: dict[tuple[str, str], dict[int, float]] = {}

    def add(self, instance: str, metric: str, ts: int, value: float) -> None:
        self.points.setdefault((instance, metric), {})[ts] = value

    def finish(self, name: str) -> ParsedExport:
        parsed = ParsedExport()
        for (iid, metric), points in sorted(self.points.items()):
            ts = np.fromiter(sorted(points), dtype=np.int64, count=len(points))
            vals = np.array([points[t] for t in ts], dtype=float)
            parsed.series.setdefault(iid, {})[metric] = (ts, vals)
        if not any(TARGET in metrics and len(metrics[TARGET][0]) for metrics in parsed.series.values()):
            raise ExportError(f"{name}: no CPU series found (name a query {TARGET} or {METRICS[TARGET].name})")
        return parsed


def _instance_in(texts: list[str]) -> str | None:
    for text in texts:
        match = INSTANCE_RE.search(text or "")
        if match:
            return "i-" + match.group(0)[2:].lower()
    return None


def parse_json_export(text: str, instance: str = "upload", name: str = "export") -> ParsedExport:
    """Parse the JSON that ``aws cloudwatch get-metric-data`` prints (one document, or pages saved together)."""
    results = _results(_json_documents(text, name), name)
    collector = _Collector()
    series_of: dict[tuple[str | None, str], list[str]] = {}  # (instance named or None, metric) -> query keys
    status: dict[str, str] = {}  # query key -> its last StatusCode (a paged query repeats its Id on each page)
    for r, result in enumerate(results):
        ident, label = str(result.get("Id") or ""), str(result.get("Label") or "")
        where = f"{name}: MetricDataResults[{r}] ({ident or label or 'no Id'})"
        metric = metric_key(ident) or metric_key(label)
        if metric is None:
            raise ExportError(f"{where}: cannot tell which metric this is; name the query {_listed(list(METRICS))}")
        stamps, values = result.get("Timestamps", []), result.get("Values", [])
        if not isinstance(stamps, list) or not isinstance(values, list):
            raise ExportError(f"{where}: Timestamps and Values must be lists")
        if len(stamps) != len(values):
            raise ExportError(f"{where}: {len(stamps)} timestamps but {len(values)} values")
        key = ident or label or f"#{r}"
        status[key] = str(result.get("StatusCode") or "Complete")
        named = _instance_in([ident, label])
        keys = series_of.setdefault((named, metric), [])
        if key not in keys:
            keys.append(key)
        iid = named or instance
        for k, (stamp, value) in enumerate(zip(stamps, values, strict=True)):
            at = f"{where} point {k}"
            collector.add(iid, metric, parse_timestamp(stamp, at), check_value(metric, _number(value, at), at))
    _check_series(series_of, status, name)
    if any(named is None for named, _ in series_of):
        _instance_arg(instance, name)
    return collector.finish(name)


def _statistic(key: str) -> str | None:
    """The statistic a query Id or Label names (avg, max, p99, ...), if any."""
    match = STATISTIC_RE.search(key)
    return None if match is None else STATISTIC_NAMES.get(match.group(1).lower(), match.group(1).lower())


def _statistics() -> str:
    """Which statistic each metric is exported with, e.g. "Average for cpu and memory, Sum for network_in and network_out"."""
    by_statistic: dict[str, list[str]] = {}
    for metric in METRICS.values():
        by_statistic.setdefault(metric.statistic, []).append(metric.key)
    return ", ".join(f"{statistic} for {_listed(keys, 'and')}" for statistic, keys in by_statistic.items())


def _check_series(series_of: dict[tuple[str | None, str], list[str]], status: dict[str, str], name: str) -> None:
    """Refuse what would be read wrongly: series that cannot be told apart, and partial results."""
    for (named, metric), keys in sorted(series_of.items(), key=lambda item: (item[0][0] or "", item[0][1])):
        if len(keys) < 2:
            continue
        shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
        whose = f" for {named}" if named else ""
        if len({stat for key in keys if (stat := _statistic(key))}) > 1 or named is not None:
            raise ExportError(
                f"{name}: {len(keys)} {metric} series{whose} ({shown}), e.g. two statistics of one metric; "
                f"export one statistic per metric ({_statistics()})"
            )
        raise ExportError(
            f"{name}: {len(keys)} {metric} series ({shown}) do not say which instance each belongs to "
            "(an export holds no dimensions); name each query after its instance, e.g. Id cpu_i_0abc1234 or "
            "Label 'i-0abc1234 CPUUtilization', or export one instance per file"
        )
    for key, code in status.items():
        if code != "Complete":
            raise ExportError(
                f"{name}: the export is partial: {key} has StatusCode {code}; fetch it again "
                "(every page, a shorter time range) until each result is Complete"
            )


def _csv_rows(text: str, name: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each CSV record; a malformed file is an ExportError naming the line."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ExportError(f"{name}: line {max(reader.line_num, 1)} is not valid CSV ({error})") from None
        yield reader.line_num, row


def parse_csv_export(text: str, instance: str = "upload", name: str = "export") -> ParsedExport:
    """Parse a CSV with a timestamp column and one column per metric (e.g. ``timestamp,value``)."""
    rows = _csv_rows(text, name)
    _, header = next(rows, (0, []))
    if not header:
        raise ExportError(f"{name}: the CSV file is empty")
    lowered = [h.strip().lower() for h in header]
    ts_col = next((i for i, h in enumerate(lowered) if h in TIMESTAMP_COLUMNS), None)
    if ts_col is None:
        raise ExportError(f"{name}: no timestamp column (expected one of {', '.join(TIMESTAMP_COLUMNS)})")
    iid_col = lowered.index("instance_id") if "instance_id" in lowered else None
    named = {i: metric_key(h) for i, h in enumerate(header) if i not in (ts_col, iid_col)}
    columns = {i: key for i, key in named.items() if key is not None}
    for metric in set(columns.values()):
        same = [header[i] for i, m in columns.items() if m == metric]
        if len(same) > 1:
            raise ExportError(f"{name}: columns {', '.join(map(repr, same))} are all {metric}; keep one column per metric")
    if TARGET not in columns.values():
        raise ExportError(f"{name}: no CPU column (name it {TARGET}, {METRICS[TARGET].name} or value)")
    collector = _Collector()
    for line, row in rows:
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ExportError(f"{name}: line {line} has {len(row)} fields, the header has {len(header)}")
        ts = parse_timestamp(row[ts_col], f"{name}: line {line}")
        row_iid = row[iid_col].strip() if iid_col is not None and row[iid_col].strip() else instance
        row_iid = _instance_arg(row_iid, f"{name}: line {line}")
        for i, metric in columns.items():
            if row[i].strip() == "":
                continue
            at = f"{name}: line {line}, column {header[i]!r}"
            collector.add(row_iid, metric, ts, check_value(metric, _number(row[i].strip(), at), at))
    return collector.finish(name)


def parse_export(
    data: bytes | str, instance: str = "upload", name: str = "export", limit_bytes: int = DEFAULT_LIMIT_BYTES
) -> ParsedExport:
    """Parse an export given as bytes or text; JSON or CSV is told from the content."""
    size = len(data)
    if size > limit_bytes:
        raise ExportError(f"{name}: {size / 1e6:.1f} MB is over the {limit_bytes / 1e6:.0f} MB limit")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ExportError(f"{name}: not UTF-8 text (byte {error.start})") from None
    if not data.strip():
        raise ExportError(f"{name}: the file is empty")
    if TEXT_OUTPUT_RE.search(data[:10_000]) or TABLE_OUTPUT_RE.match(data[:10_000]):
        kind = "text" if TEXT_OUTPUT_RE.search(data[:10_000]) else "table"
        raise ExportError(f"{name}: this is `aws cloudwatch get-metric-data --output {kind}`; export with `--output json`")
    if data.lstrip("\ufeff \t\r\n")[:1] in "{[":
        return parse_json_export(data, instance, name)
    return parse_csv_export(data, instance, name)


def read_export(path: str, instance: str = "upload", limit_bytes: int = DEFAULT_LIMIT_BYTES) -> ParsedExport:
    """Read and parse an export file, refusing files over the limit before reading them."""
    import os

    try:
        size = os.path.getsize(path)
        if os.path.isdir(path):
            raise ExportError(f"{path}: is a folder; give the export file")
        if size > limit_bytes:
            raise ExportError(f"{path}: {size / 1e6:.1f} MB is over the {limit_bytes / 1e6:.0f} MB limit")
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ExportError(f"{path}: {error.strerror or type(error).__name__}") from None
    return parse_export(data, instance, os.path.basename(path), limit_bytes)


def check_not_future(parsed: ParsedExport, latest: int, name: str) -> None:
    """ExportError when a sample lies after ``latest`` (now plus one period, for stored data): it would never age out."""
    newest = max((int(ts[-1]) for metrics in parsed.series.values() for ts, _ in metrics.values() if len(ts)), default=None)
    if newest is not None and newest > latest:
        when = datetime.fromtimestamp(newest, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise ExportError(
            f"{name}: samples up to {when} lie in the future; check the export's timestamps (and this machine's clock)"
        )


def to_json_export(parsed: ParsedExport) -> str:
    """Write series back as a get-metric-data style document (used by tests and the demo)."""
    results = []
    for iid, metrics in parsed.series.items():
        for metric, (ts, vals) in metrics.items():
            results.append(
                {
                    "Id": f"{metric}_{iid.replace('-', '_')}",
                    "Label": f"{iid} {metric}",
                    "Timestamps": [datetime.fromtimestamp(int(t), UTC).isoformat() for t in ts],
                    "Values": [float(v) for v in vals],
                    "StatusCode": "Complete",
                }
            )
    return json.dumps({"MetricDataResults": results, "Messages": []}, indent=1)
