"""RollingUpdate (Kubernetes' rolling.go) as a pure planner: `plan_rolling` says what one
sync of a rolling Deployment writes; the executor in sync.py performs it.

A sync takes one step: with no ReplicaSet for the current template yet, create it as large
as the surge bound allows and, in the same sync, scale old ReplicaSets down as far as
availability allows (the new one has nothing more to do yet); otherwise first scale the new
ReplicaSet (`util.plan_rolling_step`: up to the surge bound, or down to spec.replicas), and
only when it needs nothing, the old ones. When nothing moves and the rollout is complete,
old revisions beyond revisionHistoryLimit are deleted."""
from __future__ import annotations

from shoal.controller.deployment import util as u


def plan_rolling(d: dict, new_rs: dict | None, old_rss: list[dict]) -> u.SyncPlan:
    complete = u.deployment_complete(d, d.get("status") or {})
    if new_rs is None:
        name = u.new_replicaset_name(d)
        empty: dict = {"metadata": {"name": name}, "spec": {"replicas": 0}}
        n = u.new_rs_new_replicas(d, [*old_rss, empty], empty)
        # What the sync sees once the ReplicaSet exists: n replicas, none available yet.
        created: dict = {"metadata": {"name": name}, "spec": {"replicas": n}}
        scales = tuple(u.plan_scale_down_old(d, created, old_rss))
        return u.SyncPlan("rolling", create=n, scales=scales, cleanup=not scales and complete)
    scales = tuple(u.plan_rolling_step(d, new_rs, old_rss))
    return u.SyncPlan("rolling", scales=scales, cleanup=not scales and complete)
