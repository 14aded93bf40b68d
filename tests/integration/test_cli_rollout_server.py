"""rollout status/history/undo/pause/resume/restart, scale and set image against a real API server.

Without controllers, the test plays the deployment controller: it writes Deployment status through
/status and creates the ReplicaSets by hand, so each expected line is deterministic. One test runs
the real controllers to check history and undo end to end (no nodes needed: ReplicaSets suffice).
"""
from __future__ import annotations

import pytest

from cli_helpers import shoal, shoal_in_thread, wait_until

pytestmark = pytest.mark.integration


def deployment(name="web", replicas=3, image="127.0.0.1:5000/web:v1"):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


def set_status(c, name, **status):
    d = c.get("deploy", name)
    d["status"] = {"observedGeneration": d["metadata"]["generation"], **status}
    return c.update_status("deploy", d)


W = 'Waiting for deployment "web" rollout to finish: '


def test_rollout_status_follows_the_watch_and_prints_each_change_once(api):
    c = api.client()
    c.create("deploy", deployment())
    t, out, err, box = shoal_in_thread(api, "rollout", "status", "deployment/web", "--timeout", "60s")
    wait_until(lambda: "spec update to be observed" in out.text(), what="the first status line")
    set_status(c, "web", replicas=3, updatedReplicas=1)
    wait_until(lambda: "1 out of 3" in out.text(), what="the updated-replicas line")
    set_status(c, "web", replicas=3, updatedReplicas=1)  # same message again: not printed twice
    set_status(c, "web", replicas=5, updatedReplicas=3, availableReplicas=2, readyReplicas=2)
    set_status(c, "web", replicas=3, updatedReplicas=3, availableReplicas=2, readyReplicas=2)
    set_status(c, "web", replicas=3, updatedReplicas=3, availableReplicas=3, readyReplicas=3)
    t.join(30)
    assert not t.is_alive() and box["rc"] == 0, err.getvalue()
    assert out.text().splitlines() == [
        "Waiting for deployment spec update to be observed...",
        W + "1 out of 3 new replicas have been updated...",
        W + "2 old replicas are pending termination...",
        W + "2 of 3 updated replicas are available...",
        'deployment "web" successfully rolled out']


def test_rollout_status_deadline_timeout_and_not_found(api):
    c = api.client()
    c.create("deploy", deployment())
    set_status(c, "web", replicas=3, updatedReplicas=1, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "web-1" has timed out progressing.'}])
    r = shoal(api, "rollout", "status", "deploy/web")
    assert (r.rc, r.out, r.err) == (1, "", 'error: deployment "web" exceeded its progress deadline\n')
    set_status(c, "web", replicas=3, updatedReplicas=1)
    r = shoal(api, "rollout", "status", "deploy/web", "--timeout", "1s")
    assert r.rc == 1 and r.out == W + "1 out of 3 new replicas have been updated...\n"
    assert r.err == "error: timed out waiting for the condition\n"
    r = shoal(api, "rollout", "status", "deploy/web", "--no-watch")
    assert r.rc == 0 and r.out == W + "1 out of 3 new replicas have been updated...\n"
    r = shoal(api, "rollout", "status", "deploy/ghost")
    assert (r.rc, r.err) == (1, 'error: deployments.apps "ghost" not found\n')


def replicaset(c, deploy, revision, image, hash_):
    return c.create("rs", {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": f"web-{hash_}", "labels": {"app": "web", "pod-template-hash": hash_},
                     "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                          "uid": deploy["metadata"]["uid"], "controller": True}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web", "pod-template-hash": hash_}},
                 "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": hash_}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}}})


def image_of(c, name="web"):
    return c.get("deploy", name)["spec"]["template"]["spec"]["containers"][0]["image"]


def test_history_undo_pause_resume_restart_scale_set_image_by_hand(api):
    c = api.client()
    d = c.create("deploy", deployment(image="127.0.0.1:5000/web:v2"))
    replicaset(c, d, 1, "127.0.0.1:5000/web:v1", "aaaa1")
    replicaset(c, d, 2, "127.0.0.1:5000/web:v2", "bbbb2")
    r = shoal(api, "rollout", "history", "deployment/web")
    assert r.out == "deployment.apps/web\nREVISION  CHANGE-CAUSE\n1         <none>\n2         <none>\n\n"
    r = shoal(api, "rollout", "history", "deployment/web", "--revision", "1")
    assert "with revision #1" in r.out and "127.0.0.1:5000/web:v1" in r.out
    r = shoal(api, "rollout", "undo", "deployment/web")
    assert (r.rc, r.out) == (0, "deployment.apps/web rolled back\n")
    live = c.get("deploy", "web")
    assert image_of(c) == "127.0.0.1:5000/web:v1"
    assert live["spec"]["template"]["metadata"]["labels"] == {"app": "web"}  # no pod-template-hash
    assert live["metadata"]["generation"] == 2
    assert shoal(api, "rollout", "undo", "deploy/web", "--to-revision", "2").out == "deployment.apps/web rolled back\n"
    assert image_of(c) == "127.0.0.1:5000/web:v2"
    r = shoal(api, "rollout", "undo", "deploy/web", "--to-revision", "2")
    assert "skipped rollback (current template already matches revision 2)" in r.out
    # pause / resume / restart
    assert shoal(api, "rollout", "pause", "deploy/web").out == "deployment.apps/web paused\n"
    assert c.get("deploy", "web")["spec"]["paused"] is True
    r = shoal(api, "rollout", "restart", "deploy/web")
    assert r.rc == 1 and "can't restart paused deployment" in r.err
    assert shoal(api, "rollout", "resume", "deploy/web").out == "deployment.apps/web resumed\n"
    assert not c.get("deploy", "web")["spec"].get("paused")
    assert shoal(api, "rollout", "restart", "deploy/web").out == "deployment.apps/web restarted\n"
    ann = c.get("deploy", "web")["spec"]["template"]["metadata"]["annotations"]
    assert ann["kubectl.kubernetes.io/restartedAt"].endswith("Z")
    # scale through /scale; set image
    assert shoal(api, "scale", "deployment/web", "--replicas", "7").out == "deployment.apps/web scaled\n"
    assert c.get("deploy", "web")["spec"]["replicas"] == 7
    r = shoal(api, "set", "image", "deployment/web", "web=127.0.0.1:5000/web:v3")
    assert (r.rc, r.out) == (0, "deployment.apps/web image updated\n")
    assert image_of(c) == "127.0.0.1:5000/web:v3"
    r = shoal(api, "set", "image", "deployment/web", "nope=x:1")
    assert r.rc == 1 and 'unable to find container named "nope"' in r.err
    r = shoal(api, "set", "image", "deployment/web", "web=NOT VALID")
    assert r.rc == 1 and r.err.startswith("error: ") and image_of(c) == "127.0.0.1:5000/web:v3"


@pytest.fixture
def api_with_controllers(tmp_path):
    from shoal.testkit.apiserver import start_test_server
    srv = start_test_server(tmp_path, controllers=True)
    try:
        yield srv
    finally:
        srv.stop()


def revisions(c):
    out = {}
    for rs in c.list("rs")["items"]:
        rev = (rs["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")
        if rev:
            out[int(rev)] = rs["spec"]["template"]["spec"]["containers"][0]["image"]
    return out


def test_history_and_undo_with_the_real_controllers(api_with_controllers, tmp_path):
    srv = api_with_controllers
    c = srv.client()
    f = tmp_path / "web.yaml"
    import yaml
    f.write_text(yaml.safe_dump(deployment()))
    assert shoal(srv, "apply", "-f", str(f)).out == "deployment.apps/web created\n"
    wait_until(lambda: revisions(c) == {1: "127.0.0.1:5000/web:v1"}, what="revision 1")
    assert shoal(srv, "set", "image", "deploy/web", "web=127.0.0.1:5000/web:v2").rc == 0
    wait_until(lambda: revisions(c) == {1: "127.0.0.1:5000/web:v1", 2: "127.0.0.1:5000/web:v2"},
               what="revision 2")
    r = shoal(srv, "rollout", "history", "deploy/web")
    assert r.out.splitlines()[1:4] == ["REVISION  CHANGE-CAUSE", "1         <none>", "2         <none>"]
    assert shoal(srv, "rollout", "undo", "deploy/web").out == "deployment.apps/web rolled back\n"
    # the old ReplicaSet is reused and becomes revision 3, as in Kubernetes
    wait_until(lambda: revisions(c) == {2: "127.0.0.1:5000/web:v2", 3: "127.0.0.1:5000/web:v1"},
               what="the revision-1 ReplicaSet to be reused as revision 3")
    assert len(c.list("rs")["items"]) == 2
    r = shoal(srv, "rollout", "history", "deploy/web")
    assert [ln.split()[0] for ln in r.out.splitlines()[2:4]] == ["2", "3"]
    # Events are advice, written once the cluster has settled (machinery/control/events.py): wait for them.
    wait_until(lambda: "ScalingReplicaSet" in shoal(srv, "describe", "deploy/web").out,
               what="the ScalingReplicaSet events")
    r = shoal(srv, "describe", "deploy/web")
    assert "NewReplicaSet:" in r.out and "ScalingReplicaSet" in r.out
    r = shoal(srv, "get", "rs", "-o", "wide")
    assert r.out.splitlines()[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES",
                                             "SELECTOR"]
    r = shoal(srv, "delete", "deploy", "web")
    assert r.rc == 0 and r.out == 'deployment.apps "web" deleted\n'
