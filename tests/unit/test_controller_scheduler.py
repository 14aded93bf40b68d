"""Scheduler filters, scores and messages (controller/scheduler/framework.py) and the
incremental ClusterState accounting."""
from collections import Counter

import pytest

from shoal.controller.scheduler.framework import (NodeInfo, PodRequest, failure_message, filter_node, node_info,
                                                  pod_request, schedule_one, score_key, tolerates)
from shoal.controller.scheduler.scheduler import ClusterState, is_pending

pytestmark = pytest.mark.unit

GI = 1024 ** 3


def node(name, cpu="4", mem="8Gi", ready="True", unschedulable=False, taints=(), pods=None):
    alloc = {"cpu": cpu, "memory": mem}
    if pods is not None:
        alloc["pods"] = str(pods)
    return {"metadata": {"name": name}, "spec": {"unschedulable": unschedulable, "taints": list(taints)},
            "status": {"allocatable": alloc, "conditions": [{"type": "Ready", "status": ready}]}}


def pod(name="web-1", cpu=None, mem=None, owner=None, tolerations=(), node_name=None, limits=None):
    res = {}
    req = {k: v for k, v in (("cpu", cpu), ("memory", mem)) if v is not None}
    if req:
        res["requests"] = req
    if limits:
        res["limits"] = limits
    md = {"name": name, "namespace": "default", "uid": f"uid-{name}"}
    if owner:
        md["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner, "uid": owner, "controller": True}]
    spec = {"containers": [{"name": "c", "image": "x:1", "resources": res}], "tolerations": list(tolerations)}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": md, "spec": spec, "status": {"phase": "Pending"}}


@pytest.mark.parametrize("p,want", [
    (pod(cpu="500m", mem="128Mi"), (500, 128 * 1024 ** 2)),
    (pod(), (0, 0)),
    (pod(limits={"cpu": "1", "memory": "1Gi"}), (1000, GI)),          # requests default to limits
    (pod(cpu="250m", limits={"cpu": "1", "memory": "1Gi"}), (250, GI)),
])
def test_pod_request(p, want):
    r = pod_request(p)
    assert (r.cpu, r.memory) == want


def test_pod_request_init_container_max():
    p = pod(cpu="100m")
    p["spec"]["initContainers"] = [{"name": "i", "image": "x", "resources": {"requests": {"cpu": "2"}}}]
    assert pod_request(p).cpu == 2000


@pytest.mark.parametrize("tols,taint,want", [
    ([], {"key": "a", "value": "b", "effect": "NoSchedule"}, False),
    ([{"key": "a", "operator": "Equal", "value": "b", "effect": "NoSchedule"}], {"key": "a", "value": "b", "effect": "NoSchedule"}, True),
    ([{"key": "a", "value": "c"}], {"key": "a", "value": "b", "effect": "NoSchedule"}, False),
    ([{"key": "a", "operator": "Exists"}], {"key": "a", "value": "b", "effect": "NoExecute"}, True),
    ([{"operator": "Exists"}], {"key": "z", "effect": "NoSchedule"}, True),
    ([{"key": "a", "operator": "Exists", "effect": "NoExecute"}], {"key": "a", "effect": "NoSchedule"}, False),
])
def test_tolerates(tols, taint, want):
    assert tolerates(tols, taint) is want


UNREACH = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}


@pytest.mark.parametrize("n,p,used,want", [
    (node("a"), pod(cpu="1"), (0, 0, 0), []),
    (node("a", ready="Unknown"), pod(), (0, 0, 0), ["node(s) were not ready"]),
    (node("a", unschedulable=True), pod(), (0, 0, 0), ["node(s) were unschedulable"]),
    (node("a", taints=[UNREACH]), pod(), (0, 0, 0), ["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"]),
    (node("a", taints=[UNREACH]), pod(tolerations=[{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]),
     (0, 0, 0), []),
    (node("a", taints=[{"key": "x", "effect": "PreferNoSchedule"}]), pod(), (0, 0, 0), []),
    (node("a", cpu="1"), pod(cpu="600m"), (500, 0, 1), ["Insufficient cpu"]),
    (node("a", cpu="1"), pod(cpu="500m"), (500, 0, 1), []),                 # exactly fits
    (node("a", mem="1Gi"), pod(mem="1Gi"), (0, 1, 1), ["Insufficient memory"]),
    (node("a", cpu="1", mem="1Gi"), pod(cpu="2", mem="2Gi"), (0, 0, 0), ["Insufficient cpu", "Insufficient memory"]),
    (node("a", pods=2), pod(), (0, 0, 2), ["Too many pods"]),
])
def test_filter_node(n, p, used, want):
    info = node_info(n)
    info.requested_cpu, info.requested_memory, info.pods = used[0], used[1], used[2]
    assert filter_node(p, pod_request(p), info) == want


def test_score_spreads_owner_then_least_allocated():
    req = PodRequest(cpu=100, memory=0, owner="rs1")
    a = NodeInfo("a", 4000, 8 * GI, 110, True, False, owners=Counter({"rs1": 2}), pods=2)
    b = NodeInfo("b", 4000, 8 * GI, 110, True, False, requested_cpu=3000, pods=5, owners=Counter({"rs2": 5}))
    c = NodeInfo("c", 4000, 8 * GI, 110, True, False, requested_cpu=1000, pods=1, owners=Counter({"rs1": 1}))
    ranked = sorted([a, b, c], key=lambda n: score_key(req, n))
    assert [n.name for n in ranked] == ["b", "c", "a"]  # b has no rs1 pod; c has fewer than a
    req2 = PodRequest(cpu=100)
    assert [n.name for n in sorted([a, b, c], key=lambda n: score_key(req2, n))][0] in ("a", "c")
    assert sorted([a, b, c], key=lambda n: score_key(req2, n))[-1].name == "b"  # most allocated last


@pytest.mark.parametrize("total,reasons,want", [
    (3, Counter({"Insufficient memory": 3}), "0/3 nodes are available: 3 Insufficient memory."),
    (5, Counter({"Insufficient cpu": 2, "node(s) were not ready": 3}),
     "0/5 nodes are available: 2 Insufficient cpu, 3 node(s) were not ready."),
    (0, Counter(), "0/0 nodes are available: no nodes are registered."),
])
def test_failure_message(total, reasons, want):
    assert failure_message(total, reasons) == want


def test_schedule_one_spreads_a_replicaset_evenly():
    nodes = [node_info(node(n)) for n in ("a", "b", "c")]
    placed = Counter()
    for i in range(9):
        p = pod(f"p{i}", cpu="100m", owner="rs1")
        req = pod_request(p)
        d = schedule_one(p, req, nodes)
        placed[d.node] += 1
        next(n for n in nodes if n.name == d.node).add(req)
    assert placed == Counter({"a": 3, "b": 3, "c": 3})


def test_schedule_one_unschedulable_message():
    nodes = [node_info(node(n, mem="1Gi")) for n in ("a", "b", "c")]
    d = schedule_one(pod(mem="2Gi"), pod_request(pod(mem="2Gi")), nodes)
    assert d.node is None and d.message == "0/3 nodes are available: 3 Insufficient memory."


def test_cluster_state_accounts_assumed_bound_and_deleted_pods():
    s = ClusterState()
    s.set_node(node("a", cpu="1"))
    p = pod("p1", cpu="600m")
    d = s.assume(p, pod_request(p))
    assert d.node == "a" and s.nodes["a"].requested_cpu == 600
    # an update of the still-unbound pod must not drop the in-flight assumption
    assert s.pod_changed(p, uid="uid-p1") is False and s.nodes["a"].requested_cpu == 600
    p2 = pod("p2", cpu="600m")
    assert s.assume(p2, pod_request(p2)).node is None  # does not fit next to the assumed pod
    bound = pod("p1", cpu="600m", node_name="a")
    s.pod_changed(bound, uid="uid-p1")
    assert s.nodes["a"].requested_cpu == 600 and s.nodes["a"].pods == 1
    assert s.pod_changed(None, uid="uid-p1") is True
    assert s.nodes["a"].requested_cpu == 0 and s.nodes["a"].pods == 0


def test_cluster_state_forget_and_node_readd():
    s = ClusterState()
    s.set_node(node("a"))
    p = pod("p1", cpu="1")
    s.assume(p, pod_request(p))
    s.forget("uid-p1")
    assert s.nodes["a"].requested_cpu == 0
    s.pod_changed(pod("p3", cpu="1", node_name="a"), uid="uid-p3")
    s.remove_node("a")
    s.set_node(node("a"))
    assert s.nodes["a"].requested_cpu == 1000  # rebuilt from the pods bound there


@pytest.mark.parametrize("p,want", [
    (pod(), True),
    (pod(node_name="a"), False),
    ({**pod(), "metadata": {**pod()["metadata"], "deletionTimestamp": "2024-01-01T00:00:00Z"}}, False),
    ({**pod(), "status": {"phase": "Succeeded"}}, False),
    ({**pod(), "spec": {**pod()["spec"], "schedulerName": "other"}}, False),
])
def test_is_pending(p, want):
    assert is_pending(p) is want


def test_an_assumed_pod_is_in_flight_until_seen_bound_or_forgotten():
    st = ClusterState()
    st.set_node(node("a"))
    p = pod("web-1", cpu="1")
    assert st.assume(p, pod_request(p)).node == "a"
    assert st.in_flight("uid-web-1")
    st.pod_changed(p, uid="uid-web-1")              # the unbound version again: still ours
    assert st.in_flight("uid-web-1")
    st.pod_changed(pod("web-1", cpu="1", node_name="a"), uid="uid-web-1")
    assert not st.in_flight("uid-web-1")
    q = pod("web-2", cpu="1")
    st.assume(q, pod_request(q))
    st.forget("uid-web-2")
    assert not st.in_flight("uid-web-2")
    assert st.nodes["a"].requested_cpu == pytest.approx(1000)
