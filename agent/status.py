"""Render a pod's status from what the agent observed: a pure function.

`build_pod_status(pod, view, actions, probes, host_ip, now)` returns the whole
`status` object the agent writes through `pods/{name}/status`. Same inputs →
same dict (timestamps come from the runtime or from the previous status), so
the worker can compare it with the last written status and skip no-op writes.

Rules (kubelet's getPhase / generateAPIPodStatus, without init containers):
- containerStatuses in spec order: `state` running/waiting/terminated from the
  latest attempt; `waiting.reason` from the plan (CrashLoopBackOff,
  ErrImagePull, ImagePullBackOff, CreateContainerConfigError — a config
  failure is no attempt: it changes neither restartCount nor lastState, and
  keeps a pod that never ran Pending — ...) else ContainerCreating; `lastState` is
  the previous exited attempt (or the latest one while it waits to restart);
  terminated reasons OOMKilled, Completed (exit 0), Error, or the synthetic
  StartError; `restartCount` = attempt number; `containerID` = `runc://<id>`.
- phase: Pending while any container waits for its first run; Running while
  any runs (or all stopped but restartPolicy will restart them); Succeeded when
  all exited 0 and none will restart; Failed when some failed under Never.
  Succeeded and Failed are terminal: a pod never leaves them.
- conditions PodScheduled, Initialized, ContainersReady, Ready; a condition's
  lastTransitionTime is kept while its status is unchanged.
"""
from __future__ import annotations

import copy
from typing import Mapping

from shoal.machinery.api.times import format_time

from shoal.agent.plan import ObservedContainer, PodActions, PodRuntimeView, Waiting, ready_from_probes
from shoal.agent.probes import ProbeResult
from shoal.agent.restarts import should_restart

TERMINAL = ("Succeeded", "Failed")


def terminated_reason(c: ObservedContainer) -> str:
    if c.reason:
        return c.reason
    if c.oom_killed:
        return "OOMKilled"
    return "Completed" if c.exit_code == 0 else "Error"


def terminated_state(c: ObservedContainer) -> dict:
    t = {"exitCode": c.exit_code if c.exit_code is not None else 128 if c.synthetic else 0,
         "reason": terminated_reason(c),
         "startedAt": format_time(c.started_at), "finishedAt": format_time(c.finished_at)}
    if c.message:
        t["message"] = c.message
    if c.container_id:
        t["containerID"] = c.container_id
    return {"terminated": t}


def _container_status(cspec: Mapping, view: PodRuntimeView, actions: PodActions,
                      probes: Mapping[str, Mapping[str, ProbeResult]], policy: str) -> dict:
    name = cspec["name"]
    latest = view.latest(name)
    prev = view.previous(name)
    waiting = actions.waiting.get(name)
    st: dict = {"name": name, "image": cspec.get("image", ""), "imageID": "", "ready": False,
                "started": False, "restartCount": 0, "state": {}, "lastState": {}}
    if latest is None:
        w = waiting or _default_waiting()
        st["state"] = {"waiting": _waiting_dict(w.reason, w.message)}
        return st
    st["restartCount"] = latest.attempt
    st["imageID"] = latest.image_id
    if latest.container_id:
        st["containerID"] = latest.container_id
    if latest.status == "running":
        st["state"] = {"running": {"startedAt": format_time(latest.started_at)}}
        started, ready = ready_from_probes(cspec, latest, probes.get(latest.id) or {})
        st["started"], st["ready"] = started, ready
        if prev is not None:
            st["lastState"] = terminated_state(prev)
    elif latest.live:   # created / unknown: not running yet
        w = waiting or _default_waiting()
        st["state"] = {"waiting": _waiting_dict(w.reason, w.message)}
        if prev is not None:
            st["lastState"] = terminated_state(prev)
    elif waiting is not None or (should_restart(policy, latest.exit_code)
                                 and any(s.name == name for s in actions.start)):
        w = waiting or _default_waiting()
        st["state"] = {"waiting": _waiting_dict(w.reason, w.message)}
        st["lastState"] = terminated_state(latest)
    else:
        st["state"] = terminated_state(latest)
        if prev is not None:
            st["lastState"] = terminated_state(prev)
    return st


def _default_waiting() -> Waiting:
    return Waiting("ContainerCreating")


def _waiting_dict(reason: str, message: str) -> dict:
    d = {"reason": reason}
    if message:
        d["message"] = message
    return d


def compute_phase(statuses: list[dict], policy: str) -> str:
    waiting = running = stopped = succeeded = failed = 0
    for s in statuses:
        state = s["state"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"].get("exitCode") == 0:
                succeeded += 1
            else:
                failed += 1
        elif "terminated" in (s.get("lastState") or {}):
            stopped += 1     # waiting to restart after having run
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(prev: Mapping[str, dict], ctype: str, ok: bool, now: float, reason: str = "",
               message: str = "") -> dict:
    status = "True" if ok else "False"
    old = prev.get(ctype)
    ltt = old.get("lastTransitionTime") if old and old.get("status") == status else None
    c = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": ltt or format_time(now)}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def build_pod_status(pod: Mapping, view: PodRuntimeView, actions: PodActions, *,
                     probes: Mapping[str, Mapping[str, ProbeResult]] | None = None,
                     host_ip: str, now: float) -> dict:
    """The pod's new `status`, keeping fields this agent does not own from the old one;
    without null fields, as the API server would store it."""
    probes = probes or {}
    spec = pod.get("spec") or {}
    old = copy.deepcopy(pod.get("status") or {})
    policy = spec.get("restartPolicy") or "Always"
    statuses = [_container_status(c, view, actions, probes, policy) for c in spec.get("containers") or []]

    phase = compute_phase(statuses, policy)
    if old.get("phase") in TERMINAL:
        phase = old["phase"]

    prev_conds = {c.get("type"): c for c in old.get("conditions") or []}
    not_ready = [s["name"] for s in statuses if not s["ready"]]
    if phase == "Succeeded" or (phase == "Failed" and not any("running" in s["state"] for s in statuses)):
        cr = _condition(prev_conds, "ContainersReady", False, now, "PodCompleted")
        rd = _condition(prev_conds, "Ready", False, now, "PodCompleted")
    elif not_ready:
        msg = f"containers with unready status: [{' '.join(not_ready)}]"
        cr = _condition(prev_conds, "ContainersReady", False, now, "ContainersNotReady", msg)
        rd = _condition(prev_conds, "Ready", False, now, "ContainersNotReady", msg)
    else:
        cr = _condition(prev_conds, "ContainersReady", True, now)
        rd = _condition(prev_conds, "Ready", True, now)
    ours = {"PodScheduled": _condition(prev_conds, "PodScheduled", True, now),
            "Initialized": _condition(prev_conds, "Initialized", True, now),
            "ContainersReady": cr, "Ready": rd}
    conditions = [c for t, c in prev_conds.items() if t not in ours] + [
        ours[t] for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]

    status = old
    status["phase"] = phase
    status["conditions"] = conditions
    status["hostIP"] = host_ip
    status["hostIPs"] = [{"ip": host_ip}]
    pod_ip = view.pod_ip or old.get("podIP")
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    status["startTime"] = old.get("startTime") or format_time(now)
    status["containerStatuses"] = statuses
    status["qosClass"] = qos_class(spec)
    return _without_nulls(status)


def _without_nulls(v):
    """A status as the API server stores it: it drops null fields (`lastProbeTime: null`, a
    container's `finishedAt` not yet known), so that what the agent builds compares equal to
    what it reads back."""
    if isinstance(v, dict):
        return {k: _without_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_without_nulls(x) for x in v]
    return v


def qos_class(spec: Mapping) -> str:
    """Guaranteed when every container's requests equal its cpu+memory limits,
    BestEffort when none sets any, Burstable otherwise."""
    any_set = False
    guaranteed = True
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        lim, req = res.get("limits") or {}, res.get("requests") or {}
        if lim or req:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or req.get(r, lim[r]) != lim[r]:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
