"""Table tests of kubectl's columns and cells per kind (machinery.api.printing): what the API
server's Tables carry and shoal's CLI lays out."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shoal.machinery.api import printing
from shoal.machinery.api.resources import RESOURCES

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def headers(kind: str, *, wide: bool = True) -> list[str]:
    return [c.name for c in printing.columns(kind) if wide or c.priority == 0]


def row(kind: str, obj: dict) -> dict:
    return dict(zip(headers(kind), printing.cells(kind, obj, NOW)))


@pytest.mark.parametrize("kind,plain,wide", [
    ("Pod", ["Name", "Ready", "Status", "Restarts", "Age"], ["IP", "Node", "Nominated Node", "Readiness Gates"]),
    ("Deployment", ["Name", "Ready", "Up-to-date", "Available", "Age"], ["Containers", "Images", "Selector"]),
    ("ReplicaSet", ["Name", "Desired", "Current", "Ready", "Age"], ["Containers", "Images", "Selector"]),
    ("Node", ["Name", "Status", "Roles", "Age", "Version"],
     ["Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"]),
    ("Namespace", ["Name", "Status", "Age"], []),
    ("Event", ["Last Seen", "Type", "Reason", "Object", "Message"],
     ["Subobject", "Source", "First Seen", "Count", "Name"]),
    ("Lease", ["Name", "Holder", "Age"], []),
    ("ConfigMap", ["Name", "Data", "Age"], []),
    ("Secret", ["Name", "Type", "Data", "Age"], []),
])
def test_columns_are_kubectls(kind, plain, wide):
    assert headers(kind, wide=False) == plain
    assert [c.name for c in printing.columns(kind) if c.priority == 1] == wide
    names = [c for c in printing.columns(kind) if c.format == "name"]
    assert len(names) == 1 and names[0].name == "Name"      # the column kubectl prefixes with the kind
    assert all(c.description for c in printing.columns(kind))


def test_every_served_kind_has_its_own_table():
    assert {r.kind for r in RESOURCES} <= set(printing.COLUMNS)


def test_kind_without_printer_gets_kubernetes_default_table():
    obj = {"metadata": {"name": "x", "creationTimestamp": ago(5)}}
    assert [(c.name, c.type) for c in printing.columns("Widget")] == [("Name", "string"), ("Created At", "date")]
    assert printing.cells("Widget", obj, NOW) == ["x", ago(5)]


@pytest.mark.parametrize("seconds,expected", [
    (-2, "<invalid>"), (-1.5, "0s"), (-0.5, "0s"), (0, "0s"), (59.9, "59s"), (119, "119s"), (120, "2m"),
    (121, "2m1s"), (599, "9m59s"), (600, "10m"), (10799, "179m"), (10800, "3h"), (3 * 3600 + 60, "3h1m"),
    (28799, "7h59m"), (28800, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"), (49 * 3600, "2d1h"),
    (7 * 86400 + 23 * 3600, "7d23h"), (8 * 86400, "8d"), (729 * 86400, "729d"), (730 * 86400, "2y"),
    (731 * 86400, "2y1d"), (8 * 365 * 86400, "8y"), (30 * 365 * 86400, "30y"),
])
def test_human_duration_is_apimachinerys(seconds, expected):
    assert printing.human_duration(seconds) == expected


def pod(*statuses, phase="Running", deleting=False, conditions=None, init=None, init_statuses=None,
        reason=None, **status):
    p = {"metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ago(300)},
         "spec": {"containers": [{"name": s.get("name", "c0"), "image": "busybox"} for s in statuses]
                  or [{"name": "c0", "image": "busybox"}]},
         "status": {"phase": phase, "containerStatuses": list(statuses), "conditions": conditions or [], **status}}
    if deleting:
        p["metadata"]["deletionTimestamp"] = ago(1)
    if init:
        p["spec"]["initContainers"] = [{"name": n, "image": "busybox"} for n in init]
        p["status"]["initContainerStatuses"] = init_statuses or []
    if reason:
        p["status"]["reason"] = reason
    return p


def cs(state: dict, *, name="c0", ready=False, restarts=0, last_finished=None):
    s = {"name": name, "ready": ready, "restartCount": restarts, "state": state}
    if last_finished is not None:
        s["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(last_finished)}}
    return s


RUNNING = {"running": {"startedAt": ago(60)}}


def waiting(reason):
    return {"waiting": {"reason": reason}}


def terminated(reason="", exit_code=0, signal=0):
    t = {"exitCode": exit_code, "finishedAt": ago(5)}
    if reason:
        t["reason"] = reason
    if signal:
        t["signal"] = signal
    return {"terminated": t}


@pytest.mark.parametrize("p,ready,status,restarts", [
    (pod(phase="Pending"), "0/1", "Pending", "0"),
    (pod(cs(waiting("ContainerCreating")), phase="Pending"), "0/1", "ContainerCreating", "0"),
    (pod(cs(waiting("ImagePullBackOff")), phase="Pending"), "0/1", "ImagePullBackOff", "0"),
    (pod(cs(waiting("CreateContainerConfigError")), phase="Pending"), "0/1", "CreateContainerConfigError", "0"),
    (pod(cs(RUNNING, ready=True)), "1/1", "Running", "0"),
    (pod(cs(RUNNING)), "0/1", "Running", "0"),
    (pod(cs(waiting("CrashLoopBackOff"), restarts=4, last_finished=190)), "0/1", "CrashLoopBackOff",
     "4 (3m10s ago)"),
    (pod(cs(RUNNING, ready=True, restarts=1)), "1/1", "Running", "1"),
    (pod(cs(terminated("Completed")), phase="Succeeded"), "0/1", "Completed", "0"),
    (pod(cs(terminated("Error", 1)), phase="Failed"), "0/1", "Error", "0"),
    (pod(cs(terminated("OOMKilled", 137))), "0/1", "OOMKilled", "0"),
    (pod(cs(terminated(exit_code=2))), "0/1", "ExitCode:2", "0"),
    (pod(cs(terminated(signal=15))), "0/1", "Signal:15", "0"),
    (pod(cs(RUNNING, ready=True), deleting=True), "1/1", "Terminating", "0"),
    (pod(cs(terminated("Completed")), phase="Succeeded", deleting=True), "0/1", "Completed", "0"),
    (pod(cs(RUNNING, ready=True), deleting=True, reason="NodeLost"), "1/1", "Unknown", "0"),
    (pod(phase="Failed", reason="Evicted"), "0/1", "Evicted", "0"),
    (pod(phase="Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]),
     "0/1", "SchedulingGated", "0"),
    # the last container (read backwards) that is waiting or terminated gives the reason
    (pod(cs(waiting("CrashLoopBackOff"), name="a", restarts=2), cs(RUNNING, name="b", ready=True)), "1/2",
     "CrashLoopBackOff", "2"),
    (pod(cs(RUNNING, name="a", ready=True), cs(terminated("Completed"), name="b"),
         conditions=[{"type": "Ready", "status": "True"}]), "1/2", "Running", "0"),
    (pod(cs(RUNNING, name="a", ready=True), cs(terminated("Completed"), name="b")), "1/2", "NotReady", "0"),
    # init containers: Init:i/n, their reason, their exit code; their restarts count while initializing
    (pod(phase="Pending", init=["a", "b"], init_statuses=[
        {"name": "a", "state": terminated(exit_code=0)}, {"name": "b", "state": RUNNING}]), "0/1", "Init:1/2", "0"),
    (pod(phase="Pending", init=["a"], init_statuses=[
        {"name": "a", "restartCount": 3, "state": waiting("CrashLoopBackOff")}]), "0/1", "Init:CrashLoopBackOff",
     "3"),
    (pod(phase="Pending", init=["a"], init_statuses=[
        {"name": "a", "state": waiting("PodInitializing")}]), "0/1", "Init:0/1", "0"),
    (pod(phase="Failed", init=["a"], init_statuses=[{"name": "a", "state": terminated(exit_code=3)}]),
     "0/1", "Init:ExitCode:3", "0"),
    (pod(phase="Failed", init=["a"], init_statuses=[{"name": "a", "state": terminated(exit_code=137, signal=9)}]),
     "0/1", "Init:Signal:9", "0"),
    (pod(phase="Failed", init=["a"], init_statuses=[{"name": "a", "state": terminated("Error", 1)}]),
     "0/1", "Init:Error", "0"),
    # once initialized, the init containers' restarts no longer count (only sidecars' would)
    (pod(cs(RUNNING, ready=True), init=["a"], init_statuses=[
        {"name": "a", "restartCount": 2, "state": terminated(exit_code=0),
         "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}}}]), "1/1", "Running", "0"),
])
def test_pod_ready_status_restarts(p, ready, status, restarts):
    r = row("Pod", p)
    assert (r["Ready"], r["Status"], r["Restarts"]) == (ready, status, restarts)
    assert r["Name"] == "web-1" and r["Age"] == "5m"


def test_pod_wide_cells():
    p = pod(cs(RUNNING, ready=True), podIP="10.244.1.5", podIPs=[{"ip": "10.244.1.5"}, {"ip": "fd00::5"}])
    p["spec"].update(nodeName="node-a", readinessGates=[{"conditionType": "www.example.com/lb"},
                                                       {"conditionType": "other"}])
    p["status"]["conditions"] = [{"type": "www.example.com/lb", "status": "True"}]
    r = row("Pod", p)
    assert (r["IP"], r["Node"], r["Nominated Node"], r["Readiness Gates"]) == ("10.244.1.5", "node-a", "<none>",
                                                                               "1/2")
    bare = row("Pod", pod(phase="Pending"))
    assert (bare["IP"], bare["Node"], bare["Nominated Node"], bare["Readiness Gates"]) == ("<none>",) * 4


def test_finished_pods_carry_the_completed_row_condition():
    assert printing.row_conditions("Pod", pod(phase="Running")) is None
    (ok,) = printing.row_conditions("Pod", pod(phase="Succeeded"))
    (failed,) = printing.row_conditions("Pod", pod(phase="Failed"))
    assert (ok["type"], ok["status"], ok["reason"]) == ("Completed", "True", "Succeeded")
    assert failed["reason"] == "Failed"
    assert printing.row_conditions("Deployment", {}) is None


def deployment(**status):
    return {"metadata": {"name": "web", "creationTimestamp": ago(3 * 3600 + 120)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                                                 "matchExpressions": [{"key": "tier", "operator": "In",
                                                                       "values": ["b", "a"]}]},
                     "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"},
                                                          {"name": "log", "image": "busybox"}]}}},
            "status": status}


def test_deployment_and_replicaset_cells():
    d = deployment(readyReplicas=2, updatedReplicas=3, availableReplicas=1)
    assert printing.cells("Deployment", d, NOW) == ["web", "2/3", 3, 1, "3h2m", "web,log", "nginx:1.27,busybox",
                                                    "app=web,tier in (a,b)"]
    empty = {"metadata": {"name": "x", "creationTimestamp": ago(1)}, "spec": {}}
    assert printing.cells("Deployment", empty, NOW) == ["x", "0/1", 0, 0, "1s", "", "", ""]   # replicas default 1
    rs = dict(deployment(replicas=3, readyReplicas=1), metadata={"name": "web-5d", "creationTimestamp": ago(45)})
    assert printing.cells("ReplicaSet", rs, NOW)[:5] == ["web-5d", 3, 3, 1, "45s"]
    bad = dict(empty, spec={"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}})
    assert row("ReplicaSet", bad)["Selector"] == "<invalid>"
    types = {c.name: c.type for c in printing.columns("ReplicaSet")}
    assert types["Desired"] == types["Current"] == types["Ready"] == "integer"


def test_node_cells():
    node = {"metadata": {"name": "n1", "creationTimestamp": ago(2 * 86400 + 3600),
                         "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "edge",
                                    "node-role.kubernetes.io/": "ignored"}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "Unknown"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.5"},
                                     {"type": "Hostname", "address": "n1"}],
                       "nodeInfo": {"kubeletVersion": "shoal-0.1.0", "osImage": "Debian 12", "kernelVersion": "6.1",
                                    "containerRuntimeVersion": "runc://1.1"}}}
    assert printing.cells("Node", node, NOW) == ["n1", "NotReady,SchedulingDisabled", "control-plane,edge", "2d1h",
                                                 "shoal-0.1.0", "192.168.1.5", "<none>", "Debian 12", "6.1",
                                                 "runc://1.1"]
    bare = {"metadata": {"name": "n2"}}
    assert printing.cells("Node", bare, NOW) == ["n2", "Unknown", "<none>", "<unknown>", "", "<none>", "<none>",
                                                 "<unknown>", "<unknown>", "<unknown>"]


@pytest.mark.parametrize("ev,expected", [
    ({"metadata": {"name": "e1"}, "type": "Warning", "reason": "BackOff", "message": " Back-off restarting \n",
      "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{web}"},
      "source": {"component": "kubelet", "host": "node-a"}, "firstTimestamp": ago(600), "lastTimestamp": ago(20),
      "count": 7},
     ["20s", "Warning", "BackOff", "pod/web-1", "spec.containers{web}", "kubelet, node-a", "Back-off restarting",
      "10m", 7, "e1"]),
    # the new API: eventTime, reporting controller and instance, no count
    ({"metadata": {"name": "e2"}, "type": "Normal", "reason": "Scheduled", "message": "ok",
      "involvedObject": {"kind": "Pod", "name": "p"}, "eventTime": "2024-05-01T11:59:30.000000Z",
      "reportingComponent": "shoal-scheduler", "reportingInstance": "cp-1"},
     ["30s", "Normal", "Scheduled", "pod/p", "", "shoal-scheduler, cp-1", "ok", "30s", 1, "e2"]),
    # a series: its last observation and count
    ({"metadata": {"name": "e3"}, "type": "Normal", "reason": "R", "message": "m",
      "involvedObject": {"kind": "Node"}, "firstTimestamp": ago(3600), "lastTimestamp": ago(900),
      "series": {"count": 12, "lastObservedTime": "2024-05-01T11:59:55.000000Z"}, "source": {"component": "c"}},
     ["5s", "Normal", "R", "node", "", "c", "m", "60m", 12, "e3"]),
    ({"metadata": {"name": "e4"}, "involvedObject": {"kind": "Pod", "name": "p"}},
     ["<unknown>", "", "", "pod/p", "", "", "", "<unknown>", 1, "e4"]),
])
def test_event_cells(ev, expected):
    assert printing.cells("Event", ev, NOW) == expected


def test_namespace_lease_configmap_secret_cells():
    ns = {"metadata": {"name": "shop", "creationTimestamp": ago(61)}, "status": {"phase": "Terminating"}}
    assert printing.cells("Namespace", ns, NOW) == ["shop", "Terminating", "61s"]
    lease = {"metadata": {"name": "n1", "creationTimestamp": ago(10)}, "spec": {"holderIdentity": "n1"}}
    assert printing.cells("Lease", lease, NOW) == ["n1", "n1", "10s"]
    assert printing.cells("Lease", {"metadata": {"name": "l"}}, NOW) == ["l", "", "<unknown>"]
    cm = {"metadata": {"name": "cfg", "creationTimestamp": ago(5)}, "data": {"a": "1", "b": "2"},
          "binaryData": {"c": "AA=="}}
    assert printing.cells("ConfigMap", cm, NOW) == ["cfg", 3, "5s"]
    assert printing.cells("ConfigMap", {"metadata": {"name": "e"}}, NOW) == ["e", 0, "<unknown>"]
    secret = {"metadata": {"name": "s", "creationTimestamp": ago(5)}, "type": "Opaque", "data": {"k": "dg=="}}
    assert printing.cells("Secret", secret, NOW) == ["s", "Opaque", 1, "5s"]
