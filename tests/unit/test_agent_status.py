"""build_pod_status (agent.status): phase, conditions, container states."""
import pytest

from shoal.agent.plan import ObservedContainer, PodActions, PodRuntimeView, StartContainer, Waiting
from shoal.agent.probes import READINESS, STARTUP, SUCCESS, FAILURE, ProbeResult
from shoal.agent.status import build_pod_status, compute_phase, qos_class
from shoal.machinery.api.times import format_time

pytestmark = pytest.mark.unit
NOW = 1_800_000_000.0     # 2027-01-15T08:00:00Z


def pod(*names, policy="Always", status=None, **cextra):
    return {"metadata": {"name": "web-1", "namespace": "default", "uid": "u1"},
            "spec": {"restartPolicy": policy, "nodeName": "n1",
                     "containers": [{"name": n, "image": "reg/web:v1", **cextra} for n in (names or ("web",))]},
            "status": status or {}}


def oc(name="web", attempt=0, status="running", **kw):
    kw.setdefault("id", f"u1-{name}-{attempt}")
    kw.setdefault("started_at", NOW - 100)
    kw.setdefault("image_id", "reg/web@sha256:" + "a" * 64)
    if status == "stopped":
        kw.setdefault("exit_code", 1)
        kw.setdefault("finished_at", NOW - 50)
    return ObservedContainer(name=name, attempt=attempt, status=status, **kw)


def build(p, *containers, actions=None, probes=None, ip="10.244.1.7", now=NOW):
    v = PodRuntimeView("u1", tuple(containers), ip)
    return build_pod_status(p, v, actions or PodActions(), probes=probes, host_ip="192.168.5.2", now=now)


def cond(st, t):
    return next(c for c in st["conditions"] if c["type"] == t)


def test_new_pod_is_pending_container_creating():
    st = build(pod(), ip=None)
    assert st["phase"] == "Pending"
    cs = st["containerStatuses"][0]
    assert cs["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert cs["ready"] is False and cs["restartCount"] == 0 and cs["image"] == "reg/web:v1"
    assert "podIP" not in st and st["hostIP"] == "192.168.5.2"
    assert cond(st, "Ready")["status"] == "False" and cond(st, "Ready")["reason"] == "ContainersNotReady"
    assert cond(st, "PodScheduled")["status"] == "True"
    assert st["startTime"] == format_time(NOW) and st["qosClass"] == "BestEffort"


def test_running_pod_without_probes_is_ready():
    st = build(pod(), oc())
    assert st["phase"] == "Running"
    cs = st["containerStatuses"][0]
    assert cs["state"] == {"running": {"startedAt": format_time(NOW - 100)}}
    assert cs["ready"] and cs["started"] and cs["containerID"] == "runc://u1-web-0"
    assert cs["imageID"] == "reg/web@sha256:" + "a" * 64
    assert st["podIP"] == "10.244.1.7" and st["podIPs"] == [{"ip": "10.244.1.7"}]
    assert cond(st, "Ready")["status"] == "True" and cond(st, "ContainersReady")["status"] == "True"


def test_readiness_probe_gates_ready():
    p = pod(readinessProbe={"httpGet": {"port": 80}})
    st = build(p, oc())
    assert st["containerStatuses"][0]["ready"] is False
    assert cond(st, "Ready")["message"] == "containers with unready status: [web]"
    st = build(p, oc(), probes={"u1-web-0": {READINESS: ProbeResult(SUCCESS)}})
    assert st["containerStatuses"][0]["ready"] is True


def test_startup_probe_gates_started_and_ready():
    p = pod(startupProbe={"exec": {"command": ["true"]}})
    cs = build(p, oc(), probes={"u1-web-0": {STARTUP: ProbeResult(FAILURE)}})["containerStatuses"][0]
    assert cs["started"] is False and cs["ready"] is False
    cs = build(p, oc(), probes={"u1-web-0": {STARTUP: ProbeResult(SUCCESS)}})["containerStatuses"][0]
    assert cs["started"] is True and cs["ready"] is True


def test_restarted_container_has_last_state_and_restart_count():
    st = build(pod(), oc(attempt=2), oc(attempt=1, status="stopped", exit_code=3))
    cs = st["containerStatuses"][0]
    assert cs["restartCount"] == 2
    t = cs["lastState"]["terminated"]
    assert t["exitCode"] == 3 and t["reason"] == "Error" and t["containerID"] == "runc://u1-web-1"
    assert t["startedAt"] == format_time(NOW - 100) and t["finishedAt"] == format_time(NOW - 50)


def test_crash_loop_back_off_state():
    a = PodActions(waiting={"web": Waiting("CrashLoopBackOff", "back-off 10s restarting failed container=web")})
    st = build(pod(), oc(attempt=1, status="stopped", exit_code=1), actions=a)
    cs = st["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert st["phase"] == "Running"   # kubelet: a waiting container that has run counts as stopped


@pytest.mark.parametrize("exit_code,oom,reason", [(0, False, "Completed"), (1, False, "Error"),
                                                  (137, True, "OOMKilled")])
def test_terminated_reasons(exit_code, oom, reason):
    st = build(pod(policy="Never"), oc(status="stopped", exit_code=exit_code, oom_killed=oom))
    assert st["containerStatuses"][0]["state"]["terminated"]["reason"] == reason


def test_start_error_is_reported_as_terminated_128():
    c = oc(status="stopped", id="", synthetic=True, exit_code=128, reason="StartError",
           message='exec: "nope": executable file not found in $PATH')
    st = build(pod(policy="Never"), c)
    t = st["containerStatuses"][0]["state"]["terminated"]
    assert t["exitCode"] == 128 and t["reason"] == "StartError" and "nope" in t["message"]
    assert "containerID" not in t and st["phase"] == "Failed"


def test_image_pull_waiting_reason():
    a = PodActions(waiting={"web": Waiting("ImagePullBackOff", 'Back-off pulling image "reg/web:v1"')})
    cs = build(pod(), actions=a)["containerStatuses"][0]
    assert cs["state"] == {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "reg/web:v1"'}}


CFG_MSG = "pod default/web-1, container web: subPath x of volume data: a symbolic link"


@pytest.mark.parametrize("policy,names,containers,restarts,last_exit,phase", [
    ("Always", ("web",), (), 0, None, "Pending"),                    # never ran: Pending, not Failed
    ("Never", ("web",), (), 0, None, "Pending"),
    ("OnFailure", ("web",), (), 0, None, "Pending"),
    ("Always", ("web",), (oc(status="stopped", attempt=1),), 1, 1, "Running"),     # the restart's config failed
    ("Always", ("web", "side"), (oc(name="side"),), 0, None, "Pending"),           # one runs, one never did
])
def test_config_failure_is_waiting_not_an_exit(policy, names, containers, restarts, last_exit, phase):
    from shoal.agent.plan import ConfigFailure, compute_pod_actions
    p = pod(*names, policy=policy)
    v = PodRuntimeView("u1", tuple(containers), "10.244.1.7")
    a = compute_pod_actions(p, v, config_failures={"web": ConfigFailure(CFG_MSG, NOW - 1, NOW + 9)}, now=NOW)
    st = build_pod_status(p, v, a, host_ip="192.168.5.2", now=NOW)
    cs = next(c for c in st["containerStatuses"] if c["name"] == "web")
    assert cs["state"] == {"waiting": {"reason": "CreateContainerConfigError", "message": CFG_MSG}}
    assert cs["restartCount"] == restarts and not cs["ready"]
    assert (cs["lastState"].get("terminated") or {}).get("exitCode") == last_exit
    assert st["phase"] == phase


def test_exited_container_about_to_restart_is_waiting():
    a = PodActions(start=[StartContainer("web", 1)])
    cs = build(pod(), oc(status="stopped"), actions=a)["containerStatuses"][0]
    assert "waiting" in cs["state"] and cs["lastState"]["terminated"]["exitCode"] == 1


@pytest.mark.parametrize("policy,exits,phase", [
    ("Always", [0], "Running"), ("Always", [1], "Running"),
    ("OnFailure", [0, 0], "Succeeded"), ("OnFailure", [0, 1], "Running"),
    ("Never", [0, 0], "Succeeded"), ("Never", [0, 2], "Failed"),
])
def test_phase_when_everything_stopped(policy, exits, phase):
    names = [f"c{i}" for i in range(len(exits))]
    p = pod(*names, policy=policy)
    cs = [oc(name=n, status="stopped", exit_code=e) for n, e in zip(names, exits)]
    assert build(p, *cs)["phase"] == phase


def test_phase_mixed_running_and_waiting_is_pending():
    p = pod("a", "b")
    assert build(p, oc(name="a"))["phase"] == "Pending"
    assert build(p, oc(name="a"), oc(name="b"))["phase"] == "Running"


def test_terminal_phase_is_sticky():
    p = pod(policy="Never", status={"phase": "Failed"})
    assert build(p, oc())["phase"] == "Failed"


def test_succeeded_pod_ready_reason_pod_completed():
    st = build(pod(policy="Never"), oc(status="stopped", exit_code=0))
    assert cond(st, "Ready")["reason"] == "PodCompleted"


def test_condition_transition_time_kept_while_unchanged_and_foreign_fields_kept():
    old = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"},
                          {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2019-01-01T00:00:00Z"},
                          {"type": "example.com/gate", "status": "True"}],
           "startTime": "2019-01-01T00:00:00Z", "nominatedNodeName": "x"}
    st = build(pod(status=old), oc())
    assert cond(st, "Ready")["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert cond(st, "PodScheduled")["lastTransitionTime"] == "2019-01-01T00:00:00Z"
    assert cond(st, "example.com/gate")["status"] == "True"
    assert st["startTime"] == "2019-01-01T00:00:00Z" and st["nominatedNodeName"] == "x"
    st2 = build(pod(status=old), oc(status="stopped"), actions=PodActions(waiting={"web": Waiting("CrashLoopBackOff")}))
    assert cond(st2, "Ready")["lastTransitionTime"] == format_time(NOW)


def test_same_inputs_same_status():
    p = pod()
    assert build(p, oc()) == build(p, oc())
    # later wall time does not change anything once times are carried in the old status
    first = build(p, oc())
    p2 = pod(status=first)
    assert build(p2, oc(), now=NOW + 60) == first


def test_keeps_old_pod_ip_when_sandbox_unknown():
    st = build(pod(status={"podIP": "10.244.1.9"}), oc(status="stopped", exit_code=0), ip=None)
    assert st["podIP"] == "10.244.1.9"


def test_compute_phase_empty_is_pending():
    assert compute_phase([], "Always") == "Pending"


@pytest.mark.parametrize("resources,qos", [
    ({}, "BestEffort"),
    ({"limits": {"cpu": "1", "memory": "1Gi"}}, "Guaranteed"),
    ({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}, "Burstable"),
    ({"requests": {"memory": "1Gi"}}, "Burstable"),
])
def test_qos(resources, qos):
    assert qos_class({"containers": [{"name": "a", "resources": resources}]}) == qos
