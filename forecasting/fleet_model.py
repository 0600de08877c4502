"""Train the ``fleet`` family once per retrain cycle, on windows sampled from every instance, and save it once.

Leakage rule: from each instance the fleet model only learns windows whose targets end before
that instance's own backtest split at training time (``plan_backtest`` on the frame
``train_instance`` would build at ``now``). A split only moves forward as time passes (the
window's end advances and its length never shrinks), so the fleet model used by any later
``train_instance`` of the same cycle or of a later one has never seen that instance's backtest
window: the fleet family's backtest scores are out-of-sample like every other family's.

Memory stays bounded as the fleet grows: ``WINDOWS_PER_INSTANCE`` origins are sampled per
instance (seeded by the instance id, so a run is reproducible), added into the pooled normal
equations, and the instance's samples are dropped before the next is read. The saved model is a
directory ``<models_dir>/.fleet/<stamp>/meta.json`` (JSON coefficients, no pickle), written under a
temporary name and renamed; the newest ``KEEP`` are kept.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from forecasting.backtest import plan_backtest
from forecasting.clock import HOUR
from forecasting.models import pooled
from forecasting.settings import Settings
from forecasting.training import Samples, prepare_frame

log = logging.getLogger("headroom.fleet_model")
WINDOWS_PER_INSTANCE = 1024
"""Windows sampled from each instance (a quarter of 14 days of 5-minute origins). Memory does not grow with it: each
instance's windows are added into the normal equations and dropped before the next instance is read."""
KEEP = 3
"""Fleet model directories kept (the newest)."""
FOLDER = ".fleet"
"""Under ``models_dir``; an instance's folder never starts with a dot (``ids.folder_name``), so it cannot clash."""


def fleet_dir(settings: Settings) -> Path:
    return Path(settings.models_dir).resolve() / FOLDER


def learnable_rows(samples: Samples, settings: Settings, now: int) -> tuple[np.ndarray, int]:
    """CPU of the frame ``train_instance`` would build at ``now``, and its backtest split (rows before it may be learned)."""
    frame = prepare_frame(samples, settings.period, settings.train_days, now)
    if len(frame) == 0:
        return np.empty(0), 0
    plan = plan_backtest(frame, settings.period, settings.horizon, settings.backtest_days)
    return frame["cpu"].to_numpy(dtype=float), int(plan.split)


def add_instance(equations: pooled.NormalEquations, instance_id: str, cpu: np.ndarray, end: int, period: int) -> int:
    """Sample windows ending before row ``end`` of one instance into the pooled equations; how many were added."""
    rng = np.random.default_rng(zlib.crc32(instance_id.encode()))
    origins = pooled.sample_origins(cpu, end, equations.horizon, WINDOWS_PER_INSTANCE, rng)
    if len(origins) == 0:
        return 0
    x, centre, spread = pooled.design(cpu, origins, period, equations.horizon)
    before = equations.rows
    equations.add(x, pooled.targets(cpu, origins, equations.horizon, centre, spread))
    return equations.rows - before


def fit_fleet(series: Iterable[tuple[str, Samples, int]], settings: Settings) -> pooled.NormalEquations:
    """Pool sampled windows of every (instance, samples, now) into normal equations; samples are read one instance at a time."""
    equations = pooled.NormalEquations(settings.horizon)
    for instance_id, samples, now in series:
        cpu, split = learnable_rows(samples, settings, now)
        add_instance(equations, instance_id, cpu, split, settings.period)
    return equations


def train_fleet_model(series: Iterable[tuple[str, Samples, int]], settings: Settings, now: int) -> Path | None:
    """Fit the fleet model on every instance's learnable windows and save it; None when no instance had any."""
    clock = time.perf_counter()
    equations = fit_fleet(series, settings)
    if equations.rows < pooled.feature_count(settings.horizon) * 4:
        log.info("fleet model: %d windows from %d instances are too few to fit", equations.rows, equations.instances)
        return None
    coef = pooled.solve(equations)
    path = save_fleet_model(
        coef,
        settings,
        now,
        {"windows": equations.rows, "instances": equations.instances, "seconds": round(time.perf_counter() - clock, 3)},
    )
    log.info(
        "fleet model: %d windows from %d instances in %.1f s -> %s",
        equations.rows,
        equations.instances,
        time.perf_counter() - clock,
        path,
    )
    return path


def save_fleet_model(coef: np.ndarray, settings: Settings, now: int, facts: dict) -> Path:
    """Write ``meta.json`` under a temporary directory, rename it into place, keep the newest ``KEEP``."""
    base = fleet_dir(settings)
    stamp = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{time.time_ns():016x}"
    tmp, final = base / f".{stamp}.tmp", base / stamp
    tmp.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": "fleet",
        "period": settings.period,
        "horizon": settings.horizon,
        "trained_at": int(now),
        "lookback": pooled.LOOKBACK,
        "coef": coef.tolist(),
        **facts,
    }
    (tmp / "meta.json").write_text(json.dumps(meta))
    os.replace(tmp, final)
    for old in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_fleet_model(settings: Settings) -> tuple[Path, int] | None:
    """The newest saved fleet model for this period and horizon, and when it was trained; None if there is none."""
    base = fleet_dir(settings)
    if not base.is_dir():
        return None
    for path in sorted((p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True):
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if int(meta.get("period", 0)) == settings.period and int(meta.get("horizon", 0)) == settings.horizon:
            return path, int(meta.get("trained_at", 0))
    return None


def fleet_model_due(settings: Settings, now: int) -> bool:
    """True when the fleet family is configured and its newest model is missing or ``retrain_every`` hours old."""
    if "fleet" not in settings.models:
        return False
    latest = latest_fleet_model(settings)
    return latest is None or latest[1] <= now - settings.retrain_every * HOUR
