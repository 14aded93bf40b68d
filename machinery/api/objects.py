"""Helpers over plain wire dicts (Kubernetes JSON shape) shared by every controller.

Contract:
- Every function takes and returns plain dicts; nothing here talks to the API.
- Objects read from an informer cache are shared and must never be mutated:
  `thaw()` gives a private deep copy to edit before an update.
- Times on the wire are RFC 3339 strings in UTC; the controllers compute with float
  epoch seconds from the injected clock. `times` formats and parses them.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

from shoal.machinery.api.times import parse_time

CONDITION_TRUE, CONDITION_FALSE, CONDITION_UNKNOWN = "True", "False", "Unknown"


def meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def name_of(obj: dict) -> str:
    return meta(obj).get("name", "")


def namespace_of(obj: dict) -> str:
    return meta(obj).get("namespace") or ""


def uid_of(obj: dict) -> str:
    return meta(obj).get("uid", "")


def key_of(obj: dict) -> str:
    """`namespace/name` for namespaced objects, `name` for cluster-scoped ones (as client-go's
    MetaNamespaceKeyFunc)."""
    ns = namespace_of(obj)
    return f"{ns}/{name_of(obj)}" if ns else name_of(obj)


def split_key(key: str) -> tuple[str, str]:
    """Inverse of key_of: returns (namespace, name); namespace is "" for cluster-scoped keys."""
    if "/" in key:
        ns, name = key.split("/", 1)
        return ns, name
    return "", key


def resource_version(obj: dict) -> int:
    try:
        return int(meta(obj).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def labels_of(obj: dict) -> dict[str, str]:
    return meta(obj).get("labels") or {}


def annotations_of(obj: dict) -> dict[str, str]:
    return meta(obj).get("annotations") or {}


def is_deleting(obj: dict) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def thaw(obj: dict) -> dict:
    """A private, mutable deep copy of a cached object."""
    return copy.deepcopy(obj)


def controller_ref(obj: dict) -> dict | None:
    """The ownerReference with `controller: true`, if any."""
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def owner_ref_to(owner: dict, *, controller: bool = True) -> dict:
    """An ownerReference pointing at `owner` (blockOwnerDeletion as Kubernetes' controllers set it)."""
    return {"apiVersion": owner.get("apiVersion", ""), "kind": owner.get("kind", ""), "name": name_of(owner),
            "uid": uid_of(owner), "controller": controller, "blockOwnerDeletion": True}


# -- time -------------------------------------------------------------------------------------
def creation_time(obj: dict) -> float:
    return parse_time(meta(obj).get("creationTimestamp")) or 0.0


# -- conditions -------------------------------------------------------------------------------
def get_condition(status: dict | None, ctype: str) -> dict | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def set_condition(status: dict, cond: dict) -> bool:
    """Insert or replace `cond` by type in status.conditions. Like Kubernetes' SetDeploymentCondition:
    an existing condition with the same status and reason is left untouched (returns False), and
    lastTransitionTime is kept when only reason/message change. Returns True when it changed."""
    conds = status.setdefault("conditions", [])
    for i, c in enumerate(conds):
        if c.get("type") != cond["type"]:
            continue
        if c.get("status") == cond.get("status") and c.get("reason") == cond.get("reason"):
            return False
        new = dict(cond)
        if c.get("status") == cond.get("status") and c.get("lastTransitionTime"):
            new["lastTransitionTime"] = c["lastTransitionTime"]
        conds[i] = new
        return True
    conds.append(dict(cond))
    return True


def remove_condition(status: dict, ctype: str) -> bool:
    conds = status.get("conditions") or []
    kept = [c for c in conds if c.get("type") != ctype]
    if len(kept) != len(conds):
        status["conditions"] = kept
        return True
    return False


# -- pods -------------------------------------------------------------------------------------
TERMINAL_PHASES = ("Succeeded", "Failed")


def pod_phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def is_pod_active(pod: dict) -> bool:
    """Counts toward a ReplicaSet's replicas (Kubernetes' IsPodActive)."""
    return pod_phase(pod) not in TERMINAL_PHASES and not is_deleting(pod)


def pod_ready_since(pod: dict) -> float | None:
    """Epoch seconds the pod has been Ready since, or None when it is not Ready."""
    cond = get_condition(pod.get("status"), "Ready")
    if not cond or cond.get("status") != CONDITION_TRUE:
        return None
    return parse_time(cond.get("lastTransitionTime")) or 0.0


def is_pod_ready(pod: dict) -> bool:
    return pod_ready_since(pod) is not None


def is_pod_available(pod: dict, min_ready_seconds: int, now: float) -> bool:
    """Ready for at least minReadySeconds (Kubernetes' IsPodAvailable)."""
    since = pod_ready_since(pod)
    if since is None:
        return False
    return min_ready_seconds <= 0 or since + min_ready_seconds <= now


def restart_count(pod: dict) -> int:
    return sum(int(cs.get("restartCount") or 0) for cs in (pod.get("status") or {}).get("containerStatuses") or [])


def node_name_of(pod: dict) -> str:
    return (pod.get("spec") or {}).get("nodeName") or ""


def first(items: Iterable[Any], default: Any = None) -> Any:
    for i in items:
        return i
    return default
