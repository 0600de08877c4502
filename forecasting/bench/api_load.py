"""API load benchmark: latency and throughput of ``/predictions`` and ``/compare`` with a large fleet.

    python -m forecasting.bench api --instances 500 --clients 50 [--requests 3000] [--cycles 12]

Fills a temporary SQLite store with ``--instances`` demo instances (a day of every metric
through the real ingest job, one training run per instance with the six model scores,
and ``--cycles`` forecast cycles of all six models, the champion's flagged, as the worker
writes them), starts ``uvicorn forecasting.api:app`` on a free loopback port in a child
process (access log off, as behind a proxy that logs), and drives it with ``--clients``
concurrent clients, each on its own keep-alive connection: ``wrk`` (Debian's package) for
``--seconds`` per endpoint when it is installed, else an in-process asyncio client (``--client
asyncio``/``httpx``) until ``--requests`` requests per endpoint are answered. The in-flight column
(Little's law: requests/s × mean latency) shows whether the load generator really kept
``--clients`` requests open; the in-process clients do not on two cores. Each request asks for one random instance (what a script polling an instance
does); ``/predictions`` for the whole fleet is measured too, with ``--fleet-requests``.
Prints p50/p95/p99 latency, requests/s and the server's CPU time per request (from /proc, so a
figure that other load on the machine does not inflate) per endpoint; target: p95 <= 50 ms at 50 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecasting.clock import DAY
from forecasting.models import MODEL_NAMES
from forecasting.settings import load_settings
from forecasting.store import Store

PERIOD = 300
HORIZON = 12


def fill_store(db: Path, instances: int, cycles: int, now: int) -> dict[str, int]:
    """Write a fleet into ``db``: samples via ``run_ingest`` on the demo feed, then runs, scores and forecasts."""
    from forecasting.ingest import run_ingest

    settings = load_settings(db=db, source="demo", demo_instances=instances, train_days=1, history_days=1)
    rng = np.random.default_rng(7)
    with Store(db) as store:
        run_ingest(store, settings, now)
        last = store.samples.latest_values("cpu")
        for inst in store.samples.instances():
            scores = [_score(rng, model) for model in MODEL_NAMES]
            champion = min(scores, key=lambda s: float(s["mase"]))["model"]  # type: ignore[arg-type]
            store.runs.record(
                {
                    "instance_id": inst.instance_id,
                    "started_at": now - 900,
                    "finished_at": now - 600,
                    "train_start": now - DAY,
                    "train_end": now - 900,
                    "points": 288,
                    "champion": champion,
                    "model_dir": f"models/{inst.instance_id}/bench",
                },
                scores,
                [],
            )
        runs = store.runs.latest()
        stored = 0
        for cycle in range(cycles):
            made = now - (cycles - 1 - cycle) * PERIOD
            rows = []
            for iid, run in runs.items():
                origin, value = last[iid][0] - (cycles - 1 - cycle) * PERIOD, last[iid][1]
                for model in MODEL_NAMES:
                    mean = np.clip(value + np.cumsum(rng.normal(0, 2, HORIZON)), 0, 100)
                    rows.append(
                        {
                            "instance_id": iid,
                            "run_id": run.run_id,
                            "model": model,
                            "is_champion": model == run.champion,
                            "made_at": made,
                            "origin_ts": origin,
                            "timestamps": [origin + PERIOD * k for k in range(1, HORIZON + 1)],
                            "mean": mean,
                            "lower": np.clip(mean - 8, 0, 100),
                            "upper": np.clip(mean + 8, 0, 100),
                        }
                    )
            store.forecasts.record(rows)
            stored += len(rows)
        for job in ("ingest", "retrain", "forecast", "digest"):
            store.jobs.record_heartbeat(job, now - 60, 1.5, None, "bench")
        return {"instances": len(runs), "samples": store.samples.count(), "forecasts": stored}


def _score(rng: np.random.Generator, model: str) -> dict[str, object]:
    mase = float(rng.uniform(0.3, 1.5))
    return {
        "model": model,
        "status": "ok",
        "reason": None,
        "mape": mase * 9,
        "smape": mase * 8.5,
        "mase": mase,
        "rmse": mase * 4,
        "coverage": float(rng.uniform(0.7, 0.95)),
        "fit_seconds": float(rng.uniform(0.001, 20)),
        "predict_seconds": float(rng.uniform(0.0001, 0.05)),
    }


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(db: Path, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    """``uvicorn forecasting.api:app`` in a child process; returns once /health answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")}
    env.update(HEADROOM_DB=str(db), HEADROOM_CONFIG=str(db.parent / "absent.toml"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "forecasting.api:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the API server did not start") from None
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the API server did not answer /health within 30 s")


@dataclass
class Result:
    """One endpoint at one concurrency: latency percentiles (ms), requests answered, seconds, errors."""

    name: str
    clients: int
    requests: int
    seconds: float
    p50: float
    p95: float
    p99: float
    max: float
    mean: float
    errors: int
    server_cpu: float = float("nan")  # CPU seconds the server spent during the run

    @classmethod
    def from_latencies(cls, name: str, clients: int, latencies: list[float], seconds: float, errors: int) -> Result:
        ms = np.asarray(latencies) * 1000
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        return cls(name, clients, len(ms), seconds, p50, p95, p99, ms.max(), ms.mean(), errors)

    def row(self) -> str:
        rate = self.requests / self.seconds
        # Little's law: requests in flight on average; well under ``clients`` means the load generator, not the
        # server, set the pace, and the latencies are not those of ``clients`` concurrent clients.
        in_flight = rate * self.mean / 1000
        return (
            f"| {self.name} | {self.clients} | {self.requests} | {self.p50:.1f} | {self.p95:.1f} | {self.p99:.1f} | {self.max:.1f} "
            f"| {rate:.0f} | {in_flight:.1f} | {1000 * self.server_cpu / self.requests:.2f} | {self.errors} |"
        )


WRK_SCRIPT = r"""
local paths = {%s}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n %% #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%.6f %%.3f %%.3f %%.3f %%.3f %%.3f %%d\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    latency.mean / 1e3, e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wrk_load(base: str, name: str, paths: list[str], clients: int, seconds: float) -> Result:
    """``clients`` connections from wrk (a C load generator, so it never sets the pace on a small machine)
    for ``seconds``, requesting ``paths`` round robin."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % ", ".join(f'"{path}"' for path in paths))
    try:
        done = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s", "-s", script.name, base],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(script.name)
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    count, secs, p50, p95, p99, top, mean, errors = line.split()[1:]
    return Result(
        name, clients, int(count), float(secs), float(p50), float(p95), float(p99), float(top), float(mean), int(errors)
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (uvicorn workers), from /proc (nan elsewhere)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


async def load(base: str, name: str, paths: list[str], clients: int, total: int, kind: str = "asyncio") -> Result:
    """``clients`` concurrent clients, each on its own keep-alive connection, request ``paths`` round robin
    until ``total`` are answered; each latency is one request's round trip."""
    latencies: list[float] = []
    errors = issued = 0
    connect = _httpx_client if kind == "httpx" else _stream_client

    async def client() -> None:
        nonlocal errors, issued
        async with connect(base) as get:
            await get("/health")  # open the connection before the clock starts
            await ready.wait()
            while issued < total:
                path = paths[issued % len(paths)]
                issued += 1
                started = time.perf_counter()
                status = await get(path)
                latencies.append(time.perf_counter() - started)
                errors += status != 200

    ready = asyncio.Event()
    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.sleep(0.5)
    started = time.perf_counter()
    ready.set()
    await asyncio.gather(*tasks)
    return Result.from_latencies(name, clients, latencies, time.perf_counter() - started, errors)


@asynccontextmanager
async def _httpx_client(base: str) -> AsyncIterator[Callable[[str], Awaitable[int]]]:
    """One httpx client with one connection (a pool shared by 50 tasks serialises on its own locks)."""
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=1)) as session:

        async def get(path: str) -> int:
            return (await session.get(path)).status_code

        yield get


@asynccontextmanager
async def _stream_client(base: str) -> AsyncIterator[Callable[[str], Awaitable[int]]]:
    """A minimal HTTP/1.1 keep-alive GET over asyncio streams: a fraction of httpx's CPU per request, so on a
    small machine the figures measure the server rather than the load generator."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    async def get(path: str) -> int:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:"))
        await reader.readexactly(length)
        return int(head[0].split()[1])

    try:
        yield get
    finally:
        writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecasting.bench api", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=3000, help="requests per endpoint")
    parser.add_argument("--fleet-requests", type=int, default=200, help="requests of /predictions for the whole fleet")
    parser.add_argument("--cycles", type=int, default=12, help="forecast cycles stored per instance")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--client",
        choices=("wrk", "asyncio", "httpx"),
        default="wrk" if shutil.which("wrk") else "asyncio",
        help="load generator: wrk (default when installed: Debian's `wrk`), a minimal asyncio "
        "HTTP/1.1 client, or httpx.AsyncClient (both in this process: on a small machine they "
        "cannot keep many requests in flight, see the in-flight column)",
    )
    parser.add_argument("--seconds", type=float, default=15, help="with wrk: seconds per endpoint and concurrency")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="headroom-api-bench-") as folder:
        db = Path(folder) / "headroom.db"
        started = time.perf_counter()
        counts = fill_store(db, args.instances, args.cycles, int(time.time()))
        print(f"store: {counts} in {time.perf_counter() - started:.1f} s")
        port = free_port()
        server = start_server(db, port, args.workers)
        try:
            with Store(db, readonly=True) as store:
                ids = [inst.instance_id for inst in store.samples.instances()]
            random.Random(3).shuffle(ids)
            base = f"http://127.0.0.1:{port}"
            asyncio.run(load(base, "warm-up", [f"/predictions?instance={i}" for i in ids], args.clients, 500, args.client))
            plans = [
                ("/predictions?instance=ID", [f"/predictions?instance={i}" for i in ids], args.requests),
                ("/compare?instance=ID", [f"/compare?instance={i}" for i in ids], args.requests),
                (f"/predictions (all {len(ids)})", ["/predictions"], args.fleet_requests),
            ]
            results = []
            for name, paths, total in plans:
                for clients in (1, args.clients):
                    count = total if clients > 1 else max(50, total // 10)
                    before = cpu_seconds(server.pid)
                    if args.client == "wrk":
                        result = wrk_load(base, name, paths, clients, args.seconds if clients > 1 else args.seconds / 3)
                    else:
                        result = asyncio.run(load(base, name, paths, clients, count, args.client))
                    result.server_cpu = cpu_seconds(server.pid) - before
                    results.append(result)
        finally:
            server.terminate()
            server.wait(timeout=30)
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    print(
        f"\n{args.instances} instances; uvicorn ({args.workers} worker) on {http} + {loop}; {args.client} load clients; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| endpoint | clients | requests | p50 ms | p95 ms | p99 ms | max ms | requests/s | in flight | server CPU ms/request | errors |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for result in results:
        print(result.row())
    return 0
