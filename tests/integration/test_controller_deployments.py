"""Deployments, ReplicaSets and the scheduler against the real API server with the real
controllers; hollow agents play the nodes (tests/integration/hollow.py)."""
from collections import Counter

import pytest

from shoal.machinery.api import errors, podtemplate
from shoal.testkit.apiserver import start_test_server
from shoal.cli import rollout as ro
from shoal.controller.deployment import util as u
from shoal.controller.manager import Options
from hollow import HollowCluster, RolloutChecker, deployment, deployment_done, wait_for

pytestmark = pytest.mark.integration

OPTIONS = Options(node_grace_period=3, eviction_delay=2, resync_period=5, monitor_period=0.5)


@pytest.fixture
def cluster(tmp_path):
    srv = start_test_server(tmp_path, controllers=True, controller_options=OPTIONS)
    hollow = None
    try:
        hollow = HollowCluster(srv.client(), nodes=["node-a", "node-b", "node-c"], lease_period=0.5).start()
        yield srv.client(), hollow
    finally:
        if hollow is not None:
            hollow.stop()
        srv.stop()


def app_pods(client, app="web"):
    return [p for p in client.list("pods", "default", label_selector=f"app={app}")["items"]
            if not p["metadata"].get("deletionTimestamp")]


def owned_rss(client, d):
    return [rs for rs in client.list("replicasets", "default")["items"]
            if any(r.get("uid") == d["metadata"]["uid"] for r in rs["metadata"].get("ownerReferences") or [])]


def set_image(client, name, image, **template_annotations):
    for _ in range(10):
        d = client.get("deployments", name, "default")
        d["spec"]["template"]["spec"]["containers"][0]["image"] = image
        if template_annotations:
            d["spec"]["template"]["metadata"].setdefault("annotations", {}).update(template_annotations)
        try:
            return client.update("deployments", d)
        except errors.Conflict:
            continue
    raise AssertionError("could not update the deployment")


def test_apply_binds_pods_evenly_with_kubernetes_naming(cluster):
    client, hollow = cluster
    d = client.create("deployments", deployment(replicas=6))
    done = wait_for(lambda: deployment_done(client, "web"), 60, what="deployment web available")
    [rs] = owned_rss(client, d)
    h = rs["metadata"]["labels"][u.POD_TEMPLATE_HASH_LABEL]
    assert rs["metadata"]["name"] == f"web-{h}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", u.POD_TEMPLATE_HASH_LABEL: h}
    ref = rs["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"]) == ("Deployment", "web", True)
    assert rs["metadata"]["annotations"][u.REVISION_ANNOTATION] == "1"
    assert done["metadata"]["annotations"][u.REVISION_ANNOTATION] == "1"
    pods = app_pods(client)
    assert len(pods) == 6
    assert all(p["metadata"]["labels"][u.POD_TEMPLATE_HASH_LABEL] == h for p in pods)
    assert all(p["metadata"]["name"].startswith(f"web-{h}-") for p in pods)
    assert Counter(p["spec"]["nodeName"] for p in pods) == Counter({"node-a": 2, "node-b": 2, "node-c": 2})
    conds = {c["type"]: c for c in done["status"]["conditions"]}
    assert conds["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
    # events are written once the cluster has settled (machinery/control/events.py)
    wanted = {("ScalingReplicaSet", "Deployment"), ("SuccessfulCreate", "ReplicaSet"), ("Scheduled", "Pod")}
    wait_for(lambda: wanted <= {(e["reason"], e["involvedObject"]["kind"])
                                for e in client.list("events", "default")["items"]}, 30, what="the rollout's events")
    cidrs = {n["spec"].get("podCIDR") for n in client.list("nodes")["items"]}
    assert cidrs == {"10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"}


def test_rolling_update_never_breaks_surge_or_availability_bounds(cluster):
    client, _ = cluster
    client.create("deployments", deployment(replicas=6, surge=2, unavailable=1))
    wait_for(lambda: deployment_done(client, "web"), 60, what="initial rollout")
    with RolloutChecker(client, app="web", replicas=6, max_surge=2, max_unavailable=1) as checker:
        checker.arm()
        set_image(client, "web", "registry.local/httpd:2")
        wait_for(lambda: deployment_done(client, "web") and
                 all(p["spec"]["containers"][0]["image"].endswith(":2") for p in app_pods(client)) and
                 len(app_pods(client)) == 6, 90, what="rollout to httpd:2")
    assert checker.violations == []
    assert checker.max_seen > 6  # the surge was used
    assert any(len(images) == 2 for images in checker.images_seen)  # old and new ran side by side
    d = client.get("deployments", "web", "default")
    assert d["metadata"]["annotations"][u.REVISION_ANNOTATION] == "2"
    rss = sorted(owned_rss(client, d), key=lambda r: r["metadata"]["annotations"][u.REVISION_ANNOTATION])
    assert [(r["metadata"]["annotations"][u.REVISION_ANNOTATION], r["spec"]["replicas"]) for r in rss] == [("1", 0), ("2", 6)]


def test_never_ready_template_stalls_at_bounds_then_deadline_exceeded(cluster):
    client, _ = cluster
    client.create("deployments", deployment(replicas=4, surge=1, unavailable=1, progress_deadline=4))
    wait_for(lambda: deployment_done(client, "web"), 60, what="initial rollout")
    with RolloutChecker(client, app="web", replicas=4, max_surge=1, max_unavailable=1) as checker:
        checker.arm()
        set_image(client, "web", "registry.local/httpd:broken", **{"hollow.shoal.io/never-ready": "true"})

        def timed_out():
            d = client.get("deployments", "web", "default")
            c = next((c for c in d["status"].get("conditions", []) if c["type"] == "Progressing"), {})
            return d if c.get("reason") == "ProgressDeadlineExceeded" else None
        d = wait_for(timed_out, 60, what="ProgressDeadlineExceeded")
    assert checker.violations == []
    cond = next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")
    assert cond["status"] == "False" and cond["message"].endswith("has timed out progressing.")
    # stuck exactly at the bounds: 5 pods (4 + surge 1), 3 of them ready (4 - 1)
    pods = app_pods(client)
    assert len(pods) == 5 and sum(1 for p in pods if ro_ready(p)) == 3
    assert d["status"]["updatedReplicas"] == 2 and d["status"]["availableReplicas"] == 3
    message, done, error = ro.rollout_status_message(d)
    assert not done and error and "exceeded its progress deadline" in error


def ro_ready(p):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))


def test_undo_restores_the_previous_replicaset(cluster):
    client, _ = cluster
    d = client.create("deployments", deployment(replicas=3))
    wait_for(lambda: deployment_done(client, "web"), 60, what="revision 1")
    [rs1] = owned_rss(client, d)
    set_image(client, "web", "registry.local/httpd:2")
    wait_for(lambda: deployment_done(client, "web") and len(app_pods(client)) == 3 and
             all(p["spec"]["containers"][0]["image"].endswith(":2") for p in app_pods(client)), 60, what="revision 2")
    # what `shoal rollout undo` does: copy the previous revision's template back
    d = client.get("deployments", "web", "default")
    target = ro.rollback_target(d, owned_rss(client, d), 0)
    assert target.replicaset["metadata"]["name"] == rs1["metadata"]["name"]
    d["spec"]["template"] = podtemplate.without_hash_label(target.replicaset["spec"]["template"])
    client.update("deployments", d)
    wait_for(lambda: deployment_done(client, "web") and len(app_pods(client)) == 3 and
             all(p["spec"]["containers"][0]["image"].endswith(":1") for p in app_pods(client)), 60, what="undo")
    rss = owned_rss(client, d)
    assert len(rss) == 2  # no third ReplicaSet
    back = next(r for r in rss if r["metadata"]["name"] == rs1["metadata"]["name"])
    assert back["spec"]["replicas"] == 3
    assert back["metadata"]["annotations"][u.REVISION_ANNOTATION] == "3"
    assert back["metadata"]["annotations"][u.REVISION_HISTORY_ANNOTATION] == "1"
    assert client.get("deployments", "web", "default")["metadata"]["annotations"][u.REVISION_ANNOTATION] == "3"


def test_recreate_stops_old_pods_before_starting_new(cluster):
    client, _ = cluster
    client.create("deployments", deployment(replicas=3, strategy="Recreate"))
    wait_for(lambda: deployment_done(client, "web"), 60, what="initial rollout")
    with RolloutChecker(client, app="web", replicas=3, max_surge=0, max_unavailable=3) as checker:
        set_image(client, "web", "registry.local/httpd:2")
        wait_for(lambda: deployment_done(client, "web") and len(app_pods(client)) == 3 and
                 all(p["spec"]["containers"][0]["image"].endswith(":2") for p in app_pods(client)), 60,
                 what="recreate rollout")
    assert checker.violations == []
    assert not any(len(images) > 1 for images in checker.images_seen)  # never old and new together


def test_scale_and_pause(cluster):
    client, _ = cluster
    client.create("deployments", deployment(replicas=2))
    wait_for(lambda: deployment_done(client, "web"), 60, what="2 replicas")
    client.patch("deployments", "web", {"spec": {"replicas": 5}}, "default")
    wait_for(lambda: deployment_done(client, "web") and len(app_pods(client)) == 5, 60, what="scaled to 5")
    client.patch("deployments", "web", {"spec": {"paused": True}}, "default")
    wait_for(lambda: any(c.get("reason") == "DeploymentPaused" for c in
                         client.get("deployments", "web", "default")["status"].get("conditions", [])), 30,
             what="paused condition")
    set_image(client, "web", "registry.local/httpd:2")
    client.patch("deployments", "web", {"spec": {"replicas": 4}}, "default")  # scaling still works when paused
    wait_for(lambda: len(app_pods(client)) == 4, 60, what="scaled to 4 while paused")
    assert all(p["spec"]["containers"][0]["image"].endswith(":1") for p in app_pods(client))  # no rollout
    client.patch("deployments", "web", {"spec": {"paused": False}}, "default")
    wait_for(lambda: deployment_done(client, "web") and len(app_pods(client)) == 4 and
             all(p["spec"]["containers"][0]["image"].endswith(":2") for p in app_pods(client)), 60, what="resumed")


def test_delete_deployment_removes_replicasets_and_pods(cluster):
    client, _ = cluster
    client.create("deployments", deployment(replicas=3))
    wait_for(lambda: deployment_done(client, "web"), 60, what="rollout")
    client.delete("deployments", "web", "default")
    wait_for(lambda: not client.list("replicasets", "default")["items"] and
             not client.list("pods", "default")["items"], 60, what="replica sets and pods gone")


def test_orphaned_replicaset_is_garbage_collected(cluster):
    client, _ = cluster
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "ghost", "namespace": "default",
                       "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "gone",
                                            "uid": "00000000-0000-0000-0000-000000000000", "controller": True}]},
          "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "ghost"}},
                   "template": {"metadata": {"labels": {"app": "ghost"}},
                                "spec": {"containers": [{"name": "c", "image": "registry.local/httpd:1"}]}}}}
    client.create("replicasets", rs)
    wait_for(lambda: not any(r["metadata"]["name"] == "ghost" for r in client.list("replicasets", "default")["items"]),
             30, what="orphaned replica set deleted")
    wait_for(lambda: not app_pods(client, "ghost"), 30, what="its pods deleted")


def test_pod_that_fits_nowhere_stays_pending_with_reason(cluster):
    client, _ = cluster
    client.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "huge", "namespace": "default"},
                           "spec": {"containers": [{"name": "c", "image": "registry.local/httpd:1",
                                                    "resources": {"requests": {"memory": "100Gi"}}}]}})

    def unschedulable():
        p = client.get("pods", "huge", "default")
        c = next((c for c in (p.get("status") or {}).get("conditions", []) if c["type"] == "PodScheduled"), None)
        return c if c and c["status"] == "False" else None
    cond = wait_for(unschedulable, 30, what="PodScheduled=False")
    assert cond["reason"] == "Unschedulable"
    assert cond["message"] == "0/3 nodes are available: 3 Insufficient memory."
    assert not client.get("pods", "huge", "default")["spec"].get("nodeName")
    wait_for(lambda: [e for e in client.list("events", "default")["items"]
                      if e["reason"] == "FailedScheduling" and e["involvedObject"]["name"] == "huge"
                      and e["message"] == "0/3 nodes are available: 3 Insufficient memory."
                      and e["type"] == "Warning"], 30, what="FailedScheduling event")


# -- scaling during a rollout (issue 16) ----------------------------------------------------------
def scale(client, name, replicas):
    """What `kubectl scale` does: a merge patch of the /scale subresource."""
    return client.patch("deployments", name, {"spec": {"replicas": replicas}}, "default", subresource="scale")


def rs_table(client, d):
    """{image tag: (spec.replicas, desired-replicas, max-replicas)} of the Deployment's ReplicaSets."""
    out = {}
    for r in owned_rss(client, d):
        ann = r["metadata"].get("annotations") or {}
        tag = r["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
        out[tag] = (r["spec"]["replicas"], ann.get(u.DESIRED_REPLICAS_ANNOTATION), ann.get(u.MAX_REPLICAS_ANNOTATION))
    return out


def rolled_out_to(client, d, tag, replicas):
    """The Deployment is complete on the image `tag`: one ReplicaSet with that template holding every
    replica, all others at 0, and exactly `replicas` pods, all on `tag`."""
    if not deployment_done(client, "web"):
        return False
    pods = app_pods(client)
    table = rs_table(client, d)
    return (len(pods) == replicas and all(p["spec"]["containers"][0]["image"].endswith(f":{tag}") for p in pods)
            and table.get(tag, (None,))[0] == replicas
            and all(v[0] == 0 for t, v in table.items() if t != tag))


def test_scale_during_a_stuck_rollout_refreshes_every_replicaset_then_set_image_completes(cluster):
    """The jam of issue 16: `set image` then `scale` left the ReplicaSet whose size did not change
    with a stale desired-replicas annotation, so every later sync was a "scaling event" and the
    next `set image` never got a ReplicaSet."""
    client, _ = cluster
    d = client.create("deployments", deployment(replicas=5, surge="25%", unavailable="25%"))  # surge 2, unavailable 1
    wait_for(lambda: deployment_done(client, "web"), 60, what="revision 1")
    set_image(client, "web", "registry.local/httpd:2", **{"hollow.shoal.io/never-ready": "true"})
    # never-ready pods stop the rollout exactly at its bounds: 5 - 1 old, 7 - 4 new
    wait_for(lambda: rs_table(client, d) == {"1": (4, "5", "7"), "2": (3, "5", "7")}, 60, what="stuck at the bounds")
    scale(client, "web", 6)   # max 8: the old ReplicaSet takes round(4 * 8/7) = 5, the new one stays at 3
    wait_for(lambda: rs_table(client, d) == {"1": (5, "6", "8"), "2": (3, "6", "8")}, 30,
             what="proportional scale with both ReplicaSets' annotations refreshed")
    set_image(client, "web", "registry.local/httpd:3", **{"hollow.shoal.io/never-ready": "false"})
    wait_for(lambda: rolled_out_to(client, d, "3", 6), 90, what="rollout to httpd:3 after the scale")
    assert rs_table(client, d)["3"] == (6, "6", "8")
    done = client.get("deployments", "web", "default")
    assert done["metadata"]["annotations"][u.REVISION_ANNOTATION] == "3"


def test_set_image_scale_set_image_completes(cluster):
    """set image, then scale while the rollout runs, then set image again: always completes."""
    client, _ = cluster
    d = client.create("deployments", deployment(replicas=5, surge="25%", unavailable="25%"))
    wait_for(lambda: deployment_done(client, "web"), 60, what="revision 1")
    set_image(client, "web", "registry.local/httpd:2")
    scale(client, "web", 9)
    wait_for(lambda: rolled_out_to(client, d, "2", 9), 90, what="rollout to httpd:2 at 9 replicas")
    set_image(client, "web", "registry.local/httpd:3")
    scale(client, "web", 4)
    wait_for(lambda: rolled_out_to(client, d, "3", 4), 90, what="rollout to httpd:3 at 4 replicas")
    table = rs_table(client, d)
    assert table["3"] == (4, "4", "5")   # 25% of 4 rounds up to 1
    assert sorted(table) == ["1", "2", "3"]


def test_scale_down_during_a_rollout_leaves_no_replicaset_above_its_share(cluster):
    """The trial of issue 16 that left an old ReplicaSet at 6 replicas for `replicas: 5`. A
    rollout of 6 replicas stopped at its bounds (5 old, 3 new, maxSurge 2), scaled to 5: the old
    ReplicaSet gives the one replica back (round(5 * 7/8) = 4) and the new one keeps its size but
    must be rewritten; then a new image rolls out. From the controller's first sync after the
    scale on, the ReplicaSets never sum to more than 5 + 2."""
    client, _ = cluster
    d = client.create("deployments", deployment(replicas=6, surge="25%", unavailable="25%"))  # surge 2, unavailable 1
    wait_for(lambda: deployment_done(client, "web"), 60, what="revision 1")
    set_image(client, "web", "registry.local/httpd:2", **{"hollow.shoal.io/never-ready": "true"})
    wait_for(lambda: rs_table(client, d) == {"1": (5, "6", "8"), "2": (3, "6", "8")}, 60, what="stuck at the bounds")
    before = client.list("replicasets", "default")
    scaled = scale(client, "web", 5)
    assert int(scaled["spec"]["replicas"]) == 5
    wait_for(lambda: rs_table(client, d) == {"1": (4, "5", "7"), "2": (3, "5", "7")}, 30,
             what="proportional scale-down with both ReplicaSets' annotations refreshed")
    set_image(client, "web", "registry.local/httpd:3", **{"hollow.shoal.io/never-ready": "false"})
    wait_for(lambda: rolled_out_to(client, d, "3", 5), 90, what="rollout to httpd:3 at 5 replicas")
    assert rs_table(client, d) == {"1": (0, "5", "7"), "2": (0, "5", "7"), "3": (5, "5", "7")}
    # Replay every ReplicaSet write since the scale. The controller writes one ReplicaSet at a
    # time, so the bound holds once its sync is done: whenever every active one says desired 5.
    state = {r["metadata"]["name"]: (r["spec"]["replicas"], r["metadata"]["annotations"][u.DESIRED_REPLICAS_ANNOTATION])
             for r in before["items"]}
    checked, violations = 0, []
    for ev in client.watch("replicasets", "default", resource_version=before["metadata"]["resourceVersion"],
                           timeout_seconds=2):
        if ev["type"] == "BOOKMARK":
            continue
        obj = ev["object"]
        desired = (obj["metadata"].get("annotations") or {}).get(u.DESIRED_REPLICAS_ANNOTATION)
        state[obj["metadata"]["name"]] = (0 if ev["type"] == "DELETED" else obj["spec"]["replicas"], desired)
        if all(want == "5" for size, want in state.values() if size > 0):
            checked += 1
            if sum(size for size, _ in state.values()) > 7:
                violations.append(dict(state))
    assert checked and violations == []
