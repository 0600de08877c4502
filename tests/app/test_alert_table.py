"""The Alerts page's table and summary, as pure functions of alert rows."""

from __future__ import annotations

import math

import pandas as pd

from app.alert_table import OUTCOMES, alert_table, outcome_summary

T0 = 1_800_000_000


def _alert(alert_id: int, state: str, outcome: str | None, actual: int | None, lead: float = 40.0) -> dict:
    return {
        "alert_id": alert_id,
        "instance_id": f"i-{alert_id}",
        "state": state,
        "opened_at": T0,
        "updated_at": T0,
        "cleared_at": None if state == "open" else T0 + 7200,
        "threshold": 80.0,
        "crossing_ts": T0 + 2400,
        "lead_minutes": lead,
        "peak": 91.0,
        "model": "arima",
        "basis": "mean",
        "below_count": 0,
        "actual_crossing_ts": actual,
        "outcome": outcome,
        "emailed_at": None,
        "email_error": None,
    }


def test_alert_table_reports_real_lead_outcome_and_link() -> None:
    rows = pd.DataFrame(
        [
            _alert(1, "open", None, None),
            _alert(2, "cleared", "caught", T0 + 1800),
            _alert(3, "cleared", "late", T0 - 600),
            _alert(4, "cleared", "false", None, lead=25.0),
            _alert(5, "cleared", "caught", T0 + 3000),
        ]
    )
    table = alert_table(rows).set_index("alert_id")
    assert table.loc[1, "outcome"] == "pending" and table.loc[1, "lead"] == 40.0  # predicted lead while none happened
    assert table.loc[2, "lead"] == 30.0 and table.loc[2, "outcome"] == OUTCOMES["caught"]
    assert table.loc[3, "lead"] == -10.0  # warned ten minutes after the crossing
    assert table.loc[4, "lead"] == 25.0 and table.loc[4, "outcome"] == "false alarm"
    assert table.loc[1, "cleared"] == "" and table.loc[2, "cleared"] == "2027-01-15 10:00 UTC"
    assert table.loc[2, "link"] == "instance?instance=i-2"

    summary = outcome_summary(alert_table(rows[rows["state"] != "open"]))
    assert summary["caught in time"] == 2 and summary["late"] == 1 and summary["false alarm"] == 1
    assert summary["median lead"] == 40.0  # of 30 and 50 minutes


def test_summary_without_caught_alerts() -> None:
    summary = outcome_summary(alert_table(pd.DataFrame([_alert(1, "cleared", "false", None)])))
    assert summary["false alarm"] == 1 and math.isnan(summary["median lead"])
