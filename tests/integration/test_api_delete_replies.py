"""What a DELETE answers, as Kubernetes (handlers/delete.go, the registry's ReturnDeletedObject):
a removed Pod or Service answers its last value, any other removed kind a Success Status;
an object left in place (finalizers, graceful deletion, a foreground or orphan cascade)
answers itself with 200, or 202 Accepted when the legacy `orphanDependents: false` asked
for its dependents to go; and `shoal delete --cascade=... / --dry-run=server` on a real
server."""
from __future__ import annotations

import json

import httpx
import pytest

from shoal.testkit.apiserver import wait_for

from cli_helpers import shoal


def http(api, method: str, path: str, body=None, **params) -> httpx.Response:
    return httpx.request(method, api.url + path, params=params,
                         content=json.dumps(body) if body is not None else None,
                         headers={"Authorization": f"Bearer {api.admin_token}"}, timeout=30)


def configmap(name: str, finalizers: list[str] | None = None) -> dict:
    md: dict = {"name": name}
    if finalizers:
        md["finalizers"] = finalizers
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": {"k": "v"}}


def deployment_with_replicaset(c) -> tuple[dict, dict]:
    d = c.create("deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}, namespace="default")
    rs = c.create("replicasets", {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "labels": {"app": "web"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                          "uid": d["metadata"]["uid"], "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}, namespace="default")
    return d, rs


def test_removed_pods_and_services_answer_themselves_other_kinds_a_status(api):
    c = api.client()
    c.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                      "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}, namespace="default")
    r = http(api, "DELETE", "/api/v1/namespaces/default/pods/p")
    assert r.status_code == 200 and r.json()["kind"] == "Pod" and r.json()["metadata"]["name"] == "p"
    c.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                          "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}, namespace="default")
    r = http(api, "DELETE", "/api/v1/namespaces/default/services/s")
    assert r.status_code == 200 and r.json()["kind"] == "Service" and r.json()["spec"]["ports"][0]["port"] == 80
    cm = c.create("configmaps", configmap("gone"), namespace="default")
    r = http(api, "DELETE", "/api/v1/namespaces/default/configmaps/gone")
    assert r.status_code == 200 and r.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": "gone", "kind": "configmaps", "uid": cm["metadata"]["uid"]}}


def test_an_object_left_in_place_answers_itself_and_202_for_orphan_dependents_false(api):
    c = api.client()
    c.create("configmaps", configmap("held", ["example.com/hold"]), namespace="default")
    r = http(api, "DELETE", "/api/v1/namespaces/default/configmaps/held")
    assert r.status_code == 200 and r.json()["kind"] == "ConfigMap"
    assert r.json()["metadata"]["deletionTimestamp"] and r.json()["metadata"]["finalizers"] == ["example.com/hold"]
    # orphanDependents: false (the legacy cascading flag), in the body or the query, and still there: 202
    c.create("configmaps", configmap("held2", ["example.com/hold"]), namespace="default")
    r = http(api, "DELETE", "/api/v1/namespaces/default/configmaps/held2",
             {"kind": "DeleteOptions", "apiVersion": "v1", "orphanDependents": False})
    assert r.status_code == 202 and r.json()["metadata"]["name"] == "held2"
    r = http(api, "DELETE", "/api/v1/namespaces/default/configmaps/held2", orphanDependents="false")
    assert r.status_code == 202
    r = http(api, "DELETE", "/api/v1/namespaces/default/configmaps/held2", orphanDependents="true")
    assert r.status_code == 200
    # removed at once: a Success Status with 200, whatever the flag
    c.create("configmaps", configmap("free"), namespace="default")
    r = http(api, "DELETE", "/api/v1/namespaces/default/configmaps/free", orphanDependents="false")
    assert r.status_code == 200 and r.json()["status"] == "Success"
    # a foreground cascade leaves the owner in place: 200 and the object (Kubernetes gives
    # 202 only for orphanDependents: false)
    d, rs = deployment_with_replicaset(c)
    r = http(api, "DELETE", "/apis/apps/v1/namespaces/default/deployments/web",
             {"propagationPolicy": "Foreground", "dryRun": ["All"]})
    assert r.status_code == 200 and r.json()["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert c.get("deployments", "web", "default")["metadata"]["resourceVersion"] == d["metadata"]["resourceVersion"]


def test_the_python_clients_typed_deletes(tmp_path):
    """delete_namespaced_service is typed V1Service (it failed on a Status); a removed ConfigMap
    answers a Success Status."""
    pytest.importorskip("kubernetes")
    from kubernetes import client as k8s, config as k8s_config
    from shoal.testkit.apiserver import start_test_server
    srv = start_test_server(tmp_path, tls=True)
    try:
        with k8s_config.new_client_from_config(config_file=str(srv.kubeconfig)) as ac:
            core = k8s.CoreV1Api(ac)
            core.create_namespaced_service("default", k8s.V1Service(
                metadata=k8s.V1ObjectMeta(name="s"),
                spec=k8s.V1ServiceSpec(selector={"app": "x"}, ports=[k8s.V1ServicePort(port=80)])))
            out = core.delete_namespaced_service("s", "default")
            assert isinstance(out, k8s.V1Service) and out.metadata.name == "s" and out.spec.ports[0].port == 80
            core.create_namespaced_config_map("default", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="c")))
            out = core.delete_namespaced_config_map("c", "default")
            # typed `object` by the client (Kubernetes' document allows a ConfigMap or a Status here)
            assert out["kind"] == "Status" and out["status"] == "Success" and out["details"]["name"] == "c"
    finally:
        srv.stop()


def test_shoal_delete_cascade_orphan_foreground_and_server_dry_run(api):
    c = api.client()
    d, rs = deployment_with_replicaset(c)
    res = shoal(api, "delete", "deployment", "web", "--dry-run=server")
    assert (res.rc, res.out) == (0, 'deployment.apps "web" deleted (server dry run)\n'), res.err
    assert c.get("deployments", "web", "default")["metadata"]["resourceVersion"] == d["metadata"]["resourceVersion"]
    res = shoal(api, "delete", "deployment", "web", "--cascade=orphan", "--timeout=30s")
    assert (res.rc, res.out) == (0, 'deployment.apps "web" deleted\n'), res.err
    kept = c.get("replicasets", "web-1", "default")
    assert kept["metadata"]["uid"] == rs["metadata"]["uid"] and not kept["metadata"].get("ownerReferences")
    d, rs = deployment_with_replicaset_again(c, kept)
    res = shoal(api, "delete", "deployment", "web", "--cascade=foreground", "--timeout=30s")
    assert res.rc == 0, res.err
    # foreground: the ReplicaSet went first, and the Deployment waited for it (and is gone now)
    wait_for(lambda: not c.list("replicasets", "default")["items"], what="the ReplicaSet deleted in the foreground")
    assert not c.list("deployments", "default")["items"]


def deployment_with_replicaset_again(c, orphaned: dict) -> tuple[dict, dict]:
    c.delete("replicasets", orphaned["metadata"]["name"], "default")
    wait_for(lambda: not c.list("replicasets", "default")["items"], what="the orphan removed")
    return deployment_with_replicaset(c)
