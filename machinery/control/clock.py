"""Injected time: the one `Clock` of shoal, with the one `FakeClock`.

Everything time-based in the controllers (back-off, availability after minReadySeconds,
progress deadlines, node grace periods, eviction delays) and in the agent (probe periods,
crash-loop back-off, lease renewal, grace periods) reads a `Clock`, so unit tests drive it
with `FakeClock` instead of sleeping. `timers` schedules callbacks on the same clock.

`now()` is wall-clock epoch seconds (compared with API timestamps); `monotonic()` is for
durations measured inside this process (queue delays).
"""
from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class RealClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to; both readings advance together."""

    def __init__(self, start: float = 1_700_000_000.0):
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        return self.now()

    def advance(self, seconds: float) -> float:
        """Move both readings forward; returns the new `now()`."""
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, epoch: float) -> None:
        with self._lock:
            self._now = float(epoch)
