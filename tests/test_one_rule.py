"""The Fleet page, the API and the mail say what the alert says about the same forecast: one crossing rule.

For each ``alert_on`` and a forecast that crosses on the point forecast, only at its 60 % level, only at its
upper bound, or not at all: the alert the worker's evaluation opens (or not), then the Fleet table, the
API's ``/metrics`` and ``/alerts`` (served by the app with a manual clock) and the alert mail and digest
built from the same store at the same time.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.fleet_table import build_fleet_table
from forecasting.alerts import evaluate_alerts, iso_utc
from forecasting.api import create_app
from forecasting.clock import DAY, ManualClock
from forecasting.crossing import AT_RISK, BASIS_MEANING
from forecasting.notify import alert_message, digest_message
from forecasting.settings import Settings, load_settings
from forecasting.store import Store

P = 300
T = 1_800_000_000
IID = "i-0abc0000000000007"
FORECASTS = {  # mean (the band is ± 6): which series reach 80 %
    "mean crosses": list(np.linspace(70, 90, 12)),
    "only likely crosses": list(np.linspace(60, 79.5, 12)),  # 60 % level 79.5 + 0.154 · 6 ≈ 80.4 at the last step
    "only upper crosses": list(np.linspace(62, 77, 12)),  # upper bound 83, 60 % level 77.9
    "nothing crosses": [40.0] * 12,
}
OPENS = {
    "mean": {"mean crosses"},
    "likely": {"mean crosses", "only likely crosses"},
    "upper": {"mean crosses", "only likely crosses", "only upper crosses"},
}


def champion_forecast(mean: list[float]) -> dict:
    """The instance's champion forecast made at T (origin one period before), with a band of ± 6."""
    return {
        "instance_id": IID,
        "run_id": 1,
        "model": "arima",
        "is_champion": True,
        "made_at": T,
        "origin_ts": T - P,
        "timestamps": [T + P * k for k in range(len(mean))],
        "mean": mean,
        "lower": [m - 6 for m in mean],
        "upper": [m + 6 for m in mean],
    }


def fleet_row(store: Store, settings: Settings) -> dict:
    """The instance's Fleet row, from the same reads the dashboard makes."""
    frame = build_fleet_table(
        store.samples.instances(),
        store.samples.trailing(DAY, "cpu"),
        store.forecasts.latest(champion_only=True),
        store.runs.latest(),
        store.alerts.open(),
        T,
        settings.alert_on,
        settings.alert_margin,
    )
    return frame.iloc[0].to_dict()


async def api_answers(settings: Settings) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """``/metrics`` (per metric: instance → value) and ``/alerts`` of an app whose clock stands at T."""
    app = create_app(settings, clock=ManualClock(T))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as session:
        text = (await session.get("/metrics")).text
        alerts = (await session.get("/alerts", params={"state": "open"})).json()["alerts"]
    metrics = {
        family.name: {s.labels["instance_id"]: s.value for s in family.samples if "instance_id" in s.labels}
        for family in text_string_to_metric_families(text)
    }
    return metrics, alerts


@pytest.mark.anyio
@pytest.mark.parametrize("alert_on", ["mean", "likely", "upper"])
@pytest.mark.parametrize("case", list(FORECASTS))
async def test_page_api_and_mail_agree_with_the_alert(tmp_path: Path, clean_env: Path, alert_on: str, case: str) -> None:
    settings = load_settings(db=tmp_path / "headroom.db", threshold=80, alert_margin=5, alert_on=alert_on)
    mean = FORECASTS[case]
    with Store(settings.db) as store:
        store.samples.upsert_instance(IID, "web-7", 80.0, T - DAY)
        store.samples.upsert((IID, "cpu", T - k * P, 60.0) for k in range(1, 13))
        store.forecasts.record([champion_forecast(mean)])
        before = fleet_row(store, settings)  # the page between the forecast and the alert evaluation
        evaluate_alerts(store, settings, T)
        alerts = store.alerts.recent()
        after = fleet_row(store, settings)
        metrics, api_alerts = await api_answers(settings)
        subject, digest, _, charts = digest_message(store, settings, T, T - DAY)

        assert bool(alerts) == (case in OPENS[alert_on])
        if not alerts:  # nobody says it will cross
            assert before["level"] not in AT_RISK and after["level"] not in AT_RISK and np.isnan(after["to_threshold_min"])
            assert IID not in metrics["headroom_minutes_to_limit"] and metrics["headroom_warning_open"][IID] == 0.0
            assert api_alerts == [] and "0 open alerts" in subject and "will cross" not in digest and "alert:" not in digest
            assert metrics["headroom_predicted_peak_cpu_percent"][IID] == pytest.approx(after["peak"])
            return
        (alert,) = alerts
        # the page: "will cross" before the evaluation, the alert after it; the same crossing, time to limit and peak
        assert (before["level"], after["level"]) == ("risk", "alert") and after["alert"] == f"open ({alert.basis})"
        for row in (before, after):
            assert row["crossing_ts"] == alert.crossing_ts and row["to_threshold_min"] == pytest.approx(
                alert.lead_minutes, abs=0.05
            )
            assert row["peak"] == pytest.approx(alert.peak, abs=0.005)
        # the API: the same minutes to the limit, peak and crossing time
        assert metrics["headroom_minutes_to_limit"][IID] == alert.lead_minutes and metrics["headroom_warning_open"][IID] == 1.0
        assert metrics["headroom_predicted_peak_cpu_percent"][IID] == pytest.approx(alert.peak, abs=0.005)
        (shown,) = api_alerts
        assert (shown["crossing_at"], shown["lead_minutes"], shown["peak"], shown["basis"]) == (
            iso_utc(alert.crossing_ts),
            alert.lead_minutes,
            alert.peak,
            alert.basis,
        )
        # the mail: the same crossing, lead, peak and basis; the digest lists it as alerted, with the same peak
        message = alert_message(store, settings, alert, T)
        text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert message["Subject"].endswith(f"will cross 80 % CPU in about {round(alert.lead_minutes)} min")
        assert f"Predicted crossing: {iso_utc(alert.crossing_ts)} (UTC)" in text and f"{alert.peak:.1f} % CPU" in text
        assert f"Confidence:         {BASIS_MEANING[alert.basis]}" in text
        fleet_line = next(line for line in digest.splitlines() if line.startswith(IID))
        assert f"{alert.peak:.1f}" in fleet_line and fleet_line.endswith(f"alert: crossing {iso_utc(alert.crossing_ts)}")
        assert len(charts) == 1


@pytest.mark.anyio
async def test_page_api_and_mail_agree_when_cpu_is_over_the_limit_now(tmp_path: Path, clean_env: Path) -> None:
    """A forecast that does not cross, and a newest sample (made after the forecast's origin) already over the limit."""
    settings = load_settings(db=tmp_path / "headroom.db", threshold=80, alert_margin=5)
    mean = FORECASTS["nothing crosses"]  # so only CPU now can open the alert
    with Store(settings.db) as store:
        store.samples.upsert_instance(IID, "web-7", 80.0, T - DAY)
        store.samples.upsert((IID, "cpu", T - k * P, 60.0) for k in range(1, 13))
        store.samples.upsert([(IID, "cpu", T, 92.0)])
        store.forecasts.record([champion_forecast(mean)])
        evaluate_alerts(store, settings, T)
        (alert,) = store.alerts.recent()
        row = fleet_row(store, settings)
        metrics, _ = await api_answers(settings)
        message = alert_message(store, settings, alert, T)

    assert (alert.basis, alert.crossing_ts, alert.lead_minutes, alert.peak) == ("now", T, 0.0, 92.0)
    assert row["level"] == "over" and row["crossing_ts"] == T and row["peak"] == 92.0
    assert metrics["headroom_minutes_to_limit"][IID] == 0.0 and metrics["headroom_predicted_peak_cpu_percent"][IID] == 92.0
    assert message["Subject"] == f"[Headroom] {IID} (web-7) is over 80 % CPU now"


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"
