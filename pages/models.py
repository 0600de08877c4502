"""Models: every model's backtest scores per instance, one instance's backtest, and the champion's history."""

from __future__ import annotations

import streamlit as st

from app import charts, data, nav, ui
from app.format import SCORE_COLUMNS, utc_text
from forecasting.models import FAMILIES


def family_table() -> list[dict[str, object]]:
    """One row per declared model family (forecasting.models.FAMILIES), what it is and what it needs."""
    return [
        {
            "model": f.name,
            "kind": f.kind,
            "what it forecasts": f.summary,
            "needs (days)": f.min_history_days,
            "reads": "what its members read" if f.combines else ", ".join(f.inputs),
            "default": f.default,
        }
        for f in FAMILIES.values()
    ]


INSTANCE_SCORE_COLUMNS = ["name", "instance_id", *SCORE_COLUMNS]
METRICS = {"mase": "MASE", "mape": "MAPE", "smape": "sMAPE", "rmse": "RMSE", "coverage": "coverage", "fit_seconds": "fit seconds"}

nav.require_entry()
config = data.settings()
db = data.db_key(config)
st.title("Models")
instances = data.load_instances(db)
if not instances:
    ui.no_data_help(config)
    st.stop()
scores = data.load_scores(db)
if scores.empty:
    ui.no_models_help()
    st.stop()

st.caption(
    "Scores come from a rolling-origin backtest on each instance's recent past (latest training run). "
    "MASE scales each model's error by the seasonal-naive in-sample error (lower is better). "
    "The champion (what is deployed) is `combined`, the median of the three best models, unless one model "
    "beats it clearly on both halves of the backtest. Click a header to sort."
)
st.dataframe(
    scores[INSTANCE_SCORE_COLUMNS],
    hide_index=True,
    placeholder="—",
    key="scores_table",
    column_config=ui.score_columns(),
)
st.subheader("Realised accuracy: the stored forecasts against what happened")
realised = data.load_realised(db)
if realised.empty:
    st.info(
        "No forecast has been scored yet: a forecast is scored once all its steps have arrived (the horizon plus "
        "15 minutes after it was made), so figures appear about 75 minutes after the worker starts forecasting."
    )
else:
    window = st.radio("Forecasts made in the last", ["day", "week"], horizontal=True, key="realised_window")
    st.caption(
        "Every stored forecast scored against the CPU that arrived; `auto` is what was deployed (the champion's "
        "forecasts). MASE divides by the instance's mean one-day seasonal difference over the two days before."
    )
    st.dataframe(
        realised[realised["window"] == window][["name", "instance_id", "model", "mape", "mase", "coverage", "points"]],
        hide_index=True,
        placeholder="—",
        key="realised_table",
        column_config=ui.score_columns(),
    )

metric = st.columns(3)[0].selectbox("Score to chart", list(METRICS), format_func=METRICS.get, key="score_metric")
st.plotly_chart(charts.scores_figure(scores, metric), key="scores_chart", config={"displaylogo": False})
with st.expander("Model families"):
    st.dataframe(family_table(), hide_index=True, key="families_table")

st.header("One instance")
fleet = data.load_fleet(db, config.alert_on, config.alert_margin)
instance_id = ui.instance_picker(instances, fleet["instance_id"].iloc[0] if not fleet.empty else None)
if instance_id is None:
    st.stop()
runs = data.load_runs(db, instance_id)
if runs.empty:
    ui.no_models_help()
    st.stop()
latest = runs.iloc[0]
mine = scores[scores["instance_id"] == instance_id]
st.plotly_chart(charts.scores_figure(mine, metric), key="instance_scores_chart", config={"displaylogo": False})

st.subheader("Backtest: predicted versus actual at each origin")
points = data.load_backtest(db, int(latest["run_id"]))
if points.empty:
    st.info("This training run stored no backtest points (too little history to backtest).")
else:
    models = sorted(points["model"].unique())
    default = [latest["champion"]] if latest["champion"] in models else models[:1]
    chosen = st.multiselect("Models", models, default=default, key="backtest_models")
    st.plotly_chart(charts.backtest_figure(points, chosen), key="backtest_chart", config={"displaylogo": False})
    st.caption(
        f"Run {int(latest['run_id'])} trained on {utc_text(latest['train_start'])} – {utc_text(latest['train_end'])} "
        f"({int(latest['points'])} points); {points['origin_ts'].nunique()} origins."
    )

st.subheader("Champion history")
st.plotly_chart(charts.champion_history_figure(runs), key="champion_chart", config={"displaylogo": False})
history = runs.assign(finished=runs["finished_at"].map(utc_text), seconds=runs["finished_at"] - runs["started_at"])
st.dataframe(history[["run_id", "finished", "champion", "points", "seconds"]], hide_index=True, placeholder="—", key="runs_table")
