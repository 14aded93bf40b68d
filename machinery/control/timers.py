"""Timers: be called back at a time of the injected `Clock` (`shoal.machinery.control.clock`).

Everything in the agent that waits — probe periods, crash-loop back-off wake-ups, lease
renewal, the fake runtime's simulated processes — asks its `Clock` for the time (`now()`,
unix seconds) and a `Scheduler` to be called back later. Production uses `RealClock` and
`ThreadScheduler` (one timer thread feeding a small thread pool, so a slow probe or pod sync
never delays the others). Tests use `FakeClock` and `ManualScheduler`, whose `advance()`
runs the due callbacks in time order on the caller's thread: a 5-minute back-off is tested
in microseconds and nothing sleeps.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol

from shoal.machinery.control.clock import Clock, FakeClock, RealClock

log = logging.getLogger(__name__)


class Timer:
    __slots__ = ("at", "fn", "cancelled")

    def __init__(self, at: float, fn: Callable[[], None]):
        self.at = at
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler(Protocol):
    def call_at(self, at: float, fn: Callable[[], None]) -> Timer: ...

    def call_soon(self, fn: Callable[[], None]) -> Timer: ...


class ThreadScheduler:
    """Timers on one thread; callbacks run on a thread pool."""

    def __init__(self, *, clock: Clock | None = None, workers: int = 8, name: str = "shoal-timers"):
        self.clock: Clock = clock or RealClock()
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_at(self, at: float, fn: Callable[[], None]) -> Timer:
        t = Timer(at, fn)
        with self._cv:
            heapq.heappush(self._heap, (at, next(self._seq), t))
            self._cv.notify()
        return t

    def call_soon(self, fn: Callable[[], None]) -> Timer:
        return self.call_at(self.clock.now(), fn)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped:
                    if self._heap:
                        delay = self._heap[0][0] - self.clock.now()
                        if delay <= 0:
                            break
                        self._cv.wait(min(delay, 1.0))
                    else:
                        self._cv.wait()
                if self._stopped:
                    return
                _, _, t = heapq.heappop(self._heap)
            if not t.cancelled:
                try:
                    self._pool.submit(self._call, t)
                except RuntimeError:      # pool shut down under us
                    return

    @staticmethod
    def _call(t: Timer) -> None:
        try:
            t.fn()
        except Exception:  # a callback's failure must not kill the scheduler
            log.exception("timer callback %r failed", t.fn)

    def stop(self, wait: bool = True) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=wait, cancel_futures=True)


class ManualScheduler:
    """Deterministic scheduler for tests: nothing runs until `advance()` or `run_due()`."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def call_at(self, at: float, fn: Callable[[], None]) -> Timer:
        t = Timer(at, fn)
        with self._lock:
            heapq.heappush(self._heap, (at, next(self._seq), t))
        return t

    def call_soon(self, fn: Callable[[], None]) -> Timer:
        return self.call_at(self.clock.now(), fn)

    def pending(self) -> list[float]:
        with self._lock:
            return sorted(at for at, _, t in self._heap if not t.cancelled)

    def run_due(self) -> int:
        """Run every timer due at the current time (including ones they schedule for now)."""
        n = 0
        while True:
            with self._lock:
                if not self._heap or self._heap[0][0] > self.clock.now():
                    return n
                _, _, t = heapq.heappop(self._heap)
            if not t.cancelled:
                t.fn()
                n += 1

    def advance(self, seconds: float) -> int:
        """Move the clock forward, stopping at each timer on the way so callbacks see their own time."""
        end = self.clock.now() + seconds
        n = self.run_due()
        while True:
            with self._lock:
                nxt = self._heap[0][0] if self._heap else None
            if nxt is None or nxt > end:
                break
            if nxt > self.clock.now():
                self.clock.set(nxt)
            n += self.run_due()
        self.clock.set(end)
        return n + self.run_due()
