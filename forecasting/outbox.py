"""The webhook outbox: alert events become stored messages, one per destination, delivered at least once and never again.

:func:`enqueue` reads the ``alert_events`` written since its cursor (opened, reopened, updated,
cleared), builds each configured destination's body, and writes the outbox rows and the new
cursor in one transaction: a crash leaves either both or neither, so no event is skipped and
``UNIQUE (destination, event_id)`` keeps any from being queued twice. An ``updated`` event is
queued only when it is material against the last message queued for that alert (the predicted
crossing moved by ``HEADROOM_WEBHOOK_MIN_CHANGE`` minutes, or the basis changed).

:func:`deliver` sends each destination's pending rows in order, in a thread of its own, with
``HEADROOM_WEBHOOK_ATTEMPTS`` tries and exponential backoff per message, a timeout per request
and a deadline per destination. A delivered row is marked so at once (so it is never sent again);
a destination that stays down keeps its rows pending for the next cycle and costs one log line.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from forecasting.settings import Settings
from forecasting.store import Store
from forecasting.webhooks import KINDS, Destination, SendResult, body_for, destinations, event_message, post

log = logging.getLogger("headroom.webhooks")

CURSOR_KEY = "outbox_event_cursor"
BACKOFF_SECONDS = 0.5
"""First pause between tries of one message; doubled after each (0.5 s, 1 s, 2 s, ...)."""
RETRY_AFTER_CAP = 5.0
"""Most seconds a ``Retry-After`` answer may hold a destination within one cycle."""

_busy: dict[str, threading.Lock] = {}
_busy_guard = threading.Lock()


# ---- enqueue ------------------------------------------------------------------
def is_material(previous: Mapping[str, Any] | None, current: Mapping[str, Any], min_change_minutes: float) -> bool:
    """Whether an update is worth a message: nothing was sent yet, or the basis or predicted crossing really moved."""
    if previous is None or previous["alert"]["state"] != "open":
        return True
    before, now = previous["alert"], current["alert"]
    if before["basis"] != now["basis"]:
        return True
    moved = abs(_ts(now["predicted_crossing_at"]) - _ts(before["predicted_crossing_at"]))
    return moved >= min_change_minutes * 60


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def enqueue(store: Store, settings: Settings, now: int) -> int:
    """Queue a message per configured destination for each alert event since the cursor; returns rows queued.

    With no cursor yet (a new store, or the first run of this version), events older than one horizon are
    left out: they are history, not news. With no destination configured the cursor still moves, so turning
    one on later does not replay the past.
    """
    targets = destinations(settings)
    queued = 0
    with store.transaction() as conn:
        stored = store.jobs.get_meta(CURSOR_KEY)
        if stored is not None:
            cursor = int(stored)
        else:
            recent = now - settings.horizon * settings.period
            cursor = int(
                conn.execute("SELECT COALESCE(MAX(event_id), 0) FROM alert_events WHERE ts < ?", (recent,)).fetchone()[0]
            )
        events = conn.execute(
            f"SELECT event_id, alert_id, ts, kind FROM alert_events WHERE event_id > ? AND kind IN ({','.join('?' * len(KINDS))}) "
            "ORDER BY event_id",
            (cursor, *KINDS),
        ).fetchall()
        newest = conn.execute("SELECT COALESCE(MAX(event_id), ?) FROM alert_events", (cursor,)).fetchone()[0]
        ids = sorted({e["alert_id"] for e in events})
        alerts = (
            {
                r["alert_id"]: dict(r)
                for r in conn.execute(
                    f"SELECT a.*, i.name FROM alerts a LEFT JOIN instances i ON i.instance_id = a.instance_id "
                    f"WHERE a.alert_id IN ({','.join('?' * len(ids))})",
                    ids,
                )
            }
            if ids
            else {}
        )
        for target in targets:
            for event in events:
                alert = alerts.get(event["alert_id"])
                if alert is None:
                    continue
                message = event_message(event["kind"], alert, event["event_id"], int(event["ts"]), settings.alert_margin)
                if event["kind"] == "updated":
                    last = conn.execute(
                        "SELECT message FROM outbox WHERE destination = ? AND alert_id = ? ORDER BY outbox_id DESC LIMIT 1",
                        (target.name, event["alert_id"]),
                    ).fetchone()
                    if not is_material(json.loads(last[0]) if last else None, message, settings.webhook_min_change):
                        continue
                done = conn.execute(
                    "INSERT OR IGNORE INTO outbox (destination, alert_id, event_id, kind, message, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        target.name,
                        event["alert_id"],
                        event["event_id"],
                        event["kind"],
                        json.dumps(message, sort_keys=True),
                        body_for(target.name, message),
                        now,
                    ),
                )
                queued += done.rowcount
        store.jobs.set_meta(CURSOR_KEY, str(max(int(newest), cursor)))
    return queued


# ---- deliver --------------------------------------------------------------------
@dataclass
class DestinationReport:
    """What one destination's delivery did in a cycle."""

    shown: str
    sent: int = 0
    rejected: int = 0
    waiting: int = 0
    error: str | None = None
    busy: bool = False

    def line(self) -> str:
        if self.busy:
            return f"{self.shown}: still sending from the last cycle"
        text = f"{self.shown}: {self.sent} sent"
        if self.rejected:
            text += f", {self.rejected} rejected"
        if self.waiting:
            text += f", {self.waiting} waiting ({self.error or 'deadline reached'}), retried next cycle"
        return text


@dataclass
class DeliveryReport:
    """What one delivery cycle did, per destination."""

    destinations: list[DestinationReport] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        if not self.destinations:
            return "webhooks off"
        return "webhooks: " + "; ".join(d.line() for d in self.destinations)


Sender = Callable[[Destination, str, str, str, float], SendResult]


def send_with_retries(
    target: Destination, row: Mapping[str, Any] | sqlite3.Row, settings: Settings, deadline: float, sender: Sender = post
) -> tuple[SendResult, int]:
    """Up to ``webhook_attempts`` tries of one message, with exponential backoff, within the deadline; (result, tries)."""
    result = SendResult(ok=False, error="deadline reached before sending")
    tries = 0
    for attempt in range(settings.webhook_attempts):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        delivery_id = json.loads(row["message"])["id"]
        result = sender(target, row["body"], delivery_id, row["kind"], min(settings.webhook_timeout, left))
        tries += 1
        if result.ok or result.rejected or attempt == settings.webhook_attempts - 1:
            break
        pause = min(result.retry_after or BACKOFF_SECONDS * 2**attempt, RETRY_AFTER_CAP)
        if time.monotonic() + pause >= deadline:
            break
        time.sleep(pause)
    return result, tries


def _record(store: Store, outbox_id: int, result: SendResult, tries: int, now: int) -> None:
    """Write one message's outcome at once: a delivered row is never picked up again."""
    state = "delivered" if result.ok else "rejected" if result.rejected else "pending"
    with store.transaction() as conn:
        conn.execute(
            "UPDATE outbox SET state = ?, attempts = attempts + ?, last_attempt_at = ?, last_error = ?, "
            "delivered_at = CASE WHEN ? THEN ? ELSE delivered_at END WHERE outbox_id = ?",
            (state, tries, now, result.error, int(result.ok), now, outbox_id),
        )


def deliver_destination(
    store: Store,
    target: Destination,
    settings: Settings,
    now: int,
    deadline: float,
    sender: Sender = post,
    report: DestinationReport | None = None,
) -> DestinationReport:
    """Send one destination's pending messages in order until done, down, or out of time (filling ``report``)."""
    report = report if report is not None else DestinationReport(target.shown)
    rows = store.db.query(
        "SELECT outbox_id, kind, message, body FROM outbox WHERE destination = ? AND state = 'pending' ORDER BY outbox_id",
        (target.name,),
    )
    for index, row in enumerate(rows):
        if time.monotonic() >= deadline:
            report.waiting = len(rows) - index
            break
        result, tries = send_with_retries(target, row, settings, deadline, sender)
        if tries:
            _record(store, int(row["outbox_id"]), result, tries, now)
        if result.ok:
            report.sent += 1
        elif result.rejected:
            report.rejected += 1
            log.warning(
                "%s refused message %d (%s); kept in the outbox as rejected", target.shown, row["outbox_id"], result.error
            )
        else:  # down or too slow: keep the order, try again next cycle
            report.waiting, report.error = len(rows) - index, result.error
            break
    return report


def deliver(store: Store, settings: Settings, now: int, sender: Sender = post) -> DeliveryReport:
    """Deliver every destination's pending messages side by side; returns within the deadline (plus a little)."""
    started = time.monotonic()
    deadline = started + settings.webhook_deadline
    report = DeliveryReport()
    threads: list[tuple[threading.Thread, DestinationReport]] = []
    for target in destinations(settings):
        with _busy_guard:
            lock = _busy.setdefault(target.name, threading.Lock())
        if not lock.acquire(blocking=False):  # last cycle's sender for it has not returned: never send a row twice
            report.destinations.append(DestinationReport(target.shown, busy=True))
            continue
        slot = DestinationReport(target.shown)
        report.destinations.append(slot)

        def run(target: Destination = target, slot: DestinationReport = slot, lock: threading.Lock = lock) -> None:
            try:
                deliver_destination(store, target, settings, now, deadline, sender, slot)
            except Exception as error:  # the store, most likely; the rows stay pending
                slot.error = f"{type(error).__name__}: {error}".splitlines()[0][:200]
                log.exception("%s delivery failed", target.shown)
            finally:
                lock.release()

        thread = threading.Thread(target=run, name=f"headroom-webhook-{target.name}", daemon=True)
        thread.start()
        threads.append((thread, slot))
    for thread, slot in threads:
        thread.join(max(0.0, deadline + 1.0 - time.monotonic()))
        if thread.is_alive():
            slot.error = slot.error or "still sending at the deadline"
    for slot in report.destinations:
        if slot.waiting or slot.busy:
            log.warning("webhook %s", slot.line())
        elif slot.sent:
            log.info("webhook %s", slot.line())
    report.seconds = time.monotonic() - started
    return report


def pending(store: Store) -> dict[str, int]:
    """Messages waiting per destination (for ``/metrics``)."""
    return {
        r[0]: int(r[1])
        for r in store.db.query("SELECT destination, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY destination")
    }
