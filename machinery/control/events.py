"""EventRecorder: core/v1 Events about the objects a component acts on — the controllers'
`Scheduled`, `ScalingReplicaSet`, `SuccessfulCreate`, `FailedScheduling`, the agent's `Pulled`,
`Created`, `Started`, `Killing`, `BackOff`, `Unhealthy`. One recorder for both; its options
say who records (component, host) and how (hold, spam filter, aggregation window).

Contract:
- `event(obj, type_, reason, message)` never blocks and never raises: events are written by
  one background thread (`start()`; it returns the recorder) from a bounded queue; when the
  queue is full they are dropped with a log line (as client-go's broadcaster does) — events
  are advice, not state.
- While the component is busy they wait: the writer holds what it has until neither an
  event nor a `touch()` came for `quiet` seconds, at most `max_delay` after the first it
  holds (holdback.py). The controllers touch on every watch event their informers receive
  (quiet 0.5 s: they see a node's work only as the pod updates it writes, the first a few
  hundred ms after the bindings); the agent on every pod sync (quiet 0.1 s). In a burst of
  pod starts the bindings and statuses are written first, the events just after.
  `flush()` writes what is held and waits for it; `stop()` writes what is held and stops.
- Repeats (same involved object uid, kind and name, type, reason, message) are aggregated:
  the first creates an Event named `<object>.<hex nanoseconds>`; later ones bump `count` and
  `lastTimestamp` with a merge patch (a new Event is created if the old one is gone, or
  when the last one is older than `aggregate_window` seconds; None: no such limit). The
  last `remember` series are kept.
- The Event: `involvedObject` (kind, apiVersion, name, namespace, uid, resourceVersion —
  those the object has), `source.component` and `reportingComponent` = `component`;
  with `host` (the agent's node name) also `source.host` and `reportingInstance`; with
  `event_time` also `eventTime` (MicroTime). first/lastTimestamp at whole seconds.
- Events of cluster-scoped objects (nodes) go to namespace `default`, as Kubernetes does.
- A message longer than MAX_MESSAGE_BYTES (1024, the note limit of Kubernetes' events API,
  which the API server enforces on nodes' Events) is cut to fit, ending in "...", as
  Kubernetes' recorders do.
- 429 TooManyRequests (the API server's per-node Event rate limit): the event is dropped, and
  so is every event written before the answer's Retry-After has passed (one log line per
  such pause) — never a retry loop that would hold the writer, never an exception out of it.
- Spam filter, as client-go's EventSourceObjectSpamFilter: per involved object a token
  bucket of `burst` events (25) refilled at one per `refill_seconds` (300); beyond it events
  are dropped. A ReplicaSet creating 100 pods records 25 `SuccessfulCreate` events, not 100
  — under load the API server's write budget goes to pods, not to their paperwork.
  `burst=None` turns it off (the agent: one pod's events are few, and each one counts).

`EventSink` is the seam the controllers and the pod workers take; `RecordingEvents` is its
test double.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from shoal.machinery.api import errors
from shoal.machinery.api.objects import key_of
from shoal.machinery.api.times import format_micro_time, format_time
from shoal.machinery.control.clock import Clock, RealClock
from shoal.machinery.control.holdback import HoldBack

log = logging.getLogger(__name__)

NORMAL, WARNING = "Normal", "Warning"
MAX_MESSAGE_BYTES = 1024
_REF_FIELDS = ("apiVersion", "kind", "name", "namespace", "uid", "resourceVersion")


class EventSink(Protocol):
    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class RecordingEvents:
    """Test double: keeps (object key, type, reason, message) tuples."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((key_of(dict(obj)), type_, reason, message))

    def reasons(self) -> list[str]:
        return [e[2] for e in self.events]


@dataclass(frozen=True)
class _Pending:
    ref: dict[str, Any]           # the involvedObject, taken when the event was recorded
    type_: str
    reason: str
    message: str
    at: float                     # the injected clock's now()


@dataclass
class _Series:
    name: str                     # the Event written for the first of the series
    namespace: str
    count: int
    last: float                   # when the latest of the series happened


def truncate_message(message: str) -> str:
    """`message` cut to MAX_MESSAGE_BYTES of UTF-8, ending in "..." when cut (on a character
    boundary)."""
    data = message.encode()
    if len(data) <= MAX_MESSAGE_BYTES:
        return message
    return data[:MAX_MESSAGE_BYTES - 3].decode(errors="ignore") + "..."


class EventRecorder:
    def __init__(self, client: Any, component: str, *, host: str | None = None, event_time: bool = False,
                 clock: Clock | None = None, quiet: float = 0.5, max_delay: float = 3.0,
                 burst: int | None = 25, refill_seconds: float = 300.0, aggregate_window: float | None = None,
                 max_pending: int = 5000, remember: int = 4096):
        self.client = client
        self.component, self.host, self.event_time = component, host, event_time
        self.clock = clock or RealClock()
        self.burst, self.refill_seconds = burst, refill_seconds
        self.aggregate_window = aggregate_window
        self._q = HoldBack(maxsize=max_pending, quiet=quiet, max_delay=max_delay,
                           ends=lambda item: not isinstance(item, _Pending))
        self._series: OrderedDict[tuple, _Series] = OrderedDict()
        self._remember = remember
        self._buckets: OrderedDict[tuple, tuple[float, float]] = OrderedDict()
        self._bucket_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._last_ns = 0
        self._full = False
        self._throttled_until: float | None = None      # the API server's Retry-After (clock time)
        self.sent = 0                 # Events created or patched
        self.dropped = 0              # by the spam filter, a full queue or the server's rate limit

    # -- recording (any thread) ---------------------------------------------------------------
    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        message = truncate_message(message)
        m = obj.get("metadata") or {}
        ref = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": m.get("name"),
               "namespace": m.get("namespace"), "uid": m.get("uid"), "resourceVersion": m.get("resourceVersion")}
        ref = {k: ref[k] for k in _REF_FIELDS if ref[k]}
        if self.burst is not None and not self.allow((ref.get("kind"), ref.get("namespace"), ref.get("name"),
                                                      ref.get("uid"))):
            self.dropped += 1
            return
        try:
            self._q.put_nowait(_Pending(ref, type_, reason, message, self.clock.now()))
            self._full = False
        except queue.Full:
            self.dropped += 1
            if not self._full:        # one line per overflow, not one per dropped event
                self._full = True
                log.warning("%s: event queue full, dropping events (first: %s %s: %s)", self.component, reason,
                            ref.get("name"), message)

    def allow(self, obj_key: tuple) -> bool:
        """Token bucket per involved object (see module docstring); True without a spam filter."""
        if self.burst is None:
            return True
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

    def touch(self) -> None:
        """The component is busy (a watch event came, a pod sync ran): keep holding what is held."""
        self._q.touch()

    # -- the writer's life ----------------------------------------------------------------------
    def start(self) -> "EventRecorder":
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"events-{self.component}", daemon=True)
                self._thread.start()
        return self

    def flush(self, timeout: float = 5.0) -> None:
        """Write what is queued and held now; wait for it (up to `timeout` s). Needs `start()`."""
        done = threading.Event()
        try:
            self._q.put(done, timeout=timeout)
        except queue.Full:
            return
        done.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """Write what is queued and held (for up to `timeout` s), then stop."""
        if self._thread is None:
            return
        try:
            self._q.put(None, timeout=timeout)    # ends the held batch: written, then the thread ends
        except queue.Full:
            pass
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            for item in self._q.next_batch():
                if item is None:
                    return
                if isinstance(item, threading.Event):
                    item.set()
                    continue
                try:
                    self._write_unless_throttled(item)
                except Exception as e:   # best-effort: never let an event break the component
                    log.warning("%s: event %s on %s %s not recorded: %s", self.component, item.reason,
                                item.ref.get("kind", "object"), item.ref.get("name"), e)

    # -- writing (the writer thread) ------------------------------------------------------------
    def _write_unless_throttled(self, ev: _Pending) -> None:
        """`_write`, unless the API server asked to wait (429): then the event is dropped."""
        now = self.clock.now()
        if self._throttled_until is not None:
            if now < self._throttled_until:
                self.dropped += 1
                return
            self._throttled_until = None
        try:
            self._write(ev)
        except errors.TooManyRequests as e:
            retry = e.details.get("retryAfterSeconds")
            wait = float(retry) if isinstance(retry, (int, float)) and retry > 0 else 1.0
            self._throttled_until = now + wait
            self.dropped += 1
            log.warning("%s: the API server limits this component's events (%s); dropping events for %gs",
                        self.component, e.message, wait)

    def _write(self, ev: _Pending) -> None:
        ref = ev.ref
        ns = ref.get("namespace") or "default"
        key = (ref.get("uid"), ref.get("kind"), ref.get("name"), ev.type_, ev.reason, ev.message)
        ts = format_time(ev.at)
        series = self._series.get(key)
        if series is not None and (self.aggregate_window is None or ev.at - series.last <= self.aggregate_window):
            try:
                self.client.patch("events", series.name, {"count": series.count + 1, "lastTimestamp": ts},
                                  namespace=series.namespace)
                series.count += 1
                series.last = ev.at
                self._series.move_to_end(key)
                self.sent += 1
                return
            except errors.NotFound:
                pass            # compacted or deleted: record a new one
        name = f"{ref.get('name', 'unknown')}.{self._unique_ns():x}"
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
            "involvedObject": dict(ref), "reason": ev.reason, "message": ev.message, "type": ev.type_,
            "source": {"component": self.component}, "reportingComponent": self.component,
            "count": 1, "firstTimestamp": ts, "lastTimestamp": ts}
        if self.host:
            body["source"]["host"] = self.host
            body["reportingInstance"] = self.host
        if self.event_time:
            body["eventTime"] = format_micro_time(ev.at)
        self.client.create("events", body, namespace=ns)
        self.sent += 1
        self._series[key] = _Series(name, ns, 1, ev.at)
        self._series.move_to_end(key)
        while len(self._series) > self._remember:
            self._series.popitem(last=False)

    def _unique_ns(self) -> int:
        """Wall-clock nanoseconds, as Kubernetes names Events, never repeated by this recorder
        (two events of one object within a clock tick would otherwise share a name)."""
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns
