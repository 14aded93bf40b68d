"""Strategic merge patches of the service kinds (apiserver.patch): a Service's `spec.ports`
merge by `port` (kubectl apply's `$patch: delete` and `$setElementOrder/ports`), an
EndpointSlice's `ports` are atomic, and a container's `ports` still merge by `containerPort`."""
from __future__ import annotations

import pytest

from shoal.apiserver.patch import strategic_merge_patch

pytestmark = pytest.mark.unit

SVC = {"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080},
                                              {"name": "metrics", "port": 9090, "nodePort": 30090}]}}


def test_service_ports_merge_by_port():
    # what kubectl apply sends when the manifest drops the metrics port and changes type
    patch = {"spec": {"$setElementOrder/ports": [{"port": 80}], "ports": [{"$patch": "delete", "port": 9090}],
                      "type": "ClusterIP"}}
    assert strategic_merge_patch(SVC, patch)["spec"] == {
        "type": "ClusterIP", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}
    added = strategic_merge_patch(SVC, {"spec": {"ports": [{"name": "admin", "port": 8081}]}})
    assert [p["port"] for p in added["spec"]["ports"]] == [80, 9090, 8081]
    changed = strategic_merge_patch(SVC, {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}})
    assert changed["spec"]["ports"][0] == {"name": "http", "port": 80, "nodePort": 30080, "targetPort": 8080}


def test_endpointslice_ports_are_replaced_and_container_ports_still_merge_by_container_port():
    es = {"ports": [{"name": "a", "port": 80}], "endpoints": [{"addresses": ["10.0.0.1"]}]}
    assert strategic_merge_patch(es, {"ports": [{"name": "b", "port": 81}]})["ports"] == [{"name": "b", "port": 81}]
    pod = {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}]}}
    out = strategic_merge_patch(pod, {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 81}]}]}})
    assert out["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "name": "http"}, {"containerPort": 81}]
    deploy = {"spec": {"template": {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}}}}
    out = strategic_merge_patch(deploy, {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "ports": [{"$patch": "delete", "containerPort": 80}]}]}}}})
    assert out["spec"]["template"]["spec"]["containers"][0]["ports"] == []
