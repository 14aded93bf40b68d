"""Events the agent records (core/v1 Event), aggregated like kubelet's recorder.

`EventRecorder.emit(obj, type, reason, message)` never blocks the pod worker:
events go through a bounded queue to one sender thread (dropped, with a log
line, if the API server is far behind). Events are advice, pod statuses are
state: the sender holds what it has while the agent is busy — emitting events
or syncing pods (`touch()`, called by the pod dispatcher) — and writes it, in
order, once the agent has been quiet for `quiet` seconds, at most `max_delay`
after the first event it holds (apiserver/holdback.py). A burst of pod starts
thus writes its statuses first and its events just after, instead of spending
the API server's CPU on them mid-burst (bench/pod_start.py, docs/benchmarks.md).
`flush()` and `stop()` send at once.

A repeat of the same (object uid, type, reason, message) within
`aggregate_window` seconds updates the existing Event's `count` and
`lastTimestamp` instead of creating a new one — the "BackOff x12" line of
`kubectl describe`.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from typing import Callable, Mapping

from shoal.machinery.control.clock import Clock
from shoal.machinery.api import errors
from shoal.machinery.control.holdback import HoldBack

from shoal.agent.status import rfc3339, rfc3339_micro

log = logging.getLogger(__name__)
COMPONENT = "shoal-agent"


class EventRecorder:
    def __init__(self, client, *, node_name: str, clock: Clock, aggregate_window: float = 600.0,
                 max_queue: int = 2000, cache_size: int = 4096, quiet: float = 0.1, max_delay: float = 3.0):
        self.client = client
        self.node_name = node_name
        self.clock = clock
        self.window = aggregate_window
        self._q = HoldBack(maxsize=max_queue, quiet=quiet, max_delay=max_delay,
                           ends=lambda item: not isinstance(item, tuple))
        self._seen: OrderedDict[tuple, dict] = OrderedDict()
        self._cache_size = cache_size
        self._seq = 0
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="shoal-events", daemon=True)
        self._thread.start()

    def emit(self, obj: Mapping, type_: str, reason: str, message: str) -> None:
        try:
            self._q.put_nowait((dict(obj.get("metadata") or {}), obj.get("kind") or "Pod",
                                obj.get("apiVersion") or "v1", type_, reason, message, self.clock.now()))
        except queue.Full:
            log.warning("event queue full, dropping %s %s: %s", reason, (obj.get("metadata") or {}).get("name"),
                        message)

    def touch(self) -> None:
        """The agent is busy (a pod sync ran): keep holding the events gathered so far."""
        self._q.touch()

    def flush(self, timeout: float = 5.0) -> None:
        done = threading.Event()
        try:
            self._q.put(done, timeout=timeout)
        except queue.Full:
            return
        done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        self._q.put(None)
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
                    self._send(*item)
                except Exception as e:   # events are best-effort: never let them break the agent
                    log.warning("recording event failed: %s", e)

    def _send(self, md: dict, kind: str, api_version: str, type_: str, reason: str, message: str, t: float) -> None:
        ns = md.get("namespace") or "default"
        key = (md.get("uid"), type_, reason, message)
        prev = self._seen.get(key)
        if prev is not None and t - prev["t"] <= self.window:
            prev["count"] += 1
            prev["t"] = t
            try:
                self.client.patch("events", prev["name"], {"count": prev["count"], "lastTimestamp": rfc3339(t)}, ns)
                self.sent += 1
                self._seen.move_to_end(key)
                return
            except errors.NotFound:
                pass            # compacted or deleted: record a new one
        self._seq += 1
        name = f"{md.get('name', 'unknown')}.{int(t * 1e9) + self._seq:x}"
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": name, "namespace": ns},
              "involvedObject": {"kind": kind, "apiVersion": api_version, "name": md.get("name"), "namespace": ns,
                                 "uid": md.get("uid"), "resourceVersion": md.get("resourceVersion")},
              "reason": reason, "message": message, "type": type_,
              "source": {"component": COMPONENT, "host": self.node_name},
              "firstTimestamp": rfc3339(t), "lastTimestamp": rfc3339(t), "count": 1,
              "eventTime": rfc3339_micro(t), "reportingComponent": COMPONENT,
              "reportingInstance": self.node_name}
        if kind == "Node":
            ev["involvedObject"].pop("namespace")
        self.client.create("events", ev, ns)
        self.sent += 1
        self._seen[key] = {"name": name, "count": 1, "t": t}
        while len(self._seen) > self._cache_size:
            self._seen.popitem(last=False)
