"""Score stored forecasts against the actuals once they have arrived, and read the realised accuracy back.

Run at the start of every forecast job (``worker.py`` schedules it; nothing here schedules). A
forecast is *ready* when its last step is at least ``LATE_DATA_SECONDS`` old (CloudWatch fills late
buckets); the forecasts made since the previous pass that are ready now are scored in one go
(``forecasting.realised.score_forecast``) and their error sums added to the ``realised`` table per
instance, model and hour (the champion's forecasts also under ``auto``: what was deployed), with the cursor (``meta.realised_through``) in the same transaction, so
each forecast counts exactly once even after a crash. Forecasts are kept two days, so a worker
that was down longer than that leaves a hole rather than a backlog.

MASE divides by the instance's mean absolute one-day seasonal difference over the two days of CPU
before the first origin scored in the pass (``backtest.mase_scale``), the nearest the live system has
to the backtest's in-sample scale. Rows older than ``KEPT_DAYS`` are dropped.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from forecasting.backtest import mase_scale
from forecasting.clock import DAY, HOUR
from forecasting.features import to_frame
from forecasting.ingest import LATE_DATA_SECONDS
from forecasting.realised import FIELDS, ErrorSums, score_forecast, total
from forecasting.settings import Settings
from forecasting.store import ForecastRecord, Store

log = logging.getLogger("headroom.scoring")
CURSOR = "realised_through"
KEPT_DAYS = 8
"""Realised rows kept: a week, plus a day so the week is always whole."""
SCALE_DAYS = 2
WINDOWS = {"day": DAY, "week": 7 * DAY}


@dataclass
class ScoringReport:
    """What one scoring pass did."""

    forecasts: int = 0
    points: int = 0

    def summary(self) -> str:
        return f"scored {self.forecasts} forecasts on {self.points} actuals"


def instance_scale(cpu_ts: np.ndarray, cpu: np.ndarray, before: int, period: int) -> float:
    """Mean absolute one-day seasonal difference of the CPU in the ``SCALE_DAYS`` up to ``before``."""
    keep = (cpu_ts <= before) & (cpu_ts > before - SCALE_DAYS * DAY)
    frame = to_frame({"cpu": (cpu_ts[keep], cpu[keep])}, period)
    values = frame["cpu"].to_numpy(dtype=float) if len(frame) else np.empty(0)
    return mase_scale(values, DAY // period)


def score_realised(store: Store, settings: Settings, now: int) -> ScoringReport:
    """Score every stored forecast that became ready since the last pass; one transaction for sums and cursor."""
    report = ScoringReport()
    cursor = int(store.jobs.get_meta(CURSOR) or 0)
    ready = now - settings.horizon * settings.period - LATE_DATA_SECONDS
    by_instance: dict[str, list[ForecastRecord]] = defaultdict(list)
    for forecast in store.forecasts.made_between(cursor, ready):
        by_instance[forecast.instance_id].append(forecast)
    sums: dict[tuple[str, str, int], tuple[int, ErrorSums]] = {}
    for instance_id, forecasts in by_instance.items():
        first = min(f.origin_ts for f in forecasts)
        ts, cpu = store.samples.series(instance_id, start=first - SCALE_DAYS * DAY, metrics=["cpu"]).get("cpu", ([], []))
        ts, cpu = np.asarray(ts, dtype=np.int64), np.asarray(cpu, dtype=float)
        scale = instance_scale(ts, cpu, first, settings.period)
        for f in forecasts:
            scored = score_forecast(
                np.asarray(f.timestamps, dtype=float),
                np.asarray(f.mean, dtype=float),
                np.asarray(f.lower, dtype=float),
                np.asarray(f.upper, dtype=float),
                ts,
                cpu,
                scale,
            )
            hour = f.made_at // HOUR * HOUR
            for model in (f.model, "auto") if f.is_champion else (f.model,):
                count, previous = sums.get((instance_id, model, hour), (0, ErrorSums()))
                sums[(instance_id, model, hour)] = (count + 1, previous + scored)
            report.forecasts += 1
            report.points += scored.points
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO realised (instance_id, model, hour, forecasts, "
            + ", ".join(FIELDS)
            + ") VALUES (?, ?, ?, ?, "
            + ", ".join("?" * len(FIELDS))
            + ") ON CONFLICT (instance_id, model, hour) DO UPDATE SET forecasts = forecasts + excluded.forecasts, "
            + ", ".join(f"{f} = {f} + excluded.{f}" for f in FIELDS),
            [(*key, count, *(getattr(s, f) for f in FIELDS)) for key, (count, s) in sums.items()],
        )
        store.jobs.set_meta(CURSOR, str(max(cursor, ready)))
        conn.execute("DELETE FROM realised WHERE hour < ?", (now - KEPT_DAYS * DAY,))
    return report


def realised_scores(store: Store, now: int, instance_id: str | None = None) -> dict[str, dict[str, dict[str, dict]]]:
    """{instance: {model: {"day": scores, "week": scores}}} of forecasts made in the last day and week (see ``ErrorSums.scores``).

    Summed in SQL (one row per instance and model comes back), so the whole fleet's week costs one indexed scan.
    """
    day = now - WINDOWS["day"]
    columns = ", ".join(f"SUM({f}) AS week_{f}, SUM(CASE WHEN hour >= {int(day)} THEN {f} ELSE 0 END) AS day_{f}" for f in FIELDS)
    sql = f"SELECT instance_id, model, {columns} FROM realised WHERE hour >= ?"
    params: list = [now - WINDOWS["week"]]
    if instance_id is not None:
        sql += " AND instance_id = ?"
        params.append(instance_id)
    out: dict[str, dict[str, dict[str, dict]]] = defaultdict(dict)
    for row in store.db.query(sql + " GROUP BY instance_id, model", params):
        out[row["instance_id"]][row["model"]] = {
            window: ErrorSums(*(row[f"{window}_{f}"] for f in FIELDS)).scores() for window in WINDOWS
        }
    return dict(out)


def fleet_realised(store: Store, now: int, window: str = "day") -> dict[str, dict]:
    """Per model, the realised scores pooled over every instance for forecasts made in the window (the digest's table)."""
    rows = store.db.query(
        "SELECT model, " + ", ".join(f"SUM({f}) AS {f}" for f in FIELDS) + " FROM realised WHERE hour >= ? "
        "GROUP BY model ORDER BY model",
        (now - WINDOWS[window],),
    )
    return {row["model"]: total([row]).scores() for row in rows}
