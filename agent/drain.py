"""Draining before SIGTERM, the executors: `DrainGate` (asked by the pod worker before it
stops a deleted pod's containers) and `AppliedPublisher` (writes this node's proxy position
on its Node). The decisions are `agent.drainplan`'s, pure; the sequence is in its docstring
and docs/services.md ("Draining before SIGTERM").

`DrainGate(node_name=..., services=..., slices=..., nodes=..., clock=..., wake=...)` reads
the agent's informers (all Services and EndpointSlices, all Nodes) and, when this node runs
a proxy, its position (`own_applied`). `check(pod)` remembers per pod uid when the wait
began and R once decided, and forgets them when the answer is to proceed (`forget(uid)`
too, when the pod is torn down). While pods wait, any change of an EndpointSlice, of a
Node's published position or readiness, or of the own proxy's position wakes them
(`wake(uid)`: the dispatcher's), so a SIGTERM follows the last proxy within an informer
event, not a polling period.

`AppliedPublisher(client, node_name=..., nodes=..., clock=...)` keeps `ANN_APPLIED` on the
node's own Node equal to what it is told: `applied(revision)` after each proxy sync, or
`absent()` on a node without a proxy (a stale value from an earlier run would make every
drain wait for rules nobody updates). Level-based against the Node as the informer has it
(a Node re-registered without the annotation gets it again), one merge patch of the
annotation at a time, at most every `interval` (`drainplan.plan_publish`), on a thread of
its own so that the proxy's sync never waits for the API server.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Mapping, Protocol

from shoal.machinery.api import errors
from shoal.machinery.control.clock import Clock
from shoal.agent.drainplan import (ANN_APPLIED, DEFAULT_CAP, PUBLISH_INTERVAL, DrainDecision, plan_drain,
                                   plan_publish, published_revision)
from shoal.agent.plan import pod_grace_seconds

log = logging.getLogger(__name__)


class Source(Protocol):
    """What the gate needs of an informer (`machinery.control.informer.Informer`)."""

    def list(self) -> list[dict]: ...

    def get(self, key: str) -> dict | None: ...

    def has_synced(self) -> bool: ...

    def add_handler(self, *, on_add=None, on_update=None, on_delete=None, on_list=None) -> None: ...


def _published(node: Mapping | None) -> str | None:
    return (((node or {}).get("metadata") or {}).get("annotations") or {}).get(ANN_APPLIED)


def _waking_change(old: Mapping, new: Mapping) -> bool:
    """A Node change that can end a wait: its published position or its readiness/taints."""
    return (published_revision(old) != published_revision(new)
            or (old.get("status") or {}).get("conditions") != (new.get("status") or {}).get("conditions")
            or (old.get("spec") or {}).get("taints") != (new.get("spec") or {}).get("taints"))


class DrainGate:
    def __init__(self, *, node_name: str, services: Source, slices: Source, nodes: Source, clock: Clock,
                 wake: Callable[[str], None], cap: float = DEFAULT_CAP,
                 own_applied: Callable[[], int | None] | None = None):
        self.node_name = node_name
        self.services, self.slices, self.nodes = services, slices, nodes
        self.clock = clock
        self.cap = cap
        self._wake = wake
        self._own_applied = own_applied
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[float, int | None]] = {}     # uid -> (started_at, R)
        slices.add_handler(on_add=lambda _o: self.wake_waiting(), on_update=lambda _a, _b: self.wake_waiting(),
                           on_delete=lambda _o: self.wake_waiting(), on_list=self.wake_waiting)
        services.add_handler(on_delete=lambda _o: self.wake_waiting(), on_update=lambda _a, _b: self.wake_waiting())
        nodes.add_handler(on_update=lambda a, b: self.wake_waiting() if _waking_change(a, b) else None,
                          on_delete=lambda _o: self.wake_waiting(), on_list=self.wake_waiting)

    def wake_waiting(self) -> None:
        """Wake every pod whose SIGTERM is held (cheap when none is)."""
        with self._lock:
            uids = list(self._waiting)
        for uid in uids:
            self._wake(uid)

    def check(self, pod: Mapping) -> DrainDecision:
        """May the deleted `pod` get its SIGTERM now? (`drainplan.plan_drain`.)"""
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        now = self.clock.now()
        with self._lock:
            started_at, target = self._waiting.get(uid, (now, None))
        grace = pod_grace_seconds(pod) or 0
        synced = self.services.has_synced() and self.slices.has_synced() and self.nodes.has_synced()
        d = plan_drain(pod, grace=grace, services=self.services.list() if synced else (),
                       slices=self.slices.list() if synced else (), nodes=self.nodes.list() if synced else (),
                       synced=synced, target=target, started_at=started_at, now=now, cap=self.cap,
                       own_node=self.node_name, own_applied=self._own_applied() if self._own_applied else None)
        with self._lock:
            if d.proceed:
                self._waiting.pop(uid, None)
            else:
                self._waiting[uid] = (started_at, d.target)
        return d

    def forget(self, uid: str) -> None:
        with self._lock:
            self._waiting.pop(uid, None)

    def waiting(self) -> list[str]:
        with self._lock:
            return list(self._waiting)


class AppliedPublisher:
    def __init__(self, client, *, node_name: str, nodes: Source, clock: Clock, interval: float = PUBLISH_INTERVAL):
        self.client = client
        self.node_name = node_name
        self.nodes = nodes
        self.clock = clock
        self.interval = interval
        self._cond = threading.Condition()
        self._active = False            # nothing is published before the proxy's first sync
        self._want: str | None = None
        self._written: tuple[str | None, str, int] | None = None    # (value, node uid, resourceVersion) last written
        self._last_write: float | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self.writes = 0
        nodes.add_handler(on_add=self._on_node, on_update=lambda _a, b: self._on_node(b), on_list=self.poke)

    def applied(self, revision: int) -> None:
        """The proxy's rules now include every slice write up to `revision`."""
        self._set(str(revision))

    def absent(self) -> None:
        """No proxy runs here: the annotation must not be there."""
        self._set(None)

    def _set(self, want: str | None) -> None:
        with self._cond:
            if self._active and want == self._want:
                return
            self._active, self._want = True, want
            self._cond.notify_all()

    def _on_node(self, node: Mapping) -> None:
        if (node.get("metadata") or {}).get("name") == self.node_name:
            self.poke()

    def poke(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def start(self) -> "AppliedPublisher":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"shoal-applied-{self.node_name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def current(self) -> str | None:
        """The annotation as it stands: the informer's Node, unless our last write is newer
        than the informer's copy (its echo has not arrived yet)."""
        node = self.nodes.get(self.node_name)
        if node is None:
            return self._written[0] if self._written else None
        md = node.get("metadata") or {}
        try:
            rv = int(md.get("resourceVersion") or 0)
        except ValueError:
            rv = 0
        w = self._written
        if w is not None and w[1] == md.get("uid") and w[2] > rv:
            return w[0]
        return _published(node)

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                if self._stop:
                    return
                if not self._active or self.nodes.get(self.node_name) is None:
                    self._cond.wait(1.0)
                    continue
                want = self._want
                at = plan_publish(want=want, current=self.current(), last_write=self._last_write,
                                  now=self.clock.now(), interval=self.interval)
                if at is None:
                    self._cond.wait(5.0)        # woken by a new position or a change of the Node
                    continue
                delay = at - self.clock.now()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
            try:
                node = self.client.patch("nodes", self.node_name, {"metadata": {"annotations": {ANN_APPLIED: want}}})
                md = node.get("metadata") or {}
                self._written = (want, str(md.get("uid") or ""), int(md.get("resourceVersion") or 0))
                self.writes += 1
                failures = 0
            except errors.NotFound:
                pass                # the Node is being registered again; its informer event wakes us
            except Exception as e:
                failures += 1
                log.warning("node %s: publishing the service proxy's position (%s=%s) failed: %s", self.node_name,
                            ANN_APPLIED, want, e)
                with self._cond:
                    self._cond.wait(min(0.2 * 2 ** failures, 5.0))
            self._last_write = self.clock.now()


__all__ = ["AppliedPublisher", "DrainGate"]
