"""Shared steps of every Deployment sync (Kubernetes' sync.go): claim ReplicaSets, find or
create the new ReplicaSet and keep revisions in order, scale (proportionally during a
rollout), clean up old revisions beyond revisionHistoryLimit, write status.

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
    def get_all_replicasets(self, d: dict, rs_list: list[dict], *, create: bool) -> tuple[dict | None, list[dict]]:
        existing = u.find_new_rs(d, rs_list)
        old = [rs for rs in rs_list if existing is None or uid_of(rs) != uid_of(existing)]
        new = self.get_new_replicaset(d, old, existing, create=create)
        return new, old

    def _set_deployment_revision(self, d: dict, revision: str) -> None:
        if (meta(d).get("annotations") or {}).get(u.REVISION_ANNOTATION) == revision:
            return
        new = thaw(d)
        new["metadata"].setdefault("annotations", {})[u.REVISION_ANNOTATION] = revision
        resp = self.client.update("deployments", new)
        self.dep_inf.observe(resp)
        d["metadata"] = resp["metadata"]

    def get_new_replicaset(self, d: dict, old_rss: list[dict], existing: dict | None, *, create: bool) -> dict | None:
        new_revision = u.max_revision(old_rss) + 1
        now = self.clock.now()
        if existing is not None:
            rs = thaw(existing)
            changed = u.set_new_rs_annotations(d, rs, new_revision, exists=True)
            mrs = u.min_ready_seconds(d)
            if changed or int(rs["spec"].get("minReadySeconds") or 0) != mrs:
                rs["spec"]["minReadySeconds"] = mrs
                resp = self.client.update("replicasets", rs)
                self.rs_inf.observe(resp)
                return resp
            self._set_deployment_revision(d, str(u.revision_of(rs)))
            if u.progress_deadline(d) is not None and get_condition(d.get("status"), u.PROGRESSING) is None:
                status = copy.deepcopy(d.get("status") or {})
                set_condition(status, new_condition(u.PROGRESSING, CONDITION_TRUE, u.FOUND_NEW_RS_REASON,
                                                    f'Found new replica set "{name_of(rs)}"', now))
                self.write_status(d, status)
            return existing
        if not create:
            return None
        template = copy.deepcopy((d.get("spec") or {}).get("template") or {})
        collisions = int((d.get("status") or {}).get("collisionCount") or 0)
        h = u.compute_hash(template, collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[u.POD_TEMPLATE_HASH_LABEL] = h
        selector = copy.deepcopy((d.get("spec") or {}).get("selector") or {})
        selector.setdefault("matchLabels", {})[u.POD_TEMPLATE_HASH_LABEL] = h
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{name_of(d)}-{h}", "namespace": namespace_of(d),
                           "labels": dict(template["metadata"]["labels"]), "ownerReferences": [owner_ref_to(d)]},
              "spec": {"replicas": 0, "minReadySeconds": u.min_ready_seconds(d), "selector": selector,
                       "template": template}}
        u.set_new_rs_annotations(d, rs, new_revision, exists=False)
        rs["spec"]["replicas"] = u.new_rs_new_replicas(d, [*old_rss, rs], rs)
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
                found = self.client.get("replicasets", rs["metadata"]["name"], namespace_of(d))
            except errors.NotFound:
                raise errors.Conflict(f"replica set {rs['metadata']['name']} was deleted while being created") from None
            ref = controller_ref(found)
            if ref is not None and ref.get("uid") == uid_of(d) and u.templates_equal(
                    (found.get("spec") or {}).get("template"), (d.get("spec") or {}).get("template")):
                self.rs_inf.observe(found)
                return found
            status = copy.deepcopy(d.get("status") or {})
            status["collisionCount"] = collisions + 1
            self.write_status(d, status)
            raise HashCollision(f"hash collision for deployment {key_of(d)}: replica set "
                                f"{rs['metadata']['name']} has another template; collisionCount is now "
                                f"{collisions + 1}") from None
        self.rs_inf.observe(created)
        if u.replicas_of(created) > 0:
            self.events.event(d, NORMAL, "ScalingReplicaSet",
                              f"Scaled up replica set {name_of(created)} from 0 to {u.replicas_of(created)}")
        self._set_deployment_revision(d, str(new_revision))
        if u.progress_deadline(d) is not None:
            status = copy.deepcopy(d.get("status") or {})
            set_condition(status, new_condition(u.PROGRESSING, CONDITION_TRUE, u.NEW_RS_REASON,
                                                f'Created new replica set "{name_of(created)}"', now))
            self.write_status(d, status)
        return created

    # -- scaling --------------------------------------------------------------------------------
    def scale_replicaset(self, rs: dict, size: int, d: dict, direction: str | None = None) -> dict:
        """Set spec.replicas and the desired/max-replicas annotations; event on size change."""
        cur = u.replicas_of(rs)
        new = thaw(rs)
        ann_changed = u.set_replicas_annotations(new, u.replicas_of(d), u.replicas_of(d) + u.max_surge(d))
        if cur == size and not ann_changed:
            return rs
        new["spec"]["replicas"] = size
        resp = self.client.update("replicasets", new)
        self.rs_inf.observe(resp)
        if cur != size:
            direction = direction or ("up" if size > cur else "down")
            self.events.event(d, NORMAL, "ScalingReplicaSet",
                              f"Scaled {direction} replica set {name_of(rs)} from {cur} to {size}")
        return resp

    def apply_scales(self, d: dict, scales: list[u.Scale], rss: list[dict]) -> list[dict]:
        """Execute planned writes; returns `rss` with the written objects swapped in."""
        by_name = {name_of(rs): rs for rs in rss}
        for s in scales:
            by_name[s.name] = self.scale_replicaset(by_name[s.name], s.replicas, d)
        return [by_name[name_of(rs)] for rs in rss]

    def scale(self, d: dict, new_rs: dict | None, old_rss: list[dict]) -> tuple[dict | None, list[dict]]:
        plan = u.plan_proportional_scale(d, new_rs, old_rss)
        rss = [*old_rss, *([new_rs] if new_rs is not None else [])]
        rss = self.apply_scales(d, plan, rss)
        if new_rs is not None:
            return rss[-1], rss[:-1]
        return None, rss

    # -- history --------------------------------------------------------------------------------
    def cleanup_deployment(self, d: dict, old_rss: list[dict]) -> None:
        """Delete the oldest ReplicaSets beyond revisionHistoryLimit that are scaled to zero."""
        alive = [rs for rs in old_rss if not is_deleting(rs)]
        diff = len(alive) - u.revision_history_limit(d)
        if diff <= 0:
            return
        for rs in u.by_revision(alive)[:diff]:
            st = rs.get("status") or {}
            if (int(st.get("replicas") or 0) != 0 or u.replicas_of(rs) != 0
                    or int(meta(rs).get("generation") or 0) > int(st.get("observedGeneration") or 0)):
                continue
            try:
                self.client.delete("replicasets", name_of(rs), namespace_of(rs), propagation_policy="Background",
                                   preconditions_uid=uid_of(rs))
            except errors.NotFound:
                pass
            self.rs_inf.observe_deleted(key_of(rs), uid_of(rs))

    # -- the scaling / paused path --------------------------------------------------------------
    def sync(self, d: dict, rs_list: list[dict]) -> Result:
        new_rs, old_rss = self.get_all_replicasets(d, rs_list, create=False)
        new_rs, old_rss = self.scale(d, new_rs, old_rss)
        if (d.get("spec") or {}).get("paused"):
            self.cleanup_deployment(d, old_rss)
        return self.sync_deployment_status([*old_rss, *([new_rs] if new_rs else [])], new_rs, d)
