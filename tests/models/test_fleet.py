"""The fleet family: pooled ridge maths, fitting from a saved fleet model, forecasting from origins, save and load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.clock import DAY
from forecasting.fleet_model import save_fleet_model
from forecasting.models import family, pooled
from forecasting.models.base import ModelError
from forecasting.models.fleet import FleetModel
from forecasting.models.registry import load_model, make_model
from forecasting.settings import load_settings

P = 300
START = 1_700_000_000 // DAY * DAY


def daily(level: float, amplitude: float, days: float, phase: float = 0.0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A daily sine of one instance: its own level, amplitude and peak hour."""
    k = np.arange(int(days * DAY // P))
    rng = np.random.default_rng(seed)
    return level + amplitude * np.sin(2 * np.pi * k * P / DAY + phase) + noise * rng.standard_normal(len(k))


def frame_of(cpu: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"cpu": cpu}, index=pd.Index(START + P * np.arange(len(cpu), dtype=np.int64), name="ts"))


def pooled_coefficients(series: list[np.ndarray], horizon: int = 12) -> np.ndarray:
    equations = pooled.NormalEquations(horizon)
    rng = np.random.default_rng(0)
    for cpu in series:
        origins = pooled.sample_origins(cpu, len(cpu), horizon, 400, rng)
        x, centre, spread = pooled.design(cpu, origins, P, horizon)
        equations.add(x, pooled.targets(cpu, origins, horizon, centre, spread))
    return pooled.solve(equations)


def test_design_is_relative_to_the_origin_and_scaled_by_the_instance_spread() -> None:
    cpu = daily(40, 10, 2)
    x1, c1, s1 = pooled.design(cpu, np.array([400, 500]), P, 12)
    x2, c2, s2 = pooled.design(3 * cpu + 5, np.array([400, 500]), P, 12)  # another instance: other level and scale
    np.testing.assert_allclose(x1, x2, atol=1e-9)  # the same shape in the same units: one set of coefficients serves both
    np.testing.assert_allclose(c2, 3 * c1 + 5) and np.testing.assert_allclose(s2, 3 * s1)
    young, _, _ = pooled.design(cpu[:100], np.array([99]), P, 12)  # less than a day: the day-ago part is switched off
    width = pooled.feature_count(12)
    assert young.shape == (1, width) and young[0, width - 2] == 0.0 and x1[0, width - 2] == 1.0


def test_a_gap_in_the_day_before_an_origin_does_not_count_as_zero_cpu() -> None:
    cpu = daily(60, 5, 2)
    gappy = cpu.copy()
    gappy[100:130] = np.nan
    _, _, spread = pooled.design(gappy, np.array([400]), P, 12)
    _, _, filled = pooled.design(pooled.fill_forward(gappy), np.array([400]), P, 12)
    assert spread[0] == pytest.approx(filled[0]) and spread[0] < 10  # as zeros, the gap would add a 60-point swing


def test_sampling_is_bounded_and_skips_windows_with_gaps() -> None:
    cpu = daily(40, 10, 3)
    cpu[300:310] = np.nan
    origins = pooled.sample_origins(cpu, 600, 12, 50, np.random.default_rng(1))
    assert len(origins) == 50 and np.all(origins + 12 < 600)
    assert not np.any((origins + 12 >= 300) & (origins - pooled.LOOKBACK + 1 < 310))  # no window touches the gap
    assert len(pooled.sample_origins(cpu, 30, 12, 50, np.random.default_rng(1))) == 0


def test_pooled_coefficients_forecast_an_unseen_instance_better_than_the_last_value() -> None:
    fleet = [daily(20 + 10 * k, 3 + 2 * k, 3, phase=k, noise=0.5, seed=k) for k in range(6)]
    coef = pooled_coefficients(fleet)
    newcomer = daily(65, 12, 3, phase=2.5, noise=0.5, seed=99)  # never seen: other level, amplitude and peak hour
    origins = np.arange(300, len(newcomer) - 12, 6)
    ahead = origins[:, None] + np.arange(1, 13)
    error = np.mean(np.abs(pooled.forecast(coef, newcomer, origins, P, 12) - newcomer[ahead]))
    naive = np.mean(np.abs(newcomer[origins][:, None] - newcomer[ahead]))
    assert error < 0.6 * naive  # (the noise alone costs about a third of naive's error here)


@pytest.fixture
def saved(tmp_path):
    settings = load_settings(db=tmp_path / "h.db")
    coef = pooled_coefficients([daily(30 + 5 * k, 4 + k, 3, phase=k, noise=0.3, seed=k) for k in range(4)])
    return settings, save_fleet_model(coef, settings, START, {"windows": 1600, "instances": 4})


def test_the_family_is_built_with_the_cycle_fleet_model_and_reads_only_rows_up_to_each_origin(saved, tmp_path) -> None:
    settings, path = saved
    assert family("fleet").pooled and family("fleet").min_history_days == 0
    with pytest.raises(ModelError, match="no fleet model"):  # nothing trained beside this database yet
        make_model("fleet", load_settings(db=tmp_path / "empty" / "h.db")).fit(frame_of(daily(50, 5, 1)))
    assert make_model("fleet", settings).source == path  # uploads (no retrain pass) use the newest saved fleet model
    model = make_model("fleet", settings.model_copy(update={"fleet_model": path}))
    frame = frame_of(daily(50, 5, 2, noise=0.3, seed=7))
    model.fit(frame)
    rows = np.array([200, 300, 400])
    first = model.predict_at(frame, rows)
    changed = frame.copy()
    changed.iloc[401:, 0] = 99.0  # what happens after the last origin cannot change any forecast
    np.testing.assert_allclose(model.predict_at(changed, rows), first)
    np.testing.assert_allclose(first[1], model.predict_mean(12, frame.iloc[:301]))
    model.save(tmp_path / "run" / "fleet")
    path.joinpath("meta.json").unlink()  # the deployed copy carries its coefficients: the fleet file may go
    loaded = load_model(tmp_path / "run" / "fleet")
    np.testing.assert_allclose(loaded.predict_at(frame, rows), first)


def test_a_fleet_model_for_another_grid_or_a_shorter_horizon_is_refused(saved) -> None:
    _settings, path = saved
    with pytest.raises(ModelError, match="period"):
        FleetModel(period=60, horizon=12, source=path).fit(frame_of(daily(50, 5, 1)))
    with pytest.raises(ModelError, match="horizon"):
        FleetModel(period=P, horizon=24, source=path).fit(frame_of(daily(50, 5, 1)))
    with pytest.raises(ModelError, match="at least"):
        FleetModel(period=P, horizon=12, source=path).fit(frame_of(daily(50, 5, 1)[:5]))
