"""A real store for the dashboard tests, filled by the worker's own code on the demo source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from forecasting.sources.demo import DemoSource
from forecasting.sources.export import ParsedExport, to_json_export
from forecasting.store import Store

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "streamlit_app.py"
TINY_MODELS = {
    "HEADROOM_MODEL__EPOCHS": "2",
    "HEADROOM_MODEL__UNITS": "4",
    "HEADROOM_MODEL__LOOKBACK": "12",
    "HEADROOM_MODEL__PATIENCE": "1",
    "HEADROOM_MODEL__MAX_WINDOWS": "200",
    "HEADROOM_BACKTEST_DAYS": "0.5",
}


def store_env(db: Path) -> dict[str, str]:
    """Environment for the worker and the dashboard: demo source, 3 instances, 3 days, tiny models."""
    return {
        "HEADROOM_DB": str(db),
        "HEADROOM_SOURCE": "demo",
        "HEADROOM_DEMO_INSTANCES": "3",
        "HEADROOM_TRAIN_DAYS": "3",
        "HEADROOM_HISTORY_DAYS": "3",
        "HEADROOM_WORKERS": "1",
        "HEADROOM_CONFIG": str(db.parent / "absent.toml"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **TINY_MODELS,
    }


def run_worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python worker.py --once ...`` in a subprocess, as a cron user would run it."""
    return subprocess.run([sys.executable, "worker.py", "--once", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def dashboard_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store after one full ``worker.py --once`` cycle on the demo feed (3 instances, tiny models)."""
    db = tmp_path_factory.mktemp("dashboard") / "headroom.db"
    engine = all((ROOT / "forecasting" / f"{m}.py").exists() for m in ("training", "forecast", "fleet", "alerts", "notify"))
    done = run_worker(store_env(db)) if engine else run_worker(store_env(db), "--only", "ingest")
    assert done.returncode == 0, done.stderr[-3000:]
    if not engine:
        from tests.app._interim import fill_models_command

        done = subprocess.run(fill_models_command(), cwd=ROOT, env={**os.environ, **store_env(db)}, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    with Store(db, readonly=True) as store:
        assert len(store.instances()) == 3 and store.sample_count() > 0
        assert store.latest_forecasts(), "the worker cycle wrote no forecasts"
    return db


@pytest.fixture(scope="session")
def ingest_only_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store after ``worker.py --once --only ingest``: data, but no model trained yet."""
    db = tmp_path_factory.mktemp("ingest-only") / "headroom.db"
    done = run_worker(store_env(db), "--only", "ingest")
    assert done.returncode == 0, done.stderr[-3000:]
    return db


@pytest.fixture()
def dashboard_env(dashboard_db: Path) -> Iterator[dict[str, str]]:
    """Point the dashboard (settings read from the environment) at the test store for one test."""
    env = store_env(dashboard_db)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env


@pytest.fixture(scope="session")
def demo_export() -> bytes:
    """A get-metric-data JSON export of one demo instance, 2.5 days at 5 minutes, as a user would upload."""
    source = DemoSource(count=3, seed=11, anchor=1_760_000_000)
    ts = np.arange(1_760_000_000 - int(2.5 * 86_400), 1_760_000_000, 300, dtype=np.int64)
    iid = "i-0123456789abcdef0"
    series = {metric: (ts, source.values(2, metric, ts)) for metric in ("cpu", "memory", "network_in", "network_out")}
    text = to_json_export(ParsedExport({iid: series}))
    assert json.loads(text)["MetricDataResults"]
    return text.encode()
