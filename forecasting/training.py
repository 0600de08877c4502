"""Train one instance: fit and backtest every model once, combine, choose what to deploy, save (pure compute).

``train_instance`` is what the retrain job fans out over processes (or Dask): it reads no
store, writes model files under ``settings.models_dir/<instance>/<run stamp>/<model>/``
(a temporary directory renamed into place) and returns a :class:`TrainingResult` whose
``run``, ``scores`` and ``backtest`` go straight into ``store.runs.record``.
``validate_samples`` and ``predict_samples`` serve uploads (backtest only, no files).

Each model is fitted once, on the rows before the backtest window, and that fitted model is
what gets saved and deployed: no second fit, and its interval is calibrated on its own
out-of-sample residuals. Combinations (``combined``) are built from the other models' backtests.
The champion is chosen by ``backtest.choose_deployed``. A model that cannot fit is skipped with
its reason (status 'skipped'); only an unusable input leaves the champion None. Nothing raises
for bad data, so one instance never stops the others.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecasting.backtest import BacktestPlan, ModelBacktest, backtest_forecasts, backtest_model, choose_deployed, plan_backtest
from forecasting.clock import DAY
from forecasting.features import to_frame
from forecasting.ids import folder_name
from forecasting.metrics import TARGET
from forecasting.models import family
from forecasting.models.base import Forecast, ForecastModel, ModelError
from forecasting.models.combined import MEMBERS, combination_members, combine
from forecasting.models.registry import make_model, model_class
from forecasting.settings import Settings

log = logging.getLogger("headroom.training")

Progress = Callable[[str, float], None]
Samples = dict[str, tuple[np.ndarray, np.ndarray]]
KEEP_RUNS = 3
"""Model directories kept per instance (older runs' files are removed; their scores stay in the store)."""
METRICS = ("mape", "smape", "mase", "rmse", "coverage")


@dataclass
class TrainingResult:
    """What one training run produced, in the shapes ``store.runs.record`` takes."""

    instance_id: str
    run: dict[str, Any]
    scores: list[dict[str, Any]]
    backtest: list[tuple[str, int, int, float, float, float, float]]
    champion: str | None


@dataclass
class _Outcome:
    """One model's result inside a run: its backtest (or why it was skipped) and its fitted, deployable model."""

    name: str
    backtest: ModelBacktest | None = None
    reason: str | None = None
    model: ForecastModel | None = None

    def score_row(self) -> dict[str, Any]:
        if self.backtest is None:
            return {
                "model": self.name,
                "status": "skipped",
                "reason": self.reason,
                **dict.fromkeys(METRICS),
                "fit_seconds": None,
                "predict_seconds": None,
            }
        clean = {k: _finite(self.backtest.scores.get(k)) for k in METRICS}
        return {
            "model": self.name,
            "status": "ok",
            "reason": None,
            **clean,
            "fit_seconds": round(self.backtest.fit_seconds, 4),
            "predict_seconds": round(self.backtest.predict_seconds, 5),
        }


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def prepare_frame(
    samples: Samples, period: int, train_days: float, now: int | None = None, metrics: list[str] | None = None
) -> pd.DataFrame:
    """Samples → the training frame: nothing after ``now``, the last ``train_days``, no empty CPU rows at either end.

    With ``metrics`` (the configured ones), stored series of other metrics are left out: a metric
    switched off stops feeding the models at once, not when its data ages out.
    """
    if metrics is not None:
        samples = {m: series for m, series in samples.items() if m in metrics or m == TARGET}
    if now is not None:
        samples = {
            m: (np.asarray(ts)[np.asarray(ts) <= now], np.asarray(v)[np.asarray(ts) <= now]) for m, (ts, v) in samples.items()
        }
    frame = to_frame(samples, period)
    if len(frame) == 0 or "cpu" not in frame or not frame["cpu"].notna().any():
        return pd.DataFrame(columns=["cpu"], index=pd.Index([], dtype=np.int64, name="ts"))
    seen = np.flatnonzero(frame["cpu"].notna().to_numpy())
    frame = frame.iloc[seen[0] : seen[-1] + 1]
    start = int(frame.index[-1]) - int(train_days * DAY)
    return frame.loc[start + 1 :]


def models_for(
    frame: pd.DataFrame, configured: list[str], requested: list[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """Models to train on this frame, and the ones left out with why (each family declares the history it needs).

    ``requested`` defaults to the ``configured`` set; a combination brings the configured single
    models it combines along.
    """
    names = list(requested or configured)
    if any(family(n).combines for n in names):
        names += [n for n in configured if n not in names and not family(n).combines]
    span_days = (int(frame.index[-1]) - int(frame.index[0])) / DAY if len(frame) else 0.0
    left_out = {
        name: f"needs {family(name).min_history_days:g} days of history, has {span_days:.1f} d"
        for name in names
        if span_days < family(name).min_history_days
    }
    return [n for n in names if n not in left_out], left_out


def _evaluate(
    frame: pd.DataFrame, settings: Settings, names: list[str], horizon: int, progress: Progress | None, label: str
) -> list[_Outcome]:
    """Backtest each model (fitted once, then deployed as it is) and build the combinations; skip failures."""
    plan = plan_backtest(frame, settings.period, horizon, settings.backtest_days)
    singles = [n for n in names if not family(n).combines]
    outcomes = []
    for i, name in enumerate(singles):
        _report(progress, f"{name}: fit and backtest", i / max(1, len(singles)))
        outcome = _Outcome(name)
        try:
            model = make_model(name, settings, horizon)
            outcome.backtest = backtest_model(model, frame, plan)
            outcome.model = _deployable(model, outcome.backtest, frame)
        except ModelError as error:
            outcome.backtest, outcome.reason = None, str(error).splitlines()[0][:500]
            log.info("%s: %s skipped: %s", label, name, outcome.reason)
        except Exception as error:  # a bug or a library failure must not stop the other models
            outcome.backtest, outcome.reason = None, f"{type(error).__name__}: {error}".splitlines()[0][:500]
            log.warning("%s: %s failed: %s", label, name, outcome.reason, exc_info=True)
        outcomes.append(outcome)
    outcomes += [_combine(name, outcomes, frame, plan, settings, horizon) for name in names if family(name).combines]
    return outcomes


def _deployable(model: ForecastModel, backtest: ModelBacktest, frame: pd.DataFrame) -> ForecastModel:
    """The backtested model, calibrated on its own later-origin residuals, forecasting from the whole frame."""
    model.calibration = backtest.calibration
    model.history = frame
    return model


def _combine(
    name: str, outcomes: list[_Outcome], frame: pd.DataFrame, plan: BacktestPlan, settings: Settings, horizon: int
) -> _Outcome:
    """A combination of every fitted model (ranked on the choosing origins), backtested and calibrated like a model.

    Its ``yardstick`` is the median of the ``MEMBERS`` best on the choosing origins, fixed: what the
    backtest alone would combine. A single model is deployed instead only if it clearly beats that
    (``choose_deployed``); the deployed combination then keeps re-choosing its members from recent
    errors, whose own backtest (warming up on the first origins) sizes its interval.
    """
    fitted = {o.name: (o.backtest, o.model) for o in outcomes if o.backtest is not None and o.model is not None}
    ranking = combination_members({n: backtest.choosing_mase for n, (backtest, _) in fitted.items()}, count=len(fitted))
    if len(ranking) < 2:
        return _Outcome(name, reason="fewer than two models fitted: nothing to combine")
    fitted_until = int(frame.index[plan.split - 1])  # the first origin: the candidates were fitted on the rows up to it
    combined = model_class(name).of({n: fitted[n][1] for n in ranking}, settings.period, horizon, fitted_until)  # type: ignore[attr-defined]
    started = time.perf_counter()
    mean = combined.predict_at(frame.iloc[: int(plan.origins[-1]) + 1], plan.origins, horizon)
    result = backtest_forecasts(name, frame, plan, mean)
    result.fit_seconds = sum(fitted[n][0].fit_seconds for n in ranking)
    result.predict_seconds = (time.perf_counter() - started) / len(plan.origins)
    result.yardstick = backtest_forecasts(name, frame, plan, combine([fitted[n][0].mean for n in ranking[:MEMBERS]]))
    return _Outcome(name, backtest=result, model=_deployable(combined, result, frame))


def _report(progress: Progress | None, message: str, fraction: float) -> None:
    if progress is not None:
        try:
            progress(message, float(min(max(fraction, 0.0), 1.0)))
        except Exception:  # a broken progress display must not break training
            log.debug("progress callback failed", exc_info=True)


def _result(
    instance_id: str,
    frame: pd.DataFrame,
    outcomes: list[_Outcome],
    left_out: dict[str, str],
    started_at: int,
    elapsed: float,
    model_dir: str | None,
) -> TrainingResult:
    scores = [o.score_row() for o in outcomes]
    scores += [_Outcome(name, reason=reason).score_row() for name, reason in left_out.items()]
    champion = choose_deployed({o.name: o.backtest for o in outcomes if o.backtest is not None})
    backtest = [row for o in outcomes if o.backtest is not None for row in o.backtest.rows()]
    has_cpu = len(frame) > 0
    run = {
        "instance_id": instance_id,
        "started_at": int(started_at),
        "finished_at": int(started_at + round(elapsed)),
        "train_start": int(frame.index[0]) if has_cpu else None,
        "train_end": int(frame.index[-1]) if has_cpu else None,
        "points": int(frame["cpu"].notna().sum()) if has_cpu else 0,
        "champion": champion,
        "model_dir": model_dir,
    }
    return TrainingResult(instance_id, run, scores, backtest, champion)


def _no_data_outcomes(names: list[str], frame: pd.DataFrame) -> list[_Outcome]:
    reason = "no CPU samples in the training window" if len(frame) == 0 else None
    return [_Outcome(name, reason=reason) for name in names] if reason else []


def train_instance(
    instance_id: str, samples: Samples, settings: Settings, now: int, progress: Progress | None = None
) -> TrainingResult:
    """Fit and backtest every configured model for one instance once, save them, choose what is deployed."""
    clock = time.perf_counter()
    frame = prepare_frame(samples, settings.period, settings.train_days, now, settings.metrics)
    names, left_out = models_for(frame, settings.models)
    outcomes = _no_data_outcomes(names, frame) or _evaluate(frame, settings, names, settings.horizon, progress, instance_id)
    saved = [o for o in outcomes if o.model is not None and o.backtest is not None]
    model_dir = _save_run(instance_id, saved, settings, now) if saved else None
    result = _result(instance_id, frame, outcomes, left_out, now, time.perf_counter() - clock, model_dir)
    _report(progress, f"done: champion {result.champion or 'none'}", 1.0)
    log.info(
        "%s: trained %d/%d models in %.1f s, champion %s",
        instance_id,
        len(saved),
        len(outcomes) + len(left_out),
        time.perf_counter() - clock,
        result.champion,
    )
    return result


def _save_run(instance_id: str, outcomes: list[_Outcome], settings: Settings, now: int) -> str | None:
    """Save each fitted model under a temporary run directory, rename it into place, prune old runs."""
    base = Path(settings.models_dir).resolve() / folder_name(instance_id)
    stamp = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{time.time_ns():016x}"  # sorts in creation order
    tmp, final = base / f".{stamp}.tmp", base / stamp
    tmp.mkdir(parents=True, exist_ok=True)
    kept = 0
    for outcome in outcomes:
        try:
            outcome.model.save(tmp / outcome.name)  # type: ignore[union-attr]
            kept += 1
        except Exception as error:  # an unsavable model is skipped like an unfittable one
            outcome.backtest, outcome.model = None, None
            outcome.reason = f"could not be saved: {error}".splitlines()[0][:500]
            log.warning("%s: %s %s", instance_id, outcome.name, outcome.reason)
    if not kept:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    os.replace(tmp, final)
    _prune_runs(base, keep=final)
    return str(final)


def _prune_runs(base: Path, keep: Path) -> None:
    """Remove all but the newest KEEP_RUNS run directories (and leftovers of crashed runs)."""
    runs = sorted((p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    for old in runs[:-KEEP_RUNS]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in base.glob(".*.tmp"):
        if time.time() - leftover.stat().st_mtime > DAY:
            shutil.rmtree(leftover, ignore_errors=True)


def validate_samples(
    samples: Samples, settings: Settings, models: list[str] | None = None, progress: Progress | None = None
) -> TrainingResult:
    """Backtest the models on uploaded samples and choose a champion; writes no files."""
    clock, started = time.perf_counter(), int(time.time())
    frame = prepare_frame(samples, settings.period, settings.train_days, metrics=settings.metrics)
    names, left_out = models_for(frame, settings.models, models)
    outcomes = _no_data_outcomes(names, frame) or _evaluate(frame, settings, names, settings.horizon, progress, "upload")
    result = _result("upload", frame, outcomes, left_out, started, time.perf_counter() - clock, None)
    _report(progress, f"done: champion {result.champion or 'none'}", 1.0)
    return result


def predict_samples(
    samples: Samples, settings: Settings, model: str = "auto", horizon: int | None = None, progress: Progress | None = None
) -> Forecast:
    """Forecast after the last sample with ``model`` (``auto``: what training would deploy), with calibrated bounds."""
    horizon = horizon or settings.horizon
    frame = prepare_frame(samples, settings.period, settings.train_days, metrics=settings.metrics)
    if len(frame) == 0:
        raise ModelError("no CPU samples to forecast from")
    wanted = None if model == "auto" else [model]
    names, left_out = models_for(frame, settings.models, wanted)
    if model != "auto" and model not in names:
        raise ModelError(f"{model}: {left_out.get(model, 'not available for these samples')}")
    outcomes = _evaluate(frame, settings, names, horizon, progress, "upload")
    chosen = choose_deployed({o.name: o.backtest for o in outcomes if o.backtest is not None}) if model == "auto" else model
    outcome = next((o for o in outcomes if o.name == chosen and o.model is not None), None)
    if outcome is None:
        reasons = "; ".join(f"{o.name}: {o.reason}" for o in outcomes if o.reason)
        raise ModelError(f"no model could fit these samples ({reasons})")
    forecast = outcome.model.predict(horizon, history=frame)  # type: ignore[union-attr]
    _report(progress, f"done: {chosen}", 1.0)
    return forecast
