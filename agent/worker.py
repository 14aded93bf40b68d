"""The pod worker: observe → plan → act → report, one pod at a time.

`PodWorker.sync()` is the whole life of a pod on this node, level-based: it is
called whenever anything about the pod may have changed (a watch event, a
container exit seen by the agent's relist, a probe result, a back-off timer)
and never needs to know which. Each call

1. observes: the runtime's state of the containers labelled with the pod's uid,
   plus what the worker remembers (pod IP, pull failures, config failures,
   start failures, SIGKILL deadlines), plus any leftover at the id of a next attempt
   (`agent.plan.next_attempts`; each id is looked up once, so a start costs the
   one `Runtime.state` it always did);
2. gathers the planner's other inputs: the crash-loop back-off of each exit
   (`agent.plan.counted_exits` fed to the `RestartTracker`), probe results,
   whether the node's network is ready, the sandbox retry time, the events
   already emitted, the clock;
3. plans, once per pass, with the pure `agent.plan.compute_pod_actions`, which
   decides everything: adopt, start (attempt numbers), kill (signal, grace),
   remove, tear down, waiting reasons, BackOff events, the next wake-up;
4. executes that plan as it comes, in its order — BackOff events, adoption,
   sandbox (network, volumes, /etc/hosts), kills (SIGTERM — for a deleted pod only once
   `ctx.drain` says every node's Service rules dropped it (`_drain_first`, agent.drain) —,
   SIGKILL after the grace period), starts (pull with Pulling/Pulled events — the pod's imagePullSecrets read
   through the node credential first, a missing one a FailedToRetrieveImagePullSecret
   warning and a note in the pull failure, the pull going on without it —, resolve the process
   from image config + spec, create, start with Created/Started events),
   removals, teardown, deletion confirmation — then re-observes and re-plans
   until the plan is empty (a fixed point). A step that fails is reported and
   remembered (a pull failure, a config failure, a start failure, a sandbox
   retry time), never patched into the plan: the next plan sees it. A config
   failure (`ContainerConfigError`: the container's config could not be built,
   nothing was created) is no exit — the container waits in
   CreateContainerConfigError and is retried with the pull back-off — while a
   start failure is a synthetic exit (StartError) under the crash-loop back-off;
5. renders the status with the pure `agent.status.build_pod_status` and writes
   it only when it changed.

It returns when the last plan wants it to run next (`PodActions.wake_at`).
`agent.dispatch.PodDispatcher` guarantees one `sync` per pod uid at a time on a
small thread pool (the floor's work queue: de-duplicated keys, a key re-queued
while it runs is run again after).

On disk, per pod: `<data-dir>/pods/<uid>/volumes/<name>` (emptyDir: kept across
container restarts, removed with the pod), `.../logs/<container>/<attempt>.log`
(the current and the previous attempt are kept, for `logs --previous`),
`.../etc-hosts` (mounted at /etc/hosts), `.../volume-subpaths/<container>/<volume>/<i>`
(a subPath checked by `agent.subpath` and bound there only while its container is made).
"""
from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import signal
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Protocol

from shoal.machinery.control.clock import Clock
from shoal.machinery.control.events import EventSink
from shoal.machinery.api import errors
from shoal.machinery.api.podrefs import image_pull_secret_names
from shoal.machinery.api.quantity import cpu_millis, memory_bytes

from shoal.agent.interfaces import (ConfigRefused, ContainerConfig, ContainerSecurity, ContainerState, ImagePullError,
                                    ImageStore, Mount, Network,
                                    PodDNS, PodNet, PulledImage, PullSecret, Runtime)
from shoal.agent.plan import (LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_GRACE, LABEL_IMAGE, LABEL_IMAGE_ID, LABEL_POD_NAME,
                              LABEL_POD_NAMESPACE, LABEL_POD_UID, LABEL_SPEC_HASH, ConfigFailure,
                              ObservedContainer, PodActions,
                              PodEvent, PodRuntimeView, PullFailure, StartContainer, compute_pod_actions,
                              counted_exits, is_deleting, next_attempts, pod_grace_seconds, spec_hash)
from shoal.agent.drainplan import DrainDecision, term_grace
from shoal.agent.probes import ProbeManager, RunningContainer
from shoal.agent.restarts import RestartTracker
from shoal.agent.status import build_pod_status
from shoal.agent.nodenet import refused_host_ports
from shoal.agent.subpath import SUBPATHS_DIR, HostSubPaths, SubPathError, SubPaths

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ pure helpers
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(s: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, unknown ones kept
    verbatim, `$$` escapes a dollar."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, s)


def resolve_process(cspec: Mapping, image_config: Mapping, pod_spec: Mapping | None = None
                    ) -> tuple[list[str], list[str], str, str | None]:
    """(argv, env, workingDir, user) exactly as Kubernetes derives them:
    `command` replaces the image Entrypoint (and drops its Cmd), `args` replace
    Cmd; pod env entries override image env by name (image order kept, new names
    appended) and may use $(VAR) of earlier entries; command/args expand $(VAR)
    from the final env; securityContext runAsUser/runAsGroup (container over
    pod) beat the image's User."""
    pod_spec = pod_spec or {}
    env: dict[str, str] = {}
    for kv in image_config.get("Env") or []:
        k, _, v = kv.partition("=")
        env[k] = v
    for e in cspec.get("env") or []:
        env[e["name"]] = expand(e.get("value") or "", env)
    command, args = cspec.get("command"), cspec.get("args")
    entry, cmd = list(image_config.get("Entrypoint") or []), list(image_config.get("Cmd") or [])
    if command:
        argv = [expand(a, env) for a in command] + [expand(a, env) for a in (args or [])]
    elif args:
        argv = entry + [expand(a, env) for a in args]
    else:
        argv = entry + cmd
    wd = cspec.get("workingDir") or image_config.get("WorkingDir") or "/"
    csc, psc = cspec.get("securityContext") or {}, pod_spec.get("securityContext") or {}
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    if uid is not None:
        user: str | None = f"{uid}:{gid}" if gid is not None else str(uid)
    else:
        user = image_config.get("User") or None
        if user and gid is not None:
            user = f"{user.split(':')[0]}:{gid}"
    return argv, [f"{k}={v}" for k, v in env.items()], wd, user


def container_security(cspec: Mapping, pod_spec: Mapping) -> ContainerSecurity:
    """The container's securityContext over the pod's (runAsNonRoot may be set on
    either; the container's wins), as the runtime applies it (agent.runtime.spec)."""
    csc = cspec.get("securityContext") or {}
    psc = pod_spec.get("securityContext") or {}
    caps = csc.get("capabilities") or {}
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    seccomp = csc.get("seccompProfile") or psc.get("seccompProfile") or {}
    groups = ([psc["fsGroup"]] if psc.get("fsGroup") is not None else []) + list(psc.get("supplementalGroups") or [])
    return ContainerSecurity(
        privileged=bool(csc.get("privileged")),
        caps_add=tuple(caps.get("add") or ()), caps_drop=tuple(caps.get("drop") or ()),
        readonly_rootfs=bool(csc.get("readOnlyRootFilesystem")),
        allow_privilege_escalation=csc.get("allowPrivilegeEscalation"),
        run_as_non_root=bool(non_root),
        seccomp=seccomp.get("type") or "RuntimeDefault", seccomp_localhost=seccomp.get("localhostProfile") or "",
        supplemental_groups=tuple(dict.fromkeys(int(g) for g in groups)))


def pod_dns(pod: Mapping, *, cluster_nameservers: tuple[str, ...], cluster_domain: str) -> PodDNS:
    """The pod's `dnsPolicy` (ClusterFirst when unset, Kubernetes' default) and `dnsConfig`
    with the node's cluster DNS, as the runtime writes them into resolv.conf."""
    spec = pod.get("spec") or {}
    cfg = spec.get("dnsConfig") or {}
    return PodDNS(policy=spec.get("dnsPolicy") or "ClusterFirst",
                  namespace=(pod.get("metadata") or {}).get("namespace") or "default",
                  cluster_domain=cluster_domain, cluster_nameservers=tuple(cluster_nameservers),
                  nameservers=tuple(cfg.get("nameservers") or ()), searches=tuple(cfg.get("searches") or ()),
                  options=tuple((o.get("name") or "", o.get("value")) for o in cfg.get("options") or ()))


def container_id_for(uid: str, name: str, attempt: int) -> str:
    return f"{uid[:12]}-{name}-{attempt}"


def observed_from_state(s: ContainerState) -> ObservedContainer | None:
    lb = s.labels or {}
    if LABEL_CONTAINER not in lb or LABEL_ATTEMPT not in lb:
        return None
    try:
        attempt = int(lb[LABEL_ATTEMPT])
        grace = int(lb[LABEL_GRACE]) if lb.get(LABEL_GRACE) else None
    except ValueError:
        return None
    return ObservedContainer(name=lb[LABEL_CONTAINER], attempt=attempt, id=s.id, status=s.status,
                             exit_code=s.exit_code, started_at=s.started_at, finished_at=s.finished_at,
                             oom_killed=s.oom_killed, spec_hash=lb.get(LABEL_SPEC_HASH, ""),
                             image=lb.get(LABEL_IMAGE, ""), image_id=lb.get(LABEL_IMAGE_ID, ""), grace=grace,
                             pid=s.pid)


# ------------------------------------------------------------------------------ seams used by the worker
class Drainer(Protocol):
    """Whether a deleted pod may get its SIGTERM now (`agent.drain.DrainGate`): only once its
    endpoint is out of every node's Service rules, bounded by its grace period."""

    def check(self, pod: Mapping) -> DrainDecision: ...

    def forget(self, uid: str) -> None: ...


class PodApi(Protocol):
    """What a pod worker writes to the API server."""

    def write_status(self, pod: dict, status: dict) -> dict | None:
        """Write `status` (CAS, re-read on conflict); return the stored pod, None if it is gone."""

    def confirm_deletion(self, pod: dict) -> None: ...

    def read_secret(self, namespace: str, name: str) -> dict:
        """A Secret the pod references (the node's credential may read only those); raises
        the API's error (NotFound, Forbidden, ...)."""


@dataclass
class WorkerContext:
    """What every pod worker shares (the agent builds one)."""
    node_name: str
    host_ip: str
    data_dir: Path
    images: ImageStore
    runtime: Runtime
    network: Network
    probes: ProbeManager
    tracker: RestartTracker
    api: PodApi
    events: EventSink
    clock: Clock
    network_ready: Callable[[], bool] = lambda: True
    on_sandbox_change: Callable[[], None] = lambda: None
    kill_wait_inline: float = 2.0       # seconds a kill waits for the exit before handing over to the plan
    sleep: Callable[[float], None] = time.sleep
    sandbox_retry: float = 5.0
    # runs a pod's network setup beside its first container's create (None: inline)
    background: Callable[[Callable[[], object]], Future] | None = None
    # subPath mounts: checked without following links, bound under the pod dir (agent.subpath)
    subpaths: SubPaths = field(default_factory=HostSubPaths)
    # hostPorts shoal's own components listen on here (port -> who): refused (agent.nodenet)
    reserved_host_ports: Mapping[int, str] = field(default_factory=dict)
    # the node's cluster DNS nameservers for ClusterFirst pods (() when it has none: those pods
    # get the host's, with a MissingClusterDNS warning); None: no cluster DNS is configured at
    # all (a context built by hand), the same without the warning
    cluster_dns: Callable[[], tuple[str, ...]] | None = None
    cluster_domain: str = "cluster.local"
    # holds a deleted pod's SIGTERMs until the Service rules everywhere have dropped it (None: never)
    drain: Drainer | None = None


@dataclass
class _Memory:
    pod_net: PodNet | None = None
    pull_failures: dict[str, PullFailure] = field(default_factory=dict)
    config_failures: dict[str, ConfigFailure] = field(default_factory=dict)
    synthetic: dict[str, ObservedContainer] = field(default_factory=dict)
    terminating: dict[str, float] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    evented: set[str] = field(default_factory=set)
    dns_warned: bool = False        # MissingClusterDNS emitted
    writing_status: dict | None = None    # the last status written (its echo may come before the answer)
    sandbox_retry_at: float = 0.0
    vacant: set[str] = field(default_factory=set)  # next attempts' ids looked up and free, until the worker uses them


class ContainerConfigError(ConfigRefused):
    """The container's config cannot be built from the pod as it is (kubelet's
    CreateContainerConfigError): a subPath that is a symbolic link, a volumeMount naming
    no volume, a volume of no supported kind. Raised before anything is created; the
    container waits and is tried again, not counted as an exit."""


class SandboxError(RuntimeError):
    """The pod's network could not be made (raised into the runtime's ready() gate)."""

    def __init__(self, cause: Exception):
        super().__init__(f"pod network: {cause}")
        self.cause = cause


class _Sandbox:
    """A pod network being made in the background: `wait()` blocks until it is done and
    returns its PodNet, or raises SandboxError; `ok()` is False once it has failed."""

    def __init__(self, fut: Future):
        self._fut = fut

    def wait(self) -> PodNet:
        try:
            return self._fut.result()
        except Exception as e:
            raise SandboxError(e) from e

    def ok(self) -> bool:
        return not self._fut.done() or self._fut.exception() is None


class PodWorker:
    def __init__(self, uid: str, ctx: WorkerContext):
        self.uid = uid
        self.ctx = ctx
        self.pod: dict | None = None          # latest desired pod; None once gone from the API server
        self.last_pod: dict | None = None     # last pod seen (names for events and logs after it is gone)
        self.mem = _Memory()
        self.done = False                     # torn down and confirmed: the agent may drop this worker

    # -- inputs -----------------------------------------------------------------------------
    def set_pod(self, pod: dict | None) -> None:
        self.pod = pod
        if pod is not None:
            self.last_pod = pod

    def add_container_ids(self, ids) -> None:
        self.mem.ids.update(ids)

    def is_own_status_echo(self, pod: dict) -> bool:
        """`pod` is this worker's own status write coming back through the watch: the pod as
        the worker has it, with the status it wrote (or is writing). Nothing to act on — kubelet
        does not sync a pod on its own status updates either — where a sync per status write
        used to cost the agent a second pass over every starting pod."""
        cur, st = self.pod, pod.get("status")
        if cur is None or not st:
            return False
        return st == self.mem.writing_status and _desired(pod) == _desired(cur)

    @property
    def pod_dir(self) -> Path:
        return self.ctx.data_dir / "pods" / self.uid

    # -- the loop -------------------------------------------------------------------------
    _MAX_ACTS = 8       # passes that act in one sync; a plan still busy after them waits for the next sync

    def sync(self) -> float | None:
        """Observe, plan, execute the plan — again until the plan has nothing to do — then
        report the last view with the last plan. Returns when to run next (`wake_at`)."""
        if self.done:
            return None
        acts = 0
        while True:
            pod = self.pod      # the pod this pass plans for, confirms and reports (set_pod may run meanwhile)
            view = self._observe(pod)
            actions = self._drain_first(pod, self._plan(pod, view))
            if pod is not None:     # the plan has events only for a pod that is there
                self._emit(pod, actions.events)
            if not actions.has_work or acts == self._MAX_ACTS:
                break
            self._act(pod, actions)
            acts += 1
            if self.done:
                return None
        if pod is not None:
            self.ctx.probes.sync_pod(pod, [RunningContainer(c.name, c.id, c.started_at or 0) for c in view.running()],
                                     view.pod_ip)
            self._report(pod, view, actions)
        for pf_name, pf in list(self.mem.pull_failures.items()):
            if pf.fresh:
                self.mem.pull_failures[pf_name] = replace(pf, fresh=False)
        return actions.wake_at

    def _observe(self, pod: Mapping | None) -> PodRuntimeView:
        rt = self.ctx.runtime
        containers: list[ObservedContainer] = []
        for cid in sorted(self.mem.ids):
            st = rt.state(cid)
            if st is None:
                self.mem.ids.discard(cid)
                self.mem.terminating.pop(cid, None)
                continue
            oc = observed_from_state(st)
            if oc is None:
                continue
            containers.append(oc)
            if not oc.live:
                self.mem.terminating.pop(cid, None)
        real = {(c.name, c.attempt) for c in containers}
        newest: dict[str, int] = {}
        for c in containers:
            newest[c.name] = max(newest.get(c.name, -1), c.attempt)
        for name, syn in list(self.mem.synthetic.items()):
            if (name, syn.attempt) in real or syn.attempt < newest.get(name, -1) - 1:
                del self.mem.synthetic[name]
            else:
                containers.append(syn)
        ip = self.mem.pod_net.ip if self.mem.pod_net else None
        view = PodRuntimeView(self.uid, tuple(containers), ip, dict(self.mem.terminating))
        leftovers = self._leftovers(pod, view)
        return replace(view, leftovers=leftovers) if leftovers else view

    def _leftovers(self, pod: Mapping | None, view: PodRuntimeView) -> tuple[ObservedContainer, ...]:
        """Containers at the id a next attempt would take that the view does not show: a
        create that crashed before its start, or a container whose id the view lost. An id
        found free stays free until this worker uses it (only it creates this pod's ids), so
        it is looked up once — where a start used to look it up right before its create."""
        found = []
        for name, attempt in next_attempts(pod, view).items():
            cid = container_id_for(self.uid, name, attempt)
            if cid in self.mem.vacant:
                continue
            st = self.ctx.runtime.state(cid)
            if st is None:
                self.mem.vacant.add(cid)
                continue
            found.append(ObservedContainer(name=name, attempt=attempt, id=cid, status=st.status,
                                           exit_code=st.exit_code, pid=st.pid))
        return tuple(found)

    def _plan(self, pod: Mapping | None, view: PodRuntimeView) -> PodActions:
        """Gather the planner's inputs and plan. Feeding an exit to the tracker is bookkeeping
        (it counts each exit once, by id); its answer is the back-off the plan obeys."""
        ctx = self.ctx
        # counted_exits gives only finished attempts: the test holds for each, and narrows the type
        backoff = {name: ctx.tracker.record_exit((self.uid, name), exit_id=c.id, started_at=c.started_at,
                                                 finished_at=c.finished_at)
                   for name, c in counted_exits(pod, view).items() if c.finished_at is not None}
        return compute_pod_actions(pod, view, probes=ctx.probes.pod_results(self.uid), backoff=backoff,
                                   pull_failures=self.mem.pull_failures,
                                   config_failures=self.mem.config_failures, network_ready=ctx.network_ready(),
                                   sandbox_retry_at=self.mem.sandbox_retry_at, evented=self.mem.evented,
                                   now=ctx.clock.now())

    def _drain_first(self, pod: Mapping | None, actions: PodActions) -> PodActions:
        """A deleted pod's SIGTERMs wait until its endpoint is out of every node's Service rules
        (`ctx.drain`, docs/services.md "Draining before SIGTERM"): held, they leave the plan and
        the gate's deadline (or an informer event) wakes the worker; let go after a wait, they
        get what is left of the grace period (`drainplan.term_grace`). SIGKILLs are never held."""
        drain = self.ctx.drain
        if drain is None or pod is None or not is_deleting(pod) or not any(k.signal == "TERM" for k in actions.kill):
            return actions
        d = drain.check(pod)
        if not d.proceed:
            actions.kill = [k for k in actions.kill if k.signal != "TERM"]
            if d.wake_at is not None:
                actions._wake(d.wake_at)
            log.debug("pod %s: SIGTERM held: %s", self._name(), d.why)
            return actions
        if d.timed_out:
            log.warning("pod %s: stopping it although its endpoint may still be in Service rules: %s",
                        self._name(), d.why)
            self.ctx.events.event(pod, "Warning", "ServiceDrainTimeout",
                                  f"Stopping the pod before every node's Service rules dropped it: {d.why}")
        elif d.waited > 0:
            log.info("pod %s: out of the Service rules after %.2fs (%s); stopping it", self._name(), d.waited, d.why)
        if d.waited > 0:
            actions.kill = [replace(k, grace=term_grace(k.grace, d.waited)) if k.signal == "TERM" else k
                            for k in actions.kill]
        return actions

    def _emit(self, pod: Mapping, events: list[PodEvent]) -> None:
        for e in events:
            self.mem.evented.add(e.key)
            self.ctx.events.event(pod, e.type, e.reason, e.message)
        if len(self.mem.evented) > 256:      # only ever needs the recent keys
            self.mem.evented = set(list(self.mem.evented)[-64:])

    # -- acting ----------------------------------------------------------------------------
    def _act(self, pod: dict | None, actions: PodActions) -> None:
        """Execute one plan, step by step in its order, on the pod it was planned for (`pod`,
        not `self.pod`, which a watch event may replace or clear meanwhile). A step that fails
        is reported and remembered for the next plan, not worked around here.

        `pod` is None for a pod gone from the API server (or never seen: an orphan's
        containers): the plan then only kills, removes and tears down — it creates, starts
        and confirms nothing — and the Killing events name the last pod seen, if any."""
        ctx = self.ctx
        if actions.adopt:
            log.warning("containers %s of pod %s run unknown to the view: adopting them",
                        ", ".join(actions.adopt), self._name())
            self.mem.ids.update(actions.adopt)
        sandbox = self._begin_sandbox(pod) if pod is not None and actions.create_sandbox else None
        about = pod if pod is not None else self.last_pod
        for k in actions.kill:
            self._kill(about, k.id, k.name, k.signal, k.grace, k.message)
        # the starts run in the sandbox: one that could not even be begun (reported, its retry
        # time remembered) takes them along, and the next plan holds them until the retry
        if pod is not None and (sandbox is not None or not actions.create_sandbox):
            for s in actions.start:
                self._start(pod, s, sandbox)
        if pod is not None and sandbox is not None:
            self._finish_sandbox(pod, sandbox)
        for cid in actions.remove:
            try:
                ctx.runtime.remove(cid)
            except Exception as e:
                log.warning("removing container %s of pod %s failed: %s", cid, self._name(), e)
                continue
            self.mem.ids.discard(cid)
            self.mem.terminating.pop(cid, None)
        if actions.teardown:
            self._teardown()
        if actions.confirm_deletion and pod is not None:
            ctx.api.confirm_deletion(pod)
        if actions.teardown:
            self.done = True            # nothing of the pod is left here: the agent drops this worker

    def _name(self) -> str:
        p = self.pod or self.last_pod
        if p:
            return f"{p['metadata'].get('namespace', 'default')}/{p['metadata']['name']}"
        return f"uid {self.uid}"

    def _begin_sandbox(self, pod: Mapping) -> "_Sandbox | None":
        """Reserve the pod's address, prepare its volumes and /etc/hosts, and start making
        its network (netns, veth, address, routes) on `ctx.background`: the first container's
        image check, rootfs and monitor are prepared meanwhile, and its runtime waits for the
        network (`_Sandbox.wait`) before any of its processes runs. None on a failure
        (reported; retried after `sandbox_retry`)."""
        ctx = self.ctx
        name = pod["metadata"]["name"]
        try:
            self.mem.pod_net = ctx.network.reserve_pod(self.uid, name)
            self._prepare_volumes(pod)
            if ctx.background is None:
                self.mem.pod_net = ctx.network.setup_pod(self.uid, name)
                fut: Future = Future()
                fut.set_result(self.mem.pod_net)
            else:
                fut = ctx.background(lambda: ctx.network.setup_pod(self.uid, name))
            self._write_hosts(pod)
        except Exception as e:
            self._sandbox_failed(pod, e)
            return None
        return _Sandbox(fut)

    def _finish_sandbox(self, pod: Mapping, sandbox: "_Sandbox") -> None:
        try:
            self.mem.pod_net = sandbox.wait()
        except Exception as e:
            self._sandbox_failed(pod, e)
            return
        self.mem.sandbox_retry_at = 0.0
        self.ctx.on_sandbox_change()

    def _sandbox_failed(self, pod: Mapping, e: Exception) -> None:
        e = e.cause if isinstance(e, SandboxError) else e
        self.mem.pod_net = None
        self.mem.sandbox_retry_at = self.ctx.clock.now() + self.ctx.sandbox_retry
        self.ctx.events.event(pod, "Warning", "FailedCreatePodSandBox",
                              f"Failed to create pod sandbox for pod {self._name()}: {e}")
        log.warning("sandbox of pod %s failed: %s", self._name(), e)

    def _empty_dir(self, pod: Mapping, name: str) -> Path:
        """An emptyDir's directory: world-writable as Kubernetes makes it (any container user
        may write), and with the pod's fsGroup, owned by that group with setgid so that what
        is written there stays the group's (kubelet's volume ownership)."""
        d = self.pod_dir / "volumes" / name
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            fs_group = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
            if fs_group is not None:
                os.chown(d, -1, int(fs_group))
                os.chmod(d, 0o2777)
            else:
                os.chmod(d, 0o777)
        return d

    def _prepare_volumes(self, pod: Mapping) -> None:
        for v in (pod.get("spec") or {}).get("volumes") or []:
            if v.get("emptyDir") is not None:
                self._empty_dir(pod, v["name"])
            elif v.get("hostPath") is not None:
                hp = v["hostPath"]
                p, typ = Path(hp["path"]), hp.get("type") or ""
                if typ == "DirectoryOrCreate":
                    p.mkdir(parents=True, exist_ok=True)
                elif typ == "Directory" and not p.is_dir():
                    raise FileNotFoundError(f"hostPath volume {v['name']}: {p} is not a directory")
                elif typ == "FileOrCreate" and not p.exists():
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.touch()
                elif typ == "File" and not p.is_file():
                    raise FileNotFoundError(f"hostPath volume {v['name']}: {p} is not a file")

    def _write_hosts(self, pod: Mapping) -> None:
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        ip = self.mem.pod_net.ip if self.mem.pod_net else ""
        name = (pod.get("spec") or {}).get("hostname") or pod["metadata"]["name"]
        text = ("# managed by shoal-agent\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                + (f"{ip}\t{name}\n" if ip else ""))
        (self.pod_dir / "etc-hosts").write_text(text)

    def _mounts(self, pod: Mapping, cspec: Mapping) -> list[Mount]:
        vols = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
        out = []
        hosts = self.pod_dir / "etc-hosts"
        if hosts.exists() and not any(vm.get("mountPath") == "/etc/hosts" for vm in cspec.get("volumeMounts") or []):
            out.append(Mount(str(hosts), "/etc/hosts", options=["rbind", "rw"]))
        for i, vm in enumerate(cspec.get("volumeMounts") or []):
            v = vols.get(vm["name"])
            if v is None:
                raise ContainerConfigError(f"volumeMount {vm['name']!r} of container {cspec['name']} names no "
                                           f"volume of pod {self._name()}")
            if v.get("emptyDir") is not None:
                src = self._empty_dir(pod, v["name"])
            elif v.get("hostPath") is not None:
                src = Path(v["hostPath"]["path"])
            else:
                raise ContainerConfigError(f"volume {v['name']!r} of pod {self._name()} has no supported source "
                                           f"(emptyDir, hostPath)")
            if vm.get("subPath"):
                # never `src / subPath` handed to runc, which follows links: a container may have
                # made it one (`ln -s / vol/x`). The checked inode is bound under the pod dir.
                target = self._subpaths_dir(cspec["name"]) / v["name"] / str(i)
                try:
                    self.ctx.subpaths.mount(root=src, sub_path=vm["subPath"], target=target, volume=v["name"])
                except SubPathError as e:
                    raise ContainerConfigError(f"pod {self._name()}, container {cspec['name']}: {e}") from e
                src = target
            out.append(Mount(str(src), vm["mountPath"], options=["rbind", "ro" if vm.get("readOnly") else "rw"]))
        return out

    def _subpaths_dir(self, container: str | None = None) -> Path:
        d = self.pod_dir / SUBPATHS_DIR
        return d / container if container else d

    def _release_subpaths(self, container: str | None = None) -> list[str]:
        try:
            return self.ctx.subpaths.release(self._subpaths_dir(container))
        except OSError as e:
            log.error("releasing the subPath mounts of pod %s: %s", self._name(), e)
            return [str(self._subpaths_dir(container))]

    def _kill(self, about: Mapping | None, cid: str, name: str, sig: str, grace: int, message: str) -> None:
        """`about`: the pod the Killing event is about (None: an orphan's container, no event)."""
        ctx = self.ctx
        if sig == "TERM":
            if about is not None:
                ctx.events.event(about, "Normal", "Killing", message)
            try:
                ctx.runtime.kill(cid, signal.SIGTERM)
            except Exception as e:
                log.warning("SIGTERM to container %s of pod %s failed: %s", cid, self._name(), e)
            if grace <= 0:
                self._sigkill(cid)
                return
            deadline = ctx.clock.now() + grace
            self.mem.terminating[cid] = deadline
            # most processes exit at once: wait a little here so the restart or teardown
            # follows in this same sync instead of at the next relist
            end = time.monotonic() + min(grace, ctx.kill_wait_inline)
            delay = 0.005
            while True:
                st = ctx.runtime.state(cid)
                if st is None or st.status not in ("running", "created"):
                    return
                if time.monotonic() >= end:
                    return
                ctx.sleep(delay)
                delay = min(delay * 2, 0.1)
        else:
            self._sigkill(cid)

    def _sigkill(self, cid: str) -> None:
        try:
            self.ctx.runtime.kill(cid, signal.SIGKILL)
        except Exception as e:
            log.warning("SIGKILL to container %s of pod %s failed: %s", cid, self._name(), e)
        end = time.monotonic() + 2.0
        while True:
            st = self.ctx.runtime.state(cid)
            if st is None or st.status not in ("running", "created") or time.monotonic() >= end:
                return
            self.ctx.sleep(0.01)

    def _start(self, pod: Mapping, s: StartContainer, sandbox: "_Sandbox | None" = None) -> None:
        ctx = self.ctx
        cspec = next(c for c in pod["spec"]["containers"] if c["name"] == s.name)
        if sandbox is not None and not sandbox.ok():
            return                      # the pod's network failed: _finish_sandbox reports it
        refused = refused_host_ports(cspec, ctx.reserved_host_ports)
        if refused:                     # never run it half-published (issue 17, "Host exposure")
            self._config_failed(s.name, ContainerConfigError(f"pod {self._name()}: {'; '.join(refused)}"))
            return
        if s.existing_id:
            try:
                if sandbox is not None:
                    sandbox.wait()
                ctx.runtime.start(s.existing_id)
                ctx.events.event(pod, "Normal", "Started", f"Started container {s.name}")
            except Exception as e:
                if sandbox is not None and not sandbox.ok():
                    return              # not the container's fault: _finish_sandbox reports it
                self._start_failed(pod, s, cspec, s.existing_id, e)
            return
        image = cspec.get("image", "")
        img = self._pull(pod, cspec)
        if img is None:
            return
        cid = container_id_for(self.uid, s.name, s.attempt)
        try:
            self._create(pod, s, cspec, img, cid, sandbox)
        finally:
            # runc copied the subPath binds into the container's mount namespace while
            # making it (or made nothing): the host side is needed no more
            self._release_subpaths(s.name)

    def _create(self, pod: Mapping, s: StartContainer, cspec: Mapping, img: PulledImage, cid: str,
                sandbox: "_Sandbox | None") -> None:
        ctx = self.ctx
        image = cspec.get("image", "")
        try:
            cfg = self._config(pod, cspec, img, s.attempt, cid)
            self._config_built(s.name)
            if s.replace_leftover:      # left over by a crash between create and start
                ctx.runtime.kill(cid, signal.SIGKILL)
                ctx.runtime.remove(cid)
            self.mem.vacant.discard(cid)
            # one step: the container's process runs once its monitor is ready and the
            # pod's network is (sandbox.wait), never before
            ctx.runtime.run(cfg, ready=sandbox.wait if sandbox is not None else None)
            self.mem.ids.add(cid)
            ctx.events.event(pod, "Normal", "Created", f"Created container {s.name}")
            ctx.events.event(pod, "Normal", "Started", f"Started container {s.name}")
        except ConfigRefused as e:              # ours, or the runtime's (runAsNonRoot, privileged...)
            self._config_failed(s.name, e)      # nothing was made: no exit, no cleanup
            return
        except Exception as e:
            if sandbox is not None and not sandbox.ok():
                return                  # not the container's fault: _finish_sandbox reports it
            self._start_failed(pod, s, cspec, cid, e)
            return
        log.debug("started container %s (%s) of pod %s from %s", s.name, cid, self._name(), image)

    def _config_failed(self, name: str, e: ConfigRefused) -> None:
        """Remember it for the plan (which shows it and emits its Failed event); the retry
        follows the pull back-off arithmetic, on its own key."""
        ctx = self.ctx
        now = ctx.clock.now()
        bo = ctx.tracker.record_exit((self.uid, name, "config"), exit_id=f"config@{now}", started_at=None,
                                     finished_at=now, first_immediate=False)
        self.mem.config_failures[name] = ConfigFailure(str(e), now, bo.not_before)
        log.warning("the config of container %s of pod %s cannot be built: %s", name, self._name(), e)

    def _config_built(self, name: str) -> None:
        if self.mem.config_failures.pop(name, None) is not None:
            self.ctx.tracker.reset((self.uid, name, "config"))

    def _start_failed(self, pod: Mapping, s: StartContainer, cspec: Mapping, cid: str, e: Exception) -> None:
        ctx = self.ctx
        msg = str(e) or type(e).__name__
        ctx.events.event(pod, "Warning", "Failed", f"Error: {msg}")
        log.warning("starting container %s of pod %s failed: %s", s.name, self._name(), msg)
        try:
            if ctx.runtime.state(cid) is not None:
                ctx.runtime.kill(cid, signal.SIGKILL)
                ctx.runtime.remove(cid)
        except Exception as e2:
            log.warning("cleaning up the failed container %s: %s", cid, e2)
        self.mem.ids.discard(cid)
        now = ctx.clock.now()
        self.mem.synthetic[s.name] = ObservedContainer(
            name=s.name, attempt=s.attempt, id=cid, status="stopped", exit_code=128, started_at=now,
            finished_at=now, spec_hash=spec_hash(cspec), image=cspec.get("image", ""), reason="StartError",
            message=msg, synthetic=True)

    def _pull(self, pod: Mapping, cspec: Mapping) -> PulledImage | None:
        ctx = self.ctx
        image = cspec.get("image", "")
        name = cspec["name"]
        policy = cspec.get("imagePullPolicy") or "IfNotPresent"
        t0 = time.monotonic()
        told: list[bool] = []

        def progress(msg: str) -> None:
            if not told:
                told.append(True)
                ctx.events.event(pod, "Normal", "Pulling", f'Pulling image "{image}"')

        secrets, unread = self._pull_secrets(pod)
        try:
            img = ctx.images.pull(image, policy=policy, progress=progress, pull_secrets=secrets)
        except ImagePullError as e:
            now = ctx.clock.now()
            bo = ctx.tracker.record_exit((self.uid, name, "pull"), exit_id=f"pull@{now}", started_at=None,
                                         finished_at=now, first_immediate=False)
            message = e.message + (f" (imagePullSecrets not read: {'; '.join(unread)})" if unread else "")
            self.mem.pull_failures[name] = PullFailure(image, e.reason, message, now, bo.not_before, fresh=True)
            ctx.events.event(pod, "Warning", "Failed", f'Failed to pull image "{image}": {message}')
            ctx.events.event(pod, "Warning", "Failed", f"Error: {e.reason}")
            return None
        except Exception as e:      # a store bug must not kill the worker: report like a pull failure
            now = ctx.clock.now()
            bo = ctx.tracker.record_exit((self.uid, name, "pull"), exit_id=f"pull@{now}", started_at=None,
                                         finished_at=now, first_immediate=False)
            msg = f'failed to pull image "{image}": {e}'
            self.mem.pull_failures[name] = PullFailure(image, "ErrImagePull", msg, now, bo.not_before, fresh=True)
            ctx.events.event(pod, "Warning", "Failed", msg)
            return None
        self.mem.pull_failures.pop(name, None)
        ctx.tracker.reset((self.uid, name, "pull"))
        if told:
            ctx.events.event(pod, "Normal", "Pulled", f'Successfully pulled image "{image}" in '
                                                      f'{time.monotonic() - t0:.3f}s')
        else:
            ctx.events.event(pod, "Normal", "Pulled", f'Container image "{image}" already present on machine')
        return img

    def _pull_secrets(self, pod: Mapping) -> tuple[list[PullSecret], list[str]]:
        """The pod's imagePullSecrets as read now, and for each one that could not be read
        `"<ns>/<name>: <why>"`. As kubelet: a missing secret is a warning event, and the pull
        goes on with the others (anonymously when none is left)."""
        names = image_pull_secret_names(pod)
        if not names:
            return [], []
        ns = pod["metadata"].get("namespace") or "default"
        found: list[PullSecret] = []
        unread: list[str] = []
        for secret_name in names:
            try:
                s = self.ctx.api.read_secret(ns, secret_name)
            except errors.NotFound:
                unread.append(f"{ns}/{secret_name}: not found")
                continue
            except Exception as e:      # Forbidden, the server unreachable: the pull goes on all the same
                unread.append(f"{ns}/{secret_name}: {e}")
                continue
            data = {k: base64.b64decode(v) for k, v in (s.get("data") or {}).items() if isinstance(v, str)}
            found.append(PullSecret(ns, secret_name, s.get("type") or "Opaque", data))
        if unread:
            self.ctx.events.event(pod, "Warning", "FailedToRetrieveImagePullSecret",
                                  f"Unable to retrieve some image pull secrets ({', '.join(unread)}); "
                                  f"attempting to pull the image may not succeed.")
        return found, unread

    def _config(self, pod: Mapping, cspec: Mapping, img: PulledImage, attempt: int, cid: str) -> ContainerConfig:
        md = pod["metadata"]
        spec = pod.get("spec") or {}
        argv, env, wd, user = resolve_process(cspec, img.config or {}, spec)
        if not argv:
            raise ValueError(f"container {cspec['name']} of pod {self._name()}: no command specified (the image "
                             f"{img.reference} has neither Entrypoint nor Cmd, and the spec sets no command)")
        limits = (cspec.get("resources") or {}).get("limits") or {}
        labels = {LABEL_POD_UID: self.uid, LABEL_POD_NAME: md["name"], LABEL_POD_NAMESPACE: md.get("namespace", ""),
                  LABEL_CONTAINER: cspec["name"], LABEL_ATTEMPT: str(attempt), LABEL_SPEC_HASH: spec_hash(cspec),
                  LABEL_IMAGE: cspec.get("image", ""), LABEL_IMAGE_ID: img.image_id,
                  LABEL_GRACE: str(pod_grace_seconds(pod))}
        for k, v in (md.get("annotations") or {}).items():
            if k.startswith("shoal.io/fake-"):
                labels[k] = str(v)
        log_dir = self.pod_dir / "logs" / cspec["name"]
        log_dir.mkdir(parents=True, exist_ok=True)
        for old in log_dir.glob("*.log"):   # keep this attempt's and the previous one's
            try:
                if int(old.stem) < attempt - 1:
                    old.unlink()
            except ValueError:
                pass
        return ContainerConfig(
            id=cid, pod_uid=self.uid, pod_name=md["name"], namespace=md.get("namespace", "default"),
            container_name=cspec["name"], attempt=attempt, image=img, argv=argv, env=env, working_dir=wd, user=user,
            hostname=spec.get("hostname") or md["name"],
            netns_path=self.mem.pod_net.netns_path if self.mem.pod_net else None,
            pod_ip=self.mem.pod_net.ip if self.mem.pod_net else None,
            mounts=self._mounts(pod, cspec),
            cpu_millis=cpu_millis(limits["cpu"]) if limits.get("cpu") else None,
            memory_bytes=memory_bytes(limits["memory"]) if limits.get("memory") else None,
            log_path=str(log_dir / f"{attempt}.log"), labels=labels,
            security=container_security(cspec, spec), dns=self._dns(pod))

    def _dns(self, pod: Mapping) -> PodDNS:
        ctx = self.ctx
        dns = pod_dns(pod, cluster_nameservers=ctx.cluster_dns() if ctx.cluster_dns else (),
                      cluster_domain=ctx.cluster_domain)
        if (ctx.cluster_dns is not None and dns.policy in ("ClusterFirst", "ClusterFirstWithHostNet")
                and not dns.cluster_nameservers and not self.mem.dns_warned):
            self.mem.dns_warned = True      # once per pod, not per container
            ctx.events.event(pod, "Warning", "MissingClusterDNS",
                             f"pod: {self._name()}. node {ctx.node_name} has no cluster DNS configured and cannot "
                             f"create Pod using \"{dns.policy}\" policy. Falling back to \"Default\" policy.")
        return dns

    def _teardown(self) -> None:
        ctx = self.ctx
        try:
            ctx.network.teardown_pod(self.uid)
        except Exception as e:
            log.warning("network teardown of pod %s failed: %s", self._name(), e)
        self.mem.pod_net = None
        left = self._release_subpaths()
        if left:    # removing the pod dir would descend into the bound volume: keep it
            log.error("pod %s: subPath binds %s are still mounted; its directory %s is kept",
                      self._name(), ", ".join(left), self.pod_dir)
        else:
            shutil.rmtree(self.pod_dir, ignore_errors=True)
        ctx.probes.remove_pod(self.uid)
        ctx.tracker.forget(self.uid)
        if ctx.drain is not None:
            ctx.drain.forget(self.uid)
        ctx.on_sandbox_change()

    # -- reporting -------------------------------------------------------------------------
    def _report(self, pod: dict, view: PodRuntimeView, actions: PodActions) -> None:
        ctx = self.ctx
        probes = ctx.probes.pod_results(self.uid)
        status = build_pod_status(pod, view, actions, probes=probes, host_ip=ctx.host_ip, now=ctx.clock.now())
        if status == (pod.get("status") or {}):
            return          # the API server has it (written by us, or put back by whoever changed it)
        self.mem.writing_status = status
        stored = ctx.api.write_status(pod, status)
        if stored is not None and stored["metadata"].get("uid") == self.uid and self.pod is pod:
            # keep our copy fresh so the next CAS uses the new resourceVersion
            self.set_pod(stored)


def _desired(pod: Mapping) -> tuple:
    """What a worker acts on: the pod without its status and resourceVersion."""
    md = pod.get("metadata") or {}
    return {k: v for k, v in md.items() if k not in ("resourceVersion", "managedFields")}, pod.get("spec")

