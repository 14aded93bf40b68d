"""The scheduler's pure core: what a pod asks for, what a node has left, which nodes fit
(filters), which fit best (scores), and the `FailedScheduling` message.

Nothing here performs I/O. `scheduler.py` keeps a `ClusterState` up to date from the
informers and calls `schedule_one()` for each pending pod; tests drive the same functions
with tables (tests/unit/test_controller_scheduler.py).

Filters (each answers None when the node passes, else the reason kubectl would show):
  NodeReady      node's Ready condition is True          "node(s) were not ready"
  Unschedulable  spec.unschedulable is not set            "node(s) were unschedulable"
  TaintToleration no NoSchedule/NoExecute taint the pod does not tolerate
                                  "node(s) had untolerated taint {key: value}"
  NodeName/Fit   cpu, memory and pod count fit allocatable minus bound requests
                                  "Insufficient cpu", "Insufficient memory", "Too many pods"
Score (lower sorts first): fewest pods of the same owner on the node (spreads a ReplicaSet),
then lowest share of cpu+memory requested after placing the pod (least allocated), then
fewest pods, then node name so the choice is deterministic.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shoal.machinery.api.quantity import cpu_millis, memory_bytes

from shoal.machinery.api.objects import CONDITION_TRUE, controller_ref, get_condition, name_of

DEFAULT_MAX_PODS = 110


@dataclass(frozen=True)
class PodRequest:
    cpu: int = 0  # millicores
    memory: int = 0  # bytes
    owner: str = ""  # controller owner uid ("" for a bare pod)


@dataclass
class NodeInfo:
    """What the scheduler knows of one node: its allocatable resources and the requests of
    the pods bound (or assumed bound) to it."""
    name: str
    cpu: int
    memory: int
    max_pods: int
    ready: bool
    unschedulable: bool
    taints: tuple[dict, ...] = ()
    requested_cpu: int = 0
    requested_memory: int = 0
    pods: int = 0
    owners: Counter = field(default_factory=Counter)

    def add(self, req: PodRequest, sign: int = 1) -> None:
        self.requested_cpu += sign * req.cpu
        self.requested_memory += sign * req.memory
        self.pods += sign
        if req.owner:
            self.owners[req.owner] += sign
            if self.owners[req.owner] <= 0:
                del self.owners[req.owner]


def pod_request(pod: dict) -> PodRequest:
    """Effective requests: sum over containers (requests, or limits when requests are unset,
    as Kubernetes defaults them), at least the largest init container."""
    spec = pod.get("spec") or {}

    def one(c: dict) -> tuple[int, int]:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        cpu = req.get("cpu", lim.get("cpu"))
        mem = req.get("memory", lim.get("memory"))
        return (cpu_millis(cpu) if cpu is not None else 0, memory_bytes(mem) if mem is not None else 0)

    cpu = mem = 0
    for c in spec.get("containers") or []:
        a, b = one(c)
        cpu, mem = cpu + a, mem + b
    for c in spec.get("initContainers") or []:
        a, b = one(c)
        cpu, mem = max(cpu, a), max(mem, b)
    ref = controller_ref(pod)
    return PodRequest(cpu, mem, ref.get("uid", "") if ref else "")


def node_info(node: dict) -> NodeInfo:
    status, spec = node.get("status") or {}, node.get("spec") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    ready = get_condition(status, "Ready")
    return NodeInfo(
        name=name_of(node),
        cpu=cpu_millis(alloc["cpu"]) if "cpu" in alloc else 0,
        memory=memory_bytes(alloc["memory"]) if "memory" in alloc else 0,
        max_pods=int(alloc.get("pods") or DEFAULT_MAX_PODS),
        ready=bool(ready and ready.get("status") == CONDITION_TRUE),
        unschedulable=bool(spec.get("unschedulable")),
        taints=tuple(spec.get("taints") or ()),
    )


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    """v1.Toleration.ToleratesTaint for any of `tolerations`."""
    for t in tolerations or []:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        op = t.get("operator") or "Equal"
        if not t.get("key"):
            if op == "Exists":
                return True
            continue
        if t.get("key") != taint.get("key"):
            continue
        if op == "Exists" or (op == "Equal" and (t.get("value") or "") == (taint.get("value") or "")):
            return True
    return False


def untolerated_taint(tolerations: list[dict], taints: tuple[dict, ...] | list[dict]) -> dict | None:
    for taint in taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return taint
    return None


def filter_node(pod: dict, req: PodRequest, n: NodeInfo) -> list[str]:
    """Reasons `n` cannot take the pod ([] when it fits)."""
    if not n.ready:
        return ["node(s) were not ready"]
    if n.unschedulable:
        return ["node(s) were unschedulable"]
    taint = untolerated_taint((pod.get("spec") or {}).get("tolerations") or [], n.taints)
    if taint is not None:
        return [f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"]
    reasons = []
    if n.pods + 1 > n.max_pods:
        reasons.append("Too many pods")
    if req.cpu and n.requested_cpu + req.cpu > n.cpu:
        reasons.append("Insufficient cpu")
    if req.memory and n.requested_memory + req.memory > n.memory:
        reasons.append("Insufficient memory")
    return reasons


def score_key(req: PodRequest, n: NodeInfo) -> tuple:
    """Sort key, best node first: spread owner, then least allocated, then fewest pods."""
    same = n.owners.get(req.owner, 0) if req.owner else 0
    cpu_frac = (n.requested_cpu + req.cpu) / n.cpu if n.cpu else 0.0
    mem_frac = (n.requested_memory + req.memory) / n.memory if n.memory else 0.0
    # Rounded, so nodes that are "about as full" compare equal and the pod count decides.
    return (same, round((cpu_frac + mem_frac) * 50), n.pods, n.name)


def failure_message(total_nodes: int, reasons: Counter) -> str:
    """`0/3 nodes are available: 3 Insufficient memory.` (kube-scheduler's FitError)."""
    if not reasons:
        return f"0/{total_nodes} nodes are available: no nodes are registered." if total_nodes == 0 else \
            f"0/{total_nodes} nodes are available."
    parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
    return f"0/{total_nodes} nodes are available: {', '.join(parts)}."


@dataclass(frozen=True)
class Decision:
    node: str | None
    message: str = ""


def schedule_one(pod: dict, req: PodRequest, nodes: list[NodeInfo]) -> Decision:
    """Filter, then pick the best-scored node; or say why none fits."""
    best: tuple | None = None
    reasons: Counter = Counter()
    for n in nodes:
        why = filter_node(pod, req, n)
        if why:
            for r in why:
                reasons[r] += 1
            continue
        k = score_key(req, n)
        if best is None or k < best:
            best = k
    if best is None:
        return Decision(None, failure_message(len(nodes), reasons))
    return Decision(best[-1])
