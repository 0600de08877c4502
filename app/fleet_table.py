"""The Fleet table as a pure function of what the store holds: one row per instance, sorted by risk.

Kept free of Streamlit so the ranking can be tested and benchmarked on its own. Crossing, time to
limit, peak and risk level come from ``forecasting.crossing``, the rule the alerts use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.clock import MINUTE
from forecasting.crossing import minutes_to_limit, outlook, risk_level, shown_crossing
from forecasting.store import AlertRecord, ForecastRecord, Instance, TrainingRun

SPARK_BUCKET = 15 * MINUTE
"""Sparklines show 15-minute means: 96 points a day is plenty for a thumbnail and keeps the page light."""


@dataclass(frozen=True)
class Level:
    """How the page shows a risk level (``forecasting.crossing.RISK_LEVELS``): its rank (lower is worse), a label, a
    Material icon and the colour used for it everywhere."""

    key: str
    rank: int
    badge: str
    icon: str
    colour: str


LEVELS: dict[str, Level] = {
    level.key: level
    for level in (
        Level("over", 0, "OVER LIMIT", ":material/error:", "#ffc9c9"),
        Level("alert", 1, "ALERT", ":material/notifications_active:", "#ffc9c9"),
        Level("risk", 2, "will cross", ":material/trending_up:", "#ffd8a8"),
        Level("watch", 3, "near limit", ":material/visibility:", "#fff3bf"),
        Level("ok", 4, "ok", ":material/check_circle:", "#d3f9d8"),
        Level("unknown", 5, "no forecast", ":material/hourglass_empty:", "#f1f3f5"),
    )
}

COLUMNS = [
    "status",
    "name",
    "instance_id",
    "cpu_now",
    "peak",
    "threshold",
    "to_threshold_min",
    "crossing_ts",
    "alert",
    "champion",
    "sparkline",
    "last_sample_ts",
    "level",
    "link",
]


def sparkline(ts: np.ndarray, values: np.ndarray, bucket: int = SPARK_BUCKET) -> list[float]:
    """Mean value per time bucket, oldest first (empty for an empty series)."""
    if len(ts) == 0:
        return []
    slots = (np.asarray(ts, dtype=np.int64) // bucket).astype(np.int64)
    _, inverse = np.unique(slots, return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(values, dtype=float))
    counts = np.bincount(inverse)
    return np.round(sums / counts, 1).tolist()


def build_fleet_table(
    instances: list[Instance],
    cpu: dict[str, tuple[np.ndarray, np.ndarray]],
    forecasts: list[ForecastRecord],
    runs: dict[str, TrainingRun],
    open_alerts: list[AlertRecord],
    now: int,
    alert_on: str,
    margin: float,
) -> pd.DataFrame:
    """One row per instance, worst first: level, then sooner crossing, then higher peak relative to the limit."""
    by_instance = {f.instance_id: f for f in forecasts}
    alerts: dict[str, AlertRecord] = {}
    for opened in open_alerts:
        alerts.setdefault(opened.instance_id, opened)
    rows = []
    for inst in instances:
        iid = inst.instance_id
        ts, values = cpu.get(iid, (np.empty(0, dtype=np.int64), np.empty(0)))
        latest = (int(ts[-1]), float(values[-1])) if len(values) else None  # the newest sample (ts, CPU)
        last_ts, cpu_now = latest or (None, None)
        forecast = by_instance.get(iid)
        alert = alerts.get(iid)
        seen = outlook(forecast, inst.threshold, alert_on, now, latest) if forecast is not None and forecast.mean else None
        level = risk_level(cpu_now, inst.threshold, margin, seen, alert is not None)
        crossing = shown_crossing(seen, alert.crossing_ts if alert is not None else None, inst.threshold, last_ts, cpu_now)
        run = runs.get(iid)
        rows.append(
            {
                "status": LEVELS[level].badge,
                "name": inst.name or iid,
                "instance_id": iid,
                "cpu_now": cpu_now,
                "peak": seen.peak if seen is not None else math.nan,
                "threshold": float(inst.threshold),
                "to_threshold_min": minutes_to_limit(crossing, now) if crossing is not None else math.nan,
                "crossing_ts": crossing,
                "alert": f"open ({alert.basis})" if alert is not None else "",
                "champion": (run.champion if run is not None else None) or "—",
                "sparkline": sparkline(ts, values),
                "last_sample_ts": int(ts[-1]) if len(ts) else None,
                "level": level,
                "link": f"instance?instance={iid}",
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        return frame
    frame["_rank"] = frame["level"].map(lambda key: LEVELS[key].rank)
    frame["_minutes"] = frame["to_threshold_min"].fillna(math.inf)
    frame["_ratio"] = -(frame["peak"].fillna(frame["cpu_now"]).fillna(0.0) / frame["threshold"])
    frame = frame.sort_values(["_rank", "_minutes", "_ratio", "instance_id"], kind="stable")
    return frame.drop(columns=["_rank", "_minutes", "_ratio"]).reset_index(drop=True)


def level_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many instances sit at each level (for the summary above the table)."""
    if frame.empty:
        return {}
    counts = frame["level"].value_counts()
    return {key: int(counts.get(key, 0)) for key in LEVELS if counts.get(key, 0)}
