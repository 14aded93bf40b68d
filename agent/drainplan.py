"""Draining a terminating pod out of every node's Service rules before its SIGTERM: the
decisions, pure (the executors are `agent.drain`; the worker calls the gate in its kill path).

Why: in Kubernetes a deleted pod gets SIGTERM at once, while kube-proxies everywhere are
still sending it new connections until they catch up with the EndpointSlice — so users add a
`preStop: sleep 5` to every Deployment behind a Service. shoal waits for the proxies
instead, and only as long as they need (docs/services.md, "Draining before SIGTERM"):

1. The pod gets its deletionTimestamp; the endpointslice controller marks its endpoint
   `ready: false, terminating: true`. The resourceVersion of that slice write is R
   (resourceVersions are revisions of the one store log, so "at or after R" is well-defined
   across objects).
2. Every agent's service proxy, after each sync, publishes on its own Node how far its
   rules go (`ANN_APPLIED`, the highest EndpointSlice resourceVersion among the slices the
   sync planned from: the slice informer delivers events in revision order, so every slice
   write up to that revision is in the rules). The publisher writes at most every 200 ms
   and only a changed value (`plan_publish`).
3. The pod's agent holds the SIGTERM until every node it must wait for reports ≥ R
   (`plan_drain`): Ready nodes that run a proxy. A node the node lifecycle controller marked
   NotReady/Unknown (its lease lapsed: Ready → Unknown and the `node.kubernetes.io/unreachable`
   taint) is not waited for, nor is a node that publishes nothing (no proxy: `shoal agent
   --no-service-proxy` removes the annotation, a hollow node never writes it).
4. The wait is bounded by min(grace period, cap) counted from when this agent first saw the
   deletion; like a preStop hook it counts against the grace period, so SIGTERM then gets
   what is left of it, and never less than 2 s (kubelet's minimum after a preStop hook;
   `term_grace`).

A pod selected by no Service (in its namespace, by its labels) is not held. R is decided
once per pod (the first time the slices show the endpoint going) and kept (`target`):
recomputing it would chase every later write of a busy slice during a rollout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from shoal.machinery.api.services import SERVICE_NAME_LABEL

ANN_APPLIED = "shoal.io/service-proxy-applied"   # on each Node: the slice revision its proxy's rules include
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
DEFAULT_CAP = 10.0                                  # seconds, the longest a SIGTERM is held
MIN_TERM_GRACE = 2                                  # seconds between SIGTERM and SIGKILL after a wait
PUBLISH_INTERVAL = 0.2                              # seconds between two writes of ANN_APPLIED


@dataclass(frozen=True)
class DrainDecision:
    """`proceed`: send the SIGTERMs now. Otherwise wait, at the latest until `wake_at`.
    `target`: R once known (the caller keeps it for the next call); `behind`: the nodes
    still under R; `waited`: seconds since the wait began; `why`: for logs and events."""
    proceed: bool
    why: str
    target: int | None = None
    behind: tuple[str, ...] = ()
    waited: float = 0.0
    wake_at: float | None = None
    timed_out: bool = False


def _meta(obj: Mapping) -> Mapping:
    return obj.get("metadata") or {}


def _rv(obj: Mapping) -> int:
    try:
        return int(_meta(obj).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def selecting_services(pod: Mapping, services: Iterable[Mapping]) -> list[Mapping]:
    """The Services of the pod's namespace whose (non-empty) selector its labels match."""
    ns = _meta(pod).get("namespace") or "default"
    labels = _meta(pod).get("labels") or {}
    out = []
    for s in services:
        sel = (s.get("spec") or {}).get("selector") or {}
        if sel and (_meta(s).get("namespace") or "default") == ns and all(labels.get(k) == v for k, v in sel.items()):
            out.append(s)
    return out


def _is_pod(ep: Mapping, uid: str, ips: set[str]) -> bool:
    ref = ep.get("targetRef") or {}
    if ref.get("uid"):
        return bool(ref["uid"] == uid)
    return bool(ips & set(ep.get("addresses") or ()))


def _pod_ips(pod: Mapping) -> set[str]:
    st = pod.get("status") or {}
    ips = {st["podIP"]} if st.get("podIP") else set()
    ips.update(p.get("ip") for p in st.get("podIPs") or [] if p.get("ip"))
    return ips


@dataclass(frozen=True)
class EndpointState:
    """Where the pod stands in the slices of the Services selecting it: `routable` lists the
    slices that still show it ready and not terminating (the controller has not caught up);
    otherwise `revision` is R — the highest resourceVersion of the slices listing it (as not
    ready or terminating), or of all those Services' slices when none lists it any more."""
    routable: tuple[str, ...]
    revision: int


def endpoint_state(pod: Mapping, services: Iterable[Mapping], slices: Iterable[Mapping]) -> EndpointState:
    uid, ips = _meta(pod).get("uid") or "", _pod_ips(pod)
    ns = _meta(pod).get("namespace") or "default"
    names = {_meta(s).get("name") for s in services}
    routable: list[str] = []
    listing, every = 0, 0
    for slc in slices:
        md = _meta(slc)
        if (md.get("namespace") or "default") != ns or (md.get("labels") or {}).get(SERVICE_NAME_LABEL) not in names:
            continue
        rv = _rv(slc)
        every = max(every, rv)
        for ep in slc.get("endpoints") or []:
            if not _is_pod(ep, uid, ips):
                continue
            cond = ep.get("conditions") or {}
            # Kubernetes' reading: ready nil is true, terminating nil is false
            if cond.get("ready", True) is not False and not cond.get("terminating", False):
                routable.append(str(md.get("name")))
            listing = max(listing, rv)
    return EndpointState(tuple(sorted(set(routable))), listing or every)


def node_is_awaited(node: Mapping) -> bool:
    """Whether a Node's proxy counts: Ready=True and not tainted unreachable/not-ready (the
    node lifecycle controller sets Ready=Unknown and the unreachable taint together once the
    node's lease lapses)."""
    conds = (node.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    taints = (node.get("spec") or {}).get("taints") or []
    return ready and not any(t.get("key") in (UNREACHABLE_TAINT, NOT_READY_TAINT) for t in taints)


def published_revision(node: Mapping) -> int | None:
    """The revision a Node's proxy published (`ANN_APPLIED`); None: it publishes none (no
    proxy there) or a value that is not a revision."""
    v = (_meta(node).get("annotations") or {}).get(ANN_APPLIED)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def proxies_behind(nodes: Iterable[Mapping], revision: int, *, own_node: str = "",
                   own_applied: int | None = None) -> tuple[str, ...]:
    """The awaited nodes whose proxy has not applied `revision` yet. `own_applied`, when
    given, is this agent's own proxy's position, fresher than its published annotation."""
    behind = []
    for n in nodes:
        name = str(_meta(n).get("name") or "")
        if not node_is_awaited(n):
            continue
        have = own_applied if (name == own_node and own_applied is not None) else published_revision(n)
        if have is None:
            continue            # no proxy on that node: nothing to wait for
        if have < revision:
            behind.append(name)
    return tuple(sorted(behind))


def plan_drain(pod: Mapping, *, grace: int, services: Iterable[Mapping], slices: Iterable[Mapping],
               nodes: Iterable[Mapping], synced: bool, target: int | None, started_at: float, now: float,
               cap: float = DEFAULT_CAP, own_node: str = "", own_applied: int | None = None) -> DrainDecision:
    """Whether the deleted `pod` may get its SIGTERM now (module docstring). `grace`: its grace
    period in seconds; `services`/`slices`/`nodes`: the informers' caches, `synced` once all
    of them have listed; `target`: R as decided by an earlier call (None: not yet);
    `started_at`: when the wait began (the first call); `now`: the clock."""
    waited = max(0.0, now - started_at)
    bound = min(float(grace), cap)
    deadline = started_at + bound
    if bound <= 0:
        return DrainDecision(True, "no grace period", target, waited=waited)
    if not synced:
        return _wait_or_go(f"the Services, EndpointSlices and Nodes are not listed yet", target, (), waited,
                           now, deadline)
    selecting = selecting_services(pod, services)
    if not selecting:
        return DrainDecision(True, "no Service selects it", target, waited=waited)
    if target is None:
        st = endpoint_state(pod, selecting, slices)
        if st.routable:
            return _wait_or_go(f"EndpointSlice(s) {', '.join(st.routable)} still list it as ready", None, (),
                               waited, now, deadline)
        target = st.revision
    behind = proxies_behind(nodes, target, own_node=own_node, own_applied=own_applied)
    if not behind:
        return DrainDecision(True, f"every node's Service rules include revision {target}", target, waited=waited)
    return _wait_or_go(f"node(s) {', '.join(behind)} have not applied revision {target}", target, behind, waited,
                       now, deadline)


def _wait_or_go(why: str, target: int | None, behind: tuple[str, ...], waited: float, now: float,
                deadline: float) -> DrainDecision:
    if now >= deadline:
        return DrainDecision(True, f"gave up waiting after {waited:.1f}s: {why}", target, behind, waited,
                             timed_out=True)
    # informer events wake the worker sooner; this is the safety net
    return DrainDecision(False, why, target, behind, waited, wake_at=min(deadline, now + 1.0))


def term_grace(grace: int, waited: float) -> int:
    """Seconds between SIGTERM and SIGKILL after a drain wait of `waited` seconds: what is
    left of the grace period, at least MIN_TERM_GRACE (kubelet's rule after a preStop
    hook); the grace unchanged when there was no wait, 0 stays 0."""
    if grace <= 0 or waited <= 0:
        return grace
    return max(math.ceil(grace - waited), MIN_TERM_GRACE)


def plan_publish(*, want: str | None, current: str | None, last_write: float | None, now: float,
                 interval: float = PUBLISH_INTERVAL) -> float | None:
    """When to write `want` (None: the annotation removed) over the Node's `current` value:
    None when they are equal, else now, or `interval` after the last write."""
    if want == current:
        return None
    if last_write is None:
        return now
    return max(now, last_write + interval)


__all__ = ["ANN_APPLIED", "DEFAULT_CAP", "DrainDecision", "EndpointState", "MIN_TERM_GRACE", "PUBLISH_INTERVAL",
           "endpoint_state", "node_is_awaited", "plan_drain", "plan_publish", "proxies_behind",
           "published_revision", "selecting_services", "term_grace"]
