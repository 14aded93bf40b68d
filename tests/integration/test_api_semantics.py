"""API server semantics against the real app on a temp SQLite file."""
import threading

import httpx
import pytest

from shoal.machinery.api import errors
from shoal.testkit import apiserver as testing


def deployment(name="web", replicas=2, image="127.0.0.1:5000/web:v1"):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


def pod(name, node=None, owner=None, labels=None):
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"app": "x"}},
         "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
    if node:
        p["spec"]["nodeName"] = node
    if owner:
        p["metadata"]["ownerReferences"] = [owner]
    return p


def test_create_defaults_and_server_fields(api):
    c = api.client()
    out = c.create("deploy", deployment())
    md = out["metadata"]
    assert md["uid"] and md["creationTimestamp"].endswith("Z") and md["generation"] == 1
    assert int(md["resourceVersion"]) > 0
    assert out["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert out["spec"]["revisionHistoryLimit"] == 10 and out["spec"]["progressDeadlineSeconds"] == 600
    with pytest.raises(errors.AlreadyExists):
        c.create("deploy", deployment())


def test_generate_name_draws_again_on_a_taken_name(api, monkeypatch):
    """As Kubernetes' RetryGenerateName: a generated name that is taken is drawn again,
    up to 8 times, before the create fails with AlreadyExists."""
    from shoal.apiserver import registry
    c = api.client()
    c.create("pods", pod("gen-aaaaa"))
    draws = iter(["gen-aaaaa", "gen-aaaaa", "gen-bbbbb"])
    monkeypatch.setattr(registry, "_generated_name", lambda prefix: next(draws))
    body = pod("")
    body["metadata"] = {"generateName": "gen-", "labels": {"app": "x"}}
    assert c.create("pods", body)["metadata"]["name"] == "gen-bbbbb"
    monkeypatch.setattr(registry, "_generated_name", lambda prefix: "gen-aaaaa")
    with pytest.raises(errors.AlreadyExists):
        c.create("pods", body)
    assert sorted(p["metadata"]["name"] for p in c.list("pods")["items"]) == ["gen-aaaaa", "gen-bbbbb"]


def test_generation_bumps_on_spec_change_only(api):
    c = api.client()
    d = c.create("deploy", deployment())
    d["metadata"]["labels"]["extra"] = "1"
    d = c.update("deploy", d)
    assert d["metadata"]["generation"] == 1
    d["spec"]["replicas"] = 4
    d = c.update("deploy", d)
    assert d["metadata"]["generation"] == 2
    d["status"] = {"observedGeneration": 2, "replicas": 4}
    s = c.update_status("deploy", d)
    assert s["metadata"]["generation"] == 2 and s["status"]["replicas"] == 4
    # The main resource ignores status; /status ignores spec.
    s["status"]["replicas"] = 9
    s["spec"]["replicas"] = 7
    m = c.update("deploy", s)
    assert m["status"]["replicas"] == 4 and m["spec"]["replicas"] == 7
    m["spec"]["replicas"] = 1
    m["status"]["replicas"] = 5
    st = c.update_status("deploy", m)
    assert st["spec"]["replicas"] == 7 and st["status"]["replicas"] == 5


def test_stale_update_conflicts(api):
    c = api.client()
    d = c.create("deploy", deployment())
    d2 = dict(d, spec=dict(d["spec"], replicas=3))
    c.update("deploy", d2)
    with pytest.raises(errors.Conflict) as ei:
        c.update("deploy", dict(d, spec=dict(d["spec"], replicas=5)))
    assert ei.value.code == 409
    assert c.get("deploy", "web")["spec"]["replicas"] == 3


def test_concurrent_writers_exactly_one_wins_each_round(api):
    c = api.client()
    c.create("deploy", deployment())
    rounds, writers = 8, 8
    for r in range(rounds):
        base = c.get("deploy", "web")
        wins, conflicts = [], []
        barrier = threading.Barrier(writers)

        def attempt(i):
            obj = dict(base, metadata=dict(base["metadata"], annotations={"writer": f"{r}-{i}"}))
            barrier.wait()
            try:
                wins.append(c.update("deploy", obj))
            except errors.Conflict:
                conflicts.append(i)

        ts = [threading.Thread(target=attempt, args=(i,)) for i in range(writers)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert len(wins) == 1 and len(conflicts) == writers - 1, (r, len(wins), conflicts)
        assert c.get("deploy", "web")["metadata"]["annotations"] == wins[0]["metadata"]["annotations"]


def test_no_lost_update_under_read_modify_write_races(api):
    c = api.client()
    d = deployment()
    d["metadata"]["annotations"] = {"count": "0"}
    c.create("deploy", d)
    per_thread, threads = 15, 6

    def worker():
        for _ in range(per_thread):
            while True:
                cur = c.get("deploy", "web")
                cur["metadata"]["annotations"]["count"] = str(int(cur["metadata"]["annotations"]["count"]) + 1)
                try:
                    c.update("deploy", cur)
                    break
                except errors.Conflict:
                    continue

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert c.get("deploy", "web")["metadata"]["annotations"]["count"] == str(per_thread * threads)


def test_validation_errors_name_field_paths_and_change_nothing(api):
    c = api.client()
    bad = deployment()
    bad["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 70000}]
    with pytest.raises(errors.Invalid) as ei:
        c.create("deploy", bad)
    assert any(cause.field == "spec.template.spec.containers[0].ports[0].containerPort" for cause in ei.value.causes)
    unknown = deployment()
    unknown["spec"]["replicaz"] = 3
    with pytest.raises(errors.BadRequest) as ei:
        c.create("deploy", unknown)
    assert "spec.replicaz" in str(ei.value)
    assert c.list("deploy")["items"] == []
    # A bad update changes nothing either.
    good = c.create("deploy", deployment())
    good["spec"]["replicas"] = -1
    with pytest.raises(errors.Invalid) as ei:
        c.update("deploy", good)
    assert any(cause.field == "spec.replicas" for cause in ei.value.causes)
    assert c.get("deploy", "web")["spec"]["replicas"] == 2


def test_bad_names_and_missing_namespace(api):
    c = api.client()
    with pytest.raises(errors.Invalid) as ei:
        c.create("deploy", deployment(name="Bad_Name"))
    assert any(cause.field == "metadata.name" for cause in ei.value.causes)
    with pytest.raises(errors.NotFound) as ei:
        c.create("deploy", deployment(), namespace="nope")
    assert 'namespaces "nope" not found' in str(ei.value)


def test_401_without_or_with_wrong_token(api):
    r = httpx.get(api.url + "/apis/apps/v1/namespaces/default/deployments")
    assert r.status_code == 401 and r.json()["kind"] == "Status" and r.json()["reason"] == "Unauthorized"
    r = httpx.get(api.url + "/api/v1/pods", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert httpx.get(api.url + "/healthz").status_code == 200


def test_join_token_only_joins_and_node_credential_is_scoped(api):
    from shoal.machinery.client.rest import Client
    join = Client(api.url, api.join_token)
    with pytest.raises(errors.Forbidden):
        join.list("pods")
    cred = join.request("POST", "/shoal/v1/join", body={"nodeName": "node-a", "nodePassword": "pw-a" * 8})
    node = Client(api.url, cred["token"])
    node.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}})
    with pytest.raises(errors.Forbidden):
        node.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-b"}})
    with pytest.raises(errors.Forbidden):
        node.create("deploy", deployment())
    admin = api.client()
    admin.create("pods", pod("mine", node="node-a"))
    admin.create("pods", pod("theirs", node="node-b"))
    p = node.get("pods", "mine")
    p["status"] = {"phase": "Running"}
    assert node.update_status("pods", p)["status"]["phase"] == "Running"
    with pytest.raises(errors.Forbidden):
        node.get("pods", "theirs")         # a node reads only the pods bound to it (issue 17)
    t = admin.get("pods", "theirs")
    t["status"] = {"phase": "Running"}
    with pytest.raises(errors.Forbidden):
        node.update_status("pods", t)
    with pytest.raises(errors.Forbidden):
        node.delete("pods", "theirs", grace_period_seconds=0)


def test_label_and_field_selectors(api):
    c = api.client()
    c.create("pods", pod("a", node="n1", labels={"app": "web", "tier": "fe"}))
    c.create("pods", pod("b", node="n2", labels={"app": "web"}))
    c.create("pods", pod("c", labels={"app": "db"}))
    names = lambda lst: sorted(o["metadata"]["name"] for o in lst["items"])  # noqa: E731
    assert names(c.list("pods", label_selector="app=web")) == ["a", "b"]
    assert names(c.list("pods", label_selector="app in (web,db),!tier")) == ["b", "c"]
    assert names(c.list("pods", field_selector="spec.nodeName=n1")) == ["a"]
    assert names(c.list("pods", field_selector="spec.nodeName=")) == ["c"]
    assert names(c.list("pods", field_selector="metadata.name!=a,status.phase=Pending")) == ["b", "c"]
    with pytest.raises(errors.BadRequest):
        c.list("pods", label_selector="app in (")


def test_merge_json_and_strategic_patches(api):
    c = api.client()
    c.create("deploy", deployment())
    out = c.patch("deploy", "web", {"metadata": {"labels": {"x": "y"}}, "spec": {"replicas": 3}})
    assert out["spec"]["replicas"] == 3 and out["metadata"]["labels"]["x"] == "y"
    out = c.patch("deploy", "web", [{"op": "replace", "path": "/spec/replicas", "value": 4}], patch_type="json")
    assert out["spec"]["replicas"] == 4
    out = c.patch("deploy", "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "127.0.0.1:5000/web:v2"}]}}}}, patch_type="strategic")
    assert out["spec"]["template"]["spec"]["containers"][0]["image"].endswith("web:v2")
    assert out["metadata"]["generation"] == 4


def test_scale_subresource(api):
    c = api.client()
    c.create("deploy", deployment())
    s = c.get("deploy", "web", subresource="scale")
    assert s["kind"] == "Scale" and s["apiVersion"] == "autoscaling/v1" and s["status"]["selector"] == "app=web"
    s2 = c.patch("deploy", "web", {"spec": {"replicas": 6}}, subresource="scale")
    assert s2["spec"]["replicas"] == 6 and c.get("deploy", "web")["spec"]["replicas"] == 6


def test_cascading_delete_through_owner_references(api):
    c = api.client()
    d = c.create("deploy", deployment())
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": d["metadata"]["uid"],
           "controller": True}
    rs = c.create("rs", {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                         "metadata": {"name": "web-abc", "labels": {"app": "web"}, "ownerReferences": [ref]},
                         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                                  "template": deployment()["spec"]["template"]}})
    rsref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": rs["metadata"]["uid"],
             "controller": True}
    c.create("pods", pod("web-abc-1", owner=rsref))
    c.create("pods", pod("lonely"))
    c.delete("deploy", "web")
    wait_for(lambda: not c.list("rs")["items"] and [p["metadata"]["name"] for p in c.list("pods")["items"]]
             == ["lonely"])


def test_orphan_propagation_keeps_dependents(api):
    c = api.client()
    d = c.create("deploy", deployment())
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": d["metadata"]["uid"]}
    c.create("pods", pod("kept", owner=ref))
    c.delete("deploy", "web", propagation_policy="Orphan")
    wait_for(lambda: "ownerReferences" not in c.get("pods", "kept")["metadata"])


def test_graceful_pod_deletion(api):
    c = api.client()
    c.create("pods", pod("bound", node="n1"))
    c.create("pods", pod("unbound"))
    out = c.delete("pods", "bound")
    assert out["metadata"]["deletionTimestamp"] and out["metadata"]["deletionGracePeriodSeconds"] == 30
    still = c.get("pods", "bound")
    assert still["metadata"]["deletionTimestamp"]
    # The node confirms: the object goes.
    c.delete("pods", "bound", grace_period_seconds=0)
    with pytest.raises(errors.NotFound):
        c.get("pods", "bound")
    # Never scheduled: removed at once.
    c.delete("pods", "unbound")
    with pytest.raises(errors.NotFound):
        c.get("pods", "unbound")


def test_pod_binding_is_set_once(api):
    c = api.client()
    p = c.create("pods", pod("p"))
    p["spec"]["nodeName"] = "n1"
    p = c.update("pods", p)
    assert p["spec"]["nodeName"] == "n1"
    p["spec"]["nodeName"] = "n2"
    with pytest.raises(errors.Invalid):
        c.update("pods", p)


def test_binding_subresource_binds_once_and_marks_the_pod_scheduled(api):
    c = api.client()
    p = c.create("pods", pod("b"))
    out = c.bind("b", "default", "n1", uid=p["metadata"]["uid"])
    assert out["kind"] == "Status" and out["status"] == "Success"
    got = c.get("pods", "b")
    assert got["spec"]["nodeName"] == "n1"
    assert [(x["type"], x["status"]) for x in got["status"]["conditions"]] == [("PodScheduled", "True")]
    assert int(got["metadata"]["resourceVersion"]) > int(p["metadata"]["resourceVersion"])
    with pytest.raises(errors.Conflict, match='already assigned to node "n1"'):
        c.bind("b", "default", "n2")
    assert c.get("pods", "b")["metadata"]["resourceVersion"] == got["metadata"]["resourceVersion"]
    # Preconditions: a pod made again under the same name is another pod.
    c.create("pods", pod("again"))
    with pytest.raises(errors.Conflict, match="Precondition failed: UID"):
        c.bind("again", "default", "n1", uid="not-its-uid")
    with pytest.raises(errors.NotFound):
        c.bind("missing", "default", "n1")
    # Bad bindings change nothing.
    for body, err in (({"apiVersion": "v1", "kind": "Binding", "target": {"name": "N_1"}}, errors.Invalid),
                      ({"apiVersion": "v1", "kind": "Binding", "target": {"kind": "Pod", "name": "n1"}},
                       errors.Invalid),
                      ({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "other"},
                        "target": {"name": "n1"}}, errors.BadRequest),
                      ({"apiVersion": "v1", "kind": "Pod", "target": {"name": "n1"}}, errors.BadRequest)):
        with pytest.raises(err):
            c.request("POST", "/api/v1/namespaces/default/pods/again/binding", body=body)
    with pytest.raises(errors.Invalid):
        c.request("POST", "/api/v1/namespaces/default/pods/again/binding",
                  body={"apiVersion": "v1", "kind": "Binding", "metadata": {"annotations": {"bad key!": "x"}},
                        "target": {"name": "n1"}})
    assert not c.get("pods", "again")["spec"].get("nodeName")
    c.request("POST", "/api/v1/namespaces/default/pods/again/binding",
              body={"apiVersion": "v1", "kind": "Binding", "metadata": {"annotations": {"example.com/why": "test"}},
                    "target": {"kind": "Node", "name": "n2"}})
    again = c.get("pods", "again")
    assert again["spec"]["nodeName"] == "n2" and again["metadata"]["annotations"]["example.com/why"] == "test"
    # A node may not bind pods (not even to itself); a pod being deleted is not bound.
    from shoal.machinery.client.rest import Client
    cred = Client(api.url, api.join_token).request("POST", "/shoal/v1/join",
                                                   body={"nodeName": "n1", "nodePassword": "pw-n1" * 8})
    with pytest.raises(errors.Forbidden):
        Client(api.url, cred["token"]).bind("again", "default", "n1")
    c.create("pods", dict(pod("held"), metadata={"name": "held", "finalizers": ["example.com/hold"]}))
    c.delete("pods", "held")
    with pytest.raises(errors.Conflict, match="being deleted"):
        c.bind("held", "default", "n1")
    assert any(r["name"] == "pods/binding" and r["verbs"] == ["create"]
               for r in c.request("GET", "/api/v1")["resources"])


def test_namespace_delete_removes_its_objects(api):
    c = api.client()
    c.create("ns", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    c.create("deploy", deployment(), namespace="team")
    c.delete("ns", "team")
    wait_for(lambda: not c.list("ns", label_selector=None)["items"] or
             "team" not in [n["metadata"]["name"] for n in c.list("ns")["items"]])
    assert c.list("deploy", namespace="team")["items"] == []
    with pytest.raises(errors.Forbidden):
        c.delete("ns", "default")


def test_discovery_version_and_openapi(api):
    c = api.client()
    assert c.request("GET", "/version")["minor"] == "32"
    names = [r["name"] for r in c.request("GET", "/apis/apps/v1")["resources"]]
    assert "deployments" in names and "deployments/scale" in names
    assert "apis/apps/v1" in c.request("GET", "/openapi/v3")["paths"]
    assert "/apis/apps/v1/namespaces/{namespace}/deployments" in c.request("GET", "/openapi.json")["paths"]


def wait_for(pred, timeout=10.0, interval=0.05):
    testing.wait_for(pred, timeout=timeout, interval=interval)


def test_route_table_knows_exactly_fastapis_resource_routes(api):
    """The server answers resource paths from its RouteTable; it must route every resource
    route FastAPI has (bar pod logs) to the same handler, and nothing else."""
    from fastapi.routing import APIRoute
    from shoal.machinery.api.resources import RESOURCES
    plurals = {r.plural for r in RESOURCES}
    app = api.app
    checked = 0
    for route in app.routes:
        if not isinstance(route, APIRoute) or not set(route.tags) & plurals:
            continue              # meta endpoints, discovery, join: FastAPI's alone
        params = {p: f"x-{p}" for p in ("namespace", "name") if "{" + p + "}" in route.path}
        path = route.path.format(**params)
        for method in route.methods:
            hit = app.routes_fast.resolve(method, path)
            if route.path.endswith("/log"):
                assert hit is None, f"{method} {route.path}"
                continue
            assert hit is not None, f"{method} {route.path} is not in the route table"
            assert hit == (route.endpoint, params), f"{method} {route.path}"
            checked += 1
    assert checked == len(app.routes_fast) and checked > 50


def test_paths_outside_the_route_table_answer_as_before(api):
    c = api.client()
    c.create("pods", pod("p1"), namespace="default")
    hdr = {"Authorization": f"Bearer {api.admin_token}"}
    r = httpx.post(api.url + "/api/v1/namespaces/default/pods/p1", headers=hdr, json={})
    assert r.status_code == 405 and r.json()["reason"] == "MethodNotAllowed"
    r = httpx.get(api.url + "/api/v1/namespaces/default/widgets", headers=hdr)
    assert r.status_code == 404 and r.json()["reason"] == "NotFound"
    r = httpx.get(api.url + "/api/v1/namespaces/default/pods/p1", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"
    r = httpx.get(api.url + "/api/v1/namespaces/default/pods/nope", headers=hdr)
    assert r.status_code == 404 and r.json()["details"]["name"] == "nope"
    r = httpx.put(api.url + "/api/v1/namespaces/default/pods/p1/status", headers=hdr, content=b"{not json")
    assert r.status_code == 400 and r.json()["kind"] == "Status"


def test_a_node_reads_only_its_own_pods_and_what_a_kubelet_needs(api):
    """Issue 17, "Nodes read everything": a node credential read every pod (an env DB_PASSWORD
    of another namespace), every pod's log and every Event. Now: Kubernetes' Node authorizer."""
    from shoal.machinery.client.rest import Client
    join = Client(api.url, api.join_token)
    cred = join.request("POST", "/shoal/v1/join", body={"nodeName": "node-a", "nodePassword": "pw-a" * 8})
    node = Client(api.url, cred["token"])
    node.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}})
    admin = api.client()
    admin.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payroll"}})
    secret_pod = pod("db", node="node-b")
    secret_pod["spec"]["containers"][0]["env"] = [{"name": "DB_PASSWORD", "value": "hunter2"}]
    admin.create("pods", secret_pod, "payroll")
    admin.create("pods", pod("mine", node="node-a"))
    for call in (lambda: node.get("pods", "db", "payroll"),
                 lambda: node.list("pods", "payroll"),
                 lambda: node.list("pods", all_namespaces=True),
                 lambda: node.list("pods", all_namespaces=True, field_selector="spec.nodeName=node-b"),
                 lambda: node.list("pods", all_namespaces=True, label_selector="app=web"),
                 lambda: node.list("events", "default"),
                 lambda: node.list("deployments", "default"),
                 lambda: node.get("namespaces", "payroll")):
        with pytest.raises(errors.Forbidden):
            call()
    with pytest.raises(errors.Forbidden):
        node.request("GET", "/api/v1/namespaces/payroll/pods/db/log")
    own = node.list("pods", all_namespaces=True, field_selector="spec.nodeName=node-a")
    assert [o["metadata"]["name"] for o in own["items"]] == ["mine"]
    assert node.get("pods", "mine")["metadata"]["name"] == "mine"
    assert {n["metadata"]["name"] for n in node.list("nodes")["items"]} == {"node-a"}   # its peers: every Node
    with pytest.raises(errors.NotFound):
        node.get("pods", "gone")           # a pod that is not there is NotFound, as the agent expects


def test_a_node_writes_status_only_of_its_own_pods(api):
    """Issue 17: a node may write the status of the pods bound to it, never another node's."""
    from shoal.machinery.client.rest import Client
    join = Client(api.url, api.join_token)
    cred = join.request("POST", "/shoal/v1/join", body={"nodeName": "node-a", "nodePassword": "pw-a" * 8})
    node = Client(api.url, cred["token"])
    admin = api.client()
    theirs = admin.create("pods", pod("theirs", node="node-b"))
    mine = admin.create("pods", pod("mine", node="node-a"))
    for verb, body in (("PUT", dict(theirs, status={"phase": "Failed"})),
                       ("PATCH", {"status": {"phase": "Failed"}})):
        with pytest.raises(errors.Forbidden):
            node.request(verb, "/api/v1/namespaces/default/pods/theirs/status", body=body,
                         content_type="application/merge-patch+json" if verb == "PATCH" else "application/json")
    assert (admin.get("pods", "theirs").get("status") or {}).get("phase") != "Failed"
    out = node.request("PATCH", "/api/v1/namespaces/default/pods/mine/status", body={"status": {"phase": "Running"}},
                       content_type="application/merge-patch+json")
    assert out["status"]["phase"] == "Running" and mine["metadata"]["uid"] == out["metadata"]["uid"]
