"""dryRun=All on every mutating verb and subresource, against the real API server: the answer
is what the real call would answer, the call is authorized, admitted and validated as the
real one, and nothing is stored — no log row (so no watch event), no background work."""
import contextlib
import time

import httpx
import pytest

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
PODS = "/api/v1/namespaces/default/pods"


def deployment(name="web", replicas=2):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": "127.0.0.1:5000/web:v1"}]}}}}


def pod(name, node=None, labels=None, owner=None):
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"app": "x"}},
         "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
    if node:
        p["spec"]["nodeName"] = node
    if owner:
        p["metadata"]["ownerReferences"] = [owner]
    return p


@pytest.fixture
def http(api):
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.admin_token}"},
                      timeout=30) as h:
        yield h


@contextlib.contextmanager
def nothing_written(api, settle=0.3):
    """No write reached the revision log (the source of every watch event) during the block,
    nor in `settle` seconds after it (the garbage collector's thread)."""
    before = api.store.current_revision()
    yield
    time.sleep(settle)
    after = api.store.current_revision()
    assert after == before, [(e.type, e.key) for e in api.store.events_after(before)]


def test_create(api, http):
    with nothing_written(api):
        r = http.post(DEPLOYMENTS, params={"dryRun": "All", "fieldManager": "kubectl-create"}, json=deployment())
        assert r.status_code == 201, r.text
        out = r.json()
        # What the real create answers (defaults, uid, creationTimestamp, generation) but no
        # resourceVersion: none was assigned (as Kubernetes' dry-run create).
        assert out["metadata"]["uid"] and out["metadata"]["generation"] == 1
        assert "resourceVersion" not in out["metadata"]
        assert out["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
        gen = http.post(PODS, params={"dryRun": "All"},
                        json={**pod(""), "metadata": {"generateName": "web-", "labels": {"app": "x"}}})
        assert gen.status_code == 201 and gen.json()["metadata"]["name"].startswith("web-")
    assert http.get(f"{DEPLOYMENTS}/web").status_code == 404


def test_create_is_validated_and_checked_as_the_real_one(api, http):
    api.client().create("deploy", deployment())
    with nothing_written(api):
        r = http.post(DEPLOYMENTS, params={"dryRun": "All"}, json=deployment())
        assert r.status_code == 409 and r.json()["reason"] == "AlreadyExists"
        bad = deployment("other", replicas=-1)
        r = http.post(DEPLOYMENTS, params={"dryRun": "All"}, json=bad)
        assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "spec.replicas"
        r = http.post("/apis/apps/v1/namespaces/nowhere/deployments", params={"dryRun": "All"},
                      json=deployment("x"))
        assert r.status_code == 404


def test_update_keeps_the_stored_resource_version(api, http):
    c = api.client()
    d = c.create("deploy", deployment())
    rv = d["metadata"]["resourceVersion"]
    d["spec"]["replicas"] = 5
    with nothing_written(api):
        r = http.put(f"{DEPLOYMENTS}/web", params={"dryRun": "All"}, json=d)
        assert r.status_code == 200, r.text
        assert r.json()["spec"]["replicas"] == 5 and r.json()["metadata"]["generation"] == 2
        assert r.json()["metadata"]["resourceVersion"] == rv        # not bumped: kubectl diff shows no such line
        stale = dict(d, metadata=dict(d["metadata"], resourceVersion=str(int(rv) - 1)))
        assert http.put(f"{DEPLOYMENTS}/web", params={"dryRun": "All"}, json=stale).status_code == 409
    stored = c.get("deploy", "web")
    assert stored["spec"]["replicas"] == 2 and stored["metadata"]["resourceVersion"] == rv


@pytest.mark.parametrize("ctype,body", [
    ("application/merge-patch+json", {"spec": {"replicas": 4}}),
    ("application/strategic-merge-patch+json", {"spec": {"replicas": 4}}),
    ("application/json-patch+json", [{"op": "replace", "path": "/spec/replicas", "value": 4}]),
    ("application/apply-patch+yaml", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                                      "spec": {"replicas": 4}}),
])
def test_patch_every_type(api, http, ctype, body):
    c = api.client()
    rv = c.create("deploy", deployment())["metadata"]["resourceVersion"]
    params = {"dryRun": "All", "fieldManager": "t"}
    if ctype == "application/apply-patch+yaml":
        params["force"] = "true"        # spec.replicas belongs to the creator's manager
    with nothing_written(api):
        r = http.patch(f"{DEPLOYMENTS}/web", params=params, json=body, headers={"Content-Type": ctype})
        assert r.status_code == 200, r.text
        assert r.json()["spec"]["replicas"] == 4 and r.json()["metadata"]["resourceVersion"] == rv
    assert c.get("deploy", "web")["spec"]["replicas"] == 2


def test_apply_that_would_create(api, http):
    with nothing_written(api):
        r = http.patch(f"{DEPLOYMENTS}/web", params={"dryRun": "All", "fieldManager": "kubectl"},
                       json=deployment(), headers={"Content-Type": "application/apply-patch+yaml"})
        assert r.status_code in (200, 201), r.text
        assert r.json()["metadata"]["name"] == "web" and r.json()["metadata"]["uid"]
    assert http.get(f"{DEPLOYMENTS}/web").status_code == 404


def test_kubectl_diff_of_an_unchanged_object_shows_nothing(api, http):
    """kubectl diff: a dry-run strategic patch pinning the resourceVersion; live and merged
    must be equal when the manifest changes nothing."""
    c = api.client()
    c.create("deploy", deployment())
    live = http.get(f"{DEPLOYMENTS}/web").json()
    patch = {"metadata": {"resourceVersion": live["metadata"]["resourceVersion"]}, "spec": {"replicas": 2}}
    with nothing_written(api):
        r = http.patch(f"{DEPLOYMENTS}/web", params={"dryRun": "All", "fieldManager": "kubectl-client-side-apply"},
                       json=patch, headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert r.status_code == 200 and r.json() == live


def test_status_subresource(api, http):
    c = api.client()
    d = c.create("deploy", deployment())
    d["status"] = {"replicas": 2, "observedGeneration": 1}
    with nothing_written(api):
        r = http.put(f"{DEPLOYMENTS}/web/status", params={"dryRun": "All"}, json=d)
        assert r.status_code == 200 and r.json()["status"]["replicas"] == 2
        r = http.patch(f"{DEPLOYMENTS}/web/status", params={"dryRun": "All"}, json={"status": {"replicas": 1}},
                       headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200 and r.json()["status"]["replicas"] == 1
        r = http.patch(f"{DEPLOYMENTS}/web/status", params={"dryRun": "All"}, json={"status": {"replicas": -1}},
                       headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 422
    assert "status" not in c.get("deploy", "web") or not c.get("deploy", "web")["status"].get("replicas")


def test_scale_put_and_patch(api, http):
    """kubectl scale --dry-run=server: PATCH .../scale?dryRun=All; the reply is a Scale."""
    c = api.client()
    rv = c.create("deploy", deployment())["metadata"]["resourceVersion"]
    with nothing_written(api):
        r = http.patch(f"{DEPLOYMENTS}/web/scale", params={"dryRun": "All"}, json={"spec": {"replicas": 3}},
                       headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200 and r.json()["kind"] == "Scale" and r.json()["spec"]["replicas"] == 3
        assert r.json()["metadata"]["resourceVersion"] == rv
        scale = http.get(f"{DEPLOYMENTS}/web/scale").json()
        scale["spec"]["replicas"] = 7
        r = http.put(f"{DEPLOYMENTS}/web/scale", params={"dryRun": "All"}, json=scale)
        assert r.status_code == 200 and r.json()["spec"]["replicas"] == 7
    assert c.get("deploy", "web")["spec"]["replicas"] == 2


def test_binding(api, http):
    c = api.client()
    c.create("pods", pod("p"))
    with nothing_written(api):
        r = http.post(f"{PODS}/p/binding", params={"dryRun": "All"},
                      json={"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
                            "target": {"kind": "Node", "name": "n1"}})
        assert r.status_code == 201 and r.json()["status"] == "Success"
    assert "nodeName" not in c.get("pods", "p")["spec"]


def test_delete_as_kubectl_sends_it(api, http):
    """kubectl delete --dry-run=server: the DeleteOptions body carries dryRun."""
    c = api.client()
    d = c.create("deploy", deployment())
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "web-1", "labels": {"app": "web"},
                       "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                            "uid": d["metadata"]["uid"], "controller": True}]},
          "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                   "template": {"metadata": {"labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "web", "image": "busybox:1"}]}}}}
    c.create("rs", rs)
    with nothing_written(api, settle=1.0):       # long enough for a cascade to have started
        r = http.request("DELETE", f"{DEPLOYMENTS}/web", headers={"Content-Type": "application/json"},
                         content=b'{"propagationPolicy":"Background","dryRun":["All"]}')
        assert r.status_code == 200, r.text
        assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                            "details": {"name": "web", "group": "apps", "kind": "deployments",
                                        "uid": d["metadata"]["uid"]}}
        for policy, finalizer in (("Orphan", "orphan"), ("Foreground", "foregroundDeletion")):
            r = http.request("DELETE", f"{DEPLOYMENTS}/web", json={"propagationPolicy": policy, "dryRun": ["All"]})
            assert r.status_code == 200, r.text
            assert finalizer in r.json()["metadata"]["finalizers"] and r.json()["metadata"]["deletionTimestamp"]
    assert c.get("deploy", "web")["metadata"].get("finalizers") is None
    assert c.get("rs", "web-1")["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]


def test_delete_with_dry_run_in_the_query(api, http):
    """The Python client's form: ?dryRun=All, and a graceful pod deletion answered as marked."""
    c = api.client()
    c.create("pods", pod("p", node="n1"))
    with nothing_written(api):
        r = http.delete(f"{PODS}/p", params={"dryRun": "All"})
        assert r.status_code == 200 and r.json()["metadata"]["deletionTimestamp"]
        assert r.json()["metadata"]["deletionGracePeriodSeconds"] == 30
        r = http.delete(f"{PODS}/p", params={"dryRun": "All", "gracePeriodSeconds": "0"})
        assert r.status_code == 200 and r.json()["kind"] == "Pod"
    assert "deletionTimestamp" not in c.get("pods", "p")["metadata"]


def test_delete_of_a_namespace(api, http):
    c = api.client()
    c.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    c.create("pods", pod("p"), namespace="team")
    with nothing_written(api, settle=1.0):
        r = http.request("DELETE", "/api/v1/namespaces/team", json={"dryRun": ["All"]})
        assert r.status_code == 200 and r.json()["status"]["phase"] == "Terminating"
    assert c.get("namespaces", "team")["status"]["phase"] == "Active"
    assert c.get("pods", "p", namespace="team")


def test_delete_collection(api, http):
    c = api.client()
    for i in range(3):
        c.create("pods", pod(f"p{i}", labels={"app": "a" if i < 2 else "b"}))
    with nothing_written(api):
        r = http.request("DELETE", PODS, params={"labelSelector": "app=a"}, json={"dryRun": ["All"]})
        assert r.status_code == 200, r.text
        assert r.json()["kind"] == "PodList" and [p["metadata"]["name"] for p in r.json()["items"]] == ["p0", "p1"]
    assert len(c.list("pods")["items"]) == 3


def test_a_node_may_not_do_in_a_dry_run_what_it_may_not_do(api, http):
    """Authorization and admission run as for the real call."""
    from shoal.apiserver import auth
    c = api.client()
    c.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    token = auth.issue_node_credential(api.store, "n1")
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}) as node, nothing_written(api):
        r = node.post(DEPLOYMENTS, params={"dryRun": "All"}, json=deployment())
        assert r.status_code == 403
        r = node.patch("/api/v1/nodes/n1", params={"dryRun": "All"}, json={"spec": {"podCIDR": "10.0.0.0/24"}},
                       headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 403 and "podCIDR" in r.json()["message"]
        r = node.patch("/api/v1/nodes/n1", params={"dryRun": "All"}, json={"metadata": {"labels": {"a": "b"}}},
                       headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200 and r.json()["metadata"]["labels"] == {"a": "b"}


@pytest.mark.parametrize("method,path,options", [
    ("POST", DEPLOYMENTS, "CreateOptions"),
    ("PUT", f"{DEPLOYMENTS}/web", "UpdateOptions"),
    ("PATCH", f"{DEPLOYMENTS}/web", "PatchOptions"),
    ("DELETE", f"{DEPLOYMENTS}/web", "DeleteOptions"),
    ("DELETE", DEPLOYMENTS, "DeleteOptions"),
])
def test_an_unknown_dry_run_value_is_refused(api, http, method, path, options):
    c = api.client()
    d = c.create("deploy", deployment())
    body = d if method != "PATCH" else {"spec": {"replicas": 3}}
    with nothing_written(api):
        r = http.request(method, path, params={"dryRun": "Yes"}, json=body if method != "DELETE" else None,
                         headers={"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {})
    assert r.status_code == 422, r.text
    assert r.json()["message"] == (f'{options}.meta.k8s.io "" is invalid: dryRun: Unsupported value: ["Yes"]: '
                                   f'supported values: "All"')
    # and in a DeleteOptions body
    if method == "DELETE":
        r = http.request("DELETE", path, json={"dryRun": ["Some"]})
        assert r.status_code == 422 and "dryRun" in r.json()["message"]
    assert c.get("deploy", "web")


def test_the_official_client(api):
    """kubernetes.client passes dry_run="All" in the query, for deletes too."""
    k8s = pytest.importorskip("kubernetes.client")
    cfg = k8s.Configuration()
    cfg.host = api.url
    cfg.api_key = {"authorization": api.admin_token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    api.client().create("deploy", deployment())
    with k8s.ApiClient(cfg) as ac, nothing_written(api):
        apps = k8s.AppsV1Api(ac)
        out = apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 9}}, dry_run="All")
        assert out.spec.replicas == 9
        apps.delete_namespaced_deployment("web", "default", dry_run="All")
        core = k8s.CoreV1Api(ac)
        core.delete_collection_namespaced_pod("default", dry_run="All")
    assert api.client().get("deploy", "web")["spec"]["replicas"] == 2
