"""Plotly figures for the dashboard, built from plain data and the store's typed rows (no Streamlit, no store access).

Times are unix seconds in, UTC datetimes on the axes. Colours are fixed per role so a
reader learns them once: actual CPU dark, the forecast orange with a light band, the
threshold red.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.upload import PlainForecast
from forecasting.store import ForecastRecord

ACTUAL = "#1c2430"
FORECAST = "#d9480f"
BAND = "rgba(217, 72, 15, 0.18)"
PAST = "#5f3dc4"
THRESHOLD = "#c92a2a"
MEMORY = "#5f3dc4"
NET_IN = "#1971c2"
NET_OUT = "#0c8599"
MODEL_COLOURS = {
    "naive": "#868e96", "seasonal_naive": "#0ca678", "linear": "#f59f00",
    "arima": "#1c7ed6", "lstm": "#7048e8", "tcn": "#d6336c",
}
Series = tuple[Sequence[int] | np.ndarray, Sequence[float] | np.ndarray]
AnyForecast = ForecastRecord | PlainForecast
"""A stored forecast or an uploaded one: both have timestamps, mean, lower and upper."""


def times(ts: Sequence[int] | np.ndarray) -> pd.DatetimeIndex:
    """Unix seconds → UTC datetimes for an axis."""
    return pd.to_datetime(np.asarray(ts, dtype=np.int64), unit="s", utc=True)


def _layout(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10}, hovermode="x unified",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "traceorder": "normal"},
    )
    return fig


def add_forecast(fig: go.Figure, forecast: AnyForecast, *, band: bool, name: str, colour: str, row: int | None = None, dash: str = "dash") -> None:
    """A forecast's point line, and its interval band below it when ``band``."""
    where = {"row": row, "col": 1} if row else {}
    x = times(forecast.timestamps)
    if band:
        fig.add_trace(go.Scatter(x=x, y=forecast.upper, mode="lines", line={"width": 0}, name="upper", showlegend=False, hoverinfo="skip"), **where)
        fig.add_trace(go.Scatter(x=x, y=forecast.lower, mode="lines", line={"width": 0}, fill="tonexty", fillcolor=BAND, name=f"{name} interval"), **where)
    fig.add_trace(go.Scatter(x=x, y=forecast.mean, mode="lines", line={"color": colour, "dash": dash, "width": 2.5 if band else 1.5}, name=name), **where)


def instance_figure(
    samples: Mapping[str, Series],
    forecasts: Sequence[ForecastRecord],
    threshold: float,
    champion: str | None,
    show_all: bool = False,
    crossing_ts: int | None = None,
    past: ForecastRecord | None = None,
) -> go.Figure:
    """CPU with forecast, band, threshold and crossing on top (and ``past``, an earlier deployed forecast, over the
    actuals it predicted); memory and network below, on one linked time axis."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.05, row_heights=[0.56, 0.2, 0.24])
    if "cpu" in samples:
        ts, values = samples["cpu"]
        fig.add_trace(go.Scatter(x=times(ts), y=values, mode="lines", line={"color": ACTUAL, "width": 1.5}, name="CPU"), row=1, col=1)
    chosen = [f for f in forecasts if f.is_champion] or [f for f in forecasts if f.model == champion]
    for forecast in forecasts:
        if show_all and forecast not in chosen[:1]:
            add_forecast(fig, forecast, band=False, name=forecast.model, colour=MODEL_COLOURS.get(forecast.model, "#868e96"), row=1, dash="dot")
    if past is not None:
        add_forecast(fig, past, band=False, name=f"earlier forecast ({past.model})", colour=PAST, row=1, dash="dot")
    if chosen:
        add_forecast(fig, chosen[0], band=True, name=f"forecast ({chosen[0].model})", colour=FORECAST, row=1)
    fig.add_hline(y=threshold, line={"color": THRESHOLD, "dash": "dot", "width": 1.5}, row=1, col=1,
                  annotation_text=f"threshold {threshold:.0f} %", annotation_position="top left",
                  annotation_bgcolor="rgba(255, 255, 255, 0.8)", annotation_font_color=THRESHOLD)
    if crossing_ts is not None:
        fig.add_trace(go.Scatter(x=times([crossing_ts]), y=[threshold], mode="markers", name="predicted crossing",
                                 marker={"color": THRESHOLD, "size": 12, "symbol": "x"}), row=1, col=1)
    fig.update_yaxes(range=[0, 105], title="CPU %", row=1, col=1)
    fig.update_yaxes(title="memory %", row=2, col=1)
    fig.update_yaxes(title="network bytes", row=3, col=1)
    if "memory" in samples:
        ts, values = samples["memory"]
        fig.add_trace(go.Scatter(x=times(ts), y=values, mode="lines", line={"color": MEMORY, "width": 1.2}, name="memory"), row=2, col=1)
        fig.update_yaxes(range=[0, 100], row=2, col=1)
    else:
        fig.add_annotation(text="this instance publishes no memory metric", showarrow=False, row=2, col=1,
                           xref="x2 domain", yref="y2 domain", x=0.5, y=0.5)
    for metric, colour in (("network_in", NET_IN), ("network_out", NET_OUT)):
        if metric in samples:
            ts, values = samples[metric]
            fig.add_trace(go.Scatter(x=times(ts), y=values, mode="lines", line={"color": colour, "width": 1.2}, name=metric.replace("_", " ")), row=3, col=1)
    return _layout(fig, 640)


def series_figure(series: Mapping[str, Series], title: str = "") -> go.Figure:
    """Every metric of an uploaded series, one linked panel each (CPU first)."""
    metrics = [m for m in ("cpu", "memory", "network_in", "network_out") if m in series]
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    colours = {"cpu": ACTUAL, "memory": MEMORY, "network_in": NET_IN, "network_out": NET_OUT}
    units = {"cpu": "CPU %", "memory": "memory %", "network_in": "net in", "network_out": "net out"}
    for row, metric in enumerate(metrics, start=1):
        ts, values = series[metric]
        fig.add_trace(go.Scatter(x=times(ts), y=values, mode="lines", line={"color": colours[metric], "width": 1.2}, name=metric), row=row, col=1)
        fig.update_yaxes(title=units[metric], row=row, col=1)
    if title:
        fig.update_layout(title=title)
    return _layout(fig, 180 + 150 * len(metrics))


def forecast_figure(history: Series, forecast: PlainForecast, threshold: float | None = None, tail: int = 144) -> go.Figure:
    """The end of a series followed by a forecast with its band (the Upload page's Predict result)."""
    fig = go.Figure()
    ts, values = history
    fig.add_trace(go.Scatter(x=times(ts[-tail:]), y=np.asarray(values)[-tail:], mode="lines", line={"color": ACTUAL, "width": 1.5}, name="CPU"))
    add_forecast(fig, forecast, band=True, name=f"forecast ({forecast.model})", colour=FORECAST)
    if threshold is not None:
        fig.add_hline(y=threshold, line={"color": THRESHOLD, "dash": "dot"}, annotation_text=f"threshold {threshold:.0f} %")
    fig.update_yaxes(title="CPU %", range=[0, 105])
    return _layout(fig, 420)


def backtest_figure(points: pd.DataFrame, models: Sequence[str]) -> go.Figure:
    """Predicted versus actual at each backtest origin: the actual CPU, then one segment per origin and model."""
    fig = go.Figure()
    if points.empty:
        return _layout(fig, 420)
    actual = points.drop_duplicates("ts").sort_values("ts")
    fig.add_trace(go.Scatter(x=times(actual["ts"]), y=actual["actual"], mode="lines", line={"color": ACTUAL, "width": 1.5}, name="actual"))
    for model in models:
        part = points[points["model"] == model]
        first = True
        for origin, segment in part.groupby("origin_ts", sort=True):
            segment = segment.sort_values("ts")
            fig.add_trace(go.Scatter(
                x=times(segment["ts"]), y=segment["mean"], mode="lines", legendgroup=model, showlegend=first, name=model,
                line={"color": MODEL_COLOURS.get(model, FORECAST), "width": 1.5},
                hovertemplate=f"{model}, origin {pd.to_datetime(origin, unit='s', utc=True):%H:%M}: %{{y:.1f}}<extra></extra>",
            ))
            first = False
    fig.update_yaxes(title="CPU %")
    return _layout(fig, 420)


def scores_figure(scores: pd.DataFrame, metric: str = "mase") -> go.Figure:
    """One score across models: bars for one instance, a box per model across many."""
    fig = go.Figure()
    data = scores[scores["status"] == "ok"].dropna(subset=[metric]) if not scores.empty else scores
    if data.empty:
        return _layout(fig, 360)
    if data["instance_id"].nunique() == 1:
        fig.add_trace(go.Bar(x=data["model"], y=data[metric], marker_color=[MODEL_COLOURS.get(m, FORECAST) for m in data["model"]], name=metric))
    else:
        for model, part in data.groupby("model", sort=False):
            fig.add_trace(go.Box(y=part[metric], name=model, marker_color=MODEL_COLOURS.get(model, FORECAST), boxpoints="all",
                                 text=part["name"], hovertemplate="%{text}: %{y:.3f}<extra></extra>"))
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
    fig.add_trace(go.Scatter(x=times(ordered["finished_at"]), y=champions, mode="lines+markers", line={"shape": "hv", "color": "#adb5bd"},
                             marker={"size": 11, "color": [MODEL_COLOURS.get(c, "#868e96") for c in champions]}, name="champion"))
    fig.update_yaxes(title="champion", type="category")
    if len(ordered) == 1:  # one run: show a day around it rather than a millisecond-wide axis
        moment = times(ordered["finished_at"])[0]
        fig.update_xaxes(range=[moment - pd.Timedelta(hours=12), moment + pd.Timedelta(hours=12)])
    return _layout(fig, 260)
