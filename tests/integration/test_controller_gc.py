"""Cascading deletion of Deployments with the real controllers running (the deployment and
ReplicaSet controllers, controller/gc.py) and hollow agents playing the nodes: Orphan never
loses a dependent to the collectors, Foreground waits for the whole chain, Background goes at
once, a finalizer of the user's holds everything. Then controller/gc.py alone, against the
real API server, on the races it must not lose."""
import os
import shutil
import subprocess
import time

import pytest

from shoal.controller.gc import GarbageCollector
from shoal.controller.manager import Options
from shoal.machinery.api import errors
from shoal.machinery.api.deletion import FOREGROUND_FINALIZER, ORPHAN_FINALIZER
from shoal.machinery.control import Informer
from shoal.machinery.control.events import RecordingEvents
from shoal.testkit.apiserver import start_test_server
from hollow import HollowCluster, deployment, deployment_done, wait_for

pytestmark = pytest.mark.integration

OPTIONS = Options(node_grace_period=3, eviction_delay=2, resync_period=2, monitor_period=0.5)
HOLD = "example.com/hold"


@pytest.fixture
def cluster(tmp_path):
    srv = start_test_server(tmp_path, controllers=True, controller_options=OPTIONS)
    hollow = None
    try:
        hollow = HollowCluster(srv.client(), nodes=["node-a", "node-b"], lease_period=0.5).start()
        yield srv, srv.client()
    finally:
        if hollow is not None:
            hollow.stop()
        srv.stop()


def gone(client, kind, name):
    try:
        client.get(kind, name, "default")
    except errors.NotFound:
        return True
    return False


def owned(client, kind, owner):
    return [o for o in client.list(kind, "default")["items"]
            if any(r.get("uid") == owner["metadata"]["uid"] for r in o["metadata"].get("ownerReferences") or [])]


def live_pods(client, app):
    return [p for p in client.list("pods", "default", label_selector=f"app={app}")["items"]
            if not p["metadata"].get("deletionTimestamp")]


def set_image(client, name, image):
    for _ in range(20):
        d = client.get("deployments", name, "default")
        d["spec"]["template"]["spec"]["containers"][0]["image"] = image
        try:
            return client.update("deployments", d)
        except errors.Conflict:
            continue
    raise AssertionError(f"could not update deployment {name}")


def deleted_in_order(store, after_rev):
    """(kind plural, name) of every removal after `after_rev`, in commit order."""
    return [(e.resource, e.object["metadata"]["name"]) for e in store.events_after(after_rev, limit=100000)
            if e.type == "DELETED" and e.resource != "events"]


def test_orphan_of_deployments_with_five_replicasets_keeps_every_dependent(cluster):
    """The race of issue 16 (0 to 5 of 5 ReplicaSets survived): ten Deployments with five
    ReplicaSets each (five revisions), orphaned one after the other; every ReplicaSet and pod
    survives without the owner reference, also after the collectors' resyncs."""
    srv, c = cluster
    apps = [f"web{i}" for i in range(10)]
    for app in apps:
        c.create("deployments", deployment(app, replicas=2))
    for rev in range(2, 6):
        for app in apps:
            set_image(c, app, f"registry.local/httpd:{rev}")
        wait_for(lambda: all(deployment_done(c, a) for a in apps), 120, what=f"revision {rev} rolled out")
    snapshot = {}
    for app in apps:
        d = c.get("deployments", app, "default")
        rss = owned(c, "replicasets", d)
        assert len(rss) == 5, (app, [r["metadata"]["name"] for r in rss])
        snapshot[app] = ({r["metadata"]["uid"] for r in rss}, {p["metadata"]["uid"] for p in live_pods(c, app)})
        assert len(snapshot[app][1]) == 2
    start = int(c.list("deployments", "default")["metadata"]["resourceVersion"])
    for app in apps:
        out = c.delete("deployments", app, "default", propagation_policy="Orphan")
        assert out["metadata"]["finalizers"] == [ORPHAN_FINALIZER]
        wait_for(lambda: gone(c, "deployments", app), 30, what=f"deployment {app} removed")
    time.sleep(2 * OPTIONS.resync_period + 1)       # the collectors' resyncs: nothing changes
    for app in apps:
        rs_uids, pod_uids = snapshot[app]
        rss = [r for r in c.list("replicasets", "default", label_selector=f"app={app}")["items"]]
        assert {r["metadata"]["uid"] for r in rss} == rs_uids, app
        assert all(not r["metadata"].get("ownerReferences") and not r["metadata"].get("deletionTimestamp")
                   for r in rss), app
        pods = live_pods(c, app)
        assert {p["metadata"]["uid"] for p in pods} == pod_uids, app
        assert all(p["metadata"]["ownerReferences"][0]["uid"] in rs_uids for p in pods)
    # Nothing but the Deployments was removed since.
    assert sorted(deleted_in_order(srv.store, start)) == [("deployments", app) for app in apps]


def test_foreground_deletion_waits_for_replicasets_and_pods(cluster):
    srv, c = cluster
    c.create("deployments", deployment("fg", replicas=3))
    wait_for(lambda: deployment_done(c, "fg"), 60, what="rollout")
    d = c.get("deployments", "fg", "default")
    [rs] = owned(c, "replicasets", d)
    pods = owned(c, "pods", rs)
    # One pod is held by a finalizer of the user's: it counts as existing while terminating.
    held = pods[0]
    c.patch("pods", held["metadata"]["name"], {"metadata": {"finalizers": [HOLD]}}, "default")
    out = c.delete("deployments", "fg", "default", propagation_policy="Foreground")
    rev = int(out["metadata"]["resourceVersion"])
    assert out["metadata"]["finalizers"] == [FOREGROUND_FINALIZER] and out["metadata"]["deletionTimestamp"]
    wait_for(lambda: [p["metadata"]["name"] for p in c.list("pods", "default")["items"]]
             == [held["metadata"]["name"]], 30, what="the other pods gone")
    time.sleep(OPTIONS.resync_period + 1)
    still = c.get("deployments", "fg", "default")
    assert still["metadata"]["finalizers"] == [FOREGROUND_FINALIZER]
    rs_now = c.get("replicasets", rs["metadata"]["name"], "default")
    assert rs_now["metadata"]["finalizers"] == [FOREGROUND_FINALIZER] and rs_now["metadata"]["deletionTimestamp"]
    assert c.get("pods", held["metadata"]["name"], "default")["metadata"]["deletionTimestamp"]
    c.patch("pods", held["metadata"]["name"], {"metadata": {"finalizers": None}}, "default")
    wait_for(lambda: gone(c, "deployments", "fg"), 30, what="deployment removed")
    order = deleted_in_order(srv.store, rev)
    assert sorted(order[:3]) == sorted(("pods", p["metadata"]["name"]) for p in pods)
    assert order[3:] == [("replicasets", rs["metadata"]["name"]), ("deployments", "fg")]
    # No controller made anything for the Deployment or ReplicaSet being deleted.
    added = [(e.resource, e.object["metadata"]["name"]) for e in srv.store.events_after(rev, limit=100000)
             if e.type == "ADDED" and e.resource in ("pods", "replicasets")]
    assert added == []


def test_background_deletion_removes_the_deployment_at_once(cluster):
    _, c = cluster
    c.create("deployments", deployment("bg", replicas=2))
    wait_for(lambda: deployment_done(c, "bg"), 60, what="rollout")
    out = c.delete("deployments", "bg", "default")
    assert out["kind"] == "Status" and out["status"] == "Success"
    assert gone(c, "deployments", "bg")
    wait_for(lambda: not c.list("replicasets", "default")["items"] and not c.list("pods", "default")["items"],
             60, what="replica sets and pods collected")


def test_a_finalizer_of_the_users_holds_the_deployment_and_its_dependents(cluster):
    _, c = cluster
    c.create("deployments", deployment("held", replicas=2))
    wait_for(lambda: deployment_done(c, "held"), 60, what="rollout")
    c.patch("deployments", "held", {"metadata": {"finalizers": [HOLD]}}, "default")
    out = c.delete("deployments", "held", "default")
    assert out["metadata"]["deletionTimestamp"] and out["metadata"]["finalizers"] == [HOLD]
    rss = {r["metadata"]["uid"] for r in c.list("replicasets", "default")["items"]}
    pods = {p["metadata"]["uid"] for p in live_pods(c, "held")}
    time.sleep(2 * OPTIONS.resync_period + 1)    # an owner being deleted still exists: nothing is collected
    assert {r["metadata"]["uid"] for r in c.list("replicasets", "default")["items"]} == rss
    assert {p["metadata"]["uid"] for p in live_pods(c, "held")} == pods and len(pods) == 2
    c.patch("deployments", "held", {"metadata": {"finalizers": None}}, "default")
    assert gone(c, "deployments", "held")
    wait_for(lambda: not c.list("replicasets", "default")["items"] and not c.list("pods", "default")["items"],
             60, what="replica sets and pods collected")


# -- controller/gc.py on its own ---------------------------------------------------------------
def rs_body(name, refs=None):
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
          "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                   "template": {"metadata": {"labels": {"app": name}},
                                "spec": {"containers": [{"name": "c", "image": "registry.local/httpd:1"}]}}}}
    if refs:
        rs["metadata"]["ownerReferences"] = refs
    return rs


def dep_ref(name, uid):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": True}


class SpyClient:
    """The admin client, with a hook run before each GET of a Deployment."""

    def __init__(self, client, before_get=None):
        self._c = client
        self.before_get = before_get
        self.deleted = []

    def get(self, kind, name, namespace=None):
        if kind == "Deployment" and self.before_get:
            self.before_get()
        return self._c.get(kind, name, namespace)

    def delete(self, kind, name, namespace=None, **kw):
        self.deleted.append(name)
        return self._c.delete(kind, name, namespace, **kw)

    def __getattr__(self, name):
        return getattr(self._c, name)


def collector(api_client, spy):
    rss = Informer(api_client, "ReplicaSet")          # not started: the test fills its cache
    deps = Informer(api_client, "Deployment")
    return GarbageCollector(spy, dependents={"ReplicaSet": rss}, owners={"Deployment": deps},
                            events=RecordingEvents()), rss, deps


GHOST_UID = "00000000-0000-0000-0000-000000000001"


def test_gc_collects_a_dependent_whose_owner_never_existed(api):
    c = api.client()
    live = c.create("replicasets", rs_body("ghost", [dep_ref("gone", GHOST_UID)]))
    spy = SpyClient(c)
    gc, rss, _ = collector(c, spy)
    rss.observe(live)
    gc.reconcile("ReplicaSet|default/ghost")
    assert spy.deleted == ["ghost"] and gone(c, "replicasets", "ghost")


def test_gc_judges_the_live_dependent_not_its_cache(api):
    """The cache still shows a dangling owner the server has meanwhile removed (orphaning):
    nothing is deleted."""
    c = api.client()
    stale = c.create("replicasets", rs_body("rs", [dep_ref("gone", GHOST_UID)]))
    fresh = c.get("replicasets", "rs", "default")
    fresh["metadata"].pop("ownerReferences")
    c.update("replicasets", fresh)
    spy = SpyClient(c)
    gc, rss, _ = collector(c, spy)
    rss.observe(stale)
    gc.reconcile("ReplicaSet|default/rs")
    assert spy.deleted == [] and not gone(c, "replicasets", "rs")


def test_gc_delete_is_conditional_on_the_version_it_judged(api):
    """The reference is removed between the judgement and the delete (the server orphaning
    it): the delete's resourceVersion precondition fails and the dependent survives."""
    c = api.client()
    live = c.create("replicasets", rs_body("rs", [dep_ref("gone", GHOST_UID)]))

    def orphan_meanwhile():
        cur = c.get("replicasets", "rs", "default")
        if cur["metadata"].get("ownerReferences"):
            cur["metadata"].pop("ownerReferences")
            c.update("replicasets", cur)
    spy = SpyClient(c, before_get=orphan_meanwhile)
    gc, rss, _ = collector(c, spy)
    rss.observe(live)
    with pytest.raises(errors.Conflict):          # the manager's retry path: judged again later
        gc.reconcile("ReplicaSet|default/rs")
    assert not gone(c, "replicasets", "rs")
    rss.observe(c.get("replicasets", "rs", "default"))
    gc.reconcile("ReplicaSet|default/rs")         # judged again: no owner reference, nothing to do
    assert not gone(c, "replicasets", "rs")


@pytest.mark.parametrize("finalizers, delete_it", [([HOLD], True), ([ORPHAN_FINALIZER], False), ([HOLD], False)])
def test_gc_never_collects_the_dependents_of_an_owner_that_exists(api, finalizers, delete_it):
    """An owner being deleted (held by a finalizer), or carrying `orphan`, still exists."""
    c = api.client()
    d = c.create("deployments", {"apiVersion": "apps/v1", "kind": "Deployment",
                                 "metadata": {"name": "owner", "finalizers": finalizers},
                                 "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "owner"}},
                                          "template": {"metadata": {"labels": {"app": "owner"}},
                                                       "spec": {"containers": [{"name": "c",
                                                                                "image": "registry.local/h:1"}]}}}})
    live = c.create("replicasets", rs_body("dep", [dep_ref("owner", d["metadata"]["uid"])]))
    if delete_it:
        assert c.delete("deployments", "owner", "default")["metadata"]["deletionTimestamp"]
    spy = SpyClient(c)
    gc, rss, _ = collector(c, spy)                # the owner is not in the cache: a live GET decides
    rss.observe(live)
    gc.reconcile("ReplicaSet|default/dep")
    assert spy.deleted == [] and not gone(c, "replicasets", "dep")


def test_gc_strips_only_the_dangling_reference(api):
    c = api.client()
    d = c.create("deployments", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "alive"},
                                 "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "a"}},
                                          "template": {"metadata": {"labels": {"app": "a"}},
                                                       "spec": {"containers": [{"name": "c",
                                                                                "image": "registry.local/h:1"}]}}}})
    live = c.create("replicasets", rs_body("two", [dep_ref("alive", d["metadata"]["uid"]),
                                                   dict(dep_ref("gone", GHOST_UID), controller=False)]))
    spy = SpyClient(c)
    gc, rss, _ = collector(c, spy)
    rss.observe(live)
    gc.reconcile("ReplicaSet|default/two")
    refs = c.get("replicasets", "two", "default")["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == [d["metadata"]["uid"]] and spy.deleted == []


# -- the real kubectl ----------------------------------------------------------------------------
@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
def test_kubectl_delete_cascade(tmp_path):
    """`kubectl delete --cascade=orphan|foreground|background` (DeleteOptions in the body, then
    kubectl waits until the Deployment is gone) over TLS, with the dependents' fate checked
    when kubectl returns."""
    srv = start_test_server(tmp_path, controllers=True, controller_options=OPTIONS, tls=True)
    hollow = HollowCluster(srv.client(), nodes=["node-a"], lease_period=0.5).start()
    try:
        c = srv.client()
        for app in ("o", "f", "b"):
            c.create("deployments", deployment(app, replicas=2))
        for app in ("o", "f", "b"):
            wait_for(lambda: deployment_done(c, app), 60, what=f"{app} rolled out")
        env = dict(os.environ, KUBECONFIG=str(srv.kubeconfig), HOME=str(tmp_path))

        def kubectl_delete(app, cascade):
            r = subprocess.run(["kubectl", "delete", "deployment", app, f"--cascade={cascade}"], env=env,
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stdout.strip() == f'deployment.apps "{app}" deleted', r.stderr
            assert gone(c, "deployments", app)

        def of(kind, app):
            return c.list(kind, "default", label_selector=f"app={app}")["items"]
        rs_o = {r["metadata"]["uid"] for r in of("replicasets", "o")}
        pods_o = {p["metadata"]["uid"] for p in of("pods", "o")}
        kubectl_delete("o", "orphan")
        assert {r["metadata"]["uid"] for r in of("replicasets", "o")} == rs_o
        assert all(not r["metadata"].get("ownerReferences") for r in of("replicasets", "o"))
        assert {p["metadata"]["uid"] for p in of("pods", "o")} == pods_o
        kubectl_delete("f", "foreground")
        assert of("replicasets", "f") == [] and of("pods", "f") == []     # gone before their owner
        kubectl_delete("b", "background")
        wait_for(lambda: not of("replicasets", "b") and not of("pods", "b"), 30, what="b's dependents collected")
        assert {r["metadata"]["uid"] for r in of("replicasets", "o")} == rs_o
    finally:
        hollow.stop()
        srv.stop()
