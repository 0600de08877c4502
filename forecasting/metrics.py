"""The metrics Headroom reads, each declared once: where CloudWatch keeps it, its range, how models and charts use it.

A metric is one :class:`Metric` line in ``METRICS``. Ingestion (what to ask CloudWatch, which
instances publish it), the demo feed, the export import (which query names mean it), the
features (range and scaling), the charts (panel, label, unit) and the API's upload description
all read this declaration, so adding a metric touches nothing else: declare it here (or call
:func:`register_metric`), and list it in ``HEADROOM_METRICS`` unless it is on by default.

Samples live in one long table keyed by (instance, metric key, timestamp), so a new metric needs
no store migration. ``cpu`` is the forecast target and the only required metric; the others are
model inputs that an instance may lack (no CloudWatch agent, no burst credits): a missing series
stays missing and is never filled with zeros.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Scaling = Literal["raw", "log1p"]


@dataclass(frozen=True)
class Metric:
    """One metric: its store key, its CloudWatch source, its plausible range, its model scaling and its chart."""

    key: str  # the name in the store's ``metric`` column, the export's query Id, the frame's column
    namespace: str  # CloudWatch namespace and metric name
    name: str
    statistic: str  # the GetMetricData statistic asked for each period
    unit: str  # CloudWatch's unit: Percent, Bytes, Count
    label: str  # for people: charts, captions, messages
    symbol: str  # what a value is shown with: "%", "bytes", "credits"
    panel: str = ""  # the chart panel's axis title; metrics with the same panel share it (default: label and symbol)
    dimension: str = "InstanceId"  # the dimension naming the instance
    required: bool = False  # an instance without it cannot be forecast (only the target, cpu)
    default: bool = True  # fetched unless HEADROOM_METRICS leaves it out
    discover: bool = False  # ListMetrics first: fetched only for the instances that publish it, with their exact dimensions
    scaling: Scaling = "raw"  # how the models see it before standardising: as it is, or log(1 + x) for heavy-tailed byte counts
    low: float = 0.0  # plausible range; values within ``tolerance`` outside it are rounding and are clipped
    high: float = math.inf
    tolerance: float = 0.0
    aliases: tuple[str, ...] = ()  # more names an export may use for it (key and CloudWatch names are always recognised)
    variants: tuple[tuple[str, str, str], ...] = ()  # (variant, namespace, name) a setting can pick instead (memory_metric)

    @property
    def axis(self) -> str:
        """The axis title of the chart panel this metric is drawn in."""
        return self.panel or f"{self.label} {self.symbol}"

    def cloudwatch_name(self, variant: str | None = None) -> tuple[str, str]:
        """(namespace, metric name) to query: the named variant's where one is declared, else the main one."""
        for name, namespace, metric_name in self.variants:
            if name == variant:
                return namespace, metric_name
        return self.namespace, self.name

    def names(self) -> set[str]:
        """Every name an export may give this metric, normalised (lower case, ``_`` between words)."""
        cloudwatch = [self.name, *(metric_name for _, _, metric_name in self.variants)]
        return (
            {normalise(n) for n in (self.key, *self.aliases)}
            | {normalise(n) for n in cloudwatch}
            | {snake_case(n) for n in cloudwatch}
        )

    def plausible(self, value: float) -> bool:
        """Finite and within the range give or take the tolerance."""
        return math.isfinite(value) and self.low - self.tolerance <= value <= self.high + self.tolerance

    def clip(self, value: float) -> float:
        """A plausible value brought into the range."""
        return min(max(value, self.low), self.high)

    def clip_series(self, values: pd.Series) -> pd.Series:
        """A series brought into the range (missing values stay missing)."""
        return values.clip(self.low, None if math.isinf(self.high) else self.high)

    def model_input(self, values: pd.Series) -> pd.Series:
        """The series as the models see it before standardising."""
        return np.log1p(values) if self.scaling == "log1p" else values

    def describe_range(self) -> str:
        """The range in words, for messages about an implausible value."""
        if math.isinf(self.high):
            return "negative" if self.low == 0 else f"below {self.low:g}"
        return f"outside {self.low:g}-{self.high:g} {self.symbol}"


def normalise(name: str) -> str:
    """A name as exports are matched: lower case, runs of spaces, ``-`` and ``_`` as one ``_``."""
    return re.sub(r"[\s\-_]+", "_", name.strip().lower()).strip("_")


def snake_case(name: str) -> str:
    """CloudWatch's CamelCase as words: CPUUtilization → cpu_utilization, NetworkIn → network_in."""
    return normalise(re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name))


PERCENT_TOLERANCE = 1.0
"""CloudWatch reports 100.0001 %: a percent past 0-100 by up to this much is rounding, clipped; further is refused."""

METRICS: dict[str, Metric] = {
    metric.key: metric
    for metric in (
        Metric(
            "cpu",
            "AWS/EC2",
            "CPUUtilization",
            "Average",
            unit="Percent",
            label="CPU",
            symbol="%",
            required=True,
            high=100.0,
            tolerance=PERCENT_TOLERANCE,
            aliases=("cpu_percent", "value"),
        ),
        Metric(
            "memory",
            "CWAgent",
            "mem_used_percent",
            "Average",
            unit="Percent",
            label="memory",
            symbol="%",
            discover=True,
            high=100.0,
            tolerance=PERCENT_TOLERANCE,
            aliases=("mem",),
            variants=(("legacy", "System/Linux", "MemoryUtilization"),),
        ),
        Metric(
            "network_in",
            "AWS/EC2",
            "NetworkIn",
            "Sum",
            unit="Bytes",
            label="network in",
            symbol="bytes",
            panel="network bytes",
            scaling="log1p",
            aliases=("net_in",),
        ),
        Metric(
            "network_out",
            "AWS/EC2",
            "NetworkOut",
            "Sum",
            unit="Bytes",
            label="network out",
            symbol="bytes",
            panel="network bytes",
            scaling="log1p",
            aliases=("net_out",),
        ),
        # Off by default: turning it on adds a query per burstable instance and a chart panel, and feeds LSTM/TCN one more
        # input. Only T-family instances publish it, so it is discovered with ListMetrics like memory.
        Metric(
            "cpu_credits",
            "AWS/EC2",
            "CPUCreditBalance",
            "Average",
            unit="Count",
            label="CPU credits",
            symbol="credits",
            panel="CPU credits",
            default=False,
            discover=True,
        ),
    )
}
"""Every declared metric by key, in the order charts and messages list them (the target first)."""

TARGET = "cpu"
"""The metric forecast; every other metric is an optional model input."""


def register_metric(metric: Metric) -> None:
    """Add (or replace) a metric at run time: what a plug-in or a test does instead of editing ``METRICS``."""
    METRICS[metric.key] = metric


def metric(key: str) -> Metric:
    """The declaration of ``key`` (KeyError naming the known keys if there is none)."""
    try:
        return METRICS[key]
    except KeyError:
        raise KeyError(f"unknown metric {key!r}; choose from {', '.join(METRICS)}") from None


def metric_keys() -> tuple[str, ...]:
    """Every declared metric's key, in declaration order."""
    return tuple(METRICS)


def default_metrics() -> list[str]:
    """What ``HEADROOM_METRICS`` is when it is not set."""
    return [key for key, m in METRICS.items() if m.default]


def inputs(keys: Iterable[str]) -> list[Metric]:
    """The declared metrics among ``keys`` other than the target, in declaration order (model inputs, lower panels)."""
    wanted = set(keys)
    return [m for key, m in METRICS.items() if key in wanted and key != TARGET]


def from_name(name: str) -> Metric | None:
    """The metric an export's query Id, Label or column header names exactly (after :func:`normalise`), if any."""
    cleaned = normalise(name)
    return next((m for m in METRICS.values() if cleaned in m.names()), None)
