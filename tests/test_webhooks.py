"""Webhook payloads (generic, Slack, PagerDuty), the signature, and one POST against a real loopback server."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest

from forecasting.settings import SettingsError, load_settings
from forecasting.webhooks import (
    SIGNATURE_HEADER,
    Destination,
    body_for,
    destinations,
    event_message,
    pagerduty_body,
    post,
    slack_body,
)
from tests.fixtures.services import free_port
from tests.fixtures.webhooks import WebhookSink

T = 1_800_000_000
ALERT = {
    "alert_id": 7,
    "instance_id": "i-0abc0000000000001",
    "name": "web-1",
    "threshold": 80.0,
    "crossing_ts": T + 35 * 60,
    "peak": 88.25,
    "model": "arima",
    "basis": "mean",
    "opened_at": T,
    "cleared_at": None,
}


def test_the_generic_message_carries_the_documented_fields() -> None:
    message = event_message("opened", ALERT, event_id=31, at=T, margin=5)
    assert message["id"] == "headroom-7-31" and message["event"] == "opened" and message["occurred_at"] == "2027-01-15T08:00:00Z"
    alert = message["alert"]
    assert (
        alert["state"] == "open"
        and alert["minutes_to_limit"] == 35.0
        and alert["predicted_crossing_at"] == "2027-01-15T08:35:00Z"
    )
    assert (
        alert["predicted_peak"] == 88.25
        and alert["model"] == "arima"
        and alert["basis"] == "mean"
        and alert["cleared_at"] is None
    )
    assert message["summary"] == (
        "i-0abc0000000000001 (web-1) will cross 80 % CPU at 2027-01-15T08:35:00Z, in about 35 min "
        "(peak 88.2 %, arima, point forecast)"
    )
    cleared = event_message("cleared", {**ALERT, "cleared_at": T + 3600}, event_id=40, at=T + 3600, margin=5)
    assert cleared["alert"]["state"] == "cleared" and cleared["alert"]["minutes_to_limit"] == 0.0
    assert cleared["summary"] == "i-0abc0000000000001 (web-1): CPU warning cleared (forecast peak below 75 %)"
    over = event_message("opened", {**ALERT, "basis": "now", "crossing_ts": T, "peak": 91.0}, event_id=32, at=T)
    assert over["summary"] == "i-0abc0000000000001 (web-1) is over 80 % CPU now (at 2027-01-15T08:00:00Z, 91.0 %)"


def test_slack_and_pagerduty_bodies() -> None:
    opened = event_message("opened", ALERT, 31, T)
    slack = slack_body(opened)
    assert slack["text"].startswith(":warning: Headroom: i-0abc0000000000001 (web-1) will cross 80 %")
    assert slack["blocks"][0]["text"] == {"type": "mrkdwn", "text": slack["text"]}
    trigger = pagerduty_body(opened)
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == "headroom-alert-7" and "routing_key" not in trigger
    assert trigger["payload"]["source"] == "i-0abc0000000000001" and trigger["payload"]["severity"] == "warning"
    assert trigger["payload"]["summary"] == opened["summary"] and trigger["payload"]["custom_details"]["alert_id"] == 7
    resolve = pagerduty_body(event_message("cleared", ALERT, 40, T + 3600))
    assert resolve == {"event_action": "resolve", "dedup_key": "headroom-alert-7"}  # the same alert on PagerDuty's side
    assert json.loads(body_for("pagerduty", opened)) == trigger and json.loads(body_for("webhook", opened)) == opened


def test_destinations_come_from_settings_and_never_show_their_secrets(clean_env: Path) -> None:
    settings = load_settings(
        webhook_url="https://hooks.example.com/in?token=abc123",
        webhook_secret="s3cret",
        slack_webhook_url="https://hooks.slack.com/services/T0/B0/xyzsecret",
        pagerduty_routing_key="R0UTING",
    )
    found = destinations(settings)
    assert [d.name for d in found] == ["webhook", "slack", "pagerduty"]
    assert [d.shown for d in found] == [
        "webhook (https://hooks.example.com)",
        "slack (https://hooks.slack.com)",
        "pagerduty (https://events.pagerduty.com)",
    ]
    assert found[0].key == "s3cret" and found[2].key == "R0UTING"
    assert "abc123" not in repr(settings) and "xyzsecret" not in repr(settings) and "R0UTING" not in repr(settings)
    assert destinations(load_settings()) == []


def test_a_signed_post_arrives_with_a_signature_the_receiver_can_verify(webhook_sink: WebhookSink) -> None:
    target = Destination("webhook", webhook_sink.url, "s3cret")
    body = body_for("webhook", event_message("opened", ALERT, 31, T))
    result = post(target, body, "headroom-7-31", "opened", timeout=5)
    assert result.ok and result.error is None
    [got] = webhook_sink.received
    expected = "sha256=" + hmac.new(b"s3cret", got.body, hashlib.sha256).hexdigest()
    assert got.headers[SIGNATURE_HEADER] == expected and got.body == body.encode()
    assert got.headers["X-Headroom-Event"] == "opened" and got.headers["X-Headroom-Delivery"] == "headroom-7-31"
    assert got.headers["Content-Type"] == "application/json"
    unsigned = post(Destination("webhook", webhook_sink.url), body, "headroom-7-31", "opened", timeout=5)
    assert unsigned.ok and SIGNATURE_HEADER not in webhook_sink.received[-1].headers


def test_pagerduty_gets_its_routing_key_on_the_wire_only(webhook_sink: WebhookSink) -> None:
    target = Destination("pagerduty", webhook_sink.url, "R0UTING")
    body = body_for("pagerduty", event_message("opened", ALERT, 31, T))
    assert "R0UTING" not in body  # what the outbox stores
    assert post(target, body, "headroom-7-31", "opened", timeout=5).ok
    sent = webhook_sink.received[0].json()
    assert sent["routing_key"] == "R0UTING" and sent["event_action"] == "trigger" and sent["dedup_key"] == "headroom-alert-7"


def test_answers_decide_between_delivered_rejected_and_retry(webhook_sink: WebhookSink) -> None:
    target = Destination("slack", webhook_sink.url)
    webhook_sink.statuses = [500, 400, 429, 302]
    assert post(target, "{}", "d", "opened", 5).error == "HTTP 500"
    bad = post(target, "{}", "d", "opened", 5)
    assert bad.rejected and not bad.ok
    assert not post(target, "{}", "d", "opened", 5).rejected
    redirected = post(target, "{}", "d", "opened", 5)  # a redirect is not followed: not delivered
    assert not redirected.ok and redirected.error == "HTTP 302"
    assert len(webhook_sink.received) == 4


def test_a_closed_port_and_a_silent_server_are_errors_within_the_timeout(webhook_sink: WebhookSink) -> None:
    closed = post(Destination("webhook", f"http://127.0.0.1:{free_port()}/x?token=abc"), "{}", "d", "opened", 2)
    assert not closed.ok and "Connection refused" in (closed.error or "") and "token=abc" not in (closed.error or "")
    webhook_sink.hang = 3
    started = time.monotonic()
    silent = post(Destination("webhook", webhook_sink.url), "{}", "d", "opened", 0.5)
    assert not silent.ok and time.monotonic() - started < 2 and "timed out" in (silent.error or "")


def test_a_bad_destination_setting_is_refused_without_echoing_it(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADROOM_SLACK_WEBHOOK_URL", "hooks.slack.com/services/T0/B0/t0psecret")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value) == "invalid setting HEADROOM_SLACK_WEBHOOK_URL: expected an http:// or https:// URL"
    monkeypatch.delenv("HEADROOM_SLACK_WEBHOOK_URL")
    monkeypatch.setenv("HEADROOM_PAGERDUTY_URL", "ftp://events.example.com")
    with pytest.raises(SettingsError) as shown:  # not a secret: shown as given
        load_settings()
    assert (
        str(shown.value)
        == "invalid setting HEADROOM_PAGERDUTY_URL: expected an http:// or https:// URL (got 'ftp://events.example.com')"
    )
