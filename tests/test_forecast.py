"""run_forecasts: saved models of the latest runs forecast every instance; one champion each; failures isolated."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from forecasting.forecast import ModelCache, fallback_order, run_forecasts
from forecasting.settings import load_settings
from forecasting.store import Score, Store
from forecasting.training import train_instance
from tests.test_features import PERIOD, demo_samples

MODELS = ["naive", "seasonal_naive", "linear", "arima"]
INSTANCES = {"i-0de00000000000000": 0, "i-0de00000000000003": 3, "i-0de00000000000004": 4}  # web, db, cache (no memory)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three demo instances (1.7 days each) trained once: their samples and training results."""
    root = tmp_path_factory.mktemp("trained")
    settings = load_settings(db=root / "h.db", models=MODELS, backtest_days=0.5)
    out = {}
    for iid, index in INSTANCES.items():
        samples = demo_samples(1.7, index=index)
        out[iid] = (samples, train_instance(iid, samples, settings, int(samples["cpu"][0][-1])))
    return settings.models_dir, out


@pytest.fixture()
def trained_store(trained, tmp_path):
    """A fresh real store holding those samples and runs, with its own copy of the model files."""
    models_dir, results = trained
    settings = load_settings(db=tmp_path / "h.db", models=MODELS, backtest_days=0.5)
    shutil.copytree(models_dir, settings.models_dir)
    store = Store(settings.db)
    now = 0
    for iid, (samples, result) in results.items():
        now = int(samples["cpu"][0][-1])
        store.samples.upsert_instance(iid, None, 80.0, now)
        store.samples.upsert((iid, m, int(t), float(v)) for m, (ts, vs) in samples.items() for t, v in zip(ts, vs, strict=True))
        run = {**result.run, "model_dir": result.run["model_dir"].replace(str(models_dir), str(settings.models_dir))}
        store.runs.record(run, result.scores, result.backtest)
    yield settings, store, now
    store.close()


def test_every_saved_model_forecasts_and_one_champion_per_instance(trained_store) -> None:
    settings, store, now = trained_store
    report = run_forecasts(store, settings, now + 60, cache=ModelCache())
    assert report.instances == 3 and report.forecasts == 3 * len(MODELS) and not report.errors
    rows = store.forecasts.latest(champion_only=False)
    assert {(r.instance_id, r.model) for r in rows} == {(i, m) for i in INSTANCES for m in MODELS}
    runs = store.runs.latest()
    for iid in INSTANCES:
        champions = [r for r in rows if r.instance_id == iid and r.is_champion]
        assert len(champions) == 1 and champions[0].model == runs[iid].champion
    for r in rows:
        assert r.origin_ts == now and r.made_at == now + 60 and r.run_id == runs[r.instance_id].run_id
        assert len(r.timestamps) == settings.horizon and r.timestamps[0] == now + PERIOD
        assert all(lo <= m <= hi for lo, m, hi in zip(r.lower, r.mean, r.upper, strict=True))
        assert np.isfinite(r.mean).all()
    assert f"{report.forecasts} forecasts for 3 instances" in report.summary()


def test_forecasts_follow_new_samples_without_retraining(trained_store) -> None:
    settings, store, now = trained_store
    cache = ModelCache()
    run_forecasts(store, settings, now, cache=cache)
    store.samples.upsert([("i-0de00000000000000", "cpu", now + PERIOD, 99.0)])
    run_forecasts(store, settings, now + PERIOD, cache=cache)
    latest = {f.model: f for f in store.forecasts.latest("i-0de00000000000000", champion_only=False)}
    assert latest["naive"].origin_ts == now + PERIOD and latest["naive"].mean[0] == 99.0
    assert len(store.runs.latest()) == 3  # nothing was trained on this path


def test_a_missing_model_is_skipped_and_the_others_still_forecast(trained_store) -> None:
    settings, store, now = trained_store
    runs = store.runs.latest()
    shutil.rmtree(f"{runs['i-0de00000000000003'].model_dir}/linear")
    (settings.models_dir / "broken").mkdir()
    (f := settings.models_dir / "broken" / "meta.json").write_text("{not json")
    shutil.copytree(f.parent, f"{runs['i-0de00000000000004'].model_dir}/broken")
    report = run_forecasts(store, settings, now, cache=ModelCache())
    assert report.forecasts == 3 * len(MODELS) - 1 and not report.errors
    assert any("broken" in s for s in report.skipped)
    models = {f.model for f in store.forecasts.latest("i-0de00000000000003", champion_only=False)}
    assert models == set(MODELS) - {"linear"}


def test_an_instance_without_a_model_directory_is_reported_not_fatal(trained_store) -> None:
    settings, store, now = trained_store
    store.runs.record(
        {
            "instance_id": "i-new",
            "started_at": now,
            "finished_at": now,
            "train_start": None,
            "train_end": None,
            "points": 0,
            "champion": None,
            "model_dir": None,
        },
        [],
        [],
    )
    run = store.runs.latest()["i-0de00000000000000"]
    shutil.rmtree(run.model_dir)
    report = run_forecasts(store, settings, now, cache=ModelCache())
    assert report.no_model == ["i-new"]  # never trained: nothing to stand in for
    assert report.forecasts == 2 * len(MODELS) + 1  # the instance whose files vanished: a naive baseline stands in
    champion = store.forecasts.latest("i-0de00000000000000")[0]
    assert champion.model == "naive" and champion.made_at == now
    assert store.jobs.retrain_requests() == {"i-0de00000000000000"}
    assert "without a trained model" in report.summary() and "stand-in" in report.summary()


def garble(model_dir: str, model: str) -> None:
    """Overwrite a saved model's files with bytes that are no model."""
    for path in Path(model_dir, model).iterdir():
        path.write_bytes(b"\x00garbled\xff" * 10)


def test_an_unloadable_champion_is_replaced_by_the_next_best_model_and_queued_for_retraining(trained_store) -> None:
    settings, store, now = trained_store
    iid = "i-0de00000000000003"
    run = store.runs.latest()[iid]
    run_forecasts(store, settings, now, cache=ModelCache())
    before = store.forecasts.latest(iid)[0]
    assert before.model == run.champion
    garble(run.model_dir, run.champion)
    report = run_forecasts(store, settings, now + 300, cache=ModelCache())
    ranked = sorted(
        (s for s in store.runs.scores(run_id=run.run_id) if s.model != run.champion and s.status == "ok"), key=lambda s: s.mase
    )
    after = store.forecasts.latest(iid)[0]
    assert after.made_at == now + 300 and after.forecast_id != before.forecast_id  # /predictions moves on
    assert after.model == ranked[0].model  # the run's next best model by backtest MASE stands in
    assert report.fallbacks == [f"{iid}: champion {run.champion} unusable, forecast with {ranked[0].model}"]
    assert store.jobs.retrain_requests() == {iid} and report.problems()
    assert {f.instance_id for f in store.forecasts.latest()} == set(INSTANCES)  # the others are untouched


def test_fallback_order_ranks_by_mase_then_naive() -> None:
    def score(model: str, status: str, mase: float | None) -> Score:
        return Score(1, "i-a", model, status, None, None, None, mase, None, None, None, None)

    scores = [
        score("combined", "ok", 0.5),
        score("lstm", "ok", 0.9),
        score("arima", "ok", 0.7),
        score("tcn", "skipped", None),
        score("linear", "ok", None),
    ]
    assert fallback_order("combined", scores) == ["arima", "lstm", "linear", "naive"]
    assert fallback_order("arima", [score("naive", "ok", 2.0)]) == ["naive"]


def test_stop_ends_the_cycle_between_instances(trained_store) -> None:
    settings, store, now = trained_store
    stop = threading.Event()
    stop.set()
    report = run_forecasts(store, settings, now, stop=stop, cache=ModelCache())
    assert report.forecasts == 0 and store.forecasts.latest() == []


def test_the_cache_loads_each_run_once_and_drops_old_runs(trained_store) -> None:
    settings, store, now = trained_store
    cache = ModelCache()
    run_forecasts(store, settings, now, cache=cache)
    run_dir = store.runs.latest()["i-0de00000000000000"].model_dir
    first, _ = cache.models(run_dir)
    again, _ = cache.models(run_dir)
    assert first is again
    cache.keep_only(set())
    assert cache.models(run_dir)[0] is not first
