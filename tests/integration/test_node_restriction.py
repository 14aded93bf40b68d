"""NodeRestriction against a real API server (issue 17): with its own credential (joined as
`shoal agent` joins, so its join address is recorded), a node writes its Node as a kubelet
may — the kubelet's labels, its status — and is refused (403 naming the field) admins'
labels, taints, cordoning, another address, another node's Node and deleting its own; its
Events must be about its Node or pods bound to it, fit the size limit, and are limited per
node (429 with Retry-After; admins' are not). Each refused write changes nothing."""
from __future__ import annotations

import json

import httpx
import pytest

from shoal.agent.join import ensure_credentials
from shoal.machinery.api import errors
from shoal.testkit.apiserver import start_test_server

pytestmark = pytest.mark.integration


def _node(name: str, address: str = "10.0.0.5") -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
                         "annotations": {"shoal.io/underlay-ip": address}},
            "spec": {},
            "status": {"addresses": [{"type": "InternalIP", "address": address},
                                     {"type": "Hostname", "address": name}]}}


@pytest.fixture
def joined(api, tmp_path):
    creds = ensure_credentials(api.url, api.join_token, "node-a", tmp_path / "a")
    c = creds.client()
    c.create("nodes", _node("node-a"))
    return c


def refused(fn, field: str, words: str) -> None:
    with pytest.raises(errors.Forbidden) as e:
        fn()
    assert words in e.value.message, e.value.message
    assert [c.field for c in e.value.causes] == [field], e.value.causes


def test_a_node_writes_its_node_as_a_kubelet_may_and_nothing_more(api, joined):
    node, admin = joined, api.client()
    before = admin.get("nodes", "node-a")["metadata"]["resourceVersion"]
    refused(lambda: node.patch("nodes", "node-a", {"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
            "metadata.labels", "is not allowed to modify labels: node-role.kubernetes.io/control-plane")
    refused(lambda: node.patch("nodes", "node-a", {"metadata": {"labels": {"node-restriction.kubernetes.io/gpu": "1"}}}),
            "metadata.labels", "node-restriction.kubernetes.io/gpu")
    refused(lambda: node.patch("nodes", "node-a", {"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
            "spec.taints", 'node "node-a" is not allowed to modify taints')
    refused(lambda: node.patch("nodes", "node-a", {"spec": {"unschedulable": True}}),
            "spec.unschedulable", "not allowed to modify spec.unschedulable")
    refused(lambda: node.patch("nodes", "node-a", {"metadata": {"annotations": {"shoal.io/underlay-ip": "10.9.9.9"}}}),
            "metadata.annotations[shoal.io/underlay-ip]", "must be an address the node registered")
    refused(lambda: node.patch("nodes", "node-a", {"status": {"addresses": [{"type": "InternalIP",
                                                                             "address": "10.0.0.99"}]}},
                               subresource="status"),
            "status.addresses", "not allowed to change its InternalIP addresses")
    refused(lambda: node.patch("nodes", "node-a", {"status": {"addresses": [
        {"type": "InternalIP", "address": "10.0.0.5"}, {"type": "ExternalIP", "address": "203.0.113.7"}]}},
        subresource="status"), "status.addresses", "ExternalIP")
    with pytest.raises(errors.Forbidden):                      # never another node's, never delete its own
        node.create("nodes", _node("node-b"))
    with pytest.raises(errors.Forbidden):
        node.delete("nodes", "node-a")
    assert admin.get("nodes", "node-a")["metadata"]["resourceVersion"] == before     # nothing changed
    # what a kubelet may do
    node.patch("nodes", "node-a", {"metadata": {"labels": {"topology.kubernetes.io/zone": "z1", "team": "blue",
                                                           "foo.node.kubernetes.io/disk": "ssd"}}})
    node.patch("nodes", "node-a", {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
               subresource="status")
    # the address it joined from (the TCP peer of its join, 127.0.0.1 here) is its to move to
    assert api.store.node_endpoint("node-a").address == "127.0.0.1"
    node.patch("nodes", "node-a", {"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}},
               subresource="status")
    # the admin cordons, taints and moves it: all kept by the node's later writes
    admin.patch("nodes", "node-a", {"spec": {"unschedulable": True, "taints": [{"key": "k", "effect": "NoSchedule"}]},
                                    "metadata": {"labels": {"node-role.kubernetes.io/worker": ""}}})
    admin.patch("nodes", "node-a", {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.6"}]}},
                subresource="status")
    node.patch("nodes", "node-a", {"metadata": {"annotations": {"shoal.io/underlay-ip": "10.0.0.6"}}})
    got = admin.get("nodes", "node-a")
    assert got["spec"]["unschedulable"] is True and got["metadata"]["labels"]["node-role.kubernetes.io/worker"] == ""
    refused(lambda: node.patch("nodes", "node-a", {"spec": {"unschedulable": False}}), "spec.unschedulable",
            "unschedulable")


def test_a_node_registering_with_an_admins_label_is_refused(api, tmp_path):
    creds = ensure_credentials(api.url, api.join_token, "node-c", tmp_path / "c")
    body = _node("node-c")
    body["metadata"]["labels"]["node-role.kubernetes.io/master"] = ""
    refused(lambda: creds.client().create("nodes", body), "metadata.labels",
            'node "node-c" is not allowed to set the following labels: node-role.kubernetes.io/master')
    with pytest.raises(errors.NotFound):
        api.client().get("nodes", "node-c")


def _pod(name: str, node: str | None) -> dict:
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
         "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
    return p


def _event(name: str, kind: str, obj: str, namespace: str | None = "default", message: str = "Started") -> dict:
    ref = {"kind": kind, "name": obj, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
            "involvedObject": ref, "reason": "Started", "message": message, "type": "Normal",
            "source": {"component": "shoal-agent", "host": "node-a"}}


def test_a_nodes_events_are_about_what_is_bound_to_it(api, joined):
    node, admin = joined, api.client()
    for name, where in (("mine", "node-a"), ("theirs", "node-b")):
        admin.create("pods", _pod(name, where), namespace="default")
        admin.bind(name, "default", where)
    admin.create("deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
                 "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}, namespace="default")
    node.create("events", _event("e1", "Pod", "mine"), namespace="default")
    node.create("events", _event("e2", "Node", "node-a", namespace=None), namespace="default")
    node.patch("events", "e1", {"count": 2}, namespace="default")
    for ev, words in ((_event("e3", "Pod", "theirs"), "no relationship found between node 'node-a' and pod "
                                                      "default/theirs"),
                      (_event("e4", "Node", "node-b", namespace=None), "only about its own Node"),
                      (_event("e5", "Deployment", "web"), "not a 'Deployment'")):
        refused(lambda ev=ev: node.create("events", ev, namespace="default"), "involvedObject", words)
    admin.create("events", _event("e6", "Pod", "theirs"), namespace="default")       # an admin's: any subject
    refused(lambda: node.patch("events", "e6", {"count": 2}, namespace="default"), "involvedObject", "theirs")
    with pytest.raises(errors.Invalid) as e:
        node.create("events", _event("e7", "Pod", "mine", message="x" * 1025), namespace="default")
    assert e.value.causes[0].field == "message"
    # a pod deleted a moment ago is still its own (the recorder writes a little after the fact)
    admin.delete("pods", "mine", "default", grace_period_seconds=0)
    node.create("events", _event("e8", "Pod", "mine", message="Killing"), namespace="default")
    names = {e["metadata"]["name"] for e in admin.list("events", "default")["items"]}
    assert names == {"e1", "e2", "e6", "e8"}


def test_a_nodes_events_are_rate_limited_and_admins_are_not(tmp_path):
    srv = start_test_server(tmp_path, node_event_qps=0.5, node_event_burst=3)
    try:
        creds = ensure_credentials(srv.url, srv.join_token, "node-a", tmp_path / "a")
        node = creds.client()
        node.create("nodes", _node("node-a"))
        for i in range(3):
            node.create("events", _event(f"n{i}", "Node", "node-a", namespace=None), namespace="default")
        r = httpx.post(srv.url + "/api/v1/namespaces/default/events", headers={"Authorization": f"Bearer {creds.token}"},
                       content=json.dumps(_event("n3", "Node", "node-a", namespace=None)))
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert r.json()["reason"] == "TooManyRequests" and r.json()["message"] == \
            "Too many requests: limit reached on type User for key system:node:node-a"
        admin = srv.client()
        for i in range(10):
            admin.create("events", _event(f"a{i}", "Node", "node-a", namespace=None), namespace="default")
        assert len(admin.list("events", "default")["items"]) == 13
    finally:
        srv.stop()
