"""RollingUpdate (Kubernetes' rolling.go): each sync takes one step of
`util.plan_rolling_step` — scale the new ReplicaSet up to replicas + maxSurge, or scale old
ones down as far as replicas - maxUnavailable available pods allow — and writes status.
When the rollout is complete, old revisions beyond revisionHistoryLimit are deleted."""
from __future__ import annotations

from shoal.machinery.control import Result
from shoal.controller.deployment import util as u


class RollingMixin:
    def rollout_rolling(self, d: dict, rs_list: list[dict]) -> Result:
        new_rs, old_rss = self.get_all_replicasets(d, rs_list, create=True)
        all_rss = [*old_rss, new_rs]
        plan = u.plan_rolling_step(d, new_rs, old_rss)
        if plan:
            all_rss = self.apply_scales(d, plan, all_rss)
            new_rs, old_rss = all_rss[-1], all_rss[:-1]
            return self.sync_rollout_status(all_rss, new_rs, d)
        if u.deployment_complete(d, d.get("status") or {}):
            self.cleanup_deployment(d, old_rss)
        return self.sync_rollout_status(all_rss, new_rs, d)
