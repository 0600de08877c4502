"""Early-warning benchmark: replay real CPU traces as if live and score every warning rule against real overloads.

    python -m forecasting.bench warning DATA_DIR [--lead 15] [--threshold-quantile 0.97] [--threshold T]
                                                 [--models naive arima ...] [--alert-on mean|upper] [--out FILE]

One definition, so figures compare across runs (the same as DESIGN.md's section 5):

* threshold per series: the ``--threshold-quantile`` (0.97) quantile of its first 70 % (or ``--threshold``);
* evaluation window and retraining cadence: those of ``bench accuracy`` (the last 30 %, at most
  6 days; ``train_instance`` at the window's start and every ``--retrain-every`` (2) days on at
  most the 14 days before), replayed step by step: at every 5-minute cycle each rule forecasts
  the next hour from the data up to that cycle;
* the rules: ``headroom`` (the deployed champion's forecast, read as Headroom's alerts read it:
  ``--alert-on`` / ``HEADROOM_ALERT_ON``, by default ``likely``), ``linear`` (Prometheus' ``predict_linear``: the
  least-squares line through the last hour) and ``last_value`` (the last value, i.e. CPU is over
  the threshold now). Every rule goes through the same ``alerts.AlertPolicy`` as Headroom's real
  alerts: it opens when its forecast peak (or CPU now, where higher, as the alerts read it)
  reaches the threshold, holds while that stays within the margin, clears after
  ``CLEAR_CYCLES`` cycles below, and a reopening within one horizon continues the same episode;
* an event is an upward crossing of the threshold inside the window; a crossing less than 30 min
  after the previous one merges into it;
* an event is caught when a warning was open at some cycle between one horizon and ``--lead``
  minutes before it; its lead is measured from the earliest such cycle;
* an episode runs from the cycle a warning opens to the cycle it clears; it is false when no
  event begins between its opening and one horizon after it clears; precision = right episodes ÷
  episodes, false warnings per instance-day = false episodes ÷ days evaluated, false-warning time
  share = cycles inside false episodes ÷ cycles evaluated (an always-open warning has perfect
  recall, so recall is only read beside these two);
* series whose threshold is under 20 % CPU are left out of the pooled figures.
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
from types import SimpleNamespace

import numpy as np
import pandas as pd

from forecasting.alerts import CLEAR_CYCLES, AlertPolicy
from forecasting.bench.accuracy import evaluation_plan, series_from
from forecasting.clock import DAY
from forecasting.crossing import BASES, basis_series, with_cpu_now
from forecasting.features import to_frame
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


def score_rule(
    states: np.ndarray, origins: np.ndarray, events: list[int], policy: AlertPolicy, horizon: int, lead_steps: int, period: int
) -> dict:
    """Recall at the lead, leads, episodes (right and false), precision, false warnings per day and time shares.

    ``states`` says, per cycle (one per row of ``origins``, consecutive grid rows), whether the
    rule's warning is open after that cycle.
    """
    first_row = int(origins[0])
    leads = []
    for e in events:  # open at some cycle in [e − horizon, e − lead]
        low, high = max(first_row, e - horizon), e - lead_steps
        window = states[max(0, low - first_row) : max(0, high - first_row + 1)]
        if window.any():
            leads.append((e - low - int(np.argmax(window))) * period / 60)
    runs = [(first_row + a, first_row + b) for a, b in policy.episodes(states)]
    starts = np.asarray(events, dtype=np.int64)
    false_runs = [(a, b) for a, b in runs if not np.any((starts >= a) & (starts <= b + horizon))]
    cycles = len(origins)
    out = summarise_counts(len(events), leads, len(runs), len(runs) - len(false_runs))
    return out | {
        "cycles": cycles,
        "days": cycles * period / DAY,
        "false_episodes": len(false_runs),
        "warning_steps": int(states.sum()),
        "false_steps": int(sum(b - a + 1 for a, b in false_runs)),
        "false_per_day": len(false_runs) / (cycles * period / DAY),
        "warning_share": float(states.mean()),
        "false_share": sum(b - a + 1 for a, b in false_runs) / cycles,
    }


def summarise_counts(events: int, leads: list[float], episode_count: int, right: int) -> dict:
    """Recall, precision, F1 and median lead from the counts (None where undefined)."""
    recall = len(leads) / events if events else None
    precision = right / episode_count if episode_count else None
    f1 = (
        2 * recall * precision / (recall + precision)
        if recall and precision
        else (0.0 if recall is not None and precision is not None else None)
    )
    return {
        "events": events,
        "caught": len(leads),
        "episodes": episode_count,
        "right_episodes": right,
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "median_lead_minutes": float(np.median(leads)) if leads else None,
        "leads": leads,
    }


def linear_forecasts(cpu: np.ndarray, index: np.ndarray, origins: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """Per origin, the last hour's least-squares line over the horizon (``predict_linear``) [origins, horizon]."""
    out = np.full((len(origins), horizon), np.nan)
    series = pd.Series(cpu, index=index)
    for k, o in enumerate(origins):
        recent = series.iloc[max(0, o - 3600 // period + 1) : o + 1]
        if recent.notna().any():
            out[k] = np.clip(linear_extrapolation(recent, horizon, period), 0.0, 100.0)
    return out


def last_values(cpu: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """Per origin, the last CPU value seen up to it (NaN before the first)."""
    return pd.Series(cpu).ffill().to_numpy()[origins]


# ---- the replay ---------------------------------------------------------------
def replay_champion(
    name: str, samples: Samples, settings: Settings, origins: np.ndarray, retrain_every_days: float, log: Callable[[str], None]
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
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
        log(
            f"  retrain {n + 1}/{len(starts)} at {time.strftime('%Y-%m-%d %H:%M', time.gmtime(now))}: "
            f"{time.perf_counter() - clock:.1f} s, champion {result.champion}"
        )
        if not result.champion or not result.run["model_dir"]:
            continue
        model = load_model(Path(result.run["model_dir"]) / result.champion)
        rows = origins[first:last]
        mean[first:last], _, upper[first:last] = model.forecast_at(frame.iloc[: int(rows[-1]) + 1], rows, horizon)
        champions[first:last] = [result.champion] * (last - first)
    return mean, upper, champions


RULES = ("headroom", "linear", "last_value")


def evaluate_series(
    name: str, samples: Samples, settings: Settings, args: argparse.Namespace, log: Callable[[str], None]
) -> dict:
    """Threshold, events, and every rule's warnings through the shared alert policy, scored."""
    horizon, period = settings.horizon, settings.period
    frame = to_frame(samples, period)
    cpu, index = frame["cpu"].to_numpy(dtype=float), frame.index.to_numpy(dtype=np.int64)
    start, _ = evaluation_plan(len(frame), period, horizon)
    origins = np.arange(start - 1, len(frame) - 1, dtype=np.int64)
    threshold = args.threshold if args.threshold is not None else series_threshold(cpu, args.threshold_quantile)
    events = overload_events(cpu, start, threshold, period)
    lead_steps = int(np.ceil(args.lead * 60 / period))
    mean, upper, champions = replay_champion(name, samples, settings, origins, args.retrain_every, log)
    policy = AlertPolicy(threshold, settings.alert_margin, grace_cycles=horizon)
    cpu_now = last_values(cpu, origins)
    peaks = {
        "headroom": with_cpu_now(
            _peaks(basis_series(SimpleNamespace(mean=mean, upper=upper), BASES[settings.alert_on][-1])),  # type: ignore[arg-type]
            cpu_now,
        ),
        "linear": with_cpu_now(_peaks(linear_forecasts(cpu, index, origins, horizon, period)), cpu_now),
        "last_value": cpu_now,
    }
    scored = {
        rule: score_rule(policy.states(peaks[rule]), origins, events, policy, horizon, lead_steps, period) for rule in RULES
    }
    used = sorted({c for c in champions if c})
    return {
        "name": name,
        "threshold": round(threshold, 3),
        "pooled": threshold >= MIN_POOLED_THRESHOLD,
        "champions": used,
        **scored["headroom"],
        "linear": scored["linear"],
        "last_value": scored["last_value"],
    }


def _peaks(forecasts: np.ndarray) -> np.ndarray:
    """Each cycle's forecast peak (NaN where a cycle had no forecast)."""
    finite = np.isfinite(forecasts).any(axis=1)
    return np.where(finite, np.nanmax(np.where(np.isfinite(forecasts), forecasts, -np.inf), axis=1), np.nan)


def pool(series: list[dict], key: str | None = None) -> dict:
    """Pooled figures over the series whose threshold is at least 20 %."""
    parts = [s if key is None else s[key] for s in series if s["pooled"]]
    leads = [lead for p in parts for lead in p["leads"]]
    out = summarise_counts(
        sum(p["events"] for p in parts), leads, sum(p["episodes"] for p in parts), sum(p["right_episodes"] for p in parts)
    )
    cycles, days = max(1, sum(p["cycles"] for p in parts)), sum(p["days"] for p in parts)
    out |= {
        "false_episodes": sum(p["false_episodes"] for p in parts),
        "days": days,
        "false_per_day": sum(p["false_episodes"] for p in parts) / days if days else None,
        "warning_share": sum(p["warning_steps"] for p in parts) / cycles,
        "false_share": sum(p["false_steps"] for p in parts) / cycles,
    }
    return {k: v for k, v in out.items() if k != "leads"}


def leave_one_out_f1(series: list[dict], key: str | None = None) -> dict[str, float | str | None]:
    """Pooled F1 with each pooled series left out in turn: its lowest and highest, and the series whose absence moves it most.

    A pooled figure can rest on one series that holds most of the events; this says how far
    it moves without any single one, so a result that holds only on one trace shows itself.
    """
    names = [s["name"] for s in series if s["pooled"]]
    whole = pool(series, key)["f1"]
    scores = {name: pool([s for s in series if s["name"] != name], key)["f1"] for name in names} if len(names) > 1 else {}
    known = {name: f1 for name, f1 in scores.items() if f1 is not None}
    if not known or whole is None:
        return {"low": None, "high": None, "most_moved_by": None}
    return {
        "low": min(known.values()),
        "high": max(known.values()),
        "most_moved_by": max(known, key=lambda name: abs(known[name] - whole)),
    }


def _no_leads(scored: dict) -> dict:
    return {k: v for k, v in scored.items() if k != "leads"}


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _cells(p: dict) -> str:
    return (
        f"{_fmt(p['recall']):>6s} {_fmt(p['precision']):>5s} {_fmt(p['f1']):>5s} {_fmt(p['median_lead_minutes'], '.0f'):>5s} "
        f"{_fmt(p['false_per_day']):>5s} {_fmt(100 * p['warning_share'], '.1f'):>5s} {_fmt(100 * p['false_share'], '.1f'):>5s}"
    )


def print_table(doc: dict) -> None:
    """Series × rule: recall, precision, F1, median lead, false warnings per day, open and false-open time; pooled; targets."""
    head = f"{'recall':>6s} {'prec':>5s} {'F1':>5s} {'lead':>5s} {'FP/d':>5s} {'open%':>5s} {'fals%':>5s}"
    print(f"\n{'series':34s} {'thr %':>6s} {'events':>6s} | {head} | {head}   (headroom | linear)")
    for s in doc["series"]:
        mark = "" if s["pooled"] else "  (not pooled: threshold < 20 %)"
        print(f"{s['name'][:34]:34s} {s['threshold']:6.1f} {s['events']:6d} | {_cells(s)} | {_cells(s['linear'])}{mark}")
    print(f"\n{'pooled':34s} {'':6s} {'events':>6s} | {head}")
    for label, key in (
        ("headroom (alerts)", "pooled"),
        ("linear (predict_linear)", "pooled_linear"),
        ("last value", "pooled_last_value"),
    ):
        p = doc[key]
        print(f"{label:34s} {'':6s} {p['events']:6d} | {_cells(p)}   ({p['right_episodes']}/{p['episodes']} episodes right)")
    for rule, spread in doc.get("leave_one_out_f1", {}).items():
        if spread["low"] is not None:
            print(
                f"pooled F1 of {rule} with one series left out: {spread['low']:.2f}–{spread['high']:.2f} "
                f"(moved most by leaving out {spread['most_moved_by']})"
            )
    for line in check_targets(doc):
        print(line)


def check_targets(doc: dict) -> list[str]:
    """The warning targets as lines saying met / missed."""
    ours, linear = doc["pooled"], doc["pooled_linear"]
    if ours["f1"] is None or linear["f1"] is None:
        return ["targets: no pooled events to score"]
    lines = [
        f"headroom F1 {ours['f1']:.3f} (target ≥ 0.80): {'met' if ours['f1'] >= 0.80 else 'missed'}",
        f"headroom F1 − linear F1 = {ours['f1'] - linear['f1']:+.3f} (target ≥ +0.10): {'met' if ours['f1'] >= linear['f1'] + 0.10 else 'missed'}",
    ]
    for key, label in (
        ("false_per_day", "false warnings per instance-day"),
        ("false_share", "share of time under a false warning"),
    ):
        lines.append(
            f"{label}: headroom {ours[key]:.3f} vs linear {linear[key]:.3f} (target ≤): {'met' if ours[key] <= linear[key] + 1e-12 else 'missed'}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecasting.bench warning", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="folder of CSV (timestamp,value) or CloudWatch JSON exports")
    parser.add_argument("--lead", type=float, default=15.0, help="minutes ahead a warning must come to count (default 15)")
    parser.add_argument("--threshold-quantile", type=float, default=0.97, help="threshold = this quantile of the first 70 %%")
    parser.add_argument("--threshold", type=float, help="one CPU threshold for every series instead")
    parser.add_argument("--models", nargs="+", help="models to train (default: settings)")
    parser.add_argument("--alert-on", choices=list(BASES), help="what opens an alert (default: settings, i.e. likely)")
    parser.add_argument(
        "--retrain-every", type=float, default=2.0, help="days of replayed time between retrains (default 2, as bench accuracy)"
    )
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
        print(
            f"{len(series)} series, models {', '.join(settings.models)}, alert on {settings.alert_on}, margin {settings.alert_margin:g}, "
            f"lead ≥ {args.lead:g} min, horizon {settings.horizon}, retrain every {args.retrain_every:g} d",
            flush=True,
        )
        results = []
        for k, (name, samples) in enumerate(series, 1):
            print(f"[{k}/{len(series)}] {name} ({time.perf_counter() - started:.0f} s so far)", flush=True)
            results.append(evaluate_series(name, samples, settings, args, lambda text: print(text, flush=True)))
    doc = {
        "lead_minutes": args.lead,
        "models": settings.models,
        "alert_on": settings.alert_on,
        "alert_margin": settings.alert_margin,
        "clear_cycles": CLEAR_CYCLES,
        "series": [
            {k: v for k, v in s.items() if k != "leads"} | {key: _no_leads(s[key]) for key in ("linear", "last_value")}
            for s in results
        ],
        "pooled": pool(results),
        "pooled_linear": pool(results, "linear"),
        "pooled_last_value": pool(results, "last_value"),
        "leave_one_out_f1": {"headroom": leave_one_out_f1(results), "linear": leave_one_out_f1(results, "linear")},
    }
    print_table(doc)
    doc["seconds"] = round(time.perf_counter() - started, 1)
    print(f"total {doc['seconds'] / 60:.1f} min")
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
