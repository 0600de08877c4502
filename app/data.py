"""Store access for the dashboard: one read-only connection per database, short-lived cached reads.

Pages call the ``load_*`` functions here and never the store directly, so every read is
cached (``st.cache_data`` with a short TTL, keyed by the database path) and the connection
is shared (``st.cache_resource``). Everything returned is the store's typed rows (frozen
dataclasses), lists and frames, so it can be cached and pickled. No SQL here: only the store's repositories.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeGuard

import pandas as pd
import streamlit as st

from app.fleet_table import build_fleet_table
from forecasting.clock import DAY, HOUR
from forecasting.scoring import realised_scores
from forecasting.settings import Settings, SettingsError, load_settings
from forecasting.store import AlertRecord, ForecastRecord, Heartbeat, Instance, Store, TrainingRun
from forecasting.store.samples import Series

CACHE_TTL = 15
"""Seconds a cached read stays fresh: short, as the worker writes every few minutes."""
REFRESH_SECONDS = 30
"""How often live fragments (Fleet, Instance, Alerts) re-run themselves."""
PAST_FORECAST_SECONDS = HOUR
"""The Instance page draws the deployed forecast made this long (or more) before the newest sample over the actuals."""


def settings() -> Settings:
    """The current settings; a bad value stops the page with the same one line the worker prints."""
    try:
        return load_settings()
    except SettingsError as error:
        st.error(f"headroom: {error}")
        st.stop()
        raise  # unreachable: st.stop() raises; keeps type checkers happy


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    """One read-only connection per database file, shared by every session of this server."""
    return Store(path, readonly=True)


def db_key(config: Settings) -> str | None:
    """The database path used as the cache key, or None when the worker has not created it yet."""
    path = Path(config.db).resolve()
    return str(path) if path.is_file() else None


def store(db: str) -> Store:
    """The shared connection to ``db`` (a path from :func:`db_key`)."""
    return _open_store(db)


def _ready(db: str | None) -> TypeGuard[str]:
    """True when the database exists and its schema is in place (the worker may be creating it)."""
    if db is None:
        return False
    try:
        return store(db).schema_version > 0
    except sqlite3.Error:
        return False


def _frame(rows: Sequence[Any]) -> pd.DataFrame:
    """Typed rows as a frame, one column per field (what the tables and charts take)."""
    return pd.DataFrame([asdict(row) for row in rows])


# ---- fleet ---------------------------------------------------------------
@st.cache_data(ttl=CACHE_TTL, show_spinner=False)
def load_fleet(db: str | None, alert_on: str, margin: float) -> pd.DataFrame:
    """The Fleet table (see :func:`app.fleet_table.build_fleet_table`) for the database at ``db``, by the alert rule's settings."""
    if not _ready(db):
        return build_fleet_table([], {}, [], {}, [], int(time.time()), alert_on, margin)
    s = store(db)
    return build_fleet_table(
        s.samples.instances(),
        s.samples.trailing(DAY, "cpu"),
        s.forecasts.latest(champion_only=True),
        s.runs.latest(),
        s.alerts.open(),
        int(time.time()),
        alert_on,
        margin,
    )


@st.cache_data(ttl=CACHE_TTL, show_spinner=False)
def load_heartbeats(db: str | None) -> dict[str, Heartbeat]:
    """The last run of every worker job, by job."""
    if not _ready(db):
        return {}
    return store(db).jobs.heartbeats()


@st.cache_data(ttl=CACHE_TTL, show_spinner=False)
def load_instances(db: str | None) -> list[Instance]:
    """Every monitored instance."""
    if not _ready(db):
        return []
    return store(db).samples.instances()


# ---- one instance --------------------------------------------------------
@dataclass(frozen=True)
class InstanceView:
    """What the Instance page shows of one instance."""

    instance: Instance
    newest: int | None  # the newest CPU sample's timestamp
    samples: dict[str, Series]  # the last hours up to ``newest``
    forecasts: list[ForecastRecord]  # every model's latest
    past: ForecastRecord | None  # the deployed forecast made an hour or more before ``newest``
    run: TrainingRun | None  # the latest training run
    alerts: list[AlertRecord]  # the newest 20


@st.cache_data(ttl=CACHE_TTL, show_spinner=False)
def load_instance(db: str, instance_id: str, hours: float) -> InstanceView | None:
    """Samples of the last ``hours`` (ending at the newest sample), every model's latest forecast, alerts."""
    s = store(db)
    inst = s.samples.instance(instance_id)
    if inst is None:
        return None
    newest = s.samples.newest_ts(instance_id)
    samples: dict[str, Series] = {}
    if newest is not None:
        samples = s.samples.series(instance_id, start=newest - int(hours * HOUR), end=newest)
    runs = s.runs.history(instance_id, limit=1)
    return InstanceView(
        instance=inst,
        newest=newest,
        samples=samples,
        forecasts=s.forecasts.latest(instance_id, champion_only=False),
        past=s.forecasts.champion_before(instance_id, newest - PAST_FORECAST_SECONDS) if newest is not None else None,
        run=runs[0] if runs else None,
        alerts=s.alerts.recent(instance_id=instance_id, limit=20),
    )


# ---- models --------------------------------------------------------------
@st.cache_data(ttl=CACHE_TTL, show_spinner=False)
def load_realised(db: str | None) -> pd.DataFrame:
    """Realised accuracy per instance, model and window (last day, last week): one row each, scored points only."""
    if not _ready(db):
        return pd.DataFrame()
    s = store(db)
    names = {inst.instance_id: inst.name or inst.instance_id for inst in s.samples.instances()}
    try:
        scored = realised_scores(s, int(time.time()))
    except sqlite3.OperationalError:  # a store the worker has not migrated to the realised table yet
        return pd.DataFrame()
    rows = [
        {"name": names.get(iid, iid), "instance_id": iid, "model": model, "window": window, **values}
        for iid, models in scored.items()
        for model, windows in models.items()
        for window, values in windows.items()
        if values["points"]
    ]
    return pd.DataFrame(rows).sort_values(["instance_id", "window", "model"], ignore_index=True) if rows else pd.DataFrame()


@st.cache_data(ttl=CACHE_TTL, show_spinner=False)
def load_scores(db: str | None) -> pd.DataFrame:
    """Scores of every model in each instance's latest training run, with the instance's name."""
    if not _ready(db):
        return pd.DataFrame()
    s = store(db)
    names = {inst.instance_id: inst.name or inst.instance_id for inst in s.samples.instances()}
    champions = {iid: run.champion for iid, run in s.runs.latest().items()}
    frame = _frame(s.runs.scores())
    if frame.empty:
        return frame
    frame.insert(0, "name", frame["instance_id"].map(names))
    frame["champion"] = frame["model"] == frame["instance_id"].map(champions)
    return frame


@st.cache_data(ttl=CACHE_TTL, show_spinner=False)
def load_runs(db: str, instance_id: str) -> pd.DataFrame:
    """Training runs of one instance, newest first (the champion's history)."""
    return _frame(store(db).runs.history(instance_id, limit=200))


@st.cache_data(ttl=CACHE_TTL, show_spinner=False)
def load_backtest(db: str, run_id: int) -> pd.DataFrame:
    """Backtest points of one run: model, origin_ts, ts, actual, mean, lower, upper."""
    return _frame(store(db).runs.backtest_points(run_id))


# ---- alerts --------------------------------------------------------------
@st.cache_data(ttl=CACHE_TTL, show_spinner=False)
def load_alerts(db: str | None) -> pd.DataFrame:
    """Every alert (newest first) with its instance's name."""
    if not _ready(db):
        return pd.DataFrame()
    s = store(db)
    names = {inst.instance_id: inst.name or inst.instance_id for inst in s.samples.instances()}
    frame = _frame(s.alerts.recent(limit=1000))
    if not frame.empty:
        frame.insert(1, "name", frame["instance_id"].map(names))
    return frame
