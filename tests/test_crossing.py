"""The one crossing rule (pure): crossing, time to limit, peak and risk level of hand-made forecasts."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.crossing import (
    LIKELY_SHARE,
    RISK_LEVELS,
    find_crossing,
    first_at_or_above,
    minutes_to_limit,
    outlook,
    risk_level,
    shown_crossing,
    with_cpu_now,
)
from forecasting.store import ForecastRecord

P = 300
T = 1_800_000_000  # a cycle time on the 5-minute grid


def forecast(origin: int, mean: list[float], spread: float = 4.0) -> ForecastRecord:
    """12 steps after ``origin`` with a symmetric band, as the store reads a forecast back."""
    return ForecastRecord(
        1,
        "i-a",
        1,
        "arima",
        True,
        origin + P,
        origin,
        tuple(origin + P * (k + 1) for k in range(len(mean))),
        tuple(mean),
        tuple(m - spread for m in mean),
        tuple(m + spread for m in mean),
    )


def ramp(start: float, end: float, steps: int = 12) -> list[float]:
    return list(np.linspace(start, end, steps))


def test_first_at_or_above_and_time_to_limit() -> None:
    assert first_at_or_above([70, 80, 90, 60], 80) == 1 and first_at_or_above([10, 20], 80) is None
    assert minutes_to_limit(T + 1800, T) == 30.0 and minutes_to_limit(T - 600, T) == 0.0  # due already: now, never negative


def test_crossing_time_lead_and_peak_of_the_point_forecast() -> None:
    f = forecast(T - P, [60, 64, 68, 72, 76, 79.9, 80.0, 83, 86, 88, 87, 85])
    c = find_crossing(f, 80, "mean", now=T)
    assert c is not None and c.step == 6 and c.ts == T + 6 * P  # first step at or above, not above
    assert c.lead_minutes == 30.0 and c.peak == 88 and c.basis == "mean"
    assert find_crossing(f, 88.01, "mean", now=T) is None
    late = find_crossing(f, 80, "mean", now=T + 40 * 60)  # the crossing lies before now: lead is 0, never negative
    assert late is not None and late.lead_minutes == 0.0


def test_only_the_upper_bound_crossing_opens_nothing_on_mean_and_an_upper_alert_on_upper() -> None:
    f = forecast(T - P, ramp(60, 77), spread=6)  # mean peaks at 77, upper at 83, first ≥ 80 at step 8
    assert find_crossing(f, 80, "mean", now=T) is None
    c = find_crossing(f, 80, "upper", now=T)
    assert (
        c is not None
        and c.basis == "upper"
        and c.step == int(np.argmax(np.asarray(f.upper) >= 80))
        and c.peak == pytest.approx(83)
    )
    both = forecast(T - P, ramp(70, 90), spread=6)  # both cross: the point forecast's crossing is reported
    assert find_crossing(both, 80, "upper", now=T).basis == "mean"  # type: ignore[union-attr]
    assert find_crossing(both, 80, "upper", now=T).ts == both.timestamps[int(np.argmax(np.asarray(both.mean) >= 80))]  # type: ignore[union-attr]


def test_likely_opens_when_a_step_has_a_40_percent_chance_read_from_the_interval() -> None:
    near = forecast(T - P, ramp(60, 79), spread=6)  # mean peaks at 79, upper at 85: the 60 % level is 79 + 0.154 · 6 ≈ 79.9
    assert find_crossing(near, 80, "likely", now=T) is None  # below 40 %: no alert
    closer = forecast(T - P, ramp(60, 79.5), spread=6)  # 79.5 + 0.92 ≥ 80: at least a 40 % chance
    c = find_crossing(closer, 80, "likely", now=T)
    assert c is not None and c.basis == "likely" and c.step == 11
    assert c.peak == pytest.approx(79.5 + LIKELY_SHARE * 6)
    assert find_crossing(closer, 80, "mean", now=T) is None  # the point forecast alone does not cross
    assert find_crossing(near, 80, "upper", now=T).basis == "upper"  # type: ignore[union-attr]
    assert pytest.approx(0.154, abs=1e-3) == LIKELY_SHARE


def test_the_peak_is_the_crossing_series_or_without_a_crossing_the_widest_watched_one() -> None:
    crossing_on_mean = forecast(T - P, ramp(70, 90), spread=6)
    assert outlook(crossing_on_mean, 80, "likely", T).peak == 90.0  # what the alert reports: the point forecast crossed
    likely_only = forecast(T - P, ramp(60, 79.5), spread=6)
    seen = outlook(likely_only, 80, "likely", T)
    assert seen.crossing is not None and seen.peak == pytest.approx(79.5 + LIKELY_SHARE * 6) and seen.minutes_to_limit == 55.0
    below = forecast(T - P, ramp(50, 70), spread=6)
    assert outlook(below, 80, "mean", T).peak == 70.0
    assert outlook(below, 80, "likely", T).peak == pytest.approx(70 + LIKELY_SHARE * 6)  # what the hysteresis compares
    assert outlook(below, 80, "upper", T).peak == pytest.approx(76.0)
    assert outlook(below, 80, "upper", T).minutes_to_limit is None


def test_risk_levels_worst_first() -> None:
    likely_only = outlook(forecast(T - P, ramp(60, 79.5), spread=6), 80, "likely", T)
    calm = outlook(forecast(T - P, [40.0] * 12), 80, "likely", T)
    near = outlook(forecast(T - P, [74.0] * 12, spread=8), 80, "likely", T)  # the 60 % level, 75.2, is within 5 of 80
    assert risk_level(85.0, 80, 5, calm, has_alert=True) == "over"
    assert risk_level(40.0, 80, 5, calm, has_alert=True) == "alert"
    assert risk_level(40.0, 80, 5, likely_only, has_alert=False) == "risk"
    assert risk_level(40.0, 80, 5, near, has_alert=False) == "watch"
    assert risk_level(76.0, 80, 5, calm, has_alert=False) == "watch"  # CPU now within the margin
    assert risk_level(40.0, 80, 5, calm, has_alert=False) == "ok"
    assert risk_level(40.0, 80, 5, None, has_alert=False) == "unknown"
    assert RISK_LEVELS == ("over", "alert", "risk", "watch", "ok", "unknown")


def test_the_crossing_shown_is_now_when_over_else_the_forecasts_else_the_open_alerts() -> None:
    seen = outlook(forecast(T - P, ramp(70, 90)), 80, "mean", T)
    calm = outlook(forecast(T - P, [40.0] * 12), 80, "mean", T)
    assert shown_crossing(seen, T + 3000, 80, T - P, 85.0) == T - P  # over the limit now: its newest sample
    assert shown_crossing(seen, T + 3000, 80, T - P, 60.0) == seen.crossing.ts  # type: ignore[union-attr]
    assert shown_crossing(calm, T + 3000, 80, T - P, 60.0) == T + 3000  # held open within the margin: the alert's
    assert shown_crossing(calm, None, 80, T - P, 60.0) is None and shown_crossing(None, None, 80, None, None) is None


def test_cpu_over_the_limit_now_crosses_now_when_the_forecast_does_not_and_raises_the_peak() -> None:
    calm = forecast(T - P, [70.0] * 12, spread=1.0)
    assert outlook(calm, 80, "likely", T).crossing is None  # without the newest sample: the forecast alone
    seen = outlook(calm, 80, "likely", T, latest=(T - P, 83.0))
    assert seen.crossing is not None and (seen.crossing.basis, seen.crossing.ts, seen.minutes_to_limit) == ("now", T - P, 0.0)
    assert seen.peak == 83.0  # what the hysteresis compares: CPU now is higher than the forecast's peak
    assert outlook(calm, 80, "likely", T, latest=(T - 2 * P, 90.0)).crossing is None  # older than the forecast: not now
    under = outlook(calm, 80, "likely", T, latest=(T - P, 78.0))
    assert under.crossing is None and under.peak == 78.0  # under the limit, but within the margin: it holds an alert
    ramping = outlook(forecast(T - P, ramp(70, 90)), 80, "mean", T, latest=(T - P, 85.0))
    assert ramping.crossing is not None and ramping.crossing.basis == "mean"  # the forecast's own crossing comes first
    assert with_cpu_now(np.array([70.0, np.nan, 90.0]), np.array([75.0, 99.0, 80.0])).tolist()[::2] == [75.0, 90.0]
    assert np.isnan(with_cpu_now(np.array([np.nan]), np.array([99.0]))[0])  # no forecast: the cycle says nothing
