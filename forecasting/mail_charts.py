"""PNG charts for the alert and digest mails, drawn with matplotlib's Agg renderer.

No display and no browser are needed: figures are built with ``matplotlib.figure.Figure``
(never pyplot, so no GUI backend is ever chosen and nothing global is shared between
threads) and written to PNG bytes in memory.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure

from forecasting.metrics import METRICS, TARGET
from forecasting.store import ForecastRecord

HISTORY_COLOUR = "#1f4e79"
FORECAST_COLOUR = "#d9822b"
THRESHOLD_COLOUR = "#c0392b"
CROSSING_COLOUR = "#7d3c98"


def _dates(ts: Any) -> np.ndarray:
    return np.asarray(ts, dtype=np.int64).astype("datetime64[s]")


def forecast_chart(
    history: tuple[Any, Any],  # (timestamps, CPU values): arrays or lists
    forecast: ForecastRecord | None,
    threshold: float,
    crossing_ts: int | None = None,
    title: str = "",
    width: float = 8.0,
    height: float = 3.4,
) -> bytes:
    """PNG of recent CPU, the forecast with its interval band, the threshold line and the predicted crossing."""
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ts, values = (np.asarray(part) for part in history)
    if len(ts):
        ax.plot(_dates(ts), values, color=HISTORY_COLOUR, linewidth=1.4, label=METRICS[TARGET].label)
    if forecast is not None and len(forecast.timestamps):
        stamps = _dates(forecast.timestamps)
        ax.fill_between(
            stamps, forecast.lower, forecast.upper, color=FORECAST_COLOUR, alpha=0.22, linewidth=0, label="90 % interval"
        )
        ax.plot(stamps, forecast.mean, color=FORECAST_COLOUR, linewidth=1.8, linestyle="--", label=f"forecast ({forecast.model})")
    ax.axhline(threshold, color=THRESHOLD_COLOUR, linewidth=1.2, label=f"threshold {threshold:g} %")
    if crossing_ts is not None:
        ax.axvline(_dates([crossing_ts])[0], color=CROSSING_COLOUR, linewidth=1.2, linestyle=":", label="predicted crossing")
        ax.plot([_dates([crossing_ts])[0]], [threshold], marker="o", color=CROSSING_COLOUR, markersize=6)
    ax.set_ylim(0, max(112.0, threshold + 12))  # headroom above 100 % keeps the legend off the lines
    ax.set_ylabel(METRICS[TARGET].axis)
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M"))
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel("UTC")
    ax.legend(loc="upper left", fontsize=7, ncols=3, frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
