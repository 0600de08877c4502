"""Alert logic on hand-made forecasts: opening, hysteresis, and caught / late / false outcomes (the crossing rule: test_crossing.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from forecasting.alerts import CLEAR_CYCLES, AlertPolicy, actual_crossing, evaluate_alerts, iso_utc
from forecasting.settings import Settings, load_settings
from forecasting.store import Store
from forecasting.store.alerts import Alerts

P = 300
T = 1_800_000_000  # a cycle time on the 5-minute grid
IID = "i-0abc0000000000001"


@pytest.fixture()
def settings(tmp_path: Path, clean_env: Path) -> Settings:
    return load_settings(db=tmp_path / "headroom.db", threshold=80, alert_margin=5, horizon=12)


@pytest.fixture()
def store(settings: Settings):
    with Store(settings.db) as s:
        s.samples.upsert_instance(IID, "web-1", 80.0, T - 86_400)
        yield s


def forecast(origin: int, mean: list[float], spread: float = 4.0, model: str = "arima") -> dict:
    """A forecast row as run_forecasts writes it: 12 steps after ``origin``, a symmetric band."""
    return {
        "instance_id": IID,
        "run_id": 1,
        "model": model,
        "is_champion": True,
        "made_at": origin + P,
        "origin_ts": origin,
        "timestamps": [origin + P * (k + 1) for k in range(len(mean))],
        "mean": mean,
        "lower": [m - spread for m in mean],
        "upper": [m + spread for m in mean],
    }


def ramp(start: float, end: float, steps: int = 12) -> list[float]:
    return list(np.linspace(start, end, steps))


def cpu(store: Store, points: dict[int, float]) -> None:
    store.samples.upsert((IID, "cpu", ts, value) for ts, value in points.items())


def cycle(store: Store, settings: Settings, now: int, mean: list[float], **kw: object):
    """One forecast cycle: the champion forecast made at ``now`` (origin one period before), then the alerts."""
    store.forecasts.record([forecast(now - P, mean, **kw)])
    return evaluate_alerts(store, settings, now)


def events(store: Store, alert_id: int) -> list[str]:
    return [e.kind for e in store.alerts.events(alert_id)]


# ---- pure functions --------------------------------------------------------
def test_actual_crossing_is_caught_after_the_opening_and_late_when_already_above() -> None:
    ts = np.arange(T - 6 * P, T + 6 * P, P)
    below_then_up = np.array([50, 55, 60, 65, 70, 75, 78, 79, 81, 84, 70, 60], dtype=float)
    assert actual_crossing(ts, below_then_up, 80, opened_at=T) == (T + 2 * P, "caught")
    already = np.array([50, 60, 82, 85, 88, 90, 91, 92, 93, 80, 70, 60], dtype=float)
    assert actual_crossing(ts, already, 80, opened_at=T) == (T - 4 * P, "late")  # the start of the run in progress
    ended_before = np.array([85, 86, 60, 55, 50, 50, 50, 52, 51, 50, 49, 48], dtype=float)  # an earlier spike is not this alert's
    assert actual_crossing(ts, ended_before, 80, opened_at=T) is None


# ---- the alert life cycle through the store --------------------------------
def test_open_update_hysteresis_clear_and_false_alarm(store: Store, settings: Settings) -> None:
    cpu(store, {T - k * P: 60.0 for k in range(1, 13)})
    report = cycle(store, settings, T, ramp(62, 90))  # 79.8 at index 7, 82.4 at index 8: crosses at T + 8 periods
    assert report.opened == [IID] and "1 alerts opened" in report.summary()
    (alert,) = store.alerts.recent()
    crossing_ts = T + 8 * P
    assert (alert.state, alert.crossing_ts, alert.lead_minutes, alert.basis, alert.model) == (
        "open",
        crossing_ts,
        40.0,
        "mean",
        "arima",
    )
    assert alert.peak == 90.0 and alert.threshold == 80.0 and alert.outcome is None and alert.opened_at == T

    cycle(store, settings, T + P, ramp(70, 95))  # still crossing, earlier now: updated, one alert only
    (alert,) = store.alerts.recent()
    assert alert.crossing_ts < crossing_ts and alert.peak == 95.0 and events(store, alert.alert_id) == ["opened", "updated"]

    steps = [(78.0, 0, "open"), (60.0, 1, "open"), (85.0, 0, "open"), (60.0, 1, "open"), (60.0, 2, "cleared")]
    for k, (peak, below, state) in enumerate(steps, start=2):
        cycle(store, settings, T + k * P, ramp(peak - 10, peak))  # 78 is under 80 but above 80 − 5: no count
        (alert,) = store.alerts.recent()
        assert (alert.below_count, alert.state) == (below, state), (k, peak)
    assert CLEAR_CYCLES == 2 and alert.cleared_at == T + 6 * P
    assert alert.outcome is None  # a crossing shortly after clearing would still count

    grace_end = alert.cleared_at + settings.horizon * P
    cpu(store, {t: 62.0 for t in range(T, grace_end + P, P)})
    evaluate_alerts(store, settings, grace_end - P)
    assert store.alerts.recent()[0].outcome is None
    report = evaluate_alerts(store, settings, grace_end)
    (alert,) = store.alerts.recent()
    assert alert.outcome == "false" and alert.actual_crossing_ts is None and report.false_alarms == [IID]
    assert events(store, alert.alert_id) == ["opened", "updated", "updated", "cleared", "resolved"]


def test_a_real_crossing_after_the_opening_is_caught_with_its_lead(store: Store, settings: Settings) -> None:
    cpu(store, {T - k * P: 70.0 for k in range(1, 13)})
    cycle(store, settings, T, ramp(72, 92))
    cpu(store, {T: 76.0, T + P: 79.0, T + 2 * P: 83.5, T + 3 * P: 88.0})
    report = cycle(store, settings, T + 4 * P, ramp(85, 95))
    (alert,) = store.alerts.recent()
    assert (alert.outcome, alert.actual_crossing_ts, alert.state) == ("caught", T + 2 * P, "open")
    assert report.crossed == [IID] and (alert.actual_crossing_ts - alert.opened_at) / 60 == 10.0
    detail = store.alerts.events(alert.alert_id)[-1]
    assert detail.kind == "crossed" and detail.detail.startswith(f"caught: CPU reached 80 % at {iso_utc(T + 2 * P)}, +10 min")


def test_an_alert_opened_while_cpu_is_already_above_is_late(store: Store, settings: Settings) -> None:
    cpu(store, {T - k * P: (86.0 if k <= 3 else 60.0) for k in range(1, 13)})
    cycle(store, settings, T, ramp(86, 90))
    (alert,) = store.alerts.recent()
    assert (alert.outcome, alert.actual_crossing_ts) == ("late", T - 3 * P)
    assert alert.actual_crossing_ts < alert.opened_at
    assert events(store, alert.alert_id) == ["opened", "crossed"]


def test_a_crossing_forecast_within_the_grace_reopens_the_same_alert_and_later_opens_a_new_one(
    store: Store, settings: Settings
) -> None:
    cpu(store, {T - k * P: 60.0 for k in range(1, 13)})
    cycle(store, settings, T, ramp(70, 90))
    for k in (1, 2):
        cycle(store, settings, T + k * P, ramp(50, 60))
    assert store.alerts.recent()[0].state == "cleared"
    cycle(store, settings, T + 3 * P, ramp(75, 92))
    (alert,) = store.alerts.recent()
    assert alert.state == "open" and alert.cleared_at is None and events(store, alert.alert_id)[-2:] == ["cleared", "reopened"]
    for k in (4, 5):
        cycle(store, settings, T + k * P, ramp(50, 60))
    later = T + 5 * P + settings.horizon * P
    cpu(store, {t: 60.0 for t in range(T, later, P)})
    cycle(store, settings, later, ramp(75, 92))
    old, new = sorted(store.alerts.recent(), key=lambda a: a.alert_id)
    assert (old.state, old.outcome) == ("cleared", "false") and (new.state, new.opened_at) == ("open", later)


def test_upper_setting_opens_on_the_bound_and_mean_setting_does_not(store: Store, settings: Settings, tmp_path: Path) -> None:
    cpu(store, {T - P: 60.0})
    cycle(store, settings, T, ramp(62, 77), spread=6)
    assert store.alerts.recent() == []
    upper = load_settings(db=settings.db, threshold=80, alert_on="upper")
    evaluate_alerts(store, upper, T)
    (alert,) = store.alerts.recent()
    assert alert.basis == "upper" and alert.peak == pytest.approx(83.0)


def test_a_forecast_whose_horizon_has_passed_changes_nothing(store: Store, settings: Settings) -> None:
    cycle(store, settings, T, ramp(70, 90))
    report = evaluate_alerts(store, settings, T + 13 * P)  # no new forecast: the old one only covers the past
    (alert,) = store.alerts.recent()
    assert report.stale == [IID] and alert.below_count == 0 and alert.state == "open"


def test_all_writes_of_an_evaluation_commit_together_or_not_at_all(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "i-0abc0000000000002"
    store.samples.upsert_instance(other, "web-2", 80.0, T)
    store.forecasts.record([forecast(T - P, ramp(70, 90)), {**forecast(T - P, ramp(70, 90)), "instance_id": other}])
    calls = []

    def fail_on_second(alert_id: int, ts: int, kind: str, detail: str | None = None) -> None:
        calls.append(alert_id)
        if len(calls) == 2:
            raise OSError("disk full")
        Alerts.add_event(store.alerts, alert_id, ts, kind, detail)

    monkeypatch.setattr(store.alerts, "add_event", fail_on_second)
    with pytest.raises(OSError):
        evaluate_alerts(store, settings, T)
    assert store.alerts.recent() == [] and store.db.query("SELECT COUNT(*) FROM alert_events")[0][0] == 0
    monkeypatch.undo()
    assert len(evaluate_alerts(store, settings, T).opened) == 2


# ---- the shared alert policy and the warning benchmark's definitions (pure) -----------------------------
def test_cpu_over_the_limit_opens_an_alert_the_forecast_missed_and_holds_it_until_cpu_falls_back(
    store: Store, settings: Settings
) -> None:
    cpu(store, {T - k * P: 60.0 for k in range(2, 13)} | {T - P: 83.0})  # the newest sample is over 80 already
    cycle(store, settings, T, [70.0] * 12, spread=1.0)  # a forecast that falls back below the limit
    (alert,) = store.alerts.recent()
    assert (alert.state, alert.basis, alert.crossing_ts, alert.lead_minutes, alert.peak) == ("open", "now", T - P, 0.0, 83.0)
    assert alert.outcome == "late"  # the instance was already over its limit: opened, but not ahead
    cpu(store, {T: 84.0, T + P: 85.0})
    cycle(store, settings, T + P, [60.0] * 12, spread=1.0)
    cycle(store, settings, T + 2 * P, [60.0] * 12, spread=1.0)  # two forecasts far below, but CPU is still over: held
    assert store.alerts.recent()[0].state == "open" and store.alerts.recent()[0].below_count == 0
    cpu(store, {T + 2 * P: 61.0, T + 3 * P: 60.0})
    cycle(store, settings, T + 3 * P, [60.0] * 12, spread=1.0)
    cycle(store, settings, T + 4 * P, [60.0] * 12, spread=1.0)
    assert store.alerts.recent()[0].state == "cleared"  # CPU back under threshold − margin: the usual hysteresis
    assert len(store.alerts.recent()) == 1


def test_a_sample_older_than_the_forecast_does_not_open_an_alert(store: Store, settings: Settings) -> None:
    cpu(store, {T - 3 * P: 90.0})  # over the limit, but from before the forecast's origin (T − P)
    cycle(store, settings, T, [70.0] * 12, spread=1.0)
    assert store.alerts.recent() == []


def test_the_policy_opens_on_a_crossing_holds_within_the_margin_and_clears_after_two_cycles_below() -> None:
    policy = AlertPolicy(threshold=80, margin=5, clear_cycles=2, grace_cycles=3)
    peaks = [70, 85, 78, 60, 85, 60, 60, np.nan, 79, 60, 60]
    # open at 85; 78 is within the margin (held); 60 once (held); 85 again; 60, 60: cleared; NaN: no forecast, no change
    assert policy.states(peaks).tolist() == [False, True, True, True, True, True, False, False, False, False, False]
    assert policy.next(True, 1, 60.0) == (False, 2) and policy.next(False, 0, 79.0) == (False, 0)


def test_a_reopening_within_the_grace_period_continues_the_episode() -> None:
    policy = AlertPolicy(threshold=80, margin=5, clear_cycles=2, grace_cycles=3)
    states = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1], dtype=bool)
    assert policy.episodes(states) == [(0, 5), (10, 10)]  # a gap of 3 cycles merges, a gap of 4 does not


def test_benchmark_events_merge_crossings_within_30_minutes_and_score_lead_and_episodes() -> None:
    from forecasting.bench.warning import overload_events, score_rule

    cpu = np.full(80, 50.0)
    cpu[[5, 20, 21, 25, 40]] = 90.0  # crossings at 5 (before the window), 20, 25 (15 min after 20: merged), 40
    assert overload_events(cpu, start=10, threshold=80, period=P) == [20, 40]
    policy = AlertPolicy(threshold=80, margin=5, clear_cycles=2, grace_cycles=2)
    origins = np.arange(8, 80)  # one cycle per row from row 8
    states = np.zeros(len(origins), dtype=bool)
    states[[0, 1, 2]] = True  # rows 8–10: 12, 11, 10 steps before the event at 20 — inside one horizon, ≥ 15 min ahead
    states[30] = True  # row 38: only 2 steps (10 min) before the event at 40 — too late to count, but the event begins in it
    states[[50, 51, 52]] = True  # rows 58–60: no event begins up to one horizon after: a false episode
    states[[56, 57]] = True  # rows 64–65: 3 cycles after the last one — beyond the grace, a second false episode
    scored = score_rule(states, origins, [20, 40], policy, horizon=12, lead_steps=3, period=P)
    assert (scored["events"], scored["caught"], scored["recall"]) == (2, 1, 0.5) and scored["leads"] == [60.0]
    assert (scored["episodes"], scored["right_episodes"], scored["false_episodes"]) == (4, 2, 2)
    assert scored["precision"] == pytest.approx(0.5) and scored["f1"] == pytest.approx(0.5)
    days = len(origins) * P / 86_400
    assert scored["false_per_day"] == pytest.approx(2 / days)
    assert scored["false_share"] == pytest.approx(5 / len(origins)) and scored["warning_share"] == pytest.approx(9 / len(origins))


def test_every_rule_in_the_benchmark_goes_through_the_same_policy() -> None:
    from forecasting.bench.warning import RULES, last_values, linear_forecasts

    assert RULES == ("headroom", "linear", "last_value")
    cpu = np.linspace(40, 100, 40)
    index = np.arange(40) * P
    lines = linear_forecasts(cpu, index, np.array([20]), 12, P)
    assert lines[0, -1] == pytest.approx(min(100.0, cpu[20] + 12 * (cpu[1] - cpu[0])))  # the ramp continues
    assert last_values(np.array([1.0, np.nan, np.nan, 4.0]), np.array([2, 3])).tolist() == [1.0, 4.0]


def test_the_benchmark_says_how_far_the_pooled_f1_moves_without_any_one_series() -> None:
    from forecasting.bench.warning import leave_one_out_f1, pool

    def scored(name: str, events: int, caught: int, episodes: int, right: int, pooled: bool = True) -> dict:
        return {
            "name": name,
            "pooled": pooled,
            "events": events,
            "leads": [60.0] * caught,
            "episodes": episodes,
            "right_episodes": right,
            "false_episodes": episodes - right,
            "cycles": 288,
            "days": 1.0,
            "warning_steps": 0,
            "false_steps": 0,
        }

    series = [
        scored("big", 80, 72, 10, 10),  # most of the events, nearly all caught
        scored("small", 10, 2, 4, 2),
        scored("other", 10, 5, 4, 3),
        scored("low threshold", 50, 0, 9, 0, pooled=False),  # never pooled, never left out
    ]
    spread = leave_one_out_f1(series)
    without_big = pool([s for s in series if s["name"] != "big"])["f1"]
    assert spread["low"] == pytest.approx(without_big) and spread["most_moved_by"] == "big"
    assert spread["low"] < pool(series)["f1"] < spread["high"]
    assert leave_one_out_f1(series[:1]) == {"low": None, "high": None, "most_moved_by": None}  # one series: nothing to leave out
