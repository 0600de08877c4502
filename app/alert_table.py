"""The Alerts page's tables as pure functions of the stored alert rows (no Streamlit)."""

from __future__ import annotations

import math

import pandas as pd

from app.format import utc_text

OUTCOMES = {"caught": "caught in time", "late": "late", "false": "false alarm"}
"""How an alert ended, as the alerts job records it in ``alerts.outcome``."""


def _time_or_blank(ts: object) -> str:
    return utc_text(ts) if pd.notna(ts) else ""


def alert_table(alerts: pd.DataFrame) -> pd.DataFrame:
    """Display columns for alert rows: times as text, the outcome in words, the lead time, a link.

    The lead is how long before the real crossing the warning came (negative when late);
    while no crossing has happened it is the lead predicted when the alert opened.
    """
    out = alerts.copy()
    out["opened"] = out["opened_at"].map(utc_text)
    out["cleared"] = out["cleared_at"].map(_time_or_blank)
    out["predicted crossing"] = out["crossing_ts"].map(utc_text)
    out["emailed"] = out["emailed_at"].map(_time_or_blank)
    real_lead = (pd.to_numeric(out["actual_crossing_ts"], errors="coerce") - out["opened_at"]) / 60
    out["lead"] = real_lead.fillna(out["lead_minutes"].astype(float))
    out["outcome"] = out["outcome"].map(lambda o: OUTCOMES.get(o, o) if isinstance(o, str) else "pending")
    out["link"] = "instance?instance=" + out["instance_id"]
    return out


def outcome_summary(past: pd.DataFrame) -> dict[str, float]:
    """Counts of each outcome among past alerts, and the median lead of those caught in time (NaN if none)."""
    counts = past["outcome"].value_counts() if not past.empty else pd.Series(dtype=int)
    summary: dict[str, float] = {label: int(counts.get(label, 0)) for label in OUTCOMES.values()}
    caught = past.loc[past["outcome"] == OUTCOMES["caught"], "lead"] if not past.empty else pd.Series(dtype=float)
    summary["median lead"] = float(caught.median()) if len(caught) else math.nan
    return summary
