"""``python -m forecasting api``: start the JSON API with uvicorn, after checking the address it really binds.

The listening socket is bound first; when its address is not loopback and no token is set (and
``HEADROOM_API_OPEN`` is not true) the API refuses to start, with one line and exit status 2.
Then uvicorn serves on that very socket, with ``workers`` processes sharing it.
"""

from __future__ import annotations

import socket
import sys

from forecasting.api_guard import exposure_problem
from forecasting.settings import Settings


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (as uvicorn would bind it), so its real address can be checked."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve_api(settings: Settings, workers: int = 1) -> int:
    """Bind ``api_host:api_port``, refuse an exposed address without a token, then serve until stopped."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        "forecasting.api:app",
        host=settings.api_host,
        port=settings.api_port,
        workers=workers,
        proxy_headers=False,
        server_header=False,
    )
    try:
        sock = bind(settings.api_host, settings.api_port)
    except OSError as error:
        print(
            f"headroom api: cannot listen on {settings.api_host}:{settings.api_port}: {error.strerror or error}", file=sys.stderr
        )
        return 1
    host = str(sock.getsockname()[0])
    problem = exposure_problem(host, settings)
    if problem is not None:
        sock.close()
        print(f"headroom api: {problem}", file=sys.stderr)
        return 2
    shown = f"[{host}]" if ":" in host else host
    print(
        f"headroom api: serving on http://{shown}:{sock.getsockname()[1]} ({workers} process{'es' * (workers > 1)}, "
        f"token {'required' if settings.api_token else 'not required'})",
        file=sys.stderr,
        flush=True,
    )
    if workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])
    return 0
