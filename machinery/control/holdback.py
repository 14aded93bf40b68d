"""HoldBack: a queue whose consumer takes items in batches, held while the producer is busy.

For writes that are advice rather than state — Events. The agent and the controllers
record an Event for nearly every step of a pod start (Scheduled, SuccessfulCreate, Pulled,
Created, Started); written at once, in a burst of pod starts they compete for the same two
cores with the writes that matter (bindings, pod statuses): each Event create costs the API
server about a millisecond of CPU, about 8 % of a 50-pod burst (docs/benchmarks.md).
Held until the component has settled, they are written just after the burst instead.

Contract:
- `put_nowait(item)` / `put(item, timeout)` as `queue.Queue` (raise `queue.Full`).
- `touch()` tells the queue the component is busy (a pod sync, a watch event): it extends
  the hold as a new item does. It is a single assignment: cheap enough for every event.
- `next_batch()` blocks for the next item, then keeps taking items until neither an item
  nor a touch came for `quiet` seconds, or `max_delay` seconds have passed since the
  batch's first item. An item for which `ends(item)` is true (a flush or stop marker) ends
  the batch at once and is its last item. With `quiet <= 0` every item is its own batch.
"""
from __future__ import annotations

import queue
import time
from typing import Any, Callable


class HoldBack:
    def __init__(self, *, maxsize: int, quiet: float, max_delay: float,
                 ends: Callable[[Any], bool] = lambda item: False):
        self.quiet, self.max_delay = quiet, max_delay
        self._q: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._ends = ends
        self._touched = float("-inf")

    def put_nowait(self, item: Any) -> None:
        self._q.put_nowait(item)

    def put(self, item: Any, timeout: float | None = None) -> None:
        self._q.put(item, timeout=timeout)

    def touch(self) -> None:
        self._touched = time.monotonic()

    def next_batch(self) -> list[Any]:
        first = self._q.get()
        items = [first]
        if self._ends(first) or self.quiet <= 0:
            return items
        now = time.monotonic()
        deadline, last = now + self.max_delay, now
        while True:
            now = time.monotonic()
            left = min(max(last, self._touched) + self.quiet, deadline) - now
            if left <= 0:
                return items
            try:
                item = self._q.get(timeout=left)
            except queue.Empty:
                continue            # a touch may have come meanwhile: look again
            items.append(item)
            last = time.monotonic()
            if self._ends(item):
                return items
