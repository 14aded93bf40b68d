"""The executor of Deployment syncs (Kubernetes' sync.go, the writing half): claim
ReplicaSets, bring the new ReplicaSet's annotations and revision up to date, then perform a
`util.SyncPlan` from plan.plan_sync — create the new ReplicaSet, scale, delete old revisions
beyond revisionHistoryLimit — and write status (progress.py). Every decision is made by the
pure planners; the objects written are built by util (`new_replicaset`,
`synced_new_replicaset`, `scaled_replicaset`).

Writes of ReplicaSets and of the Deployment go through the informers' `observe` so the
next reconcile sees them at once.
"""
from __future__ import annotations

import copy

from shoal.machinery.api import errors

from shoal.controller import indexes
from shoal.machinery.control.events import NORMAL
from shoal.machinery.api.objects import (CONDITION_TRUE, controller_ref, get_condition, is_deleting, key_of, labels_of,
                                         meta, name_of, namespace_of, owner_ref_to, set_condition, thaw, uid_of)
from shoal.machinery.control import Result
from shoal.machinery.api.selectors import selector_from_label_selector
from shoal.controller.deployment import util as u
from shoal.controller.deployment.progress import new_condition


class HashCollision(errors.Conflict):
    """The name `<deployment>-<hash>` is taken by a ReplicaSet with another template."""


class SyncMixin:
    # -- claiming -------------------------------------------------------------------------------
    def replicasets_for(self, d: dict) -> list[dict]:
        """ReplicaSets this Deployment controls, adopting matching orphans and releasing owned
        ones whose labels no longer match (ClaimReplicaSets)."""
        selector = selector_from_label_selector((d.get("spec") or {}).get("selector"))
        out = []
        for rs in self.rs_inf.by_index(indexes.NAMESPACE, namespace_of(d)):
            ref = controller_ref(rs)
            if ref is not None and ref.get("uid") == uid_of(d):
                if selector.matches(labels_of(rs)):
                    out.append(rs)
                elif not is_deleting(d):
                    new = thaw(rs)
                    new["metadata"]["ownerReferences"] = [r for r in new["metadata"]["ownerReferences"]
                                                          if r.get("uid") != uid_of(d)]
                    self.rs_inf.observe(self.client.update("replicasets", new))
            elif ref is None and not is_deleting(d) and not is_deleting(rs) and selector.matches(labels_of(rs)):
                new = thaw(rs)
                new["metadata"].setdefault("ownerReferences", []).append(owner_ref_to(d))
                adopted = self.client.update("replicasets", new)
                self.rs_inf.observe(adopted)
                out.append(adopted)
        return out

    # -- the new ReplicaSet and revisions ------------------------------------------------------
    def get_all_replicasets(self, d: dict, rs_list: list[dict]) -> tuple[dict | None, list[dict]]:
        """(new, old) ReplicaSets, the new one synced (getAllReplicaSetsAndSyncRevision with
        createIfNotExisted false): annotations, revision and minReadySeconds brought up to date,
        and when it needed none, the Deployment's revision and a first Progressing condition."""
        existing = u.find_new_rs(d, rs_list)
        old = [rs for rs in rs_list if existing is None or uid_of(rs) != uid_of(existing)]
        if existing is None:
            return None, old
        synced = u.synced_new_replicaset(d, existing, old)
        if synced is not None:
            resp = self.client.update("replicasets", synced)
            self.rs_inf.observe(resp)
            return resp, old
        self._set_deployment_revision(d, str(u.revision_of(existing)))
        if u.progress_deadline(d) is not None and get_condition(d.get("status"), u.PROGRESSING) is None:
            status = copy.deepcopy(d.get("status") or {})
            set_condition(status, new_condition(u.PROGRESSING, CONDITION_TRUE, u.FOUND_NEW_RS_REASON,
                                                f'Found new replica set "{name_of(existing)}"', self.clock.now()))
            self.write_status(d, status)
        return existing, old

    def _set_deployment_revision(self, d: dict, revision: str) -> None:
        if (meta(d).get("annotations") or {}).get(u.REVISION_ANNOTATION) == revision:
            return
        new = thaw(d)
        new["metadata"].setdefault("annotations", {})[u.REVISION_ANNOTATION] = revision
        resp = self.client.update("deployments", new)
        self.dep_inf.observe(resp)
        d["metadata"] = resp["metadata"]

    def create_replicaset(self, d: dict, old_rss: list[dict], replicas: int) -> dict:
        """Create the ReplicaSet for the Deployment's current template with `replicas` replicas;
        a name taken by another template bumps status.collisionCount and raises HashCollision."""
        rs = u.new_replicaset(d, old_rss, replicas)
        name = rs["metadata"]["name"]
        # A live read first: the cache can still hold a Deployment just deleted (its ReplicaSet's
        # deletion may arrive before its own), and a ReplicaSet made for it would be collected
        # again. NotFound/Conflict are the manager's "stale cache, retry" path.
        fresh = self.client.get("deployments", name_of(d), namespace_of(d))
        if uid_of(fresh) != uid_of(d) or is_deleting(fresh):
            raise errors.Conflict(f"deployment {key_of(d)} was deleted or replaced: no new replica set for it")
        try:
            created = self.client.create("replicasets", rs)
        except errors.AlreadyExists:
            try:
                found = self.client.get("replicasets", name, namespace_of(d))
            except errors.NotFound:
                raise errors.Conflict(f"replica set {name} was deleted while being created") from None
            ref = controller_ref(found)
            if ref is not None and ref.get("uid") == uid_of(d) and u.templates_equal(
                    (found.get("spec") or {}).get("template"), (d.get("spec") or {}).get("template")):
                self.rs_inf.observe(found)
                return found
            collisions = int((d.get("status") or {}).get("collisionCount") or 0)
            status = copy.deepcopy(d.get("status") or {})
            status["collisionCount"] = collisions + 1
            self.write_status(d, status)
            raise HashCollision(f"hash collision for deployment {key_of(d)}: replica set {name} has another "
                                f"template; collisionCount is now {collisions + 1}") from None
        self.rs_inf.observe(created)
        if u.replicas_of(created) > 0:
            self.events.event(d, NORMAL, "ScalingReplicaSet",
                              f"Scaled up replica set {name_of(created)} from 0 to {u.replicas_of(created)}")
        self._set_deployment_revision(d, str(u.revision_of(created)))
        if u.progress_deadline(d) is not None:
            status = copy.deepcopy(d.get("status") or {})
            set_condition(status, new_condition(u.PROGRESSING, CONDITION_TRUE, u.NEW_RS_REASON,
                                                f'Created new replica set "{name_of(created)}"', self.clock.now()))
            self.write_status(d, status)
        return created

    # -- scaling --------------------------------------------------------------------------------
    def scale_replicaset(self, rs: dict, size: int, d: dict) -> dict:
        """Write spec.replicas = `size` and the current desired/max-replicas annotations when
        either differs (util.scaled_replicaset); an event when the size changes."""
        new = u.scaled_replicaset(rs, size, d)
        if new is None:
            return rs
        resp = self.client.update("replicasets", new)
        self.rs_inf.observe(resp)
        cur = u.replicas_of(rs)
        if cur != size:
            self.events.event(d, NORMAL, "ScalingReplicaSet",
                              f"Scaled {'up' if size > cur else 'down'} replica set {name_of(rs)} from {cur} to {size}")
        return resp

    def apply_scales(self, d: dict, scales: tuple[u.Scale, ...] | list[u.Scale], rss: list[dict]) -> list[dict]:
        """Execute planned writes in order; returns `rss` with the written objects swapped in."""
        by_name = {name_of(rs): rs for rs in rss}
        for s in scales:
            by_name[s.name] = self.scale_replicaset(by_name[s.name], s.replicas, d)
        return [by_name[name_of(rs)] for rs in rss]

    # -- history --------------------------------------------------------------------------------
    def cleanup_deployment(self, d: dict, old_rss: list[dict]) -> None:
        """Delete the old ReplicaSets util.plan_cleanup names (beyond revisionHistoryLimit)."""
        for rs in u.plan_cleanup(d, old_rss):
            try:
                self.client.delete("replicasets", name_of(rs), namespace_of(rs), propagation_policy="Background",
                                   preconditions_uid=uid_of(rs))
            except errors.NotFound:
                pass
            self.rs_inf.observe_deleted(key_of(rs), uid_of(rs))

    # -- performing a plan ----------------------------------------------------------------------
    def execute(self, d: dict, plan: u.SyncPlan, new_rs: dict | None, old_rss: list[dict]) -> Result:
        """Perform `plan` (plan.plan_sync) in its order, then write the status its path calls for."""
        if plan.create is not None:
            new_rs = self.create_replicaset(d, old_rss, plan.create)
        all_rss = self.apply_scales(d, plan.scales, [*old_rss, *([new_rs] if new_rs is not None else [])])
        if new_rs is not None:
            new_rs, old_rss = all_rss[-1], all_rss[:-1]
        else:
            old_rss = all_rss
        if plan.cleanup:
            self.cleanup_deployment(d, old_rss)
        if plan.rollout:
            return self.sync_rollout_status(all_rss, new_rs, d)
        return self.sync_deployment_status(all_rss, new_rs, d)
