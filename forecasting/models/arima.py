"""ARIMA with daily seasonality as Fourier regressors (statsmodels), order chosen per instance by AIC.

The model is a regression with integrated ARMA errors, ``z = Σ Fourier_k(time of day)·β + u``,
``u ~ ARIMA(p, 1, q)`` on standardised CPU ``z``, fitted on the last ``FIT_DAYS`` only so a fit
takes about a second:

1. the Fourier coefficients by least squares on first differences (none, or ``FOURIER_TERMS``
   daily harmonics: AIC decides, counting the coefficients);
2. every order of ``ORDER_GRID`` on the residual series by Hannan–Rissanen (fast), scored by AIC;
3. the winning order refitted by exact maximum likelihood (``SARIMAX``, Kalman filter, which
   also copes with the gaps the grid keeps as NaN), the first MA coefficient kept ≥ −``MAX_MA``.

A 288-lag seasonal ARIMA is never used: statsmodels needs minutes to hours for it, while
Fourier terms capture the daily shape in a handful of coefficients. Forecasting re-filters
the fitted parameters (``SARIMAX.filter``, no re-estimation) over the last ``FILTER_DAYS`` of
the given history, so new data moves the forecast without refitting; many origins share one
filter pass (the backtest forecasts from every origin for the cost of one). The saved state is plain
JSON: order, parameters, coefficients, scaling and the recent CPU needed to forecast.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from forecasting.clock import DAY
from forecasting.models.base import ForecastModel, ModelError

FIT_DAYS = 3.0
"""Recent history the ARIMA is fitted on (a bounded window keeps fitting to about a second)."""
FILTER_DAYS = 1.0
"""History re-filtered at each forecast: long enough for the ARMA state to settle."""
FOURIER_TERMS = 3
"""Daily harmonics (sin/cos pairs) tried when the window spans at least a day (kept if AIC says so)."""
ORDER_GRID: tuple[tuple[int, int, int], ...] = ((0, 1, 1), (1, 1, 0), (1, 1, 1), (2, 1, 0), (2, 1, 1), (0, 1, 2))
"""Candidate (p, d, q) orders; the lowest AIC wins. All integrated: CPU shifts level for good
(deploys, load changes) and a stationary model would pull the forecast back to the old mean."""
MIN_POINTS = 36
"""Three hours of 5-minute points: less than that is no series to model."""
MAX_ITER = 50
MAX_MA = 0.9
"""Bound on the first MA coefficient's size. An MA(1) near −1 turns the model into a long-run mean fitted on a
calm window, which then ignores a level shift; capping it keeps the forecast adapting (like α ≥ 0.1 in
exponential smoothing)."""


def fourier_terms(ts: np.ndarray, terms: int) -> np.ndarray:
    """Columns sin/cos(2πk·time of day) for k = 1..terms (UTC); an empty matrix when terms is 0."""
    phase = 2 * np.pi * (np.asarray(ts, dtype=np.int64) % DAY) / DAY
    columns = [f(k * phase) for k in range(1, terms + 1) for f in (np.sin, np.cos)]
    return np.column_stack(columns) if columns else np.empty((len(phase), 0))


def daily_shape_coefficients(z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Fourier coefficients by least squares on first differences (the errors are integrated, so
    regressing levels would let level shifts distort the daily shape)."""
    if x.shape[1] == 0:
        return np.zeros(0)
    dz, dx = np.diff(z), np.diff(x, axis=0)
    ok = np.isfinite(dz)
    return np.linalg.lstsq(dx[ok], dz[ok], rcond=None)[0]


class ArimaModel(ForecastModel):
    """Regression on daily Fourier terms with ARIMA errors; see the module docstring."""

    name: ClassVar[str] = "arima"
    min_points: int = MIN_POINTS

    def __init__(self, period: int = 300, horizon: int = 12) -> None:
        super().__init__(period, horizon)
        self.order: tuple[int, int, int] | None = None
        self.params: np.ndarray | None = None
        self.coef: np.ndarray | None = None
        self.terms = 0
        self.center, self.scale = 0.0, 1.0
        self.aic: dict[str, float] = {}

    # ---- fitting --------------------------------------------------------
    def fit(self, frame: pd.DataFrame) -> Self:
        """Choose the order by AIC and estimate it on the recent window; ModelError if the data cannot support it."""
        if "cpu" not in frame:
            raise ModelError("arima: no CPU column")
        cpu = frame["cpu"]
        cpu = cpu.loc[int(cpu.index[-1]) - int(FIT_DAYS * DAY) + 1 :] if len(cpu) else cpu
        y = cpu.to_numpy(dtype=float)
        seen = np.isfinite(y)
        if seen.sum() < MIN_POINTS:
            raise ModelError(f"arima: needs at least {MIN_POINTS} points with CPU, got {int(seen.sum())}")
        first, last = np.flatnonzero(seen)[[0, -1]]
        y, ts = y[first : last + 1], cpu.index.to_numpy(dtype=np.int64)[first : last + 1]
        seen = np.isfinite(y)
        spread = float(np.std(y[seen]))
        if spread < 1e-6:
            raise ModelError("arima: CPU is constant, there is nothing to model (the naive forecast is exact)")
        self.center, self.scale, self.aic = float(np.mean(y[seen])), spread, {}
        z = (y - self.center) / self.scale
        choices = (0, FOURIER_TERMS) if ts[-1] - ts[0] >= DAY else (0,)
        best = None
        for terms in choices:  # with or without the daily shape: AIC decides, counting its coefficients
            x = fourier_terms(ts, terms)
            coef = daily_shape_coefficients(z, x)
            order, start, aic = _choose_order(z - x @ coef, penalty=2.0 * 2 * terms)
            self.aic.update({f"{key} fourier={terms}": value for key, value in aic.items()})
            if order is not None and (best is None or min(aic.values()) < best[0]):
                best = (min(aic.values()), terms, coef, order, start)
        if best is None:
            raise ModelError("arima: no order of the grid could be estimated on this series")
        _, self.terms, self.coef, self.order, start = best
        assert start is not None  # _choose_order returns a start with every order it returns
        self.params = _maximum_likelihood(z - fourier_terms(ts, self.terms) @ self.coef, self.order, start)
        self.history = frame[["cpu"]]
        return self

    # ---- forecasting ----------------------------------------------------
    def predict_mean(self, horizon: int, history: pd.DataFrame) -> np.ndarray:
        """Re-filter the fitted ARIMA over the recent history and forecast the next steps."""
        return self.predict_at(history, np.array([len(history) - 1]), horizon)[0]

    def predict_at(self, frame: pd.DataFrame, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """Forecasts [len(rows), horizon] from several origins with one Kalman filter pass (no re-estimation).

        The fitted parameters are filtered over the rows from ``FILTER_DAYS`` before the first
        origin to the last one; each origin's forecast is ``Z·Tʰ·a(origin|origin)`` from the state
        filtered up to it (so it sees no later row), plus the daily Fourier shape.
        """
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        if self.order is None or self.params is None or self.coef is None:
            raise ModelError("arima: not fitted")
        horizon = horizon or self.horizon
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.empty((0, horizon))
        index = frame.index.to_numpy(dtype=np.int64)
        first = int(np.searchsorted(index, int(index[rows.min()]) - int(FILTER_DAYS * DAY) + 1))
        ts = index[first : int(rows.max()) + 1]
        z = (frame["cpu"].to_numpy(dtype=float)[first : int(rows.max()) + 1] - self.center) / self.scale
        seen = np.isfinite(z)
        if not seen[: int(rows.min()) - first + 1].any():
            raise ModelError("arima: no CPU value in the last day before the origin")
        resid = z - fourier_terms(ts, self.terms) @ self.coef
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = SARIMAX(resid, order=self.order, concentrate_scale=True).filter(self.params)
        k = results.model.k_states
        transition = np.asarray(results.model.ssm["transition"], dtype=float).reshape(k, k)
        design = np.asarray(results.model.ssm["design"], dtype=float).reshape(1, k)
        steps, power = np.empty((horizon, k)), np.eye(k)
        for h in range(horizon):
            power = transition @ power
            steps[h] = (design @ power)[0]
        states = np.asarray(results.filtered_state, dtype=float)[:, rows - first]  # [k, origins]
        ahead = (steps @ states).T  # [origins, horizon]
        future = index[rows][:, None] + self.period * np.arange(1, horizon + 1, dtype=np.int64)
        shape = (fourier_terms(future.ravel(), self.terms) @ self.coef).reshape(future.shape) if self.terms else 0.0
        mean = (ahead + shape) * self.scale + self.center
        if not np.all(np.isfinite(mean)):
            raise ModelError("arima: forecast is not finite")
        return mean

    # ---- persistence ----------------------------------------------------
    def state(self) -> dict[str, Any]:
        recent: dict[str, list] = {"ts": [], "cpu": []}
        if self.history is not None and len(self.history):
            tail = self.history["cpu"].loc[int(self.history.index[-1]) - int(FILTER_DAYS * DAY) + 1 :]
            recent = {"ts": [int(t) for t in tail.index], "cpu": [None if np.isnan(v) else float(v) for v in tail]}
        return {
            "order": None if self.order is None else list(self.order),
            "params": None if self.params is None else [float(v) for v in self.params],
            "coef": None if self.coef is None else [float(v) for v in self.coef],
            "terms": self.terms,
            "center": self.center,
            "scale": self.scale,
            "aic": self.aic,
            "recent": recent,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.order = None if state.get("order") is None else tuple(int(v) for v in state["order"])  # type: ignore[assignment]
        self.params = None if state.get("params") is None else np.asarray(state["params"], dtype=float)
        self.coef = None if state.get("coef") is None else np.asarray(state["coef"], dtype=float)
        self.terms = int(state.get("terms", 0))
        self.center, self.scale = float(state.get("center", 0.0)), float(state.get("scale", 1.0))
        self.aic = dict(state.get("aic", {}))
        recent = state.get("recent") or {"ts": [], "cpu": []}
        ts = np.asarray(recent["ts"], dtype=np.int64)
        cpu = np.asarray([np.nan if v is None else v for v in recent["cpu"]], dtype=float)
        self.history = pd.DataFrame({"cpu": cpu}, index=pd.Index(ts, name="ts")) if len(ts) else None


def _choose_order(resid: np.ndarray, penalty: float) -> tuple[tuple[int, int, int] | None, np.ndarray | None, dict[str, float]]:
    """AIC (+ ``penalty``) of every ORDER_GRID order by Hannan–Rissanen on the gap-filled residuals; the best with its estimates."""
    from statsmodels.tsa.arima.model import ARIMA

    filled = pd.Series(resid).interpolate(limit_direction="both").to_numpy()
    scores: dict[str, float] = {}
    best: tuple[float, tuple[int, int, int], np.ndarray] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for order in ORDER_GRID:
            try:
                result = ARIMA(filled, order=order, trend="n").fit(method="hannan_rissanen")
            except Exception:  # an order the data cannot support is simply not a candidate
                continue
            aic = float(result.aic) + penalty
            if np.isfinite(aic):
                scores[",".join(str(part) for part in order)] = aic
                if best is None or aic < best[0]:
                    best = (aic, order, np.asarray(result.params[:-1], dtype=float))  # without sigma2
    return (None, None, scores) if best is None else (best[1], best[2], scores)


def _maximum_likelihood(resid: np.ndarray, order: tuple[int, int, int], start: np.ndarray) -> np.ndarray:
    """Exact ML estimates of one order (Kalman filter: gaps stay NaN), started from Hannan–Rissanen's."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fitted = SARIMAX(resid, order=order, concentrate_scale=True).fit(
                disp=False, start_params=_stable_start(start, order), maxiter=MAX_ITER
            )
            params = np.asarray(fitted.params, dtype=float)
        except Exception as error:
            raise ModelError(f"arima: maximum likelihood failed for order {order}: {error}".splitlines()[0]) from None
        p, _, q = order
        if q and params[p] < -MAX_MA:
            params = _with_bounded_ma(resid, order, params)
    if not np.all(np.isfinite(params)):
        raise ModelError(f"arima: estimation for order {order} gave non-finite parameters")
    return params


def _with_bounded_ma(resid: np.ndarray, order: tuple[int, int, int], params: np.ndarray) -> np.ndarray:
    """Re-estimate with the first MA coefficient fixed at −MAX_MA (the other parameters free)."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    p, _, q = order
    if p + q == 1:
        return np.array([-MAX_MA])
    model = SARIMAX(resid, order=order, concentrate_scale=True)
    start = params.copy()
    start[p] = -MAX_MA
    try:
        with model.fix_params({"ma.L1": -MAX_MA}):
            fitted = model.fit(disp=False, start_params=_stable_start(start, order), maxiter=MAX_ITER)
        return np.asarray(fitted.params, dtype=float)
    except Exception:
        return _stable_start(start, order)


def _stable_start(params: np.ndarray, order: tuple[int, int, int]) -> np.ndarray:
    """Shrink Hannan–Rissanen estimates into the stationary/invertible region SARIMAX starts from."""
    p, _, q = order
    start = params.copy()
    for lo, hi in ((0, p), (p, p + q)):
        part = start[lo:hi]
        total = np.sum(np.abs(part))
        if total >= 0.98:
            start[lo:hi] = part * 0.95 / total
    return start
