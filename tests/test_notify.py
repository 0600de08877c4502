"""Email against a real SMTP server (aiosmtpd on loopback): alert mails, cooldown, failures, login, digest, test mail."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import keyring
import keyring.backend
import matplotlib.image
import numpy as np
import pytest

from forecasting.alerts import evaluate_alerts, iso_utc
from forecasting.notify import (
    DIGEST_META,
    send_alert_mail,
    send_digest_if_due,
    send_test_mail,
)
from forecasting.scoring import score_realised
from forecasting.settings import Settings, load_settings
from forecasting.store import ForecastRecord, Store
from tests.fixtures.services import SmtpSink, free_port
from tests.fixtures.stores import environ_without_settings

ROOT = Path(__file__).resolve().parents[1]
P = 300
T = 1_800_000_000
IID = "i-0feed000000000001"


def mail_settings(tmp_path: Path, sink: SmtpSink | None, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "db": tmp_path / "headroom.db",
        "threshold": 80,
        "smtp_host": "127.0.0.1",
        "smtp_tls": "none",
        "smtp_port": sink.port if sink else free_port(),
        "mail_from": "headroom@example.com",
        "mail_to": ["ops@example.com", "oncall@example.com"],
        "alert_cooldown": 60,
    }
    return load_settings(**{**base, **overrides})


def rising(store: Store, iid: str = IID, now: int = T, name: str = "web-1") -> None:
    """An instance climbing from 40 % to 72 % over two hours, and a champion forecast that crosses 80 % in 25 minutes."""
    store.samples.upsert_instance(iid, name, 80.0, now - 86_400)
    ts = np.arange(now - 24 * P, now, P)
    store.samples.upsert((iid, "cpu", int(t), float(v)) for t, v in zip(ts, np.linspace(40, 72, len(ts)), strict=True))
    mean = list(np.linspace(73.5, 90, 12))
    store.forecasts.record(
        [
            {
                "instance_id": iid,
                "run_id": 1,
                "model": "linear",
                "is_champion": True,
                "made_at": now,
                "origin_ts": int(ts[-1]),
                "timestamps": [int(ts[-1]) + P * (k + 1) for k in range(12)],
                "mean": mean,
                "lower": [m - 5 for m in mean],
                "upper": [m + 5 for m in mean],
            }
        ]
    )


def parts(message: EmailMessage) -> tuple[str, str, list[EmailMessage]]:
    plain = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    return plain, html, [p for p in message.walk() if p.get_content_type() == "image/png"]


@pytest.fixture()
def opened(tmp_path: Path, clean_env: Path, smtp_sink: SmtpSink):
    """A store with one open alert and settings pointing at the SMTP sink."""
    settings = mail_settings(tmp_path, smtp_sink)
    with Store(settings.db) as store:
        rising(store)
        assert evaluate_alerts(store, settings, T).opened == [IID]
        yield settings, store


def test_an_alert_mails_once_with_id_crossing_time_and_the_chart_inline(opened, smtp_sink: SmtpSink) -> None:
    settings, store = opened
    summary = send_alert_mail(store, settings, T + 30)
    assert summary == "mailed 1 alert to 2 recipients"
    (message,) = smtp_sink.messages
    (alert,) = store.alerts.recent()
    assert smtp_sink.envelopes == [("headroom@example.com", ["ops@example.com", "oncall@example.com"])]
    assert (
        message["Subject"]
        == f"[Headroom] {IID} (web-1) will cross 80 % CPU in about {round((alert.crossing_ts - T - 30) / 60)} min"
    )
    plain, html, images = parts(message)
    crossing = iso_utc(alert.crossing_ts)
    for body in (plain, html):
        assert IID in body and crossing in body and "linear" in body and f"{alert.peak:.1f} % CPU" in body
    assert f"Lead time:          {round((alert.crossing_ts - T - 30) / 60)} min from now" in plain and "<" not in plain
    (png,) = images
    assert f"cid:{png['Content-ID'].strip('<>')}" in html and png.get_content_disposition() == "inline"
    pixels = matplotlib.image.imread(io.BytesIO(png.get_content()), format="png")
    assert pixels.shape[:2] == (340, 800) and png.get_content()[:8] == b"\x89PNG\r\n\x1a\n"
    assert alert.emailed_at == T + 30 and alert.email_error is None
    assert [e.kind for e in store.alerts.events(alert.alert_id)] == ["opened", "emailed"]

    assert send_alert_mail(store, settings, T + P) == "no new alert to mail"  # the next cycle sends nothing more
    assert len(smtp_sink.messages) == 1


def test_the_cooldown_holds_a_new_alert_of_the_same_instance_back(opened, smtp_sink: SmtpSink) -> None:
    settings, store = opened
    send_alert_mail(store, settings, T)
    first = store.alerts.recent()[0].alert_id
    store.alerts.update(first, {"state": "cleared", "cleared_at": T + 600, "outcome": "false"})  # a flapping forecast
    rising(store, now=T + 1200)
    evaluate_alerts(store, settings, T + 1200)
    assert len(store.alerts.open()) == 1 and store.alerts.open()[0].alert_id != first
    assert send_alert_mail(store, settings, T + 1200) == "mailed 0 alerts to 2 recipients, 1 held back by the 60 min cooldown"
    assert send_alert_mail(store, settings, T + 3599).endswith("1 held back by the 60 min cooldown")
    assert len(smtp_sink.messages) == 1
    assert send_alert_mail(store, settings, T + 3600) == "mailed 1 alert to 2 recipients"
    other = "i-0feed000000000002"
    rising(store, other, now=T + 3700, name="web-2")  # the cooldown is per instance
    evaluate_alerts(store, settings, T + 3700)
    assert send_alert_mail(store, settings, T + 3700) == "mailed 1 alert to 2 recipients"
    assert [m["Subject"].split()[1] for m in smtp_sink.messages] == [IID, IID, other]


def test_a_refusing_server_leaves_the_alert_stored_with_the_error_and_it_is_retried(
    opened, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    settings, store = opened
    smtp_sink.refuse = True
    with caplog.at_level(logging.WARNING, logger="headroom.notify"):
        summary = send_alert_mail(store, settings, T)
    assert summary.startswith("mailed 0 alerts to 2 recipients, 1 failed (SMTPDataError: ") and summary.endswith(
        "retried next cycle"
    )
    (alert,) = store.alerts.recent()
    assert (
        alert.state == "open"
        and alert.emailed_at is None
        and "550" in alert.email_error
        and "relaying denied" in alert.email_error
    )
    assert store.alerts.events(alert.alert_id)[-1].kind == "email_failed"
    assert any("mail failed, retried next cycle" in r.getMessage() for r in caplog.records)
    smtp_sink.refuse = False
    assert send_alert_mail(store, settings, T + P) == "mailed 1 alert to 2 recipients"
    (alert,) = store.alerts.recent()
    assert alert.emailed_at == T + P and alert.email_error is None and len(smtp_sink.messages) == 1


def test_a_server_that_is_down_fails_fast_and_never_raises(tmp_path: Path, clean_env: Path) -> None:
    settings = mail_settings(tmp_path, None)  # a free port nobody listens on
    with Store(settings.db) as store:
        rising(store)
        evaluate_alerts(store, settings, T)
        summary = send_alert_mail(store, settings, T)
        (alert,) = store.alerts.recent()
    assert "1 failed (ConnectionRefusedError" in summary
    assert alert.email_error.startswith("ConnectionRefusedError") and alert.emailed_at is None and alert.state == "open"
    ok, message = send_test_mail(settings)
    assert not ok and message.startswith(
        f"test message not sent via 127.0.0.1:{settings.smtp_port} (none, no login): ConnectionRefusedError"
    )


def test_no_host_means_mailing_off_said_once(tmp_path: Path, clean_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(db=tmp_path / "headroom.db", mail_to=["ops@example.com"])
    import forecasting.notify as notify

    notify._said_off.clear()
    with Store(settings.db) as store, caplog.at_level(logging.INFO, logger="headroom.notify"):
        rising(store)
        evaluate_alerts(store, settings, T)
        for _ in range(3):
            assert send_alert_mail(store, settings, T) == "mailing is off: HEADROOM_SMTP_HOST is not set"
        assert send_digest_if_due(store, settings, T) == "mailing is off: HEADROOM_SMTP_HOST is not set"
        assert store.alerts.recent()[0].email_error is None and store.jobs.get_meta(DIGEST_META) is None
    assert [r.getMessage() for r in caplog.records if r.name == "headroom.notify"] == [
        "mailing is off: HEADROOM_SMTP_HOST is not set"
    ]
    assert send_test_mail(settings) == (False, "mailing is off: HEADROOM_SMTP_HOST is not set")


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring backend that keeps passwords in memory (the test's system keyring)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


def test_login_with_the_password_setting_or_the_keyring_and_never_log_it(
    tmp_path: Path, clean_env: Path, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    smtp_sink.logins = {"alerts@example.com": "pa55-w0rd"}
    caplog.set_level(logging.DEBUG)
    with_secret = mail_settings(tmp_path, smtp_sink, smtp_user="alerts@example.com", smtp_password="pa55-w0rd")
    assert send_test_mail(with_secret) == (
        True,
        f"test message sent to ops@example.com, oncall@example.com via 127.0.0.1:{smtp_sink.port} "
        "(none, login as alerts@example.com)",
    )
    previous = keyring.get_keyring()
    memory = MemoryKeyring()
    keyring.set_keyring(memory)
    try:
        from_keyring = mail_settings(tmp_path, smtp_sink, smtp_user="alerts@example.com")
        ok, message = send_test_mail(from_keyring)
        assert not ok and message.endswith(
            "MailError: no SMTP password for alerts@example.com: set HEADROOM_SMTP_PASSWORD "
            "or run `keyring set headroom alerts@example.com`"
        )
        memory.set_password("headroom", "alerts@example.com", "pa55-w0rd")
        assert send_test_mail(from_keyring)[0] is True
        memory.set_password("headroom", "alerts@example.com", "wrong")
        ok, message = send_test_mail(from_keyring)
        assert not ok and "SMTPAuthenticationError" in message
    finally:
        keyring.set_keyring(previous)
    assert smtp_sink.authenticated == ["alerts@example.com", "alerts@example.com"] and len(smtp_sink.messages) == 2
    assert smtp_sink.messages[0]["Subject"] == "[Headroom] test message"
    assert "pa55-w0rd" not in caplog.text and "wrong" not in caplog.text


def test_the_digest_goes_out_on_its_interval_with_fleet_alerts_scores_and_charts(opened, smtp_sink: SmtpSink) -> None:
    settings, store = opened
    quiet = "i-0feed000000000003"
    store.samples.upsert_instance(quiet, "cache-1", 80.0, T)
    store.samples.upsert([(quiet, "cpu", T - P, 12.5)])
    run = {
        "instance_id": IID,
        "started_at": T - 3600,
        "finished_at": T - 3500,
        "train_start": T - 86_400,
        "train_end": T - 3600,
        "points": 276,
        "champion": "linear",
        "model_dir": None,
    }
    scores = [
        {"model": "linear", "status": "ok", "mase": 0.8, "mape": 4.0, "coverage": 0.9},
        {"model": "naive", "status": "ok", "mase": 1.0, "mape": 5.5, "coverage": 0.85},
    ]
    store.runs.record(run, scores, [])
    store.runs.record(
        {**run, "instance_id": quiet, "champion": "naive"}, [{**scores[0], "mase": 1.2}, {**scores[1], "mase": 0.6}], []
    )
    made = T - 90 * 60  # a forecast whose twelve steps have all arrived by T: scored into the realised accuracy
    store.forecasts.record(
        [
            {
                "instance_id": IID,
                "run_id": 1,
                "model": "arima",
                "is_champion": False,
                "made_at": made,
                "origin_ts": made,
                "timestamps": [made + P * k for k in range(1, 13)],
                "mean": [50.0] * 12,
                "lower": [0.0] * 12,
                "upper": [100.0] * 12,
            }
        ]
    )
    assert score_realised(store, settings, T).points == 12
    summary = send_digest_if_due(store, settings, T)
    assert summary == "digest mailed to 2 recipients (1 charts)" and store.jobs.get_meta(DIGEST_META) == str(T)
    (message,) = smtp_sink.messages
    assert message["Subject"] == "[Headroom] digest: 2 instances, 1 open alerts"
    plain, html, images = parts(message)
    (alert,) = store.alerts.recent()
    for body in (plain, html):
        assert IID in body and quiet in body and iso_utc(alert.crossing_ts) in body and "cache-1" in body
    assert "linear  1            2          1.000" in plain  # champion of 1, 2 instances scored, median MASE of 0.8 and 1.2
    assert "naive   1            2          0.800" in plain
    assert "Realised accuracy (forecasts made in the last day" in plain
    realised_line = next(line for line in plain.splitlines() if line.startswith("arima "))
    assert realised_line.split()[1] == "12" and realised_line.split()[-1] == "1.00"  # 12 steps scored, all inside the interval
    assert len(images) == 1 and f"cid:{images[0]['Content-ID'].strip('<>')}" in html
    assert send_digest_if_due(store, settings, T + 3600) == f"digest not due until {iso_utc(T + 24 * 3600)}"
    assert len(smtp_sink.messages) == 1
    smtp_sink.refuse = True
    assert send_digest_if_due(store, settings, T + 24 * 3600).startswith("digest failed (SMTPDataError: ")
    assert store.jobs.get_meta(DIGEST_META) == str(T)  # not sent: due again at the next cycle
    smtp_sink.refuse = False
    assert send_digest_if_due(store, settings, T + 24 * 3600 + P).startswith("digest mailed")
    assert len(smtp_sink.messages) == 2


def test_cli_mail_test_sends_through_the_configured_server(tmp_path: Path, clean_env: Path, smtp_sink: SmtpSink) -> None:
    env = environ_without_settings()
    env.update(
        HEADROOM_CONFIG=str(tmp_path / "none.toml"),
        HEADROOM_DB=str(tmp_path / "h.db"),
        HEADROOM_SMTP_HOST="127.0.0.1",
        HEADROOM_SMTP_PORT=str(smtp_sink.port),
        HEADROOM_SMTP_TLS="none",
        HEADROOM_MAIL_TO="ops@example.com, dev@example.com",
    )
    done = subprocess.run(
        [sys.executable, "-m", "forecasting", "mail", "--test"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == f"test message sent to ops@example.com, dev@example.com via 127.0.0.1:{smtp_sink.port} (none, no login)"
    )
    (message,) = smtp_sink.messages
    assert message["To"] == "ops@example.com, dev@example.com" and "test message from Headroom" in parts(message)[0]
    env["HEADROOM_SMTP_PORT"] = str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "forecasting", "mail", "--test"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "ConnectionRefusedError" in done.stderr and len(done.stderr.strip().splitlines()) == 1


# ---- end to end: CloudWatch (moto over HTTP) → worker.py --once → SMTP ----------
def climbing_instance(aws: object) -> tuple[str, int]:
    """One EC2 instance in moto whose CPU is flat at 30 % for 3 h, then climbs to 72 % over the last 3 h."""
    import boto3

    from forecasting.bench.ingest import create_fleet, put_points
    from forecasting.sources.base import align

    (iid,) = create_fleet(boto3.client("ec2"), 1, prefix="batch")
    now = align(time.time(), P)
    cpu = {now - k * P: 30.0 if k > 36 else 30.0 + 42.0 * (37 - k) / 36 for k in range(1, 73)}
    put_points(boto3.client("cloudwatch"), [(iid, "cpu", ts, value) for ts, value in cpu.items()])
    return iid, now


def worker_env(tmp_path: Path, port: int) -> dict[str, str]:
    env = environ_without_settings()
    env.update(
        HEADROOM_SOURCE="cloudwatch",
        HEADROOM_DB=str(tmp_path / "headroom.db"),
        HEADROOM_CONFIG=str(tmp_path / "none.toml"),
        HEADROOM_TRAIN_DAYS="0.25",
        HEADROOM_HISTORY_DAYS="1",
        HEADROOM_BACKTEST_DAYS="0.125",
        HEADROOM_MODELS="naive,linear",
        HEADROOM_THRESHOLD="80",
        HEADROOM_WORKERS="1",
        HEADROOM_SMTP_HOST="127.0.0.1",
        HEADROOM_SMTP_PORT=str(port),
        HEADROOM_SMTP_TLS="none",
        HEADROOM_MAIL_FROM="headroom@example.com",
        HEADROOM_MAIL_TO="ops@example.com",
    )
    return env


def worker_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "worker.py"), "--once"],
        cwd=env["HEADROOM_DB"].rsplit("/", 1)[0],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def alert_mails(sink: SmtpSink) -> list[EmailMessage]:
    return [m for m in sink.messages if "digest" not in m["Subject"]]


@pytest.mark.slow
def test_worker_once_mails_an_alert_for_an_instance_climbing_in_cloudwatch(aws, tmp_path: Path, smtp_sink: SmtpSink) -> None:
    iid, now = climbing_instance(aws)
    env = worker_env(tmp_path, smtp_sink.port)
    first = worker_once(env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"ALERT {iid}: crosses 80 % at " in first.stderr and "mailed 1 alert to 1 recipient" in first.stderr
    with Store(tmp_path / "headroom.db", readonly=True) as store:
        (alert,) = store.alerts.recent()
        assert store.runs.latest()[iid].champion == "linear"
    assert alert.state == "open" and alert.basis == "mean" and now < alert.crossing_ts <= now + 3600 and alert.outcome is None
    assert 0 < alert.lead_minutes <= 60 and alert.emailed_at is not None
    (message,) = alert_mails(smtp_sink)
    plain, html, images = parts(message)
    assert message["Subject"].startswith(f"[Headroom] {iid} (batch-1) will cross 80 % CPU in about ")
    assert f"Predicted crossing: {iso_utc(alert.crossing_ts)} (UTC)" in plain and iso_utc(alert.crossing_ts) in html
    assert len(images) == 1 and images[0].get_content()[:4] == b"\x89PNG"
    assert [m["Subject"] for m in smtp_sink.messages if "digest" in m["Subject"]] == [
        "[Headroom] digest: 1 instances, 1 open alerts"
    ]

    second = worker_once(env)  # the next cycle, well inside the 60-minute cooldown
    assert second.returncode == 0, second.stderr[-3000:]
    assert "no new alert to mail" in second.stderr and len(alert_mails(smtp_sink)) == 1 and len(smtp_sink.messages) == 2


@pytest.mark.slow
def test_a_refusing_or_dead_smtp_server_leaves_the_worker_running_and_the_alert_stored(
    aws, tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    iid, _ = climbing_instance(aws)
    env = worker_env(tmp_path, smtp_sink.port)
    smtp_sink.refuse = True
    refused = worker_once(env)
    assert refused.returncode == 0, refused.stderr[-3000:]
    assert "mail failed, retried next cycle: SMTPDataError: (550" in refused.stderr and "Traceback" not in refused.stderr
    dead = worker_once({**env, "HEADROOM_SMTP_PORT": str(free_port())})
    assert dead.returncode == 0, dead.stderr[-3000:]
    with Store(tmp_path / "headroom.db", readonly=True) as store:
        (alert,) = store.alerts.recent()
        kinds = [e.kind for e in store.alerts.events(alert.alert_id)]
        beat = store.jobs.heartbeats()["forecast"]
    assert alert.instance_id == iid and alert.state == "open" and alert.emailed_at is None
    assert alert.email_error.startswith("ConnectionRefusedError") and kinds == ["opened", "email_failed", "email_failed"]
    assert beat.state == "degraded" and not beat.ok and "1 failed (ConnectionRefusedError" in beat.detail
    assert beat.error.startswith("1 problem(s): alert mail: ")  # the forecast ran; the mail part failed
    assert smtp_sink.messages == []
    smtp_sink.refuse = False
    back = worker_once(env)  # the server is back: the stored alert goes out now
    assert back.returncode == 0 and "mailed 1 alert to 1 recipient" in back.stderr
    assert len(alert_mails(smtp_sink)) == 1 and iid in alert_mails(smtp_sink)[0]["Subject"]


def _colour_pixels(png: bytes, hex_colour: str) -> np.ndarray:
    """Mask of the pixels near one colour (±40/255 per channel: lines are antialiased) in a PNG."""
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[:, :, :3]
    target = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return np.all(np.abs(pixels - target) < 40 / 255, axis=2)


def _longest_row(mask: np.ndarray) -> int:
    """Pixels of the longest horizontal line (a 1-px line may be spread over two rows)."""
    return int((mask[:-1] | mask[1:]).sum(axis=1).max())


def test_the_chart_draws_history_forecast_band_threshold_and_crossing_without_a_display() -> None:
    from forecasting.mail_charts import (
        CROSSING_COLOUR,
        FORECAST_COLOUR,
        HISTORY_COLOUR,
        THRESHOLD_COLOUR,
        forecast_chart,
    )

    ts = np.arange(T - 72 * P, T, P)
    mean = np.linspace(70, 95, 12)
    forecast = ForecastRecord(
        1,
        IID,
        1,
        "arima",
        True,
        int(ts[-1]),
        int(ts[-1]),
        tuple(int(ts[-1]) + P * np.arange(1, 13)),
        tuple(mean),
        tuple(mean - 8),
        tuple(mean + 8),
    )
    full = forecast_chart((ts, np.linspace(30, 70, len(ts))), forecast, 80.0, crossing_ts=int(ts[-1] + 4 * P), title=IID)
    bare = forecast_chart((ts, np.linspace(30, 70, len(ts))), None, 80.0)  # no forecast yet: still a chart
    for png in (full, bare):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert _longest_row(_colour_pixels(png, THRESHOLD_COLOUR)) > 500  # the threshold line across the plot
        assert _colour_pixels(png, HISTORY_COLOUR).sum() > 300
    assert _colour_pixels(full, CROSSING_COLOUR).sum() > 50 and _colour_pixels(bare, CROSSING_COLOUR).sum() == 0
    assert _colour_pixels(full, FORECAST_COLOUR).sum() > 3 * _colour_pixels(bare, FORECAST_COLOUR).sum()
    assert "matplotlib.pyplot" not in sys.modules or sys.modules["matplotlib"].get_backend().lower() == "agg"
