"""Recreate (Kubernetes' recreate.go): scale every old ReplicaSet to zero, wait until none
of their pods is left running (terminating pods count as running: the agent has not
confirmed they stopped), then create/scale the new ReplicaSet to spec.replicas."""
from __future__ import annotations

from shoal.controller import indexes
from shoal.machinery.api.objects import pod_phase, uid_of
from shoal.machinery.control import Result
from shoal.controller.deployment import util as u


def old_pods_running(old_rss: list[dict], pods_by_rs: dict[str, list[dict]]) -> bool:
    if u.status_sum(old_rss, "replicas") > 0:
        return True
    for rs in old_rss:
        for p in pods_by_rs.get(uid_of(rs), []):
            if pod_phase(p) in ("Failed", "Succeeded"):
                continue
            return True
    return False


class RecreateMixin:
    def rollout_recreate(self, d: dict, rs_list: list[dict]) -> Result:
        new_rs, old_rss = self.get_all_replicasets(d, rs_list, create=False)
        all_rss = [*old_rss, *([new_rs] if new_rs else [])]
        to_zero = [u.Scale(rs["metadata"]["name"], 0) for rs in u.active(old_rss)]
        if to_zero:
            old_rss = self.apply_scales(d, to_zero, old_rss)
            return self.sync_rollout_status([*old_rss, *([new_rs] if new_rs else [])], new_rs, d)
        pods_by_rs = {uid_of(rs): self.pod_inf.by_index(indexes.CONTROLLER, uid_of(rs)) for rs in old_rss}
        if old_pods_running(old_rss, pods_by_rs):
            return self.sync_rollout_status(all_rss, new_rs, d)
        if new_rs is None:
            new_rs, old_rss = self.get_all_replicasets(d, rs_list, create=True)
        if u.replicas_of(new_rs) != u.replicas_of(d):
            new_rs = self.scale_replicaset(new_rs, u.replicas_of(d), d)
        all_rss = [*old_rss, new_rs]
        if u.deployment_complete(d, d.get("status") or {}):
            self.cleanup_deployment(d, old_rss)
        return self.sync_rollout_status(all_rss, new_rs, d)
