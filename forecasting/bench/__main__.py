"""Benchmarks: ``python -m forecasting.bench NAME ...`` (see docs/benchmarks.md).

Each benchmark lives in its own module of this package and exposes ``main(argv)``.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "ingest": "forecasting.bench.ingest",
    "accuracy": "forecasting.bench.accuracy",
    "warning": "forecasting.bench.warning",
    "fleet": "forecasting.bench.fleet",
    "dashboard": "forecasting.bench.dashboard",
    "api": "forecasting.bench.api_load",
    "publish": "forecasting.bench.publish",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m forecasting.bench {{{','.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
