"""The Fleet table's ranking and numbers, as a pure function (no Streamlit)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.fleet_table import LEVELS, build_fleet_table, sparkline
from app.format import ago_text, duration_text, minutes_to_text
from forecasting.crossing import RISK_LEVELS
from forecasting.store import AlertRecord, ForecastRecord, Instance, TrainingRun

NOW = 1_800_000_000


def _instance(iid: str, threshold: float = 80.0) -> Instance:
    return Instance(iid, f"name-{iid}", threshold, NOW - 86_400, NOW)


def _forecast(iid: str, mean: list[float], spread: float = 5.0, start: int = NOW + 300) -> ForecastRecord:
    stamps = tuple(start + 300 * k for k in range(len(mean)))
    return ForecastRecord(
        1, iid, 1, "arima", True, NOW, NOW, stamps, tuple(mean), tuple(m - spread for m in mean), tuple(m + spread for m in mean)
    )


def _run(iid: str, champion: str) -> TrainingRun:
    return TrainingRun(1, iid, NOW - 600, NOW - 300, NOW - 86_400, NOW - 600, 288, champion, f"models/{iid}/1")


def _alert(iid: str, crossing_ts: int, basis: str) -> AlertRecord:
    return AlertRecord(1, iid, "open", NOW, NOW, None, 80.0, crossing_ts, 30.0, 85.0, "arima", basis, 0, None, None, None, None)


def _cpu(value: float, points: int = 288) -> tuple[np.ndarray, np.ndarray]:
    ts = NOW - 300 - 300 * np.arange(points)[::-1]  # the last day, in whole 15-min buckets
    return ts.astype(np.int64), np.full(points, value)


def test_sparkline_averages_fifteen_minute_buckets() -> None:
    ts = np.arange(0, 3600, 300, dtype=np.int64)  # 12 points, 4 buckets of 3
    values = np.arange(12, dtype=float)
    assert sparkline(ts, values) == [1.0, 4.0, 7.0, 10.0]
    assert sparkline(np.empty(0, dtype=np.int64), np.empty(0)) == []


def test_the_page_shows_every_risk_level_of_the_rule_worst_first() -> None:
    assert tuple(LEVELS) == RISK_LEVELS and [LEVELS[key].rank for key in RISK_LEVELS] == list(range(len(RISK_LEVELS)))


def level_of(mean: list[float], alert_on: str, spread: float = 5.0) -> tuple[str, float, float]:
    """(level, peak, minutes to limit) of one instance at 40 % CPU with this forecast and no alert."""
    frame = build_fleet_table([_instance("a")], {"a": _cpu(40.0)}, [_forecast("a", mean, spread)], {}, [], NOW, alert_on, 5.0)
    return frame.loc[0, "level"], frame.loc[0, "peak"], frame.loc[0, "to_threshold_min"]


def test_levels_peak_and_time_to_limit_follow_the_alert_rule() -> None:
    assert level_of([40.0] * 6 + [82.0] * 6, "mean") == ("risk", 82.0, 35.0)  # step 7 of 5 min
    near = list(np.linspace(60, 79.5, 12))  # only the 60 % level (79.5 + 0.154 · 5) reaches 80, at the last step
    level, peak, minutes = level_of(near, "likely")
    assert (level, minutes) == ("risk", 60.0) and peak == pytest.approx(80.27, abs=0.01)
    level, peak, minutes = level_of(near, "mean")  # the point forecast alone stays below: near the limit
    assert (level, peak) == ("watch", 79.5) and math.isnan(minutes)
    assert level_of([74.0] * 12, "mean", spread=8.0)[0] == "ok"  # peak 74 is below 80 − 5
    assert level_of([74.0] * 12, "likely", spread=8.0)[0] == "watch"  # its 60 % level, 75.2, is not
    assert level_of([74.0] * 12, "upper", spread=8.0)[0] == "risk"  # its upper bound, 82, crosses
    assert level_of([40.0] * 12, "likely")[0] == "ok"


def test_fleet_rows_are_sorted_by_risk_then_time_to_limit() -> None:
    instances = [_instance(i) for i in ("calm", "soon", "later", "over", "alerted", "new")]
    cpu = {i.instance_id: _cpu(40.0) for i in instances}
    cpu["over"] = _cpu(91.0)
    forecasts = [
        _forecast("calm", [40.0] * 12),
        _forecast("soon", [60.0, 85.0] + [90.0] * 10),  # crosses at step 2: 10 min
        _forecast("later", [60.0] * 8 + [85.0] * 4),  # crosses at step 9: 45 min
        _forecast("over", [90.0] * 12),
        _forecast("alerted", [70.0] * 12),
    ]
    runs = {"calm": _run("calm", "arima"), "soon": _run("soon", "lstm")}
    alerts = [_alert("alerted", NOW + 1800, "upper")]
    frame = build_fleet_table(instances, cpu, forecasts, runs, alerts, NOW, "likely", 5.0)

    assert frame["instance_id"].tolist() == ["over", "alerted", "soon", "later", "calm", "new"]
    ranks = [LEVELS[key].rank for key in frame["level"]]
    assert ranks == sorted(ranks)
    soon = frame.set_index("instance_id").loc["soon"]
    assert soon["to_threshold_min"] == 10.0 and soon["peak"] == 90.0 and soon["champion"] == "lstm"
    assert frame.set_index("instance_id").loc["alerted", "to_threshold_min"] == 30.0
    assert frame.set_index("instance_id").loc["alerted", "alert"] == "open (upper)"
    assert math.isnan(frame.set_index("instance_id").loc["new", "peak"])
    assert frame.set_index("instance_id").loc["new", "champion"] == "—"
    assert len(frame.set_index("instance_id").loc["calm", "sparkline"]) == 96  # 24 h of 15-min means
    assert frame.set_index("instance_id").loc["calm", "link"] == "instance?instance=calm"


def test_an_empty_store_gives_an_empty_table() -> None:
    assert build_fleet_table([], {}, [], {}, [], NOW, "likely", 5.0).empty


def test_formatting() -> None:
    assert duration_text(4.26) == "4.3 s"
    assert duration_text(600) == "10 min"
    assert duration_text(3 * 3600 + 300) == "3 h 5 min"
    assert duration_text(2 * 86_400 + 4 * 3600) == "2 d 4 h"
    assert ago_text(NOW - 300, NOW) == "5 min ago"
    assert ago_text(None, NOW) == "never"
    assert minutes_to_text(-3) == "now" and minutes_to_text(25) == "25 min" and minutes_to_text(math.nan) == "—"


def test_a_crossing_already_due_counts_as_now() -> None:
    stale = _forecast("late", [70.0, 85.0, 90.0], start=NOW - 900)  # made a while ago; its crossing time has passed
    frame = build_fleet_table([_instance("late")], {"late": _cpu(72.0)}, [stale], {}, [], NOW, "likely", 5.0)
    assert frame.loc[0, "level"] == "risk" and frame.loc[0, "to_threshold_min"] == 0.0
    assert minutes_to_text(frame.loc[0, "to_threshold_min"]) == "now"
