"""Streamlit pieces shared by several pages: empty states, the worker-health strip, the instance picker."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from app.format import ago_text, duration_text
from forecasting.clock import HOUR, MINUTE
from forecasting.settings import Settings
from forecasting.store import Heartbeat, Instance

INSTANCE_PAGE = "pages/instance.py"
JOBS = ("ingest", "retrain", "forecast", "digest")


def no_data_help(config: Settings) -> None:
    """The empty state before the worker has written anything: say how to start it."""
    st.info(
        f"**No data yet.** Nothing has been written to `{config.db}`: the worker has not run.\n\n"
        "Start it in another terminal with `make worker` (keeps running), or `.venv/bin/python worker.py --once` "
        "for a single cycle. `make run` starts the worker, this dashboard and the API together. "
        f"With no AWS settings the worker uses the built-in demo feed (source: `{config.source}`). "
        "This page refreshes by itself.",
        icon=":material/info:",
    )


def no_models_help() -> None:
    """The empty state while the first training runs: data is there, forecasts are not yet."""
    st.info(
        "**No models yet.** The first training is running: the worker trains every instance when it first "
        "sees it, which takes a few minutes with the default settings. Current CPU is shown meanwhile, "
        "and forecasts appear here by themselves.",
        icon=":material/hourglass_top:",
    )


def _job_badge(job: str, beat: Heartbeat | None, now: float, stale_after: float) -> str:
    if beat is None:
        return f":gray-badge[{job}: not run yet]"
    when = ago_text(beat.finished_at or beat.started_at, now)
    took = duration_text(beat.duration_seconds)
    if beat.state == "degraded":
        return f":orange-badge[{job} partly failed {when}]"
    if not beat.ok:
        return f":red-badge[{job} failed {when}]"
    colour = "orange" if now - beat.started_at > stale_after else "green"
    return f":{colour}-badge[{job} {when} · {took}]"


def health_strip(
    heartbeats: Mapping[str, Heartbeat], newest_sample: int | None, config: Settings, now: float | None = None
) -> None:
    """One line on the worker: when each job last ran, whether it failed, and how old the data is."""
    now = time.time() if now is None else now
    cadence = {
        "ingest": config.ingest_every * MINUTE,
        "forecast": config.ingest_every * MINUTE,
        "retrain": config.retrain_every * HOUR,
        "digest": config.digest_every * HOUR,
    }
    badges = [_job_badge(job, heartbeats.get(job), now, 3 * cadence[job]) for job in JOBS]
    if newest_sample is None:
        age = ":gray-badge[no data yet]"
    else:
        minutes = max(0, round((now - newest_sample) / 60))
        colour = "green" if minutes * 60 <= 3 * cadence["ingest"] else "red"
        age = f":{colour}-badge[data is {minutes} min old]"
    st.markdown("**Worker** &nbsp; " + " ".join(badges) + " &nbsp; " + age)
    errors = {job: beat.error for job, beat in heartbeats.items() if not beat.ok and beat.error}
    if errors:
        with st.expander(f"{len(errors)} job(s) failed or partly failed on their last run"):
            for job, error in errors.items():
                st.markdown(f"**{job}**: `{error}`")


def score_columns() -> dict[str, Any]:
    """Column formats for a table of model scores (Models page, Upload validation)."""
    return {
        "champion": st.column_config.CheckboxColumn("champion"),
        "mape": st.column_config.NumberColumn("MAPE %", format="%.2f"),
        "smape": st.column_config.NumberColumn("sMAPE %", format="%.2f"),
        "mase": st.column_config.NumberColumn(
            "MASE", format="%.3f", help="error scaled by the seasonal-naive in-sample error; lower is better"
        ),
        "rmse": st.column_config.NumberColumn("RMSE", format="%.2f"),
        "coverage": st.column_config.NumberColumn("coverage", format="%.2f", help="share of actuals inside the interval"),
        "fit_seconds": st.column_config.NumberColumn("fit s", format="%.2f"),
        "predict_seconds": st.column_config.NumberColumn("predict s", format="%.3f"),
    }


def instance_label(instance: Instance) -> str:
    """``name (id)``, or just the id when the instance has no name."""
    name, iid = instance.name, instance.instance_id
    return f"{name} ({iid})" if name and name != iid else iid


def _keep_in_url() -> None:
    """Widget callback: the chosen instance goes into the URL at once."""
    chosen = st.session_state.get("instance")
    if chosen:
        st.query_params["instance"] = chosen


def instance_picker(instances: Sequence[Instance], default: str | None, label: str = "Instance") -> str | None:
    """A select box kept in the URL as ``?instance=ID`` (so a view can be shared); starts on ``default``.

    The URL is the source of truth: a link opens that instance, a choice in the box rewrites the link.
    """
    labels = {inst.instance_id: instance_label(inst) for inst in instances}
    requested = st.query_params.get("instance")
    if requested in labels:
        st.session_state["instance"] = requested
    else:
        if requested is not None:
            st.warning(f"There is no instance {requested!r} in the store; showing another one instead.")
        if st.session_state.get("instance") not in labels and default in labels:
            st.session_state["instance"] = default
    chosen = st.selectbox(
        label,
        list(labels),
        index=None,
        format_func=labels.get,
        key="instance",
        on_change=_keep_in_url,
        placeholder="Pick an instance",
    )
    if chosen is not None and requested != chosen:
        st.query_params["instance"] = chosen
    return chosen
