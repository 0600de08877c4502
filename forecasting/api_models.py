"""The JSON API's answers: their documented shapes (the OpenAPI schema at ``/openapi.json``) and
how each is built from the store (``build_*``, plain functions of a ``Store``; no HTTP here).

Every timestamp is an ISO 8601 UTC string (``2025-01-31T12:05:00Z``); every error is an
:class:`ErrorResponse`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from forecasting import __version__
from forecasting.clock import MINUTE
from forecasting.crossing import BASIS_MEANING
from forecasting.metrics import METRICS
from forecasting.scoring import realised_scores
from forecasting.settings import Settings
from forecasting.store import AlertRecord, ForecastRecord, Heartbeat, Instance, Score, Store, TrainingRun
from forecasting.store.runs import SCORE_FIELDS


def utc(ts: int | float | None) -> datetime | None:
    """Unix seconds → an aware UTC datetime (serialised as ISO 8601 with ``Z``); None stays None."""
    return None if ts is None else datetime.fromtimestamp(int(ts), UTC)


class ErrorResponse(BaseModel):
    """Any 4xx/5xx answer: one line saying what is wrong."""

    detail: str = Field(examples=["instance 'i-0nope' is not monitored"])


class JobStatus(BaseModel):
    """The last run of one worker job."""

    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    ok: bool = Field(description="true only when the state is ok")
    state: Literal["ok", "degraded", "failed"] = Field(
        description="ok; degraded: it ran but part of it failed (some instances, a mail); failed: it did not complete"
    )
    counts: dict[str, int] = Field(default_factory=dict, description="what the job did, e.g. trained, failed, stand_ins")
    error: str | None = Field(description="one line: why it failed, or its first problem when degraded")
    detail: str | None = Field(description="the job's one-line summary when it ran")

    @classmethod
    def from_beat(cls, beat: Heartbeat) -> JobStatus:
        return cls(
            started_at=utc(beat.started_at),
            finished_at=utc(beat.finished_at),
            ok=beat.ok,
            state=beat.state,
            counts=beat.counts,
            duration_seconds=beat.duration_seconds,
            error=beat.error,
            detail=beat.detail,
        )


class Health(BaseModel):
    """Is the service alive, is its data fresh and does every instance have a current forecast."""

    status: Literal["ok", "stale", "degraded", "empty"] = Field(
        description="ok: fresh data, every job's last run ok, every instance forecast by a usable model; "
        "degraded: a job's last run failed or partly failed, or an instance has no usable model or a stale forecast; "
        "stale: no new sample for a while; empty: nothing ingested yet"
    )
    version: str
    now: datetime
    details: bool = Field(
        True, description="false when a token is configured and the request did not carry it: only status and version are shown"
    )
    instances: int | None = None
    newest_sample_at: datetime | None = None
    data_age_seconds: float | None = Field(None, description="seconds since the newest CPU sample of any instance")
    jobs: dict[str, JobStatus] | None = Field(None, description="last run of each worker job (ingest, retrain, forecast, digest)")
    without_model: list[str] | None = Field(None, description="instances with no usable model (never trained, or none loads)")
    stale_forecasts: list[str] | None = Field(
        None, description="instances whose newest champion forecast is older than three ingest cycles"
    )


class OpenAlert(BaseModel):
    """The open alert of an instance, in short."""

    alert_id: int
    crossing_at: datetime
    lead_minutes: float
    peak: float

    @classmethod
    def from_alert(cls, alert: AlertRecord) -> OpenAlert:
        return cls(alert_id=alert.alert_id, crossing_at=utc(alert.crossing_ts), lead_minutes=alert.lead_minutes, peak=alert.peak)


class InstanceInfo(BaseModel):
    """One monitored instance."""

    instance_id: str
    name: str | None
    threshold: float = Field(description="CPU percent that counts as overload")
    first_seen: datetime
    last_seen: datetime
    last_sample_at: datetime | None
    champion: str | None = Field(description="model chosen by the latest training run")
    trained_at: datetime | None
    open_alert: OpenAlert | None


class InstanceList(BaseModel):
    instances: list[InstanceInfo]


class Prediction(BaseModel):
    """The latest champion forecast of one instance: one value per future timestamp."""

    instance_id: str
    model: str
    run_id: int
    threshold: float | None
    made_at: datetime = Field(description="wall clock when the forecast was made")
    origin_at: datetime = Field(description="the last sample the forecast used")
    timestamps: list[datetime]
    mean: list[float] = Field(description="point forecast, CPU percent")
    lower: list[float] = Field(description="lower bound of the calibrated interval")
    upper: list[float] = Field(description="upper bound of the calibrated interval")

    @classmethod
    def from_forecast(cls, forecast: ForecastRecord, threshold: float | None) -> Prediction:
        return cls(
            instance_id=forecast.instance_id,
            model=forecast.model,
            run_id=forecast.run_id,
            threshold=threshold,
            made_at=utc(forecast.made_at),
            origin_at=utc(forecast.origin_ts),
            timestamps=[utc(t) for t in forecast.timestamps],
            mean=forecast.mean,
            lower=forecast.lower,
            upper=forecast.upper,
        )


class PredictionList(BaseModel):
    predictions: list[Prediction]


class ModelScore(BaseModel):
    """Backtest scores of one model (status 'skipped' carries the reason and no scores)."""

    model: str
    status: Literal["ok", "skipped"]
    reason: str | None
    mape: float | None = Field(description="mean absolute percentage error, %")
    smape: float | None = Field(description="symmetric MAPE, %")
    mase: float | None = Field(description="mean absolute scaled error (used to choose the champion)")
    rmse: float | None
    coverage: float | None = Field(description="share of actual values inside the interval")
    fit_seconds: float | None
    predict_seconds: float | None
    is_champion: bool

    @classmethod
    def from_row(cls, row: Score | Mapping[str, Any], champion: str | None) -> ModelScore:
        """From a stored ``Score`` or a ``TrainingResult.scores`` item (non-finite numbers become null)."""
        values = asdict(row) if isinstance(row, Score) else row
        clean = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in ((k, values[k]) for k in SCORE_FIELDS)
        }
        return cls(**clean, is_champion=values["model"] == champion)


class RealisedScore(BaseModel):
    """How right one model's stored forecasts were once their actuals arrived (``auto``: the deployed forecasts)."""

    model: str
    window: Literal["day", "week"] = Field(description="forecasts made in the last 24 hours or 7 days (by hour made)")
    mape: float | None = Field(description="mean absolute percentage error, %")
    mase: float | None = Field(description="mean absolute error ÷ the instance's one-day seasonal difference")
    coverage: float | None = Field(description="share of actual values inside the interval")
    points: int = Field(description="forecast steps scored")


class Comparison(BaseModel):
    """Model scores of an instance's latest training run (backtest), its champion, and the realised accuracy."""

    instance_id: str
    run_id: int
    trained_at: datetime
    train_start: datetime | None
    train_end: datetime | None
    points: int
    champion: str | None
    scores: list[ModelScore]
    realised: list[RealisedScore] = Field(default_factory=list)

    @classmethod
    def from_run(
        cls, run: TrainingRun, scores: list[Score], realised: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None
    ) -> Comparison:
        """From a training run, its model scores and ``scoring.realised_scores`` of the instance."""
        measured = [
            RealisedScore(model=model, window=window, **{k: values[k] for k in ("mape", "mase", "coverage", "points")})
            for model, windows in sorted((realised or {}).items())
            for window, values in windows.items()
            if values["points"]
        ]
        return cls(
            instance_id=run.instance_id,
            run_id=run.run_id,
            trained_at=utc(run.finished_at),
            train_start=utc(run.train_start),
            train_end=utc(run.train_end),
            points=run.points,
            champion=run.champion,
            scores=[ModelScore.from_row(score, run.champion) for score in scores],
            realised=measured,
        )


class ComparisonList(BaseModel):
    comparisons: list[Comparison]


class Alert(BaseModel):
    """An early warning: the forecast said CPU would cross the threshold."""

    alert_id: int
    instance_id: str
    state: Literal["open", "cleared"]
    opened_at: datetime
    updated_at: datetime
    cleared_at: datetime | None
    threshold: float
    crossing_at: datetime = Field(description="predicted crossing time (latest forecast)")
    lead_minutes: float = Field(description="minutes between opening and the predicted crossing")
    peak: float
    model: str
    basis: str = Field(description="; ".join(f"'{key}': {meaning}" for key, meaning in BASIS_MEANING.items()))
    actual_crossing_at: datetime | None
    outcome: str | None = Field(description="caught, late or false, once known")
    emailed_at: datetime | None

    @classmethod
    def from_alert(cls, a: AlertRecord) -> Alert:
        return cls(
            alert_id=a.alert_id,
            instance_id=a.instance_id,
            state=a.state,
            opened_at=utc(a.opened_at),
            updated_at=utc(a.updated_at),
            cleared_at=utc(a.cleared_at),
            threshold=a.threshold,
            crossing_at=utc(a.crossing_ts),
            lead_minutes=a.lead_minutes,
            peak=a.peak,
            model=a.model,
            basis=a.basis,
            actual_crossing_at=utc(a.actual_crossing_ts),
            outcome=a.outcome,
            emailed_at=utc(a.emailed_at),
        )


class AlertList(BaseModel):
    alerts: list[Alert]


class UploadForecast(BaseModel):
    """A forecast made from an uploaded export, from its last sample on."""

    instance_id: str
    model: str = Field(description="the model that made it (the backtest champion when model=auto)")
    horizon: int
    samples: int = Field(description="CPU samples in the export")
    origin_at: datetime
    timestamps: list[datetime]
    mean: list[float]
    lower: list[float]
    upper: list[float]
    seconds: float = Field(description="time spent fitting and forecasting")

    @classmethod
    def from_forecast(cls, instance_id: str, forecast: Any, samples: int, period: int, seconds: float) -> UploadForecast:
        """From a ``models.base.Forecast`` (values rounded like the stored forecasts)."""
        return cls(
            instance_id=instance_id,
            model=forecast.model,
            horizon=len(forecast.timestamps),
            samples=samples,
            origin_at=utc(int(forecast.timestamps[0]) - period),
            timestamps=[utc(int(t)) for t in forecast.timestamps],
            mean=[round(float(v), 4) for v in forecast.mean],
            lower=[round(float(v), 4) for v in forecast.lower],
            upper=[round(float(v), 4) for v in forecast.upper],
            seconds=round(seconds, 3),
        )


class Validation(BaseModel):
    """Backtest scores of the chosen model (or all configured models) on an uploaded export."""

    instance_id: str
    points: int
    train_start: datetime | None
    train_end: datetime | None
    champion: str | None
    scores: list[ModelScore]
    seconds: float

    @classmethod
    def from_result(cls, instance_id: str, result: Any, seconds: float) -> Validation:
        """From a ``training.TrainingResult`` of ``validate_samples``."""
        return cls(
            instance_id=instance_id,
            points=result.run["points"],
            train_start=utc(result.run["train_start"]),
            train_end=utc(result.run["train_end"]),
            champion=result.champion,
            scores=[ModelScore.from_row(row, result.champion) for row in result.scores],
            seconds=round(seconds, 3),
        )


EXPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["MetricDataResults"],
    "properties": {
        "MetricDataResults": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["Id", "Timestamps", "Values"],
                "properties": {
                    "Id": {
                        "type": "string",
                        "examples": list(METRICS),
                        "description": "names the metric: " + ", ".join(METRICS) + " (or its CloudWatch name), optionally with "
                        "the instance id, e.g. cpu_i_0abc123def4567890",
                    },
                    "Label": {"type": "string", "examples": ["i-0abc123def4567890 CPUUtilization"]},
                    "Timestamps": {"type": "array", "items": {"type": "string", "format": "date-time"}},
                    "Values": {"type": "array", "items": {"type": "number"}},
                    "StatusCode": {"type": "string"},
                },
            },
        }
    },
}
"""The upload body as OpenAPI documents it: what ``aws cloudwatch get-metric-data`` prints."""

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": f"The JSON printed by `aws cloudwatch get-metric-data` (queries named {', '.join(METRICS)}; an instance "
        "id in the Id or Label, or ?instance=); a CSV with a timestamp column and a cpu column works too.",
        "content": {"application/json": {"schema": EXPORT_SCHEMA}},
    }
}


# ---- building answers from the store ------------------------------------------------
class UnknownInstance(LookupError):
    """An instance id that is not monitored (the API answers 404)."""


def known_instance(store: Store, instance_id: str) -> Instance:
    """The stored instance, or UnknownInstance."""
    found = store.samples.instance(instance_id)
    if found is None:
        raise UnknownInstance(f"instance {instance_id!r} is not monitored")
    return found


def build_health(store: Store, settings: Settings, now: float, details: bool = True) -> Health:
    """Status, data age, the worker's last job runs and the instances without a usable, current forecast.

    Stale: no new sample for three ingest cycles. Degraded: a job's last run failed or partly failed, an
    instance has no usable model, or its champion forecast is older than three ingest cycles. Samples
    stamped in the future (only an old import could hold them) do not count as fresh data.
    """
    late = 3 * settings.ingest_every * MINUTE + settings.period
    known = store.samples.instances()
    stamps = [ts for inst in known if (ts := store.samples.newest_ts(inst.instance_id)) is not None]
    newest = max((ts for ts in stamps if ts <= now + settings.period), default=None)
    jobs = {job: JobStatus.from_beat(beat) for job, beat in store.jobs.heartbeats().items()}
    runs = store.runs.latest()
    reported = set(json.loads(store.jobs.get_meta("instances_without_model") or "[]"))
    trained = {iid for iid, run in runs.items() if run.model_dir}
    without = sorted(i.instance_id for i in known if i.instance_id in reported or i.instance_id not in trained)
    made = store.forecasts.champion_times()
    stale = sorted(i for i in (inst.instance_id for inst in known) if i not in without and made.get(i, -late) < now - late)
    age = now - newest if newest is not None else None
    if age is None:
        status = "empty"
    elif any(job.state != "ok" for job in jobs.values()) or without or stale:
        status = "degraded"
    else:
        status = "stale" if age > late else "ok"
    if not details:
        return Health(status=status, version=__version__, now=utc(now), details=False)
    return Health(
        status=status,
        version=__version__,
        now=utc(now),
        instances=len(known),
        newest_sample_at=utc(newest),
        data_age_seconds=None if age is None else round(age, 1),
        jobs=jobs,
        without_model=without,
        stale_forecasts=stale,
    )


def build_instances(store: Store) -> InstanceList:
    """Every monitored instance with its newest sample, champion and open alert."""
    runs = store.runs.latest()
    open_alerts: dict[str, AlertRecord] = {}
    for opened in store.alerts.open():
        open_alerts.setdefault(opened.instance_id, opened)  # newest first
    out = []
    for inst in store.samples.instances():
        run, alert = runs.get(inst.instance_id), open_alerts.get(inst.instance_id)
        out.append(
            InstanceInfo(
                instance_id=inst.instance_id,
                name=inst.name,
                threshold=inst.threshold,
                first_seen=utc(inst.first_seen),
                last_seen=utc(inst.last_seen),
                last_sample_at=utc(store.samples.newest_ts(inst.instance_id)),
                champion=run.champion if run else None,
                trained_at=utc(run.finished_at) if run else None,
                open_alert=OpenAlert.from_alert(alert) if alert else None,
            )
        )
    return InstanceList(instances=out)


def build_predictions(store: Store, instance: str | None) -> PredictionList:
    """The latest champion forecast of every instance, or of one."""
    known = [known_instance(store, instance)] if instance is not None else store.samples.instances()
    thresholds = {inst.instance_id: inst.threshold for inst in known}
    forecasts = store.forecasts.latest(instance)
    return PredictionList(predictions=[Prediction.from_forecast(f, thresholds.get(f.instance_id)) for f in forecasts])


def build_comparisons(store: Store, instance: str | None, now: int) -> ComparisonList:
    """Scores of every instance's latest training run, or of one instance's."""
    if instance is not None:
        known_instance(store, instance)
        runs = store.runs.history(instance, limit=1)
    else:
        runs = sorted(store.runs.latest().values(), key=lambda run: run.instance_id)
    realised = realised_scores(store, now, instance)
    return ComparisonList(
        comparisons=[
            Comparison.from_run(run, store.runs.scores(run_id=run.run_id), realised.get(run.instance_id)) for run in runs
        ]
    )


def build_alerts(store: Store, state: str | None, instance: str | None, limit: int) -> AlertList:
    """Alerts, newest first, optionally of one state or instance."""
    if instance is not None:
        known_instance(store, instance)
    return AlertList(alerts=[Alert.from_alert(a) for a in store.alerts.recent(state=state, instance_id=instance, limit=limit)])
