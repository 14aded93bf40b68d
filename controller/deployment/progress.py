"""Deployment status and the progress deadline (Kubernetes' progress.go + calculateStatus).

`calculate_status` is pure. `ProgressMixin.sync_rollout_status` writes the status with the
Progressing condition:
  NewReplicaSetAvailable   the rollout is complete ("ReplicaSet "x" has successfully progressed.")
  ReplicaSetUpdated        something moved since the last status ("ReplicaSet "x" is progressing.");
                           only lastUpdateTime moves while it keeps progressing
  ProgressDeadlineExceeded no progress for progressDeadlineSeconds since lastUpdateTime
                           ("ReplicaSet "x" has timed out progressing.") — sticky until the
                           template changes
and Available True/False (MinimumReplicasAvailable / MinimumReplicasUnavailable) from
availableReplicas >= replicas - maxUnavailable. When a rollout is neither complete nor timed
out, the reconcile asks to be requeued at its deadline, so the timeout is noticed without
waiting for a resync.
"""
from __future__ import annotations

from shoal.machinery.api.objects import (CONDITION_FALSE, CONDITION_TRUE, get_condition, meta, name_of,
                                         remove_condition, set_condition, thaw)
from shoal.machinery.api.times import format_time, parse_time
from shoal.machinery.control import Result
from shoal.controller.deployment import util as u


def new_condition(ctype: str, status: str, reason: str, message: str, now: float) -> dict:
    t = format_time(now)
    return {"type": ctype, "status": status, "lastUpdateTime": t, "lastTransitionTime": t, "reason": reason,
            "message": message}


def calculate_status(all_rss: list[dict], new_rs: dict | None, d: dict, now: float) -> dict:
    available = u.status_sum(all_rss, "availableReplicas")
    total = u.spec_replicas_sum(all_rss)
    status = {k: v for k, v in (d.get("status") or {}).items() if k not in ("conditions",)}
    status.update({
        "observedGeneration": int(meta(d).get("generation") or 0),
        "replicas": u.status_sum(all_rss, "replicas"),
        "updatedReplicas": u.status_int(new_rs, "replicas"),
        "readyReplicas": u.status_sum(all_rss, "readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": max(total - available, 0),
    })
    status["conditions"] = [dict(c) for c in (d.get("status") or {}).get("conditions") or []]
    if available >= u.replicas_of(d) - u.max_unavailable(d):
        set_condition(status, new_condition(u.AVAILABLE, CONDITION_TRUE, u.MIN_AVAILABLE_REASON,
                                            "Deployment has minimum availability.", now))
    else:
        set_condition(status, new_condition(u.AVAILABLE, CONDITION_FALSE, u.MIN_UNAVAILABLE_REASON,
                                            "Deployment does not have minimum availability.", now))
    return status


def timed_out(d: dict, status: dict, now: float) -> bool:
    deadline = u.progress_deadline(d)
    cond = get_condition(status, u.PROGRESSING)
    if deadline is None or cond is None or cond.get("reason") == u.NEW_RS_AVAILABLE_REASON:
        return False
    if cond.get("reason") == u.TIMED_OUT_REASON:
        return True
    since = parse_time(cond.get("lastUpdateTime")) or now
    return since + deadline < now


def rollout_status(all_rss: list[dict], new_rs: dict | None, d: dict, now: float) -> dict:
    """The status syncRolloutStatus would write (pure)."""
    status = calculate_status(all_rss, new_rs, d, now)
    deadline = u.progress_deadline(d)
    if deadline is None:
        remove_condition(status, u.PROGRESSING)
    cur = get_condition(d.get("status"), u.PROGRESSING)
    complete_before = (status["replicas"] == status["updatedReplicas"] and cur is not None
                       and cur.get("reason") == u.NEW_RS_AVAILABLE_REASON)
    what = f'ReplicaSet "{name_of(new_rs)}"' if new_rs is not None else f'Deployment "{name_of(d)}"'
    if deadline is not None and not complete_before:
        if u.deployment_complete(d, status):
            set_condition(status, new_condition(u.PROGRESSING, CONDITION_TRUE, u.NEW_RS_AVAILABLE_REASON,
                                                f"{what} has successfully progressed.", now))
        elif u.deployment_progressing(d, status):
            cond = new_condition(u.PROGRESSING, CONDITION_TRUE, u.RS_UPDATED_REASON, f"{what} is progressing.", now)
            if cur is not None:
                if cur.get("status") == CONDITION_TRUE:
                    cond["lastTransitionTime"] = cur.get("lastTransitionTime") or cond["lastTransitionTime"]
                remove_condition(status, u.PROGRESSING)
            set_condition(status, cond)
        elif timed_out(d, status, now):
            set_condition(status, new_condition(u.PROGRESSING, CONDITION_FALSE, u.TIMED_OUT_REASON,
                                                f"{what} has timed out progressing.", now))
    return status


def requeue_for_deadline(d: dict, status: dict, now: float) -> float | None:
    """Seconds until this rollout's progress deadline should be checked (requeueStuckDeployment)."""
    deadline = u.progress_deadline(d)
    cur = get_condition(d.get("status"), u.PROGRESSING)
    if deadline is None or cur is None:
        return None
    if u.deployment_complete(d, status) or cur.get("reason") == u.TIMED_OUT_REASON:
        return None
    after = (parse_time(cur.get("lastUpdateTime")) or now) + deadline - now
    return max(after, 0.0) + 1.0


class ProgressMixin:
    def sync_rollout_status(self, all_rss: list[dict], new_rs: dict | None, d: dict) -> Result:
        now = self.clock.now()
        status = rollout_status(all_rss, new_rs, d, now)
        if status == (d.get("status") or {}):
            return Result(requeue_after=requeue_for_deadline(d, status, now))
        self.write_status(d, status)
        # The written status is the new baseline; look at the deadline again from it.
        d2 = dict(d)
        d2["status"] = status
        return Result(requeue_after=requeue_for_deadline(d2, status, now))

    def sync_deployment_status(self, all_rss: list[dict], new_rs: dict | None, d: dict) -> Result:
        status = calculate_status(all_rss, new_rs, d, self.clock.now())
        if status != (d.get("status") or {}):
            self.write_status(d, status)
        return Result()

    def write_status(self, d: dict, status: dict) -> dict:
        new = thaw(d)
        new["status"] = status
        resp = self.client.update_status("deployments", new)
        self.dep_inf.observe(resp)
        d["metadata"]["resourceVersion"] = resp["metadata"]["resourceVersion"]
        d["status"] = resp.get("status") or status
        return resp
