"""Acting on warnings after each forecast cycle: webhooks from the outbox, forecasts into CloudWatch; and the test message.

The worker calls :func:`act_on_cycle` once per cycle, after the alerts are evaluated. It only reads
forecasts and alerts (and keeps its own outbox); each part is bounded in time and never raises into
the worker. ``python -m forecasting notify --test`` calls :func:`send_test_messages`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from forecasting.alerts import iso_utc
from forecasting.outbox import deliver, enqueue
from forecasting.publish import CLIENT_CONFIG, publish_cycle
from forecasting.settings import Settings
from forecasting.store import Store
from forecasting.webhooks import Destination, body_for, destinations, post

log = logging.getLogger("headroom.acting")


def act_on_cycle(store: Store, settings: Settings, now: int) -> str:
    """Queue and deliver webhook messages, then start publishing to CloudWatch; one summary for the job's log line."""
    parts = []
    try:
        enqueue(store, settings, now)
        parts.append(deliver(store, settings, now).summary())
    except Exception as error:  # the store, most likely: the events stay behind the cursor for the next cycle
        log.exception("webhooks failed")
        parts.append(f"webhooks failed ({_one_line(error)}), retried next cycle")
    try:
        parts.append(publish_cycle(store, settings, now))
    except Exception as error:
        log.exception("cloudwatch publishing failed")
        parts.append(f"cloudwatch publishing failed ({_one_line(error)})")
    return "; ".join(parts)


# ---- notify --test ----------------------------------------------------------------
TEST_ALERT = {
    "alert_id": 0,
    "instance_id": "i-00000000000000000",
    "name": "headroom-test",
    "threshold": 80.0,
    "peak": 85.0,
    "model": "test",
    "basis": "mean",
    "cleared_at": None,
}


def probe_message(now: int) -> dict:
    """The generic message a test sends: event ``test`` and a made-up alert that says so."""
    from forecasting.webhooks import event_message

    message = event_message("opened", {**TEST_ALERT, "crossing_ts": now + 1800, "opened_at": now}, 0, now)
    message.update(
        id=f"headroom-test-{now}",
        event="test",
        summary="test message from Headroom: this destination is set up (no instance is at risk)",
    )
    return message


def _test_webhook(target: Destination, settings: Settings, now: int) -> tuple[bool, str]:
    message = probe_message(now)
    result = post(target, body_for(target.name, message), message["id"], "test", settings.webhook_timeout)
    if result.ok and target.name == "pagerduty":  # the test trigger is resolved at once
        resolve = post(
            target, body_for(target.name, {**message, "event": "cleared"}), message["id"], "cleared", settings.webhook_timeout
        )
        if not resolve.ok:
            return False, f"{target.shown}: test event triggered but not resolved ({resolve.error}); resolve it by hand"
        return True, f"{target.shown}: test event triggered and resolved (dedup key headroom-alert-0)"
    return (
        (True, f"{target.shown}: test message delivered")
        if result.ok
        else (False, f"{target.shown}: not delivered ({result.error})")
    )


def _test_cloudwatch(settings: Settings, now: int) -> tuple[bool, str]:
    import boto3
    from botocore.config import Config

    from forecasting.publish import _datum

    session = boto3.session.Session()
    region = settings.region or session.region_name or "us-east-1"
    client = session.client("cloudwatch", region_name=region, config=Config(user_agent_extra="headroom", **CLIENT_CONFIG))
    try:
        client.put_metric_data(Namespace=settings.cloudwatch_namespace, MetricData=[_datum("NotifyTest", 1.0, [], now)])
    except Exception as error:
        return False, f"cloudwatch ({region}): PutMetricData refused: {_one_line(error)}"
    return (
        True,
        f"cloudwatch ({region}): test metric NotifyTest put in namespace {settings.cloudwatch_namespace} at {iso_utc(now)}",
    )


def _test_mail(settings: Settings) -> tuple[bool, str]:
    from forecasting.notify import send_test_mail

    ok, line = send_test_mail(settings)
    return ok, f"email: {line}"


def send_test_messages(settings: Settings, now: int | None = None) -> list[tuple[bool, str]]:
    """One test message to each configured destination, side by side, each bounded by its own timeout; one line each."""
    now = int(time.time()) if now is None else now
    checks: list[Callable[[], tuple[bool, str]]] = []
    if settings.smtp_host and settings.mail_to:
        checks.append(lambda: _test_mail(settings))
    for target in destinations(settings):
        checks.append(lambda target=target: _test_webhook(target, settings, now))  # type: ignore[misc]
    if settings.cloudwatch_publish:
        checks.append(lambda: _test_cloudwatch(settings, now))
    results: list[tuple[bool, str] | None] = [None] * len(checks)

    def run(index: int, check: Callable[[], tuple[bool, str]]) -> None:
        try:
            results[index] = check()
        except Exception as error:
            results[index] = (False, f"failed: {_one_line(error)}")

    threads = [threading.Thread(target=run, args=(k, c), daemon=True) for k, c in enumerate(checks)]
    for thread in threads:
        thread.start()
    limit = time.monotonic() + 2 * settings.webhook_timeout + 60  # SMTP has its own 10 s, AWS calls their retries
    for thread in threads:
        thread.join(max(0.0, limit - time.monotonic()))
    return [r if r is not None else (False, "no answer in time") for r in results]


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]
