"""Upload: drop a CloudWatch export, see it plotted, then Validate models on it or Predict what comes next.

Only the Validate and Predict buttons import the engine (and so TensorFlow), lazily;
nothing uploaded is written to the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pandas as pd
import streamlit as st

from app import charts, data, nav, ui
from app.upload import (
    VALIDATE_CHOICES,
    backtest_frame,
    describe,
    forecast_csv,
    forecast_json,
    plain_forecast,
    scores_frame,
    validate_models,
)
from forecasting.metrics import METRICS, TARGET
from forecasting.models import MODEL_NAMES
from forecasting.sources.export import ExportError, ParsedExport, parse_export

EXPORT_HELP = """Export with the AWS CLI, for example:

```sh
aws cloudwatch get-metric-data --start-time 2026-11-20T00:00:00Z --end-time 2026-11-27T00:00:00Z \\
  --metric-data-queries '[{"Id":"cpu","MetricStat":{"Metric":{"Namespace":"AWS/EC2","MetricName":"CPUUtilization",
  "Dimensions":[{"Name":"InstanceId","Value":"i-0abc1234def567890"}]},"Period":300,"Stat":"Average"}}]' > export.json
```

Name queries NAMES (or include the instance id, e.g. `cpu_i_0abc…`).
A CSV works too: a `timestamp` column (ISO 8601 or unix seconds) and a `cpu` column, optionally INPUTS.
At least two days of 5-minute data let every model run; less runs the baselines and ARIMA only.""".replace(
    "NAMES", ", ".join(f"`{key}`" for key in METRICS)
).replace("INPUTS", ", ".join(f"`{key}`" for key in METRICS if key != TARGET))

nav.require_entry()
config = data.settings()
st.title("Upload")
st.caption("Check how the models do on your own data, or forecast from it. Nothing uploaded is stored.")


@st.cache_data(max_entries=4, show_spinner="Reading the export…")
def parse_upload(raw: bytes, name: str, limit: int) -> ParsedExport:
    """Parse once per file (the page re-runs on every click)."""
    return parse_export(raw, instance="upload", name=name, limit_bytes=limit)


def progress_bar(label: str) -> tuple[Callable[[str, float], None], object]:
    """A progress bar and the ``progress(stage, fraction)`` callback the engine calls while training."""
    bar = st.progress(0.0, text=label)

    def report(stage: str, fraction: float) -> None:
        bar.progress(min(1.0, max(0.0, float(fraction))), text=stage)

    return report, bar


def one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:300]


uploaded = st.file_uploader("CloudWatch `get-metric-data` JSON export, or a CSV", type=["json", "csv", "txt"], key="upload_file")
if uploaded is None:
    st.info(EXPORT_HELP, icon=":material/description:")
    st.stop()
raw = uploaded.getvalue()
try:
    parsed = parse_upload(raw, uploaded.name, int(config.import_limit_mb * 1e6))
except ExportError as error:
    st.error(str(error), icon=":material/block:")
    st.stop()

instances = parsed.instances
instance_id = st.selectbox("Instance in this file", instances, key="upload_instance") if len(instances) > 1 else instances[0]
series = parsed.series[instance_id]
threshold = config.threshold_for(instance_id)
st.caption(f"**{instance_id}**: {describe(series)}")
st.plotly_chart(charts.series_figure(series), key="upload_chart", config={"displaylogo": False})

digest = hashlib.sha256(raw).hexdigest()[:16] + ":" + instance_id
result = st.session_state.get("upload_result")
if result is not None and result["digest"] != digest:
    result = st.session_state["upload_result"] = None

validate_tab, predict_tab = st.tabs(["Validate", "Predict"])
with validate_tab:
    choice = (
        st.segmented_control("Models to backtest", list(VALIDATE_CHOICES), default="ARIMA", key="validate_choice", required=True)
        or "ARIMA"
    )
    st.caption("A rolling-origin backtest on this upload; the baselines run beside the choice. LSTM and TCN train for a while.")
    if st.button("Validate", type="primary", key="validate"):
        report, bar = progress_bar("starting…")
        try:
            from forecasting.training import validate_samples  # lazily: imports the models (and TensorFlow)

            done = validate_samples(series, config, models=validate_models(choice, config.models), progress=report)
            result = {
                "digest": digest,
                "kind": "validate",
                "choice": choice,
                "champion": done.champion,
                "scores": list(done.scores),
                "backtest": list(done.backtest),
            }
            st.session_state["upload_result"] = result
        except Exception as error:  # any failure of the engine on user data: one line, page stays usable
            bar.empty()
            st.error(f"validation failed: {one_line(error)}", icon=":material/block:")
    if result is not None and result["kind"] == "validate":
        st.subheader(f"Scores ({result['choice']}); champion: {result['champion'] or 'none'}")
        st.dataframe(
            scores_frame(result["scores"], result["champion"]),
            hide_index=True,
            placeholder="—",
            key="validate_scores",
            column_config=ui.score_columns(),
        )
        points = backtest_frame(result["backtest"])
        models = list(pd.unique(points["model"])) if not points.empty else []
        shown = [result["champion"]] if result["champion"] in models else models[:1]
        st.plotly_chart(charts.backtest_figure(points, shown), key="validate_chart", config={"displaylogo": False})

with predict_tab:
    left, right = st.columns(2)
    model = left.selectbox(
        "Model",
        ["auto", *MODEL_NAMES],
        key="predict_model",
        format_func=lambda m: "auto (what training would deploy on this upload)" if m == "auto" else m,
    )
    horizon = right.number_input(
        "Steps ahead",
        min_value=1,
        max_value=288,
        value=config.horizon,
        key="predict_horizon",
        help=f"one step is {config.period // 60} min",
    )
    if st.button("Predict", type="primary", key="predict"):
        report, bar = progress_bar("starting…")
        try:
            from forecasting.training import predict_samples  # lazily: imports the models (and TensorFlow)

            forecast = predict_samples(series, config, model=model, horizon=int(horizon), progress=report)
            result = {"digest": digest, "kind": "predict", "forecast": plain_forecast(forecast)}
            st.session_state["upload_result"] = result
        except Exception as error:  # any failure of the engine on user data: one line, page stays usable
            bar.empty()
            st.error(f"prediction failed: {one_line(error)}", icon=":material/block:")
    if result is not None and result["kind"] == "predict":
        forecast = result["forecast"]
        st.plotly_chart(
            charts.forecast_figure(series["cpu"], forecast, threshold), key="predict_chart", config={"displaylogo": False}
        )
        left, right, _ = st.columns([1, 1, 4])
        left.download_button(
            "Download CSV", forecast_csv(forecast), file_name=f"forecast-{instance_id}.csv", mime="text/csv", key="download_csv"
        )
        right.download_button(
            "Download JSON",
            forecast_json(forecast, instance_id),
            file_name=f"forecast-{instance_id}.json",
            mime="application/json",
            key="download_json",
        )
