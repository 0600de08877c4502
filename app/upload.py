"""Pure helpers for the Upload page: picking a series, turning engine results into tables and downloads.

Nothing here imports the engine (or TensorFlow); the page imports ``forecasting.training``
only when the user presses Validate or Predict.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from app.format import SCORE_COLUMNS
from forecasting.clock import HOUR
from forecasting.metrics import METRICS, TARGET
from forecasting.models import BASELINES

VALIDATE_CHOICES: dict[str, list[str] | None] = {
    "LSTM": ["lstm"],
    "TCN": ["tcn"],
    "ARIMA": ["arima"],
    "All": None,
}
"""What the Validate button trains; baselines always run beside the choice so it is measured against them."""


def validate_models(choice: str, configured: Sequence[str]) -> list[str]:
    """The model list for a Validate choice: the chosen family plus the baselines, or every configured model."""
    picked = VALIDATE_CHOICES[choice]
    if picked is None:
        return list(configured)
    return [*BASELINES, *picked]


def scores_frame(scores: Sequence[dict[str, Any]], champion: str | None) -> pd.DataFrame:
    """A validation's model scores as a table, best MASE first, the champion ticked."""
    frame = pd.DataFrame(list(scores))
    if frame.empty:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    frame["champion"] = frame["model"] == champion
    for column in SCORE_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame = frame.sort_values("mase", na_position="last", kind="stable")
    return frame[SCORE_COLUMNS].reset_index(drop=True)


def backtest_frame(backtest: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """Backtest rows (model, origin_ts, ts, actual, mean, lower, upper) as a frame (what the charts take)."""
    return pd.DataFrame(
        [tuple(row) for row in backtest], columns=["model", "origin_ts", "ts", "actual", "mean", "lower", "upper"]
    )


@dataclass(frozen=True)
class PlainForecast:
    """A forecast as plain rounded values (kept in session state, charted like a stored one, downloaded)."""

    model: str
    timestamps: tuple[int, ...]
    mean: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]


def plain_forecast(forecast: Any) -> PlainForecast:
    """A ``Forecast`` of the engine (numpy arrays) as plain values, rounded to three decimals."""
    return PlainForecast(
        model=forecast.model,
        timestamps=tuple(int(t) for t in np.asarray(forecast.timestamps)),
        mean=tuple(round(float(v), 3) for v in np.asarray(forecast.mean)),
        lower=tuple(round(float(v), 3) for v in np.asarray(forecast.lower)),
        upper=tuple(round(float(v), 3) for v in np.asarray(forecast.upper)),
    )


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).isoformat().replace("+00:00", "Z")


def forecast_csv(forecast: PlainForecast) -> str:
    """``timestamp,mean,lower,upper`` rows with ISO 8601 UTC times."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["timestamp", "model", "mean", "lower", "upper"])
    for ts, mean, lower, upper in zip(forecast.timestamps, forecast.mean, forecast.lower, forecast.upper, strict=True):
        writer.writerow([_iso(ts), forecast.model, mean, lower, upper])
    return out.getvalue()


def forecast_json(forecast: PlainForecast, instance_id: str) -> str:
    """The forecast as JSON: instance, model and one object per step."""
    steps = [
        {"timestamp": _iso(ts), "mean": mean, "lower": lower, "upper": upper}
        for ts, mean, lower, upper in zip(forecast.timestamps, forecast.mean, forecast.lower, forecast.upper, strict=True)
    ]
    return json.dumps({"instance_id": instance_id, "model": forecast.model, "forecast": steps}, indent=1)


def describe(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """One line about an uploaded series: metrics, points, time span (and the declared metrics it lacks)."""
    ts = series[TARGET][0]
    span_h = (int(ts[-1]) - int(ts[0])) / HOUR if len(ts) > 1 else 0.0
    metrics = ", ".join(key for key in METRICS if key in series)
    missing = [key for key, metric in METRICS.items() if metric.default and key not in series]
    return f"{len(ts)} CPU points over {span_h:.1f} h ({_iso(int(ts[0]))} → {_iso(int(ts[-1]))}); metrics: {metrics}" + (
        f"; no data for {', '.join(missing)}" if missing else ""
    )
