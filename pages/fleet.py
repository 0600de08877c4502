"""Fleet (home): every instance in one table, worst first, with the worker's health on top."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from app import data, nav, ui
from app.fleet_table import LEVELS, level_counts
from app.format import when_text
from forecasting.crossing import AT_RISK

TABLE_COLUMNS = [
    "status",
    "name",
    "instance_id",
    "cpu_now",
    "sparkline",
    "peak",
    "threshold",
    "to_threshold_min",
    "alert",
    "champion",
    "link",
]
SHOWN_LINKS = 8

nav.require_entry()
config = data.settings()
db = data.db_key(config)
st.title("Fleet")
st.caption(
    f"Instances sorted by risk, worst first; "
    f"forecast horizon {config.horizon * config.period // 60} min. Refreshes every {data.REFRESH_SECONDS} s."
)


def _style(frame: pd.DataFrame) -> pd.io.formats.style.Styler:
    """Colour the status cell of each row by its level, so risk reads at a glance."""
    colours = frame["level"].map(lambda key: f"background-color: {LEVELS[key].colour}")
    return frame.style.apply(lambda _: colours, subset=["status"])


def _table(frame: pd.DataFrame) -> None:
    column_config = {
        "status": st.column_config.TextColumn("Status", width="small"),
        "name": st.column_config.TextColumn("Name", width="small"),
        "instance_id": st.column_config.TextColumn("Instance", width="medium"),
        "cpu_now": st.column_config.ProgressColumn("CPU now", min_value=0, max_value=100, format="%.0f %%", width="small"),
        "sparkline": st.column_config.LineChartColumn("CPU, last 24 h", y_min=0, y_max=100, width="medium"),
        "peak": st.column_config.NumberColumn(
            "Peak",
            format="%.0f %%",
            width="small",
            help="Highest forecast within the horizon, as the alerts read it (HEADROOM_ALERT_ON)",
        ),
        "threshold": st.column_config.NumberColumn("Limit", format="%.0f %%", width="small"),
        "to_threshold_min": st.column_config.NumberColumn(
            "Min to limit",
            format="%.0f",
            width="small",
            help="Minutes until the forecast first reaches the limit, by the alerts' rule",
        ),
        "alert": st.column_config.TextColumn("Alert", width="small"),
        "champion": st.column_config.TextColumn(
            "Champion", width=115, help="Model with the lowest backtest MASE on this instance"
        ),
        "link": st.column_config.LinkColumn(
            "Link", display_text="open", width="small", help="A shareable link to the instance page"
        ),
    }
    columns = TABLE_COLUMNS
    if frame["threshold"].nunique() == 1:  # one limit for all: say it once instead of in every row
        columns = [c for c in TABLE_COLUMNS if c != "threshold"]
        st.caption(f"Every instance's CPU limit is {frame['threshold'].iloc[0]:.0f} %.")
    event = st.dataframe(
        _style(frame),
        column_order=columns,
        column_config=column_config,
        hide_index=True,
        placeholder="—",
        on_select="rerun",
        selection_mode="single-row",
        key="fleet_table",
        height=min(38 + 35 * len(frame), 720),
    )
    rows = event.selection.rows if event is not None else []
    if rows:
        st.switch_page(ui.INSTANCE_PAGE, query_params={"instance": frame.iloc[rows[0]]["instance_id"]})


@st.fragment(run_every=data.REFRESH_SECONDS)
def live() -> None:
    """The part that refreshes by itself: health strip, summary, links to instances at risk, the table."""
    frame = data.load_fleet(db, config.alert_on, config.alert_margin)
    newest = int(frame["last_sample_ts"].max()) if not frame.empty and frame["last_sample_ts"].notna().any() else None
    ui.health_strip(data.load_heartbeats(db), newest, config)
    if frame.empty:
        ui.no_data_help(config)
        return
    if (frame["champion"] == "—").all():
        ui.no_models_help()
    counts = level_counts(frame)
    cols = st.columns(4)
    cols[0].metric("Instances", len(frame))
    cols[1].metric("Over limit or alert open", counts.get("over", 0) + counts.get("alert", 0))
    cols[2].metric("Predicted to cross", counts.get("risk", 0))
    cols[3].metric("Near the limit", counts.get("watch", 0))
    risky = frame[frame["level"].isin(AT_RISK)].head(SHOWN_LINKS)
    for row in risky.itertuples():
        when = when_text(row.to_threshold_min)
        st.page_link(
            ui.INSTANCE_PAGE,
            label=f"{row.name} ({row.instance_id}): {LEVELS[row.level].badge}, reaches the limit {when}",
            icon=LEVELS[row.level].icon,
            query_params={"instance": row.instance_id},
        )
    _table(frame)
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    labels = dict(zip(frame["instance_id"], frame["name"] + " (" + frame["instance_id"] + ")", strict=True))
    chosen = left.selectbox("Open an instance", list(labels), format_func=labels.get, key="open_instance")
    right.page_link(
        ui.INSTANCE_PAGE, label=f"Open {labels[chosen]}", icon=":material/open_in_new:", query_params={"instance": chosen}
    )
    st.caption(f"Updated {time.strftime('%H:%M:%S', time.gmtime())} UTC. Select a row or use a link to open an instance.")


live()
