"""Watch fan-out: one reader of the revision log, many watchers.

Design notes
------------
* A single pump task reads the log after the last revision it has seen and
  appends the rows to a bounded in-memory tail; every watch stream reads from
  that tail, so a write costs one log query however many watchers there are.
* The pump wakes when this process commits a write (the store's `on_commit`
  hook hops to the event loop) and otherwise
  polls every `poll_interval` seconds, which is how writes made by another
  API server process on the same database are seen. On local SQLite it reads
  the log on the event loop (no thread hop per round of writes), and a write
  made on the event loop itself reads the log at once, in its commit hook:
  the watchers are woken in the same turn of the loop instead of after the
  pump's own turn — under a burst of requests each turn waits behind the
  requests queued before it (measured: a bound pod reached its agent 15–30 ms
  after the binding; see docs/benchmarks.md).
* A watcher that asks for a revision older than the tail reads the gap from
  the database first (raising Gone if it was compacted), then follows the
  tail. A watcher that falls so far behind that the tail has moved past it
  does the same.
* Filtering follows Kubernetes: an object that starts matching a watcher's
  selectors arrives as ADDED, one that stops matching as DELETED (with its
  previous value), so an agent watching `spec.nodeName=X` sees a pod bound to
  it as ADDED.
"""
from __future__ import annotations

import asyncio
import bisect
import json
import logging
import threading
from typing import AsyncIterator, Callable

import anyio

from shoal.machinery.api import errors
from shoal.apiserver.store import Event, Store

log = logging.getLogger(__name__)

Matcher = Callable[[dict], bool]
_LOOP_BATCH = 200      # log rows per read when the pump reads on the event loop


class WatchHub:
    def __init__(self, store: Store, *, tail_size: int = 1024, poll_interval: float = 0.5,
                 read_on_loop: bool = False):
        """read_on_loop: the pump reads the log on the event loop itself, in small batches
        (local SQLite, where a read takes well under a millisecond and a hop to a worker
        thread costs more); otherwise on a worker thread (a remote database can stall)."""
        self.store = store
        self.read_on_loop = read_on_loop
        # Plain lists (trimmed in halves) rather than deques, so that slicing from a
        # bisected position costs only the events returned.
        self.tail: list[Event] = []
        self._tail_revs: list[int] = []
        self.tail_size = tail_size
        self.poll_interval = poll_interval
        self.latest = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        # Watchers waiting for the next signal: one future each, resolved by _signal, so a
        # woken watcher runs on the loop's next turn (asyncio.wait_for on an Event took three
        # turns, each behind every request queued meanwhile). Waiters are kept by resource
        # and woken only by events of theirs: a pod watcher woken by every Event write found
        # nothing, asked whether its client had gone (a cancel scope and a task switch) and
        # went back to sleep — a tenth of the API server's CPU in a 50-pod burst.
        self._generation = 0                      # every signal
        self._broadcasts = 0                      # signals for all resources (Gone, stop)
        self._resource_generation: dict[str, int] = {}
        self._waiters: dict[str | None, set[asyncio.Future]] = {}
        self._task: asyncio.Task | None = None
        self._stopping = False

    # -- lifecycle (called on the event loop) -------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self.latest = await anyio.to_thread.run_sync(self.store.current_revision)
        self.store.on_commit.append(self._on_commit)
        self._task = asyncio.create_task(self._pump(), name="watch-pump")

    async def stop(self) -> None:
        self._stopping = True
        if self._on_commit in self.store.on_commit:
            self.store.on_commit.remove(self._on_commit)
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._signal()

    def _on_commit(self, revision: int) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if self.read_on_loop and threading.get_ident() == self._loop_thread and not self._stopping:
            # A write made on the loop: read the log now (synchronously, so nothing else on
            # the loop runs in between — the pump reads the same way); the pump covers errors.
            try:
                while True:
                    evs = self.store.events_after(self.latest, limit=_LOOP_BATCH)
                    if evs:
                        self._append(evs)
                    if len(evs) < _LOOP_BATCH:
                        break
            except Exception:   # noqa: BLE001 — Gone, a locked database…: the pump's turn
                self._wake.set()
            return
        try:
            loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:
            pass

    def _append(self, evs: list[Event]) -> None:
        """Add events read from the log (after `latest`, in order) to the tail; wake watchers."""
        for ev in evs:
            self.tail.append(ev)
            self._tail_revs.append(ev.revision)
        if len(self.tail) > 2 * self.tail_size:
            del self.tail[:self.tail_size]
            del self._tail_revs[:self.tail_size]
        self.latest = evs[-1].revision
        self._signal({ev.resource for ev in evs})

    async def _pump(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                while True:
                    if self.read_on_loop:
                        batch = _LOOP_BATCH
                        evs = self.store.events_after(self.latest, limit=batch)
                    else:
                        batch = 2000
                        evs = await anyio.to_thread.run_sync(lambda: self.store.events_after(self.latest, limit=batch))
                    if not evs:
                        break
                    self._append(evs)
                    if len(evs) < batch:
                        break
                    if self.read_on_loop:
                        await asyncio.sleep(0)      # a long catch-up must not hold the loop
            except errors.Gone:
                # We fell behind a compaction; jump to the present. The tail would now have a
                # hole where the skipped events were: drop it, so watchers read that range
                # from the log (or get 410 Gone for what is compacted) instead of missing it.
                self.tail.clear()
                self._tail_revs.clear()
                self.latest = await anyio.to_thread.run_sync(self.store.current_revision)
                self._signal()
            except Exception:
                log.exception("watch pump failed to read the log")
                await asyncio.sleep(self.poll_interval)

    def _signal(self, resources: set[str] | None = None) -> None:
        """Wake the watchers of `resources` (and those waiting for any change); all
        watchers when `resources` is None."""
        self._generation += 1
        if resources is None:
            self._broadcasts += 1
            keys = list(self._waiters)
        else:
            for r in resources:
                self._resource_generation[r] = self._resource_generation.get(r, 0) + 1
            keys = [*resources, None]
        for key in keys:
            for w in self._waiters.pop(key, ()):
                if not w.done():
                    w.set_result(None)

    # -- reading ---------------------------------------------------------------------------
    async def events_after(self, revision: int, resource: str) -> tuple[list[Event], int]:
        """Events of `resource` after `revision` known so far, and the revision they reach."""
        latest = self.latest
        if revision < self.store.compacted_revision:
            raise errors.Gone(f"too old resource version: {revision} ({self.store.compacted_revision})")
        if self._tail_revs and revision >= self._tail_revs[0] - 1:
            i = bisect.bisect_right(self._tail_revs, revision)
            out = [ev for ev in self.tail[i:] if ev.resource == resource and ev.revision <= latest]
            return out, latest
        if revision >= latest:
            return [], max(revision, latest)
        # The caller is behind the tail: read the gap from the database (Gone if compacted).
        evs = await anyio.to_thread.run_sync(
            lambda: self.store.events_after(revision, limit=5000, resource=resource))
        evs = [e for e in evs if e.revision <= latest]
        reached = evs[-1].revision if len(evs) == 5000 else latest
        return evs, reached

    def changed_token(self, resource: str | None = None) -> int:
        """Take before reading events; wait on it afterwards, so no signal falls in between.
        With a resource, only signals that concern it change the token."""
        if resource is None:
            return self._generation
        # Both counters only grow, so their sum changes whenever either does.
        return self._broadcasts + self._resource_generation.get(resource, 0)

    async def wait_changed(self, timeout: float, token: int | None = None, resource: str | None = None) -> None:
        """Return at the first signal after `token` was taken (at once if there was one
        already) that concerns `resource` (any signal when None), or after `timeout` seconds."""
        if token is not None and token != self.changed_token(resource):
            return
        loop = asyncio.get_running_loop()
        w = loop.create_future()
        self._waiters.setdefault(resource, set()).add(w)
        timer = loop.call_later(timeout, lambda: w.done() or w.set_result(None))
        try:
            await w
        finally:
            timer.cancel()
            waiting = self._waiters.get(resource)
            if waiting is not None:
                waiting.discard(w)
                if not waiting:
                    del self._waiters[resource]


def filter_event(ev: Event, matches: Matcher) -> tuple[str, dict] | None:
    """Kubernetes' watch filtering: map a raw log event to what a filtered watcher sees."""
    if ev.type == "ADDED":
        return ("ADDED", ev.object) if matches(ev.object) else None
    if ev.type == "DELETED":
        return ("DELETED", ev.object) if matches(ev.object) else None
    now = matches(ev.object)
    before = matches(ev.prev) if ev.prev is not None else False
    if now and before:
        return "MODIFIED", ev.object
    if now:
        return "ADDED", ev.object
    if before:
        prev = dict(ev.prev)
        prev["metadata"] = dict(prev.get("metadata") or {}, resourceVersion=str(ev.revision))
        return "DELETED", prev
    return None


def line(type_: str, obj: dict) -> bytes:
    return (json.dumps({"type": type_, "object": obj}, separators=(",", ":")) + "\n").encode()


async def stream(hub: WatchHub, *, resource: str, start_revision: int, matches: Matcher,
                 initial: list[dict] | None, timeout: float, bookmark_interval: float | None,
                 bookmark_object: Callable[[int], dict], is_disconnected: Callable[[], "asyncio.Future"] | None = None,
                 ) -> AsyncIterator[bytes]:
    """The body of one watch response: newline-delimited events strictly after start_revision."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # Events go out as one chunk per round, not one per event: every chunk is a socket write
    # (on loopback the kernel's TCP path runs in the writer's thread, holding the GIL), and
    # clients read lines whatever the chunking.
    for i in range(0, len(initial or []), 100):
        yield b"".join(line("ADDED", obj) for obj in initial[i:i + 100])
    rev = start_revision
    last_sent = last_check = loop.time()
    while loop.time() < deadline:
        token = hub.changed_token(resource)
        try:
            evs, reached = await hub.events_after(rev, resource)
        except errors.Gone as e:
            st = e.status()
            yield line("ERROR", st)
            return
        chunk: list[bytes] = []
        for ev in evs:
            out = filter_event(ev, matches)
            if out is not None:
                if out[1] is ev.object:
                    # The common case: the event's own object; serialize it once for all watchers.
                    data = ev.lines.get(out[0])
                    if data is None:
                        data = ev.lines[out[0]] = line(*out)
                    chunk.append(data)
                else:
                    chunk.append(line(*out))
                last_sent = loop.time()
        rev = max(rev, reached)
        if bookmark_interval is not None and loop.time() - last_sent >= bookmark_interval:
            chunk.append(line("BOOKMARK", bookmark_object(rev)))
            last_sent = loop.time()
        if chunk:
            yield chunk[0] if len(chunk) == 1 else b"".join(chunk)
        # Asking the server whether the client left costs a task switch and a cancel scope:
        # at most once a second (an idle watcher wakes that often anyway).
        if is_disconnected is not None and loop.time() - last_check >= 1.0:
            last_check = loop.time()
            if await is_disconnected():
                return
        if not evs:
            wait = min(deadline - loop.time(), 1.0 if bookmark_interval is None else
                       max(0.05, min(1.0, bookmark_interval - (loop.time() - last_sent))))
            if wait <= 0:
                break
            await hub.wait_changed(wait, token, resource)
