"""Alerts and their event log: each state change of an alert is one ``alert_events`` row."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from forecasting.store.db import Database, columns


@dataclass(frozen=True)
class AlertRecord:
    """One early warning as stored (see ``forecasting.alerts`` for how it opens, clears and is scored)."""

    alert_id: int
    instance_id: str
    state: str  # 'open' or 'cleared'
    opened_at: int
    updated_at: int
    cleared_at: int | None
    threshold: float
    crossing_ts: int  # predicted crossing (latest forecast)
    lead_minutes: float  # at opening
    peak: float
    model: str
    basis: str  # 'mean', 'likely', 'upper' or 'now' (CPU already at or over the threshold)
    below_count: int
    actual_crossing_ts: int | None  # first real sample at or above the threshold while open
    outcome: str | None  # 'caught', 'late' or 'false' once known
    emailed_at: int | None
    email_error: str | None


@dataclass(frozen=True)
class AlertEvent:
    """One state change of an alert: opened, reopened, updated, crossed, cleared, resolved, emailed, email_failed."""

    event_id: int
    alert_id: int
    ts: int
    kind: str
    detail: str | None


ALERT_COLUMNS = tuple(f.name for f in fields(AlertRecord) if f.name != "alert_id")
"""The columns a write may set."""
SELECT = f"SELECT {columns(AlertRecord)} FROM alerts"


class Alerts:
    """The ``alerts`` and ``alert_events`` tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- reads -------------------------------------------------------------
    def recent(self, state: str | None = None, instance_id: str | None = None, limit: int = 1000) -> list[AlertRecord]:
        """Alerts, newest first, optionally of one state ('open' / 'cleared') or instance."""
        sql, params = f"{SELECT} WHERE 1 = 1", []
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        if instance_id is not None:
            sql += " AND instance_id = ?"
            params.append(instance_id)
        return self._read(sql + " ORDER BY alert_id DESC LIMIT ?", [*params, limit])

    def open(self) -> list[AlertRecord]:
        """Every open alert, newest first."""
        return self._read(f"{SELECT} WHERE state = 'open' ORDER BY alert_id DESC")

    def unresolved(self) -> list[AlertRecord]:
        """Alerts still open or whose outcome is not known yet, newest first."""
        return self._read(f"{SELECT} WHERE state = 'open' OR outcome IS NULL ORDER BY alert_id DESC")

    def to_email(self) -> list[AlertRecord]:
        """Open alerts that have not been mailed yet, oldest first."""
        return self._read(f"{SELECT} WHERE state = 'open' AND emailed_at IS NULL ORDER BY alert_id")

    def last_emailed(self) -> dict[str, int]:
        """When an alert of each instance was last mailed (for the per-instance cooldown)."""
        rows = self.db.query("SELECT instance_id, MAX(emailed_at) FROM alerts WHERE emailed_at IS NOT NULL GROUP BY instance_id")
        return {r[0]: int(r[1]) for r in rows}

    def events(self, alert_id: int) -> list[AlertEvent]:
        """The event log of one alert, oldest first."""
        rows = self.db.query(f"SELECT {columns(AlertEvent)} FROM alert_events WHERE alert_id = ? ORDER BY event_id", (alert_id,))
        return [AlertEvent(*row) for row in rows]

    def _read(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[AlertRecord]:
        return [AlertRecord(*row) for row in self.db.query(sql, params)]

    # ---- writes ------------------------------------------------------------
    def insert(self, values: dict[str, Any]) -> int:
        """Insert one alert (the ``ALERT_COLUMNS`` of ``values``; others are ignored); returns its alert_id."""
        names = [name for name in ALERT_COLUMNS if name in values]
        with self.db.transaction() as conn:
            cur = conn.execute(
                f"INSERT INTO alerts ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [values[name] for name in names],
            )
        return int(cur.lastrowid or 0)

    def update(self, alert_id: int, values: dict[str, Any]) -> None:
        """Set some columns of one alert (a name that is not an ``ALERT_COLUMNS`` one is refused)."""
        unknown = set(values) - set(ALERT_COLUMNS)
        if unknown:
            raise ValueError(f"not an alerts column: {sorted(unknown)[0]}")
        if not values:
            return
        with self.db.transaction() as conn:
            conn.execute(
                f"UPDATE alerts SET {', '.join(f'{name} = ?' for name in values)} WHERE alert_id = ?",
                [*values.values(), alert_id],
            )

    def add_event(self, alert_id: int, ts: int, kind: str, detail: str | None = None) -> None:
        """Append one state change of an alert to ``alert_events``."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO alert_events (alert_id, ts, kind, detail) VALUES (?, ?, ?, ?)", (alert_id, int(ts), kind, detail)
            )
