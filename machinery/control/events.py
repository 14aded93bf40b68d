"""EventRecorder: core/v1 Events about the objects controllers act on (`Scheduled`,
`ScalingReplicaSet`, `SuccessfulCreate`, `Killing`, `FailedScheduling`, ...).

Contract:
- `event(obj, type_, reason, message)` never blocks and never raises: events are written
  by one background thread from a bounded queue; when the queue is full they are dropped
  (as client-go's broadcaster does) — events are advice, not state.
- While the cluster is busy they wait: the writer holds what it has until neither an event
  nor a `touch()` (the manager touches on every watch event its informers receive) came for
  `quiet` seconds (0.5: the controllers see a node's work only as the pod updates it
  writes, the first of them a few hundred ms after the bindings), at most `max_delay` (3 s)
  after the first it holds (apiserver/holdback.py). In a burst of pod starts the bindings
  and statuses are written first, the Scheduled and SuccessfulCreate events just after.
  `stop()` writes what is held.
- Repeats (same object uid, type, reason, message, component) are aggregated: the first
  creates an Event named `<object>.<hex nanoseconds>`; later ones bump `count` and
  `lastTimestamp` with a merge patch (a new Event is created if the old one is gone).
- Events of cluster-scoped objects (nodes) go to namespace `default`, as Kubernetes does.
- Spam filter, as client-go's EventSourceObjectSpamFilter: per involved object a token
  bucket of 25 events refilled at one per 5 minutes; beyond it events are dropped. A
  ReplicaSet creating 100 pods records 25 `SuccessfulCreate` events, not 100 — under load
  the API server's write budget goes to pods, not to their paperwork.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from typing import Protocol

from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client
from shoal.machinery.control.holdback import HoldBack

from shoal.machinery.api.objects import format_time, meta
from shoal.machinery.control.clock import Clock, RealClock

log = logging.getLogger("shoal.controller.events")

NORMAL, WARNING = "Normal", "Warning"


class EventSink(Protocol):
    def event(self, obj: dict, type_: str, reason: str, message: str) -> None: ...


class RecordingEvents:
    """Test double: keeps (object key, type, reason, message) tuples."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        m = meta(obj)
        key = f"{m.get('namespace')}/{m.get('name')}" if m.get("namespace") else m.get("name", "")
        self.events.append((key, type_, reason, message))

    def reasons(self) -> list[str]:
        return [e[2] for e in self.events]


class EventRecorder:
    def __init__(self, client: Client, component: str, *, clock: Clock | None = None, max_pending: int = 5000,
                 remember: int = 4096, burst: int = 25, refill_seconds: float = 300.0, quiet: float = 0.5,
                 max_delay: float = 3.0):
        self.client = client
        self.component = component
        self.clock = clock or RealClock()
        self._q = HoldBack(maxsize=max_pending, quiet=quiet, max_delay=max_delay, ends=lambda item: item is None)
        self._seen: OrderedDict[tuple, tuple[str, str, int]] = OrderedDict()
        self._remember = remember
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.burst, self.refill_seconds = burst, refill_seconds
        self._buckets: OrderedDict[tuple, tuple[float, float]] = OrderedDict()
        self._bucket_lock = threading.Lock()

    def allow(self, obj_key: tuple) -> bool:
        """Token bucket per involved object (see module docstring)."""
        now = self.clock.now()
        with self._bucket_lock:
            tokens, at = self._buckets.get(obj_key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) / self.refill_seconds)
            ok = tokens >= 1.0
            self._buckets[obj_key] = (tokens - 1.0 if ok else tokens, now)
            self._buckets.move_to_end(obj_key)
            if len(self._buckets) > 4 * self._remember:
                self._buckets.popitem(last=False)
            return ok

    def event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        m = meta(obj)
        if not self.allow((obj.get("kind", ""), m.get("namespace", ""), m.get("name", ""), m.get("uid", ""))):
            self.dropped += 1
            return
        ref = {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""), "name": m.get("name", ""),
               "namespace": m.get("namespace", ""), "uid": m.get("uid", ""),
               "resourceVersion": m.get("resourceVersion", "")}
        try:
            self._q.put_nowait((ref, type_, reason, message, self.clock.now()))
        except queue.Full:
            self.dropped += 1

    def touch(self) -> None:
        """The cluster is busy (a watch event came): keep holding the events gathered so far."""
        self._q.touch()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"events-{self.component}", daemon=True)
            self._thread.start()

    def stop(self, flush_timeout: float = 2.0) -> None:
        """Write what is queued and held (for up to `flush_timeout` s), then stop."""
        if self._thread is None:
            return
        try:
            self._q.put(None, timeout=flush_timeout)    # ends the held batch: written, then the thread ends
        except queue.Full:
            pass
        self._thread.join(flush_timeout)

    def _run(self) -> None:
        while True:
            for item in self._q.next_batch():
                if item is None:
                    return
                try:
                    self._write(*item)
                except Exception as e:
                    log.debug("event %s on %s/%s not recorded: %s", item[2], item[0]["kind"], item[0]["name"], e)

    def _write(self, ref: dict, type_: str, reason: str, message: str, at: float) -> None:
        ns = ref["namespace"] or "default"
        agg = (ref["uid"], ref["kind"], ref["name"], type_, reason, message)
        ts = format_time(at)
        seen = self._seen.get(agg)
        if seen is not None:
            name, ens, count = seen
            try:
                self.client.patch("events", name, {"count": count + 1, "lastTimestamp": ts}, namespace=ens)
                self._seen[agg] = (name, ens, count + 1)
                self._seen.move_to_end(agg)
                return
            except errors.NotFound:
                pass
        name = f"{ref['name']}.{time.time_ns():x}"
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": {k: v for k, v in ref.items() if v},
                "reason": reason, "message": message, "type": type_,
                "source": {"component": self.component}, "reportingComponent": self.component,
                "count": 1, "firstTimestamp": ts, "lastTimestamp": ts}
        self.client.create("events", body, namespace=ns)
        self._seen[agg] = (name, ns, 1)
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
