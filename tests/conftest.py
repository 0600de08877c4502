"""Shared test setup: real services (moto, SMTP) and real stores, started from the test session."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.stores", "tests.fixtures.webhooks"]
