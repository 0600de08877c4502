"""Command line: ``python -m forecasting import FILE``, ``mail --test``, ``notify --test`` and ``api`` (serve the JSON API).

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
    from forecasting.clock import SYSTEM_CLOCK
    from forecasting.ids import InstanceIdError, check_instance_id
    from forecasting.sources.export import ExportError, check_not_future, read_export
    from forecasting.store import Store

    settings, now = load_settings(), int(SYSTEM_CLOCK.now())
    try:
        if args.instance is not None:
            check_instance_id(args.instance)
    except InstanceIdError as error:
        print(f"headroom import: --instance: {error}", file=sys.stderr)
        return 2
    try:
        parsed = read_export(args.file, instance=args.instance or "upload", limit_bytes=int(settings.import_limit_mb * 1e6))
        check_not_future(parsed, now + settings.period, args.file)
    except ExportError as error:
        print(f"headroom import: {error}", file=sys.stderr)
        return 2
    try:
        with Store(settings.db) as store, store.transaction():
            for instance_id in parsed.instances:
                store.samples.upsert_instance(instance_id, None, settings.threshold_for(instance_id), now)
            store.samples.upsert(parsed.rows())
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


def api_command(args: argparse.Namespace) -> int:
    """Serve the JSON API on HEADROOM_API_HOST:HEADROOM_API_PORT (refused when exposed without a token)."""
    from forecasting.serve import serve_api

    return serve_api(load_settings(), workers=args.workers)


def notify_command(args: argparse.Namespace) -> int:
    """One test message to each configured destination (mail, webhook, Slack, PagerDuty, CloudWatch), a line each."""
    from forecasting.acting import send_test_messages

    results = send_test_messages(load_settings())
    if not results:
        print('no destination is configured (see docs/alerts.md, "Acting on warnings")', file=sys.stderr)
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
    api = sub.add_parser("api", help="serve the JSON API (HEADROOM_API_HOST, HEADROOM_API_PORT)")
    api.add_argument("--workers", type=int, default=1, help="uvicorn processes sharing the socket")
    api.set_defaults(run=api_command)

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
