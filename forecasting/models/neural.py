"""Neural forecasters: a stacked LSTM (Keras) and a TCN (keras-tcn), direct multi-output.

Both read multivariate windows of the design matrix (``features.design_matrix`` plus
``cpu_day_ahead``, yesterday's CPU at the step ``horizon`` ahead of each row, so the
window's last rows carry yesterday's values of the steps to forecast) and emit the whole
horizon at once from one Dense layer. They predict the *change* from the last CPU value
(the network starts near the naive forecast and learns corrections), scaled by the CPU
standard deviation.

Training is honest in time: windows are ordered by origin, the last ``VALIDATION_SHARE``
of them validate (early stopping, best weights restored), and training windows whose
targets reach into the validation part are dropped. The scaler sees the training rows
only. Seeds are fixed (``params.seed``) and TensorFlow runs deterministic ops, so the same
data gives the same model.

Hyperparameters come from ``settings.ModelParams`` (``HEADROOM_MODEL__*``); the constants
below are the few that are not worth a setting.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402
from typing import Any, ClassVar, Self  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from forecasting.features import DAY, Scaler, design_matrix, sliding_windows  # noqa: E402
from forecasting.models.base import ForecastModel, ModelError  # noqa: E402
from forecasting.settings import ModelParams  # noqa: E402

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
"""Scaled like CPU and fed relative to the window's last CPU value, so the network is level-free."""
STEPS_PER_EXECUTION = 1
MODEL_FILE = "model.keras"


def _tf():
    """Import TensorFlow quietly and make its ops deterministic (done once per process)."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    if not getattr(_tf, "configured", False):
        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # pragma: no cover - older TF builds without the switch
            pass
        _tf.configured = True
    return tf


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


def network_input(x: np.ndarray, columns: list[str]) -> np.ndarray:
    """Windows [n, lookback, features] of scaled inputs → network input: CPU columns minus the last CPU, clipped."""
    out = x.astype(np.float32, copy=True)
    cpu = columns.index("cpu")
    relative = [columns.index(c) for c in CPU_COLUMNS]
    out[:, :, relative] -= out[:, -1:, cpu : cpu + 1]
    return np.clip(out, -INPUT_CLIP, INPUT_CLIP)


def chronological_split(origins: np.ndarray, horizon: int, share: float = VALIDATION_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) of windows sorted by origin: validation is the latest ``share``.

    Training windows end (origin + horizon) no later than the first validation origin, so no
    training target lies inside a validation window's future.
    """
    count = len(origins)
    n_val = max(MIN_VALIDATION_WINDOWS, int(round(count * share)))
    if count < n_val + 1:
        return np.arange(count), np.arange(0)
    order = np.argsort(origins, kind="stable")
    val = order[count - n_val:]
    first_val_origin = origins[val].min()
    candidates = order[: count - n_val]
    train = candidates[origins[candidates] + horizon <= first_val_origin]
    return train, val


class NeuralModel(ForecastModel):
    """Shared training and prediction for the Keras families; subclasses build the network."""

    name: ClassVar[str] = "neural"
    min_points: ClassVar[int] = DAY // 300 + ModelParams().lookback + 12 + MIN_WINDOWS

    def __init__(self, period: int = 300, horizon: int = 12, params: ModelParams | None = None) -> None:
        super().__init__(period, horizon)
        self.params = params or ModelParams()
        self.min_points = self.required_points()
        self.scaler: Scaler | None = None
        self.columns: list[str] = []
        self.network = None
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
        """Scaled windows of ``raw`` inputs: X, Y as scaled deltas from the origin's CPU, origin rows."""
        scaled = scaler.transform(raw).to_numpy(dtype=np.float32)
        cpu = scaled[:, raw.columns.get_loc("cpu")]
        x, y, origins = sliding_windows(scaled, cpu, self.params.lookback, self.horizon)
        return network_input(x, list(raw.columns)), (y - cpu[origins][:, None]).astype(np.float32), origins

    def fit(self, frame: pd.DataFrame) -> Self:
        """Train on ``frame`` with early stopping on its latest windows; raise ModelError if it is too short."""
        if "cpu" not in frame or frame["cpu"].notna().sum() < self.required_points():
            have = 0 if "cpu" not in frame else int(frame["cpu"].notna().sum())
            raise ModelError(
                f"{self.name}: needs at least {self.required_points()} points with CPU "
                f"(a day of lag + lookback {self.params.lookback} + horizon {self.horizon} + {MIN_WINDOWS} windows), got {have}"
            )
        if self.horizon >= DAY // self.period:
            raise ModelError(f"{self.name}: horizon {self.horizon} must be shorter than a day of steps")
        raw = model_inputs(frame, self.period, self.horizon)
        values = raw.to_numpy(dtype=np.float32)
        _, _, origins = sliding_windows(values, raw["cpu"].to_numpy(dtype=np.float32), self.params.lookback, self.horizon)
        if len(origins) < MIN_WINDOWS:
            raise ModelError(f"{self.name}: only {len(origins)} complete windows without gaps, needs {MIN_WINDOWS}")
        origins = origins[-self.params.max_windows:]
        train_idx, val_idx = chronological_split(origins, self.horizon)
        last_train_row = int(origins[train_idx].max()) + self.horizon
        self.scaler = fit_scaler(raw.iloc[: last_train_row + 1])
        self.columns = list(raw.columns)
        x, y, all_origins = self.windows(raw, self.scaler)
        keep = np.isin(all_origins, origins)
        x, y = x[keep], y[keep]
        self.network = self._train(x[train_idx], y[train_idx], x[val_idx], y[val_idx])
        self.fit_info.update(windows=int(len(origins)), train_windows=int(len(train_idx)), validation_windows=int(len(val_idx)))
        self.history = frame
        return self

    def _train(self, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray):
        import keras

        _tf()
        keras.utils.set_random_seed(self.params.seed)
        network = self.build_network(x.shape[2])
        network.compile(optimizer=keras.optimizers.Adam(self.params.learning_rate), loss=LOSS, steps_per_execution=STEPS_PER_EXECUTION)
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.params.patience, restore_best_weights=True)
        result = network.fit(
            x, y, validation_data=(xv, yv), epochs=self.params.epochs, batch_size=self.params.batch_size,
            shuffle=True, callbacks=[stop], verbose=0,
        )
        losses = result.history.get("val_loss", [])
        self.fit_info = {"epochs_run": len(losses), "best_val_loss": float(min(losses)) if losses else None}
        return network

    # ---- prediction -----------------------------------------------------
    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        """Forecast after the last row of ``history`` from its last ``lookback`` rows (no refit)."""
        return self.predict_at(history, np.array([len(history) - 1]), horizon)[0]

    def predict_at(self, frame: pd.DataFrame, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """Forecasts [len(rows), horizon] from several origins (row positions in ``frame``) in one batch.

        Each forecast uses only the rows up to its origin; a gap inside a window is filled from
        the last value seen before it (or the scaler's mean), never from later rows.
        """
        horizon = horizon or self.horizon
        if self.network is None or self.scaler is None:
            raise ModelError(f"{self.name}: not fitted")
        if horizon > self.horizon:
            raise ModelError(f"{self.name}: trained for {self.horizon} steps, asked for {horizon}")
        rows = np.asarray(rows, dtype=np.int64)
        lookback, lag = self.params.lookback, DAY // self.period
        start = max(0, int(rows.min()) - lookback - lag + 1)
        part = frame.iloc[start: int(rows.max()) + 1]
        raw = model_inputs(part, self.period, self.horizon)
        scaled = self.scaler.transform(raw).ffill().fillna(0.0).to_numpy(dtype=np.float32)
        rel = rows - start
        last_cpu = raw["cpu"].ffill().to_numpy()[rel]
        if np.isnan(last_cpu).any():
            raise ModelError(f"{self.name}: no CPU value before the forecast origin")
        if np.any(rel < lookback - 1):  # too little history: repeat the first row backwards
            pad = lookback - 1 - int(rel.min())
            scaled, rel = np.concatenate([np.repeat(scaled[:1], pad, axis=0), scaled]), rel + pad
        x = network_input(np.stack([scaled[r - lookback + 1: r + 1] for r in rel]), self.columns)
        delta = np.asarray(self.network(x, training=False), dtype=float)[:, :horizon]
        return last_cpu[:, None] + delta * self.scaler.scale["cpu"]

    # ---- persistence ----------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "params": self.params.model_dump(),
            "scaler": None if self.scaler is None else self.scaler.to_dict(),
            "columns": self.columns,
            "fit_info": self.fit_info,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.params = ModelParams(**state.get("params", {}))
        self.min_points = self.required_points()
        self.scaler = None if state.get("scaler") is None else Scaler.from_dict(state["scaler"])
        self.columns = list(state.get("columns", []))
        self.fit_info = dict(state.get("fit_info", {}))

    def save_files(self, directory: Path) -> None:
        if self.network is None:
            raise ModelError(f"{self.name}: nothing to save, the model is not fitted")
        self.network.save(Path(directory) / MODEL_FILE)

    def load_files(self, directory: Path) -> None:
        import keras

        _tf()
        path = Path(directory) / MODEL_FILE
        if not path.exists():
            raise ModelError(f"{self.name}: {path} is missing")
        self.network = keras.models.load_model(path, custom_objects=self.custom_objects(), compile=False)


class LstmModel(NeuralModel):
    """``layers`` stacked LSTM(``units``) over the window, then Dense(horizon)."""

    name: ClassVar[str] = "lstm"

    def build_network(self, features: int):
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
        from tcn import TCN

        return {"TCN": TCN}

    def build_network(self, features: int):
        import keras
        from tcn import TCN

        inputs = keras.Input(shape=(self.params.lookback, features))
        hidden = TCN(
            nb_filters=self.params.units, kernel_size=self.params.kernel_size,
            dilations=list(self.params.dilations), return_sequences=False,
        )(inputs)
        return keras.Model(inputs, keras.layers.Dense(self.horizon)(hidden), name="tcn")
