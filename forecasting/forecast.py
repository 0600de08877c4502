"""The forecast job: every saved model of each instance's latest run forecasts the next horizon.

No training happens here. Models are loaded from the run's ``model_dir`` (kept in a small
in-process cache keyed by that directory, so the forever-loop worker loads each run once),
fed the last ``RECENT_DAYS`` of samples, and all forecasts of the cycle are written in one
``store.forecasts.record`` call, the champion's flagged. A missing or unloadable model is
logged and skipped; one instance's failure never stops the others.

When the champion cannot be used (its files do not load, or it cannot forecast), the run's other
models stand in, ranked by their stored backtest MASE (lowest first), and last a ``naive`` baseline
fitted on the recent samples; the stand-in's forecast is flagged as the champion's, so alerts and
``/predictions`` stay current, and the instance is queued for an immediate retrain.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.clock import DAY
from forecasting.features import to_frame
from forecasting.models.base import ForecastModel
from forecasting.models.registry import load_model, make_model
from forecasting.settings import Settings
from forecasting.store import Score, Store, TrainingRun

log = logging.getLogger("headroom.forecast")

RECENT_DAYS = 2.0
"""History read per instance: a day of seasonal lag plus the longest lookback, with room to spare."""
BASELINE = "naive"
"""The last stand-in for an unusable champion: it needs no saved files, only the recent samples."""


@dataclass
class ForecastReport:
    """What one forecast cycle did."""

    instances: int = 0
    forecasts: int = 0
    seconds: float = 0.0
    no_model: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "instance/model: reason"
    errors: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)  # "instance: champion X unusable, forecast with Y"
    retrain: list[str] = field(default_factory=list)  # instances whose champion could not be used

    def problems(self) -> list[str]:
        """One line per thing that went wrong this cycle (empty when all went well)."""
        return (
            [f"{iid}: no usable model" for iid in self.no_model]
            + self.fallbacks
            + [f"{item} (skipped)" for item in self.skipped]
            + self.errors
        )

    def summary(self) -> str:
        per = self.seconds / self.instances if self.instances else 0.0
        text = f"{self.forecasts} forecasts for {self.instances} instances ({per:.3f} s each)"
        if self.no_model:
            text += f", {len(self.no_model)} without a trained model"
        if self.skipped:
            text += f", {len(self.skipped)} models skipped"
        if self.errors:
            text += f", {len(self.errors)} instances failed"
        if self.fallbacks:
            text += f", {len(self.fallbacks)} forecast by a stand-in for their champion ({self.fallbacks[0]})"
        return text


class ModelCache:
    """Loaded models of the latest runs, keyed by run directory; runs no longer in use are dropped."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, ForecastModel]] = {}
        self._failed: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def models(self, model_dir: str) -> tuple[dict[str, ForecastModel], dict[str, str]]:
        """The loadable models of a run directory, and {model: reason} for those that are not."""
        with self._lock:
            if model_dir not in self._runs:
                self._runs[model_dir], self._failed[model_dir] = load_run(Path(model_dir))
            return self._runs[model_dir], self._failed[model_dir]

    def keep_only(self, model_dirs: set[str]) -> None:
        with self._lock:
            for key in [k for k in self._runs if k not in model_dirs]:
                self._runs.pop(key, None)
                self._failed.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._runs.clear()
            self._failed.clear()


CACHE = ModelCache()


def load_run(model_dir: Path) -> tuple[dict[str, ForecastModel], dict[str, str]]:
    """Load every model saved in a run directory; failures come back as reasons, not exceptions."""
    models: dict[str, ForecastModel] = {}
    failed: dict[str, str] = {}
    if not model_dir.is_dir():
        return models, {"*": f"model directory {model_dir} is missing"}
    for path in sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.endswith(".tmp")):
        try:
            models[path.name] = load_model(path)
        except Exception as error:
            failed[path.name] = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    return models, failed


def instance_forecasts(
    instance_id: str, run: TrainingRun, models: dict[str, ForecastModel], samples: dict, settings: Settings, made_at: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Forecast rows of every model for one instance, and "model: reason" for those that failed."""
    frame = to_frame(samples, settings.period)
    seen = np.flatnonzero(frame["cpu"].notna().to_numpy()) if len(frame) else np.empty(0, dtype=np.int64)
    if len(seen) == 0:
        return [], [f"{name}: no recent CPU samples" for name in models]
    frame = frame.iloc[: seen[-1] + 1]
    rows, failures = [], []
    for name, model in models.items():
        try:
            forecast = model.predict(settings.horizon, history=frame)
        except Exception as error:
            failures.append(f"{name}: {type(error).__name__}: {error}".splitlines()[0][:300])
            continue
        rows.append(
            {
                "instance_id": instance_id,
                "run_id": run.run_id,
                "model": name,
                "is_champion": name == run.champion,
                "made_at": int(made_at),
                "origin_ts": int(frame.index[-1]),
                "timestamps": forecast.timestamps.tolist(),
                "mean": forecast.mean.tolist(),
                "lower": forecast.lower.tolist(),
                "upper": forecast.upper.tolist(),
            }
        )
    return rows, failures


def run_forecasts(
    store: Store, settings: Settings, now: int, stop: threading.Event | None = None, cache: ModelCache | None = None
) -> ForecastReport:
    """Forecast every instance with the saved models of its latest training run; one store write per cycle."""
    cache = cache or CACHE
    started = time.perf_counter()
    report = ForecastReport()
    runs = store.runs.latest()
    cache.keep_only({run.model_dir for run in runs.values() if run.model_dir})
    rows: list[dict[str, Any]] = []
    since = int(now - RECENT_DAYS * DAY)
    for instance_id, run in sorted(runs.items()):
        if stop is not None and stop.is_set():
            break
        if not run.model_dir:
            report.no_model.append(instance_id)
            continue
        try:
            models, failed = cache.models(run.model_dir)
            for name, reason in failed.items():
                report.skipped.append(f"{instance_id}/{name}: {reason}")
                log.warning("forecast %s: cannot load %s: %s", instance_id, name, reason)
            samples = store.samples.series(instance_id, start=since, end=now)
            made, failures = instance_forecasts(instance_id, run, models, samples, settings, now) if models else ([], [])
            for failure in failures:
                report.skipped.append(f"{instance_id}/{failure}")
                log.warning("forecast %s: %s", instance_id, failure)
            if not any(row["is_champion"] for row in made):
                made = stand_in(instance_id, run, made, store.runs.scores(run_id=run.run_id), samples, settings, now, report)
            if not made:
                report.no_model.append(instance_id)
                continue
            rows.extend(made)
            report.instances += 1
        except Exception as error:  # one instance must never stop the others
            report.errors.append(f"{instance_id}: {type(error).__name__}: {error}".splitlines()[0][:300])
            log.warning("forecast %s failed: %s", instance_id, report.errors[-1])
            log.debug("forecast %s failed", instance_id, exc_info=True)
    if rows:
        store.forecasts.record(rows)
    if report.retrain:
        store.jobs.request_retrain(report.retrain)
    store.jobs.set_meta("instances_without_model", json.dumps(sorted(report.no_model)))
    report.forecasts = len(rows)
    report.seconds = time.perf_counter() - started
    return report


def fallback_order(champion: str | None, scores: list[Score]) -> list[str]:
    """Models to try in place of an unusable champion: the run's others by backtest MASE (lowest first), then naive."""
    scored = [score for score in scores if score.status == "ok" and score.model != champion]
    ranked = sorted(scored, key=lambda score: (score.mase is None, score.mase or 0.0, score.model))
    order = [score.model for score in ranked]
    return order + ([BASELINE] if BASELINE not in order else [])


def stand_in(
    instance_id: str,
    run: TrainingRun,
    made: list[dict[str, Any]],
    scores: list[Score],
    samples: dict,
    settings: Settings,
    now: int,
    report: ForecastReport,
) -> list[dict[str, Any]]:
    """Flag the best other forecast as the champion's (or add a fresh naive one) and queue the instance for retraining."""
    by_model = {row["model"]: row for row in made}
    chosen = next((name for name in fallback_order(run.champion, scores) if name in by_model), None)
    if chosen is None:
        try:
            baseline = make_model(BASELINE, settings, settings.horizon).fit(to_frame(samples, settings.period))
            fresh, _ = instance_forecasts(instance_id, run, {BASELINE: baseline}, samples, settings, now)
        except Exception as error:  # no recent CPU at all: nothing can stand in
            log.warning("forecast %s: no model can stand in for %s: %s", instance_id, run.champion, error)
            fresh = []
        made = made + fresh
        chosen = BASELINE if fresh else None
    report.retrain.append(instance_id)
    if chosen is None:
        return made
    next(row for row in made if row["model"] == chosen)["is_champion"] = True
    report.fallbacks.append(f"{instance_id}: champion {run.champion} unusable, forecast with {chosen}")
    log.warning("forecast %s: champion %s unusable, forecast with %s; retraining it", instance_id, run.champion, chosen)
    return made
