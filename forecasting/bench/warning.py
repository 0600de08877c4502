"""Early-warning benchmark: replay real CPU traces as if live and score the alerts against real overloads.

    python -m forecasting.bench warning DATA_DIR [--lead 15] [--threshold-quantile 0.97] [--threshold T]
                                                 [--models naive arima ...] [--alert-on mean|upper] [--out FILE]

One definition, so figures compare across runs:

* threshold per series: the ``--threshold-quantile`` (0.97) quantile of its first 70 % (or ``--threshold``);
* evaluation window and retraining cadence: those of ``bench accuracy`` (the last 30 %, at most
  6 days; ``train_instance`` at the window's start and every ``--retrain-every`` (2) days on at
  most the 14 days before), replayed step by step: at every 5-minute origin the champion of the
  latest retrain forecasts the next hour from the data up to that origin;
* a warning is open at an origin when the alert of ``forecasting.alerts`` would be: opened when the
  forecast reaches the threshold, kept while it does, cleared after ``CLEAR_CYCLES`` cycles with the
  forecast peak below threshold − margin;
* an event is an upward crossing of the threshold inside the window; a crossing less than 30 min
  after the previous one merges into it;
* an event is caught when a warning was open at some origin between one horizon and ``--lead``
  minutes before it; its lead is measured from the earliest such origin;
* precision counts warning episodes (consecutive warning origins): an episode is right when a value
  at or above the threshold follows it, from its first origin to one horizon after its last;
* series whose threshold is under 20 % CPU are left out of the pooled figures.

The ``linear`` rule is Prometheus' ``predict_linear``: the least-squares line through the last hour,
extrapolated over the horizon, reaches the threshold (no hysteresis). Two more lines put the
figures in context: the champion's forecasts without hysteresis (a warning exactly when that
cycle's forecast crosses) and the linear forecasts through the same hysteresis as the alerts.
Each line also reports the share of the time a warning is open: an always-open warning would
score perfectly on recall and on episode precision, so that share keeps the figures honest.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.alerts import CLEAR_CYCLES
from forecasting.bench.accuracy import evaluation_plan, series_from
from forecasting.features import DAY, to_frame
from forecasting.models.baselines import linear_extrapolation
from forecasting.models.registry import load_model
from forecasting.settings import Settings, load_settings

MERGE_SECONDS = 30 * 60
MIN_POOLED_THRESHOLD = 20.0
HISTORY_SHARE = 0.70
Samples = dict[str, tuple[np.ndarray, np.ndarray]]


# ---- the definitions (pure) -------------------------------------------------
def series_threshold(cpu: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of the first 70 % of a series."""
    return float(np.nanquantile(cpu[: int(len(cpu) * HISTORY_SHARE)], quantile))


def overload_events(cpu: np.ndarray, start: int, threshold: float, period: int) -> list[int]:
    """Rows of the upward crossings at or after ``start``; one less than 30 min after the previous merges into it."""
    above = np.nan_to_num(cpu, nan=-np.inf) >= threshold
    events, previous = [], None
    for t in range(max(start, 1), len(cpu)):
        if above[t] and not above[t - 1]:
            if previous is None or (t - previous) * period >= MERGE_SECONDS:
                events.append(t)
            previous = t
    return events


def episodes(warn: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) rows of each run of consecutive warnings."""
    padded = np.concatenate([[False], np.asarray(warn, dtype=bool), [False]]).astype(np.int8)
    edges = np.diff(padded)
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist(), strict=True))


def score_warnings(cpu: np.ndarray, warn: np.ndarray, events: list[int], threshold: float, horizon: int,
                   lead_steps: int, period: int) -> dict:
    """Events, caught, recall at the lead, precision over episodes, F1 and the leads of caught events (minutes)."""
    above = np.nan_to_num(cpu, nan=-np.inf) >= threshold
    leads = []
    for e in events:
        first = max(0, e - horizon)
        opened = np.flatnonzero(warn[first: max(first, e - lead_steps + 1)])
        if len(opened):
            leads.append((e - first - int(opened[0])) * period / 60)
    runs = episodes(warn)
    right = sum(bool(above[a + 1: b + horizon + 1].any()) for a, b in runs)
    return summarise_counts(len(events), leads, len(runs), right) | {"warning_steps": int(np.sum(warn))}


def summarise_counts(events: int, leads: list[float], episode_count: int, right: int) -> dict:
    """Recall, precision, F1 and median lead from the counts (None where undefined)."""
    recall = len(leads) / events if events else None
    precision = right / episode_count if episode_count else None
    f1 = 2 * recall * precision / (recall + precision) if recall and precision else (0.0 if recall is not None and precision is not None else None)
    return {"events": events, "caught": len(leads), "episodes": episode_count, "right_episodes": right, "recall": recall,
            "precision": precision, "f1": f1, "median_lead_minutes": float(np.median(leads)) if leads else None, "leads": leads}


def alert_states(series: np.ndarray, threshold: float, margin: float) -> np.ndarray:
    """Whether the alert is open after each cycle, given each cycle's forecast [cycles, horizon] (NaN rows: no forecast)."""
    open_, below = False, 0
    states = np.zeros(len(series), dtype=bool)
    for k, forecast in enumerate(series):
        if np.isfinite(forecast).any():
            peak = float(np.nanmax(forecast))
            if peak >= threshold:
                open_, below = True, 0
            elif open_ and peak >= threshold - margin:
                below = 0
            elif open_:
                below += 1
                if below >= CLEAR_CYCLES:
                    open_, below = False, 0
        states[k] = open_
    return states


def linear_forecasts(cpu: np.ndarray, index: np.ndarray, origins: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """Per origin, the last hour's least-squares line over the horizon (``predict_linear``) [origins, horizon]."""
    out = np.full((len(origins), horizon), np.nan)
    series = pd.Series(cpu, index=index)
    for k, o in enumerate(origins):
        recent = series.iloc[max(0, o - 3600 // period + 1): o + 1]
        if recent.notna().any():
            out[k] = np.clip(linear_extrapolation(recent, horizon, period), 0.0, 100.0)
    return out


# ---- the replay ---------------------------------------------------------------
def replay_champion(name: str, samples: Samples, settings: Settings, origins: np.ndarray, retrain_every_days: float,
                    log: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Champion forecasts (mean, upper) [origins, horizon] from every origin, retraining on the accuracy cadence."""
    from forecasting.training import train_instance

    horizon, period = settings.horizon, settings.period
    frame = to_frame(samples, period)
    index = frame.index.to_numpy(dtype=np.int64)
    mean, upper = np.full((len(origins), horizon), np.nan), np.full((len(origins), horizon), np.nan)
    champions: list[str | None] = [None] * len(origins)
    starts, due = [], None
    for k, o in enumerate(origins):
        if due is None or index[o] >= due:
            starts.append(k)
            due = index[o] + retrain_every_days * DAY
    for n, first in enumerate(starts):
        last = starts[n + 1] if n + 1 < len(starts) else len(origins)
        now = int(index[origins[first]])
        seen = {m: (ts[ts <= now], v[ts <= now]) for m, (ts, v) in samples.items()}
        clock = time.perf_counter()
        result = train_instance(name, seen, settings, now)
        log(f"  retrain {n + 1}/{len(starts)} at {time.strftime('%Y-%m-%d %H:%M', time.gmtime(now))}: "
            f"{time.perf_counter() - clock:.1f} s, champion {result.champion}")
        if not result.champion or not result.run["model_dir"]:
            continue
        model = load_model(Path(result.run["model_dir"]) / result.champion)
        rows = origins[first:last]
        predicted = np.clip(np.asarray(model.predict_at(frame.iloc[: int(rows[-1]) + 1], rows, horizon), dtype=float), 0.0, 100.0)
        mean[first:last] = predicted
        upper[first:last] = model.bounds(predicted)[1]
        champions[first:last] = [result.champion] * (last - first)
    return mean, upper, champions


def evaluate_series(name: str, samples: Samples, settings: Settings, args: argparse.Namespace,
                    log: Callable[[str], None]) -> dict:
    """Threshold, events, the replayed alerts and the linear rule of one series, scored."""
    horizon, period = settings.horizon, settings.period
    frame = to_frame(samples, period)
    cpu, index = frame["cpu"].to_numpy(dtype=float), frame.index.to_numpy(dtype=np.int64)
    start, _ = evaluation_plan(len(frame), period, horizon)
    origins = np.arange(start - 1, len(frame) - 1, dtype=np.int64)
    threshold = args.threshold if args.threshold is not None else series_threshold(cpu, args.threshold_quantile)
    events = overload_events(cpu, start, threshold, period)
    lead_steps = int(np.ceil(args.lead * 60 / period))
    mean, upper, champions = replay_champion(name, samples, settings, origins, args.retrain_every, log)
    basis = upper if settings.alert_on == "upper" else mean
    states = alert_states(basis, threshold, settings.alert_margin)
    crossing = np.nan_to_num(basis, nan=-np.inf).max(axis=1) >= threshold  # the same forecasts without hysteresis

    def on_grid(per_origin: np.ndarray) -> np.ndarray:
        warn = np.zeros(len(cpu), dtype=bool)
        warn[origins] = per_origin
        return warn

    model = score_warnings(cpu, on_grid(states), events, threshold, horizon, lead_steps, period)
    lines = linear_forecasts(cpu, index, origins, horizon, period)
    linear = score_warnings(cpu, on_grid(np.nan_to_num(lines, nan=-np.inf).max(axis=1) >= threshold), events, threshold,
                            horizon, lead_steps, period)
    raw = score_warnings(cpu, on_grid(crossing), events, threshold, horizon, lead_steps, period)
    linear_alerts = score_warnings(cpu, on_grid(alert_states(lines, threshold, settings.alert_margin)), events, threshold,
                                   horizon, lead_steps, period)
    for scored in (model, raw, linear, linear_alerts):  # how much of the time a warning is open: an always-on warning would score well otherwise
        scored["origins"] = len(origins)
        scored["warning_share"] = scored["warning_steps"] / len(origins)
    used = sorted({c for c in champions if c})
    return {"name": name, "threshold": round(threshold, 3), "pooled": threshold >= MIN_POOLED_THRESHOLD, "champions": used,
            **model, "raw": raw, "linear": linear, "linear_alerts": linear_alerts}


def pool(series: list[dict], key: str | None = None) -> dict:
    """Pooled figures over the series whose threshold is at least 20 %."""
    parts = [s if key is None else s[key] for s in series if s["pooled"]]
    leads = [lead for p in parts for lead in p["leads"]]
    out = summarise_counts(sum(p["events"] for p in parts), leads, sum(p["episodes"] for p in parts), sum(p["right_episodes"] for p in parts))
    out["warning_share"] = sum(p["warning_steps"] for p in parts) / max(1, sum(p["origins"] for p in parts))
    return {k: v for k, v in out.items() if k != "leads"}


def _no_leads(scored: dict) -> dict:
    return {k: v for k, v in scored.items() if k != "leads"}


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(doc: dict) -> None:
    """Series × (alerts, linear): events, recall, precision, F1, median lead; then the pooled lines and the target."""
    print(f"\n{'series':38s} {'thr %':>6s} {'events':>6s} | {'recall':>6s} {'prec':>5s} {'F1':>5s} {'lead':>5s} {'open':>5s} | "
          f"{'recall':>6s} {'prec':>5s} {'F1':>5s} {'lead':>5s} {'open':>5s}   (alerts | linear)")
    for s in doc["series"]:
        lin = s["linear"]
        mark = "" if s["pooled"] else "  (not pooled: threshold < 20 %)"
        print(f"{s['name'][:38]:38s} {s['threshold']:6.1f} {s['events']:6d} | {_fmt(s['recall']):>6s} {_fmt(s['precision']):>5s} "
              f"{_fmt(s['f1']):>5s} {_fmt(s['median_lead_minutes'], '.0f'):>5s} {_fmt(s['warning_share']):>5s} | {_fmt(lin['recall']):>6s} "
              f"{_fmt(lin['precision']):>5s} {_fmt(lin['f1']):>5s} {_fmt(lin['median_lead_minutes'], '.0f'):>5s} {_fmt(lin['warning_share']):>5s}{mark}")
    for label, p in (("alerts (champion)", doc["pooled"]), ("champion, no hysteresis", doc["pooled_raw"]), ("linear rule", doc["pooled_linear"]),
                     ("linear, with hysteresis", doc["pooled_linear_alerts"])):
        print(f"pooled {label:23s}: {p['events']} events, recall {_fmt(p['recall'])}, precision {_fmt(p['precision'])} "
              f"({p['right_episodes']}/{p['episodes']} episodes), F1 {_fmt(p['f1'])}, median lead {_fmt(p['median_lead_minutes'], '.0f')} min, "
              f"warning open {100 * p['warning_share']:.1f} % of the time")
    p = doc["pooled"]
    met = p["f1"] is not None and p["precision"] is not None and p["f1"] >= 0.65 and p["precision"] >= 0.65
    print(f"target pooled F1 ≥ 0.65 with precision ≥ 0.65: {'met' if met else 'missed'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecasting.bench warning", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="folder of CSV (timestamp,value) or CloudWatch JSON exports")
    parser.add_argument("--lead", type=float, default=15.0, help="minutes ahead a warning must come to count (default 15)")
    parser.add_argument("--threshold-quantile", type=float, default=0.97, help="threshold = this quantile of the first 70 %%")
    parser.add_argument("--threshold", type=float, help="one CPU threshold for every series instead")
    parser.add_argument("--models", nargs="+", help="models to train (default: settings)")
    parser.add_argument("--alert-on", choices=["mean", "upper"], help="what opens an alert (default: settings, i.e. mean)")
    parser.add_argument("--retrain-every", type=float, default=2.0, help="days of replayed time between retrains (default 2, as bench accuracy)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not 0 < args.threshold_quantile < 1 or (args.threshold is not None and not 0 < args.threshold <= 100):
        print("bench warning: --threshold-quantile must be in (0, 1) and --threshold in (0, 100]", file=sys.stderr)
        return 2
    started = time.perf_counter()
    series = series_from(args.data_dir, "warning")
    if series is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="headroom-warning-") as tmp:
        overrides: dict = {"db": Path(tmp) / "bench.db"}
        if args.models:
            overrides["models"] = [m for part in args.models for m in part.split(",") if m]
        if args.alert_on:
            overrides["alert_on"] = args.alert_on
        settings = load_settings(**overrides)
        print(f"{len(series)} series, models {', '.join(settings.models)}, alert on {settings.alert_on}, margin {settings.alert_margin:g}, "
              f"lead ≥ {args.lead:g} min, horizon {settings.horizon}, retrain every {args.retrain_every:g} d", flush=True)
        results = []
        for k, (name, samples) in enumerate(series, 1):
            print(f"[{k}/{len(series)}] {name} ({time.perf_counter() - started:.0f} s so far)", flush=True)
            results.append(evaluate_series(name, samples, settings, args, lambda text: print(text, flush=True)))
    doc = {"lead_minutes": args.lead, "models": settings.models, "alert_on": settings.alert_on, "alert_margin": settings.alert_margin,
           "series": [{k: v for k, v in s.items() if k != "leads"} | {key: _no_leads(s[key]) for key in ("raw", "linear", "linear_alerts")} for s in results],
           "pooled": pool(results), "pooled_linear": pool(results, "linear"), "pooled_raw": pool(results, "raw"),
           "pooled_linear_alerts": pool(results, "linear_alerts")}
    print_table(doc)
    doc["seconds"] = round(time.perf_counter() - started, 1)
    print(f"total {doc['seconds'] / 60:.1f} min")
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
