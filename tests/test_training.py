"""train_instance / validate_samples / predict_samples: real fits, saved runs, hard inputs, no NaN anywhere."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from forecasting.clock import DAY
from forecasting.ids import folder_name
from forecasting.models.registry import load_model
from forecasting.settings import load_settings
from forecasting.store import Store
from forecasting.training import (
    KEEP_RUNS,
    TrainingResult,
    predict_samples,
    prepare_frame,
    train_instance,
    validate_samples,
)
from tests.test_features import PERIOD, START, demo_samples

FAST = ["naive", "seasonal_naive", "linear", "arima"]


def settings_for(tmp_path, models=FAST, **extra):
    return load_settings(db=tmp_path / "h.db", models=models, backtest_days=1, **extra)


def assert_no_nan(result: TrainingResult) -> None:
    for row in result.scores:
        for key, value in row.items():
            assert not (isinstance(value, float) and math.isnan(value)), f"{row['model']}.{key} is NaN"
    for row in result.backtest:
        assert all(np.isfinite(v) for v in row[1:])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    settings = settings_for(tmp)
    samples = demo_samples(2.5, index=1)
    now = int(samples["cpu"][0][-1])
    messages = []
    result = train_instance("i-0de00000000000001", samples, settings, now, progress=lambda m, f: messages.append((m, f)))
    return settings, samples, result, messages


def test_train_instance_scores_every_model_and_saves_them(trained) -> None:
    settings, _samples, result, _ = trained
    assert [s["model"] for s in result.scores] == FAST
    assert all(s["status"] == "ok" and s["mase"] > 0 for s in result.scores)
    ok = {s["model"]: s["mase"] for s in result.scores}
    assert result.champion == min(ok, key=ok.get)
    assert_no_nan(result)
    run_dir = settings.models_dir / folder_name("i-0de00000000000001")
    assert result.run["model_dir"].startswith(str(run_dir))
    assert sorted(p.name for p in (run_dir / result.run["model_dir"].split("/")[-1]).iterdir()) == sorted(FAST)
    assert not list(run_dir.glob(".*.tmp"))  # the temporary directory was renamed into place


def test_saved_models_carry_calibrated_intervals_that_widen(trained) -> None:
    _, _, result, _ = trained
    model = load_model(f"{result.run['model_dir']}/arima")
    width = model.calibration.offsets[:, 1] - model.calibration.offsets[:, 0]
    assert (np.diff(width) >= 0).all() and width[-1] > 0
    forecast = model.predict(12)
    assert (forecast.lower <= forecast.mean).all() and (forecast.mean <= forecast.upper).all()


def test_each_model_is_fitted_once_and_deployed_as_backtested(tmp_path, monkeypatch) -> None:
    from forecasting.models.arima import ArimaModel

    fits: list[int] = []
    real_fit = ArimaModel.fit
    monkeypatch.setattr(ArimaModel, "fit", lambda self, frame: (fits.append(int(frame.index[-1])), real_fit(self, frame))[1])
    settings = settings_for(tmp_path, models=["naive", "arima"])
    samples = demo_samples(2.5, index=1)
    result = train_instance("i-once", samples, settings, int(samples["cpu"][0][-1]))
    assert len(fits) == 1  # one fit, on the rows before the backtest window; no refit on all data
    saved = load_model(f"{result.run['model_dir']}/arima")
    assert saved.state()["params"] is not None and fits[0] < result.run["train_end"] - DAY + 1  # the backtested fit was saved


def test_result_goes_straight_into_the_store(trained, tmp_path) -> None:
    _, samples, result, _ = trained
    with Store(tmp_path / "s.db") as store:
        run_id = store.runs.record(result.run, result.scores, result.backtest)
        run = store.runs.latest()["i-0de00000000000001"]
        assert run.run_id == run_id and run.champion == result.champion
        assert run.points == len(samples["cpu"][0])
        assert len(store.runs.scores(run_id=run_id)) == len(FAST)
        naive = [p for p in store.runs.backtest_points(run_id) if p.model == "naive"]
        assert len(naive) == len([r for r in result.backtest if r[0] == "naive"])


def test_progress_is_reported_in_order_up_to_done(trained) -> None:
    *_, messages = trained
    fractions = [f for _, f in messages]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any("arima" in m for m, _ in messages) and messages[-1][0].startswith("done")


def test_under_two_days_only_baselines_and_arima_run(tmp_path) -> None:
    settings = settings_for(tmp_path, models=["naive", "arima", "lstm", "tcn"])
    samples = demo_samples(1.2, index=0)
    result = train_instance("i-short", samples, settings, int(samples["cpu"][0][-1]))
    status = {s["model"]: (s["status"], s["reason"]) for s in result.scores}
    assert status["naive"][0] == "ok" and status["arima"][0] == "ok"
    assert status["lstm"][0] == "skipped" and "needs 2 days" in status["lstm"][1]
    assert result.champion in ("naive", "arima")
    assert_no_nan(result)


def test_samples_after_now_are_never_used(tmp_path) -> None:
    settings = settings_for(tmp_path, models=["naive"])
    samples = demo_samples(2, index=2)
    now = int(samples["cpu"][0][-100])
    result = train_instance("i-now", samples, settings, now)
    assert result.run["train_end"] == now


def test_a_metric_switched_off_stops_feeding_the_models_at_once() -> None:
    samples = demo_samples(2, index=0)
    assert {"memory", "network_in"} <= set(samples)  # the demo instance has every input
    every = prepare_frame(samples, PERIOD, 14)
    only_network = prepare_frame(samples, PERIOD, 14, metrics=["network_in", "network_out"])
    assert "memory" in every.columns and "memory" not in only_network.columns
    assert "network_in" in only_network.columns and only_network["cpu"].equals(every["cpu"])


# ---- hard inputs -------------------------------------------------------------------------------
def _cpu(values: np.ndarray) -> dict:
    return {"cpu": (START + PERIOD * np.arange(len(values), dtype=np.int64), np.asarray(values, dtype=float))}


def test_a_constant_series_skips_arima_with_a_reason_and_still_has_a_champion(tmp_path) -> None:
    result = train_instance("i-flat", _cpu(np.full(700, 12.5)), settings_for(tmp_path), START + 700 * PERIOD)
    status = {s["model"]: s for s in result.scores}
    assert status["arima"]["status"] == "skipped" and "constant" in status["arima"]["reason"]
    assert result.champion == "naive" and status["naive"]["mase"] == 0.0
    assert_no_nan(result)


def test_a_gappy_out_of_range_series_trains_without_nan(tmp_path) -> None:
    rng = np.random.default_rng(0)
    values = 50 + 80 * rng.standard_normal(900)  # far outside 0–100: clipped
    keep = rng.random(900) > 0.5  # half the points missing, long holes included
    keep[300:420] = False
    samples = {"cpu": (START + PERIOD * np.flatnonzero(keep), values[keep])}
    result = train_instance("i-gappy", samples, settings_for(tmp_path), START + 900 * PERIOD)
    assert result.champion is not None
    assert_no_nan(result)
    assert all(0 <= r[3] <= 100 for r in result.backtest)  # actuals were clipped to the CPU range


@pytest.mark.parametrize("values", [np.array([]), np.array([5.0, 6.0, 7.0]), np.array([np.nan] * 20)])
def test_too_little_data_gives_no_champion_and_no_files(tmp_path, values) -> None:
    samples = _cpu(values) if len(values) else {"cpu": (np.empty(0, np.int64), np.empty(0))}
    result = train_instance("i-tiny", samples, settings_for(tmp_path), START + DAY)
    assert result.champion is None and result.run["model_dir"] is None
    assert all(s["status"] == "skipped" and s["reason"] for s in result.scores)
    assert not (tmp_path / "models" / folder_name("i-tiny")).exists() or not any(
        (tmp_path / "models" / folder_name("i-tiny")).iterdir()
    )


def test_old_runs_are_pruned_but_the_newest_kept(tmp_path) -> None:
    settings = settings_for(tmp_path, models=["naive"])
    samples = demo_samples(0.5, index=3)
    now = int(samples["cpu"][0][-1])
    dirs = [train_instance("i-prune", samples, settings, now).run["model_dir"] for _ in range(KEEP_RUNS + 2)]
    left = sorted(p.name for p in (settings.models_dir / folder_name("i-prune")).iterdir())
    assert len(left) == KEEP_RUNS and dirs[-1].split("/")[-1] in left


def test_pruning_one_instance_never_touches_another_whose_id_differs_only_in_punctuation(tmp_path) -> None:
    settings = settings_for(tmp_path, models=["naive"])
    samples = demo_samples(0.5, index=3)
    now = int(samples["cpu"][0][-1])
    first = train_instance("i-a:b", samples, settings, now).run["model_dir"]
    for _ in range(KEEP_RUNS + 1):
        train_instance("i-a_b", samples, settings, now)
    assert Path(first, "naive", "meta.json").is_file()  # the other's current model is still there
    assert folder_name("i-a:b") != folder_name("i-a_b")
    longest = train_instance("L" * 64, samples, settings, now).run["model_dir"]
    assert longest is not None and Path(longest).is_dir()


# ---- uploads ---------------------------------------------------------------------------------
def test_validate_samples_backtests_without_writing_files(tmp_path) -> None:
    settings = settings_for(tmp_path)
    result = validate_samples(demo_samples(1.5, index=4), settings, models=["naive", "linear"])
    assert [s["model"] for s in result.scores] == ["naive", "linear"]
    assert result.champion in ("naive", "linear") and result.run["model_dir"] is None
    assert not settings.models_dir.exists()


def test_predict_samples_auto_forecasts_with_the_champion(tmp_path) -> None:
    settings = settings_for(tmp_path, models=["naive", "seasonal_naive"])
    samples = demo_samples(1.5, index=0)
    forecast = predict_samples(samples, settings, horizon=6)
    assert forecast.model in ("naive", "seasonal_naive") and len(forecast) == 6
    assert forecast.timestamps[0] == samples["cpu"][0][-1] + PERIOD
    assert (forecast.upper >= forecast.mean).all() and (forecast.upper > forecast.lower).any()
    assert predict_samples(samples, settings, model="linear", horizon=3).model == "linear"
