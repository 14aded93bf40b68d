"""NodeRestriction (apiserver.auth): what a node may write on its own Node, which Events it
may write, and the per-node token bucket — the pure rules, table by table."""
from __future__ import annotations

import pytest

from shoal.apiserver import auth
from shoal.apiserver.auth import (Principal, TokenBuckets, event_size_refusal, event_subject_refusal,
                                  forbidden_node_labels, is_kubelet_label, node_restriction)
from shoal.machinery.api import errors
from shoal.machinery.api.resources import resolve

pytestmark = pytest.mark.unit

NODE = "node-a"


def node(labels=None, *, taints=None, unschedulable=None, pod_cidr=None, internal=("10.0.0.5",), external=(),
         underlay="10.0.0.5") -> dict:
    spec: dict = {}
    if taints is not None:
        spec["taints"] = taints
    if unschedulable is not None:
        spec["unschedulable"] = unschedulable
    if pod_cidr is not None:
        spec["podCIDR"] = pod_cidr
    addrs = [{"type": "InternalIP", "address": a} for a in internal] + \
        [{"type": "ExternalIP", "address": a} for a in external] + [{"type": "Hostname", "address": NODE}]
    md: dict = {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, **(labels or {})}}
    if underlay is not None:
        md["annotations"] = {"shoal.io/underlay-ip": underlay}
    return {"apiVersion": "v1", "kind": "Node", "metadata": md, "spec": spec, "status": {"addresses": addrs}}


@pytest.mark.parametrize("key, kubelet", [
    ("kubernetes.io/hostname", True), ("kubernetes.io/os", True), ("beta.kubernetes.io/arch", True),
    ("topology.kubernetes.io/zone", True), ("topology.kubernetes.io/region", True),
    ("node.kubernetes.io/instance-type", True), ("failure-domain.beta.kubernetes.io/zone", True),
    ("kubelet.kubernetes.io/anything", True), ("x.kubelet.kubernetes.io/anything", True),
    ("node.kubernetes.io/anything", True), ("foo.node.kubernetes.io/bar", True),
    ("topology.kubernetes.io/rack", False), ("node-role.kubernetes.io/control-plane", False),
    ("kubernetes.io/role", False), ("example.k8s.io/x", False), ("disktype", False),
])
def test_kubelet_labels(key, kubelet):
    assert is_kubelet_label(key) is kubelet


@pytest.mark.parametrize("new, old, refused", [
    # a create sets every label: the node's own (no prefix, another domain) and the kubelet's pass
    ({"disktype": "ssd", "example.com/team": "a", "kubernetes.io/os": "linux"}, None, []),
    ({"node-role.kubernetes.io/control-plane": ""}, None, ["node-role.kubernetes.io/control-plane"]),
    ({"node-restriction.kubernetes.io/pci": "yes", "x.node-restriction.kubernetes.io/y": "1"}, None,
     ["node-restriction.kubernetes.io/pci", "x.node-restriction.kubernetes.io/y"]),
    ({"example.k8s.io/x": "1"}, None, ["example.k8s.io/x"]),
    # an update: only what it adds, removes or changes counts
    ({"node-role.kubernetes.io/worker": ""}, {"node-role.kubernetes.io/worker": ""}, []),
    ({}, {"node-role.kubernetes.io/worker": ""}, ["node-role.kubernetes.io/worker"]),
    ({"topology.kubernetes.io/zone": "b"}, {"topology.kubernetes.io/zone": "a"}, []),
    ({"topology.kubernetes.io/rack": "b"}, {}, ["topology.kubernetes.io/rack"]),
])
def test_forbidden_node_labels(new, old, refused):
    assert forbidden_node_labels(new, old) == refused


@pytest.mark.parametrize("what, new, old, sub, joined, field, words", [
    ("a create with the kubelet's labels, taints and its addresses", node(taints=[{"key": "k", "effect": "NoSchedule"}],
     unschedulable=True), None, None, None, None, None),
    ("a create with an admin's label", node({"node-role.kubernetes.io/master": ""}), None, None, None,
     "metadata.labels", 'node "node-a" is not allowed to set the following labels: node-role.kubernetes.io/master'),
    ("a create with a pod CIDR", node(pod_cidr="10.244.9.0/24"), None, None, None, "spec.podCIDR", "spec.podCIDR"),
    ("an update adding an admin's label", node({"node-restriction.kubernetes.io/x": "1"}), node(), None, None,
     "metadata.labels", "is not allowed to modify labels: node-restriction.kubernetes.io/x"),
    ("an update of its zone and its own labels", node({"topology.kubernetes.io/zone": "z", "team": "a"}),
     node(), None, None, None, None),
    ("removing its taints", node(taints=[]), node(taints=[{"key": "k", "effect": "NoSchedule"}]), None, None,
     "spec.taints", 'node "node-a" is not allowed to modify taints'),
    ("adding a taint", node(taints=[{"key": "k", "effect": "NoSchedule"}]), node(), None, None, "spec.taints", "taints"),
    ("uncordoning itself", node(unschedulable=False), node(unschedulable=True), None, None, "spec.unschedulable",
     "cordoning a node is the admin's"),
    ("cordoning itself", node(unschedulable=True), node(), None, None, "spec.unschedulable", "unschedulable"),
    ("unschedulable false == absent", node(unschedulable=False), node(), None, None, None, None),
    ("the pod CIDR the server gave it, kept", node(pod_cidr="10.244.1.0/24"), node(pod_cidr="10.244.1.0/24"),
     None, None, None, None),
    ("the overlay address moved elsewhere", node(underlay="10.9.9.9"), node(), None, None,
     "metadata.annotations[shoal.io/underlay-ip]", "must be an address the node registered"),
    ("the overlay address moved to its join address", node(underlay="127.0.0.1"), node(), None, "127.0.0.1",
     None, None),
    ("the overlay address, unchanged", node(underlay="10.0.0.5"), node(), None, None, None, None),
    # status writes: the addresses
    ("a status post, same addresses", node(), node(), "status", None, None, None),
    ("a new InternalIP", node(internal=("10.0.0.9",)), node(), "status", None, "status.addresses",
     "not allowed to change its InternalIP addresses from ['10.0.0.5'] to ['10.0.0.9']"),
    ("a second InternalIP", node(internal=("10.0.0.5", "10.0.0.6")), node(), "status", None, "status.addresses",
     "InternalIP"),
    ("the InternalIP moved to the join address", node(internal=("192.168.1.7",)), node(), "status", "192.168.1.7",
     None, None),
    ("an ExternalIP added (ServiceLB's ingress)", node(external=("203.0.113.9",)), node(), "status", "203.0.113.9",
     "status.addresses", "ExternalIP"),
    ("the first addresses of a Node an admin made", node(), node(internal=(), underlay=None), "status", None,
     None, None),
    # a status write keeps the stored metadata and spec: labels in its body do not count
    ("a status write with other labels in its body", node({"node-role.kubernetes.io/x": ""}), node(), "status",
     None, None, None),
])
def test_node_restriction(what, new, old, sub, joined, field, words):
    r = node_restriction(NODE, new, old, subresource=sub, joined_from=joined)
    if field is None:
        assert r is None, what
    else:
        assert r is not None and r.field == field and words in r.reason, (what, r)


def test_admit_raises_forbidden_naming_the_field_and_only_for_nodes():
    nodes = resolve("nodes")
    with pytest.raises(errors.Forbidden) as e:
        auth.admit(Principal("node", NODE), nodes, node(taints=[]), node(taints=[{"key": "k", "effect": "NoSchedule"}]))
    assert str(e.value.message) == 'nodes "node-a" is forbidden: node "node-a" is not allowed to modify taints'
    assert e.value.causes[0].field == "spec.taints"
    with pytest.raises(errors.Forbidden, match=r'User "system:node:node-a" may not set spec\.podCIDR'):
        auth.admit(Principal("node", NODE), nodes, node(pod_cidr="10.244.3.0/24"), node())
    auth.admit(Principal("admin"), nodes, node(taints=[]), node(taints=[{"key": "k", "effect": "NoSchedule"}]))


def pod(name="web-1", ns="default", node_name=NODE, uid="u1") -> dict:
    return {"metadata": {"name": name, "namespace": ns, "uid": uid}, "spec": {"nodeName": node_name}}


def event(kind="Pod", name="web-1", ns="default", ref_ns="default", uid=None, message="m") -> dict:
    ref = {"kind": kind, "name": name, **({"namespace": ref_ns} if ref_ns else {}), **({"uid": uid} if uid else {})}
    return {"metadata": {"name": "e1", "namespace": ns}, "involvedObject": ref, "reason": "Started",
            "message": message}


PODS = {("default", "web-1"): pod(), ("default", "other"): pod("other", node_name="node-b"),
        ("team", "web-1"): pod(ns="team")}


@pytest.mark.parametrize("ev, words", [
    (event(), ""),
    (event(uid="u1"), ""),
    (event(uid="u-old"), "with uid u-old is not bound"),
    (event(name="other"), "no relationship found between node 'node-a' and pod default/other"),
    (event(name="missing"), "no relationship found"),
    (event(ref_ns="team"), "involvedObject.namespace must be the Event's namespace"),
    (event(ns="team", ref_ns="team"), ""),
    (event(kind="Node", name=NODE, ref_ns=None), ""),
    (event(kind="Node", name="node-b", ref_ns=None), "only about its own Node"),
    (event(kind="Node", name=NODE, ns="kube-system", ref_ns=None), 'namespace "default"'),
    (event(kind="Deployment", name="web"), "not a 'Deployment'"),
    ({"metadata": {"name": "e", "namespace": "default"}}, "must name its involvedObject"),
])
def test_event_subjects(ev, words):
    why = event_subject_refusal(NODE, ev, lambda ns, name: PODS.get((ns, name)))
    assert (why == "") if not words else (words in why), why


def test_event_sizes():
    assert event_size_refusal(event(message="x" * 1024)) is None
    too_long = event_size_refusal(event(message="é" * 513))
    assert isinstance(too_long, errors.Invalid) and too_long.causes[0].field == "message"
    big = event(message="m")
    big["metadata"]["annotations"] = {"a": "x" * 5000}
    assert isinstance(event_size_refusal(big), errors.Invalid)


def test_token_buckets():
    now = [0.0]
    b = TokenBuckets(2.0, 3, clock=lambda: now[0])
    assert [b.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("a") == pytest.approx(0.5)            # empty: one token in half a second
    assert b.take("b") == 0.0                           # per key
    now[0] = 0.5
    assert b.take("a") == 0.0 and b.take("a") == pytest.approx(0.5)
    now[0] = 100.0
    assert [b.take("a") for _ in range(4)][-1] > 0      # refilled to the burst, never past it
