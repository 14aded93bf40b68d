"""ReplicaSet controller: keep `spec.replicas` active pods matching the template.

Contract (per ReplicaSet key, level-based):
1. Claim pods: pods controlled by this ReplicaSet whose labels no longer match its selector
   are released (owner reference removed); orphan pods in the namespace that match are
   adopted (owner reference added, CAS update).
2. Active pods (not terminal, not deleting) are counted; the difference to spec.replicas is
   created (`generateName: <rs>-`, labels/annotations/spec from the template, an owner
   reference with controller: true) in slow-start batches 1, 2, 4, ... so a failing create
   stops early — or deleted, worst first (see `rank_for_deletion`).
3. Status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (Ready for
   spec.minReadySeconds), observedGeneration. A pod that is Ready but not yet available asks
   for a requeue at the moment it becomes available. Count-only changes of one ReplicaSet are
   written at most once per `status_batch` seconds (see `status_write_delay`); a new
   observedGeneration is written at once.

Writes go through `Informer.observe` (read-your-writes), so the next reconcile counts the
pods this one created or deleted even before their watch events arrive.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client

from shoal.controller import indexes
from shoal.machinery.control.events import NORMAL, WARNING, EventSink
from shoal.machinery.api.objects import (controller_ref, creation_time, is_deleting, is_pod_active, is_pod_available,
                                         is_pod_ready, key_of, labels_of, meta, name_of, namespace_of, node_name_of,
                                         owner_ref_to, pod_phase, pod_ready_since, restart_count, thaw, uid_of)
from shoal.machinery.control import Clock, Controller, Informer, Manager, RealClock, Result
from shoal.machinery.api.selectors import selector_from_label_selector

log = logging.getLogger("shoal.controller.replicaset")

_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def rank_for_deletion(pods: list[dict]) -> list[dict]:
    """Pods in the order a scale-down deletes them (Kubernetes' ActivePodsWithRanks):
    unscheduled before scheduled; Pending < Unknown < Running; not Ready before Ready; pods
    doubled up on a node with more of their siblings first; Ready for a shorter time first;
    more restarts first; newer first."""
    per_node: dict[str, int] = {}
    for p in pods:
        n = node_name_of(p)
        if n:
            per_node[n] = per_node.get(n, 0) + 1

    def key(p: dict) -> tuple:
        since = pod_ready_since(p)
        return (1 if node_name_of(p) else 0,
                _PHASE_RANK.get(pod_phase(p), 0),
                0 if since is None else 1,
                -per_node.get(node_name_of(p), 0),
                -(since or 0.0),
                -restart_count(p),
                -creation_time(p),
                name_of(p))
    return sorted(pods, key=key)


def calculate_status(rs: dict, pods: list[dict], now: float) -> tuple[dict, float | None]:
    """(new status, seconds until the next pod turns available or None)."""
    template_labels = ((((rs.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})
    mrs = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
    fully = ready = available = 0
    wake: float | None = None
    for p in pods:
        labels = labels_of(p)
        if all(labels.get(k) == v for k, v in template_labels.items()):
            fully += 1
        if is_pod_ready(p):
            ready += 1
            if is_pod_available(p, mrs, now):
                available += 1
            else:
                left = (pod_ready_since(p) or now) + mrs - now
                wake = left if wake is None else min(wake, left)
    status = dict(rs.get("status") or {})
    status.update({"replicas": len(pods), "fullyLabeledReplicas": fully, "readyReplicas": ready,
                   "availableReplicas": available, "observedGeneration": int(meta(rs).get("generation") or 0)})
    return status, wake


def status_write_delay(last_write: float | None, now: float, batch: float) -> float:
    """Seconds to hold back a count-only status write so that one ReplicaSet's status is
    written at most once per `batch` seconds: 0 after a quiet spell (a single pod turning
    Ready is reported at once), else the rest of the window. While 50 pods turn Ready one after
    another this makes a handful of writes instead of 50 — each of which the API server
    stores, logs and sends to every ReplicaSet watcher, and the Deployment controller answers
    with a status write of its own. The held reconcile runs when the window ends and writes the
    counts of that moment, so the last change is never lost (EndpointSlice's batch period)."""
    if batch <= 0 or last_write is None:
        return 0.0
    return max(0.0, last_write + batch - now)


def pod_from_template(rs: dict) -> dict:
    tmpl = thaw(((rs.get("spec") or {}).get("template")) or {})
    tmd = tmpl.get("metadata") or {}
    md = {"generateName": f"{name_of(rs)}-", "namespace": namespace_of(rs),
          "labels": dict(tmd.get("labels") or {}), "ownerReferences": [owner_ref_to(rs)]}
    if tmd.get("annotations"):
        md["annotations"] = dict(tmd["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": tmpl.get("spec") or {}}


class ReplicaSetController:
    def __init__(self, client: Client, *, replicasets: Informer, pods: Informer, events: EventSink,
                 clock: Clock | None = None, burst: int = 500, create_parallelism: int = 8,
                 status_batch: float = 0.2):
        self.client = client
        self.status_batch = status_batch
        self._status_written: dict[str, float] = {}   # key -> monotonic time of its last status write
        self.rs_inf, self.pod_inf = replicasets, pods
        self.events = events
        self.clock = clock or RealClock()
        self.burst = burst
        self._pool = ThreadPoolExecutor(create_parallelism, thread_name_prefix="rs-create")

    def register(self, manager: Manager, *, workers: int = 4) -> Controller:
        for inf, idx in ((self.pod_inf, indexes.CONTROLLER), (self.pod_inf, indexes.ORPHANS),
                         (self.rs_inf, indexes.NAMESPACE)):
            indexes.ensure(inf, idx)
        c = manager.add_controller("replicaset", self, workers=workers)
        c.watch(self.rs_inf)
        c.watch(self.pod_inf, self._rs_keys_for_pod)
        manager.on_stop(lambda: self._pool.shutdown(wait=False, cancel_futures=True))
        return c

    def _rs_keys_for_pod(self, pod: dict) -> list[str]:
        ref = controller_ref(pod)
        if ref:
            return [f"{namespace_of(pod)}/{ref['name']}"] if ref.get("kind") == "ReplicaSet" else []
        labels = labels_of(pod)
        return [key_of(rs) for rs in self.rs_inf.by_index(indexes.NAMESPACE, namespace_of(pod))
                if selector_from_label_selector((rs.get("spec") or {}).get("selector")).matches(labels)]

    # -- reconcile ------------------------------------------------------------------------------
    def reconcile(self, key: str) -> Result:
        rs = self.rs_inf.get(key)
        if rs is None:
            self._status_written.pop(key, None)
            return Result()
        pods = self._claim_pods(rs)
        active = [p for p in pods if is_pod_active(p)]
        if not is_deleting(rs):
            gone = self._manage(rs, active)
            # Status describes the pods that remain, so nobody counts a pod deleted just now.
            active = [p for p in active if uid_of(p) not in gone]
        status, wake = calculate_status(rs, active, self.clock.now())
        if wake is not None:
            wake += 0.05
        old = rs.get("status") or {}
        if status != old:
            mono = self.clock.monotonic()
            hold = 0.0
            if status.get("observedGeneration") == old.get("observedGeneration"):
                hold = status_write_delay(self._status_written.get(key), mono, self.status_batch)
            if hold > 0:
                wake = hold if wake is None else min(wake, hold)
            else:
                new = thaw(rs)
                new["status"] = status
                self.rs_inf.observe(self.client.update_status("replicasets", new))
                self._status_written[key] = mono
        return Result(requeue_after=wake)

    def _claim_pods(self, rs: dict) -> list[dict]:
        selector = selector_from_label_selector((rs.get("spec") or {}).get("selector"))
        uid = uid_of(rs)
        claimed = []
        for p in self.pod_inf.by_index(indexes.CONTROLLER, uid):
            if selector.matches(labels_of(p)):
                claimed.append(p)
            elif not is_deleting(p):
                self._release(rs, p)
        if is_deleting(rs):
            return claimed
        for p in self.pod_inf.by_index(indexes.ORPHANS, namespace_of(rs)):
            if is_pod_active(p) and selector.matches(labels_of(p)):
                new = thaw(p)
                new["metadata"].setdefault("ownerReferences", []).append(owner_ref_to(rs))
                try:
                    adopted = self.client.update("pods", new)
                except errors.NotFound:
                    continue
                self.pod_inf.observe(adopted)
                claimed.append(adopted)
        return claimed

    def _release(self, rs: dict, pod: dict) -> None:
        new = thaw(pod)
        new["metadata"]["ownerReferences"] = [r for r in new["metadata"].get("ownerReferences") or []
                                              if r.get("uid") != uid_of(rs)]
        try:
            self.pod_inf.observe(self.client.update("pods", new))
        except errors.NotFound:
            pass

    def _manage(self, rs: dict, active: list[dict]) -> set[str]:
        """Create or delete pods; returns the uids of the pods deleted."""
        want = int((rs.get("spec") or {}).get("replicas", 1))
        diff = len(active) - want
        gone: set[str] = set()
        if diff < 0:
            self._create(rs, min(-diff, self.burst))
        elif diff > 0:
            # all at once, as Kubernetes' controller does (a goroutine per pod): one request at
            # a time held a 50-replica rollout's scale-downs back by ~0.1 s per pod
            victims = rank_for_deletion(active)[:min(diff, self.burst)]
            futures = [(p, self._pool.submit(self._delete, rs, p)) for p in victims]
            failure: Exception | None = None
            for p, f in futures:
                try:
                    f.result()
                except Exception as e:       # the others' outcome still counts; retry follows
                    failure = failure or e
                    continue
                gone.add(uid_of(p))
            if failure is not None:
                raise failure
        return gone

    def _create(self, rs: dict, count: int) -> None:
        """Slow start: batches of 1, 2, 4, ... ; stop at the first batch with a failure."""
        if not self._still_there(rs):
            return
        body = pod_from_template(rs)
        done, batch = 0, 1
        while done < count:
            n = min(batch, count - done)
            futures = [self._pool.submit(self.client.create, "pods", body, namespace_of(rs)) for _ in range(n)]
            failure: Exception | None = None
            for f in futures:
                try:
                    pod = f.result()
                except Exception as e:
                    failure = failure or e
                    continue
                self.pod_inf.observe(pod)
                self.events.event(rs, NORMAL, "SuccessfulCreate", f"Created pod: {name_of(pod)}")
            if failure is not None:
                self.events.event(rs, WARNING, "FailedCreate", f"Error creating: {failure}")
                raise failure
            done += n
            batch *= 2

    def _still_there(self, rs: dict) -> bool:
        """A live read before creating pods. The cache can still hold a ReplicaSet that the
        garbage collector has just deleted — the deletions of its pods may arrive on their
        watch before its own — and pods created for it would only be collected again
        (seen: 50 extra pods made and deleted after `delete deployment`)."""
        try:
            cur = self.client.get("replicasets", name_of(rs), namespace_of(rs))
        except errors.NotFound:
            self.rs_inf.observe_deleted(key_of(rs), uid_of(rs))
            return False
        return uid_of(cur) == uid_of(rs) and not is_deleting(cur)

    def _delete(self, rs: dict, pod: dict) -> None:
        try:
            resp = self.client.delete("pods", name_of(pod), namespace_of(pod), preconditions_uid=uid_of(pod))
        except errors.NotFound:
            self.pod_inf.observe_deleted(key_of(pod), uid_of(pod))
            return
        if node_name_of(pod) and isinstance(resp, dict) and (resp.get("metadata") or {}).get("deletionTimestamp"):
            self.pod_inf.observe(resp)  # graceful: the agent confirms later
        else:
            self.pod_inf.observe_deleted(key_of(pod), uid_of(pod))
        self.events.event(rs, NORMAL, "SuccessfulDelete", f"Deleted pod: {name_of(pod)}")
