"""The fleet model in the retrain cycle: learned once, never from an instance's backtest window, and the cold start."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from forecasting.fleet_model import WINDOWS_PER_INSTANCE, fit_fleet, fleet_dir, latest_fleet_model, learnable_rows
from forecasting.forecast import ModelCache, run_forecasts
from forecasting.retrain_pool import retrain_due
from forecasting.sources.demo import DemoSource
from tests.test_features import demo_samples
from tests.test_retrain_pool import NOW, P, fleet_store

MODELS = ["naive", "seasonal_naive", "linear", "fleet", "combined"]


def test_changing_an_instance_after_its_backtest_split_does_not_change_the_fleet_model(tmp_path: Path) -> None:
    from forecasting.settings import load_settings

    settings = load_settings(db=tmp_path / "h.db", backtest_days=1, train_days=4, history_days=4)
    samples = demo_samples(4, index=1, metrics=("cpu",))
    now = int(samples["cpu"][0][-1])
    _, split = learnable_rows(samples, settings, now)
    assert 0 < split < len(samples["cpu"][0])
    ts, cpu = samples["cpu"]
    wild = {"cpu": (ts, np.where(np.arange(len(cpu)) >= split, 99.0, cpu))}  # the backtest window replaced by a plateau
    honest, leaked = fit_fleet([("i-1", samples, now)], settings), fit_fleet([("i-1", wild, now)], settings)
    np.testing.assert_array_equal(honest.xtx, leaked.xtx)
    np.testing.assert_array_equal(honest.xty, leaked.xty)
    assert 0 < honest.rows <= WINDOWS_PER_INSTANCE


def test_memory_does_not_grow_with_the_fleet(tmp_path: Path) -> None:
    from forecasting.settings import load_settings

    settings = load_settings(db=tmp_path / "h.db")
    series = ((f"i-{k}", demo_samples(3, index=k % 6, metrics=("cpu",)), NOW) for k in range(40))  # read lazily, one by one
    equations = fit_fleet(((i, s, int(s["cpu"][0][-1])) for i, s, _ in series), settings)
    assert equations.instances == 40 and equations.rows <= 40 * WINDOWS_PER_INSTANCE
    assert equations.xtx.nbytes + equations.xty.nbytes < 20_000  # what is kept is the normal equations, not the windows


def test_an_instance_with_six_hours_of_history_gets_a_fleet_forecast_in_the_next_cycle(tmp_path: Path, clean_env: Path) -> None:
    settings, store = fleet_store(tmp_path, instances=4, models=MODELS, workers=1)
    # a newcomer appears with six hours of CPU only (a shape the demo gives another instance)
    stamps = NOW - P * np.arange(72)[::-1]
    cpu = DemoSource(count=6, seed=7, anchor=NOW - 86_400, period=P).values(5, "cpu", stamps)
    store.samples.upsert_instance("i-newcomer", "newcomer", 80.0, NOW)
    store.samples.upsert(("i-newcomer", "cpu", int(t), float(v)) for t, v in zip(stamps, cpu, strict=False))

    report = retrain_due(store, settings, NOW)
    assert report.due == 5 and not report.failed, report.summary()
    fleet_models = [p for p in fleet_dir(settings).iterdir() if p.is_dir()]
    assert len(fleet_models) == 1  # trained once for the whole pass, not per instance
    assert json.loads((fleet_models[0] / "meta.json").read_text())["instances"] >= 4
    run = store.runs.latest()["i-newcomer"]
    scores = {s.model: s for s in store.runs.scores(run_id=run.run_id)}
    assert scores["fleet"].status == "ok" and scores["fleet"].mase is not None
    assert scores["seasonal_naive"].status == "skipped"  # a day-ago value does not exist yet
    assert run.champion is not None

    made = run_forecasts(store, settings, NOW, cache=ModelCache())
    assert not made.errors
    newcomer = {f.model: f for f in store.forecasts.latest("i-newcomer", champion_only=False)}
    assert "fleet" in newcomer and len(newcomer["fleet"].mean) == settings.horizon
    assert all(0 <= v <= 100 for v in newcomer["fleet"].mean) and newcomer["fleet"].timestamps[0] == NOW + P
    assert store.forecasts.latest("i-newcomer")[0].model == run.champion  # and the deployed one forecasts too

    # the next pass, with nothing due, keeps the fleet model; a later one (retrain_every hours on) replaces it
    assert retrain_due(store, settings, NOW + P).due == 0
    later = NOW + int(settings.retrain_every * 3600)
    retrain_due(store, settings, later)
    assert latest_fleet_model(settings)[1] == later
