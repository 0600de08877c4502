"""The JSON API: scores, forecasts and alerts from the store, and predict/validate on an uploaded export.

    uvicorn forecasting.api:app --host 127.0.0.1 --port 8000      (``make api``)

Read endpoints answer from the store the worker fills; the API holds no state of its own
besides its store connections. ``POST /predict`` and ``POST /validate`` take a CloudWatch
``get-metric-data`` JSON export (or a CSV) as the raw body, read it under a size limit
while it arrives, and train on it in a worker thread under a time limit and a small
concurrency limit. With ``HEADROOM_API_TOKEN`` set, every endpoint but ``/health`` needs
``Authorization: Bearer <token>``. Bad input always gets a 4xx JSON ``{"detail": ...}``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from forecasting import __version__
from forecasting.api_models import (
    UPLOAD_BODY, AlertList, ComparisonList, ErrorResponse, Health, InstanceList, PredictionList, UnknownInstance,
    UploadForecast, Validation, build_alerts, build_comparisons, build_health, build_instances, build_predictions,
)
from forecasting.models import MODEL_NAMES
from forecasting.models.base import ModelError
from forecasting.settings import Settings, get_settings
from forecasting.sources.export import ExportError, ParsedExport, parse_export
from forecasting.store import Store

log = logging.getLogger("headroom.api")

DAY = 86_400
SLOT_POLL_SECONDS = 0.05
InstanceId = Annotated[str | None, Query(min_length=1, max_length=128, description="one instance id; all when absent")]
PredictModel = Enum("PredictModel", {name: name for name in ("auto", *MODEL_NAMES)}, type=str)  # type: ignore[misc]
ValidateModel = Enum("ValidateModel", {name: name for name in MODEL_NAMES}, type=str)  # type: ignore[misc]


class UploadError(ValueError):
    """The export parsed, but cannot be used as asked (which instance, no CPU)."""


class ApiState:
    """What one app holds: its settings, its store connection and its training slots."""

    def __init__(self, settings: Settings | None) -> None:
        self._settings = settings
        self._stores: dict[bool, Store] = {}
        self._empty: Store | None = None
        self._empty_dir: tempfile.TemporaryDirectory[str] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def settings(self) -> Settings:
        """The settings given to ``create_app``, else the process's (read on first use)."""
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    def store(self, fleet: bool = False) -> Store:
        """The app's read-only store connection, opened on first use: one for the event loop's quick reads, one
        for the threads that read the whole fleet (each connection serialises its queries, so they must not share).

        The API never writes the store, nor creates it: until the worker has made the database, it answers
        from an empty one of its own (``/health`` then says ``empty``) and looks again at the next request.
        """
        with self._lock:
            if fleet not in self._stores:
                if not Path(self.settings.db).exists():
                    return self._empty_store()
                self._stores[fleet] = Store(self.settings.db, readonly=True)
            return self._stores[fleet]

    def _empty_store(self) -> Store:
        """An empty database with the current schema, in a temporary folder of this app's (called under the lock)."""
        if self._empty is None:
            self._empty_dir = tempfile.TemporaryDirectory(prefix="headroom-api-")
            self._empty = Store(Path(self._empty_dir.name) / "empty.db")
        return self._empty

    def executor(self) -> ThreadPoolExecutor:
        """The threads predict/validate train in (as many as there are slots)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.settings.api_concurrency, thread_name_prefix="headroom-api-train")
            return self._executor

    def take_slot(self) -> bool:
        """Claim one of the ``api_concurrency`` predict/validate slots, if one is free."""
        with self._lock:
            if self._busy >= self.settings.api_concurrency:
                return False
            self._busy += 1
            return True

    def release_slot(self, *_: object) -> None:
        """Give a slot back (also a Future done-callback, hence the ignored argument)."""
        with self._lock:
            self._busy -= 1

    def close(self) -> None:
        """Close the store connection; running trainings finish on their own."""
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
            if self._empty is not None:
                self._empty.close()
                self._empty_dir.cleanup()
                self._empty = None
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None


# ---- dependencies ---------------------------------------------------------
# One ``async`` dependency (auth) on the router: each one FastAPI solves costs time on every request of the
# hot read paths, so the endpoints reach the app's store through ``respond``.
bearer = HTTPBearer(auto_error=False, description="HEADROOM_API_TOKEN, when it is set")


def get_state(request: Request) -> ApiState:
    """The state of the app serving this request."""
    return request.app.state.headroom


async def authorized(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """With a token configured, demand ``Authorization: Bearer <token>`` (constant-time compare); no unknown query."""
    token = get_state(request).settings.api_token
    if token is not None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if credentials is None or not hmac.compare_digest(given, token.get_secret_value().encode()):
            raise HTTPException(401, "missing or wrong bearer token (send Authorization: Bearer <HEADROOM_API_TOKEN>)",
                                headers={"WWW-Authenticate": "Bearer"})
    reject_unknown_query(request)


def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the endpoint does not take (a typo like ``?instanse=`` must not mean "all")."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    unknown = sorted(set(request.query_params) - _query_names(route))
    if unknown:
        takes = ", ".join(sorted(_query_names(route))) or "none"
        raise HTTPException(422, f"unknown query parameter {unknown[0][:60]!r} (this endpoint takes: {takes})")


def _query_names(route: APIRoute) -> frozenset[str]:
    names, todo = set(), [route.dependant]
    while todo:
        dependant = todo.pop()
        names.update(param.alias for param in dependant.query_params)
        todo.extend(dependant.dependencies)
    return frozenset(names)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


async def respond(request: Request, build: Callable[[Store], BaseModel], fleet: bool) -> Response:
    """Build an answer from the store and serialise it once with pydantic-core (the route's response_model
    documents it). SQLite in WAL mode, so these reads never block the worker, nor it them.

    One instance's answer is a few indexed reads, quicker inline than in a thread; an answer over the
    whole fleet is built in a thread on its own connection (SQLite lets go of the GIL), so it never
    stalls the quick ones.
    """
    store = get_state(request).store(fleet)

    def run() -> bytes:
        return build(store).model_dump_json().encode()

    body = await run_in_threadpool(run) if fleet else run()
    return Response(body, media_type="application/json")


# ---- the read endpoints ----------------------------------------------------------
health_router = APIRouter(responses=_errors(422))
router = APIRouter(dependencies=[Depends(authorized)], responses=_errors(401, 422))


@health_router.get("/health", response_model=Health, summary="Service status and data freshness")
async def health(request: Request) -> Response:
    """Status, version, age of the newest sample and the last run of each worker job; never needs a token."""
    reject_unknown_query(request)
    settings = get_state(request).settings
    return await respond(request, lambda store: build_health(store, settings), fleet=True)


@router.get("/instances", response_model=InstanceList, summary="Monitored instances")
async def instances(request: Request) -> Response:
    """Every monitored instance with its threshold, newest sample, champion model and open alert."""
    return await respond(request, build_instances, fleet=True)


@router.get("/predictions", response_model=PredictionList, responses=_errors(404), summary="Latest forecasts")
async def predictions(request: Request, instance: InstanceId = None) -> Response:
    """The latest champion forecast of each instance (or of one): timestamps with mean, lower and upper."""
    return await respond(request, lambda store: build_predictions(store, instance), fleet=instance is None)


@router.get("/compare", response_model=ComparisonList, responses=_errors(404), summary="Model scores and champion")
async def compare(request: Request, instance: InstanceId = None) -> Response:
    """Backtest scores of every model in each instance's latest training run (or one instance's), and the champion."""
    return await respond(request, lambda store: build_comparisons(store, instance), fleet=instance is None)


class AlertState(str, Enum):
    open = "open"
    cleared = "cleared"


@router.get("/alerts", response_model=AlertList, responses=_errors(404), summary="Early warnings")
async def alerts(request: Request, state: AlertState | None = None, instance: InstanceId = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    """Alerts, newest first, with the predicted crossing, the lead time and (once known) the outcome."""
    chosen = state.value if state is not None else None
    return await respond(request, lambda store: build_alerts(store, chosen, instance, limit), fleet=instance is None)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format 0.0.4"}})
async def metrics(request: Request) -> Response:
    """Each instance's forecast, warning, champion and accuracy, and the worker's health, for Prometheus to scrape."""
    from forecasting.prom import CONTENT_TYPE, render

    state = get_state(request)
    store = state.store(fleet=True)
    return Response(await run_in_threadpool(render, store, state.settings), media_type=CONTENT_TYPE)


# ---- uploads: predict and validate --------------------------------------------
UPLOAD_ERRORS = _errors(413, 422, 503)
UploadInstance = Annotated[str | None, Query(min_length=1, max_length=128,
                                             description="which instance of the export (needed when it holds several)")]


def check_size(request: Request, limit_bytes: int, size: int | None = None) -> None:
    """413 once the body (or its Content-Length header) is over the limit; the server then closes, not drains."""
    if size is None:
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else 0
    if size > limit_bytes:
        raise HTTPException(413, f"request body is over the {limit_bytes / 1e6:g} MB limit (HEADROOM_API_BODY_LIMIT_MB)",
                            headers={"Connection": "close"})


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The request body, counted as it arrives; 413 as soon as it passes the limit (the rest is never read)."""
    check_size(request, limit_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        check_size(request, limit_bytes, size)
        chunks.append(chunk)
    return b"".join(chunks)


def pick_instance(parsed: ParsedExport, wanted: str | None) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The instance to use from an export: the one asked for, or the only one it holds."""
    names = parsed.instances
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    if wanted is not None and wanted not in parsed.series:
        raise UploadError(f"instance {wanted!r} is not in the export (it holds {shown})")
    if wanted is None and len(names) > 1:
        raise UploadError(f"the export holds {len(names)} instances ({shown}); choose one with ?instance=")
    iid = wanted or names[0]
    series = parsed.series[iid]
    if "cpu" not in series or len(series["cpu"][0]) == 0:
        raise UploadError(f"instance {iid!r} has no CPU series in the export")
    return iid, series


def recent_window(samples: dict[str, tuple[np.ndarray, np.ndarray]], settings: Settings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Keep only the training window before the last CPU sample (what training uses anyway; bounds memory)."""
    start = int(samples["cpu"][0].max()) - int(settings.train_days * DAY) - settings.period
    return {m: (ts[ts >= start], vals[ts >= start]) for m, (ts, vals) in samples.items()}


def _predict_job(body: bytes, settings: Settings, instance: str | None, model: str, horizon: int) -> UploadForecast:
    from forecasting.training import predict_samples  # lazily: the API starts without the engine's heavy imports

    started = time.perf_counter()
    iid, samples = pick_instance(_parse(body, settings), instance)
    samples = recent_window(samples, settings)
    forecast = predict_samples(samples, settings, model=model, horizon=horizon)
    if not all(np.all(np.isfinite(np.asarray(a, dtype=float))) for a in (forecast.mean, forecast.lower, forecast.upper)):
        raise ModelError(f"{forecast.model}: the forecast is not finite on these samples")
    return UploadForecast.from_forecast(iid, forecast, len(samples["cpu"][0]), settings.period, time.perf_counter() - started)


def _validate_job(body: bytes, settings: Settings, instance: str | None, model: str | None) -> Validation:
    from forecasting.training import validate_samples

    started = time.perf_counter()
    iid, samples = pick_instance(_parse(body, settings), instance)
    result = validate_samples(recent_window(samples, settings), settings, models=[model] if model else None)
    return Validation.from_result(iid, result, time.perf_counter() - started)


def _parse(body: bytes, settings: Settings) -> ParsedExport:
    return parse_export(body, instance="upload", name="body", limit_bytes=int(settings.api_body_limit_mb * 1e6))


async def run_upload(request: Request, state: ApiState, job: Callable[[bytes], Any]) -> Any:
    """Read the body and run ``job`` on it in a thread, within the time limit and a free concurrency slot.

    The slot is held until the job's thread really finishes, even after a 503 for the time
    limit, so a burst of slow uploads can never run more than ``api_concurrency`` trainings.
    """
    settings = state.settings
    limit = int(settings.api_body_limit_mb * 1e6)
    check_size(request, limit)  # refuse before waiting for a slot
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.api_timeout
    while not state.take_slot():
        if loop.time() >= deadline:
            raise HTTPException(503, f"busy: {settings.api_concurrency} predict/validate requests are running "
                                     "(HEADROOM_API_CONCURRENCY); try again later", headers={"Retry-After": "30"})
        await asyncio.sleep(SLOT_POLL_SECONDS)
    try:
        body = await asyncio.wait_for(read_body(request, limit), max(0.0, deadline - loop.time()))
        future = state.executor().submit(job, body)
    except BaseException as error:
        state.release_slot()
        if isinstance(error, TimeoutError):
            raise HTTPException(503, f"the body did not arrive within the {settings.api_timeout:g} s limit "
                                     "(HEADROOM_API_TIMEOUT)") from None
        raise
    future.add_done_callback(state.release_slot)  # released by the thread's end, not by the request's
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), max(0.0, deadline - loop.time()))
    except TimeoutError:
        raise HTTPException(503, f"the request took longer than the {settings.api_timeout:g} s limit (HEADROOM_API_TIMEOUT); "
                                 "try a faster model, a shorter export or a smaller horizon") from None
    except (ExportError, ModelError, UploadError) as error:
        raise HTTPException(422, str(error).splitlines()[0]) from None


@router.post("/predict", response_model=UploadForecast, responses=UPLOAD_ERRORS, openapi_extra=UPLOAD_BODY,
             summary="Forecast from an uploaded export")
async def predict(request: Request, model: PredictModel = PredictModel("auto"),  # type: ignore[valid-type]
                  horizon: Annotated[int | None, Query(ge=1, le=288, description="steps ahead (default HEADROOM_HORIZON)")] = None,
                  instance: UploadInstance = None) -> UploadForecast:
    """Forecast from the end of the uploaded data with ``model`` (``auto``: the backtest champion on it)."""
    state = get_state(request)
    settings = state.settings
    steps = horizon or settings.horizon
    return await run_upload(request, state, lambda body: _predict_job(body, settings, instance, model.value, steps))


@router.post("/validate", response_model=Validation, responses=UPLOAD_ERRORS, openapi_extra=UPLOAD_BODY,
             summary="Backtest models on an uploaded export")
async def validate(request: Request, model: ValidateModel | None = None,  # type: ignore[valid-type]
                   instance: UploadInstance = None) -> Validation:
    """Backtest scores of ``model`` (or of every configured model) on the uploaded data, and the champion."""
    state = get_state(request)
    settings = state.settings
    name = model.value if model is not None else None
    return await run_upload(request, state, lambda body: _validate_job(body, settings, instance, name))


# ---- the app -----------------------------------------------------------------
def _one_line(error: RequestValidationError) -> str:
    first = error.errors()[0]
    loc = [str(part) for part in first.get("loc", ())]
    where = f"{loc[0]} parameter {'.'.join(loc[1:])}" if len(loc) > 1 else "request"
    given = first.get("input")
    shown = f" (got {str(given)[:60]!r})" if isinstance(given, (str, int, float)) else ""
    return f"{where}: {first.get('msg', 'invalid')}{shown}"


async def _unknown_instance(_request: Request, error: UnknownInstance) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=404)


async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _one_line(error)}, status_code=422)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(error).__name__, error, exc_info=error)
    return JSONResponse({"detail": "internal error (logged by the server)"}, status_code=500)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A Headroom API app; with no settings it reads the process's on first use (``get_settings``)."""
    state = ApiState(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settings = state.settings  # a bad setting fails here, at start, not at the first request
        state.store()  # so does a file at HEADROOM_DB that is not a database
        log.info("Headroom API %s on database %s%s (token %s)", __version__, settings.db,
                 "" if Path(settings.db).exists() else ", not created yet: start the worker",
                 "required" if settings.api_token else "not required")
        if settings.api_token is None and settings.api_host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("HEADROOM_API_HOST=%s without HEADROOM_API_TOKEN: anyone who reaches it can read and upload",
                        settings.api_host)
        yield
        state.close()

    app = FastAPI(title="Headroom API", version=__version__, lifespan=lifespan,
                  description="Forecasts, model scores and early warnings of CPU overload; "
                              "predict and validate on an uploaded CloudWatch export.")
    app.state.headroom = state
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(UnknownInstance, _unknown_instance)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(health_router)
    app.include_router(router)
    return app


app = create_app()
