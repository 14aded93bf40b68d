"""Cascading deletion against the real API server (no controllers): Background, Orphan
(the `orphan` finalizer) and Foreground (the `foregroundDeletion` finalizer), finalizers of
the user's, a crash resumed at start, deletecollection, and the wire forms of kubectl and the
Python client. Ordering is read from the revision log itself (`Store.events_after`): every
write of every kind in the one order the server committed them."""
import time

import httpx
import pytest

from shoal.machinery.api import errors
from shoal.machinery.api.deletion import FOREGROUND_FINALIZER, ORPHAN_FINALIZER
from shoal.machinery.api.resources import resolve
from shoal.machinery.api.times import format_time
from shoal.testkit.apiserver import start_test_server, wait_for

pytestmark = pytest.mark.integration
HOLD = "example.com/hold"


def deployment(name="web", finalizers=None):
    d = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                  "template": {"metadata": {"labels": {"app": name}},
                               "spec": {"containers": [{"name": "c", "image": "registry.local/httpd:1"}]}}}}
    if finalizers:
        d["metadata"]["finalizers"] = finalizers
    return d


def ref(owner, block=True):
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": block}


def replicaset(name, owner=None, refs=None):
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": name, "labels": {"app": "web", "rs": name}},
          "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web", "rs": name}},
                   "template": {"metadata": {"labels": {"app": "web", "rs": name}},
                                "spec": {"containers": [{"name": "c", "image": "registry.local/httpd:1"}]}}}}
    if owner is not None or refs:
        rs["metadata"]["ownerReferences"] = refs or [ref(owner)]
    return rs


def pod(name, owner=None, node=None, labels=None, block=True, refs=None):
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"app": "web"}},
         "spec": {"containers": [{"name": "c", "image": "registry.local/httpd:1"}]}}
    if owner is not None or refs:
        p["metadata"]["ownerReferences"] = refs or [ref(owner, block)]
    if node:
        p["spec"]["nodeName"] = node
    return p


def names(c, kind):
    return sorted(o["metadata"]["name"] for o in c.list(kind)["items"])


def gone(c, kind, name):
    try:
        c.get(kind, name)
    except errors.NotFound:
        return True
    return False


def log_after(store, rev):
    """(type, kind plural, name, object) of every write after `rev`, in commit order."""
    return [(e.type, e.resource, e.object["metadata"]["name"], e.object)
            for e in store.events_after(rev, limit=100000) if e.resource != "events"]


def rv(obj):
    return int(obj["metadata"]["resourceVersion"])


@pytest.fixture
def family(api):
    """A Deployment owning two ReplicaSets, each owning a pod (not bound: removed at once)."""
    c = api.client()
    d = c.create("deploy", deployment())
    rss = [c.create("rs", replicaset(f"web-{i}", d)) for i in (1, 2)]
    pods = [c.create("pods", pod(f"web-{i}-p", rs)) for i, rs in zip((1, 2), rss)]
    return c, d, rss, pods


# -- Orphan -----------------------------------------------------------------------------------
def test_orphan_strips_every_reference_before_the_owner_goes(api, family):
    c, d, rss, pods = family
    out = c.delete("deploy", "web", propagation_policy="Orphan")
    # The answer is the owner, marked: the orphan finalizer and a deletionTimestamp.
    assert out["kind"] == "Deployment" and out["metadata"]["finalizers"] == [ORPHAN_FINALIZER]
    assert out["metadata"]["deletionTimestamp"]
    wait_for(lambda: gone(c, "deploy", "web"), what="the orphaned deployment removed")
    # Every dependent survives without the reference; grandchildren keep theirs.
    for rs in c.list("rs")["items"]:
        assert "ownerReferences" not in rs["metadata"], rs
    assert names(c, "rs") == ["web-1", "web-2"] and names(c, "pods") == ["web-1-p", "web-2-p"]
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" for p in c.list("pods")["items"])
    # In the log: the mark, then each dependent unhooked, then the finalizer goes, then the owner.
    log = log_after(api.store, rv(out) - 1)
    kinds = [(t, k, n) for t, k, n, _ in log]
    d_deleted = kinds.index(("DELETED", "deployments", "web"))
    strips = [i for i, (t, k, n, o) in enumerate(log) if k == "replicasets" and t == "MODIFIED"
              and "ownerReferences" not in o["metadata"]]
    assert len(strips) == 2 and max(strips) < d_deleted
    fin_dropped = [i for i, (t, k, n, o) in enumerate(log) if k == "deployments" and t == "MODIFIED"
                   and not o["metadata"].get("finalizers")]
    assert fin_dropped and max(strips) < fin_dropped[0] < d_deleted
    # Nothing was deleted but the owner.
    assert [x for x in kinds if x[0] == "DELETED"] == [("DELETED", "deployments", "web")]


def test_orphan_of_a_dependent_with_two_owners_keeps_the_other_reference(api):
    c = api.client()
    a = c.create("deploy", deployment("a"))
    b = c.create("deploy", deployment("b"))
    rs = c.create("rs", replicaset("shared", refs=[ref(a), dict(ref(b), controller=False)]))
    c.delete("deploy", "a", propagation_policy="Orphan")
    wait_for(lambda: gone(c, "deploy", "a"), what="a removed")
    refs = c.get("rs", "shared")["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == [b["metadata"]["uid"]] and rs["metadata"]["uid"]


def test_a_dependent_stored_invalid_does_not_hold_its_owner(api):
    """A dependent stored before a validation rule it breaks still loses its reference."""
    c = api.client()
    d = c.create("deploy", deployment())
    c.create("rs", replicaset("old", d))
    cur = api.store.get("replicasets", "default", "old")
    cur["spec"]["replicas"] = -1
    api.store.update("replicasets", cur, expected_revision=rv(cur))
    c.delete("deploy", "web", propagation_policy="Orphan")
    wait_for(lambda: gone(c, "deploy", "web"), what="the orphaned deployment removed")
    assert "ownerReferences" not in c.get("rs", "old")["metadata"]


def test_orphan_with_a_finalizer_of_the_users(api, family):
    c, d, rss, pods = family
    d = c.get("deploy", "web")
    d["metadata"]["finalizers"] = [HOLD]
    c.update("deploy", d)
    c.delete("deploy", "web", propagation_policy="Orphan")
    # The orphaning is done, the user's finalizer still holds the owner.
    wait_for(lambda: c.get("deploy", "web")["metadata"]["finalizers"] == [HOLD], what="orphan finalizer removed")
    assert all("ownerReferences" not in rs["metadata"] for rs in c.list("rs")["items"])
    held = c.get("deploy", "web")
    assert held["metadata"]["deletionTimestamp"]
    held["metadata"]["finalizers"] = []
    c.update("deploy", held)
    assert gone(c, "deploy", "web")
    assert names(c, "rs") == ["web-1", "web-2"] and names(c, "pods") == ["web-1-p", "web-2-p"]


def test_a_second_delete_may_change_the_policy(api, family):
    c, d, rss, pods = family
    d = c.get("deploy", "web")
    d["metadata"]["finalizers"] = [HOLD]
    c.update("deploy", d)
    marked = c.delete("deploy", "web")            # Background: held by the user's finalizer
    assert marked["metadata"]["finalizers"] == [HOLD] and marked["metadata"]["deletionTimestamp"]
    again = c.delete("deploy", "web", propagation_policy="Orphan")
    assert again["metadata"]["finalizers"] == [HOLD, ORPHAN_FINALIZER]
    assert again["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]
    wait_for(lambda: c.get("deploy", "web")["metadata"]["finalizers"] == [HOLD], what="orphaned")
    assert all("ownerReferences" not in rs["metadata"] for rs in c.list("rs")["items"])
    # And back: an explicit Background drops a GC finalizer the object carries.
    c.delete("deploy", "web", propagation_policy="Foreground")
    assert c.get("deploy", "web")["metadata"]["finalizers"] in ([HOLD, FOREGROUND_FINALIZER], [HOLD])
    c.delete("deploy", "web", propagation_policy="Background")
    assert c.get("deploy", "web")["metadata"]["finalizers"] == [HOLD]


# -- Background -------------------------------------------------------------------------------
def test_background_removes_the_owner_at_once_then_the_dependents(api, family):
    c, d, rss, pods = family
    out = c.delete("deploy", "web", propagation_policy="Background")
    assert out["kind"] == "Status" and out["status"] == "Success" and out["details"]["uid"] == d["metadata"]["uid"]
    assert gone(c, "deploy", "web")
    wait_for(lambda: not names(c, "rs") and not names(c, "pods"), what="dependents collected")


def test_a_user_finalizer_keeps_the_object_and_its_dependents(api, family):
    c, d, rss, pods = family
    d = c.get("deploy", "web")
    d["metadata"]["finalizers"] = [HOLD]
    c.update("deploy", d)
    out = c.delete("deploy", "web")
    assert out["metadata"]["deletionTimestamp"] and out["metadata"]["finalizers"] == [HOLD]
    assert c.get("deploy", "web")["metadata"]["deletionTimestamp"]
    assert names(c, "rs") == ["web-1", "web-2"]          # the owner still exists
    c.patch("deploy", "web", {"metadata": {"finalizers": None}})
    assert gone(c, "deploy", "web")
    wait_for(lambda: not names(c, "rs") and not names(c, "pods"), what="dependents collected")


# -- Foreground -------------------------------------------------------------------------------
def test_foreground_waits_for_the_whole_chain_and_pods_on_their_nodes(api):
    c = api.client()
    d = c.create("deploy", deployment())
    rs = c.create("rs", replicaset("web-1", d))
    c.create("pods", pod("bound", rs, node="n1"))        # graceful: waits for its node
    c.create("pods", pod("loose", rs))                   # removed at once
    out = c.delete("deploy", "web", propagation_policy="Foreground")
    assert out["metadata"]["finalizers"] == [FOREGROUND_FINALIZER] and out["metadata"]["deletionTimestamp"]
    # The ReplicaSet is deleted in the foreground too (it has dependents), the pods in the
    # background; the bound pod terminates on its node and holds both owners meanwhile.
    wait_for(lambda: c.get("pods", "bound")["metadata"].get("deletionTimestamp"), what="pod marked")
    wait_for(lambda: gone(c, "pods", "loose"), what="unbound pod removed")
    rs_now = c.get("rs", "web-1")
    assert rs_now["metadata"]["deletionTimestamp"] and rs_now["metadata"]["finalizers"] == [FOREGROUND_FINALIZER]
    time.sleep(1.5)          # a few of the collector's rechecks: still waiting
    assert c.get("deploy", "web")["metadata"]["finalizers"] == [FOREGROUND_FINALIZER]
    assert c.get("rs", "web-1")["metadata"]["deletionTimestamp"]
    c.delete("pods", "bound", grace_period_seconds=0)      # the node confirms
    wait_for(lambda: gone(c, "deploy", "web"), what="deployment removed")
    log = [(t, k, n) for t, k, n, _ in log_after(api.store, rv(out))]
    deleted = [x for x in log if x[0] == "DELETED"]
    assert deleted == [("DELETED", "pods", "loose"), ("DELETED", "pods", "bound"),
                       ("DELETED", "replicasets", "web-1"), ("DELETED", "deployments", "web")]


def test_foreground_does_not_wait_for_a_dependent_that_does_not_block(api):
    c = api.client()
    d = c.create("deploy", deployment())
    c.create("pods", pod("nonblocking", d, node="n1", block=False))
    c.delete("deploy", "web", propagation_policy="Foreground")
    wait_for(lambda: gone(c, "deploy", "web"), what="deployment removed")
    # ...but deletes it all the same.
    assert c.get("pods", "nonblocking")["metadata"]["deletionTimestamp"]


def test_foreground_unhooks_a_dependent_with_another_live_owner(api):
    c = api.client()
    a = c.create("deploy", deployment("a"))
    b = c.create("deploy", deployment("b"))
    c.create("rs", replicaset("shared", refs=[ref(a), dict(ref(b), controller=False)]))
    c.delete("deploy", "a", propagation_policy="Foreground")
    wait_for(lambda: gone(c, "deploy", "a"), what="a removed")
    shared = c.get("rs", "shared")
    assert not shared["metadata"].get("deletionTimestamp")
    assert [r["uid"] for r in shared["metadata"]["ownerReferences"]] == [b["metadata"]["uid"]]


def test_foreground_cycle_does_not_wait_forever(api):
    c = api.client()
    a = c.create("rs", replicaset("a"))
    b = c.create("rs", replicaset("b", a))
    a["metadata"]["ownerReferences"] = [dict(ref(b), controller=False)]
    c.update("rs", a)
    c.delete("rs", "a", propagation_policy="Foreground")
    wait_for(lambda: gone(c, "rs", "a") and gone(c, "rs", "b"), what="both removed")


def test_foreground_of_an_object_without_dependents_is_immediate(api):
    c = api.client()
    c.create("pods", pod("solo"))
    c.delete("pods", "solo", propagation_policy="Foreground")
    wait_for(lambda: gone(c, "pods", "solo"), what="pod removed")


# -- crash: the work is resumed at start ------------------------------------------------------
def test_pending_work_is_resumed_after_a_restart(tmp_path):
    srv = start_test_server(tmp_path)
    try:
        c = srv.client()
        o = c.create("deploy", deployment("orphaned"))
        c.create("rs", replicaset("kept", o))
        f = c.create("deploy", deployment("fg"))
        c.create("rs", replicaset("fg-rs", f))
        fin = c.create("deploy", deployment("finished"))
        c.create("rs", replicaset("fin-rs", fin))
        c.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
        c.create("pods", dict(pod("in-team"), metadata={"name": "in-team", "namespace": "team"}))
        # What a DELETE writes, written behind the server's back: as if it died right after.
        now = format_time(1_700_000_000)
        for name, fins in (("orphaned", [ORPHAN_FINALIZER]), ("fg", [FOREGROUND_FINALIZER]), ("finished", [])):
            cur = srv.store.get("deployments", "default", name)
            cur["metadata"].update(deletionTimestamp=now, deletionGracePeriodSeconds=0)
            if fins:
                cur["metadata"]["finalizers"] = fins
            srv.store.update("deployments", cur, expected_revision=rv(cur))
        ns = srv.store.get("namespaces", None, "team")
        ns["metadata"].update(deletionTimestamp=now, deletionGracePeriodSeconds=0)
        ns["status"] = {"phase": "Terminating"}
        srv.store.update("namespaces", ns, expected_revision=rv(ns))
    finally:
        srv.stop()
    srv = start_test_server(tmp_path)
    try:
        c = srv.client()
        wait_for(lambda: names(c, "deploy") == [], what="the three deployments removed")
        assert "ownerReferences" not in c.get("rs", "kept")["metadata"]       # orphaned, not collected
        wait_for(lambda: names(c, "rs") == ["kept"], what="fg-rs and fin-rs collected")
        wait_for(lambda: gone(c, "namespaces", "team"), what="namespace terminated")
    finally:
        srv.stop()


# -- options: refused before anything changes ------------------------------------------------
@pytest.mark.parametrize("body, code, needle", [
    ({"propagationPolicy": "Sideways"}, 422, 'Unsupported value: "Sideways"'),
    ({"propagationPolicy": "Orphan", "orphanDependents": True}, 422, "cannot be both set"),
    ({"orphanDependents": "yes"}, 400, "orphanDependents"),
    ({"preconditions": {"uid": "not-it"}}, 409, "Precondition failed: UID in precondition: not-it"),
])
def test_bad_delete_options_change_nothing(api, family, body, code, needle):
    c, d, rss, pods = family
    r = httpx.request("DELETE", f"{api.url}/apis/apps/v1/namespaces/default/deployments/web", json=body,
                      headers={"Authorization": f"Bearer {api.admin_token}"})
    assert r.status_code == code, r.text
    assert needle in r.json()["message"]
    assert c.get("deploy", "web")["metadata"]["resourceVersion"] == d["metadata"]["resourceVersion"]
    assert names(c, "rs") == ["web-1", "web-2"]


# -- the wire forms of kubectl and the Python client -----------------------------------------
@pytest.mark.parametrize("policy", ["Orphan", "Foreground", "Background"])
def test_kubectl_body_form(api, family, policy):
    """kubectl delete --cascade=orphan|foreground|background: DeleteOptions in the body."""
    c, d, rss, pods = family
    r = httpx.request("DELETE", f"{api.url}/apis/apps/v1/namespaces/default/deployments/web",
                      content=f'{{"propagationPolicy":"{policy}"}}',
                      headers={"Authorization": f"Bearer {api.admin_token}", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    wait_for(lambda: gone(c, "deploy", "web"), what="deployment removed")
    if policy == "Orphan":
        assert names(c, "rs") == ["web-1", "web-2"] and names(c, "pods") == ["web-1-p", "web-2-p"]
    else:
        wait_for(lambda: not names(c, "rs") and not names(c, "pods"), what="dependents deleted")


def python_client(api):
    k8s = pytest.importorskip("kubernetes").client
    cfg = k8s.Configuration()
    cfg.host = api.url
    cfg.api_key = {"authorization": api.admin_token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return k8s, k8s.ApiClient(cfg)


@pytest.mark.parametrize("kwargs, orphaned", [
    ({"propagation_policy": "Orphan"}, True),
    ({"orphan_dependents": True}, True),
    ({"propagation_policy": "Foreground"}, False),
    ({"orphan_dependents": False}, False),
])
def test_python_client_query_form(api, family, kwargs, orphaned):
    """The official client's delete_*: no body, the options in the query string."""
    c, d, rss, pods = family
    k8s, ac = python_client(api)
    with ac:
        k8s.AppsV1Api(ac).delete_namespaced_deployment("web", "default", **kwargs)
    wait_for(lambda: gone(c, "deploy", "web"), what="deployment removed")
    if orphaned:
        assert names(c, "rs") == ["web-1", "web-2"]
        assert all("ownerReferences" not in rs["metadata"] for rs in c.list("rs")["items"])
    else:
        wait_for(lambda: not names(c, "rs") and not names(c, "pods"), what="dependents deleted")


# -- deletecollection -------------------------------------------------------------------------
def test_delete_collection_by_label_selector(api):
    c = api.client()
    for i in range(3):
        c.create("pods", pod(f"a{i}", labels={"app": "a"}))
    c.create("pods", pod("bound", labels={"app": "a"}, node="n1"))
    for i in range(2):
        c.create("pods", pod(f"b{i}", labels={"app": "b"}))
    r = httpx.request("DELETE", f"{api.url}/api/v1/namespaces/default/pods", params={"labelSelector": "app=a"},
                      headers={"Authorization": f"Bearer {api.admin_token}"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["kind"] == "PodList" and sorted(p["metadata"]["name"] for p in out["items"]) == \
        ["a0", "a1", "a2", "bound"]
    # The bound pod is marked (it terminates on its node), the others are gone.
    [bound] = [p for p in out["items"] if p["metadata"]["name"] == "bound"]
    assert bound["metadata"]["deletionTimestamp"]
    assert names(c, "pods") == ["b0", "b1", "bound"]


def test_delete_collection_with_options_and_selectors(api):
    c = api.client()
    reg = api.app.state.registry
    from shoal.apiserver.registry import Selectors
    owners = [c.create("rs", replicaset(f"rs{i}")) for i in range(3)]
    for o in owners:
        c.create("pods", pod(f"{o['metadata']['name']}-p", o))
    # Bad options: nothing is deleted.
    with pytest.raises(errors.Invalid):
        reg.delete_collection(resolve("rs"), "default", Selectors.parse("rs in (rs0,rs1)", None),
                              {"propagationPolicy": "Sideways"})
    assert names(c, "rs") == ["rs0", "rs1", "rs2"]
    out = reg.delete_collection(resolve("rs"), "default", Selectors.parse("rs in (rs0,rs1)", None),
                                {"propagationPolicy": "Orphan"})
    assert out["kind"] == "ReplicaSetList" and [o["metadata"]["name"] for o in out["items"]] == ["rs0", "rs1"]
    assert all(o["metadata"]["finalizers"] == [ORPHAN_FINALIZER] for o in out["items"])
    wait_for(lambda: names(c, "rs") == ["rs2"], what="rs0 and rs1 removed")
    assert names(c, "pods") == ["rs0-p", "rs1-p", "rs2-p"]
    assert [p["metadata"]["name"] for p in c.list("pods")["items"] if p["metadata"].get("ownerReferences")] == \
        ["rs2-p"]
    # A field selector; nothing matches: an empty list.
    out = reg.delete_collection(resolve("rs"), "default", Selectors.parse(None, "metadata.name=nope"), {})
    assert out["items"] == [] and names(c, "rs") == ["rs2"]
    with pytest.raises(errors.MethodNotAllowed):
        reg.delete_collection(resolve("ns"), None, Selectors.parse(None, None), {})


def test_python_client_delete_collection(api):
    c = api.client()
    for i in range(3):
        c.create("pods", pod(f"x{i}", labels={"app": "x"}))
    c.create("pods", pod("y", labels={"app": "y"}))
    k8s, ac = python_client(api)
    with ac:
        k8s.CoreV1Api(ac).delete_collection_namespaced_pod("default", label_selector="app=x")
    assert names(c, "pods") == ["y"]


# -- dry run: every policy answers as the real call would and changes nothing -------------------
@pytest.mark.parametrize("policy", ["Orphan", "Foreground", "Background"])
def test_dry_run_delete_changes_nothing(api, family, policy):
    c, d, rss, pods = family
    before = {k: [(o["metadata"]["name"], o["metadata"]["resourceVersion"]) for o in c.list(k)["items"]]
              for k in ("deploy", "rs", "pods")}
    r = httpx.request("DELETE", f"{api.url}/apis/apps/v1/namespaces/default/deployments/web",
                      json={"propagationPolicy": policy, "dryRun": ["All"]},
                      headers={"Authorization": f"Bearer {api.admin_token}"})
    assert r.status_code == 200, r.text
    out = r.json()
    if policy == "Background":
        assert out["kind"] == "Status" and out["status"] == "Success"
    else:
        assert out["metadata"]["deletionTimestamp"]
        assert out["metadata"]["finalizers"] == [ORPHAN_FINALIZER if policy == "Orphan" else FOREGROUND_FINALIZER]
    r = httpx.request("DELETE", f"{api.url}/apis/apps/v1/namespaces/default/replicasets",
                      params={"labelSelector": "app=web", "dryRun": "All"},
                      json={"propagationPolicy": policy, "dryRun": ["All"]},
                      headers={"Authorization": f"Bearer {api.admin_token}"})
    assert r.status_code == 200, r.text
    assert sorted(o["metadata"]["name"] for o in r.json()["items"]) == ["web-1", "web-2"]
    time.sleep(1.0)          # no job of the collector was queued either
    after = {k: [(o["metadata"]["name"], o["metadata"]["resourceVersion"]) for o in c.list(k)["items"]]
             for k in ("deploy", "rs", "pods")}
    assert after == before
