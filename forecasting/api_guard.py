"""Who may reach the API: the exposure rule, checked at start and on every request.

An API without ``HEADROOM_API_TOKEN`` answers only on a loopback address unless
``HEADROOM_API_OPEN=true`` says it is meant to be open. The rule is checked on the address
really bound: by ``python -m forecasting api`` on its listening socket before serving, and,
for a server started some other way (``uvicorn forecasting.api:app --host 0.0.0.0``), on the
local address of every request (ASGI ``scope["server"]``), which then gets 403. A request that
a reverse proxy forwarded (``Forwarded`` or ``X-Forwarded-For``) arrives over loopback but comes
from elsewhere, so it counts as exposed too. A bad setting stops the app at start with one line
instead of a traceback.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from forecasting.settings import Settings, SettingsError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problem(host: str, settings: Settings) -> str | None:
    """Why the API must not serve on ``host`` with these settings (one line), or None when it may."""
    if settings.api_token is not None or settings.api_open or is_loopback(host):
        return None
    return (
        f"refusing to serve on {host}, a non-loopback address, without HEADROOM_API_TOKEN: set a token, "
        "or HEADROOM_API_OPEN=true if anyone who reaches it may read and upload"
    )


FORWARDED_HEADERS = (b"forwarded", b"x-forwarded-for")


def _request_exposed(scope: Scope, settings: Settings) -> str | None:
    """The exposure problem of the address a request arrived on (only real IP addresses count), or of a proxy's."""
    if (
        settings.api_token is None
        and not settings.api_open
        and any(name in FORWARDED_HEADERS for name, _ in scope.get("headers", []))
    ):
        return (
            "refusing a request forwarded by a proxy without HEADROOM_API_TOKEN: set a token, "
            "or HEADROOM_API_OPEN=true if anyone who reaches the proxy may read and upload"
        )
    server = scope.get("server")
    if not server:
        return None  # a Unix socket: the file's permissions guard it
    try:
        ipaddress.ip_address(str(server[0]).strip("[]"))
    except ValueError:
        return None  # not a socket address (an in-process test client's host name)
    return exposure_problem(str(server[0]), settings)


class ExposureGuard:
    """Pure ASGI middleware: one-line start failure on bad settings or an exposed host; 403 for exposed requests."""

    def __init__(self, app: ASGIApp, settings: Callable[[], Settings]) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            problem = self._startup_problem()
            if problem is not None:
                await receive()  # lifespan.startup
                await send({"type": "lifespan.startup.failed", "message": f"headroom api: {problem}"})
                return
        elif scope["type"] == "http":
            problem = _request_exposed(scope, self.settings())
            if problem is not None:
                await _refuse(send, problem)
                return
        await self.app(scope, receive, send)

    def _startup_problem(self) -> str | None:
        try:
            settings = self.settings()
        except SettingsError as error:
            return str(error)
        return exposure_problem(settings.api_host, settings)


async def _refuse(send: Send, problem: str) -> None:
    body = json.dumps({"detail": problem}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
