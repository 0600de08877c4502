"""End to end: the worker's forecast job sends the next warning to a webhook and CloudWatch, and
``python -m forecasting notify --test`` reaches every configured destination (all real servers on loopback)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import boto3

from forecasting.store import Store
from tests.fixtures.services import MotoServer, SmtpSink, free_port
from tests.fixtures.stores import ALERTING_INSTANCE, ROOT, environ_without_settings, run_worker, worker_env
from tests.fixtures.webhooks import WebhookSink


def notify_test(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forecasting", "notify", "--test"],
        cwd=ROOT,
        env={**environ_without_settings(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_notify_test_sends_one_message_to_each_destination(
    tmp_path: Path, aws: MotoServer, webhook_sink: WebhookSink, second_sink: WebhookSink, smtp_sink: SmtpSink
) -> None:
    env = {
        "HEADROOM_CONFIG": str(tmp_path / "none.toml"),
        "HEADROOM_WEBHOOK_URL": webhook_sink.url,
        "HEADROOM_WEBHOOK_SECRET": "s3cret",
        "HEADROOM_SLACK_WEBHOOK_URL": second_sink.url,
        "HEADROOM_PAGERDUTY_ROUTING_KEY": "R0UTING",
        "HEADROOM_PAGERDUTY_URL": webhook_sink.url.replace("/hook", "/pagerduty"),
        "HEADROOM_CLOUDWATCH_PUBLISH": "true",
        "HEADROOM_SMTP_HOST": smtp_sink.host,
        "HEADROOM_SMTP_PORT": str(smtp_sink.port),
        "HEADROOM_SMTP_TLS": "none",
        "HEADROOM_MAIL_TO": "ops@example.com",
        "HEADROOM_REGION": "us-east-1",
    }
    done = notify_test(env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * 5, lines
    assert [line.split()[1] for line in lines] == ["email:", "webhook", "slack", "pagerduty", "cloudwatch"]
    assert "R0UTING" not in done.stdout + done.stderr and "s3cret" not in done.stdout + done.stderr
    generic = [r for r in webhook_sink.received if r.path == "/hook"]
    paged = [r.json() for r in webhook_sink.received if r.path == "/pagerduty"]
    assert len(generic) == 1 and generic[0].json()["event"] == "test" and generic[0].headers["X-Headroom-Event"] == "test"
    assert [p["event_action"] for p in paged] == ["trigger", "resolve"] and paged[0]["payload"]["severity"] == "info"
    assert len(second_sink.received) == 1 and second_sink.received[0].json()["text"].startswith(":wave: Headroom: test message")
    assert len(smtp_sink.messages) == 1
    listed = boto3.client("cloudwatch").list_metrics(Namespace="Headroom", MetricName="NotifyTest")["Metrics"]
    assert len(listed) == 1


def test_notify_test_says_which_destination_failed(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    env = {
        "HEADROOM_CONFIG": str(tmp_path / "none.toml"),
        "HEADROOM_WEBHOOK_URL": webhook_sink.url,
        "HEADROOM_SLACK_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/services/T0/B0/t0ken",
        "HEADROOM_WEBHOOK_TIMEOUT": "2",
    }
    done = notify_test(env)
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == "ok      webhook (http://127.0.0.1): test message delivered"
    failed = done.stdout.splitlines()[1]
    assert failed.startswith("FAILED  slack (http://127.0.0.1): not delivered (") and "t0ken" not in done.stdout + done.stderr
    nothing = notify_test({"HEADROOM_CONFIG": str(tmp_path / "none.toml")})
    assert nothing.returncode == 1 and "no destination is configured" in nothing.stderr


def copy_store(source: Path, target: Path) -> None:
    """A private copy of the shared worker store (its model files stay where the runs say), with no alert yet."""
    target.parent.joinpath("headroom.toml").write_text(source.parent.joinpath("headroom.toml").read_text())
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    with Store(target) as store, store.transaction() as conn:
        conn.execute("DELETE FROM alert_events")
        conn.execute("DELETE FROM alerts")


def test_the_worker_sends_the_next_warning_to_a_webhook_and_cloudwatch_once(
    worker_db: Path, tmp_path: Path, aws: MotoServer, webhook_sink: WebhookSink
) -> None:
    db = tmp_path / "headroom.db"
    copy_store(worker_db, db)
    env = {
        **worker_env(db),
        "HEADROOM_WEBHOOK_URL": webhook_sink.url,
        "HEADROOM_WEBHOOK_SECRET": "s3cret",
        "HEADROOM_CLOUDWATCH_PUBLISH": "true",
        "HEADROOM_REGION": "us-east-1",
    }
    done = run_worker(env, "--only", "forecast")
    assert done.returncode == 0, done.stderr[-3000:]
    said = re.search(r"webhooks: webhook \(http://127\.0\.0\.1\): (\d+) sent", done.stderr)
    assert said and int(said[1]) == len(webhook_sink.received) >= 1, done.stderr[-3000:]  # the demo's batch-1 may cross 80 % too
    published = re.search(
        r"cloudwatch published (\d+) of (\d+) metrics for 3 instances \(0 groups\) in 1 PutMetricData calls \(minimum 1\)",
        done.stderr,
    )
    assert published and published[1] == published[2] and int(published[1]) >= 13, done.stderr[-3000:]  # 4 each, + a crossing
    assert "s3cret" not in done.stderr and webhook_sink.url not in done.stderr
    [opened] = [r.json() for r in webhook_sink.received if r.json()["alert"]["instance_id"] == ALERTING_INSTANCE]
    assert opened["event"] == "opened"
    now = int(datetime.now(UTC).timestamp())
    warning = boto3.client("cloudwatch").get_metric_data(
        MetricDataQueries=[
            {
                "Id": "w",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "Headroom",
                        "MetricName": "WarningOpen",
                        "Dimensions": [{"Name": "InstanceId", "Value": ALERTING_INSTANCE}],
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
            }
        ],
        StartTime=datetime.fromtimestamp(now - 3600, UTC),
        EndTime=datetime.fromtimestamp(now + 600, UTC),
    )
    assert warning["MetricDataResults"][0]["Values"] == [1.0]
    again = run_worker(env, "--only", "forecast")
    assert again.returncode == 0, again.stderr[-3000:]
    ids = [r.json()["id"] for r in webhook_sink.received]
    assert len(ids) == len(set(ids))  # the next cycle sends nothing again
    assert [r.json()["event"] for r in webhook_sink.received if r.json()["alert"]["instance_id"] == ALERTING_INSTANCE] == [
        "opened"
    ]
    with Store(db, readonly=True) as store:
        rows = store.db.query(
            "SELECT o.destination, o.kind, o.state FROM outbox o JOIN alerts a ON a.alert_id = o.alert_id "
            "WHERE a.instance_id = ?",
            (ALERTING_INSTANCE,),
        )
        assert [tuple(r) for r in rows] == [("webhook", "opened", "delivered")]
