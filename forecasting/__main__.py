"""Command line: ``python -m forecasting import FILE``, ``mail --test`` and ``notify --test``.

Exit status 2 with one line on stderr for bad input or bad settings.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys

from forecasting.settings import SettingsError, load_settings


def import_command(args: argparse.Namespace) -> int:
    """Load a CloudWatch export into the store, all of it or nothing."""
    from forecasting.sources.export import ExportError, read_export
    from forecasting.store import Store, now

    settings = load_settings()
    try:
        parsed = read_export(args.file, instance=args.instance or "upload", limit_bytes=int(settings.import_limit_mb * 1e6))
    except ExportError as error:
        print(f"headroom import: {error}", file=sys.stderr)
        return 2
    try:
        with Store(settings.db) as store, store.transaction():
            stamp = now()
            for instance_id in parsed.instances:
                store.upsert_instance(instance_id, None, settings.threshold_for(instance_id), stamp)
            store.upsert_samples(parsed.rows())
    except (sqlite3.Error, OSError) as error:  # the database, not the file, is the problem
        print(f"headroom import: cannot write to {settings.db}: {error}", file=sys.stderr)
        return 1
    series = sum(len(m) for m in parsed.series.values())
    print(f"imported {parsed.points()} datapoints in {series} series for {', '.join(parsed.instances)} into {settings.db}")
    return 0


def mail_command(args: argparse.Namespace) -> int:
    """Send a test message with the configured SMTP settings."""
    from forecasting.notify import send_test_mail

    settings = load_settings()
    ok, message = send_test_mail(settings)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def notify_command(args: argparse.Namespace) -> int:
    """One test message to each configured destination (mail, webhook, Slack, PagerDuty, CloudWatch), a line each."""
    from forecasting.acting import send_test_messages

    results = send_test_messages(load_settings())
    if not results:
        print("no destination is configured (see the README, \"Acting on warnings\")", file=sys.stderr)
        return 1
    for ok, line in results:
        print(("ok      " if ok else "FAILED  ") + line)
    return 0 if all(ok for ok, _ in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecasting", description="Headroom command line")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import a CloudWatch get-metric-data JSON export or a CSV")
    imp.add_argument("file")
    imp.add_argument("--instance", help="instance id for series that do not name one")
    imp.set_defaults(run=import_command)
    mail = sub.add_parser("mail", help="email commands")
    mail.add_argument("--test", action="store_true", required=True, help="send a test message")
    mail.set_defaults(run=mail_command)
    notify = sub.add_parser("notify", help="test every configured destination")
    notify.add_argument("--test", action="store_true", required=True, help="send one test message to each destination")
    notify.set_defaults(run=notify_command)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except SettingsError as error:
        print(f"headroom: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
