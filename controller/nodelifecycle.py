"""Node lifecycle: heartbeats, Ready=Unknown, unreachable taints and eviction.

Heartbeats are Leases in namespace `kube-node-lease` named after the node, renewed by the
agent (`spec.renewTime`). As Kubernetes' node lifecycle controller does, health is judged
by *when this controller last saw the lease change* on its own clock (the "probe time"),
not by comparing the agent's timestamp with ours, so clock skew between hosts cannot make
a node look dead or alive. A node never seen renewing counts from when it was first seen.

Per node (`plan_node`, pure, with a fake clock in tests):
- stale (now - probe time > grace, default 8 s):
  * Ready condition → Unknown, reason NodeStatusUnknown, "Kubelet stopped posting node status.";
  * taints `node.kubernetes.io/unreachable` NoSchedule and NoExecute (timeAdded = now);
  * each pod on the node is force-deleted (grace 0: an unreachable agent cannot confirm)
    once `timeAdded + delay` has passed, where delay is the pod's toleration of the
    unreachable NoExecute taint (`tolerationSeconds`; a toleration without it tolerates
    forever), else annotation `shoal.io/eviction-delay-seconds`, else the default (5 s).
    Its ReplicaSet then creates a replacement that the scheduler puts on a healthy node.
- fresh: the unreachable taints are removed. The Ready condition is the agent's to set back.
Disruption guard (Kubernetes' "full disruption" rule): when at least 55% of the nodes of a
cluster of 3 or more look dead at the same time, the likelier cause is this controller or the
API server falling behind (or a network partition around the control plane), not that many
hosts died at once — nodes are still marked Unknown and tainted, but no pod is evicted until
fewer nodes are unhealthy.
The reconcile asks to be requeued at the next deadline (grace expiry or eviction time); a
1-second monitor job enqueues every node as a safety net.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client

from shoal.controller import indexes
from shoal.machinery.control.events import NORMAL, WARNING, EventSink
from shoal.machinery.api.objects import (CONDITION_UNKNOWN, annotations_of, get_condition, key_of, name_of,
                                         namespace_of, thaw, uid_of)
from shoal.machinery.api.times import format_time, parse_time
from shoal.machinery.control import Clock, Controller, Informer, Manager, RealClock, Result
from shoal.controller.scheduler.framework import tolerates

log = logging.getLogger("shoal.controller.nodelifecycle")

LEASE_NAMESPACE = "kube-node-lease"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
EVICTION_DELAY_ANNOTATION = "shoal.io/eviction-delay-seconds"
UNKNOWN_REASON = "NodeStatusUnknown"
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."


class HeartbeatTracker:
    """Probe times: when each node's lease renewTime was last seen to change (our clock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str, float]] = {}

    def observe(self, node: str, renew_time: str | None, now: float) -> None:
        with self._lock:
            prev = self._seen.get(node)
            if prev is None or prev[0] != (renew_time or ""):
                self._seen[node] = (renew_time or "", now)

    def first_seen(self, node: str, now: float) -> None:
        with self._lock:
            self._seen.setdefault(node, ("", now))

    def probe_time(self, node: str) -> float | None:
        with self._lock:
            p = self._seen.get(node)
            return p[1] if p else None

    def forget(self, node: str) -> None:
        with self._lock:
            self._seen.pop(node, None)


def eviction_delay(pod: dict, default: float) -> float | None:
    """Seconds a pod stays on an unreachable node; None = tolerates it forever."""
    taint = {"key": UNREACHABLE_TAINT, "effect": "NoExecute"}
    for t in (pod.get("spec") or {}).get("tolerations") or []:
        if tolerates([t], taint) and (t.get("effect") in (None, "", "NoExecute")):
            secs = t.get("tolerationSeconds")
            return None if secs is None else max(float(secs), 0.0)
    ann = annotations_of(pod).get(EVICTION_DELAY_ANNOTATION)
    if ann is not None:
        try:
            return max(float(ann), 0.0)
        except ValueError:
            log.warning("pod %s: annotation %s=%r is not a number of seconds; using %ss",
                        key_of(pod), EVICTION_DELAY_ANNOTATION, ann, default)
    return default


@dataclass
class NodePlan:
    set_unknown: bool = False
    taints: list[dict] | None = None  # the node's new taint list, when it changes
    evict: list[dict] = field(default_factory=list)
    requeue_after: float | None = None


UNHEALTHY_THRESHOLD = 0.55
MIN_NODES_FOR_GUARD = 3


def evictions_allowed(stale: int, total: int) -> bool:
    """False in a full disruption: most of a cluster of 3+ nodes unhealthy at once."""
    return total < MIN_NODES_FOR_GUARD or stale / total < UNHEALTHY_THRESHOLD


def plan_node(node: dict, pods: list[dict], *, now: float, probe_time: float, grace: float,
              default_eviction_delay: float, allow_evictions: bool = True) -> NodePlan:
    plan = NodePlan()
    taints = list((node.get("spec") or {}).get("taints") or [])
    ours = [t for t in taints if t.get("key") == UNREACHABLE_TAINT]
    stale = now - probe_time > grace
    if not stale:
        if ours:
            plan.taints = [t for t in taints if t.get("key") != UNREACHABLE_TAINT]
        plan.requeue_after = probe_time + grace - now + 0.05
        return plan
    ready = get_condition(node.get("status"), "Ready")
    if ready is None or ready.get("status") != CONDITION_UNKNOWN:
        plan.set_unknown = True
    added_at = now
    want = []
    for effect in ("NoSchedule", "NoExecute"):
        have = next((t for t in ours if t.get("effect") == effect), None)
        if have is None:
            want.append({"key": UNREACHABLE_TAINT, "effect": effect, "timeAdded": format_time(now)})
        elif effect == "NoExecute":
            added_at = parse_time(have.get("timeAdded")) or now
    if want:
        plan.taints = taints + want
    if not allow_evictions:
        plan.requeue_after = 1.0
        return plan
    for p in pods:
        delay = eviction_delay(p, default_eviction_delay)
        if delay is None:
            continue
        due = added_at + delay
        if now >= due:
            plan.evict.append(p)
        else:
            left = due - now + 0.05
            plan.requeue_after = left if plan.requeue_after is None else min(plan.requeue_after, left)
    return plan


class NodeLifecycleController:
    def __init__(self, client: Client, *, nodes: Informer, leases: Informer, pods: Informer, events: EventSink,
                 clock: Clock | None = None, grace: float = 8.0, eviction_delay: float = 5.0):
        self.client = client
        self.node_inf, self.lease_inf, self.pod_inf = nodes, leases, pods
        self.events = events
        self.clock = clock or RealClock()
        self.grace, self.eviction_delay = grace, eviction_delay
        self.heartbeats = HeartbeatTracker()

    def register(self, manager: Manager, *, monitor_period: float = 1.0) -> Controller:
        indexes.ensure(self.pod_inf, indexes.NODE)
        c = manager.add_controller("nodelifecycle", self, workers=2)

        def lease_seen(*args):
            lease = args[-1]
            self.heartbeats.observe(name_of(lease), (lease.get("spec") or {}).get("renewTime"), self.clock.now())
            c.enqueue(name_of(lease))

        self.lease_inf.add_handler(on_add=lease_seen, on_update=lease_seen)
        c.watch(self.node_inf)

        def monitor():
            for name in self.node_inf.keys():
                c.enqueue(name)
        manager.every(monitor_period, monitor, name="node-monitor")
        return c

    def reconcile(self, name: str) -> Result:
        node = self.node_inf.get(name)
        now = self.clock.now()
        if node is None:
            self.heartbeats.forget(name)
            return Result()
        self.heartbeats.first_seen(name, now)
        pods = self.pod_inf.by_index(indexes.NODE, name)
        names = self.node_inf.keys()
        stale = 0
        for n in names:
            seen = self.heartbeats.probe_time(n)
            if seen is not None and now - seen > self.grace:
                stale += 1
        allowed = evictions_allowed(stale, len(names))
        if not allowed and pods:
            log.warning("%d of %d nodes are unreachable at once: not evicting pods from %s (full disruption; "
                        "the control plane is probably behind)", stale, len(names), name)
        plan = plan_node(node, pods, now=now, probe_time=self.heartbeats.probe_time(name) or now,
                         grace=self.grace, default_eviction_delay=self.eviction_delay, allow_evictions=allowed)
        if plan.set_unknown:
            new = thaw(node)
            status = new.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "Ready"]
            old = get_condition(node.get("status"), "Ready") or {}
            ready = {"type": "Ready", "status": CONDITION_UNKNOWN, "reason": UNKNOWN_REASON,
                     "message": UNKNOWN_MESSAGE, "lastTransitionTime": format_time(now)}
            if old.get("lastHeartbeatTime"):
                ready["lastHeartbeatTime"] = old["lastHeartbeatTime"]
            status["conditions"] = conds + [ready]
            node = self.client.update_status("nodes", new)
            self.node_inf.observe(node)
            self.events.event(node, NORMAL, "NodeNotReady", f"Node {name} status is now: NodeNotReady")
        if plan.taints is not None:
            new = thaw(node)
            new.setdefault("spec", {})["taints"] = plan.taints
            node = self.client.update("nodes", new)
            self.node_inf.observe(node)
        for p in plan.evict:
            self.events.event(p, NORMAL, "TaintManagerEviction", f"Marking for deletion Pod {key_of(p)}")
            try:
                self.client.delete("pods", name_of(p), namespace_of(p), grace_period_seconds=0)
            except errors.NotFound:
                pass
            self.pod_inf.observe_deleted(key_of(p), uid_of(p))
            log.info("evicted pod %s from unreachable node %s", key_of(p), name)
        if plan.evict:
            self.events.event(node, WARNING, "NodeLost", f"Evicted {len(plan.evict)} pod(s) from unreachable node {name}")
        return Result(requeue_after=plan.requeue_after)
