"""Instance: CPU with the forecast, its band, the threshold and the predicted crossing; memory and network below.

The instance is kept in the URL (``?instance=ID``) so a view can be shared.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import pandas as pd
import streamlit as st

from app import charts, data, nav, ui
from app.format import ago_text, minutes_to_text, percent_text, utc_text
from forecasting.crossing import minutes_to_limit, outlook, shown_crossing
from forecasting.store import AlertRecord

RANGES = {"6 h": 6, "24 h": 24, "3 d": 72, "7 d": 168}

nav.require_entry()
config = data.settings()
db = data.db_key(config)
st.title("Instance")
instances = data.load_instances(db)
if not instances:
    ui.no_data_help(config)
    st.stop()

fleet = data.load_fleet(db, config.alert_on, config.alert_margin)
default = fleet["instance_id"].iloc[0] if not fleet.empty else instances[0].instance_id
left, middle, right = st.columns([3, 2, 2], vertical_alignment="bottom")
with left:
    instance_id = ui.instance_picker(instances, default)
with middle:
    span = st.segmented_control("Time range", list(RANGES), default="24 h", key="range", required=True) or "24 h"
with right:
    show_all = st.toggle("Overlay every model's forecast", key="all_models")
if instance_id is None:
    st.info("Pick an instance above, or open one from the Fleet page.")
    st.stop()


def _alerts_table(alerts: list[AlertRecord]) -> None:
    frame = pd.DataFrame([asdict(alert) for alert in alerts])
    frame["opened"] = frame["opened_at"].map(utc_text)
    frame["predicted crossing"] = frame["crossing_ts"].map(utc_text)
    frame["outcome"] = frame["outcome"].fillna("")
    st.dataframe(
        frame[["alert_id", "state", "opened", "predicted crossing", "lead_minutes", "peak", "model", "basis", "outcome"]],
        hide_index=True,
        placeholder="—",
        column_config={
            "lead_minutes": st.column_config.NumberColumn("lead (min)", format="%.0f"),
            "peak": st.column_config.NumberColumn("peak", format="%.0f %%"),
        },
    )


@st.fragment(run_every=data.REFRESH_SECONDS)
def live(instance_id: str, hours: float, show_all: bool) -> None:
    """Headline numbers and the linked chart; re-runs by itself to pick up new forecasts."""
    view = data.load_instance(db, instance_id, hours)
    if view is None:
        st.warning(f"Instance {instance_id} is no longer in the store.")
        return
    samples, forecasts, run, past = view.samples, view.forecasts, view.run, view.past
    threshold = float(view.instance.threshold)
    champion = next((f for f in forecasts if f.is_champion), None)
    open_alert = next((a for a in view.alerts if a.state == "open"), None)
    cpu_ts, cpu = samples.get("cpu", ([], []))
    latest = (int(cpu_ts[-1]), float(cpu[-1])) if len(cpu) else None  # the newest sample (ts, CPU)
    last_ts, cpu_now = latest or (None, None)
    now = time.time()
    # the alerts' rule, as on the Fleet page
    seen = outlook(champion, threshold, config.alert_on, now, latest) if champion else None
    crossing = shown_crossing(seen, open_alert.crossing_ts if open_alert else None, threshold, last_ts, cpu_now)

    cols = st.columns([1, 1, 1, 1.5, 1])
    cols[0].metric("CPU now", percent_text(cpu_now), help=f"at {utc_text(view.newest)}")
    cols[1].metric(
        "Predicted peak",
        percent_text(seen.peak if seen is not None else None),
        help=f"highest forecast in the next {config.horizon * config.period // 60} min, as the alerts read it "
        f"(HEADROOM_ALERT_ON={config.alert_on})",
    )
    cols[2].metric(
        "Time to limit", minutes_to_text(minutes_to_limit(crossing, now) if crossing else None), help=f"limit {threshold:.0f} %"
    )
    cols[3].metric("Champion", (run.champion if run else None) or "—", help="lowest backtest MASE in the latest training run")
    cols[4].metric(
        "Alert", "open" if open_alert else "none", help=f"opened {ago_text(open_alert.opened_at, now)}" if open_alert else None
    )
    if run is None:
        ui.no_models_help()
    figure = charts.instance_figure(
        samples, forecasts, threshold, run.champion if run else None, show_all, crossing, past, config.metrics
    )
    st.plotly_chart(figure, key="instance_chart", config={"displaylogo": False})
    if champion:
        st.caption(
            f"Forecast by {champion.model} made {ago_text(champion.made_at, now)} from data up to "
            f"{utc_text(champion.origin_ts)}; the band is the calibrated interval from the backtest."
            + (
                f" The dotted line is the forecast deployed {ago_text(past.made_at, now)}, over what happened since."
                if past
                else ""
            )
        )
    if view.alerts:
        st.subheader("Alerts on this instance")
        _alerts_table(view.alerts)


st.caption(
    f"{ui.instance_label(next(i for i in instances if i.instance_id == instance_id))} · "
    f"share this view: `?instance={instance_id}`"
)
live(instance_id, RANGES[span], bool(show_all))
