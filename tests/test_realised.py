"""Realised accuracy: stored forecasts scored against the actuals that arrived, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.realised import ErrorSums, score_forecast
from forecasting.scoring import CURSOR, fleet_realised, realised_scores, score_realised
from forecasting.settings import load_settings
from forecasting.store import Store

P = 300
T0 = 1_800_000_000 // 3600 * 3600  # on the hour


def test_score_forecast_sums_match_a_hand_computation() -> None:
    stamps = np.array([T0 + P, T0 + 2 * P, T0 + 3 * P])
    mean, lower, upper = np.array([10.0, 20.0, 30.0]), np.array([8.0, 19.0, 20.0]), np.array([12.0, 21.0, 40.0])
    # actuals: 12 at step 1, none at step 2 (a gap), 0 at step 3 (left out of MAPE, kept in the rest)
    sums = score_forecast(stamps, mean, lower, upper, np.array([T0, T0 + P, T0 + 3 * P]), np.array([5.0, 12.0, 0.0]), 4.0)
    assert sums == ErrorSums(
        points=2, abs_error=32.0, scaled_error=8.0, pct_error=pytest.approx(2 / 12 * 100), pct_points=1, inside=1
    )
    scores = sums.scores()
    assert scores["mape"] == pytest.approx(16.6667, abs=1e-4)
    assert scores["mase"] == pytest.approx(4.0) and scores["coverage"] == pytest.approx(0.5) and scores["points"] == 2
    assert ErrorSums().scores() == {"mape": None, "mase": None, "mae": None, "coverage": None, "points": 0}


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "h.db") as s:
        yield s


def test_stored_forecasts_are_scored_once_against_actuals_with_hand_computed_mape_mase_coverage(store) -> None:
    settings = load_settings(db=store.path, horizon=2)
    # two days of history before T0 rising by 4 a day, so the one-day seasonal difference (the MASE scale) is 4 everywhere
    history = [("i-a", "cpu", T0 - 2 * 86_400 + k * P, 10.0 + 4 * k / 288) for k in range(576)]
    actuals = [
        ("i-a", "cpu", T0, 18.0),
        ("i-a", "cpu", T0 + P, 16.0),
        ("i-a", "cpu", T0 + 2 * P, 10.0),
        ("i-a", "cpu", T0 + 3 * P, 20.0),
    ]
    store.samples.upsert(history + actuals)

    def forecast(model: str, origin: int, mean: list[float], lower: list[float], upper: list[float], champion: bool) -> dict:
        return {
            "instance_id": "i-a",
            "run_id": 1,
            "model": model,
            "is_champion": champion,
            "made_at": origin + 60,
            "origin_ts": origin,
            "timestamps": [origin + P, origin + 2 * P],
            "mean": mean,
            "lower": lower,
            "upper": upper,
        }

    store.forecasts.record(
        [
            forecast("naive", T0, [14.0, 14.0], [13.0, 13.0], [15.0, 15.0], True),  # vs 16, 10: errors 2, 4; none inside
            forecast("arima", T0, [15.0, 12.0], [10.0, 5.0], [20.0, 11.0], False),  # errors 1, 2; both inside
            forecast("naive", T0 + P, [16.0, 16.0], [10.0, 10.0], [30.0, 30.0], True),  # vs 10, 20: errors 6, 4; both inside
        ]
    )
    now = T0 + 3 * P + 15 * 60 + 120  # every step of the last forecast is 15 minutes old
    report = score_realised(store, settings, now)
    assert (report.forecasts, report.points) == (3, 6)
    got = realised_scores(store, now)["i-a"]
    naive = got["naive"]["day"]
    # naive: |e| = 2, 4, 6, 4 over actuals 16, 10, 10, 20; scale 4
    assert naive["points"] == 4
    assert naive["mape"] == pytest.approx((2 / 16 + 4 / 10 + 6 / 10 + 4 / 20) / 4 * 100)
    assert naive["mase"] == pytest.approx((2 + 4 + 6 + 4) / 4 / 4)
    assert naive["coverage"] == pytest.approx(2 / 4)
    arima = got["arima"]["week"]
    assert arima["mase"] == pytest.approx((1 + 2) / 2 / 4) and arima["coverage"] == 1.0
    assert arima["mape"] == pytest.approx((1 / 16 + 2 / 10) / 2 * 100)
    assert got["auto"]["day"] == naive  # the champion's forecasts are what was deployed
    assert fleet_realised(store, now)["arima"]["points"] == 2

    # a second pass scores nothing again; a forecast whose horizon has not passed yet waits
    store.forecasts.record([forecast("naive", T0 + 3 * P, [20.0, 20.0], [0.0, 0.0], [99.0, 99.0], True)])
    again = score_realised(store, settings, now + P)
    assert again.forecasts == 0 and int(store.jobs.get_meta(CURSOR)) == now + P - 2 * P - 15 * 60
    assert realised_scores(store, now + P)["i-a"]["naive"]["day"] == naive
    # outside the day (but inside the week) it leaves the day's figure and stays in the week's
    later = now + 2 * 86_400
    assert realised_scores(store, later)["i-a"]["naive"]["day"]["points"] == 0
    assert realised_scores(store, later)["i-a"]["naive"]["week"]["points"] == 4
