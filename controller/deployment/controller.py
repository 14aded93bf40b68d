"""Deployment controller: Deployment → ReplicaSets (one per template revision) → Pods.

`reconcile(key)` follows Kubernetes' syncDeployment:
  read (cache) → empty selector? warn and stop → claim ReplicaSets → deleting? status only →
  paused/resumed condition → sync the new ReplicaSet's annotations and revision →
  plan.plan_sync (paused: proportional scale + cleanup; scaling event: proportional scale;
  else one Recreate or RollingUpdate step) → sync.py performs the plan and writes status.
The decisions are pure (plan.py, rolling.py, recreate.py, util.py); sync.py and progress.py
write. Rollback is not a controller concern here:
`shoal rollout undo` copies an old ReplicaSet's template into the Deployment, and because
template hashing ignores defaults, the old ReplicaSet is found again as the "new" one.

Triggers: Deployment events; ReplicaSet events (mapped to the controlling Deployment, or for
orphans to every Deployment whose selector matches); pod deletions (Recreate waits on them).
"""
from __future__ import annotations

import copy

from shoal.machinery.client.rest import Client

from shoal.controller import indexes
from shoal.machinery.control.events import WARNING, EventSink
from shoal.machinery.api.objects import (CONDITION_UNKNOWN, controller_ref, get_condition, is_deleting, key_of,
                                         labels_of, meta, namespace_of, set_condition, thaw, uid_of)
from shoal.machinery.control import Clock, Controller, Informer, Manager, RealClock, Result
from shoal.machinery.api.selectors import selector_from_label_selector
from shoal.controller.deployment import util as u
from shoal.controller.deployment.plan import plan_sync
from shoal.controller.deployment.progress import ProgressMixin, new_condition
from shoal.controller.deployment.recreate import old_pods_running
from shoal.controller.deployment.sync import SyncMixin


class DeploymentController(SyncMixin, ProgressMixin):
    def __init__(self, client: Client, *, deployments: Informer, replicasets: Informer, pods: Informer,
                 events: EventSink, clock: Clock | None = None):
        self.client = client
        self.dep_inf, self.rs_inf, self.pod_inf = deployments, replicasets, pods
        self.events = events
        self.clock = clock or RealClock()

    def register(self, manager: Manager, *, workers: int = 2) -> Controller:
        indexes.ensure(self.rs_inf, indexes.NAMESPACE)
        indexes.ensure(self.dep_inf, indexes.NAMESPACE)
        indexes.ensure(self.pod_inf, indexes.CONTROLLER)
        c = manager.add_controller("deployment", self, workers=workers)
        c.watch(self.dep_inf)
        c.watch(self.rs_inf, self._deployment_keys_for_rs)

        def pod_deleted(pod: dict) -> None:
            ref = controller_ref(pod)
            if ref and ref.get("kind") == "ReplicaSet":
                rs = self.rs_inf.get(f"{namespace_of(pod)}/{ref['name']}")
                if rs is not None:
                    for k in self._deployment_keys_for_rs(rs):
                        c.enqueue(k)
        self.pod_inf.add_handler(on_delete=pod_deleted)
        return c

    def _deployment_keys_for_rs(self, rs: dict) -> list[str]:
        ref = controller_ref(rs)
        if ref is not None:
            return [f"{namespace_of(rs)}/{ref['name']}"] if ref.get("kind") == "Deployment" else []
        return [key_of(d) for d in self.dep_inf.by_index(indexes.NAMESPACE, namespace_of(rs))
                if selector_from_label_selector((d.get("spec") or {}).get("selector")).matches(labels_of(rs))]

    # -- reconcile ------------------------------------------------------------------------------
    def reconcile(self, key: str) -> Result:
        cached = self.dep_inf.get(key)
        if cached is None:
            return Result()
        d = thaw(cached)
        selector = (d.get("spec") or {}).get("selector")
        # Validation requires a non-empty selector; one stored without (or before that rule) would
        # select everything (empty) or nothing (missing): refuse both, as before.
        if selector is None or selector_from_label_selector(selector).empty:
            self.events.event(d, WARNING, "SelectingAll",
                              "This deployment is selecting all pods. A non-empty selector is required.")
            if int((d.get("status") or {}).get("observedGeneration") or 0) < int(meta(d).get("generation") or 0):
                status = copy.deepcopy(d.get("status") or {})
                status["observedGeneration"] = int(meta(d).get("generation") or 0)
                self.write_status(d, status)
            return Result()
        rs_list = self.replicasets_for(d)
        if is_deleting(d):
            new_rs, old_rss = self.get_all_replicasets(d, rs_list)
            return self.sync_deployment_status([*old_rss, *([new_rs] if new_rs else [])], new_rs, d)
        self.check_paused_conditions(d)
        new_rs, old_rss = self.get_all_replicasets(d, rs_list)
        running = False
        if u.strategy_type(d) == "Recreate" and not u.active(old_rss):
            running = old_pods_running(old_rss, {uid_of(rs): self.pod_inf.by_index(indexes.CONTROLLER, uid_of(rs))
                                                 for rs in old_rss})
        return self.execute(d, plan_sync(d, new_rs, old_rss, old_pods_running=running), new_rs, old_rss)

    def check_paused_conditions(self, d: dict) -> None:
        """Progressing=Unknown with DeploymentPaused / DeploymentResumed (not over a timeout)."""
        if u.progress_deadline(d) is None:
            return
        cond = get_condition(d.get("status"), u.PROGRESSING)
        if cond is not None and cond.get("reason") == u.TIMED_OUT_REASON:
            return
        paused = bool((d.get("spec") or {}).get("paused"))
        paused_cond = cond is not None and cond.get("reason") == u.PAUSED_REASON
        status = copy.deepcopy(d.get("status") or {})
        now = self.clock.now()
        if paused and not paused_cond:
            set_condition(status, new_condition(u.PROGRESSING, CONDITION_UNKNOWN, u.PAUSED_REASON,
                                                "Deployment is paused", now))
        elif not paused and paused_cond:
            set_condition(status, new_condition(u.PROGRESSING, CONDITION_UNKNOWN, u.RESUMED_REASON,
                                                "Deployment is resumed", now))
        else:
            return
        self.write_status(d, status)
