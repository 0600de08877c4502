"""Dashboard test helpers: the entry script, the environment that points the pages at the shared worker store, an export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.stores import ROOT, demo_export, worker_env

ENTRY = ROOT / "streamlit_app.py"


@pytest.fixture()
def dashboard_env(worker_db: Path) -> Iterator[dict[str, str]]:
    """Point the dashboard (settings read from the environment) at the test store for one test."""
    env = worker_env(worker_db)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env


@pytest.fixture(scope="session", name="demo_export")
def demo_export_fixture() -> bytes:
    """A get-metric-data JSON export of one simulated instance, 2.5 days at 5 minutes, as a user would upload."""
    return demo_export()
