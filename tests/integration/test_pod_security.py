"""Pod Security admission against the real API server: enforce refuses, warn answers with
Warning headers, workloads are only warned about, bad namespace labels are refused."""
from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

PRIV = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "priv"},
        "spec": {"containers": [{"name": "app", "image": "busybox", "securityContext": {"privileged": True}}]}}
RESTRICTED_OK = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ok"},
                 "spec": {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                          "containers": [{"name": "app", "image": "busybox", "securityContext": {
                              "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}


def ns(api, name: str, labels: dict) -> None:
    api.client().create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": name, "labels": labels}})


@pytest.fixture
def http(api):
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.admin_token}"}) as c:
        yield c


def test_enforce_refuses_and_changes_nothing(api, http):
    ns(api, "strict", {"pod-security.kubernetes.io/enforce": "restricted"})
    r = http.post("/api/v1/namespaces/strict/pods", json=PRIV)
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["reason"] == "Forbidden"
    assert body["message"].startswith('pods "priv" is forbidden: violates PodSecurity "restricted:latest": '
                                      'privileged (container "app" must not set securityContext.privileged=true)')
    assert http.get("/api/v1/namespaces/strict/pods/priv").status_code == 404
    assert http.post("/api/v1/namespaces/strict/pods", json=RESTRICTED_OK).status_code == 201
    # a patch that would make the stored pod violate is refused too
    r = http.patch("/api/v1/namespaces/strict/pods/ok", json={"spec": {"containers": [
        {"name": "app", "securityContext": {"allowPrivilegeEscalation": True}}]}},
        headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert r.status_code == 403 and "allowPrivilegeEscalation != false" in r.json()["message"], r.text


def test_warn_and_workloads_get_warning_headers(api, http):
    ns(api, "warned", {"pod-security.kubernetes.io/warn": "baseline"})
    r = http.post("/api/v1/namespaces/warned/pods", json=PRIV)
    assert r.status_code == 201
    (w,) = r.headers.get_list("warning")
    assert w.startswith('299 - "would violate PodSecurity \\"baseline:latest\\": privileged')
    ns(api, "strict2", {"pod-security.kubernetes.io/enforce": "baseline"})
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
              "spec": {"selector": {"matchLabels": {"a": "b"}},
                       "template": {"metadata": {"labels": {"a": "b"}}, "spec": PRIV["spec"]}}}
    r = http.post("/apis/apps/v1/namespaces/strict2/deployments", json=deploy)
    assert r.status_code == 201 and "would violate PodSecurity" in r.headers["warning"]
    r = http.post("/api/v1/namespaces/default/pods", json=PRIV)
    assert r.status_code == 201 and "warning" not in r.headers


def test_bad_namespace_label_is_refused(http):
    r = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "bad", "labels": {"pod-security.kubernetes.io/enforce": "strict"}}})
    assert r.status_code == 422 and "pod-security.kubernetes.io/enforce" in r.json()["message"]
    assert http.get("/api/v1/namespaces/bad").status_code == 404


def test_cluster_default_level(tmp_path):
    from shoal.testkit.apiserver import start_test_server
    srv = start_test_server(tmp_path, pod_security="baseline")
    try:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.admin_token}"}) as http:
            r = http.post("/api/v1/namespaces/default/pods", json=PRIV)
            assert r.status_code == 403 and 'violates PodSecurity "baseline:latest"' in r.json()["message"]
    finally:
        srv.stop()
