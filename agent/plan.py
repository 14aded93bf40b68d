"""What a pod worker should do next: kubelet's computePodActions, as a pure function.

`compute_pod_actions(pod, view, ...)` looks at the desired pod (or None when the
pod is gone from the API server), what the runtime reports for that pod's
containers (`PodRuntimeView`, with any leftovers found at the ids of next
attempts), the probe results, the back-off state, whether the node's network is
ready, when a failed sandbox may be retried, which events were already emitted
and the time, and returns the whole `PodActions` plan: what to adopt, start
(with attempt numbers), kill (signal, grace, why), remove and tear down, the
waiting reasons, the BackOff events, and when to wake up next. It does no I/O
and reads no clock, so every rule below has a row in
tests/unit/test_agent_plan.py. `agent.worker` only gathers these inputs,
executes the plan as it comes, observes again and re-plans until nothing is
left to do; `agent.status` then renders the pod status from the same inputs.
Two pure helpers say what the worker must gather: `next_attempts` (the ids it
looks up for leftovers) and `counted_exits` (the exits it feeds to the
crash-loop `RestartTracker`, whose answers come back as `backoff`).

Rules (no init containers, no ephemeral containers — like kubelet otherwise)
- Adoption first: a running container found at the id of a next attempt (the
  view had lost it) is adopted — observed from now on, never started again —
  and the plan is just that; the next pass plans with it in the view. A
  leftover that does not run (a create that crashed before its start) is
  replaced by the start that needs its id (SIGKILL, remove, create). Containers
  of older attempts, of an older spec, and the network and pod dir of a pod no
  longer here are cleared by the rules below.
- Pod deleting (metadata.deletionTimestamp) or gone: every live container gets
  SIGTERM with the grace period (deletionGracePeriodSeconds, else
  terminationGracePeriodSeconds, else 30 s; for a pod that is gone, the grace
  stored in the container's labels), SIGKILL once the deadline in
  `view.terminating` passes. When nothing is live: remove all containers, tear
  down the sandbox (network, volumes, pod dir) and — if the object still exists —
  confirm the deletion.
- Sandbox: a pod without network (`view.pod_ip is None`) gets one set up first;
  until the node has its podCIDR (`network_ready` False) containers wait in
  ContainerCreating. After a failed sandbox (reported as FailedCreatePodSandBox)
  nothing is created or started until `sandbox_retry_at`, the wake-up then.
- Per container, looking at its latest attempt:
  none → start attempt 0 (unless image-pull back-off holds it);
  running → kill on a changed spec (hash label differs), a liveness failure or a
  startup-probe failure (the restart then follows the normal path);
  created but never started → start it;
  exited → restart per restartPolicy, after the crash-loop back-off
  (state waiting CrashLoopBackOff meanwhile, and one BackOff event per exit),
  as attempt+1;
  a failed image pull → ErrImagePull, then ImagePullBackOff (one BackOff event
  per failure) until the retry;
  a config that could not be built (`ConfigFailure`: a subPath that is a
  symbolic link, a volumeMount naming no volume) → CreateContainerConfigError
  with its message and one Warning Failed event per message; like a failed
  pull it is no exit: nothing was created, no attempt is counted (restartCount,
  lastState and the phase stay as they were: a pod that never ran stays
  Pending, whatever its restartPolicy), and the same attempt is tried again at
  `retry_at`, building the config afresh (a volume fixed meanwhile starts).
- Attempts older than the previous one are removed (the previous one is kept
  for `lastState` and `logs --previous`).
- Wake-up: the earliest of a back-off's expiry, a pull retry (and the switch to
  ImagePullBackOff), a config retry, a SIGKILL deadline of any terminating container and a
  sandbox retry.

Container labels (written at create time, read back from `Runtime.list()`; they
are what makes adoption after an agent restart work — restartCount is the
attempt number):
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Collection, Mapping

from shoal.agent.probes import FAILURE, LIVENESS, READINESS, STARTUP, SUCCESS, ProbeResult
from shoal.agent.restarts import Backoff, should_restart
from shoal.machinery.api.defaults import DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS

LABEL_POD_UID = "shoal.io/pod-uid"
LABEL_POD_NAME = "shoal.io/pod-name"
LABEL_POD_NAMESPACE = "shoal.io/pod-namespace"
LABEL_CONTAINER = "shoal.io/container"
LABEL_ATTEMPT = "shoal.io/attempt"
LABEL_SPEC_HASH = "shoal.io/spec-hash"
LABEL_IMAGE = "shoal.io/image"
LABEL_IMAGE_ID = "shoal.io/image-id"
LABEL_GRACE = "shoal.io/termination-grace-seconds"
__doc__ += "".join(f"  {k}\n" for k in (LABEL_POD_UID, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_CONTAINER,
                                         LABEL_ATTEMPT, LABEL_SPEC_HASH, LABEL_IMAGE, LABEL_IMAGE_ID, LABEL_GRACE))

LIVE = ("running", "created", "unknown")
DEFAULT_GRACE = DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS


def spec_hash(container: Mapping) -> str:
    """A stable hash of one container spec; a running container whose label
    differs from the current spec's hash is restarted (kubelet does the same)."""
    return hashlib.sha256(json.dumps(container, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ObservedContainer:
    """One attempt of one container, as the runtime (or the worker, for a start
    that failed before the runtime had a container) reports it."""
    name: str
    attempt: int
    id: str
    status: str                     # running | created | stopped | unknown
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    oom_killed: bool = False
    spec_hash: str = ""
    image: str = ""
    image_id: str = ""
    grace: int | None = None
    pid: int | None = None
    reason: str = ""                # set for synthetic attempts: StartError
    message: str = ""
    synthetic: bool = False         # never existed in the runtime (create/start failed)

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def container_id(self) -> str:
        return f"runc://{self.id}" if self.id and not self.synthetic else ""


@dataclass(frozen=True)
class PodRuntimeView:
    uid: str
    containers: tuple[ObservedContainer, ...] = ()
    pod_ip: str | None = None                                  # None = no sandbox (network) yet
    terminating: Mapping[str, float] = field(default_factory=dict)   # container id -> SIGKILL deadline
    # containers found at the id of a next attempt (`next_attempts`) that the worker did not know of
    leftovers: tuple[ObservedContainer, ...] = ()

    def attempts(self, name: str) -> list[ObservedContainer]:
        """All attempts of a container, newest first."""
        return sorted((c for c in self.containers if c.name == name), key=lambda c: c.attempt, reverse=True)

    def latest(self, name: str) -> ObservedContainer | None:
        a = self.attempts(name)
        return a[0] if a else None

    def previous(self, name: str) -> ObservedContainer | None:
        """The newest exited attempt before the latest (for lastState)."""
        a = self.attempts(name)
        for c in a[1:]:
            if not c.live:
                return c
        return None

    def running(self) -> list[ObservedContainer]:
        """The containers that run (what the probe workers watch)."""
        return [c for c in self.containers if c.status == "running" and not c.synthetic]


@dataclass(frozen=True)
class PullFailure:
    """An image pull that failed; the container waits until `retry_at`."""
    image: str
    reason: str          # ErrImagePull | ErrImageNeverPull | InvalidImageName
    message: str
    at: float
    retry_at: float
    fresh: bool = False  # produced by this very sync pass: status shows ErrImagePull, later ImagePullBackOff

    @property
    def backoff_shown_at(self) -> float:
        """When the status turns from ErrImagePull to ImagePullBackOff: half-way to the retry,
        at most a second after the failure (kubelet: its next pass over the pod)."""
        return self.at + min(1.0, max(0.0, self.retry_at - self.at) / 2)


CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"


@dataclass(frozen=True)
class ConfigFailure:
    """A container whose config could not be built before anything was created (kubelet's
    CreateContainerConfigError): it waits, with `message`, until `retry_at`."""
    message: str
    at: float
    retry_at: float


@dataclass(frozen=True)
class StartContainer:
    name: str
    attempt: int
    existing_id: str = ""     # a created-but-not-started container to start instead of creating one
    replace_leftover: bool = False  # a container that does not run holds this attempt's id: SIGKILL, remove it first


@dataclass(frozen=True)
class KillContainer:
    id: str
    name: str
    signal: str               # "TERM" or "KILL"
    grace: int                # seconds between TERM and KILL
    reason: str               # why, for the Killing event
    message: str


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class PodEvent:
    """An event the plan asks for; `key` makes it once-only: the worker passes the keys
    it has emitted back in (`evented`)."""
    type: str
    reason: str
    message: str
    key: str


@dataclass
class PodActions:
    """One plan, executed in this order: adopt, events, sandbox, kill, start, remove,
    teardown, confirm_deletion."""
    adopt: list[str] = field(default_factory=list)   # running leftovers to observe from now on (ids)
    create_sandbox: bool = False
    start: list[StartContainer] = field(default_factory=list)
    kill: list[KillContainer] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    waiting: dict[str, Waiting] = field(default_factory=dict)
    events: list[PodEvent] = field(default_factory=list)
    teardown: bool = False          # pod finished (deleted/gone) and nothing live: remove sandbox, volumes, dir;
    #                                 the worker is finished afterwards
    confirm_deletion: bool = False  # then delete the API object with grace 0
    wake_at: float | None = None

    @property
    def has_work(self) -> bool:
        """Something that changes the world, after which the worker observes and plans again
        (events and waiting reasons are reported, not acted on)."""
        return bool(self.adopt or self.create_sandbox or self.start or self.kill or self.remove or self.teardown
                    or self.confirm_deletion)

    def _wake(self, t: float) -> None:
        self.wake_at = t if self.wake_at is None else min(self.wake_at, t)


def pod_grace_seconds(pod: Mapping | None) -> int | None:
    if not pod:
        return None
    md = pod.get("metadata") or {}
    g = md.get("deletionGracePeriodSeconds")
    if g is None:
        g = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return DEFAULT_GRACE if g is None else max(0, int(g))


def is_deleting(pod: Mapping | None) -> bool:
    return pod is None or bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def pod_ref(pod: Mapping) -> str:
    md = pod.get("metadata") or {}
    return f"{md.get('name')}_{md.get('namespace', 'default')}({md.get('uid')})"


def next_attempt(view: PodRuntimeView, name: str) -> int | None:
    """The attempt a new container `name` would be: 0 for the first, the latest's + 1
    once that exited; None while the latest is live (it is started or killed, not replaced)."""
    latest = view.latest(name)
    if latest is None:
        return 0
    return None if latest.live else latest.attempt + 1


def next_attempts(pod: Mapping | None, view: PodRuntimeView) -> dict[str, int]:
    """`next_attempt` of each container of a pod that runs (neither deleting nor gone):
    the ids the worker looks up for leftovers, and the attempts a start would take."""
    if pod is None or is_deleting(pod):
        return {}
    out = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        a = next_attempt(view, c["name"])
        if a is not None:
            out[c["name"]] = a
    return out


def counted_exits(pod: Mapping | None, view: PodRuntimeView) -> dict[str, ObservedContainer]:
    """The exits the crash-loop back-off counts: of each container of a pod that runs,
    its latest attempt once it has finished (a failed start included). The worker feeds
    them to `RestartTracker.record_exit` (which counts an exit once, by its id) and
    passes the answers in as `backoff`."""
    if pod is None or is_deleting(pod):
        return {}
    out = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        latest = view.latest(c["name"])
        if latest is not None and not latest.live and latest.finished_at is not None:
            out[c["name"]] = latest
    return out


def _kill_or_wait(actions: PodActions, c: ObservedContainer, view: PodRuntimeView, now: float, *, grace: int,
                  reason: str, message: str) -> None:
    deadline = view.terminating.get(c.id)
    if deadline is not None:
        if now >= deadline:
            actions.kill.append(KillContainer(c.id, c.name, "KILL", 0, reason, message))
        else:
            actions._wake(deadline)
        return
    # a created (never started) container has nothing to shut down gracefully
    sig, g = ("KILL", 0) if c.status == "created" else ("TERM", grace)
    actions.kill.append(KillContainer(c.id, c.name, sig, g, reason, message))


def compute_pod_actions(pod: Mapping | None, view: PodRuntimeView, *,
                        probes: Mapping[str, Mapping[str, ProbeResult]] | None = None,
                        backoff: Mapping[str, Backoff] | None = None,
                        pull_failures: Mapping[str, PullFailure] | None = None,
                        config_failures: Mapping[str, ConfigFailure] | None = None,
                        network_ready: bool = True,
                        sandbox_retry_at: float = 0.0,
                        evented: Collection[str] = (),
                        now: float) -> PodActions:
    """Plan the next step for one pod. `probes` is keyed by runtime container id,
    `backoff`, `pull_failures` and `config_failures` by container name; `sandbox_retry_at` is when a
    sandbox that failed may be tried again; `evented` holds the keys of the events
    already emitted."""
    probes = probes or {}
    backoff = backoff or {}
    pull_failures = pull_failures or {}
    config_failures = config_failures or {}
    actions = PodActions()

    # -- adoption first: a running container the view had lost is never started a second
    # time; nothing else is planned until the next pass sees it in the view
    adopt = [c.id for c in view.leftovers if c.status == "running"]
    if adopt:
        actions.adopt = adopt
        return actions
    leftover = {(c.name, c.attempt) for c in view.leftovers}

    # a SIGKILL deadline bounds the next wake-up (the relist also wakes the worker on the exit)
    for deadline in view.terminating.values():
        actions._wake(deadline)

    # -- stopping: deletion requested, or the pod is gone from the API server
    if pod is None or is_deleting(pod):
        grace_pod = pod_grace_seconds(pod)
        live = [c for c in view.containers if c.live and not c.synthetic]
        for c in live:
            grace = grace_pod if grace_pod is not None else (c.grace if c.grace is not None else 0)
            _kill_or_wait(actions, c, view, now, grace=grace, reason="Killing",
                          message=f"Stopping container {c.name}")
        if not live:
            actions.remove = [c.id for c in view.containers if not c.synthetic]
            actions.teardown = True
            actions.confirm_deletion = pod is not None
        return actions

    spec = pod.get("spec") or {}
    policy = spec.get("restartPolicy") or "Always"
    containers = spec.get("containers") or []
    wanted = {c.get("name") for c in containers}

    sandbox_ok = view.pod_ip is not None
    # a sandbox that failed (reported as FailedCreatePodSandBox) is retried after a while:
    # until then nothing is created or started
    sandbox_held = not sandbox_ok and network_ready and now < sandbox_retry_at
    if not sandbox_ok:
        if network_ready:
            actions.create_sandbox = True
        else:
            for c in containers:
                actions.waiting[c["name"]] = Waiting("ContainerCreating", "waiting for the node's podCIDR")

    # containers that are no longer in the spec (cannot happen through the API, but
    # an adopted container from an older pod generation might be): stop and drop
    for c in view.containers:
        if c.name not in wanted and not c.synthetic:
            if c.live:
                _kill_or_wait(actions, c, view, now, grace=pod_grace_seconds(pod) or 0, reason="Killing",
                              message=f"Container {c.name} is not in the pod spec")
            else:
                actions.remove.append(c.id)

    for cspec in containers:
        name = cspec["name"]
        attempts = view.attempts(name)
        latest = attempts[0] if attempts else None
        # keep the latest and the previous attempt; older ones only cost disk
        for old in attempts[2:]:
            if not old.live and not old.synthetic:
                actions.remove.append(old.id)

        def want_start(attempt: int, existing_id: str = "") -> None:
            pf = pull_failures.get(name)
            if pf is not None and now < pf.retry_at:
                if pf.fresh or now < pf.backoff_shown_at or pf.reason != "ErrImagePull":
                    actions.waiting[name] = Waiting(pf.reason, pf.message)
                    if pf.reason == "ErrImagePull":
                        actions._wake(pf.backoff_shown_at)
                else:
                    # the last error stays in the status (as recent kubelets do): otherwise the
                    # reason a pull fails is visible only for the moment ErrImagePull shows
                    actions.waiting[name] = Waiting("ImagePullBackOff",
                                                    f'Back-off pulling image "{pf.image}": {pf.reason}: {pf.message}')
                    _event_once(actions, evented, f"pullbackoff/{name}/{pf.at}", "Normal", "BackOff",
                                f'Back-off pulling image "{pf.image}"')
                actions._wake(pf.retry_at)
                return
            cf = config_failures.get(name)
            if cf is not None:
                # shown until a config is built (kubelet keeps it through the retry too)
                actions.waiting[name] = Waiting(CREATE_CONTAINER_CONFIG_ERROR, cf.message)
                _event_once(actions, evented, f"configerror/{name}/{cf.message}", "Warning", "Failed",
                            f"Error: {cf.message}")
                if now < cf.retry_at:
                    actions._wake(cf.retry_at)
                    return
            if not sandbox_ok and (not network_ready or sandbox_held):
                return
            actions.start.append(StartContainer(name, attempt, existing_id,
                                                replace_leftover=not existing_id and (name, attempt) in leftover))

        if latest is None:
            want_start(0)
            continue

        if latest.live:
            if latest.id in view.terminating:
                _kill_or_wait(actions, latest, view, now, grace=0, reason="Killing",
                              message=f"Stopping container {name}")
                continue
            grace = pod_grace_seconds(pod) or 0
            results = probes.get(latest.id) or {}
            if latest.spec_hash and latest.spec_hash != spec_hash(cspec):
                _kill_or_wait(actions, latest, view, now, grace=grace, reason="Killing",
                              message=f"Container {name} definition changed, will be restarted")
            elif latest.status == "running" and _failed(results.get(LIVENESS)):
                _kill_or_wait(actions, latest, view, now, grace=grace, reason="Killing",
                              message=f"Container {name} failed liveness probe, will be restarted")
            elif latest.status == "running" and _failed(results.get(STARTUP)):
                _kill_or_wait(actions, latest, view, now, grace=grace, reason="Killing",
                              message=f"Container {name} failed startup probe, will be restarted")
            elif latest.status == "created":
                want_start(latest.attempt, latest.id)
            continue

        # the latest attempt exited
        if not should_restart(policy, latest.exit_code):
            continue
        bo = backoff.get(name)
        if bo is not None and now < bo.not_before:
            actions.waiting[name] = Waiting(
                "CrashLoopBackOff",
                f"back-off {_fmt_seconds(bo.delay)} restarting failed container={name} pod={pod_ref(pod)}")
            _event_once(actions, evented, f"backoff/{latest.id}", "Warning", "BackOff",
                        f"Back-off restarting failed container {name} in pod {pod_ref(pod)}")
            actions._wake(bo.not_before)
            continue
        want_start(latest.attempt + 1)

    # a sandbox is only worth creating for something to start
    if actions.create_sandbox and not actions.start:
        actions.create_sandbox = bool(containers) and not all(
            (l := view.latest(c["name"])) is not None and not l.live and not should_restart(policy, l.exit_code)
            for c in containers)
    if actions.create_sandbox and sandbox_held:
        actions.create_sandbox = False
        actions._wake(sandbox_retry_at)
    return actions


def _event_once(actions: PodActions, evented: Collection[str], key: str, type_: str, reason: str,
                message: str) -> None:
    if key not in evented:
        actions.events.append(PodEvent(type_, reason, message, key))


def _failed(r: ProbeResult | None) -> bool:
    return r is not None and r.result == FAILURE


def _fmt_seconds(s: float) -> str:
    """Go's duration format as kubelet prints it: 10s, 1m20s, 5m0s."""
    if s < 1:
        return f"{int(round(s * 1000))}ms"
    if s != int(s) and s < 60:
        return f"{s:.3g}s"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    m, sec = divmod(s, 60)
    if m < 60:
        return f"{m}m{sec}s"
    h, m = divmod(m, 60)
    return f"{h}h{m}m{sec}s"


def ready_from_probes(cspec: Mapping, c: ObservedContainer | None,
                      results: Mapping[str, ProbeResult]) -> tuple[bool, bool]:
    """(started, ready) of a container as kubelet computes them: started once the
    startup probe (if any) succeeded; ready once started and the readiness probe
    (if any) succeeded."""
    if c is None or c.status != "running":
        return False, False
    started = True
    if cspec.get("startupProbe"):
        r = results.get(STARTUP)
        started = r is not None and r.result == SUCCESS
    if not started:
        return False, False
    if cspec.get("readinessProbe"):
        r = results.get(READINESS)
        return True, r is not None and r.result == SUCCESS
    return True, True
