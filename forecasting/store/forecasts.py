"""Stored forecasts: every model's forecast of each cycle, the champion's flagged, with retention."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from forecasting.store.db import Database, columns

ARRAYS = ("timestamps", "mean", "lower", "upper")
"""The columns stored as JSON arrays of equal length."""


@dataclass(frozen=True)
class ForecastRecord:
    """One stored forecast: the next horizon's timestamps with the point forecast and its interval."""

    forecast_id: int
    instance_id: str
    run_id: int
    model: str
    is_champion: bool
    made_at: int  # wall clock when it was made
    origin_ts: int  # the last sample it used
    timestamps: tuple[int, ...]
    mean: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    @classmethod
    def from_row(cls, row: Any) -> ForecastRecord:
        """From a ``forecasts`` row selected with ``columns(ForecastRecord)``: flags as bool, arrays decoded."""
        values = dict(zip((f.name for f in fields(cls)), row, strict=True))
        values["is_champion"] = bool(values["is_champion"])
        for key in ARRAYS:
            values[key] = tuple(json.loads(values[key]))
        return cls(**values)


SELECT = f"SELECT {columns(ForecastRecord)} FROM forecasts"


class Forecasts:
    """The ``forecasts`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Store forecasts atomically; each dict: instance_id, run_id, model, is_champion, made_at, origin_ts, timestamps, mean, lower, upper."""
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO forecasts (instance_id, run_id, model, is_champion, made_at, origin_ts, timestamps, mean, lower, upper) "
                "VALUES (:instance_id, :run_id, :model, :is_champion, :made_at, :origin_ts, :timestamps, :mean, :lower, :upper)",
                [
                    {
                        **r,
                        "is_champion": int(bool(r["is_champion"])),
                        **{k: json.dumps([_round(x) for x in r[k]]) for k in ARRAYS},
                    }
                    for r in rows
                ],
            )

    def latest(self, instance_id: str | None = None, champion_only: bool = True) -> list[ForecastRecord]:
        """The newest forecast per instance (and per model unless champion_only), by instance and model."""
        where = "WHERE is_champion = 1" if champion_only else "WHERE 1 = 1"
        params: list[Any] = []
        if instance_id is not None:
            where += " AND instance_id = ?"
            params.append(instance_id)
        group = "instance_id" if champion_only else "instance_id, model"
        rows = self.db.query(
            f"{SELECT} WHERE forecast_id IN (SELECT MAX(forecast_id) FROM forecasts {where} GROUP BY {group}) "
            "ORDER BY instance_id, model",
            params,
        )
        return [ForecastRecord.from_row(r) for r in rows]

    def champion_before(self, instance_id: str, made_by: int) -> ForecastRecord | None:
        """The newest champion forecast of an instance made at or before ``made_by``, or None."""
        rows = self.db.query(
            f"{SELECT} WHERE instance_id = ? AND is_champion = 1 AND made_at <= ? ORDER BY forecast_id DESC LIMIT 1",
            (instance_id, int(made_by)),
        )
        return ForecastRecord.from_row(rows[0]) if rows else None

    def made_between(self, after: int, until: int) -> list[ForecastRecord]:
        """Every forecast made in ``(after, until]``, by instance, oldest first (what a realised-accuracy pass scores)."""
        rows = self.db.query(f"{SELECT} WHERE made_at > ? AND made_at <= ? ORDER BY instance_id, forecast_id", (after, until))
        return [ForecastRecord.from_row(r) for r in rows]

    def champion_times(self) -> dict[str, int]:
        """When each instance's latest champion forecast was made (index walk, as ``latest``)."""
        rows = self.db.query(
            "SELECT instance_id, made_at FROM forecasts WHERE forecast_id IN "
            "(SELECT MAX(forecast_id) FROM forecasts WHERE is_champion = 1 GROUP BY instance_id)"
        )
        return {r[0]: int(r[1]) for r in rows}

    def prune(self, keep_after: int) -> int:
        """Drop forecasts made before a time, keeping each instance's and model's newest one."""
        with self.db.transaction() as conn:
            return conn.execute(
                # old rows come from the made_at index; each is checked against a newer one of its instance and
                # model through forecasts_latest, so the cost follows what is deleted, not the table's size
                "DELETE FROM forecasts WHERE made_at < ? AND EXISTS (SELECT 1 FROM forecasts AS newer WHERE "
                "newer.instance_id = forecasts.instance_id AND newer.model = forecasts.model AND newer.forecast_id > forecasts.forecast_id)",
                (keep_after,),
            ).rowcount


def _round(value: Any) -> Any:
    """Timestamps stay whole; values keep four decimals (plenty for CPU percent, and a smaller table)."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    return round(float(value), 4)
