"""The outbox on a real store and real alerts, delivered to recording HTTP servers on loopback.

Alerts come from ``evaluate_alerts`` on hand-made forecasts, so the events are the ones the worker writes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import numpy as np
import pytest

from forecasting.alerts import evaluate_alerts, iso_utc
from forecasting.outbox import deliver, enqueue, is_material, pending
from forecasting.settings import Settings, load_settings
from forecasting.store import Store
from forecasting.webhooks import SIGNATURE_HEADER, event_message
from tests.fixtures.services import free_port
from tests.fixtures.webhooks import WebhookSink

P = 300
T = 1_800_000_000
IID = "i-0abc0000000000001"
SECRET = "s3cret"


def forecast(origin: int, mean: list[float]) -> dict:
    return {
        "instance_id": IID,
        "run_id": 1,
        "model": "arima",
        "is_champion": True,
        "made_at": origin + P,
        "origin_ts": origin,
        "timestamps": [origin + P * (k + 1) for k in range(len(mean))],
        "mean": mean,
        "lower": [m - 4 for m in mean],
        "upper": [m + 4 for m in mean],
    }


def cycle(store: Store, settings: Settings, now: int, mean: list[float]) -> None:
    store.forecasts.record([forecast(now - P, mean)])
    evaluate_alerts(store, settings, now)


CROSSING = list(np.linspace(60, 90, 12))  # crosses 80 % at step 8
QUIET = [40.0] * 12


def make_settings(tmp_path: Path, **destinations: object) -> Settings:
    base = {
        "db": tmp_path / "headroom.db",
        "threshold": 80,
        "alert_margin": 5,
        "horizon": 12,
        "webhook_timeout": 2,
        "webhook_attempts": 3,
        "webhook_deadline": 10,
    }
    return load_settings(**{**base, **destinations})


@pytest.fixture()
def store(tmp_path: Path, clean_env: Path):
    with Store(tmp_path / "headroom.db") as s:
        s.samples.upsert_instance(IID, "web-1", 80.0, T - 86_400)
        yield s


def act(store: Store, settings: Settings, now: int):
    enqueue(store, settings, now)
    return deliver(store, settings, now)


def test_open_then_clear_reach_every_destination_once_each(
    store: Store, tmp_path: Path, webhook_sink: WebhookSink, second_sink: WebhookSink
) -> None:
    settings = make_settings(
        tmp_path,
        webhook_url=webhook_sink.url,
        webhook_secret=SECRET,
        pagerduty_routing_key="R0UTING",
        pagerduty_url=second_sink.url,
    )
    cycle(store, settings, T, CROSSING)
    report = act(store, settings, T)
    assert [d.sent for d in report.destinations] == [1, 1], report.summary()
    [opened] = webhook_sink.received
    assert opened.headers[SIGNATURE_HEADER] == "sha256=" + hmac.new(SECRET.encode(), opened.body, hashlib.sha256).hexdigest()
    assert opened.json()["event"] == "opened" and opened.json()["alert"]["instance_id"] == IID
    assert second_sink.received[0].json()["event_action"] == "trigger"
    for k in (1, 2):  # two quiet cycles clear the alert (hysteresis); nothing new is sent before that
        cycle(store, settings, T + k * P, QUIET)
        act(store, settings, T + k * P)
    assert [r.json()["event"] for r in webhook_sink.received] == ["opened", "cleared"]
    resolve = second_sink.received[-1].json()
    assert resolve == {"event_action": "resolve", "dedup_key": "headroom-alert-1", "routing_key": "R0UTING"}
    act(store, settings, T + 3 * P)  # nothing new: nothing sent
    assert len(webhook_sink.received) == 2 and len(second_sink.received) == 2
    rows = store.db.query("SELECT destination, kind, state, attempts FROM outbox ORDER BY outbox_id")
    assert [tuple(r) for r in rows] == [
        ("webhook", "opened", "delivered", 1),
        ("pagerduty", "opened", "delivered", 1),
        ("webhook", "cleared", "delivered", 1),
        ("pagerduty", "cleared", "delivered", 1),
    ]


def test_a_500_is_retried_with_backoff_and_delivered_once(store: Store, tmp_path: Path, webhook_sink: WebhookSink) -> None:
    settings = make_settings(tmp_path, slack_webhook_url=webhook_sink.url)
    webhook_sink.statuses = [500, 500]
    cycle(store, settings, T, CROSSING)
    report = act(store, settings, T)
    assert report.destinations[0].sent == 1 and webhook_sink.answers(3) == [500, 500, 200]
    gaps = np.diff([r.at for r in webhook_sink.received])
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95  # 0.5 s, then 1 s
    assert len({r.body for r in webhook_sink.received}) == 1  # the same message each time
    act(store, settings, T + P)
    assert len(webhook_sink.received) == 3  # after the 200, never again


def test_a_destination_down_for_a_cycle_loses_nothing_and_sends_nothing_twice(
    store: Store, tmp_path: Path, webhook_sink: WebhookSink, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, webhook_url=webhook_sink.url, webhook_attempts=2)
    webhook_sink.default = 503
    cycle(store, settings, T, CROSSING)
    with caplog.at_level("WARNING", logger="headroom.webhooks"):
        report = act(store, settings, T)
    assert report.destinations[0].sent == 0 and report.destinations[0].waiting == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "headroom.webhooks"]
    assert lines == ["webhook webhook (http://127.0.0.1): 0 sent, 1 waiting (HTTP 503), retried next cycle"]
    assert pending(store) == {"webhook": 1}
    for k in (1, 2):
        cycle(store, settings, T + k * P, QUIET)  # the alert clears while the destination is down
        act(store, settings, T + k * P)
    assert pending(store) == {"webhook": 2}
    webhook_sink.default = 200
    webhook_sink.received.clear()
    act(store, settings, T + 3 * P)
    act(store, settings, T + 4 * P)
    assert [r.json()["event"] for r in webhook_sink.received] == ["opened", "cleared"]  # in order, once each
    assert pending(store) == {}


def test_a_refused_message_is_kept_as_rejected_and_the_next_goes_on(
    store: Store, tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    settings = make_settings(tmp_path, webhook_url=webhook_sink.url)
    webhook_sink.statuses = [400]
    cycle(store, settings, T, CROSSING)
    for k in (1, 2):
        cycle(store, settings, T + k * P, QUIET)
    report = act(store, settings, T + 2 * P)
    assert report.destinations[0].rejected == 1 and report.destinations[0].sent == 1
    states = [tuple(r) for r in store.db.query("SELECT kind, state, last_error FROM outbox ORDER BY outbox_id")]
    assert states == [("opened", "rejected", "HTTP 400"), ("cleared", "delivered", None)]


def test_one_silent_destination_delays_neither_the_others_nor_the_cycle(
    store: Store, tmp_path: Path, webhook_sink: WebhookSink, second_sink: WebhookSink
) -> None:
    settings = make_settings(
        tmp_path, webhook_url=webhook_sink.url, slack_webhook_url=second_sink.url, webhook_timeout=1, webhook_deadline=3
    )
    webhook_sink.hang = 30  # accepts the connection, never answers in time
    cycle(store, settings, T, CROSSING)
    started = time.monotonic()
    report = act(store, settings, T)
    took = time.monotonic() - started
    assert took < 5, took  # the deadline, not the silent server, decides
    assert second_sink.received and second_sink.received[0].at - started < 1.0  # Slack did not wait for the other one
    generic, slack = report.destinations
    assert slack.sent == 1 and generic.sent == 0 and generic.waiting == 1 and "timed out" in (generic.error or "")
    webhook_sink.hang = 0
    act(store, settings, T + P)
    assert pending(store) == {} and len(second_sink.received) == 1


def test_updates_are_sent_only_when_material(store: Store, tmp_path: Path, webhook_sink: WebhookSink) -> None:
    settings = make_settings(tmp_path, webhook_url=webhook_sink.url, webhook_min_change=15)
    cycle(store, settings, T, CROSSING)  # crossing at T + 8 steps
    act(store, settings, T)
    cycle(store, settings, T + P, CROSSING)  # the same shape a cycle later: the crossing moves 5 min, not material
    act(store, settings, T + P)
    assert [r.json()["event"] for r in webhook_sink.received] == ["opened"]
    cycle(store, settings, T + 2 * P, [82.0] * 12)  # crossing at once: 30 min earlier than first said
    act(store, settings, T + 2 * P)
    events = [r.json() for r in webhook_sink.received]
    assert [e["event"] for e in events] == ["opened", "updated"] and events[1]["alert"]["minutes_to_limit"] == 0.0
    assert events[1]["alert"]["predicted_crossing_at"] == iso_utc(T + 2 * P)
    kinds = [e.kind for e in store.alerts.events(1)]
    assert kinds.count("updated") == 2  # the alert itself recorded both changes; only one was worth a message


def test_materiality_rule() -> None:
    alert = {
        "alert_id": 1,
        "instance_id": IID,
        "threshold": 80.0,
        "crossing_ts": T + 1800,
        "peak": 85.0,
        "model": "arima",
        "basis": "mean",
        "opened_at": T,
    }
    first = event_message("opened", alert, 1, T)
    assert is_material(None, first, 15)
    assert not is_material(first, event_message("updated", {**alert, "crossing_ts": T + 1800 + 600}, 2, T), 15)
    assert is_material(first, event_message("updated", {**alert, "crossing_ts": T + 1800 + 900}, 2, T), 15)
    assert is_material(first, event_message("updated", {**alert, "basis": "upper"}, 2, T), 15)
    assert is_material(event_message("cleared", alert, 3, T), event_message("updated", alert, 4, T), 15)


def test_no_destination_moves_the_cursor_so_turning_one_on_later_replays_nothing(
    store: Store, tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    off = make_settings(tmp_path)
    cycle(store, off, T, CROSSING)
    assert enqueue(store, off, T) == 0
    on = make_settings(tmp_path, webhook_url=webhook_sink.url)
    for k in (1, 2):
        cycle(store, on, T + k * P, QUIET)
    act(store, on, T + 2 * P)
    assert [r.json()["event"] for r in webhook_sink.received] == ["cleared"]


def test_the_cursor_and_the_rows_commit_together(store: Store, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, webhook_url=f"http://127.0.0.1:{free_port()}/x")
    cycle(store, settings, T, CROSSING)
    with store.transaction() as conn:
        conn.execute("CREATE TRIGGER fail_outbox BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(Exception, match="disk full"):
        enqueue(store, settings, T)
    assert store.jobs.get_meta("outbox_event_cursor") is None  # the cursor did not move without its rows
    with store.transaction() as conn:
        conn.execute("DROP TRIGGER fail_outbox")
    assert enqueue(store, settings, T) == 1 and enqueue(store, settings, T) == 0


def test_a_reopened_warning_triggers_pagerduty_again_on_the_same_dedup_key(
    store: Store, tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    settings = make_settings(tmp_path, pagerduty_routing_key="R0UTING", pagerduty_url=webhook_sink.url)
    steps = [CROSSING, QUIET, QUIET, CROSSING]  # open, two quiet cycles clear it, a crossing within the hour reopens it
    for k, mean in enumerate(steps):
        cycle(store, settings, T + k * P, mean)
        act(store, settings, T + k * P)
    sent = [r.json() for r in webhook_sink.received]
    assert [(s["event_action"], s["dedup_key"]) for s in sent] == [
        ("trigger", "headroom-alert-1"),
        ("resolve", "headroom-alert-1"),
        ("trigger", "headroom-alert-1"),
    ]
    assert sent[2]["payload"]["summary"].startswith("again: ")
