"""Email: an alert mails at once (with a per-instance cooldown), a digest at an interval, a test message.

The SMTP connection is yagmail's (SSL, STARTTLS or plain; no login without a user, for a
local relay); the message itself is built with the standard library so that the plain-text
alternative is real text and the chart PNG sits inline in the HTML part (``cid:``). The
password comes from ``HEADROOM_SMTP_PASSWORD`` or the system keyring
(``keyring.get_password("headroom", user)``) and is never logged. Mailing is off, with one log
line, when no host or no recipient is set. A failed send is logged, stored on the alert
(``email_error`` and an ``email_failed`` event) and retried at the next cycle; nothing here
raises into the worker.
"""

from __future__ import annotations

import email.policy
import html
import logging
import smtplib
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from forecasting.alerts import iso_utc
from forecasting.clock import HOUR, MINUTE
from forecasting.crossing import (
    BASIS_MEANING,
    RISK_LEVELS,
    RISK_WORDS,
    Outlook,
    minutes_to_limit,
    outlook,
    risk_level,
    shown_crossing,
)
from forecasting.mail_charts import forecast_chart
from forecasting.scoring import fleet_realised
from forecasting.settings import Settings
from forecasting.store import AlertRecord, Store

log = logging.getLogger("headroom.notify")

SMTP_TIMEOUT = 10.0
"""Seconds to wait for the SMTP server (connect and each reply), so a dead server never stalls the worker."""
CHART_HOURS = 6
DIGEST_CHARTS = 6
"""At most this many instances at risk get a chart in the digest."""
DIGEST_META = "digest_last_sent"
DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
MAIL_POLICY = email.policy.SMTP.clone(max_line_length=998)
"""CRLF lines; headers folded only past RFC 5322's hard limit (Python's folding at 78 would break "[Headroom] …" subjects)."""
_said_off: set[str] = set()


class MailError(RuntimeError):
    """Mail cannot be sent with these settings (e.g. a user without a password)."""


def mail_off_reason(settings: Settings) -> str | None:
    """Why mailing is off (no host, no recipient), or None when it is on."""
    if not settings.smtp_host:
        return "mailing is off: HEADROOM_SMTP_HOST is not set"
    if not settings.mail_to:
        return "mailing is off: HEADROOM_MAIL_TO is not set"
    return None


def _mail_is_off(settings: Settings) -> str | None:
    """The reason mailing is off, logged once per process."""
    reason = mail_off_reason(settings)
    if reason is not None and reason not in _said_off:
        _said_off.add(reason)
        log.info("%s", reason)
    return reason


def smtp_password(settings: Settings) -> str | None:
    """The SMTP password: the setting, else the system keyring entry ("headroom", user); None if neither."""
    if settings.smtp_password is not None:
        return settings.smtp_password.get_secret_value()
    if not settings.smtp_user:
        return None
    try:
        import keyring

        return keyring.get_password("headroom", settings.smtp_user)
    except Exception as error:  # no keyring backend on a server: say so, never crash
        log.info("no system keyring available (%s)", type(error).__name__)
        return None


def one_line(error: BaseException) -> str:
    """An exception as one short line (for logs and the alerts table)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__


@contextmanager
def smtp_connection(settings: Settings) -> Iterator[smtplib.SMTP]:
    """A connected (and, with a user, logged-in) SMTP session through yagmail; closed afterwards."""
    import yagmail

    user = settings.smtp_user or None
    password = smtp_password(settings) if user else None
    if user and password is None:
        raise MailError(f"no SMTP password for {user}: set HEADROOM_SMTP_PASSWORD or run `keyring set headroom {user}`")
    client = yagmail.SMTP(
        user=user or settings.mail_from,
        password=password,
        host=settings.smtp_host,
        port=settings.smtp_port or DEFAULT_PORTS[settings.smtp_tls],
        smtp_ssl=settings.smtp_tls == "ssl",
        smtp_starttls=settings.smtp_tls == "starttls",
        smtp_skip_login=user is None,
        soft_email_validation=False,
        timeout=SMTP_TIMEOUT,
    )
    client.login()
    try:
        yield client.smtp
    finally:
        client.close()


def deliver(connection: smtplib.SMTP, settings: Settings, message: EmailMessage) -> None:
    """Send one message to every recipient; a recipient the server refuses is logged."""
    refused = connection.send_message(message, from_addr=settings.mail_from, to_addrs=list(settings.mail_to))
    for address, (code, reply) in (refused or {}).items():
        log.warning("the SMTP server refused %s: %s %s", address, code, reply.decode(errors="replace")[:200])


def new_message(
    settings: Settings, subject: str, text: str, html: str, images: dict[str, bytes], at: float | None = None
) -> EmailMessage:
    """A multipart/alternative message (plain text, then HTML with the PNG images inline by Content-ID), dated ``at`` (default: now)."""
    message = EmailMessage(policy=MAIL_POLICY)
    message["Subject"] = subject
    message["From"] = settings.mail_from
    message["To"] = ", ".join(settings.mail_to)
    message["Date"] = formatdate(at, usegmt=True)
    message["Message-ID"] = make_msgid(domain="headroom")
    message.set_content(text)
    cids = {name: make_msgid(domain="headroom") for name in images}
    for name, cid in cids.items():
        html = html.replace(f"cid:{name}", f"cid:{cid[1:-1]}")
    message.add_alternative(html, subtype="html")
    html_part: EmailMessage = message.get_payload()[1]  # type: ignore[index,assignment]  # the html alternative just added
    for name, png in images.items():
        html_part.add_related(png, maintype="image", subtype="png", cid=cids[name], filename=f"{name}.png", disposition="inline")
    return message


# ---- composing (pure functions of stored rows) ---------------------------
def _who(instance_id: str, name: str | None) -> str:
    return f"{instance_id} ({name})" if name else instance_id


def _minutes_until(ts: int, now: int) -> int:
    """Time to limit (``forecasting.crossing``) in whole minutes."""
    return round(minutes_to_limit(ts, now))


def headline(alert: AlertRecord, name: str | None, now: int) -> str:
    """What an alert says in one line, e.g. ``i-0abc (web-1) will cross 80 % CPU in about 35 min``."""
    who = _who(alert.instance_id, name)
    if alert.basis == "now":  # opened by the newest sample, not by the forecast
        return f"{who} is over {alert.threshold:g} % CPU now"
    lead = _minutes_until(alert.crossing_ts, now)
    return f"{who} will cross {alert.threshold:g} % CPU " + (f"in about {lead} min" if lead else "now")


def subject_line(alert: AlertRecord, name: str | None, now: int) -> str:
    """The alert mail's subject: ``[Headroom]`` and the alert's headline."""
    return f"[Headroom] {headline(alert, name, now)}"


def alert_facts(alert: AlertRecord, name: str | None, latest: tuple[int, float] | None, now: int) -> list[tuple[str, str]]:
    """The label/value lines both the text and the HTML alert mail show."""
    basis = BASIS_MEANING.get(alert.basis, alert.basis)
    facts = [
        ("Instance", _who(alert.instance_id, name)),
        ("Threshold", f"{alert.threshold:g} % CPU"),
        ("Predicted crossing", f"{iso_utc(alert.crossing_ts)} (UTC)"),
        (
            "Lead time",
            f"{_minutes_until(alert.crossing_ts, now)} min from now ({alert.lead_minutes:.0f} min when the alert opened)",
        ),
        ("Predicted peak", f"{alert.peak:.1f} % CPU"),
        ("Model", str(alert.model)),
        ("Confidence", basis),
        ("Alert opened", iso_utc(alert.opened_at)),
    ]
    if latest is not None:
        facts.append(("CPU now", f"{latest[1]:.1f} % at {iso_utc(latest[0])}"))
    return facts


def alert_text(alert: AlertRecord, name: str | None, latest: tuple[int, float] | None, now: int) -> str:
    """The plain-text alternative of an alert mail."""
    lines = [
        f"{_who(alert.instance_id, name)} is forecast to cross {alert.threshold:g} % CPU "
        f"at {iso_utc(alert.crossing_ts)}, in about {_minutes_until(alert.crossing_ts, now)} minutes.",
        "",
    ]
    lines += [f"{label + ':':20s}{value}" for label, value in alert_facts(alert, name, latest, now)]
    lines += [
        "",
        f"The chart ({alert.instance_id}: CPU, forecast, interval, threshold, predicted crossing) is attached.",
        "-- Headroom",
    ]
    return "\n".join(lines) + "\n"


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A small bordered HTML table with escaped cells."""
    head = "".join(f"<th style='text-align:left;padding:3px 8px'>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td style='padding:3px 8px;border-top:1px solid #ddd'>{html.escape(str(c))}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    return f"<table style='border-collapse:collapse;font-family:sans-serif;font-size:13px'><tr>{head}</tr>{body}</table>"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The same table as aligned plain-text columns."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def alert_html(alert: AlertRecord, name: str | None, latest: tuple[int, float] | None, now: int, chart: str) -> str:
    """The HTML body of an alert mail; the chart is referenced as ``cid:<chart>``."""
    who = html.escape(_who(alert.instance_id, name))
    title = html.escape(headline(alert, name, now))
    facts = "".join(
        f"<tr><td style='padding:2px 12px 2px 0;color:#555'>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
        for k, v in alert_facts(alert, name, latest, now)
    )
    return (
        f"<div style='font-family:sans-serif'><h2 style='font-size:17px'>{title}</h2><table>{facts}</table>"
        f"<p><img src='cid:{chart}' alt='CPU, forecast and threshold of {who}' width='800'></p>"
        "<p style='color:#777;font-size:12px'>Headroom early warning</p></div>"
    )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}" if values else "-"


def digest_message(store: Store, settings: Settings, now: int, since: int) -> tuple[str, str, str, dict[str, bytes]]:
    """The digest: fleet state, open alerts, outcomes since the last digest, model scores, charts of instances at risk."""
    latest, runs = store.samples.latest_values(), store.runs.latest()
    forecasts = {f.instance_id: f for f in store.forecasts.latest()}
    open_alerts = {a.instance_id: a for a in reversed(store.alerts.open())}
    fleet, risk, crossings, thresholds = [], [], {}, {}
    for inst in store.samples.instances():
        iid, f, alert = inst.instance_id, forecasts.get(inst.instance_id), open_alerts.get(inst.instance_id)
        last_ts, cpu_now = latest.get(iid, (None, None))
        # the alerts' rule, as on the Fleet page
        seen = outlook(f, inst.threshold, settings.alert_on, now, latest.get(iid)) if f else None
        level = risk_level(cpu_now, inst.threshold, settings.alert_margin, seen, alert is not None)
        thresholds[iid] = inst.threshold
        crossings[iid] = shown_crossing(seen, alert.crossing_ts if alert else None, inst.threshold, last_ts, cpu_now)
        if level not in ("ok", "unknown"):
            risk.append((RISK_LEVELS.index(level), -(seen.peak if seen else 0.0), iid))
        run = runs.get(iid)
        fleet.append(
            [
                iid,
                inst.name or "",
                f"{cpu_now:.1f}" if cpu_now is not None else "-",
                f"{inst.threshold:g}",
                f"{seen.peak:.1f}" if seen else "-",
                (run.champion or "none") if run else "not trained",
                digest_state(level, alert, seen),
            ]
        )
    alerts_rows = [
        [
            a.instance_id,
            iso_utc(a.opened_at),
            iso_utc(a.crossing_ts),
            f"{a.peak:.1f}",
            a.model,
            a.basis,
            "yes" if a.emailed_at else (a.email_error or "not yet"),
        ]
        for a in open_alerts.values()
    ]
    past = [a for a in store.alerts.recent(limit=100_000) if a.opened_at >= since]
    outcomes = {o: sum(a.outcome == o for a in past) for o in ("caught", "late", "false")}
    scores: dict[str, dict[str, list[float]]] = {}
    for score in store.runs.scores():
        bucket = scores.setdefault(score.model, {"mase": [], "mape": [], "coverage": []})
        for key, value in (("mase", score.mase), ("mape", score.mape), ("coverage", score.coverage)):
            if value is not None:
                bucket[key].append(float(value))
    champions = [r.champion for r in runs.values() if r.champion]
    score_rows = [
        [m, champions.count(m), len(v["mase"]), _median(v["mase"]), _median(v["mape"]), _median(v["coverage"])]
        for m, v in sorted(scores.items())
    ]
    realised_rows = [
        [m, v["points"], _fmt(v["mape"], ".2f"), _fmt(v["mase"], ".3f"), _fmt(v["coverage"], ".2f")]
        for m, v in fleet_realised(store, now, "day").items()
    ]
    images: dict[str, bytes] = {}
    for _, _, iid in sorted(risk)[:DIGEST_CHARTS]:
        cpu: tuple[Any, Any] = store.samples.series(iid, start=now - CHART_HOURS * HOUR, end=now, metrics=["cpu"]).get(
            "cpu", ([], [])
        )
        images[f"chart-{len(images)}"] = forecast_chart(cpu, forecasts.get(iid), thresholds[iid], crossings[iid], title=iid)
    sections: list[tuple[str, list[str], Sequence[Sequence[Any]]]] = [
        ("Fleet", ["instance", "name", "CPU now %", "threshold %", "forecast peak %", "champion", "state"], fleet),
        ("Open alerts", ["instance", "opened", "predicted crossing", "peak %", "model", "basis", "emailed"], alerts_rows),
        (
            "Model scores (latest run of each instance)",
            ["model", "champion of", "instances", "median MASE", "median MAPE %", "median coverage"],
            score_rows,
        ),
        (
            "Realised accuracy (forecasts made in the last day, all instances; auto = what was deployed)",
            ["model", "points", "MAPE %", "MASE", "coverage"],
            realised_rows,
        ),
    ]
    period = f"since {iso_utc(since)}: {len(past)} alerts opened, {outcomes['caught']} caught in time, {outcomes['late']} late, {outcomes['false']} false"
    subject = f"[Headroom] digest: {len(fleet)} instances, {len(open_alerts)} open alerts"
    text = f"Headroom digest, {iso_utc(now)}\n\nAlerts {period}.\n"
    body = f"<div style='font-family:sans-serif'><h2 style='font-size:17px'>Headroom digest, {iso_utc(now)}</h2><p>Alerts {html.escape(period)}.</p>"
    for title, headers, rows in sections:
        text += f"\n{title}\n{text_table(headers, rows) if rows else '(none)'}\n"
        body += f"<h3 style='font-size:15px'>{html.escape(title)}</h3>" + (html_table(headers, rows) if rows else "<p>(none)</p>")
    if images:
        text += f"\nCharts of the {len(images)} instances at risk are in the HTML version.\n"
        body += "<h3 style='font-size:15px'>Instances at risk</h3>" + "".join(
            f"<p><img src='cid:{n}' width='800'></p>" for n in images
        )
    return subject, text, body + "</div>", images


def digest_state(level: str, alert: AlertRecord | None, seen: Outlook | None) -> str:
    """An instance's state in the digest: its risk level (``forecasting.crossing``) and the crossing it expects."""
    if alert is not None:
        return ("over limit, " if level == "over" else "") + f"alert: crossing {iso_utc(alert.crossing_ts)}"
    if level == "risk" and seen is not None and seen.crossing is not None:
        return f"will cross at {iso_utc(seen.crossing.ts)}"
    return RISK_WORDS[level]


# ---- sending -----------------------------------------------------------------
def alert_chart(store: Store, alert: AlertRecord, now: int) -> bytes:
    """The chart of one alert: the last hours of CPU, the champion forecast, the threshold, the crossing."""
    iid = alert.instance_id
    cpu = store.samples.series(iid, start=now - CHART_HOURS * HOUR, end=now, metrics=["cpu"]).get("cpu")
    forecasts = store.forecasts.latest(iid)
    history = cpu if cpu is not None else ([], [])
    return forecast_chart(
        history,
        forecasts[0] if forecasts else None,
        alert.threshold,
        alert.crossing_ts,
        title=f"{iid}: CPU, forecast and threshold",
    )


def alert_message(store: Store, settings: Settings, alert: AlertRecord, now: int) -> EmailMessage:
    """The mail for one alert: subject, plain text, HTML and the chart inline."""
    instance = store.samples.instance(alert.instance_id)
    name = instance.name if instance else None
    latest = store.samples.latest_values().get(alert.instance_id)
    chart = alert_chart(store, alert, now)
    return new_message(
        settings,
        subject_line(alert, name, now),
        alert_text(alert, name, latest, now),
        alert_html(alert, name, latest, now, "chart"),
        {"chart": chart},
        at=now,
    )


def send_alert_mail(store: Store, settings: Settings, now: int) -> str:
    """Mail every open alert not mailed yet, at most one per instance per cooldown; never raises."""
    off = _mail_is_off(settings)
    if off:
        return off
    due = store.alerts.to_email()
    if not due:
        return "no new alert to mail"
    last = store.alerts.last_emailed()
    ready, held = [], 0
    for alert in due:
        since = now - last.get(alert.instance_id, -(10**12))
        if since < settings.alert_cooldown * MINUTE:
            held += 1
            continue
        ready.append(alert)
        last[alert.instance_id] = now  # one mail per instance per cycle
    results: dict[int, str | None] = {}
    if ready:
        try:
            with smtp_connection(settings) as connection:
                for alert in ready:
                    try:
                        deliver(connection, settings, alert_message(store, settings, alert, now))
                        results[alert.alert_id] = None
                    except Exception as error:  # this message failed; the others may still go
                        results[alert.alert_id] = one_line(error)
        except Exception as error:  # refused, down, timed out, bad login: every unsent alert waits for the next cycle
            for alert in ready:
                results.setdefault(alert.alert_id, one_line(error))
    _record(store, ready, results, settings, now)
    sent = sum(error is None for error in results.values())
    text = f"mailed {sent} alert{'s' * (sent != 1)} to {len(settings.mail_to)} recipient{'s' * (len(settings.mail_to) != 1)}"
    failed = [error for error in results.values() if error is not None]
    if failed:
        text += f", {len(failed)} failed ({failed[0]}), retried next cycle"
    if held:
        text += f", {held} held back by the {settings.alert_cooldown:g} min cooldown"
    return text


def _record(store: Store, alerts: list[AlertRecord], results: dict[int, str | None], settings: Settings, now: int) -> None:
    """Store each send's outcome on its alert with an alert event, in one transaction."""
    with store.transaction():
        for alert in alerts:
            error = results.get(alert.alert_id, "not attempted")
            if error is None:
                store.alerts.update(alert.alert_id, {"emailed_at": now, "email_error": None})
                store.alerts.add_event(alert.alert_id, now, "emailed", ", ".join(settings.mail_to))
                log.info("alert %d on %s mailed to %s", alert.alert_id, alert.instance_id, ", ".join(settings.mail_to))
            else:
                store.alerts.update(alert.alert_id, {"email_error": error})
                store.alerts.add_event(alert.alert_id, now, "email_failed", error)
                log.warning("alert %d on %s: mail failed, retried next cycle: %s", alert.alert_id, alert.instance_id, error)


def send_digest_if_due(store: Store, settings: Settings, now: int) -> str:
    """Mail the digest when ``digest_every`` hours have passed since the last one (or none was sent); never raises."""
    off = _mail_is_off(settings)
    if off:
        return off
    last = store.jobs.get_meta(DIGEST_META)
    if last is not None and now - int(last) < settings.digest_every * HOUR:
        return f"digest not due until {iso_utc(int(last) + settings.digest_every * HOUR)}"
    since = int(last) if last is not None else now - int(settings.digest_every * HOUR)
    try:
        subject, text, html, images = digest_message(store, settings, now, since)
        with smtp_connection(settings) as connection:
            deliver(connection, settings, new_message(settings, subject, text, html, images, at=now))
    except Exception as error:
        log.warning("digest mail failed, retried next cycle: %s", one_line(error))
        return f"digest failed ({one_line(error)}), retried next cycle"
    store.jobs.set_meta(DIGEST_META, str(now))
    return f"digest mailed to {len(settings.mail_to)} recipient{'s' * (len(settings.mail_to) != 1)} ({len(images)} charts)"


def send_test_mail(settings: Settings) -> tuple[bool, str]:
    """Send a short test message with the configured settings: (sent?, one line saying what happened)."""
    off = mail_off_reason(settings)
    if off:
        return False, off
    port = settings.smtp_port or DEFAULT_PORTS[settings.smtp_tls]
    where = f"{settings.smtp_host}:{port} ({settings.smtp_tls}, {'login as ' + settings.smtp_user if settings.smtp_user else 'no login'})"
    text = f"This is a test message from Headroom.\n\nIt went through {where} to {', '.join(settings.mail_to)}.\n"
    html = f"<p>This is a test message from <b>Headroom</b>.</p><p>It went through {where}.</p>"
    try:
        with smtp_connection(settings) as connection:
            deliver(connection, settings, new_message(settings, "[Headroom] test message", text, html, {}))
    except Exception as error:
        return False, f"test message not sent via {where}: {one_line(error)}"
    return True, f"test message sent to {', '.join(settings.mail_to)} via {where}"
