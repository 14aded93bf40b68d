"""Node failure and controller restarts, against the real API server with hollow agents."""
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from shoal.testkit.apiserver import start_test_server
from shoal.controller.manager import Options
from hollow import HollowCluster, RolloutChecker, deployment, deployment_done, wait_for

pytestmark = pytest.mark.integration

GRACE, EVICTION = 2.0, 1.0
REPO = Path(__file__).resolve().parents[2]


def app_pods(client, app="web"):
    return [p for p in client.list("pods", "default", label_selector=f"app={app}")["items"]
            if not p["metadata"].get("deletionTimestamp")]


def test_node_that_stops_heartbeating_has_its_pods_replaced(tmp_path):
    opts = Options(node_grace_period=GRACE, eviction_delay=EVICTION, monitor_period=0.5)
    with start_test_server(tmp_path, controllers=True, controller_options=opts) as srv:
        client = srv.client()
        with HollowCluster(client, nodes=["node-a", "node-b", "node-c"], lease_period=0.3) as hollow:
            client.create("deployments", deployment(replicas=6))
            wait_for(lambda: deployment_done(client, "web"), 60, what="rollout")
            assert Counter(p["spec"]["nodeName"] for p in app_pods(client))["node-a"] == 2
            hollow.stop_heartbeat("node-a")
            started = time.monotonic()

            def replaced():
                pods = app_pods(client)
                nodes = Counter(p["spec"].get("nodeName") for p in pods)
                return (len(pods) == 6 and nodes["node-a"] == 0 and deployment_done(client, "web")
                        and not any(p["spec"].get("nodeName") == "node-a" for p in client.list("pods", "default")["items"]))
            # generous bound: grace + eviction delay + a few seconds of slack for a loaded machine
            wait_for(replaced, GRACE + EVICTION + 20, what="pods replaced on node-b/node-c")
            elapsed = time.monotonic() - started
            assert elapsed >= GRACE  # not before the grace period
            node = client.get("nodes", "node-a")
            ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
            assert (ready["status"], ready["reason"], ready["message"]) == (
                "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
            taints = {(t["key"], t["effect"]) for t in node["spec"].get("taints", [])}
            assert taints == {("node.kubernetes.io/unreachable", "NoSchedule"),
                              ("node.kubernetes.io/unreachable", "NoExecute")}
            assert Counter(p["spec"]["nodeName"] for p in app_pods(client)) == Counter({"node-b": 3, "node-c": 3})
            # the node comes back: taints go, the agent's Ready holds, new pods may land there again
            hollow.resume_heartbeat("node-a")
            wait_for(lambda: not client.get("nodes", "node-a")["spec"].get("taints"), 30, what="taints removed")
            client.patch("deployments", "web", {"spec": {"replicas": 9}}, "default")
            wait_for(lambda: deployment_done(client, "web") and len(app_pods(client)) == 9, 60, what="scale to 9")
            # A pod that only node-a fits gets bound there. (Which node the three new replicas
            # take depends on whether the scheduler's node watch has delivered the untaint
            # before their pod events — two streams, no order between them, as in Kubernetes.)
            client.create("pods", {"apiVersion": "v1", "kind": "Pod",
                                   "metadata": {"name": "pinned", "namespace": "default"},
                                   "spec": {"nodeSelector": {"kubernetes.io/hostname": "node-a"},
                                            "containers": [{"name": "c", "image": "reg/web:v1"}]}})
            wait_for(lambda: client.get("pods", "pinned", "default")["spec"].get("nodeName") == "node-a", 30,
                     what="a pod bound to node-a again")


def test_pod_tolerating_unreachable_stays(tmp_path):
    opts = Options(node_grace_period=GRACE, eviction_delay=EVICTION, monitor_period=0.5)
    with start_test_server(tmp_path, controllers=True, controller_options=opts) as srv:
        client = srv.client()
        with HollowCluster(client, nodes=["node-a"], lease_period=0.3) as hollow:
            for name, tol in (("stays", [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                           "effect": "NoExecute"}]), ("goes", [])):
                client.create("pods", {"apiVersion": "v1", "kind": "Pod",
                                       "metadata": {"name": name, "namespace": "default"},
                                       "spec": {**({"tolerations": tol} if tol else {}),
                                                "containers": [{"name": "c", "image": "registry.local/httpd:1"}]}})
            wait_for(lambda: all(p["spec"].get("nodeName") for p in client.list("pods", "default")["items"]), 30,
                     what="pods bound")
            hollow.stop_heartbeat("node-a")
            wait_for(lambda: [p["metadata"]["name"] for p in client.list("pods", "default")["items"]] == ["stays"],
                     GRACE + EVICTION + 20, what="only the tolerating pod left")


def test_controller_kill_9_mid_rollout_then_restart_finishes_within_bounds(tmp_path):
    with start_test_server(tmp_path, controllers=False) as srv:
        client = srv.client()
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-m", "shoal.controller.manager", "--kubeconfig", str(srv.kubeconfig)]
        logs = [open(tmp_path / f"controller-{i}.log", "wb") for i in range(2)]
        procs: list[subprocess.Popen] = []
        try:
            with HollowCluster(client, nodes=["node-a", "node-b", "node-c"], lease_period=0.5):
                procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logs[0], stderr=subprocess.STDOUT))
                # minReadySeconds slows the rollout so the kill lands in the middle of it
                client.create("deployments", deployment(replicas=8, surge=2, unavailable=0, min_ready=1))
                wait_for(lambda: deployment_done(client, "web"), 60, what="initial rollout")
                with RolloutChecker(client, app="web", replicas=8, max_surge=2, max_unavailable=0) as checker:
                    d = client.get("deployments", "web", "default")
                    d["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.local/httpd:2"
                    client.update("deployments", d)
                    wait_for(lambda: sum(1 for p in app_pods(client)
                                         if p["spec"]["containers"][0]["image"].endswith(":2")) >= 2, 60,
                             what="rollout under way")
                    procs[0].send_signal(signal.SIGKILL)
                    procs[0].wait(10)
                    new_images = sum(1 for p in app_pods(client) if p["spec"]["containers"][0]["image"].endswith(":2"))
                    assert new_images < 8, "the rollout finished before the kill; nothing was tested"
                    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logs[1], stderr=subprocess.STDOUT))
                    wait_for(lambda: deployment_done(client, "web") and len(app_pods(client)) == 8 and
                             all(p["spec"]["containers"][0]["image"].endswith(":2") for p in app_pods(client)),
                             90, what="rollout finished by the restarted controller")
                    checker.arm()
                assert checker.violations == []
                assert checker.max_seen <= 10
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            for f in logs:
                f.close()
