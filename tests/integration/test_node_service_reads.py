"""A node credential lists and watches Services and EndpointSlices of every namespace on a real
API server — what its service proxy's informers do — and may not write them."""
from __future__ import annotations

import pytest

from shoal.agent.join import ensure_credentials
from shoal.machinery.api import errors
from shoal.machinery.control.informer import Informer
from shoal.testkit.apiserver import wait_for

pytestmark = pytest.mark.integration


def service(name, ns="default"):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}], "selector": {"app": name}}}


def endpointslice(name, ns="default", svc="web"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}]}


def test_a_node_reads_every_services_and_endpointslices_and_writes_none(api, tmp_path):
    admin = api.client()
    admin.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    admin.create("services", service("web"))
    admin.create("endpointslices", endpointslice("web-a"))
    node = ensure_credentials(api.url, api.join_token, "node-a", tmp_path / "agent").client()

    assert node.get("services", "web", "default")["spec"]["clusterIP"]
    assert [s["metadata"]["name"] for s in node.list("endpointslices", all_namespaces=True)["items"]] == ["web-a"]
    # the proxy's informers: list + watch of all namespaces, then changes as they come
    infs = [Informer(node, kind, watch_timeout=5, name=f"test-{kind}") for kind in ("services", "endpointslices")]
    for inf in infs:
        inf.start()
    try:
        assert all(inf.wait_for_sync(10) for inf in infs)
        admin.create("services", service("api", "team"))
        admin.create("endpointslices", endpointslice("api-a", "team", "api"))
        wait_for(lambda: infs[0].get("team/api") and infs[1].get("team/api-a"), timeout=10,
                 what="the node's informers see the new Service and EndpointSlice")
    finally:
        for inf in infs:
            inf.stop()

    for call in (lambda: node.create("services", service("mine")),
                 lambda: node.patch("services", "web", {"metadata": {"labels": {"x": "y"}}}, "default"),
                 lambda: node.delete("services", "web", "default"),
                 lambda: node.create("endpointslices", endpointslice("mine")),
                 lambda: node.delete("endpointslices", "web-a", "default"),
                 lambda: node.list("endpoints", all_namespaces=True)):
        with pytest.raises(errors.Forbidden, match='User "system:node:node-a" cannot'):
            call()
    assert [s["metadata"]["name"] for s in admin.list("services", "default")["items"]] == ["web"]
