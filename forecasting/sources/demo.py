"""The built-in demo feed: simulated instances that look like real servers.

Every value is a pure function of (seed, instance, metric, timestamp), so fetching
the same window twice gives the same numbers and new points simply appear as
wall time passes. Profiles cycle through six shapes (web servers with daily and
weekly cycles, a database drifting up, a cache without the memory metric, a
bursty worker, and ``batch-1``: a nightly job that climbs into overload every
day at the demo's anchor time of day, first about an hour after the demo starts).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from forecasting.clock import DAY
from forecasting.metrics import default_metrics
from forecasting.sources.base import FetchResult, SeriesRequest, SourceInstance

SIMULATED = ("cpu", "memory", "network_in", "network_out")
"""The metrics the demo has a simulation for (see :meth:`DemoSource.values`); others it never publishes."""


@dataclass(frozen=True)
class Profile:
    name: str
    base: float  # mean CPU %
    daily: float  # amplitude of the daily cycle
    weekend: float  # factor applied on Saturday and Sunday
    noise: float  # noise standard deviation
    drift: float  # CPU points gained per day
    bursts: float  # share of 5-min slots that start a burst
    climber: bool = False
    has_memory: bool = True


PROFILES = [
    Profile("web", 38, 22, 0.7, 3.0, 0.0, 0.0),
    Profile("api", 45, 18, 0.8, 4.0, 0.1, 0.004),
    Profile("batch", 30, 8, 1.0, 2.5, 0.0, 0.0, climber=True),
    Profile("db", 28, 6, 0.9, 1.5, 0.6, 0.0),
    Profile("cache", 12, 4, 0.9, 1.2, 0.0, 0.003, has_memory=False),
    Profile("worker", 25, 10, 1.0, 5.0, 0.0, 0.02),
]


def demo_instance_id(index: int) -> str:
    """Stable, EC2-shaped ids for demo instances (17 hex digits)."""
    return f"i-0de{index:014x}"


class DemoSource:
    """A seeded simulation of ``count`` instances; ``anchor`` is when the demo first started.

    ``metrics`` are the configured metric keys (default: those on by default); the demo publishes those it simulates.
    """

    def __init__(
        self, count: int = 6, seed: int = 42, anchor: int = 0, period: int = 300, metrics: list[str] | None = None
    ) -> None:
        self.count, self.seed, self.anchor, self.period = count, seed, anchor, period
        wanted = default_metrics() if metrics is None else metrics
        self.metrics = [key for key in wanted if key in SIMULATED]

    def profile(self, index: int) -> Profile:
        return PROFILES[index % len(PROFILES)]

    def list_instances(self) -> list[SourceInstance]:
        out = []
        for index in range(self.count):
            profile = self.profile(index)
            out.append(SourceInstance(demo_instance_id(index), f"{profile.name}-{index // len(PROFILES) + 1}"))
        return out

    def metrics_of(self, instance_id: str) -> list[str]:
        """The metrics this instance publishes (the cache has no memory agent)."""
        has_memory = self.profile(self._index(instance_id)).has_memory
        return [key for key in self.metrics if key != "memory" or has_memory]

    def fetch(self, requests: list[SeriesRequest], end: int) -> FetchResult:
        result = FetchResult()
        for request in requests:
            index = self._index(request.instance_id)
            if request.metric not in self.metrics_of(request.instance_id):
                continue
            start = -(-request.start // self.period) * self.period
            ts = np.arange(start, end, self.period, dtype=np.int64)
            if len(ts) == 0:
                continue
            values = self.values(index, request.metric, ts)
            result.rows.extend(
                zip([request.instance_id] * len(ts), [request.metric] * len(ts), ts.tolist(), values.tolist(), strict=True)
            )
        return result

    # ---- the simulation, vectorised over timestamps ----------------------
    def values(self, index: int, metric: str, ts: np.ndarray) -> np.ndarray:
        """The simulated series of one instance and metric at the given timestamps."""
        cpu = self._cpu(index, ts)
        if metric == "cpu":
            return np.round(cpu, 3)
        if metric == "memory":
            # a slow leak, restarted every 5 days; the restarts fall between the demo's starts, not on one
            rise = ((ts - self.anchor + 2 * DAY + DAY // 2 + index * DAY // 2) % (5 * DAY)) / (5 * DAY)
            mem = 35 + 10 * (index % 3) + 20 * rise + 0.15 * cpu + self._noise(index, "memory", ts)
            return np.round(np.clip(mem, 1, 99), 3)
        scale = 2.0e7 if metric == "network_in" else 1.2e7
        noise = np.exp(0.15 * self._noise(index, metric, ts))
        return np.round(scale * (0.2 + cpu / 40) * noise, 0)

    def _cpu(self, index: int, ts: np.ndarray) -> np.ndarray:
        p = self.profile(index)
        phase = (index * 7919 % 360) / 360 * 0.25  # shift peaks between instances
        day_frac = (ts % DAY) / DAY
        daily = p.daily * np.sin(2 * np.pi * (day_frac - 0.3 - phase))
        weekday = ((ts // DAY) + 4) % 7  # 1970-01-01 was a Thursday; 5, 6 = Sat, Sun
        level = (p.base + daily) * np.where(weekday >= 5, p.weekend, 1.0)
        level = level + p.drift * (ts - self.anchor) / DAY
        cpu = level + p.noise * self._noise(index, "cpu", ts) + self._bursts(index, p, ts)
        if p.climber:
            cpu = cpu + self._climb(ts)
        return np.clip(cpu, 0.1, 100.0)

    def _climb(self, ts: np.ndarray) -> np.ndarray:
        """The nightly job: +0→66 points over 60 min starting 10 min after the anchor's time of day, held 60 min, off in 20.

        66 points on a 30 ± 8 % base (less noise) clears 80 % at any time of day, 45-70 min after the start.
        """
        t = ((ts - self.anchor) % DAY) / 60.0  # minutes into the job's day
        up = np.clip((t - 10) / 60, 0, 1)
        down = np.clip(1 - (t - 130) / 20, 0, 1)
        return 66 * np.minimum(up, down)

    def _bursts(self, index: int, p: Profile, ts: np.ndarray) -> np.ndarray:
        if p.bursts <= 0:
            return np.zeros(len(ts))
        # a burst starts in a slot with probability p.bursts and lasts 3 slots; decided per slot, deterministically
        out = np.zeros(len(ts))
        for lag in range(3):
            u = self._uniform(index, "burst", ts - lag * self.period)
            out = np.maximum(out, np.where(u < p.bursts, 45 * (1 - lag / 4), 0))
        return out

    def _noise(self, index: int, metric: str, ts: np.ndarray) -> np.ndarray:
        """Standard normal noise that depends only on (seed, instance, metric, timestamp)."""
        u1 = self._uniform(index, metric + "a", ts)
        u2 = self._uniform(index, metric + "b", ts)
        return np.sqrt(-2 * np.log(np.maximum(u1, 1e-12))) * np.cos(2 * np.pi * u2)

    def _uniform(self, index: int, key: str, ts: np.ndarray) -> np.ndarray:
        """A splitmix-style hash of (seed, instance, key, slot) mapped to [0, 1)."""
        salt = np.uint64(zlib.crc32(f"{self.seed}:{index}:{key}".encode()) * 0x2545F491)
        with np.errstate(over="ignore"):
            x = (ts.astype(np.uint64) // np.uint64(self.period)) * np.uint64(0x9E3779B97F4A7C15) ^ salt
            x ^= x >> np.uint64(31)
            x *= np.uint64(0x94D049BB133111EB)
            x ^= x >> np.uint64(29)
        return (x >> np.uint64(11)).astype(np.float64) / float(2**53)

    def _index(self, instance_id: str) -> int:
        """The inverse of :func:`demo_instance_id` (the digits after ``i-0de``)."""
        return int(instance_id[5:], 16)
