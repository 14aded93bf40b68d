"""The scheduler: binds pending pods to nodes.

Contract:
- Queue keys are pods with no `spec.nodeName` that are not deleting or finished.
- `reconcile(key)`: filter and score every known node (framework.schedule_one) against an
  in-memory `ClusterState`, *assume* the pod on the chosen node (so concurrent workers
  account for it), then bind through the pods/NAME/binding subresource (uid as precondition).
  The assumption stands until the watch brings the bound pod, and a pod assumed meanwhile is
  not scheduled again. A Conflict re-reads the pod: bound (by us or elsewhere) is fine,
  otherwise retry with back-off; the assumption is dropped on any failure.
- No node fits: the pod stays Pending with condition PodScheduled=False reason
  Unschedulable and the framework's message, plus a `FailedScheduling` Warning event. It
  is tried again when a node is added or changes, when a bound pod goes away, and every
  `retry_unschedulable` seconds.
- `Scheduled` event: "Successfully assigned default/web-x to node-a".

Throughput: `ClusterState` is maintained incrementally by informer handlers (per-node
requested cpu/memory, pod count, pods per owner), so scheduling one pod costs one pass over
the nodes and one HTTP write — never a list.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client

from shoal.machinery.control.events import NORMAL, WARNING, EventSink
from shoal.machinery.api.objects import (CONDITION_FALSE, get_condition, is_deleting, key_of, name_of, namespace_of,
                                         node_name_of, pod_phase, set_condition, thaw, uid_of)
from shoal.machinery.api.times import format_time
from shoal.machinery.control import Clock, Controller, Informer, Manager, RealClock, Result
from shoal.controller.scheduler.framework import Decision, NodeInfo, PodRequest, node_info, pod_request, schedule_one

log = logging.getLogger("shoal.controller.scheduler")

SCHEDULER_NAME = "default-scheduler"


def is_pending(pod: dict) -> bool:
    spec = pod.get("spec") or {}
    return (not spec.get("nodeName") and not is_deleting(pod) and pod_phase(pod) not in ("Succeeded", "Failed")
            and (spec.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME)


@dataclass
class _Placed:
    node: str
    req: PodRequest
    assumed: bool = False


class ClusterState:
    """Nodes and what is bound to them; thread-safe; fed by informer handlers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.nodes: dict[str, NodeInfo] = {}
        self.placed: dict[str, _Placed] = {}  # pod uid -> where it counts

    def _node(self, name: str) -> NodeInfo | None:
        return self.nodes.get(name)

    def set_node(self, node: dict) -> None:
        info = node_info(node)
        with self.lock:
            old = self.nodes.get(info.name)
            if old is not None:
                info.requested_cpu, info.requested_memory = old.requested_cpu, old.requested_memory
                info.pods, info.owners = old.pods, old.owners
            else:
                for p in self.placed.values():
                    if p.node == info.name:
                        info.add(p.req)
            self.nodes[info.name] = info

    def remove_node(self, name: str) -> None:
        with self.lock:
            self.nodes.pop(name, None)

    def pod_changed(self, pod: dict | None, *, uid: str) -> bool:
        """Account a pod's current version (None when deleted). True when capacity was freed."""
        with self.lock:
            prev = self.placed.get(uid)
            node = node_name_of(pod) if pod is not None else ""
            counts = pod is not None and bool(node) and pod_phase(pod) not in ("Succeeded", "Failed")
            if prev is not None and counts and prev.node == node:
                prev.assumed = False
                return False
            if prev is not None and pod is not None and not node and prev.assumed:
                return False  # our bind is in flight; the bound version will follow
            freed = False
            if prev is not None:
                del self.placed[uid]
                n = self._node(prev.node)
                if n is not None:
                    n.add(prev.req, -1)
                freed = True
            if counts:
                req = pod_request(pod)
                self.placed[uid] = _Placed(node, req)
                n = self._node(node)
                if n is not None:
                    n.add(req)
            return freed

    def assume(self, pod: dict, req: PodRequest) -> Decision:
        """Choose a node and account the pod there under one lock; returns the Decision."""
        with self.lock:
            decision = schedule_one(pod, req, list(self.nodes.values()))
            if decision.node is not None:
                self.placed[uid_of(pod)] = _Placed(decision.node, req, assumed=True)
                self.nodes[decision.node].add(req)
            return decision

    def in_flight(self, uid: str) -> bool:
        """Assumed and not yet seen bound: a binding of ours is on its way to the watch."""
        with self.lock:
            prev = self.placed.get(uid)
            return prev is not None and prev.assumed

    def forget(self, uid: str) -> None:
        with self.lock:
            prev = self.placed.get(uid)
            if prev is not None and prev.assumed:
                del self.placed[uid]
                n = self._node(prev.node)
                if n is not None:
                    n.add(prev.req, -1)


class Scheduler:
    def __init__(self, client: Client, *, pods: Informer, nodes: Informer, events: EventSink,
                 clock: Clock | None = None, retry_unschedulable: float = 30.0):
        self.client = client
        self.pod_inf, self.node_inf = pods, nodes
        self.events = events
        self.clock = clock or RealClock()
        self.retry_unschedulable = retry_unschedulable
        self.state = ClusterState()
        self._unschedulable: set[str] = set()
        self._unsched_lock = threading.Lock()
        self.controller: Controller | None = None
        self.bound = 0

    def register(self, manager: Manager, *, workers: int = 4) -> Controller:
        c = self.controller = manager.add_controller("scheduler", self, workers=workers)

        def node_upsert(*args):
            node = args[-1]
            self.state.set_node(node)
            self._retry_unschedulable()

        def node_delete(node):
            self.state.remove_node(name_of(node))

        def pod_add(pod):
            self.state.pod_changed(pod, uid=uid_of(pod))
            if is_pending(pod):
                c.enqueue(key_of(pod))

        def pod_update(old, new):
            if self.state.pod_changed(new, uid=uid_of(new)):
                self._retry_unschedulable()
            if is_pending(new):
                c.enqueue(key_of(new))

        def pod_delete(pod):
            if self.state.pod_changed(None, uid=uid_of(pod)):
                self._retry_unschedulable()
            with self._unsched_lock:
                self._unschedulable.discard(key_of(pod))

        self.node_inf.add_handler(on_add=node_upsert, on_update=node_upsert, on_delete=node_delete)
        self.pod_inf.add_handler(on_add=pod_add, on_update=pod_update, on_delete=pod_delete)
        return c

    def _retry_unschedulable(self) -> None:
        with self._unsched_lock:
            keys = list(self._unschedulable)
        for k in keys:
            if self.controller is not None:
                self.controller.enqueue(k)

    def reconcile(self, key: str) -> Result:
        pod = self.pod_inf.get(key)
        if pod is None or not is_pending(pod):
            with self._unsched_lock:
                self._unschedulable.discard(key)
            return Result()
        if self.state.in_flight(uid_of(pod)):
            return Result()     # bound by us a moment ago; the bound version is on its way
        try:
            req = pod_request(pod)
        except ValueError as e:
            self._unschedulable_status(pod, f"pod {key} has invalid resource requests: {e}")
            return Result()
        decision = self.state.assume(pod, req)
        if decision.node is None:
            with self._unsched_lock:
                self._unschedulable.add(key)
            self._unschedulable_status(pod, decision.message)
            return Result(requeue_after=self.retry_unschedulable)
        with self._unsched_lock:
            self._unschedulable.discard(key)
        try:
            self._bind(pod, decision.node)
        except BaseException:
            self.state.forget(uid_of(pod))
            raise
        return Result()

    def _bind(self, pod: dict, node: str) -> None:
        try:
            # The binding subresource, as Kubernetes' scheduler: the server sets spec.nodeName
            # and PodScheduled in one write and answers with a Status (a PUT of the whole pod
            # cost the server a full validation and the scheduler an encode and a decode).
            # The pod's uid is the precondition: a pod deleted and made again under the same
            # name is not bound by a decision taken for the old one.
            self.client.bind(name_of(pod), namespace_of(pod), node, uid=uid_of(pod))
        except errors.Conflict:
            fresh = self.client.get("pods", name_of(pod), namespace_of(pod))
            self.pod_inf.observe(fresh)
            if node_name_of(fresh):
                self.state.forget(uid_of(pod))
                return
            raise
        except errors.NotFound:
            self.state.forget(uid_of(pod))
            return
        self.bound += 1
        self.events.event(pod, NORMAL, "Scheduled", f"Successfully assigned {key_of(pod)} to {node}")

    def _unschedulable_status(self, pod: dict, message: str) -> None:
        cur = get_condition(pod.get("status"), "PodScheduled")
        if not (cur and cur.get("status") == CONDITION_FALSE and cur.get("message") == message):
            new = thaw(pod)
            status = new.setdefault("status", {})
            status.setdefault("phase", "Pending")
            now = format_time(self.clock.now())
            cond = {"type": "PodScheduled", "status": CONDITION_FALSE, "reason": "Unschedulable",
                    "message": message, "lastTransitionTime": now}
            if cur and cur.get("status") == CONDITION_FALSE:
                cond["lastTransitionTime"] = cur.get("lastTransitionTime") or now
            status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            set_condition(status, cond)
            try:
                self.pod_inf.observe(self.client.update_status("pods", new))
            except (errors.Conflict, errors.NotFound):
                pass  # a newer version is coming through the watch; the next attempt re-evaluates
        self.events.event(pod, WARNING, "FailedScheduling", message)
