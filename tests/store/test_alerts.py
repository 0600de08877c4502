"""Alerts and their events on a real file: typed rows, column checks, the queries mail and the alert job use."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from forecasting.store import AlertEvent, AlertRecord, Store
from tests.store import T0


def opened(instance: str, at: int, **changes: object) -> dict:
    return {
        "instance_id": instance,
        "state": "open",
        "opened_at": at,
        "updated_at": at,
        "threshold": 80.0,
        "crossing_ts": at + 1800,
        "lead_minutes": 30.0,
        "peak": 88.5,
        "model": "arima",
        "basis": "mean",
        "not_a_column": "ignored",
        **changes,
    }


def test_an_alert_reads_back_typed_with_its_defaults_and_events(store: Store) -> None:
    alert_id = store.alerts.insert(opened("i-a", T0))
    store.alerts.add_event(alert_id, T0, "opened", "crosses 80 %")
    store.alerts.update(alert_id, {"crossing_ts": T0 + 1500, "updated_at": T0 + 300})
    store.alerts.add_event(alert_id, T0 + 300, "updated")
    assert store.alerts.open() == [
        AlertRecord(
            alert_id, "i-a", "open", T0, T0 + 300, None, 80.0, T0 + 1500, 30.0, 88.5, "arima", "mean", 0, None, None, None, None
        )
    ]
    assert store.alerts.events(alert_id) == [
        AlertEvent(1, alert_id, T0, "opened", "crosses 80 %"),
        AlertEvent(2, alert_id, T0 + 300, "updated", None),
    ]
    assert (
        store.alerts.insert(asdict(store.alerts.open()[0])) == alert_id + 1
    )  # a read row writes back as it is (its id left out)


def test_updates_refuse_unknown_columns_and_change_nothing(store: Store) -> None:
    alert_id = store.alerts.insert(opened("i-a", T0))
    with pytest.raises(ValueError, match="not an alerts column: alert_id"):
        store.alerts.update(alert_id, {"alert_id": 9, "peak": 1.0})
    store.alerts.update(alert_id, {})
    assert store.alerts.open()[0].peak == 88.5


def test_the_queries_of_the_alert_job_and_the_mail(store: Store) -> None:
    cleared = store.alerts.insert(opened("i-a", T0, state="cleared", cleared_at=T0 + 600))
    resolved = store.alerts.insert(
        opened("i-a", T0 + 900, state="cleared", cleared_at=T0 + 1200, outcome="false", emailed_at=T0 + 950)
    )
    mailed = store.alerts.insert(opened("i-b", T0 + 1200, emailed_at=T0 + 1300))
    waiting = [store.alerts.insert(opened(iid, T0 + 1500)) for iid in ("i-c", "i-a")]
    assert [a.alert_id for a in store.alerts.unresolved()] == [*reversed(waiting), mailed, cleared]  # newest first
    assert [a.alert_id for a in store.alerts.to_email()] == waiting  # oldest first
    assert store.alerts.last_emailed() == {"i-a": T0 + 950, "i-b": T0 + 1300}
    assert [a.alert_id for a in store.alerts.recent(state="cleared")] == [resolved, cleared]
    assert [a.alert_id for a in store.alerts.recent(instance_id="i-a", limit=2)] == [waiting[1], resolved]
    assert [a.alert_id for a in store.alerts.open()] == [*reversed(waiting), mailed]
