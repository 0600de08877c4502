"""Webhook destinations: what each one receives (generic JSON, Slack, PagerDuty Events v2) and one bounded POST.

The payload builders are pure functions of an alert row, so the outbox can store a body once and send
exactly that body on every retry. Sending is one HTTP POST with the standard library, an explicit
timeout and no redirects; it never raises, it answers with a :class:`SendResult`. URLs, the signing
secret and the PagerDuty routing key are secrets: logs and results show only a URL's scheme and host.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from forecasting import __version__
from forecasting.alerts import iso_utc
from forecasting.crossing import BASIS_TEXT, minutes_to_limit
from forecasting.settings import Settings

KINDS = ("opened", "reopened", "updated", "cleared")
"""The alert events that are sent: a warning opens (or reopens), changes materially, clears."""
SIGNATURE_HEADER = "X-Headroom-Signature-256"
REJECTED_STATUSES = frozenset({400, 413, 422})
"""Answers that say the message itself is refused: kept in the outbox as rejected, not retried."""


@dataclass(frozen=True)
class Destination:
    """One configured place to send to; ``url`` and ``key`` are secret and never shown whole."""

    name: str  # 'webhook', 'slack' or 'pagerduty'
    url: str
    key: str | None = None  # the HMAC secret (webhook) or the routing key (pagerduty)

    @property
    def shown(self) -> str:
        """What logs may say about the destination: its kind, scheme and host."""
        parts = urlsplit(self.url)
        return f"{self.name} ({parts.scheme}://{parts.hostname or '?'})"


def destinations(settings: Settings) -> list[Destination]:
    """The webhook destinations that settings turn on, in a fixed order."""
    found = []
    if settings.webhook_url is not None:
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret is not None else None
        found.append(Destination("webhook", settings.webhook_url.get_secret_value(), secret))
    if settings.slack_webhook_url is not None:
        found.append(Destination("slack", settings.slack_webhook_url.get_secret_value()))
    if settings.pagerduty_routing_key is not None:
        found.append(Destination("pagerduty", settings.pagerduty_url, settings.pagerduty_routing_key.get_secret_value()))
    return found


# ---- payloads (pure) -----------------------------------------------------------
def _who(alert: Mapping[str, Any]) -> str:
    name = alert.get("name")
    return f"{alert['instance_id']} ({name})" if name else str(alert["instance_id"])


def _minutes_left(alert: Mapping[str, Any], at: int) -> float:
    """Time to limit at ``at`` (``forecasting.crossing``), to a tenth of a minute."""
    return round(minutes_to_limit(alert["crossing_ts"], at), 1)


def summary_line(kind: str, alert: Mapping[str, Any], at: int, margin: float | None = None) -> str:
    """One human line for the event, e.g. ``i-0abc (web-1) will cross 80 % CPU at 2026-11-28T20:45:00Z, in about 35 min``."""
    who, threshold = _who(alert), f"{alert['threshold']:g} %"
    if kind == "cleared":
        below = f" (forecast peak below {alert['threshold'] - margin:g} %)" if margin is not None else ""
        return f"{who}: CPU warning cleared{below}"
    sure = BASIS_TEXT.get(alert["basis"], alert["basis"])
    prefix = {"opened": "", "reopened": "again: ", "updated": "update: "}.get(kind, "")
    if alert["basis"] == "now":  # opened by the newest sample, not by the forecast
        return f"{prefix}{who} is over {threshold} CPU now (at {iso_utc(alert['crossing_ts'])}, {alert['peak']:.1f} %)"
    return (
        f"{prefix}{who} will cross {threshold} CPU at {iso_utc(alert['crossing_ts'])}, in about "
        f"{_minutes_left(alert, at):.0f} min (peak {alert['peak']:.1f} %, {alert['model']}, {sure})"
    )


def event_message(kind: str, alert: Mapping[str, Any], event_id: int, at: int, margin: float | None = None) -> dict[str, Any]:
    """The generic webhook's JSON body for one alert event (documented in docs/alerts.md, "Webhooks, Slack and PagerDuty")."""
    return {
        "id": f"headroom-{alert['alert_id']}-{event_id}",  # stable across retries: receivers may deduplicate on it
        "event": kind,
        "occurred_at": iso_utc(at),
        "summary": summary_line(kind, alert, at, margin),
        "alert": {
            "alert_id": int(alert["alert_id"]),
            "instance_id": alert["instance_id"],
            "name": alert.get("name"),
            "state": "cleared" if kind == "cleared" else "open",
            "threshold": float(alert["threshold"]),
            "predicted_crossing_at": iso_utc(alert["crossing_ts"]),
            "minutes_to_limit": _minutes_left(alert, at),
            "predicted_peak": float(alert["peak"]),
            "model": alert["model"],
            "basis": alert["basis"],
            "opened_at": iso_utc(alert["opened_at"]),
            "cleared_at": iso_utc(alert["cleared_at"]) if alert.get("cleared_at") is not None else None,
        },
        "source": "headroom",
        "version": __version__,
    }


def slack_body(message: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (notifications, fallback) and one mrkdwn section."""
    icon = ":white_check_mark:" if message["event"] == "cleared" else ":warning:"
    if message["event"] == "test":
        icon = ":wave:"
    text = f"{icon} Headroom: {message['summary']}"
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def pagerduty_body(message: Mapping[str, Any]) -> dict[str, Any]:
    """A PagerDuty Events API v2 event without its routing key: trigger on open or change, resolve on clear.

    The alert id is the dedup key, so every message of one alert lands on the same PagerDuty alert.
    """
    alert = message["alert"]
    dedup = f"headroom-alert-{alert['alert_id']}"
    if message["event"] == "cleared":
        return {"event_action": "resolve", "dedup_key": dedup}
    return {
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": {
            "summary": message["summary"][:1024],
            "source": alert["instance_id"],
            "severity": "info" if message["event"] == "test" else "warning",
            "timestamp": message["occurred_at"],
            "component": alert.get("name") or alert["instance_id"],
            "group": "headroom",
            "class": "cpu-forecast",
            "custom_details": alert,
        },
        "client": "Headroom",
    }


def body_for(destination: str, message: Mapping[str, Any]) -> str:
    """The JSON text stored in the outbox for one destination."""
    if destination == "slack":
        body: Mapping[str, Any] = slack_body(message)
    elif destination == "pagerduty":
        body = pagerduty_body(message)
    else:
        body = message
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the raw body>``, as GitHub signs its webhooks."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def wire_request(destination: Destination, body: str, delivery_id: str, kind: str) -> tuple[bytes, dict[str, str]]:
    """The bytes and headers actually sent: PagerDuty's routing key and the webhook signature are added here, never stored."""
    if destination.name == "pagerduty":
        data = json.dumps({**json.loads(body), "routing_key": destination.key}, separators=(",", ":"), sort_keys=True).encode()
    else:
        data = body.encode()
    headers = {"Content-Type": "application/json", "User-Agent": f"headroom/{__version__}"}
    if destination.name == "webhook":
        headers.update({"X-Headroom-Event": kind, "X-Headroom-Delivery": delivery_id})
        if destination.key:
            headers[SIGNATURE_HEADER] = signature(destination.key, data)
    return data, headers


# ---- sending ----------------------------------------------------------------
@dataclass(frozen=True)
class SendResult:
    """What one POST came to: delivered, refused for good (4xx on the message), or worth retrying."""

    ok: bool
    rejected: bool = False
    error: str | None = None
    retry_after: float | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # a webhook that redirects is misconfigured
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(destination: Destination, body: str, delivery_id: str, kind: str, timeout: float) -> SendResult:
    """POST one message with a timeout; never raises. 2xx delivers; 400/413/422 reject; anything else is retried."""
    data, headers = wire_request(destination, body, delivery_id, kind)
    request = urllib.request.Request(destination.url, data=data, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(65536)
            return SendResult(ok=True)
    except urllib.error.HTTPError as error:
        status = error.code
        retry_after = error.headers.get("Retry-After") if error.headers else None
        error.close()
        wait = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
        return SendResult(ok=False, rejected=status in REJECTED_STATUSES, error=f"HTTP {status}", retry_after=wait)
    except Exception as error:  # refused, reset, timed out, DNS: the destination is not there now
        reason = getattr(error, "reason", error)
        text = f"{type(reason).__name__}: {reason}".replace(destination.url, destination.shown)  # never the URL whole
        return SendResult(ok=False, error=text.splitlines()[0][:200])
