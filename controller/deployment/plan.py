"""What one sync of a Deployment writes (Kubernetes' syncDeployment after its reads), pure:

  paused              → proportional scale of what exists (no rollout), old revisions cleaned up
  scaling event       → proportional scale (an active ReplicaSet's desired-replicas annotation
                        differs from spec.replicas: the Deployment was resized since it was written)
  Recreate            → recreate.plan_recreate
  RollingUpdate       → rolling.plan_rolling

`plan_sync` takes the Deployment, its new ReplicaSet (the one whose template equals the
Deployment's, already synced by `util.synced_new_replicaset`; None if there is none yet),
the others, and for Recreate whether old pods still run. It returns a `util.SyncPlan`; the
executor (sync.py) performs exactly that and writes status. The same function drives the
randomized rollout test (tests/unit/test_controller_deployment_rollouts.py).

Why this converges after any interleaving of scale / set image / pause / resume / undo:
every sync that finds a scaling event rewrites the desired-replicas annotation of every
active ReplicaSet (`util.plan_proportional_scale`), so the next sync is not one again; and
every write of a size by the rolling and recreate steps carries the current annotations too.
"""
from __future__ import annotations

from shoal.controller.deployment import util as u
from shoal.controller.deployment.recreate import plan_recreate
from shoal.controller.deployment.rolling import plan_rolling


def plan_sync(d: dict, new_rs: dict | None, old_rss: list[dict], *, old_pods_running: bool = False) -> u.SyncPlan:
    if (d.get("spec") or {}).get("paused"):
        return u.SyncPlan("paused", scales=tuple(u.plan_proportional_scale(d, new_rs, old_rss)), cleanup=True)
    if u.is_scaling_event(d, new_rs, old_rss):
        return u.SyncPlan("scaling", scales=tuple(u.plan_proportional_scale(d, new_rs, old_rss)))
    if u.strategy_type(d) == "Recreate":
        return plan_recreate(d, new_rs, old_rss, old_pods_running=old_pods_running)
    return plan_rolling(d, new_rs, old_rss)
