"""Accuracy benchmark: replay real CPU traces through the worker's own training and forecasting.

    python -m forecasting.bench accuracy DATA_DIR [--horizon 12] [--models naive arima ...]
                                                  [--retrain-every 2] [--out results.json]

Protocol (fixed, so figures compare across runs): per series the evaluation window is the
last 30 % of the points, at most 6 days; forecast origins every 12 steps inside it; models are
trained by ``train_instance`` (inner backtest and champion choice included) at the window's start
and again every ``--retrain-every`` days of replayed time, each time on at most the
``train_days`` (14) before; between retrains every saved model forecasts from each origin using
only data up to it (bounds from each model's own calibration); MASE is scaled by the mean absolute one-day seasonal-naive error before the
window. ``auto`` is, at each origin, the forecast of the champion chosen at the latest retrain.
The ``fleet`` family is trained once, before the replays, on every series' rows before the
backtest split of that series' first retrain (:func:`fleet_model_before_evaluation`): it never
sees an evaluation window, nor any inner backtest window.

:func:`replay_series` is the reusable replay loop (``bench warning`` builds on it).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.backtest import mase_scale, score
from forecasting.clock import DAY
from forecasting.features import to_frame
from forecasting.models import BASELINES, FAMILIES, MODEL_NAMES
from forecasting.models.registry import load_model
from forecasting.settings import Settings, load_settings
from forecasting.sources.export import ExportError, read_export
from forecasting.training import train_instance

EVAL_SHARE = 0.30
EVAL_MAX_DAYS = 6.0
ORIGIN_EVERY = 12
Samples = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass
class SeriesReplay:
    """Everything one replayed series produced; arrays are [origins, horizon], NaN where a model had no forecast."""

    name: str
    points: int
    scale: float
    origin_ts: np.ndarray
    timestamps: np.ndarray
    actual: np.ndarray
    forecasts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # model → mean/lower/upper
    champions: list[str | None] = field(default_factory=list)  # per origin: the champion ``auto`` used
    retrains: list[dict] = field(default_factory=list)  # ts, champion, seconds, scores
    predict_seconds: dict[str, list[float]] = field(default_factory=dict)

    @property
    def auto(self) -> dict[str, np.ndarray]:
        """The forecasts of the champion of the latest retrain before each origin."""
        return self.forecasts["auto"]

    def metrics(self, model: str) -> dict[str, float | None]:
        """Scores of one model over every origin it forecast from, plus its mean fit/predict seconds."""
        f = self.forecasts[model]
        out = score(self.actual, f["mean"], f["lower"], f["upper"], self.scale)
        fits = [
            r["scores"][model]["fit_seconds"] for r in self.retrains if r["scores"].get(model, {}).get("fit_seconds") is not None
        ]
        if model == "auto":
            fits = [r["scores"][r["champion"]]["fit_seconds"] for r in self.retrains if r["champion"]]
        out["fit_seconds"] = float(np.mean(fits)) if fits else None
        seconds = self.predict_seconds.get(model, [])
        out["predict_seconds"] = float(np.mean(seconds)) if seconds else None
        return out


def evaluation_plan(rows: int, period: int, horizon: int) -> tuple[int, np.ndarray]:
    """First row of the evaluation window, and the origin rows (every 12 steps, full horizon inside)."""
    window = min(int(rows * EVAL_SHARE), int(EVAL_MAX_DAYS * DAY // period))
    start = rows - window
    return start, np.arange(start - 1, rows - horizon, ORIGIN_EVERY, dtype=np.int64)


def replay_series(
    name: str, samples: Samples, settings: Settings, retrain_every_days: float = 2.0, log: Callable[[str], None] = print
) -> SeriesReplay:
    """Replay one series with the benchmark protocol; ``settings.models_dir`` receives the saved models."""
    horizon, period = settings.horizon, settings.period
    frame = to_frame(samples, period)
    cpu = frame["cpu"].to_numpy(dtype=float)
    index = frame.index.to_numpy(dtype=np.int64)
    start, origins = evaluation_plan(len(frame), period, horizon)
    ahead = origins[:, None] + np.arange(1, horizon + 1)
    replay = SeriesReplay(
        name, len(samples["cpu"][0]), mase_scale(cpu[:start], DAY // period), index[origins], index[ahead], cpu[ahead]
    )
    shape = (len(origins), horizon)
    for model in [*settings.models, "auto"]:
        replay.forecasts[model] = {k: np.full(shape, np.nan) for k in ("mean", "lower", "upper")}
    # retrain points: the first origin, then the first origin at least retrain_every days later
    retrain_at, next_due = [], None
    for i, ts in enumerate(replay.origin_ts):
        if next_due is None or ts >= next_due:
            retrain_at.append(i)
            next_due = ts + retrain_every_days * DAY
    for k, first in enumerate(retrain_at):
        last = retrain_at[k + 1] if k + 1 < len(retrain_at) else len(origins)
        segment = np.arange(first, last)
        now = int(replay.origin_ts[first])
        seen = {m: (ts[ts <= now], v[ts <= now]) for m, (ts, v) in samples.items()}
        clock = time.perf_counter()
        result = train_instance(name, seen, settings, now)
        seconds = time.perf_counter() - clock
        scores = {s["model"]: s for s in result.scores}
        replay.retrains.append({"ts": now, "champion": result.champion, "seconds": seconds, "scores": scores})
        log(
            f"  retrain {k + 1}/{len(retrain_at)} at {time.strftime('%Y-%m-%d %H:%M', time.gmtime(now))}: "
            f"{seconds:.1f} s, rss {_rss_mb():.0f} MB, champion {result.champion}, "
            + ", ".join(f"{m} {s['mase']:.3f}" if s["mase"] is not None else f"{m} skipped" for m, s in scores.items())
        )
        model_dir = result.run["model_dir"]
        gc.collect()
        visible = frame.iloc[: int(origins[last - 1]) + 1]
        for model in settings.models:
            path = Path(model_dir) / model if model_dir else None
            if path is None or not path.is_dir():
                continue
            loaded = load_model(path)
            clock = time.perf_counter()
            mean, lower, upper = loaded.forecast_at(visible, origins[segment], horizon)
            replay.predict_seconds.setdefault(model, []).append((time.perf_counter() - clock) / len(segment))
            for key, values in (("mean", mean), ("lower", lower), ("upper", upper)):
                replay.forecasts[model][key][segment] = values
        replay.champions.extend([result.champion] * len(segment))
        if result.champion and result.champion in replay.predict_seconds:
            replay.predict_seconds.setdefault("auto", []).append(replay.predict_seconds[result.champion][-1])
        if result.champion:
            for key in ("mean", "lower", "upper"):
                replay.forecasts["auto"][key][segment] = replay.forecasts[result.champion][key][segment]
    return replay


def first_retrain_ts(samples: Samples, settings: Settings) -> int:
    """When ``replay_series`` first retrains this series: the first origin of its evaluation window."""
    frame = to_frame(samples, settings.period)
    _start, origins = evaluation_plan(len(frame), settings.period, settings.horizon)
    return int(frame.index[origins[0]]) if len(origins) else int(frame.index[-1])


def fleet_model_before_evaluation(series: list[tuple[str, Samples]], settings: Settings) -> Path | None:
    """Train the fleet model on each series up to its first retrain's backtest split (see ``forecasting.fleet_model``)."""
    from forecasting.fleet_model import train_fleet_model

    cutoffs = [(name, samples, first_retrain_ts(samples, settings)) for name, samples in series]
    return train_fleet_model(cutoffs, settings, min(now for _, _, now in cutoffs))


def _rss_mb() -> float:
    """Resident memory of this process now (Linux), to see where a long run grows."""
    try:
        with open("/proc/self/status") as status:
            return int(status.read().split("VmRSS:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        return float("nan")


def load_series(data_dir: Path) -> list[tuple[str, Samples]]:
    """Every series in the CSV (timestamp,value) and JSON export files of a folder, named by file (and instance)."""
    out = []
    for path in sorted(p for p in Path(data_dir).iterdir() if p.suffix.lower() in (".csv", ".json")):
        try:
            parsed = read_export(str(path), instance=path.stem)
        except ExportError as error:
            print(f"skipping {path.name}: {error}", file=sys.stderr)
            continue
        for iid in parsed.instances:
            out.append((path.stem if len(parsed.instances) == 1 else f"{path.stem}:{iid}", parsed.series[iid]))
    return out


def series_from(data_dir: Path, command: str) -> list[tuple[str, Samples]] | None:
    """The series of a benchmark's DATA_DIR, or None after one line on stderr saying why there are none."""
    if not data_dir.is_dir():
        print(f"bench {command}: {data_dir} is not a folder", file=sys.stderr)
        return None
    series = load_series(data_dir)
    if not series:
        print(f"bench {command}: no CSV or JSON series in {data_dir}", file=sys.stderr)
    return series or None


def summarise(replays: list[SeriesReplay], models: list[str]) -> dict:
    """The results document: per series per model metrics, the last champion, and per-model medians."""
    series: list[dict[str, Any]] = [
        {
            "name": r.name,
            "points": r.points,
            "models": {m: r.metrics(m) for m in models},
            "champion": r.retrains[-1]["champion"] if r.retrains else None,
        }
        for r in replays
    ]
    summary: dict[str, dict[str, float | None]] = {}
    for model in models:
        mases = [s["models"][model]["mase"] for s in series if s["models"][model]["mase"] is not None]
        relative = [
            s["models"][model]["mase"] / s["models"]["naive"]["mase"]
            for s in series
            if "naive" in s["models"] and s["models"][model]["mase"] is not None and s["models"]["naive"]["mase"]
        ]
        covers = [s["models"][model]["coverage"] for s in series if s["models"][model]["coverage"] is not None]
        summary[model] = {
            "median_mase": float(np.median(mases)) if mases else None,
            "median_relative_mase": float(np.median(relative)) if relative else None,
            "median_coverage": float(np.median(covers)) if covers else None,
        }
    return {"series": series, "summary": summary}


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(doc: dict, models: list[str]) -> None:
    """Series × model table, then one summary line per model and the target checks."""
    print(f"\n{'series':40s} {'model':15s} {'MASE':>7s} {'sMAPE':>7s} {'MAPE':>8s} {'cover':>6s} {'fit s':>7s}")
    for s in doc["series"]:
        for m in models:
            r = s["models"][m]
            print(
                f"{s['name'][:40]:40s} {m:15s} {_fmt(r['mase']):>7s} {_fmt(r['smape'], '.2f'):>7s} {_fmt(r['mape'], '.2f'):>8s} "
                f"{_fmt(None if r['coverage'] is None else 100 * r['coverage'], '.1f'):>6s} {_fmt(r['fit_seconds'], '.2f'):>7s}"
            )
    print()
    for m in models:
        sm = doc["summary"][m]
        cover = sm["median_coverage"]
        print(
            f"{m:15s} median MASE {_fmt(sm['median_mase'])}, relative to naive {_fmt(sm['median_relative_mase'])}, "
            f"median coverage {_fmt(None if cover is None else 100 * cover, '.1f')} %"
        )


def check_targets(doc: dict, models: list[str]) -> list[str]:
    """The accuracy targets (docs/benchmarks.md) as lines saying met / missed and by how much."""
    summary, lines = doc["summary"], []

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    auto, naive = summary.get("auto", {}), summary.get("naive", {})
    if auto.get("median_relative_mase") is not None:
        ratio = auto["median_relative_mase"]
        lines.append(f"median over series of auto ÷ naive MASE {ratio:.3f} (target ≤ 0.80): {verdict(ratio <= 0.80)}")
    if auto.get("median_mase") is not None and naive.get("median_mase"):
        a, n = auto["median_mase"], naive["median_mase"]
        lines.append(
            f"auto median MASE {a:.3f} vs 0.85 × naive's {n:.3f} = {0.85 * n:.3f}: {verdict(a <= 0.85 * n)} ({a / n:.3f} × naive)"
        )
    singles = {
        m: summary[m]["median_mase"]
        for m in models
        if m != "auto" and m in FAMILIES and not FAMILIES[m].combines and summary[m]["median_mase"] is not None
    }
    if auto.get("median_mase") is not None and singles:
        best = min(singles, key=singles.get)  # type: ignore[arg-type]
        lines.append(
            f"auto {auto['median_mase']:.3f} vs best single model ({best} {singles[best]:.3f}): "
            f"{verdict(auto['median_mase'] <= singles[best] + 1e-12)}"
        )
    fleet = summary.get("fleet", {}).get("median_mase")
    for rival in ("lstm", "tcn"):
        theirs = summary.get(rival, {}).get("median_mase")
        if fleet is not None and theirs is not None:
            lines.append(
                f"fleet median MASE {fleet:.3f} vs per-instance {rival} {theirs:.3f} (target ≤): {verdict(fleet <= theirs)}"
            )
    worst = []
    for s in doc["series"]:
        base = [s["models"][m]["mase"] for m in BASELINES if m in s["models"] and s["models"][m]["mase"] is not None]
        a = s["models"].get("auto", {}).get("mase")
        if base and a is not None:
            worst.append((a / min(base), s["name"]))
    if worst:
        ratio, name = max(worst)
        lines.append(f"auto vs best baseline per series: worst {ratio:.2f} × on {name} (target ≤ 1.05): {verdict(ratio <= 1.05)}")
    covers = [
        (s["models"]["auto"]["coverage"], s["name"])
        for s in doc["series"]
        if s["models"].get("auto", {}).get("coverage") is not None
    ]
    if covers:
        median = 100 * float(np.median([c for c, _ in covers]))
        low, name = min(covers)
        lines.append(
            f"auto coverage median {median:.1f} % (target 88–92 %): {verdict(88 <= median <= 92)}; "
            f"lowest {100 * low:.1f} % on {name} (target ≥ 80 %): {verdict(low >= 0.80)}"
        )
    seconds = [r for r in doc.get("retrain_seconds", [])]
    if seconds:
        median = float(np.median(seconds))
        lines.append(
            f"training one instance: median {median:.1f} s over {len(seconds)} retrains, range {min(seconds):.1f}–{max(seconds):.1f} s "
            f"(target ≤ 10 s): {verdict(median <= 10.0)}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecasting.bench accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="folder of CSV (timestamp,value) or CloudWatch JSON exports")
    parser.add_argument("--horizon", type=int, default=12, help="steps to forecast (default 12 = 1 h at 5 min)")
    parser.add_argument(
        "--models", nargs="+", default=None, help=f"models to run (default: settings; from {', '.join(MODEL_NAMES)})"
    )
    parser.add_argument("--retrain-every", type=float, default=2.0, help="days of replayed time between retrains (default 2)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    models = [m for part in (args.models or []) for m in part.split(",") if m]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    series = series_from(args.data_dir, "accuracy")
    if series is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="headroom-bench-") as tmp:
        overrides: dict = {"db": Path(tmp) / "bench.db", "horizon": args.horizon}
        if models:
            overrides["models"] = models
        settings = load_settings(**overrides)
        if "fleet" in settings.models:
            settings = settings.model_copy(update={"fleet_model": fleet_model_before_evaluation(series, settings)})
        print(
            f"{len(series)} series, models {', '.join(settings.models)}, horizon {settings.horizon}, "
            f"retrain every {args.retrain_every:g} d on ≤ {settings.train_days:g} d",
            flush=True,
        )
        replays = []
        for k, (name, samples) in enumerate(series, 1):
            print(f"[{k}/{len(series)}] {name} ({time.perf_counter() - started:.0f} s so far)", flush=True)
            replays.append(replay_series(name, samples, settings, args.retrain_every, log=lambda t: print(t, flush=True)))
    names = [*settings.models, "auto"]
    doc = {
        "horizon": settings.horizon,
        **summarise(replays, names),
        "retrain_seconds": [round(r["seconds"], 2) for replay in replays for r in replay.retrains],
    }
    print_table(doc, names)
    for line in check_targets(doc, names):
        print(line)
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total {elapsed / 60:.1f} min, peak memory {peak_mb:.0f} MB")
    doc["seconds"], doc["peak_memory_mb"] = round(elapsed, 1), round(peak_mb)
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
