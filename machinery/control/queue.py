"""A work queue of object keys, with client-go's guarantees:

- De-duplicated: adding a key that is already waiting is a no-op.
- One key, one worker: a key handed out by `get()` is not handed out again until `done()`;
  if it is added meanwhile it is marked dirty and queued again on `done()` — so a change
  that arrives during a reconcile is never lost and never processed concurrently.
- `add_after(key, delay)`: the key enters the queue once `delay` has passed on the clock
  (an earlier pending delay for the same key wins).
- `add_rate_limited(key)`: per-key exponential back-off (base * 2**failures, capped);
  `forget(key)` resets it after a success.
- `shut_down()` wakes every waiting `get()`, which then returns None.

Design note: delayed keys live in a heap checked by `get()` itself (no timer thread), so a
`FakeClock` drives them in tests with `get(block=False)`.
"""
from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque

from shoal.machinery.control.clock import Clock, RealClock


class RateLimiter:
    """Per-key exponential back-off: base, 2*base, 4*base, ... up to `cap` seconds."""

    def __init__(self, base: float = 0.05, cap: float = 30.0):
        self.base, self.cap = base, cap
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def when(self, key: str) -> float:
        with self._lock:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        return float(min(self.base * (2 ** n), self.cap))

    def failures(self, key: str) -> int:
        with self._lock:
            return self._failures.get(key, 0)

    def forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class WorkQueue:
    def __init__(self, name: str = "", *, clock: Clock | None = None, rate_limiter: RateLimiter | None = None):
        self.name = name
        self._clock = clock or RealClock()
        self.rate_limiter = rate_limiter or RateLimiter()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._delayed_at: dict[str, float] = {}
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._shutdown = False

    # -- adding ---------------------------------------------------------------------------------
    def add(self, key: str) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            at = self._clock.monotonic() + delay
            prev = self._delayed_at.get(key)
            if prev is not None and prev <= at:
                return
            self._delayed_at[key] = at
            heapq.heappush(self._delayed, (at, next(self._seq), key))
            self._cond.notify()

    def add_rate_limited(self, key: str) -> None:
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: str) -> None:
        self.rate_limiter.forget(key)

    # -- taking ---------------------------------------------------------------------------------
    def _promote_due_locked(self) -> float | None:
        """Move due delayed keys into the queue; return seconds until the next one, if any."""
        now = self._clock.monotonic()
        while self._delayed:
            at, _, key = self._delayed[0]
            if self._delayed_at.get(key) != at:  # superseded by an earlier add_after
                heapq.heappop(self._delayed)
                continue
            if at > now:
                return at - now
            heapq.heappop(self._delayed)
            del self._delayed_at[key]
            self._add_locked(key)
        return None

    def get(self, *, block: bool = True, timeout: float | None = None) -> str | None:
        """The next key to process, or None on shut-down (or when nothing is ready and
        `block` is False / `timeout` elapsed). Call `done(key)` when finished with it."""
        deadline = None if timeout is None else self._clock.monotonic() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    return None
                wait = self._promote_due_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                if not block:
                    return None
                if deadline is not None:
                    left = deadline - self._clock.monotonic()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                # Bounded waits keep a FakeClock-driven queue live even without notifications.
                self._cond.wait(min(wait, 1.0) if wait is not None else 1.0)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    # -- state ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def pending_delayed(self) -> int:
        with self._cond:
            return len(self._delayed_at)

    def shut_down(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    @property
    def shutting_down(self) -> bool:
        return self._shutdown
