"""Table tests for the pure kubectl-style formatters: AGE, pod STATUS/READY/RESTARTS, node STATUS/ROLES,
selectors, event LAST SEEN, the Go-tabwriter alignment and whole tables."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shoal.cli import printers
from shoal.cli.tabwriter import TabWriter, describe_text, get_table

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("seconds,expected", [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (45, "45s"), (119, "119s"), (120, "2m"), (312, "5m12s"),
    (599, "9m59s"), (600, "10m"), (3 * 3600 - 1, "179m"), (3 * 3600, "3h"), (5 * 3600 + 600, "5h10m"),
    (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"), (3 * 86400 + 4 * 3600, "3d4h"), (8 * 86400, "8d"),
    (400 * 86400, "400d"), (365 * 2 * 86400, "2y"), (365 * 3 * 86400 + 20 * 86400, "3y20d"),
    (365 * 9 * 86400, "9y"),
])
def test_human_duration(seconds, expected):
    assert printers.human_duration(seconds) == expected


def test_since_reads_z_offset_and_fraction():
    assert printers.since("2024-05-01T11:59:00Z", NOW) == printers.since("2024-05-01T11:59:00+00:00", NOW) == "60s"
    assert printers.since("2024-05-01T11:59:00.5Z", NOW) == "59s"
    assert printers.since(None, NOW) == "<unknown>" and printers.since("yesterday", NOW) == "<unknown>"


def pod(*statuses, phase="Running", containers=None, deleting=False, conditions=None, init=None,
        init_statuses=None, reason=None):
    names = containers or [s.get("name", f"c{i}") for i, s in enumerate(statuses)] or ["c0"]
    p = {"metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ago(30)},
         "spec": {"containers": [{"name": n, "image": "busybox"} for n in names]},
         "status": {"phase": phase, "containerStatuses": list(statuses), "conditions": conditions or []}}
    if deleting:
        p["metadata"]["deletionTimestamp"] = ago(1)
    if init:
        p["spec"]["initContainers"] = [{"name": n, "image": "busybox"} for n in init]
        p["status"]["initContainerStatuses"] = init_statuses or []
    if reason:
        p["status"]["reason"] = reason
    return p


def running(name="c0", ready=True, restarts=0, last_finished=None):
    s = {"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {"startedAt": ago(10)}}}
    if last_finished is not None:
        s["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(last_finished)}}
    return s


def waiting(reason, name="c0", restarts=0, last_finished=None):
    s = {"name": name, "ready": False, "restartCount": restarts, "state": {"waiting": {"reason": reason}}}
    if last_finished is not None:
        s["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(last_finished)}}
    return s


def terminated(reason="", exit_code=0, signal=0, name="c0"):
    t = {"exitCode": exit_code, "finishedAt": ago(5)}
    if reason:
        t["reason"] = reason
    if signal:
        t["signal"] = signal
    return {"name": name, "ready": False, "restartCount": 0, "state": {"terminated": t}}


@pytest.mark.parametrize("p,ready,status,restarts", [
    (pod(phase="Pending"), "0/1", "Pending", "0"),
    (pod(waiting("ContainerCreating"), phase="Pending"), "0/1", "ContainerCreating", "0"),
    (pod(waiting("ErrImagePull"), phase="Pending"), "0/1", "ErrImagePull", "0"),
    (pod(waiting("ImagePullBackOff"), phase="Pending"), "0/1", "ImagePullBackOff", "0"),
    (pod(running()), "1/1", "Running", "0"),
    (pod(running(ready=False)), "0/1", "Running", "0"),
    (pod(waiting("CrashLoopBackOff", restarts=3, last_finished=12)), "0/1", "CrashLoopBackOff", "3 (12s ago)"),
    (pod(running(restarts=2, last_finished=312)), "1/1", "Running", "2 (5m12s ago)"),
    (pod(running(restarts=2)), "1/1", "Running", "2"),  # no last termination time: bare count
    (pod(terminated("Completed"), phase="Succeeded"), "0/1", "Completed", "0"),
    (pod(terminated("Error", 1), phase="Failed"), "0/1", "Error", "0"),
    (pod(terminated("OOMKilled", 137), phase="Running"), "0/1", "OOMKilled", "0"),
    (pod(terminated(exit_code=3)), "0/1", "ExitCode:3", "0"),
    (pod(terminated(signal=9)), "0/1", "Signal:9", "0"),
    (pod(running(), deleting=True), "1/1", "Terminating", "0"),
    (pod(terminated("Completed"), phase="Succeeded", deleting=True), "0/1", "Completed", "0"),
    (pod(running(), deleting=True, reason="NodeLost"), "1/1", "Unknown", "0"),
    (pod(running("a"), waiting("CrashLoopBackOff", "b", restarts=1, last_finished=60)), "1/2",
     "CrashLoopBackOff", "1 (60s ago)"),
    (pod(running("a"), terminated("Completed", name="b"), conditions=[{"type": "Ready", "status": "False"}]),
     "1/2", "NotReady", "0"),
    (pod(running("a"), terminated("Completed", name="b"), conditions=[{"type": "Ready", "status": "True"}]),
     "1/2", "Running", "0"),
    (pod(phase="Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]),
     "0/1", "SchedulingGated", "0"),
    (pod(phase="Pending", init=["setup"], init_statuses=[{"name": "setup", "restartCount": 0,
                                                         "state": {"running": {}}}]), "0/1", "Init:0/1", "0"),
    (pod(phase="Pending", init=["setup"], init_statuses=[{"name": "setup", "restartCount": 2,
                                                         "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),
     "0/1", "Init:CrashLoopBackOff", "2"),
    (pod(phase="Failed", init=["setup"], init_statuses=[{"name": "setup", "restartCount": 0,
                                                        "state": {"terminated": {"exitCode": 2}}}]),
     "0/1", "Init:ExitCode:2", "0"),
])
def test_pod_summary(p, ready, status, restarts):
    s = printers.pod_summary(p, NOW)
    assert (s.ready, s.status, s.restarts) == (ready, status, restarts)


@pytest.mark.parametrize("node,status,roles", [
    ({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}, "Ready", "<none>"),
    ({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}, "NotReady", "<none>"),
    ({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}, "NotReady", "<none>"),
    ({"status": {}}, "Unknown", "<none>"),
    ({"spec": {"unschedulable": True}, "status": {"conditions": [{"type": "Ready", "status": "True"}]},
      "metadata": {"labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": ""}}},
     "Ready,SchedulingDisabled", "control-plane,worker"),
    ({"metadata": {"labels": {"kubernetes.io/role": "edge"}}}, "Unknown", "edge"),
])
def test_node_status_and_roles(node, status, roles):
    assert printers.node_status(node) == status
    assert printers.node_roles(node) == roles


@pytest.mark.parametrize("sel,expected", [
    (None, "<none>"), ({}, "<none>"),
    ({"matchLabels": {"tier": "web", "app": "shop"}}, "app=shop,tier=web"),
    ({"matchLabels": {"app": "a"}, "matchExpressions": [
        {"key": "env", "operator": "In", "values": ["prod", "stage"]},
        {"key": "x", "operator": "NotIn", "values": ["1"]},
        {"key": "gpu", "operator": "Exists"}, {"key": "legacy", "operator": "DoesNotExist"}]},
     "app=a,env in (prod,stage),gpu,!legacy,x notin (1)"),     # sorted by key, as kubectl prints it
    ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["stage", "prod"]}]}, "env in (prod,stage)"),
    ({"matchExpressions": [{"key": "env", "operator": "Near", "values": ["x"]}]}, "<error>"),
])
def test_format_selector(sel, expected):
    assert printers.format_selector(sel) == expected


def test_event_last_seen():
    single = {"firstTimestamp": ago(30), "lastTimestamp": ago(30), "count": 1}
    repeated = {"firstTimestamp": ago(600), "lastTimestamp": ago(120), "count": 3}
    no_last = {"firstTimestamp": ago(5)}
    assert printers.event_last_seen(single, NOW) == "30s"
    assert printers.event_last_seen(repeated, NOW) == "2m (x3 over 10m)"
    assert printers.event_last_seen(no_last, NOW) == "5s"


def test_tabwriter_matches_go_layout():
    # minwidth 6, padding 3: each column is its widest cell + 3; the last cell is not padded
    assert get_table(["NAME\tAGE", "a\t5s"]) == "NAME   AGE\na      5s\n"
    assert get_table(["A\tB", "x\ty"]) == "A     B\nx     y\n"  # minwidth 6
    # a line without tabs ends the column block (describe's behaviour)
    text = describe_text(["Name:\tweb", "Namespace:\tdefault", "IPs:", "  IP:\t10.0.0.1", "Controlled By:\tRS/x"])
    assert text.splitlines() == ["Name:       web", "Namespace:  default", "IPs:",
                                 "  IP:           10.0.0.1", "Controlled By:  RS/x"]


def test_tabwriter_remember_widths_keeps_later_rows_aligned():
    w = TabWriter(6, 3)
    first = w.format(["NAME\tSTATUS\tAGE", "web-1\tRunning\t5s"], remember=True)
    later = w.format(["w\tPending\t0s"], remember=True)
    assert first.splitlines()[0].index("STATUS") == later.index("Pending")


def deployment(name="web", replicas=3, ready=2, updated=3, available=2, age=45):
    return {"metadata": {"name": name, "namespace": "shop", "creationTimestamp": ago(age), "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "reg/web:v2"},
                                                          {"name": "log", "image": "busybox"}]}}},
            "status": {"readyReplicas": ready, "updatedReplicas": updated, "availableReplicas": available}}


def test_deployment_table_plain_wide_all_namespaces_labels():
    d = deployment()
    assert printers.render_table("Deployment", [d], NOW).splitlines() == [
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE",
        "web    2/3     3            2           45s"]
    wide = printers.render_table("Deployment", [d], NOW, wide=True, all_namespaces=True, show_labels=True)
    assert wide.splitlines() == [
        "NAMESPACE   NAME   READY   UP-TO-DATE   AVAILABLE   AGE   CONTAINERS   IMAGES               SELECTOR   LABELS",
        "shop        web    2/3     3            2           45s   web,log      reg/web:v2,busybox   app=web    app=web",
    ]
    cells = wide.splitlines()[1].split()
    assert cells == ["shop", "web", "2/3", "3", "2", "45s", "web,log", "reg/web:v2,busybox", "app=web", "app=web"]


def test_replicaset_pod_node_namespace_lease_event_tables():
    rs = {"metadata": {"name": "web-7d9f", "creationTimestamp": ago(3600 * 3)}, "spec": {"replicas": 3},
          "status": {"replicas": 3, "readyReplicas": 1}}
    assert printers.render_table("ReplicaSet", [rs], NOW).splitlines()[1].split() == ["web-7d9f", "3", "3", "1", "3h"]
    p = pod(running(restarts=1, last_finished=20))
    p["status"].update(podIP="10.244.1.5")
    p["spec"]["nodeName"] = "node-a"
    lines = printers.render_table("Pod", [p], NOW, wide=True).splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE",
                                "READINESS", "GATES"]
    assert "1 (20s ago)" in lines[1]
    assert lines[1].split()[-4:] == ["10.244.1.5", "node-a", "<none>", "<none>"]
    node = {"metadata": {"name": "node-a", "creationTimestamp": ago(2 * 86400)},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.50.11"}],
                       "nodeInfo": {"kubeletVersion": "shoal-0.1.0", "osImage": "Debian", "kernelVersion": "6.1",
                                    "containerRuntimeVersion": "runc://1.1.5"}}}
    n = printers.render_table("Node", [node], NOW, wide=True, pods_by_node={"node-a": 4}).splitlines()
    assert n[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE",
                            "KERNEL-VERSION", "CONTAINER-RUNTIME", "POD-CIDR", "PODS"]
    assert n[1].split() == ["node-a", "Ready", "<none>", "2d", "shoal-0.1.0", "192.168.50.11", "<none>", "Debian",
                            "6.1", "runc://1.1.5", "10.244.1.0/24", "4"]
    ns = {"metadata": {"name": "shop", "creationTimestamp": ago(60)}, "status": {"phase": "Active"}}
    assert printers.render_table("Namespace", [ns], NOW).splitlines() == ["NAME   STATUS   AGE", "shop   Active   60s"]
    lease = {"metadata": {"name": "node-a", "creationTimestamp": ago(10)}, "spec": {"holderIdentity": "node-a"}}
    assert printers.render_table("Lease", [lease], NOW).splitlines()[1].split() == ["node-a", "node-a", "10s"]
    ev = {"metadata": {"name": "e1"}, "type": "Warning", "reason": "BackOff", "message": "Back-off restarting ",
          "involvedObject": {"kind": "Pod", "name": "web-1"}, "firstTimestamp": ago(90), "lastTimestamp": ago(3),
          "count": 4}
    e = printers.render_table("Event", [ev], NOW).splitlines()
    assert e[0] == "LAST SEEN          TYPE      REASON    OBJECT      MESSAGE"
    assert e[1] == "3s (x4 over 90s)   Warning   BackOff   pod/web-1   Back-off restarting"


def test_show_kind_prefix_and_structured_output():
    d = deployment()
    lines = printers.table_lines("Deployment", [d], printers.RenderContext(NOW), show_kind=True)
    assert lines[1].startswith("deployment.apps/web\t")
    from shoal.machinery.api.resources import resolve
    out = printers.for_output({"metadata": {"name": "x", "managedFields": [{}]}, "spec": {}}, resolve("deploy"))
    assert list(out)[:2] == ["apiVersion", "kind"] and out["kind"] == "Deployment"
    assert "managedFields" not in out["metadata"]
    assert printers.object_ref(d, resolve("deploy")) == "deployment.apps/web"
    assert printers.render_json({"a": 1}) == '{\n    "a": 1\n}\n'


def test_count_pods_by_node_skips_finished_and_unbound():
    pods = [{"spec": {"nodeName": "a"}, "status": {"phase": "Running"}},
            {"spec": {"nodeName": "a"}, "status": {"phase": "Succeeded"}},
            {"spec": {"nodeName": "b"}, "status": {"phase": "Pending"}},
            {"spec": {}, "status": {"phase": "Pending"}}]
    assert printers.count_pods_by_node(pods) == {"a": 1, "b": 1}
