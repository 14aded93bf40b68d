"""Scripted fakes of the agent's seams: a whole `Agent` runs without root.

Like Nomad's mock driver, `FakeRuntime` simulates processes on an injected
clock and is scripted through the pod's annotations, which the pod worker
copies into the container labels (every annotation under `shoal.io/fake-`;
the real runtime ignores them):

  shoal.io/fake-exit-after-seconds   the process exits this long after start
  shoal.io/fake-exit-code            ... with this code (default 0)
  shoal.io/fake-oom                  "true": that exit is an OOM kill (137)
  shoal.io/fake-start-error          `start` fails with this message
  shoal.io/fake-ignore-sigterm       "true": only SIGKILL stops it
  shoal.io/fake-unhealthy-after-seconds  probes fail (HTTP 500) this long after start
  shoal.io/fake-ready-after-seconds  readiness fails (HTTP 503) until this long after start

State lives in the fake objects, not in the agent: hand the same
`FakeRuntime`/`FakeNetwork`/`FakeImageStore` to a new `Agent` and it finds
"its" containers still running — the adoption tests rely on that.

`FakeImageStore(known=None)` pulls every reference except repositories whose
last path component starts with `missing` (ErrImagePull); with `known` (a
mapping reference-or-repository → image config) only those exist. A repository
whose last component starts with `private` is a private one: its pull needs an
imagePullSecret of a docker-config type (any), else it fails unauthorized, as a
real registry would; every pull's secrets are recorded in `pull_secrets`.
`FakeNetwork` hands out addresses from the node's pod CIDR and records calls.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import signal as _signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from shoal.machinery.control.clock import Clock, RealClock
from shoal.agent.interfaces import (ContainerConfig, ContainerState, HostPort, ImagePullError, Peer, PodNet,
                                    PulledImage, PullSecret)
from shoal.agent.probes import FAILURE, LIVENESS, READINESS, SUCCESS, ProbeResult, ProbeTarget

FAKE_PREFIX = "shoal.io/fake-"
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def _repo_of(ref: str) -> str:
    r = ref.split("@", 1)[0]
    last = r.rsplit("/", 1)[-1]
    if ":" in last:
        r = r[: len(r) - len(last)] + last.split(":", 1)[0]
    return r


class FakeImageStore:
    def __init__(self, known: Mapping[str, dict] | None = None, *, pull_seconds: float = 0.0):
        self.known = dict(known) if known is not None else None
        self.pull_seconds = pull_seconds
        self.present: dict[str, PulledImage] = {}
        self.pulls: list[tuple[str, str]] = []
        self.pull_secrets: list[tuple[str, tuple[PullSecret, ...]]] = []    # (reference, the pod's secrets)
        self.gc_calls: list[set[str]] = []
        self._lock = threading.Lock()

    def _config(self, ref: str) -> dict | None:
        repo = _repo_of(ref)
        if self.known is None:
            if repo.rsplit("/", 1)[-1].startswith("missing"):
                return None
            return {"Cmd": ["/bin/sh"], "Env": list(DEFAULT_ENV), "WorkingDir": "/"}
        cfg = self.known.get(ref, self.known.get(repo))
        return dict(cfg) if cfg is not None else None

    def pull(self, reference: str, *, policy: str = "IfNotPresent",
             progress: Callable[[str], None] | None = None,
             pull_secrets: Sequence[PullSecret] = ()) -> PulledImage:
        with self._lock:
            self.pulls.append((reference, policy))
            self.pull_secrets.append((reference, tuple(pull_secrets)))
            have = self.present.get(reference)
        if policy == "Never":
            if have:
                return have
            raise ImagePullError(reference, f'container image "{reference}" is not present with pull policy of Never',
                                 reason="ErrImageNeverPull")
        if have and policy != "Always":
            return have
        cfg = self._config(reference)
        if cfg is None:
            raise ImagePullError(reference, f'failed to pull image "{reference}": repository '
                                            f'{_repo_of(reference)} not found: manifest unknown')
        if _repo_of(reference).rsplit("/", 1)[-1].startswith("private") and not any(
                s.type in ("kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg") for s in pull_secrets):
            raise ImagePullError(reference, f'failed to pull image "{reference}": unauthorized: repository '
                                            f'{_repo_of(reference)} needs credentials')
        if progress:
            progress(f"resolving {reference}")
        if self.pull_seconds:
            time.sleep(self.pull_seconds)
        digest = "sha256:" + hashlib.sha256(reference.encode()).hexdigest()
        img = PulledImage(reference=reference, digest=digest, image_id=f"{_repo_of(reference)}@{digest}",
                          layers=[], config=cfg)
        with self._lock:
            self.present[reference] = img
        return img

    def gc(self, in_use: set[str]) -> list[str]:
        with self._lock:
            self.gc_calls.append(set(in_use))
            gone = [r for r, img in self.present.items() if img.digest not in in_use]
            for r in gone:
                del self.present[r]
            return gone


class _Proc:
    def __init__(self, cfg: ContainerConfig, created_at: float):
        self.cfg = cfg
        self.state = ContainerState(id=cfg.id, status="created", labels=dict(cfg.labels), log_path=cfg.log_path)
        self.created_at = created_at

    def script(self, key: str) -> str | None:
        return self.cfg.labels.get(FAKE_PREFIX + key)


class FakeRuntime:
    """An in-memory runtime whose processes live on `clock`. Thread-safe."""

    def __init__(self, clock: Clock | None = None):
        self.clock: Clock = clock or RealClock()
        self._procs: dict[str, _Proc] = {}
        self._lock = threading.Lock()
        self._next_pid = 1000
        self.calls: list[tuple] = []

    # -- the Runtime protocol ---------------------------------------------------------
    def create(self, cfg: ContainerConfig) -> None:
        with self._lock:
            self.calls.append(("create", cfg.id))
            if cfg.id in self._procs:
                raise RuntimeError(f"container {cfg.id} already exists")
            self._procs[cfg.id] = _Proc(cfg, self.clock.now())

    def start(self, container_id: str) -> None:
        with self._lock:
            self.calls.append(("start", container_id))
            p = self._get(container_id)
            if p.state.status != "created":
                raise RuntimeError(f"container {container_id} is {p.state.status}, not created: cannot start")
            err = p.script("start-error")
            if err:
                raise RuntimeError(f"fake start error for container {container_id}: {err}")
            self._next_pid += 1
            p.state = replace(p.state, status="running", pid=self._next_pid, started_at=self.clock.now())
        self._log(p, f"started {p.cfg.container_name} attempt {p.cfg.attempt}: {' '.join(p.cfg.argv)}")

    def run(self, cfg: ContainerConfig, *, ready: Callable[[], object] | None = None) -> None:
        if ready is not None:
            ready()
        self.create(cfg)
        try:
            self.start(cfg.id)
        except Exception:
            with self._lock:
                self._procs.pop(cfg.id, None)     # as the real one: nothing left of a failed run
            raise

    def kill(self, container_id: str, signal: int) -> None:
        with self._lock:
            self.calls.append(("kill", container_id, int(signal)))
            p = self._procs.get(container_id)
            if p is None:
                return
            self._refresh(p)
            if p.state.status == "created" and signal == _signal.SIGKILL:
                p.state = replace(p.state, status="stopped", exit_code=137, finished_at=self.clock.now())
                return
            if p.state.status != "running":
                return
            if signal == _signal.SIGTERM and p.script("ignore-sigterm") == "true":
                return
            p.state = replace(p.state, status="stopped", exit_code=128 + int(signal), finished_at=self.clock.now())

    def remove(self, container_id: str) -> None:
        with self._lock:
            self.calls.append(("remove", container_id))
            p = self._procs.get(container_id)
            if p is None:
                return
            self._refresh(p)
            if p.state.status == "running":
                raise RuntimeError(f"container {container_id} is running: stop it before removing it")
            del self._procs[container_id]

    def list(self) -> list[ContainerState]:
        with self._lock:
            out = []
            for p in self._procs.values():
                self._refresh(p)
                out.append(p.state)
            return out

    def state(self, container_id: str) -> ContainerState | None:
        with self._lock:
            p = self._procs.get(container_id)
            if p is None:
                return None
            self._refresh(p)
            return p.state

    def exec(self, container_id: str, argv: list[str], timeout: float) -> tuple[int, bytes]:
        with self._lock:
            self.calls.append(("exec", container_id, tuple(argv)))
            p = self._get(container_id)
            self._refresh(p)
            if p.state.status != "running":
                raise RuntimeError(f"container {container_id} is not running")
        if argv[:1] == ["false"]:
            return 1, b""
        return 0, b""

    # -- test helpers -------------------------------------------------------------------
    def crash(self, container_id: str, exit_code: int = 1, *, oom: bool = False) -> None:
        """Make a running container exit now (as if its process died)."""
        with self._lock:
            p = self._get(container_id)
            self._refresh(p)
            if p.state.status == "running":
                p.state = replace(p.state, status="stopped", exit_code=exit_code, oom_killed=oom,
                                  finished_at=self.clock.now())

    def running(self) -> list[ContainerState]:
        return [s for s in self.list() if s.status == "running"]

    def config(self, container_id: str) -> ContainerConfig:
        with self._lock:
            return self._get(container_id).cfg

    # -- internals ------------------------------------------------------------------------
    def _get(self, cid: str) -> _Proc:
        p = self._procs.get(cid)
        if p is None:
            raise KeyError(f"container {cid} does not exist")
        return p

    def _refresh(self, p: _Proc) -> None:
        """Apply the scripted exit once its time has come."""
        if p.state.status != "running":
            return
        after = p.script("exit-after-seconds")
        if after is None:
            return
        end = p.state.started_at + float(after)
        if self.clock.now() >= end:
            oom = p.script("oom") == "true"
            code = 137 if oom else int(p.script("exit-code") or 0)
            p.state = replace(p.state, status="stopped", exit_code=code, oom_killed=oom, finished_at=end)

    def _log(self, p: _Proc, line: str) -> None:
        if not p.cfg.log_path:
            return
        try:
            Path(p.cfg.log_path).parent.mkdir(parents=True, exist_ok=True)
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.clock.now()))
            with open(p.cfg.log_path, "a") as f:
                f.write(f"{ts}.000000000Z stdout F {line}\n")
        except OSError:
            pass


class FakeProbeExecutor:
    """Probe answers scripted by pod annotations (see the module docstring)."""

    def __init__(self, runtime: FakeRuntime, clock: Clock | None = None):
        self.runtime = runtime
        self.clock = clock or runtime.clock

    def run(self, kind: str, probe: Mapping, target: ProbeTarget, timeout: float) -> ProbeResult:
        st = self.runtime.state(target.container_id)
        if st is None or st.status != "running":
            return ProbeResult(FAILURE, f"container {target.container_id} is not running")
        age = self.clock.now() - (st.started_at or 0)
        ann = (target.pod.get("metadata") or {}).get("annotations") or {}

        def fail(code: int) -> ProbeResult:
            if probe.get("httpGet") is not None:
                return ProbeResult(FAILURE, f"HTTP probe failed with statuscode: {code}")
            if probe.get("tcpSocket") is not None:
                return ProbeResult(FAILURE, f"dial tcp {target.pod_ip}:{probe['tcpSocket'].get('port')}: "
                                            f"connect: connection refused")
            return ProbeResult(FAILURE, "command failed: exit status 1")

        unhealthy = ann.get(FAKE_PREFIX + "unhealthy-after-seconds")
        if kind in (LIVENESS, READINESS) and unhealthy is not None and age >= float(unhealthy):
            return fail(500)
        ready_after = ann.get(FAKE_PREFIX + "ready-after-seconds")
        if kind == READINESS and ready_after is not None and age < float(ready_after):
            return fail(503)
        return ProbeResult(SUCCESS)


class FakeNetwork:
    """Records every call; allocates pod IPs from the node's CIDR (gateway first)."""

    def __init__(self, state_dir: str | os.PathLike | None = None):
        self.cidr: str | None = None
        self._pods: dict[str, PodNet] = {}
        self._reserved: dict[str, PodNet] = {}   # addresses handed out, network not made yet
        self._lock = threading.Lock()
        self.calls: list[tuple] = []
        self.host_ports: list[HostPort] = []
        self.peers: list[Peer] = []
        self.peer_syncs = 0
        self.underlay_ip: str | None = None

    def ensure_node(self, pod_cidr: str) -> None:
        with self._lock:
            self.calls.append(("ensure_node", pod_cidr))
            if self.cidr and self.cidr != pod_cidr:
                raise ValueError(f"node network already built for pod CIDR {self.cidr}, asked for {pod_cidr}")
            self.cidr = pod_cidr

    def reserve_pod(self, pod_uid: str, pod_name: str) -> PodNet:
        with self._lock:
            self.calls.append(("reserve_pod", pod_uid, pod_name))
            return self._allocate(pod_uid, pod_name)

    def setup_pod(self, pod_uid: str, pod_name: str) -> PodNet:
        with self._lock:
            self.calls.append(("setup_pod", pod_uid, pod_name))
            pn = self._allocate(pod_uid, pod_name)
            self._pods[pod_uid] = pn
            return pn

    def _allocate(self, pod_uid: str, pod_name: str) -> PodNet:
        if pod_uid in self._pods:
            return self._pods[pod_uid]
        if pod_uid in self._reserved:
            return self._reserved[pod_uid]
        if not self.cidr:
            raise RuntimeError(f"cannot set up the network of pod {pod_name}: the node has no pod CIDR yet")
        net = ipaddress.ip_network(self.cidr)
        used = {p.ip for p in self._pods.values()} | {p.ip for p in self._reserved.values()}
        hosts = net.hosts()
        next(hosts)       # the bridge's address
        for h in hosts:
            if str(h) not in used:
                pn = PodNet(pod_uid, f"/run/netns/fake-{pod_uid[:12]}", str(h))
                self._reserved[pod_uid] = pn
                return pn
        raise RuntimeError(f"pod CIDR {self.cidr} is exhausted: no address for pod {pod_name}")

    def teardown_pod(self, pod_uid: str) -> None:
        with self._lock:
            self.calls.append(("teardown_pod", pod_uid))
            self._pods.pop(pod_uid, None)
            self._reserved.pop(pod_uid, None)

    def pods(self) -> list[str]:
        with self._lock:
            return list(self._pods)

    def sync_host_ports(self, ports: list[HostPort]) -> None:
        with self._lock:
            self.calls.append(("sync_host_ports", len(ports)))
            self.host_ports = list(ports)

    def ensure_overlay(self, underlay_ip: str) -> str:
        with self._lock:
            self.calls.append(("ensure_overlay", underlay_ip))
            self.underlay_ip = underlay_ip
            h = hashlib.sha256(underlay_ip.encode()).digest()
            return "02:" + ":".join(f"{b:02x}" for b in h[:5])

    def sync_peers(self, peers: list[Peer]) -> None:
        with self._lock:
            self.calls.append(("sync_peers", len(peers)))
            self.peers = sorted(peers, key=lambda p: p.node)
            self.peer_syncs += 1
