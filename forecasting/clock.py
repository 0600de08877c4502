"""Time in one place: the units Headroom counts in, and the clock the worker and the API read ``now`` from.

Everything that decides by time (what is due, what is stale, how soon a forecast crosses) takes
``now`` as an argument; only the edges read a clock, and they are handed one. :class:`SystemClock`
is the wall clock; :class:`ManualClock` is set and advanced by hand, so tests run a day of cycles
without waiting for one. Durations of real work and deadlines on real network calls keep using
``time.monotonic``/``time.perf_counter``: they bound real waits, not the schedule.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY


class Clock(Protocol):
    """Where ``now`` comes from, and how to wait for a later ``now``."""

    def now(self) -> float:
        """Unix seconds."""
        ...

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Wait ``seconds`` of this clock's time, or until ``stop`` is set; True when stopped."""
        ...


class SystemClock:
    """The wall clock; waits are real and end early when ``stop`` is set."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Block until ``seconds`` have passed or ``stop`` is set."""
        return stop.wait(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told: ``advance`` by hand, or ``wait`` (which moves it at once, without blocking)."""

    def __init__(self, at: float) -> None:
        self.at = float(at)
        self._lock = threading.Lock()

    def now(self) -> float:
        """The time it was set or advanced to."""
        with self._lock:
            return self.at

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds``; the new time."""
        with self._lock:
            self.at += seconds
            return self.at

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Jump ``seconds`` ahead (unless already stopped): a loop on this clock runs its schedule at full speed."""
        if not stop.is_set():
            self.advance(max(0.0, seconds))
        return stop.is_set()


SYSTEM_CLOCK = SystemClock()
"""The one wall clock, for callers that are not handed another."""
