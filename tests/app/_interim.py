"""Interim only (until forecasting/fleet.py, alerts.py and notify.py land and ``worker.py --once`` runs
every job): the engine's own train_instance and run_forecasts, called as the retrain and forecast jobs will."""

from __future__ import annotations

import sys

SCRIPT = """
import time
from forecasting.forecast import run_forecasts
from forecasting.settings import load_settings
from forecasting.store import Store
from forecasting.training import train_instance

settings = load_settings()
now = int(time.time())
with Store(settings.db) as store:
    for inst in store.instances():
        result = train_instance(inst.instance_id, store.samples(inst.instance_id), settings, now)
        store.record_training_run(result.run, result.scores, result.backtest)
    print(run_forecasts(store, settings, now).summary())
"""


def fill_models_command() -> list[str]:
    return [sys.executable, "-c", SCRIPT]
