"""Neural forecasters: a stacked LSTM (Keras) and a TCN (keras-tcn), direct multi-output.

Inputs are windows of ``lookback`` rows of the design matrix (``features.design_matrix``)
plus ``cpu_day_ahead``: CPU one day before row + horizon, so a window's last rows carry
yesterday's values of the very steps to forecast. One Dense layer emits the whole horizon.

The networks see shapes, not levels: CPU-like columns are fed relative to the window's last
CPU value and divided by the window's own CPU spread (clipped to [MIN_SPREAD, MAX_SPREAD]
training standard deviations), and the target is the change from the last value in the same
units. Level shifts that never occurred in training therefore do not throw the model off, and
an untrained network forecasts roughly the last value (the naive baseline).

Training is honest in time: windows are ordered by origin, the latest ``VALIDATION_SHARE``
validate (early stopping, best weights restored), training windows whose targets reach into
that part are dropped, and the scaler sees training rows only. Seeds are fixed
(``params.seed``) and TensorFlow runs deterministic ops, so the same data gives the same model.
Keras spends 2–5 s tracing a new network's train step and 0.2–0.9 s its first prediction, so a
process keeps networks per architecture: trainers (weights and optimizer reset before each fit)
and predictors (each model swaps its own weights in before predicting). A saved model is
``model.keras`` (complete, loadable anywhere with ``tcn`` imported) plus ``weights.npz``, the
same weights as plain arrays, which loading reads in milliseconds.

Hyperparameters come from ``settings.ModelParams`` (``HEADROOM_MODEL__*``); the module
constants below are the few that are not worth a setting.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from forecasting.clock import DAY
from forecasting.features import Scaler, design_matrix, sliding_windows
from forecasting.models.base import ForecastModel, ModelError
from forecasting.settings import ModelParams

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads (lazily, in _tf); errors still raise

VALIDATION_SHARE = 0.15
"""Share of the (most recent) windows kept for early stopping."""
MIN_WINDOWS = 100
"""Fewest complete windows a fit needs (training + validation)."""
MIN_VALIDATION_WINDOWS = 8
LOSS = "huber"
"""Huber on scaled deltas: close to MAE for the spikes real CPU has, smooth near zero."""
INPUT_CLIP = 5.0
"""Scaled inputs are clipped to ±INPUT_CLIP so a level never seen in training cannot blow up the output."""
CPU_COLUMNS = ("cpu", "cpu_day_ago", "cpu_day_ahead")
"""Scaled like CPU and fed relative to the window's last CPU value."""
MIN_SPREAD, MAX_SPREAD = 0.05, 1.0
"""Bounds of the per-window CPU spread, in training standard deviations (a burst never inflates forecasts)."""
WINDOW_STRIDE = 2
"""Train on every 2nd origin: neighbouring windows are near copies, so this halves the cost, not the information."""
MODEL_FILE, WEIGHTS_FILE = "model.keras", "weights.npz"


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """Send what native code writes to stderr (file descriptor 2) to /dev/null for the duration.

    TensorFlow's C++ start-up writes "Could not find cuda drivers" and absl's "log messages before
    InitializeLog" lines straight to the descriptor, past ``TF_CPP_MIN_LOG_LEVEL`` and Python's
    logging, into the worker's console and log on every machine without a GPU. Only the import and
    the device discovery run muted; a real failure there still raises, and everything after is heard.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _tf():
    """Import TensorFlow quietly and make its ops deterministic (once per process)."""
    if getattr(_tf, "configured", False):
        import tensorflow as tf

        return tf
    with _native_stderr_muted():
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery: where the CUDA stub lines come from
    tf.get_logger().setLevel("ERROR")
    tf.config.experimental.enable_op_determinism()
    _tf.configured = True
    return tf


@dataclass
class _Trainer:
    """A compiled network kept for reuse: its traced train step survives, weights and optimizer are reset."""

    network: Any
    weights: list[np.ndarray]
    optimizer_state: list[np.ndarray]

    def reset(self) -> None:
        self.network.set_weights(self.weights)
        for variable, value in zip(self.network.optimizer.variables, self.optimizer_state, strict=True):
            variable.assign(value)


@dataclass
class _Predictor:
    """One network per architecture for inference; ``owner`` is the weights list it holds now."""

    network: Any
    owner: object = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_IDLE_TRAINERS: dict[str, _Trainer] = {}
_PREDICTORS: dict[str, _Predictor] = {}
_POOL_LOCK = threading.Lock()
MAX_POOLED = 4
"""Trainers and predictors kept per process (a network is well under a megabyte)."""


def _checkout(key: str) -> _Trainer | None:
    with _POOL_LOCK:
        return _IDLE_TRAINERS.pop(key, None)


def _checkin(key: str, trainer: _Trainer) -> None:
    with _POOL_LOCK:
        _IDLE_TRAINERS[key] = trainer
        while len(_IDLE_TRAINERS) > MAX_POOLED:
            del _IDLE_TRAINERS[next(iter(_IDLE_TRAINERS))]


def _predictor(key: str, build) -> _Predictor:
    with _POOL_LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = _Predictor(build())
            while len(_PREDICTORS) > MAX_POOLED:
                del _PREDICTORS[next(iter(_PREDICTORS))]
        return _PREDICTORS[key]


def model_inputs(frame: pd.DataFrame, period: int, horizon: int) -> pd.DataFrame:
    """Design matrix plus ``cpu_day_ahead`` (CPU one day before row + horizon; known at the row)."""
    lag = DAY // period
    inputs = design_matrix(frame, period)
    inputs["cpu_day_ahead"] = frame["cpu"].shift(max(lag - horizon, 1))
    return inputs


def fit_scaler(raw: pd.DataFrame) -> Scaler:
    """A Scaler on ``raw`` whose CPU-like columns share the CPU mean and scale (so differences stay CPU points)."""
    scaler = Scaler.fit(raw)
    for column in CPU_COLUMNS[1:]:
        scaler.mean[column], scaler.scale[column] = scaler.mean["cpu"], scaler.scale["cpu"]
    return scaler


def network_input(x: np.ndarray, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Scaled windows [n, lookback, features] → (network input, per-window spread [n, 1]).

    CPU-like columns become (value − last CPU) / spread, where spread is the window's own CPU
    standard deviation bounded to [MIN_SPREAD, MAX_SPREAD]; everything is clipped to ±INPUT_CLIP.
    """
    out = x.astype(np.float32, copy=True)
    cpu = columns.index("cpu")
    relative = [columns.index(c) for c in CPU_COLUMNS]
    spread = np.clip(out[:, :, cpu].std(axis=1, keepdims=True), MIN_SPREAD, MAX_SPREAD)
    out[:, :, relative] = (out[:, :, relative] - out[:, -1:, cpu : cpu + 1]) / spread[:, :, None]
    return np.clip(out, -INPUT_CLIP, INPUT_CLIP), spread


def chronological_split(origins: np.ndarray, horizon: int, share: float = VALIDATION_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) of windows sorted by origin: validation is the latest ``share``.

    Training windows end (origin + horizon) no later than the first validation origin, so no
    training target lies inside a validation window's future.
    """
    count = len(origins)
    n_val = max(MIN_VALIDATION_WINDOWS, round(count * share))
    if count < n_val + 1:
        return np.arange(count), np.arange(0)
    order = np.argsort(origins, kind="stable")
    val = order[count - n_val :]
    first_val_origin = origins[val].min()
    candidates = order[: count - n_val]
    train = candidates[origins[candidates] + horizon <= first_val_origin]
    return train, val


class NeuralModel(ForecastModel):
    """Shared training and prediction for the Keras families; subclasses build the network."""

    name: ClassVar[str] = "neural"
    min_points: int = DAY // 300 + ModelParams().lookback + 12 + MIN_WINDOWS

    def __init__(self, period: int = 300, horizon: int = 12, params: ModelParams | None = None) -> None:
        super().__init__(period, horizon)
        self.params = params or ModelParams()
        self.min_points = self.required_points()
        self.scaler: Scaler | None = None
        self.columns: list[str] = []
        self.weights: list[np.ndarray] | None = None
        self.fit_info: dict[str, Any] = {}

    def required_points(self) -> int:
        """Least grid rows a fit needs: a day of lag, one window, and MIN_WINDOWS more origins."""
        return DAY // self.period + self.params.lookback + self.horizon + MIN_WINDOWS

    # ---- what a subclass provides ---------------------------------------
    def build_network(self, features: int):  # pragma: no cover - abstract
        """The uncompiled Keras model: [batch, lookback, features] → [batch, horizon]."""
        raise NotImplementedError

    @staticmethod
    def custom_objects() -> dict[str, Any]:
        return {}

    # ---- training ---------------------------------------------------------
    def windows(self, raw: pd.DataFrame, scaler: Scaler) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Network-ready windows of ``raw``: X, Y (change from the origin CPU, in window-spread units), origin rows."""
        scaled = scaler.transform(raw).to_numpy(dtype=np.float32)
        cpu = scaled[:, raw.columns.get_loc("cpu")]
        x, y, origins = sliding_windows(scaled, cpu, self.params.lookback, self.horizon)
        inputs, spread = network_input(x, list(raw.columns))
        return inputs, ((y - cpu[origins][:, None]) / spread).astype(np.float32), origins

    def fit(self, frame: pd.DataFrame) -> Self:
        """Train on ``frame`` with early stopping on its latest windows; raise ModelError if it is too short."""
        if "cpu" not in frame or frame["cpu"].notna().sum() < self.required_points():
            have = 0 if "cpu" not in frame else int(frame["cpu"].notna().sum())
            raise ModelError(
                f"{self.name}: needs at least {self.required_points()} points with CPU (a day of lag + lookback "
                f"{self.params.lookback} + horizon {self.horizon} + {MIN_WINDOWS} windows), got {have}"
            )
        if self.horizon >= DAY // self.period:
            raise ModelError(f"{self.name}: horizon {self.horizon} must be shorter than a day of steps")
        raw = model_inputs(frame, self.period, self.horizon)
        _, _, origins = sliding_windows(
            raw.to_numpy(np.float32), raw["cpu"].to_numpy(np.float32), self.params.lookback, self.horizon
        )
        if len(origins) < MIN_WINDOWS:
            raise ModelError(f"{self.name}: only {len(origins)} complete windows without gaps, needs {MIN_WINDOWS}")
        origins = origins[::-1][::WINDOW_STRIDE][::-1][-self.params.max_windows :]
        train_idx, val_idx = chronological_split(origins, self.horizon)
        last_train_row = int(origins[train_idx].max()) + self.horizon
        self.scaler = fit_scaler(raw.iloc[: last_train_row + 1])
        self.columns = list(raw.columns)
        x, y, all_origins = self.windows(raw, self.scaler)
        x, y = x[np.isin(all_origins, origins)], y[np.isin(all_origins, origins)]
        self.weights = self._train(x[train_idx], y[train_idx], x[val_idx], y[val_idx])
        self.fit_info.update(windows=len(origins), train_windows=len(train_idx), validation_windows=len(val_idx))
        self.history = frame
        return self

    def _train(self, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray):
        """Fit a network (a reused compiled one when this process has one idle); return its best weights."""
        _tf()  # TensorFlow first, muted (keras would load it unmuted)
        import keras

        key = json.dumps([self.name, self.params.model_dump(), int(x.shape[2]), self.horizon], sort_keys=True)
        trainer = _checkout(key) or self._new_trainer(x.shape[2])
        trainer.reset()
        keras.utils.set_random_seed(self.params.seed)
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.params.patience, restore_best_weights=True)
        result = trainer.network.fit(
            x,
            y,
            validation_data=(xv, yv),
            epochs=self.params.epochs,
            batch_size=self.params.batch_size,
            shuffle=True,
            callbacks=[stop],
            verbose=0,
        )
        weights = trainer.network.get_weights()
        _checkin(key, trainer)
        losses = result.history["val_loss"]
        self.fit_info = {"epochs_run": len(losses), "best_epoch": int(stop.best_epoch) + 1, "best_val_loss": float(min(losses))}
        return weights

    def _new_trainer(self, features: int) -> _Trainer:
        _tf()  # TensorFlow first, muted (keras would load it unmuted)
        import keras

        keras.utils.set_random_seed(self.params.seed)
        network = self.build_network(features)
        network.compile(optimizer=keras.optimizers.Adam(self.params.learning_rate), loss=LOSS)
        network.optimizer.build(network.trainable_variables)
        return _Trainer(network, network.get_weights(), [np.array(v.numpy()) for v in network.optimizer.variables])

    # ---- prediction -----------------------------------------------------
    def _predictor(self) -> _Predictor:
        if self.weights is None:
            raise ModelError(f"{self.name}: not fitted")
        _tf()
        arch = {
            k: v for k, v in self.params.model_dump().items() if k in ("lookback", "units", "layers", "dilations", "kernel_size")
        }
        key = json.dumps([self.name, arch, len(self.columns), self.horizon], sort_keys=True)
        return _predictor(key, lambda: self.build_network(len(self.columns)))

    def _swap_in(self, predictor: _Predictor) -> Any:
        """Load this model's weights into the shared network unless they are already there (lock held)."""
        if predictor.owner is not self.weights:
            predictor.network.set_weights(self.weights)
            predictor.owner = self.weights
        return predictor.network

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Network outputs for a batch of windows (prediction is traced once per process and architecture)."""
        predictor = self._predictor()
        with predictor.lock:
            return np.asarray(self._swap_in(predictor).predict_on_batch(x), dtype=float)

    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        """Forecast after the last row of ``history`` from its last ``lookback`` rows (no refit)."""
        return self.predict_at(history, np.array([len(history) - 1]), horizon)[0]

    def predict_at(self, frame: pd.DataFrame, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """Forecasts [len(rows), horizon] from several origins (row positions in ``frame``) in one batch.

        Each forecast uses only the rows up to its origin; a gap inside a window is filled from
        the last value seen before it (or the scaler's mean), never from later rows.
        """
        horizon = horizon or self.horizon
        if self.weights is None or self.scaler is None:
            raise ModelError(f"{self.name}: not fitted")
        if horizon > self.horizon:
            raise ModelError(f"{self.name}: trained for {self.horizon} steps, asked for {horizon}")
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.empty((0, horizon))
        lookback, lag = self.params.lookback, DAY // self.period
        start = max(0, int(rows.min()) - lookback - lag + 1)
        part = frame.iloc[start : int(rows.max()) + 1]
        raw = model_inputs(part, self.period, self.horizon)
        scaled = self.scaler.transform(raw).ffill().fillna(0.0).to_numpy(dtype=np.float32)
        rel = rows - start
        last_cpu = raw["cpu"].ffill().to_numpy()[rel]
        if np.isnan(last_cpu).any():
            raise ModelError(f"{self.name}: no CPU value before the forecast origin")
        if np.any(rel < lookback - 1):  # too little history: repeat the first row backwards
            pad = lookback - 1 - int(rel.min())
            scaled, rel = np.concatenate([np.repeat(scaled[:1], pad, axis=0), scaled]), rel + pad
        x, spread = network_input(np.stack([scaled[r - lookback + 1 : r + 1] for r in rel]), self.columns)
        delta = self.forward(x)[:, :horizon] * spread
        return last_cpu[:, None] + delta * self.scaler.scale["cpu"]

    # ---- persistence ----------------------------------------------------
    def save(self, path: Path) -> None:
        """Refuse before anything is written when there is no network to save."""
        if self.weights is None:
            raise ModelError(f"{self.name}: nothing to save, the model is not fitted")
        super().save(path)

    def state(self) -> dict[str, Any]:
        scaler = None if self.scaler is None else self.scaler.to_dict()
        return {"params": self.params.model_dump(), "scaler": scaler, "columns": self.columns, "fit_info": self.fit_info}

    def set_state(self, state: dict[str, Any]) -> None:
        try:
            self.params = ModelParams(**state.get("params", {}))
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            raise ModelError(f"{self.name}: saved params are not valid any more: {str(error).splitlines()[0]}") from None
        self.min_points = self.required_points()
        self.scaler = None if state.get("scaler") is None else Scaler.from_dict(state["scaler"])
        self.columns = list(state.get("columns", []))
        self.fit_info = dict(state.get("fit_info", {}))

    def save_files(self, directory: Path) -> None:
        if self.weights is None:
            raise ModelError(f"{self.name}: not fitted, nothing to save")
        predictor = self._predictor()
        with predictor.lock:
            self._swap_in(predictor).save(Path(directory) / MODEL_FILE)
        np.savez(Path(directory) / WEIGHTS_FILE, *self.weights)

    def load_files(self, directory: Path) -> None:
        """Read weights.npz (fast, no pickles); without it, the weights of the complete model.keras."""
        fast, full = Path(directory) / WEIGHTS_FILE, Path(directory) / MODEL_FILE
        if not fast.exists() and not full.exists():
            raise ModelError(f"{self.name}: {directory} holds neither {WEIGHTS_FILE} nor {MODEL_FILE}")
        try:
            if fast.exists():
                with np.load(fast, allow_pickle=False) as arrays:
                    self.weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
            else:
                _tf()  # TensorFlow first, muted (keras would load it unmuted)
                import keras

                self.weights = keras.models.load_model(full, custom_objects=self.custom_objects(), compile=False).get_weights()
        except Exception as error:  # a damaged or foreign file: one clear line, the caller skips the model
            raise ModelError(f"{self.name}: cannot read {fast if fast.exists() else full}: {error}") from None
        expected = [tuple(v.shape) for v in self._predictor().network.weights]
        if [tuple(w.shape) for w in self.weights] != expected:
            self.weights = None
            raise ModelError(f"{self.name}: saved weights in {directory} do not fit the network its params describe")


class LstmModel(NeuralModel):
    """``layers`` stacked LSTM(``units``) over the window, then Dense(horizon)."""

    name: ClassVar[str] = "lstm"

    def build_network(self, features: int):
        _tf()  # TensorFlow first, muted (keras would load it unmuted)
        import keras

        inputs = keras.Input(shape=(self.params.lookback, features))
        hidden = inputs
        for layer in range(self.params.layers):
            hidden = keras.layers.LSTM(self.params.units, return_sequences=layer < self.params.layers - 1)(hidden)
        return keras.Model(inputs, keras.layers.Dense(self.horizon)(hidden), name="lstm")


class TcnModel(NeuralModel):
    """A keras-tcn ``TCN`` layer (nb_filters=units, kernel_size, dilations), then Dense(horizon)."""

    name: ClassVar[str] = "tcn"

    @staticmethod
    def custom_objects() -> dict[str, Any]:
        _tf()  # TensorFlow first, muted
        from tcn import TCN

        return {"TCN": TCN}

    def build_network(self, features: int):
        _tf()  # TensorFlow first, muted (keras would load it unmuted)
        import keras
        from tcn import TCN

        inputs = keras.Input(shape=(self.params.lookback, features))
        p = self.params
        hidden = TCN(nb_filters=p.units, kernel_size=p.kernel_size, dilations=list(p.dilations), return_sequences=False)(inputs)
        return keras.Model(inputs, keras.layers.Dense(self.horizon)(hidden), name="tcn")
