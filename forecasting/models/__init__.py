"""Model families behind one interface (see ``base.ForecastModel``).

TensorFlow is imported only when a neural model is actually built or loaded,
so pages and jobs that never touch LSTM/TCN stay fast.
"""

from __future__ import annotations

BASELINES: tuple[str, ...] = ("naive", "seasonal_naive", "linear")
MODEL_NAMES: tuple[str, ...] = (*BASELINES, "arima", "lstm", "tcn")
NEURAL: tuple[str, ...] = ("lstm", "tcn")
