"""The clocks: the manual one moves only when told (or waited on), the system one waits for real and stops early."""

from __future__ import annotations

import threading
import time

from forecasting.clock import DAY, HOUR, MINUTE, WEEK, ManualClock, SystemClock


def test_units() -> None:
    assert (MINUTE, HOUR, DAY, WEEK) == (60, 3_600, 86_400, 604_800)


def test_a_manual_clock_moves_only_when_advanced_or_waited_on() -> None:
    clock, stop = ManualClock(1_800_000_000), threading.Event()
    assert clock.now() == clock.now() == 1_800_000_000
    assert clock.advance(90) == 1_800_000_090
    began = time.monotonic()
    assert clock.wait(DAY, stop) is False and clock.now() == 1_800_000_090 + DAY  # a day passes at once
    assert time.monotonic() - began < 1
    stop.set()
    assert clock.wait(HOUR, stop) is True and clock.now() == 1_800_000_090 + DAY  # stopped: time stands still


def test_the_system_clock_is_the_wall_clock_and_a_stop_ends_its_wait() -> None:
    clock, stop = SystemClock(), threading.Event()
    assert abs(clock.now() - time.time()) < 1
    threading.Timer(0.05, stop.set).start()  # another thread (a signal handler, in the worker) says stop
    began = time.monotonic()
    assert clock.wait(HOUR, stop) is True and time.monotonic() - began < 30
