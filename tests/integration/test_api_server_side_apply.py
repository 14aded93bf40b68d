"""Server-side apply and managedFields against the real API server (apiserver/managedfields.py).

Requests go over HTTP as clients send them (httpx, so that the status code, the query
parameters and the User-Agent are the test's to choose): `application/apply-patch+yaml` with a
`fieldManager`, and the ordinary verbs whose writes are recorded as Update entries."""
from __future__ import annotations

import copy
import json
import time

import httpx
import pytest

APPLY = "application/apply-patch+yaml"
PATH = "/apis/apps/v1/namespaces/default/deployments"


def deployment(name: str = "web", replicas: int | None = 1, image: str = "nginx:1.27", **labels: str) -> dict:
    d = {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": name, "labels": {"app": name, **labels}},
         "spec": {"selector": {"matchLabels": {"app": name}},
                  "template": {"metadata": {"labels": {"app": name}},
                               "spec": {"containers": [{"name": "web", "image": image}]}}}}
    if replicas is not None:
        d["spec"]["replicas"] = replicas
    return d


class Http:
    def __init__(self, srv):
        self.c = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.admin_token}"}, timeout=30)

    def apply(self, obj: dict, manager: str | None, *, force: bool = False, path: str = "",
              name: str | None = None, dry_run: bool = False) -> httpx.Response:
        params = {}
        if manager is not None:
            params["fieldManager"] = manager
        if force:
            params["force"] = "true"
        if dry_run:
            params["dryRun"] = "All"
        return self.c.patch(f"{PATH}/{name or obj['metadata']['name']}{path}", params=params,
                            content=json.dumps(obj), headers={"Content-Type": APPLY})

    def patch(self, name: str, body, ct: str, *, manager: str | None = None, path: str = "",
              ua: str | None = None, **params) -> httpx.Response:
        if manager:
            params["fieldManager"] = manager
        headers = {"Content-Type": ct, **({"User-Agent": ua} if ua else {})}
        return self.c.patch(f"{PATH}/{name}{path}", params=params, content=json.dumps(body), headers=headers)

    def put(self, obj: dict, *, manager: str | None = None, path: str = "", ua: str | None = None) -> httpx.Response:
        return self.c.put(f"{PATH}/{obj['metadata']['name']}{path}",
                          params={"fieldManager": manager} if manager else {}, content=json.dumps(obj),
                          headers={"Content-Type": "application/json", **({"User-Agent": ua} if ua else {})})

    def post(self, obj: dict, *, manager: str | None = None, ua: str | None = None) -> httpx.Response:
        return self.c.post(PATH, params={"fieldManager": manager} if manager else {}, content=json.dumps(obj),
                           headers={"Content-Type": "application/json", **({"User-Agent": ua} if ua else {})})

    def get(self, name: str = "web") -> dict:
        r = self.c.get(f"{PATH}/{name}")
        r.raise_for_status()
        return r.json()


@pytest.fixture
def http(api):
    h = Http(api)
    yield h
    h.c.close()


def ok(r: httpx.Response, code: int = 200) -> dict:
    assert r.status_code == code, r.text
    return r.json()


def managers(obj: dict) -> dict[tuple, dict]:
    """(manager, operation, subresource) -> fieldsV1."""
    return {(e["manager"], e["operation"], e.get("subresource", "")): e["fieldsV1"]
            for e in obj["metadata"].get("managedFields", [])}


def owns(obj: dict, manager: str, *path: str, operation: str = "Apply", subresource: str = "") -> bool:
    node = managers(obj).get((manager, operation, subresource))
    for pe in path:
        if node is None:
            return False
        node = node.get(pe)
    return node is not None


CONTAINER = 'k:{"name":"web"}'


# ------------------------------------------------------------------------------ apply
def test_apply_creates_then_leaves_an_unchanged_object_alone(http):
    out = ok(http.apply(deployment(), "deployer"), 201)
    assert out["spec"]["replicas"] == 1 and out["spec"]["strategy"]["type"] == "RollingUpdate"    # defaulted
    [entry] = out["metadata"]["managedFields"]
    assert {k: entry[k] for k in ("manager", "operation", "apiVersion", "fieldsType")} == {
        "manager": "deployer", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1"}
    assert entry["fieldsV1"] == {
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {CONTAINER: {".": {}, "f:image": {}, "f:name": {}}}}}}}
    time.sleep(1.1)                                  # a second later: a changed time would show
    again = ok(http.apply(deployment(), "deployer"))
    assert again["metadata"]["resourceVersion"] == out["metadata"]["resourceVersion"]
    assert again["metadata"]["managedFields"] == out["metadata"]["managedFields"]


def test_two_managers_conflict_with_the_field_named_and_nothing_changes(http):
    ok(http.apply(deployment(), "deployer"), 201)
    before = http.get()
    r = http.apply(deployment(replicas=3), "autoscaler")
    assert r.status_code == 409, r.text
    assert r.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Apply failed with 1 conflict: conflict with "deployer": .spec.replicas', "reason": "Conflict",
        "details": {"causes": [{"reason": "FieldManagerConflict", "message": 'conflict with "deployer"',
                                "field": ".spec.replicas"}]}, "code": 409}
    assert http.get() == before
    # the same value is no conflict: the field is co-owned
    ok(http.apply(deployment(replicas=1), "autoscaler"))
    both = http.get()
    assert owns(both, "deployer", "f:spec", "f:replicas") and owns(both, "autoscaler", "f:spec", "f:replicas")


def test_force_takes_the_field_over(http):
    ok(http.apply(deployment(), "deployer"), 201)
    out = ok(http.apply(deployment(replicas=3), "autoscaler", force=True))
    assert out["spec"]["replicas"] == 3
    assert owns(out, "autoscaler", "f:spec", "f:replicas") and not owns(out, "deployer", "f:spec", "f:replicas")
    # the deployer, applying its old value again, now conflicts with the autoscaler
    r = http.apply(deployment(), "deployer")
    assert r.status_code == 409 and r.json()["details"]["causes"][0]["message"] == 'conflict with "autoscaler"'


def test_a_field_dropped_from_the_applied_configuration_is_removed(http):
    ok(http.apply(deployment(tier="front", team="a"), "deployer"), 201)
    out = ok(http.apply(deployment(team="a"), "deployer"))
    assert out["metadata"]["labels"] == {"app": "web", "team": "a"}
    assert not owns(out, "deployer", "f:metadata", "f:labels", "f:tier")
    assert out["metadata"]["generation"] == 1          # metadata and managedFields only: no new generation


def test_a_dropped_field_another_manager_also_owns_is_kept(http):
    ok(http.apply(deployment(tier="front"), "deployer"), 201)
    ok(http.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "labels": {"tier": "front"}}}, "labeller"))
    out = ok(http.apply(deployment(), "deployer"))
    assert out["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert owns(out, "labeller", "f:metadata", "f:labels", "f:tier")
    assert not owns(out, "deployer", "f:metadata", "f:labels", "f:tier")
    # and a field given up to someone else stays with its value when the applier drops it
    ok(http.apply(deployment(replicas=4), "autoscaler", force=True))
    out = ok(http.apply(deployment(replicas=None), "deployer"))
    assert out["spec"]["replicas"] == 4 and owns(out, "autoscaler", "f:spec", "f:replicas")


def test_an_update_after_an_apply_moves_ownership(http):
    ok(http.apply(deployment(), "deployer"), 201)
    out = ok(http.patch("web", {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}},
                        "application/strategic-merge-patch+json", manager="kubectl-set"))
    path = ("f:spec", "f:template", "f:spec", "f:containers", CONTAINER, "f:image")
    assert owns(out, "kubectl-set", *path, operation="Update")
    assert not owns(out, "deployer", *path) and owns(out, "deployer", *path[:-1], "f:name")
    r = http.apply(deployment(), "deployer")
    assert r.status_code == 409
    assert r.json()["message"] == ('Apply failed with 1 conflict: conflict with "kubectl-set" using apps/v1: '
                                   '.spec.template.spec.containers[name="web"].image')


def test_apply_without_a_field_manager_or_force_on_other_patches_is_refused(http):
    r = http.apply(deployment(), None)
    assert r.status_code == 422 and r.json()["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch')
    ok(http.apply(deployment(), "deployer"), 201)
    r = http.patch("web", {"spec": {"replicas": 2}}, "application/merge-patch+json", force="true")
    assert r.status_code == 422 and "force: Forbidden: may not be specified for non-apply patch" in r.text
    assert http.get()["spec"]["replicas"] == 1


@pytest.mark.parametrize("change,code,message", [
    (lambda d: d.update(kind="ReplicaSet"), 400, "invalid object type: apps/v1, Kind=ReplicaSet"),
    (lambda d: d["metadata"].update(managedFields=[]), 400, "metadata.managedFields must be nil"),
    (lambda d: d["spec"].update(replicass=2), 400, 'unknown field "spec.replicass"'),
    (lambda d: d["spec"]["template"]["spec"]["containers"].append({"name": "web", "image": "x"}), 400,
     'duplicate entries for key [name="web"]'),
    (lambda d: d["metadata"].update(name="other"), 400, "does not match the name on the URL"),
])
def test_configurations_that_cannot_be_applied_change_nothing(http, change, code, message):
    ok(http.apply(deployment(), "deployer"), 201)
    before = http.get()
    bad = deployment()
    change(bad)
    r = http.apply(bad, "deployer", name="web")
    assert r.status_code == code and message in r.json()["message"], r.text
    assert http.get() == before


def test_a_dry_run_apply_stores_nothing(http):
    out = ok(http.apply(deployment(), "deployer", dry_run=True), 201)
    assert out["metadata"]["managedFields"][0]["manager"] == "deployer"
    assert http.c.get(f"{PATH}/web").status_code == 404


def test_apply_to_the_status_owns_the_status_only(http):
    ok(http.apply(deployment(), "deployer"), 201)
    out = ok(http.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                         "spec": {"replicas": 9}, "status": {"observedGeneration": 1, "replicas": 1}},
                        "status-writer", path="/status"))
    assert out["status"] == {"observedGeneration": 1, "replicas": 1} and out["spec"]["replicas"] == 1
    assert managers(out)[("status-writer", "Apply", "status")] == {
        "f:status": {"f:observedGeneration": {}, "f:replicas": {}}}


# ------------------------------------------------------------------------------ updates
def test_writes_record_their_manager_by_field_manager_or_user_agent(http):
    out = ok(http.post(deployment(), ua="OpenAPI-Generator/31.0.0/python"), 201)
    [e] = out["metadata"]["managedFields"]
    assert (e["manager"], e["operation"]) == ("OpenAPI-Generator", "Update")
    assert e["fieldsV1"]["f:spec"]["f:strategy"] == {
        "f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}}, "f:type": {}}   # defaults too
    changed = copy.deepcopy(out)
    changed["spec"]["replicas"] = 2
    out = ok(http.put(changed, manager="editor"))
    assert owns(out, "editor", "f:spec", "f:replicas", operation="Update")
    assert not owns(out, "OpenAPI-Generator", "f:spec", "f:replicas", operation="Update")


def test_a_no_op_update_stays_a_no_op(http):
    out = ok(http.post(deployment(), manager="creator"), 201)
    time.sleep(1.1)
    same = ok(http.put(out, manager="someone-else"))
    assert same["metadata"]["resourceVersion"] == out["metadata"]["resourceVersion"]
    assert same["metadata"]["managedFields"] == out["metadata"]["managedFields"]
    without = copy.deepcopy(out)
    del without["metadata"]["managedFields"]        # a client that does not know them keeps them
    assert ok(http.put(without))["metadata"] == out["metadata"]


def test_status_and_scale_writes_are_recorded_with_their_subresource(http):
    ok(http.apply(deployment(), "deployer"), 201)
    live = http.get()
    live["status"] = {"observedGeneration": 1, "replicas": 1}
    out = ok(http.put(live, manager="shoal-controller", path="/status"))
    assert managers(out)[("shoal-controller", "Update", "status")] == {
        "f:status": {"f:observedGeneration": {}, "f:replicas": {}}}
    assert out["metadata"]["generation"] == 1
    scale = ok(http.patch("web", {"spec": {"replicas": 3}}, "application/merge-patch+json", path="/scale",
                          ua="kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07"))
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    out = http.get()
    assert managers(out)[("kubectl", "Update", "scale")] == {"f:spec": {"f:replicas": {}}}
    assert not owns(out, "deployer", "f:spec", "f:replicas")
    r = http.apply(deployment(), "deployer")
    assert r.status_code == 409 and r.json()["message"] == (
        'Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" using apps/v1: '
        '.spec.replicas')


def test_apply_to_the_scale_subresource(http):
    ok(http.apply(deployment(), "deployer"), 201)
    r = http.c.patch(f"{PATH}/web/scale", params={"fieldManager": "hpa", "force": "true"},
                     content=json.dumps({"apiVersion": "autoscaling/v1", "kind": "Scale",
                                         "metadata": {"name": "web"}, "spec": {"replicas": 5}}),
                     headers={"Content-Type": APPLY})
    assert ok(r)["spec"]["replicas"] == 5
    out = http.get()
    assert out["spec"]["replicas"] == 5 and managers(out)[("hpa", "Apply", "scale")] == {"f:spec": {"f:replicas": {}}}


# ------------------------------------------------------------------------------ writing managedFields
def test_managed_fields_can_be_replaced_and_reset(http):
    out = ok(http.post(deployment(), manager="kubectl-client-side-apply"), 201)
    rv = out["metadata"]["resourceVersion"]
    mine = [{"manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "time": "2024-05-01T10:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    # kubectl's migration: a JSON patch replacing managedFields, conditional on the version it read
    stale = [{"op": "replace", "path": "/metadata/managedFields", "value": mine},
             {"op": "replace", "path": "/metadata/resourceVersion", "value": str(int(rv) - 1)}]
    assert http.patch("web", stale, "application/json-patch+json", manager="kubectl").status_code == 409
    fresh = [{"op": "replace", "path": "/metadata/managedFields", "value": mine},
             {"op": "replace", "path": "/metadata/resourceVersion", "value": rv}]
    out = ok(http.patch("web", fresh, "application/json-patch+json", manager="kubectl"))
    assert out["metadata"]["managedFields"] == mine and out["metadata"]["generation"] == 1
    r = http.apply(deployment(replicas=2), "other")
    assert r.status_code == 409 and 'conflict with "kubectl": .spec.replicas' in r.json()["message"]
    # an empty list resets them; an untracked object stays untracked until an apply
    out = ok(http.patch("web", {"metadata": {"managedFields": []}}, "application/merge-patch+json"))
    assert "managedFields" not in out["metadata"]
    out = ok(http.patch("web", {"spec": {"replicas": 2}}, "application/merge-patch+json", manager="x"))
    assert "managedFields" not in out["metadata"]
    out = ok(http.apply(deployment(replicas=2), "deployer"))
    assert set(managers(out)) == {("deployer", "Apply", ""), ("before-first-apply", "Update", "")}


def test_bad_managed_fields_are_refused_by_field(http):
    out = ok(http.post(deployment(), manager="creator"), 201)
    bad = copy.deepcopy(out)
    bad["metadata"]["managedFields"] = [{"manager": "m", "operation": "Patch", "apiVersion": "apps/v1",
                                         "fieldsType": "FieldsV1", "fieldsV1": {}}]
    r = http.put(bad)
    assert r.status_code == 422
    assert r.json()["message"] == ('Deployment.apps "web" is invalid: metadata.managedFields[0].operation: Invalid '
                                   'value: "Patch": must be `Apply` or `Update`')
    assert http.get() == out


# ------------------------------------------------------------------------------ the controllers' writes
def test_controllers_status_writes_keep_one_entry_each(tmp_path):
    """With the controllers running, a Deployment's status and its ReplicaSet are recorded for
    `shoal-controller`; the creator keeps the spec."""
    from shoal.testkit.apiserver import start_test_server, wait_for
    srv = start_test_server(tmp_path, controllers=True)
    try:
        h = Http(srv)
        ok(h.apply(deployment(replicas=0), "deployer"), 201)
        out = wait_for(lambda: (d := h.get()).get("status", {}).get("observedGeneration") and d,
                       what="the deployment controller's status")
        assert ("shoal-controller", "Update", "status") in managers(out)
        assert ("deployer", "Apply", "") in managers(out)
        rs = wait_for(lambda: srv.client().list("replicasets")["items"], what="a ReplicaSet")[0]
        assert {e["manager"] for e in rs["metadata"]["managedFields"]} >= {"shoal-controller"}
        h.c.close()
    finally:
        srv.stop()


# ------------------------------------------------------------------------------ the real kubectl
KUBECTL = "/usr/bin/kubectl"


@pytest.fixture
def kubectl(tmp_path):
    """Real kubectl against a TLS test server (client-go sends no token over plain http), with
    its own HOME and an empty discovery cache; `run(*args, input=...)`, `.api` the server."""
    import os
    import shutil
    import subprocess
    from shoal.testkit.apiserver import start_test_server
    if not shutil.which(KUBECTL):
        pytest.skip("no kubectl")
    srv = start_test_server(tmp_path, tls=True)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "KUBECONFIG": str(srv.kubeconfig),
           "NO_COLOR": "1"}

    class Kubectl:
        api = srv

        def run(self, *args: str, input: dict | None = None, check: bool = True):
            r = subprocess.run([KUBECTL, "--cache-dir", str(home / "cache"), *args], env=env, capture_output=True,
                               text=True, timeout=120, input=json.dumps(input) if input is not None else None)
            if check:
                assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stdout}\n{r.stderr}"
            return r

        def get(self) -> dict:
            return json.loads(self.run("get", "deployment", "web", "-o", "json", "--show-managed-fields").stdout)

    try:
        yield Kubectl()
    finally:
        srv.stop()


def test_kubectl_apply_server_side(kubectl):
    d = deployment(replicas=2, tier="front")
    out = kubectl.run("apply", "--server-side", "-f", "-", input=d).stdout
    assert "deployment.apps/web serverside-applied" in out
    live = kubectl.get()
    assert set(managers(live)) == {("kubectl", "Apply", "")}
    # a changed manifest: the dropped label goes, the new image comes
    d = deployment(replicas=2, image="nginx:1.28")
    kubectl.run("apply", "--server-side", "-f", "-", input=d)
    live = kubectl.get()
    assert live["metadata"]["labels"] == {"app": "web"}
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    # `kubectl scale` takes replicas (manager kubectl, subresource scale): the next apply conflicts
    kubectl.run("scale", "deployment", "web", "--replicas=3")
    rv = kubectl.get()["metadata"]["resourceVersion"]
    r = kubectl.run("apply", "--server-side", "-f", "-", input=d, check=False)
    assert r.returncode != 0
    assert ('Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" using apps/v1: '
            '.spec.replicas') in r.stderr, r.stderr
    assert kubectl.get()["metadata"]["resourceVersion"] == rv
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", "-", input=d)
    live = kubectl.get()
    assert live["spec"]["replicas"] == 2
    assert set(managers(live)) == {("kubectl", "Apply", "")}        # the scale entry had only replicas


def test_kubectl_client_side_apply_then_server_side(kubectl):
    """kubectl's upgrade path: the fields `kubectl apply` (client-side) set become the `kubectl`
    manager's on the first `kubectl apply --server-side`, with no conflict for what the
    last-applied annotation says, even for a value the new manifest changes."""
    d = deployment(replicas=2)
    assert "deployment.apps/web created" in kubectl.run("apply", "-f", "-", input=d).stdout
    live = kubectl.get()
    assert set(managers(live)) == {("kubectl-client-side-apply", "Update", "")}
    d = deployment(replicas=2, image="nginx:1.28")
    assert "serverside-applied" in kubectl.run("apply", "--server-side", "-f", "-", input=d).stdout
    live = kubectl.get()
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    entries = managers(live)
    assert ("kubectl-client-side-apply", "Update", "") not in entries          # migrated by kubectl
    assert owns(live, "kubectl", "f:spec", "f:template", "f:spec", "f:containers", CONTAINER, "f:image")
    annotation = json.loads(live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert annotation["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    # and from now on a field dropped from the manifest is removed
    d["metadata"]["labels"]["tier"] = "front"
    kubectl.run("apply", "--server-side", "-f", "-", input=d)
    del d["metadata"]["labels"]["tier"]
    kubectl.run("apply", "--server-side", "-f", "-", input=d)
    assert kubectl.get()["metadata"]["labels"] == {"app": "web"}
