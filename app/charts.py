"""Plotly figures for the dashboard, built from plain data and the store's typed rows (no Streamlit, no store access).

Times are unix seconds in, UTC datetimes on the axes. Colours are fixed per role so a
reader learns them once: actual CPU dark, the forecast orange with a light band, the
threshold red.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.upload import PlainForecast
from forecasting.metrics import METRICS, TARGET, Metric, default_metrics, inputs
from forecasting.store import ForecastRecord

ACTUAL = "#1c2430"
FORECAST = "#d9480f"
BAND = "rgba(217, 72, 15, 0.18)"
PAST = "#5f3dc4"
THRESHOLD = "#c92a2a"
METRIC_COLOURS = {
    TARGET: ACTUAL,
    "memory": "#5f3dc4",
    "network_in": "#1971c2",
    "network_out": "#0c8599",
    "cpu_credits": "#2b8a3e",
}
OTHER_METRIC = "#495057"
"""The colour of a metric declared without one above."""
CPU_PANEL_PX, PANEL_PX = 300, 130
"""Heights of the instance chart's CPU panel and of each panel below it (the figure adds 80 for its legend and margins)."""
MODEL_COLOURS = {
    "naive": "#868e96",
    "seasonal_naive": "#0ca678",
    "linear": "#f59f00",
    "arima": "#1c7ed6",
    "lstm": "#7048e8",
    "tcn": "#d6336c",
}
Series = tuple[Sequence[int] | np.ndarray, Sequence[float] | np.ndarray]
AnyForecast = ForecastRecord | PlainForecast
"""A stored forecast or an uploaded one: both have timestamps, mean, lower and upper."""


def times(ts: Sequence[int] | np.ndarray) -> pd.DatetimeIndex:
    """Unix seconds → UTC datetimes for an axis."""
    return pd.to_datetime(np.asarray(ts, dtype=np.int64), unit="s", utc=True)


def _layout(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        hovermode="x unified",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "traceorder": "normal"},
    )
    return fig


def add_forecast(
    fig: go.Figure, forecast: AnyForecast, *, band: bool, name: str, colour: str, row: int | None = None, dash: str = "dash"
) -> None:
    """A forecast's point line, and its interval band below it when ``band``."""
    where = {"row": row, "col": 1} if row else {}
    x = times(forecast.timestamps)
    if band:
        fig.add_trace(
            go.Scatter(x=x, y=forecast.upper, mode="lines", line={"width": 0}, name="upper", showlegend=False, hoverinfo="skip"),
            **where,
        )
        fig.add_trace(
            go.Scatter(
                x=x, y=forecast.lower, mode="lines", line={"width": 0}, fill="tonexty", fillcolor=BAND, name=f"{name} interval"
            ),
            **where,
        )
    fig.add_trace(
        go.Scatter(
            x=x, y=forecast.mean, mode="lines", line={"color": colour, "dash": dash, "width": 2.5 if band else 1.5}, name=name
        ),
        **where,
    )


def panels(keys: Iterable[str]) -> list[list[Metric]]:
    """The input metrics among ``keys`` grouped into chart panels (metrics sharing an axis title share one), in order."""
    grouped: dict[str, list[Metric]] = {}
    for metric in inputs(keys):
        grouped.setdefault(metric.axis, []).append(metric)
    return list(grouped.values())


def _metric_line(metric: Metric, series: Series) -> go.Scatter:
    ts, values = series
    return go.Scatter(
        x=times(ts),
        y=values,
        mode="lines",
        line={"color": METRIC_COLOURS.get(metric.key, OTHER_METRIC), "width": 1.2},
        name=metric.label,
    )


def instance_figure(
    samples: Mapping[str, Series],
    forecasts: Sequence[ForecastRecord],
    threshold: float,
    champion: str | None,
    show_all: bool = False,
    crossing_ts: int | None = None,
    past: ForecastRecord | None = None,
    metrics: Sequence[str] | None = None,
) -> go.Figure:
    """CPU with forecast, band, threshold and crossing on top (and ``past``, an earlier deployed forecast, over the
    actuals it predicted); below, a panel per configured metric (``metrics``, default: those on by default) and per
    metric in ``samples``, on one linked time axis. A series without data says so in its panel instead of a flat line."""
    below = panels([*(default_metrics() if metrics is None else metrics), *samples])
    height = 80 + CPU_PANEL_PX + PANEL_PX * len(below)
    fig = make_subplots(
        rows=1 + len(below),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.05,
        row_heights=[CPU_PANEL_PX, *[PANEL_PX] * len(below)],
    )
    cpu = METRICS[TARGET]
    if TARGET in samples:
        ts, values = samples[TARGET]
        fig.add_trace(
            go.Scatter(x=times(ts), y=values, mode="lines", line={"color": ACTUAL, "width": 1.5}, name=cpu.label), row=1, col=1
        )
    chosen = [f for f in forecasts if f.is_champion] or [f for f in forecasts if f.model == champion]
    for forecast in forecasts:
        if show_all and forecast not in chosen[:1]:
            add_forecast(
                fig,
                forecast,
                band=False,
                name=forecast.model,
                colour=MODEL_COLOURS.get(forecast.model, "#868e96"),
                row=1,
                dash="dot",
            )
    if past is not None:
        add_forecast(fig, past, band=False, name=f"earlier forecast ({past.model})", colour=PAST, row=1, dash="dot")
    if chosen:
        add_forecast(fig, chosen[0], band=True, name=f"forecast ({chosen[0].model})", colour=FORECAST, row=1)
    fig.add_hline(
        y=threshold,
        line={"color": THRESHOLD, "dash": "dot", "width": 1.5},
        row=1,
        col=1,
        annotation_text=f"threshold {threshold:.0f} %",
        annotation_position="top left",
        annotation_bgcolor="rgba(255, 255, 255, 0.8)",
        annotation_font_color=THRESHOLD,
    )
    if crossing_ts is not None:
        fig.add_trace(
            go.Scatter(
                x=times([crossing_ts]),
                y=[threshold],
                mode="markers",
                name="predicted crossing",
                marker={"color": THRESHOLD, "size": 12, "symbol": "x"},
            ),
            row=1,
            col=1,
        )
    fig.update_yaxes(range=[0, 105], title=cpu.axis, row=1, col=1)
    for row, group in enumerate(below, start=2):
        fig.update_yaxes(title=group[0].axis, row=row, col=1)
        drawn = [m for m in group if m.key in samples and len(samples[m.key][0])]
        for metric in drawn:
            fig.add_trace(_metric_line(metric, samples[metric.key]), row=row, col=1)
        if drawn and all(np.isfinite(m.high) for m in group):
            fig.update_yaxes(range=[min(m.low for m in group), max(m.high for m in group)], row=row, col=1)
        missing = [m.label for m in group if m not in drawn]
        if missing:
            fig.add_annotation(
                text=f"no {' or '.join(missing)} data in this time range",
                showarrow=False,
                row=row,
                col=1,
                xref=f"x{row} domain",
                yref=f"y{row} domain",
                x=0.5,
                y=0.5,
            )
    return _layout(fig, height)


def series_figure(series: Mapping[str, Series], title: str = "") -> go.Figure:
    """Every declared metric of an uploaded series, one linked panel each (CPU first)."""
    metrics = [m for key, m in METRICS.items() if key in series]
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    for row, metric in enumerate(metrics, start=1):
        fig.add_trace(_metric_line(metric, series[metric.key]), row=row, col=1)
        fig.update_yaxes(title=f"{metric.label} {metric.symbol}", row=row, col=1)
    if title:
        fig.update_layout(title=title)
    return _layout(fig, 180 + 150 * len(metrics))


def forecast_figure(history: Series, forecast: PlainForecast, threshold: float | None = None, tail: int = 144) -> go.Figure:
    """The end of a series followed by a forecast with its band (the Upload page's Predict result)."""
    fig = go.Figure()
    ts, values = history
    fig.add_trace(
        go.Scatter(
            x=times(ts[-tail:]),
            y=np.asarray(values)[-tail:],
            mode="lines",
            line={"color": ACTUAL, "width": 1.5},
            name=METRICS[TARGET].label,
        )
    )
    add_forecast(fig, forecast, band=True, name=f"forecast ({forecast.model})", colour=FORECAST)
    if threshold is not None:
        fig.add_hline(y=threshold, line={"color": THRESHOLD, "dash": "dot"}, annotation_text=f"threshold {threshold:.0f} %")
    fig.update_yaxes(title=METRICS[TARGET].axis, range=[0, 105])
    return _layout(fig, 420)


def backtest_figure(points: pd.DataFrame, models: Sequence[str]) -> go.Figure:
    """Predicted versus actual at each backtest origin: the actual CPU, then one segment per origin and model."""
    fig = go.Figure()
    if points.empty:
        return _layout(fig, 420)
    actual = points.drop_duplicates("ts").sort_values("ts")
    fig.add_trace(
        go.Scatter(x=times(actual["ts"]), y=actual["actual"], mode="lines", line={"color": ACTUAL, "width": 1.5}, name="actual")
    )
    for model in models:
        part = points[points["model"] == model]
        first = True
        for origin, segment in part.groupby("origin_ts", sort=True):
            segment = segment.sort_values("ts")
            fig.add_trace(
                go.Scatter(
                    x=times(segment["ts"]),
                    y=segment["mean"],
                    mode="lines",
                    legendgroup=model,
                    showlegend=first,
                    name=model,
                    line={"color": MODEL_COLOURS.get(model, FORECAST), "width": 1.5},
                    hovertemplate=f"{model}, origin {pd.to_datetime(origin, unit='s', utc=True):%H:%M}: %{{y:.1f}}<extra></extra>",
                )
            )
            first = False
    fig.update_yaxes(title=METRICS[TARGET].axis)
    return _layout(fig, 420)


def scores_figure(scores: pd.DataFrame, metric: str = "mase") -> go.Figure:
    """One score across models: bars for one instance, a box per model across many."""
    fig = go.Figure()
    data = scores[scores["status"] == "ok"].dropna(subset=[metric]) if not scores.empty else scores
    if data.empty:
        return _layout(fig, 360)
    if data["instance_id"].nunique() == 1:
        fig.add_trace(
            go.Bar(
                x=data["model"], y=data[metric], marker_color=[MODEL_COLOURS.get(m, FORECAST) for m in data["model"]], name=metric
            )
        )
    else:
        for model, part in data.groupby("model", sort=False):
            fig.add_trace(
                go.Box(
                    y=part[metric],
                    name=model,
                    marker_color=MODEL_COLOURS.get(model, FORECAST),
                    boxpoints="all",
                    text=part["name"],
                    hovertemplate="%{text}: %{y:.3f}<extra></extra>",
                )
            )
    fig.update_layout(showlegend=False)
    fig.update_yaxes(title=metric.upper(), rangemode="tozero")
    return _layout(fig, 360)


def champion_history_figure(runs: pd.DataFrame) -> go.Figure:
    """Which model was champion after each training run."""
    fig = go.Figure()
    if runs.empty:
        return _layout(fig, 260)
    ordered = runs.sort_values("finished_at")
    champions = ordered["champion"].fillna("none")
    fig.add_trace(
        go.Scatter(
            x=times(ordered["finished_at"]),
            y=champions,
            mode="lines+markers",
            line={"shape": "hv", "color": "#adb5bd"},
            marker={"size": 11, "color": [MODEL_COLOURS.get(c, "#868e96") for c in champions]},
            name="champion",
        )
    )
    fig.update_yaxes(title="champion", type="category")
    if len(ordered) == 1:  # one run: show a day around it rather than a millisecond-wide axis
        moment = times(ordered["finished_at"])[0]
        fig.update_xaxes(range=[moment - pd.Timedelta(hours=12), moment + pd.Timedelta(hours=12)])
    return _layout(fig, 260)
