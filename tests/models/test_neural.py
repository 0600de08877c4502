"""LSTM and TCN: real (tiny, few-epoch) Keras training on demo data, persistence, determinism, no leaks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.calibration import Calibration
from forecasting.features import to_frame
from forecasting.models import neural
from forecasting.models.base import ModelError
from forecasting.models.neural import (
    LstmModel,
    NeuralModel,
    TcnModel,
    chronological_split,
)
from forecasting.settings import ModelParams
from forecasting.sources.demo import DemoSource, demo_instance_id

pytestmark = pytest.mark.slow

PERIOD = 300
HORIZON = 6
START = 1_699_999_800  # on the 5-min grid
TINY = ModelParams(
    lookback=12,
    units=4,
    layers=1,
    dilations=[1, 2],
    kernel_size=2,
    epochs=3,
    batch_size=32,
    learning_rate=0.01,
    patience=2,
    max_windows=400,
    seed=11,
)
FAMILIES = {"lstm": LstmModel, "tcn": TcnModel}
ROOT = Path(__file__).resolve().parents[2]


def demo_frame(points: int = 560, index: int = 1) -> pd.DataFrame:
    """A regular 5-min frame of one simulated instance (all four metrics)."""
    source = DemoSource(count=6, seed=5, anchor=START, period=PERIOD)
    ts = START + PERIOD * np.arange(points, dtype=np.int64)
    samples = {m: (ts, source.values(index, m, ts)) for m in source.metrics_of(demo_instance_id(index))}
    return to_frame(samples, PERIOD)


def make(name: str, params: ModelParams = TINY) -> NeuralModel:
    return FAMILIES[name](period=PERIOD, horizon=HORIZON, params=params)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return demo_frame()


@pytest.fixture(scope="module")
def trained(frame) -> dict[str, NeuralModel]:
    """Each family fitted once on the demo frame, shared by the tests of this module."""
    return {name: make(name).fit(frame) for name in sorted(FAMILIES)}


@pytest.fixture(params=sorted(FAMILIES))
def fitted(request, trained) -> NeuralModel:
    return trained[request.param]


def test_training_gives_a_clipped_forecast_on_the_grid(fitted, frame):
    forecast = fitted.predict()
    last = int(frame.index[-1])
    assert forecast.model == fitted.name
    assert forecast.mean.shape == (HORIZON,)
    np.testing.assert_array_equal(forecast.timestamps, last + PERIOD * np.arange(1, HORIZON + 1))
    assert np.all(np.isfinite(forecast.mean)) and np.all((forecast.mean >= 0) & (forecast.mean <= 100))
    assert not np.allclose(forecast.mean, frame["cpu"].iloc[-1])  # a trained network, not the naive copy
    info = fitted.fit_info
    assert 1 <= info["epochs_run"] <= TINY.epochs and np.isfinite(info["best_val_loss"])
    assert info["train_windows"] > info["validation_windows"] > 0
    # interval offsets far beyond the range are clipped to 0–100
    fitted.calibration = Calibration(np.tile([-500.0, 500.0], (HORIZON, 1)), adaptive=False)
    try:
        wide = fitted.predict()
    finally:
        fitted.calibration = None
    assert np.all(wide.lower == 0.0) and np.all(wide.upper == 100.0)


def test_network_shape_follows_the_params(fitted):
    network = fitted._predictor().network  # the process's shared network for this architecture
    assert tuple(network.input_shape) == (None, TINY.lookback, len(fitted.columns))
    assert tuple(network.output_shape) == (None, HORIZON)
    if fitted.name == "tcn":
        from tcn import TCN

        layer = next(layer for layer in network.layers if isinstance(layer, TCN))
        assert layer.nb_filters == TINY.units and list(layer.dilations) == TINY.dilations
    else:
        lstm = [layer for layer in network.layers if layer.__class__.__name__ == "LSTM"]
        assert len(lstm) == TINY.layers and lstm[0].units == TINY.units


def test_batch_forecasts_match_single_ones(fitted, frame):
    rows = np.array([400, 450, len(frame) - 1])
    batch = fitted.predict_at(frame, rows)
    assert batch.shape == (3, HORIZON) and fitted.predict_at(frame, np.array([], dtype=int)).shape == (0, HORIZON)
    for row, expected in zip(rows, batch, strict=True):
        single = fitted.predict_mean(HORIZON, frame.iloc[: row + 1])
        np.testing.assert_allclose(single, expected, rtol=1e-5, atol=1e-5)


def test_no_leak_data_after_the_origin_changes_nothing(fitted, frame):
    origin = 480
    before = fitted.predict_at(frame, np.array([origin]))
    changed = frame.copy()
    changed.iloc[origin + 1 :, :] = changed.iloc[origin + 1 :, :] * 3 + 17  # a wildly different future
    np.testing.assert_array_equal(fitted.predict_at(changed, np.array([origin])), before)
    # ...while changing the origin's own value does change it (the test can fail)
    changed.iloc[origin, changed.columns.get_loc("cpu")] += 30
    assert not np.allclose(fitted.predict_at(changed, np.array([origin])), before)


def test_refit_on_the_past_ignores_the_future(frame):
    cut = 500
    other = frame.copy()
    other.iloc[cut:, other.columns.get_loc("cpu")] = 99.0
    first = make("lstm").fit(frame.iloc[:cut]).predict()
    second = make("lstm").fit(other.iloc[:cut]).predict()
    np.testing.assert_array_equal(first.mean, second.mean)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_same_seed_same_model_other_seed_other_model(name, frame, trained):
    # the refit reuses the compiled network kept by the first fit: reuse must not change the result
    assert any(json.loads(key)[0] == name for key in neural._IDLE_TRAINERS)
    again = make(name).fit(frame).predict()
    np.testing.assert_allclose(again.mean, trained[name].predict().mean, rtol=0, atol=1e-9)
    other = make(name, TINY.model_copy(update={"seed": 12})).fit(frame).predict()
    assert not np.allclose(other.mean, again.mean, atol=1e-6)
    assert len(neural._IDLE_TRAINERS) <= neural.MAX_POOLED


def test_save_load_round_trip(fitted, frame, tmp_path):
    fitted.save(tmp_path / fitted.name)
    folder = tmp_path / fitted.name
    assert (folder / "model.keras").is_file() and (folder / "weights.npz").is_file()
    assert not (tmp_path / f"{fitted.name}.tmp").exists()
    loaded = type(fitted).load(folder)
    assert loaded.params == TINY and loaded.min_points == fitted.min_points and loaded.columns == fitted.columns
    expected = fitted.predict().mean
    np.testing.assert_allclose(loaded.predict(history=frame).mean, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fitted.predict().mean, expected, rtol=0, atol=0)  # loading did not disturb the original
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["name"] == fitted.name and meta["state"]["params"]["lookback"] == TINY.lookback
    # without the fast weights file, the complete Keras model is read instead
    (folder / "weights.npz").unlink()
    slow = type(fitted).load(folder)
    np.testing.assert_allclose(slow.predict(history=frame).mean, expected, rtol=1e-6, atol=1e-6)


def test_loading_mismatched_or_damaged_weights_is_refused(trained, tmp_path):
    trained["lstm"].save(tmp_path / "lstm")
    meta_path = tmp_path / "lstm" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["state"]["params"]["units"] = TINY.units + 3
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="do not fit the network"):
        LstmModel.load(tmp_path / "lstm")
    (tmp_path / "lstm" / "weights.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="cannot read"):
        LstmModel.load(tmp_path / "lstm")


def test_tcn_loads_in_a_fresh_process(trained, frame, tmp_path):
    """In a new interpreter, TcnModel.load works, and plain Keras loads model.keras once ``tcn`` is imported."""
    fitted = trained["tcn"]
    fitted.save(tmp_path / "tcn")
    frame.to_csv(tmp_path / "frame.csv")
    script = (
        "import json, sys, numpy as np, pandas as pd\n"
        "from forecasting.models.neural import TcnModel\n"
        "frame = pd.read_csv(sys.argv[2], index_col='ts')\n"
        "model = TcnModel.load(sys.argv[1])\n"
        "import keras, tcn  # the import registers the TCN layer with Keras\n"
        "plain = keras.models.load_model(sys.argv[1] + '/model.keras', compile=False)\n"
        "x = np.random.default_rng(0).normal(size=(3, model.params.lookback, len(model.columns))).astype('float32')\n"
        "gap = float(np.abs(plain.predict_on_batch(x) - model.forward(x)).max())\n"
        "print(json.dumps({'mean': model.predict(history=frame).mean.tolist(), 'gap': gap}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "tcn"), str(tmp_path / "frame.csv")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["mean"], fitted.predict().mean, rtol=1e-5, atol=1e-5)
    assert result["gap"] < 1e-5


def test_validation_split_lies_after_training():
    origins = np.arange(100, 300)
    train, val = chronological_split(origins, horizon=HORIZON)
    assert len(val) == 30  # 15 % of 200
    assert origins[train].max() + HORIZON <= origins[val].min()
    assert set(train).isdisjoint(val) and len(train) + len(val) >= len(origins) - HORIZON
    shuffled = np.random.default_rng(0).permutation(origins)
    _train2, val2 = chronological_split(shuffled, horizon=HORIZON)
    np.testing.assert_array_equal(np.sort(shuffled[val2]), origins[-30:])


def test_fit_uses_the_latest_windows_for_validation(fitted, frame):
    info = fitted.fit_info
    assert info["validation_windows"] == max(8, round(info["windows"] * 0.15))
    assert info["train_windows"] <= info["windows"] - info["validation_windows"]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_too_short_raises_a_clear_error(name, frame):
    model = make(name)
    assert model.min_points == 288 + TINY.lookback + HORIZON + 100
    with pytest.raises(ModelError, match=rf"{name}: needs at least {model.min_points} points"):
        model.fit(frame.iloc[: model.min_points - 1])


def test_gappy_series_raises_when_too_few_windows(frame):
    gappy = frame.copy()
    gappy.iloc[300::20, gappy.columns.get_loc("cpu")] = np.nan  # a hole every 100 min
    with pytest.raises(ModelError, match="complete windows"):
        make("lstm").fit(gappy)


def test_constant_series_fits_and_forecasts_the_constant(frame):
    flat = frame.copy()
    flat["cpu"] = 42.0
    forecast = make("lstm").fit(flat).predict()
    np.testing.assert_allclose(forecast.mean, 42.0, atol=0.5)


def test_longer_horizon_than_trained_is_refused(fitted):
    with pytest.raises(ModelError, match=f"trained for {HORIZON} steps"):
        fitted.predict(horizon=HORIZON + 1)


def test_unfitted_model_cannot_save_or_predict(tmp_path, frame):
    with pytest.raises(ModelError, match="not fitted"):
        make("tcn").save(tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.tmp").exists()
    with pytest.raises(ModelError, match="not fitted"):
        make("lstm").predict(history=frame)


def test_models_of_one_architecture_share_a_network_without_mixing_weights(trained, frame):
    """Two fitted LSTMs use the same predictor network in turn; each still forecasts with its own weights."""
    first = trained["lstm"]
    second = make("lstm").fit(frame.iloc[:-40])
    assert first._predictor() is second._predictor()
    a1, b1 = first.predict().mean, second.predict().mean
    assert not np.allclose(a1, b1)
    np.testing.assert_array_equal(first.predict().mean, a1)  # swapped back in
    np.testing.assert_array_equal(second.predict().mean, b1)


@pytest.mark.slow
def test_tensorflow_start_up_noise_stays_out_of_the_console_but_later_errors_do_not() -> None:
    script = "import os\nfrom forecasting.models.neural import _tf\n_tf()\nos.write(2, b'heard after start-up\\n')\n"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert "heard after start-up" in done.stderr  # the descriptor is restored: real errors still reach the log
    noise = [line for line in done.stderr.splitlines() if "cuda" in line.lower() or "absl" in line.lower()]
    assert noise == [], noise
