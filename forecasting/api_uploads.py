"""Uploads to ``POST /predict`` and ``POST /validate``: read the body under a size limit, parse it, and train on it
in a thread within the time limit and a free concurrency slot (the routes live in :mod:`forecasting.api`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from fastapi import HTTPException, Request

from forecasting.api_models import UploadForecast, Validation
from forecasting.clock import DAY
from forecasting.models.base import ModelError
from forecasting.settings import Settings
from forecasting.sources.export import LATEST_TS, ExportError, ParsedExport, parse_export

SLOT_POLL_SECONDS = 0.05


class Slots(Protocol):
    """What uploads need of the app's state: settings, training threads and slots."""

    @property
    def settings(self) -> Settings: ...

    def take_slot(self) -> bool: ...

    def release_slot(self, *_: object) -> None: ...

    def executor(self) -> Any: ...


class UploadError(ValueError):
    """The export parsed, but cannot be used as asked (which instance, no CPU)."""


def check_size(request: Request, limit_bytes: int, size: int | None = None) -> None:
    """413 once the body (or its Content-Length header) is over the limit; the server then closes, not drains."""
    if size is None:
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else 0
    if size > limit_bytes:
        raise HTTPException(
            413,
            f"request body is over the {limit_bytes / 1e6:g} MB limit (HEADROOM_API_BODY_LIMIT_MB)",
            headers={"Connection": "close"},
        )


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


def recent_window(
    samples: dict[str, tuple[np.ndarray, np.ndarray]], train_days: float, period: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Keep only the ``train_days`` (and one period) before the last CPU sample (what training uses anyway; bounds memory)."""
    start = int(samples["cpu"][0].max()) - int(train_days * DAY) - period
    return {m: (ts[ts >= start], vals[ts >= start]) for m, (ts, vals) in samples.items()}


def predict_job(body: bytes, settings: Settings, instance: str | None, model: str, horizon: int) -> UploadForecast:
    """``POST /predict`` in its thread: parse, pick the instance, forecast from the end of its data."""
    from forecasting.training import predict_samples  # lazily: the API starts without the engine's heavy imports

    started = time.perf_counter()
    iid, samples = pick_instance(_parse(body, settings), instance)
    if int(samples["cpu"][0].max()) + (horizon + 1) * settings.period > LATEST_TS:
        raise UploadError("the export ends too close to the year 9999 to forecast after it; check its timestamps")
    samples = recent_window(samples, settings.train_days, settings.period)
    forecast = predict_samples(samples, settings, model=model, horizon=horizon)
    if not all(np.all(np.isfinite(np.asarray(a, dtype=float))) for a in (forecast.mean, forecast.lower, forecast.upper)):
        raise ModelError(f"{forecast.model}: the forecast is not finite on these samples")
    return UploadForecast.from_forecast(iid, forecast, len(samples["cpu"][0]), settings.period, time.perf_counter() - started)


def validate_job(body: bytes, settings: Settings, instance: str | None, model: str | None) -> Validation:
    """``POST /validate`` in its thread: parse, pick the instance, backtest the models on it."""
    from forecasting.training import validate_samples

    started = time.perf_counter()
    iid, samples = pick_instance(_parse(body, settings), instance)
    result = validate_samples(
        recent_window(samples, settings.train_days, settings.period), settings, models=[model] if model else None
    )
    return Validation.from_result(iid, result, time.perf_counter() - started)


def _parse(body: bytes, settings: Settings) -> ParsedExport:
    return parse_export(body, instance="upload", name="body", limit_bytes=int(settings.api_body_limit_mb * 1e6))


async def run_upload(request: Request, state: Slots, job: Callable[[bytes], Any]) -> Any:
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
            raise HTTPException(
                503,
                f"busy: {settings.api_concurrency} predict/validate requests are running "
                "(HEADROOM_API_CONCURRENCY); try again later",
                headers={"Retry-After": "30"},
            )
        await asyncio.sleep(SLOT_POLL_SECONDS)
    try:
        body = await asyncio.wait_for(read_body(request, limit), max(0.0, deadline - loop.time()))
        future = state.executor().submit(job, body)
    except BaseException as error:
        state.release_slot()
        if isinstance(error, TimeoutError):
            raise HTTPException(
                503, f"the body did not arrive within the {settings.api_timeout:g} s limit (HEADROOM_API_TIMEOUT)"
            ) from None
        raise
    future.add_done_callback(state.release_slot)  # released by the thread's end, not by the request's
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), max(0.0, deadline - loop.time()))
    except TimeoutError:
        raise HTTPException(
            503,
            f"the request took longer than the {settings.api_timeout:g} s limit (HEADROOM_API_TIMEOUT); "
            "try a faster model, a shorter export or a smaller horizon",
        ) from None
    except (ExportError, ModelError, UploadError) as error:
        raise HTTPException(422, str(error).splitlines()[0]) from None
