"""ReplicaSet deletion ranking, status and pod construction; Deployment rollout status."""
import pytest

from shoal.controller.deployment import util as u
from shoal.controller.deployment.progress import calculate_status, requeue_for_deadline, rollout_status
from shoal.machinery.api.objects import get_condition
from shoal.machinery.api.times import format_time
from shoal.controller.replicaset import calculate_status as rs_status, pod_from_template, rank_for_deletion

pytestmark = pytest.mark.unit
T0 = 1_700_000_000.0


def pod(name, node="", phase="Running", ready_at=None, restarts=0, created=0):
    st = {"phase": phase, "conditions": [], "containerStatuses": [{"restartCount": restarts}]}
    if ready_at is not None:
        st["conditions"].append({"type": "Ready", "status": "True", "lastTransitionTime": format_time(ready_at)})
    return {"metadata": {"name": name, "labels": {"app": "web"}, "creationTimestamp": format_time(T0 + created)},
            "spec": {"nodeName": node}, "status": st}


@pytest.mark.parametrize("pods,want_first", [
    ([pod("bound", node="a", ready_at=T0), pod("unbound", phase="Pending")], "unbound"),
    ([pod("running", node="a", ready_at=T0), pod("pending", node="b", phase="Pending")], "pending"),
    ([pod("ready", node="a", ready_at=T0), pod("notready", node="b")], "notready"),
    ([pod("alone", node="a", ready_at=T0), pod("dbl1", node="b", ready_at=T0), pod("dbl2", node="b", ready_at=T0)], "dbl1"),
    ([pod("oldready", node="a", ready_at=T0), pod("newready", node="b", ready_at=T0 + 50)], "newready"),
    ([pod("calm", node="a", ready_at=T0), pod("crashy", node="b", ready_at=T0, restarts=4)], "crashy"),
    ([pod("older", node="a", ready_at=T0, created=1), pod("newer", node="b", ready_at=T0, created=2)], "newer"),
])
def test_rank_for_deletion(pods, want_first):
    assert rank_for_deletion(pods)[0]["metadata"]["name"] == want_first


def test_rs_status_counts_availability_after_min_ready_seconds():
    rs = {"metadata": {"name": "web-x", "generation": 3},
          "spec": {"minReadySeconds": 10, "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}}}}}
    pods = [pod("a", "n", ready_at=T0), pod("b", "n", ready_at=T0 + 6), pod("c", "n")]
    pods[0]["metadata"]["labels"]["tier"] = "fe"
    status, wake = rs_status(rs, pods, T0 + 12)
    assert status == {"replicas": 3, "fullyLabeledReplicas": 1, "readyReplicas": 2, "availableReplicas": 1,
                      "observedGeneration": 3}
    assert wake == pytest.approx(4)


def test_pod_from_template():
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "web-abc", "namespace": "ns1", "uid": "u1"},
          "spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"},
                                             "annotations": {"a": "b"}},
                                "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}
    p = pod_from_template(rs)
    assert p["metadata"]["generateName"] == "web-abc-" and p["metadata"]["namespace"] == "ns1"
    assert p["metadata"]["labels"]["pod-template-hash"] == "abc" and p["metadata"]["annotations"] == {"a": "b"}
    ref = p["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("ReplicaSet", "web-abc", "u1", True)


# -- deployment status and conditions -----------------------------------------------------------
def dep(replicas=3, deadline=600, status=None, generation=1):
    return {"metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": replicas, "progressDeadlineSeconds": deadline,
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}},
            "status": status or {}}


def rs(name, spec, replicas, ready, available):
    return {"metadata": {"name": name}, "spec": {"replicas": spec},
            "status": {"replicas": replicas, "readyReplicas": ready, "availableReplicas": available}}


def test_calculate_status_fields_and_available_condition():
    new, old = rs("web-new", 1, 1, 0, 0), rs("web-old", 3, 3, 3, 3)
    st = calculate_status([old, new], new, dep(), T0)
    assert {k: st[k] for k in ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas",
                               "availableReplicas", "unavailableReplicas")} == \
        {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 1, "readyReplicas": 3, "availableReplicas": 3,
         "unavailableReplicas": 1}
    avail = get_condition(st, "Available")
    assert (avail["status"], avail["reason"]) == ("True", "MinimumReplicasAvailable")
    st2 = calculate_status([rs("web-old", 3, 3, 1, 1)], None, dep(), T0)
    assert get_condition(st2, "Available")["reason"] == "MinimumReplicasUnavailable"


def test_progressing_then_complete():
    d = dep(status={"replicas": 3, "updatedReplicas": 0, "readyReplicas": 3, "availableReplicas": 3,
                    "conditions": [{"type": "Progressing", "status": "True", "reason": u.NEW_RS_REASON,
                                    "lastUpdateTime": format_time(T0), "lastTransitionTime": format_time(T0)}]})
    new = rs("web-new", 1, 1, 0, 0)
    st = rollout_status([rs("web-old", 3, 3, 3, 3), new], new, d, T0 + 5)
    c = get_condition(st, "Progressing")
    assert (c["reason"], c["message"]) == ("ReplicaSetUpdated", 'ReplicaSet "web-new" is progressing.')
    assert c["lastTransitionTime"] == format_time(T0) and c["lastUpdateTime"] == format_time(T0 + 5)
    done = rs("web-new", 3, 3, 3, 3)
    st = rollout_status([rs("web-old", 0, 0, 0, 0), done], done, d, T0 + 9)
    c = get_condition(st, "Progressing")
    assert (c["status"], c["reason"], c["message"]) == ("True", "NewReplicaSetAvailable",
                                                        'ReplicaSet "web-new" has successfully progressed.')


def test_progress_deadline_exceeded_and_requeue():
    cond = {"type": "Progressing", "status": "True", "reason": u.RS_UPDATED_REASON,
            "lastUpdateTime": format_time(T0), "lastTransitionTime": format_time(T0)}
    status = {"replicas": 4, "updatedReplicas": 1, "readyReplicas": 3, "availableReplicas": 3, "observedGeneration": 1,
              "conditions": [cond]}
    d = dep(deadline=10, status=status)
    new = rs("web-new", 1, 1, 0, 0)
    rss = [rs("web-old", 3, 3, 3, 3), new]
    st = rollout_status(rss, new, d, T0 + 5)
    assert get_condition(st, "Progressing")["reason"] == "ReplicaSetUpdated"
    assert requeue_for_deadline(d, st, T0 + 5) == pytest.approx(6)
    st = rollout_status(rss, new, d, T0 + 11)
    c = get_condition(st, "Progressing")
    assert (c["status"], c["reason"], c["message"]) == ("False", "ProgressDeadlineExceeded",
                                                        'ReplicaSet "web-new" has timed out progressing.')
    d["status"] = st
    assert requeue_for_deadline(d, st, T0 + 11) is None  # sticky, nothing to wait for


def test_no_deadline_removes_progressing():
    d = dep(deadline=2**31 - 1, status={"conditions": [{"type": "Progressing", "status": "True", "reason": "x"}]})
    st = rollout_status([rs("a", 3, 3, 3, 3)], rs("a", 3, 3, 3, 3), d, T0)
    assert get_condition(st, "Progressing") is None


# -- status writes in bursts ----------------------------------------------------------------------
def test_status_write_delay_leading_edge_then_window():
    from shoal.controller.replicaset import status_write_delay
    assert status_write_delay(None, 100.0, 0.2) == 0.0            # never written: at once
    assert status_write_delay(99.0, 100.0, 0.2) == 0.0            # quiet for a second: at once
    assert status_write_delay(99.95, 100.0, 0.2) == pytest.approx(0.15)
    assert status_write_delay(99.95, 100.0, 0.0) == 0.0           # batching off


class _StatusClient:
    """Records update_status calls; answers with a bumped resourceVersion, as the server would."""

    def __init__(self):
        self.writes = []
        self.rv = 100

    def update_status(self, kind, obj):
        self.rv += 1
        out = dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(self.rv)))
        self.writes.append((kind, out["status"]))
        return out


def test_replicaset_status_burst_is_batched_and_last_counts_written():
    from shoal.machinery.control.events import RecordingEvents
    from shoal.controller.replicaset import ReplicaSetController
    from shoal.machinery.control import FakeClock, Informer
    from shoal.controller import indexes

    client, clock = _StatusClient(), FakeClock(T0)
    rss, pods = Informer(client, "replicasets"), Informer(client, "pods")
    for inf, idx in ((pods, indexes.CONTROLLER), (pods, indexes.ORPHANS), (rss, indexes.NAMESPACE)):
        indexes.ensure(inf, idx)
    rset = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-1", "namespace": "default", "uid": "rs-uid", "generation": 1,
                         "resourceVersion": "1"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}}}, "status": {}}
    rss.observe(rset)

    def put_pod(i, ready, rv):
        p = pod(f"web-1-{i}", node="n")
        p["metadata"].update(namespace="default", uid=f"p{i}", resourceVersion=str(rv),
                             ownerReferences=[{"kind": "ReplicaSet", "name": "web-1", "uid": "rs-uid",
                                               "controller": True}])
        if ready:
            p["status"]["conditions"] = [{"type": "Ready", "status": "True",
                                          "lastTransitionTime": format_time(T0)}]
        else:
            p["status"]["conditions"] = []
        pods.observe(p)

    for i in range(3):
        put_pod(i, False, 10 + i)
    c = ReplicaSetController(client, replicasets=rss, pods=pods, events=RecordingEvents(), clock=clock,
                             status_batch=0.2)
    key = "default/web-1"
    c.reconcile(key)                                   # first status: written at once
    assert [w[1]["readyReplicas"] for w in client.writes] == [0]
    clock.advance(0.05)
    put_pod(0, True, 20)
    r = c.reconcile(key)                               # inside the window: held, requeued for its end
    assert len(client.writes) == 1 and r.requeue_after == pytest.approx(0.15, abs=1e-3)
    clock.advance(0.05)
    put_pod(1, True, 21)
    r = c.reconcile(key)
    assert len(client.writes) == 1 and r.requeue_after == pytest.approx(0.1, abs=1e-3)
    clock.advance(0.101)
    c.reconcile(key)                                   # the window's end: the counts of now
    assert [w[1]["readyReplicas"] for w in client.writes] == [0, 2]
    # a new generation (a scale, say) is written at once, however recent the last write
    clock.advance(0.01)
    rss.observe(dict(rss.get(key), metadata=dict(rss.get(key)["metadata"], generation=2, resourceVersion="500")))
    c.reconcile(key)
    assert [(w[1]["readyReplicas"], w[1]["observedGeneration"]) for w in client.writes] == [(0, 1), (2, 1), (2, 2)]
