"""Recreate (Kubernetes' recreate.go) as a pure planner: `plan_recreate` says what one sync
of a Recreate Deployment writes; the executor in sync.py performs it.

Scale every old ReplicaSet to zero; wait until none of their pods is left running
(terminating pods count as running: the agent has not confirmed they stopped); then create
the new ReplicaSet at spec.replicas, or scale it there. Once complete, old revisions beyond
revisionHistoryLimit are deleted."""
from __future__ import annotations

from shoal.machinery.api.objects import name_of, pod_phase, uid_of
from shoal.controller.deployment import util as u


def old_pods_running(old_rss: list[dict], pods_by_rs: dict[str, list[dict]]) -> bool:
    """Pods of old ReplicaSets may still run: their status counts some, or a pod they own is
    not finished (oldPodsRunning). `pods_by_rs` maps a ReplicaSet uid to the pods it controls."""
    if u.status_sum(old_rss, "replicas") > 0:
        return True
    for rs in old_rss:
        for p in pods_by_rs.get(uid_of(rs), []):
            if pod_phase(p) in ("Failed", "Succeeded"):
                continue
            return True
    return False


def plan_recreate(d: dict, new_rs: dict | None, old_rss: list[dict], *, old_pods_running: bool) -> u.SyncPlan:
    to_zero = tuple(u.Scale(name_of(rs), 0) for rs in u.active(old_rss))
    if to_zero:
        return u.SyncPlan("recreate", scales=to_zero)
    if old_pods_running:
        return u.SyncPlan("recreate")
    want = u.replicas_of(d)
    complete = u.deployment_complete(d, d.get("status") or {})
    if new_rs is None:
        return u.SyncPlan("recreate", create=want, cleanup=complete)
    scales = () if u.replicas_of(new_rs) == want else (u.Scale(name_of(new_rs), want),)
    return u.SyncPlan("recreate", scales=scales, cleanup=complete)
