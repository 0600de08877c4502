"""The JSON API: scores, forecasts and alerts from the store, and predict/validate on an uploaded export.

    uvicorn forecasting.api:app --host 127.0.0.1 --port 8000      (``make api``)

Read endpoints answer from the store the worker fills; the API holds no state of its own
besides its store connections. ``POST /predict`` and ``POST /validate`` take a CloudWatch
``get-metric-data`` JSON export (or a CSV) as the raw body, read it under a size limit
while it arrives, and train on it in a worker thread under a time limit and a small
concurrency limit. With ``HEADROOM_API_TOKEN`` set, every endpoint but ``/health`` needs
``Authorization: Bearer <token>`` (the docs, ``/docs``, ``/redoc`` and ``/openapi.json``, too), and
``/health`` without it says only the status. Without a token the API serves only on loopback
unless ``HEADROOM_API_OPEN=true`` (:mod:`forecasting.api_guard`). Bad input always gets a 4xx
JSON ``{"detail": ...}``.
"""

from __future__ import annotations

import hmac
import logging
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from forecasting import __version__
from forecasting.api_guard import ExposureGuard
from forecasting.api_models import (
    UPLOAD_BODY,
    AlertList,
    ComparisonList,
    ErrorResponse,
    Health,
    InstanceList,
    PredictionList,
    UnknownInstance,
    UploadForecast,
    Validation,
    build_alerts,
    build_comparisons,
    build_health,
    build_instances,
    build_predictions,
)
from forecasting.api_uploads import predict_job, run_upload, validate_job
from forecasting.clock import SYSTEM_CLOCK, Clock
from forecasting.ids import ID_PATTERN, MAX_ID_LENGTH
from forecasting.models import MODEL_NAMES
from forecasting.settings import Settings, get_settings
from forecasting.store import MIGRATIONS, Store

log = logging.getLogger("headroom.api")

InstanceId = Annotated[
    str | None, Query(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description="one instance id; all when absent")
]
PredictModel = Enum("PredictModel", {name: name for name in ("auto", *MODEL_NAMES)}, type=str)  # type: ignore[misc]
ValidateModel = Enum("ValidateModel", {name: name for name in MODEL_NAMES}, type=str)  # type: ignore[misc]


class ApiState:
    """What one app holds: its settings, its clock, its store connection and its training slots."""

    def __init__(self, settings: Settings | None, clock: Clock = SYSTEM_CLOCK) -> None:
        self._settings = settings
        self.clock = clock
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
                opened = Store(self.settings.db, readonly=True)
                if opened.schema_version < len(MIGRATIONS):  # the worker is still creating (or migrating) it
                    opened.close()
                    return self._empty_store()
                self._stores[fleet] = opened
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
                if self._empty_dir is not None:
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


def token_ok(request: Request, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """True without a configured token, or when the request carries it (constant-time compare)."""
    token = get_state(request).settings.api_token
    if token is None:
        return True
    given = credentials.credentials.encode() if credentials is not None else b""
    return credentials is not None and hmac.compare_digest(given, token.get_secret_value().encode())


async def authorized(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """With a token configured, demand ``Authorization: Bearer <token>``; no unknown query parameter."""
    if not token_ok(request, credentials):
        raise HTTPException(
            401,
            "missing or wrong bearer token (send Authorization: Bearer <HEADROOM_API_TOKEN>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
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
    names: set[str] = set()
    todo = [route.dependant]
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
    """Status and version for anyone; with the token (or none configured) also data age, job states and problems."""
    reject_unknown_query(request)
    state = get_state(request)
    details = token_ok(request, await bearer(request))  # optional here, so not a documented requirement
    now = state.clock.now()
    return await respond(request, lambda store: build_health(store, state.settings, now, details=details), fleet=True)


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
    now = int(get_state(request).clock.now())
    return await respond(request, lambda store: build_comparisons(store, instance, now), fleet=instance is None)


class AlertState(str, Enum):
    open = "open"
    cleared = "cleared"


@router.get("/alerts", response_model=AlertList, responses=_errors(404), summary="Early warnings")
async def alerts(
    request: Request,
    state: AlertState | None = None,
    instance: InstanceId = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Alerts, newest first, with the predicted crossing, the lead time and (once known) the outcome."""
    chosen = state.value if state is not None else None
    return await respond(request, lambda store: build_alerts(store, chosen, instance, limit), fleet=instance is None)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format 0.0.4"}},
)
async def metrics(request: Request) -> Response:
    """Each instance's forecast, warning, champion and accuracy, and the worker's health, for Prometheus to scrape."""
    from forecasting.prom import CONTENT_TYPE, render

    state = get_state(request)
    store = state.store(fleet=True)
    return Response(await run_in_threadpool(render, store, state.settings, state.clock.now()), media_type=CONTENT_TYPE)


# ---- uploads: predict and validate --------------------------------------------
UPLOAD_ERRORS = _errors(413, 422, 503)
UploadInstance = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=ID_PATTERN,
        description="which instance of the export (needed when it holds several)",
    ),
]


@router.post(
    "/predict",
    response_model=UploadForecast,
    responses=UPLOAD_ERRORS,
    openapi_extra=UPLOAD_BODY,
    summary="Forecast from an uploaded export",
)
async def predict(
    request: Request,
    model: PredictModel = PredictModel("auto"),
    horizon: Annotated[int | None, Query(ge=1, le=288, description="steps ahead (default HEADROOM_HORIZON)")] = None,
    instance: UploadInstance = None,
) -> UploadForecast:
    """Forecast from the end of the uploaded data with ``model`` (``auto``: the backtest champion on it)."""
    state = get_state(request)
    settings = state.settings
    steps = horizon or settings.horizon
    return await run_upload(request, state, lambda body: predict_job(body, settings, instance, model.value, steps))


@router.post(
    "/validate",
    response_model=Validation,
    responses=UPLOAD_ERRORS,
    openapi_extra=UPLOAD_BODY,
    summary="Backtest models on an uploaded export",
)
async def validate(
    request: Request,
    model: ValidateModel | None = None,
    instance: UploadInstance = None,
) -> Validation:
    """Backtest scores of ``model`` (or of every configured model) on the uploaded data, and the champion."""
    state = get_state(request)
    settings = state.settings
    name = model.value if model is not None else None
    return await run_upload(request, state, lambda body: validate_job(body, settings, instance, name))


# ---- the docs: the same rule as the data ------------------------------------------
@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="Headroom API")


@router.get("/redoc", include_in_schema=False)
async def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title="Headroom API")


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


def create_app(settings: Settings | None = None, clock: Clock = SYSTEM_CLOCK) -> FastAPI:
    """A Headroom API app; with no settings it reads the process's on first use (``get_settings``). Its answers
    read ``now`` from ``clock``."""
    state = ApiState(settings, clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settings = state.settings  # a bad setting fails here, at start, not at the first request
        state.store()  # so does a file at HEADROOM_DB that is not a database
        log.info(
            "Headroom API %s on database %s%s (token %s)",
            __version__,
            settings.db,
            "" if Path(settings.db).exists() else ", not created yet: start the worker",
            "required" if settings.api_token else "not required" + (", open on purpose" if settings.api_open else ""),
        )
        yield
        state.close()

    app = FastAPI(
        title="Headroom API",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        description="Forecasts, model scores and early warnings of CPU overload; "
        "predict and validate on an uploaded CloudWatch export.",
    )
    app.state.headroom = state
    # Starlette types every handler as taking Exception; these take the one they are registered for
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(UnknownInstance, _unknown_instance)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(health_router)
    app.include_router(router)
    app.add_middleware(ExposureGuard, settings=lambda: state.settings)
    return app


app = create_app()
