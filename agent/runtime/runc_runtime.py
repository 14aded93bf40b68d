"""`RuncRuntime`: the agent's `Runtime` on real runc, one conmon per container.

Layout (all the state a restarted agent needs is here or in runc's `--root`;
nothing lives only in memory). Under `state_dir` — the volatile part, which
lives exactly as long as the containers it describes (a reboot ends both), so
it belongs on tmpfs, as containerd's and runc's own state under /run:

    containers/<id>/meta.json      labels, names, log path, cgroup path (written first)
    containers/<id>/bundle/        config.json, rootfs/ (overlay mount point),
                                   pidfile, conmon's attach socket and fifos
    containers/<id>/persist/       conmon's `exit` and `oom` files
    containers/<id>/etc/           hosts, hostname, resolv.conf (bind-mounted)
    containers/<id>/conmon.pid     the monitor, to tell "exited" from "monitor lost"
    containers/<id>/init.json      the container's init pid and its start time (clock ticks)
    containers/<id>/started        unix time of `runc start` (or of `run`)
    exits/<id>                     conmon's exit file (exit code; mtime = finish time)
    sockets/<id>                   conmon's symlink to the bundle (attach socket)

Under `root_dir` — on disk, as containerd's snapshots under /var/lib (a
container's writes can be large):

    rw/<id>/upper, work            the overlay's writable layer and its work dir
    runc-run                       the run shim conmon runs for `run` (monitor.py)

`state_dir` defaults to `root_dir`. Each container start creates ≈ 20 files and
directories in `state_dir` and removes them again; on a tmpfs that costs nothing
measurable, on ext4 it was ≈ 4 ms of CPU per container at 8 at a time
(docs/benchmarks.md). A writable layer whose container is gone from `state_dir`
(its tmpfs did not survive a reboot) is removed when the runtime is opened.

Verbs (the `agent.interfaces.Runtime` contract):
- create: meta.json → overlay mount → user resolved in the rootfs → /etc files
  → config.json (`spec.build_oci_spec`) → conmon, placed in
  `<cgroup_parent>/shoal-monitors`, runs `runc create` → state "created".
  Any failure undoes what was done and raises with the pod and container named.
- start: `runc start`. kill: `runc kill`, silent if already exited or unknown.
- run: create + start as one step: conmon runs `runc run --detach` through the
  run shim (`runc-run` here), after `ready()` — the pod worker's path.
- state/list: the init process's pid and start time (`init.json`, checked
  against /proc) + the exit file + the oom file + timestamps, folded by the
  pure `assemble_state`; `runc state` only where those records cannot tell
  (between create and start, a create that died half-way, a container only
  runc knows). No fork per observation.
- remove: refuses a running container; `runc delete` (never `-f` on a stopped
  one: it polls, ~100 ms), unmount, left-over cgroup, exit file, socket link,
  the container dir. The log file stays (the pod worker owns it).
- exec: `runc exec` with a timeout; on timeout both runc and the process it
  started in the container are killed and TimeoutError raised.

OOM: conmon writes `persist/oom` when the container's cgroup records an OOM
kill (it watches memory.oom_control on v1, memory.events on v2); the cgroup's
own counter is read as a fallback while the cgroup still exists.
"""
from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import stat as _stat
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from shoal.agent.hostfiles import private_dir, write_private
from shoal.agent.interfaces import ConfigRefused, ContainerConfig, ContainerState

from shoal.agent.runtime import logs as _logs
from shoal.agent.runtime.cgroups import Cgroups
from shoal.agent.runtime.monitor import (DEFAULT_CONMON, MonitorPaths, conmon_argv, install_run_shim, monitor_alive,
                                         spawn_monitor)
from shoal.agent.runtime.mounts import is_mounted, mount_overlay, unmount
from shoal.agent.runtime.runc import DEFAULT_RUNC, CommandRunner, Runc, SubprocessRunner
from shoal.agent.runtime.seccomp import DEFAULT_PROFILE_PATH, SeccompProfileError, load_profile
from shoal.agent.runtime.spec import (NOFILE_LIMIT, PIDS_LIMIT, EtcFiles, ResolvedUser, build_oci_spec, effective_hostname,
                                      format_resolv_conf, parse_resolv_conf, pod_resolv_conf, render_hosts,
                                      render_resolv_conf, resolve_user)

log = logging.getLogger(__name__)

MONITORS_CGROUP = "shoal-monitors"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ContainerExists(RuntimeError):
    pass


class CreateError(RuntimeError):
    """create failed (and was undone); the message names pod, container and cause."""


# ---------------------------------------------------------------------------- pure
@dataclass(frozen=True)
class DiskRecord:
    """What the runtime finds on disk for one container."""
    id: str
    labels: dict
    log_path: str = ""
    created_at: float | None = None
    started_at: float | None = None
    exit_code: int | None = None
    finished_at: float | None = None
    oom_file: bool = False
    monitor_alive: bool = False


def parse_exit_file(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def assemble_state(rec: DiskRecord, runc_state: dict | None, *, oom_counter: int | None = None) -> ContainerState:
    """Fold runc's view and conmon's files into one ContainerState.

    - runc knows it as created/running/paused → that (paused reads running), with its pid;
    - runc says stopped, or has forgotten it, and conmon left an exit code → stopped with it;
    - runc says stopped, no exit file, monitor dead → stopped, exit code unknown (None);
    - runc says stopped, no exit file yet but the monitor lives → still "running"
      without a pid: conmon writes the file a few ms after reaping;
    - neither runc nor an exit file (a create that crashed half-way) → unknown.
    """
    status = (runc_state or {}).get("status")
    pid = (runc_state or {}).get("pid") or None
    oom = rec.oom_file or bool(oom_counter)
    started = rec.started_at
    if started is not None and rec.exit_code is not None and rec.finished_at is not None:
        # The exit time is the exit file's mtime, which the kernel keeps at tick resolution
        # (a few ms behind the clock); a container that exits at once can seem to finish
        # before it started. It did not.
        started = min(started, rec.finished_at)
    base = dict(id=rec.id, labels=dict(rec.labels), log_path=rec.log_path, started_at=started)
    if status in ("created", "running", "paused", "creating"):
        return ContainerState(status="created" if status in ("created", "creating") else "running",
                              pid=pid, **base)
    if rec.exit_code is not None:
        return ContainerState(status="stopped", exit_code=rec.exit_code, finished_at=rec.finished_at,
                              oom_killed=oom, **base)
    if status == "stopped":
        if rec.monitor_alive:
            return ContainerState(status="running", pid=None, **base)
        return ContainerState(status="stopped", exit_code=None, finished_at=rec.finished_at,
                              oom_killed=oom, **base)
    return ContainerState(status="unknown", **base)


def runc_created_at(runc_state: dict | None) -> float | None:
    ts = (runc_state or {}).get("created")
    if not ts:
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", ts)
    if not m:
        return None
    import datetime as _dt
    base = _dt.datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    return base.timestamp() + frac


# ---------------------------------------------------------------------------- executor
class RuncRuntime:
    def __init__(self, root_dir: str, *, runc_root: str, state_dir: str | None = None, cgroup_parent: str = "/shoal",
                 runner: CommandRunner | None = None, runc_binary: str = DEFAULT_RUNC,
                 conmon_binary: str = DEFAULT_CONMON, log_size_max: int = 10 * 1024 * 1024,
                 cgroups: Cgroups | None = None, clock: Callable[[], float] = time.time,
                 host_resolv_conf: str = "/etc/resolv.conf", create_timeout: float = 30.0,
                 conmon_log_level: str | None = None, seccomp_profile_path: str = DEFAULT_PROFILE_PATH,
                 pids_limit: int | None = PIDS_LIMIT, allow_privileged: bool = False,
                 seccomp_dir: str | None = None):
        self.root_dir = os.path.abspath(root_dir)
        self.state_dir = os.path.abspath(state_dir or root_dir)
        self.runc_root = os.path.abspath(runc_root)
        self.cgroup_parent = "/" + cgroup_parent.strip("/")
        self.runner: CommandRunner = runner or SubprocessRunner()
        self.runc = Runc(root=self.runc_root, binary=runc_binary, runner=self.runner)
        self.conmon_binary = conmon_binary
        self.log_size_max = log_size_max
        self.cgroups = cgroups or Cgroups()
        self._exit_watcher = None
        self.clock = clock
        self.host_resolv_conf = host_resolv_conf
        self.create_timeout = create_timeout
        self.conmon_log_level = conmon_log_level
        self.seccomp_profile_path = seccomp_profile_path
        self._seccomp_profile: dict | None = None     # loaded at the first container that needs it
        self.pids_limit = pids_limit
        self.seccomp_dir = seccomp_dir      # Localhost profiles; None: the node has none
        self.allow_privileged = allow_privileged
        # conmon processes this object spawned: reaped when they exit. Those
        # of an earlier agent belong to init now.
        self._monitors: dict[str, subprocess.Popen] = {}
        # Docker's NOFILE (1048576), but never above the agent's own hard
        # limit: raising it needs CAP_SYS_RESOURCE, which a host may withhold
        # (this VM does) and runc would then fail with EPERM.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        self.nofile = NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)
        self._lock = threading.Lock()
        # 0700: bundles hold the pods' env, rootfs mounts their setuid files (agent/hostfiles.py)
        for d in (self.root_dir, self.state_dir, self.containers_dir, self.exit_dir, self.socket_dir,
                  self.runc_root, self.rw_root):
            private_dir(d)
        self.run_shim = install_run_shim(os.path.join(self.root_dir, "runc-run"), self.runc.binary)
        self._remove_orphan_layers()

    # ------------------------------------------------------------------ paths
    @property
    def containers_dir(self) -> str:
        return os.path.join(self.state_dir, "containers")

    @property
    def exit_dir(self) -> str:
        return os.path.join(self.state_dir, "exits")

    @property
    def socket_dir(self) -> str:
        return os.path.join(self.state_dir, "sockets")

    @property
    def rw_root(self) -> str:
        return os.path.join(self.root_dir, "rw")

    def rw_dir(self, cid: str) -> str:
        """The container's writable layer (upper) and overlay work dir, on disk."""
        self.container_dir(cid)             # validates the id
        return os.path.join(self.rw_root, cid)

    def _remove_orphan_layers(self) -> None:
        """Writable layers of containers that neither our records nor runc know any more
        (their state did not survive a reboot): nothing can use them again."""
        for cid in os.listdir(self.rw_root):
            if not _ID.match(cid) or os.path.isdir(self.container_dir(cid)) \
                    or os.path.isdir(os.path.join(self.runc_root, cid)):
                continue
            log.info("removing the writable layer of container %s: its state is gone (a reboot?)", cid)
            shutil.rmtree(self.rw_dir(cid), ignore_errors=True)

    def container_dir(self, cid: str) -> str:
        if not _ID.match(cid):
            raise ValueError(f"invalid container id {cid!r}: letters, digits, '_', '.', '-' only")
        return os.path.join(self.containers_dir, cid)

    def bundle_dir(self, cid: str) -> str:
        return os.path.join(self.container_dir(cid), "bundle")

    def rootfs_dir(self, cid: str) -> str:
        return os.path.join(self.bundle_dir(cid), "rootfs")

    def cgroup_path(self, cid: str) -> str:
        return f"{self.cgroup_parent}/{cid}"

    @property
    def monitors_cgroup(self) -> str:
        return f"{self.cgroup_parent}/{MONITORS_CGROUP}"

    # ------------------------------------------------------------------ create
    def create(self, cfg: ContainerConfig) -> None:
        self._make(cfg, run=False, ready=None)

    def run(self, cfg: ContainerConfig, *, ready: Callable[[], object] | None = None) -> None:
        """create + start in one runc process (conmon runs the run shim). `ready()` is
        called once conmon runs (its move into its cgroup under way) and before runc runs:
        a pod's network can be finished meanwhile. If it raises, everything is undone and
        CreateError raised."""
        self._make(cfg, run=True, ready=ready)

    def _make(self, cfg: ContainerConfig, *, run: bool, ready: Callable[[], None] | None) -> None:
        cid = cfg.id
        cdir = self.container_dir(cid)
        what = f"container {cfg.container_name!r} ({cid}) of pod {cfg.namespace}/{cfg.pod_name}"
        # runc keeps one state dir per container under its root: a file check
        # instead of a `runc state` fork on the pod-start path.
        if os.path.exists(cdir) or os.path.exists(os.path.join(self.runc_root, cid)):
            raise ContainerExists(f"{what} already exists: remove it first")
        if not cfg.log_path:
            raise ValueError(f"{what}: no log_path")
        t0 = time.monotonic()
        os.mkdir(cdir, 0o700)
        try:
            self._create(cfg, cdir, run=run, ready=ready)
        except BaseException as e:
            log.warning("create %s failed, undoing: %s", what, e)
            try:
                self._cleanup(cid, force=True)
            except Exception as ce:   # keep the original error; the leftovers show in list()
                log.error("cleanup after failed create of %s: %s", cid, ce)
            if isinstance(e, ConfigRefused):
                raise               # the pod's config, not the node: already names pod and container
            if isinstance(e, Exception):
                raise CreateError(f"create {what}: {e}") from e
            raise
        log.debug("%s %s in %.1f ms", "ran" if run else "created", cid, (time.monotonic() - t0) * 1000)

    def _create(self, cfg: ContainerConfig, cdir: str, *, run: bool, ready: Callable[[], None] | None) -> None:
        cid = cfg.id
        bundle, rootfs = self.bundle_dir(cid), self.rootfs_dir(cid)
        rw = self.rw_dir(cid)
        if os.path.exists(rw):          # left by an earlier attempt whose clean-up was cut short
            shutil.rmtree(rw)
        upper, work = os.path.join(rw, "upper"), os.path.join(rw, "work")
        persist, etc = os.path.join(cdir, "persist"), os.path.join(cdir, "etc")
        for d in (upper, work, rootfs, persist, etc):
            os.makedirs(d)
        _write_json(os.path.join(cdir, "meta.json"), {
            "id": cid, "pod_uid": cfg.pod_uid, "pod_name": cfg.pod_name, "namespace": cfg.namespace,
            "container_name": cfg.container_name, "attempt": cfg.attempt, "labels": dict(cfg.labels),
            "log_path": os.path.abspath(cfg.log_path), "image": cfg.image.reference,
            "image_digest": cfg.image.digest, "cgroup": self.cgroup_path(cid), "created_at": self.clock(),
        })
        for layer in cfg.image.layers:
            if not os.path.isdir(layer):
                raise FileNotFoundError(f"layer directory {layer} of image {cfg.image.reference} "
                                        f"({cfg.image.digest}) is missing")
        mount_overlay(rootfs, layers=list(cfg.image.layers), upper=upper, work=work)

        user = self._resolve_user(cfg, rootfs)
        hostname = effective_hostname(cfg)
        etc_files = EtcFiles(hosts=os.path.join(etc, "hosts"), hostname=os.path.join(etc, "hostname"),
                             resolv_conf=os.path.join(etc, "resolv.conf"))
        _write_text(etc_files.hostname, hostname + "\n")
        _write_text(etc_files.hosts, render_hosts(hostname, cfg.pod_ip or self._pod_ip(cfg.netns_path)))
        try:
            with open(self.host_resolv_conf) as f:
                host_resolv = f.read()
        except FileNotFoundError:
            host_resolv = ""
        if cfg.dns is None:
            _write_text(etc_files.resolv_conf, render_resolv_conf(host_resolv))
        else:
            conf, warnings = pod_resolv_conf(parse_resolv_conf(host_resolv), cfg.dns)
            for w in warnings:      # the kubelet's DNSConfigForming
                log.warning("pod %s/%s: %s", cfg.namespace, cfg.pod_name, w)
            _write_text(etc_files.resolv_conf, format_resolv_conf(conf))

        sec = cfg.security
        if sec.privileged and not self.allow_privileged:
            raise ConfigRefused(f"pod {cfg.namespace}/{cfg.pod_name}, container {cfg.container_name}: "
                                "securityContext.privileged: privileged containers are not allowed on this node "
                                "(start its agent with --allow-privileged)")
        profile = None
        if not sec.privileged and sec.seccomp == "Localhost":
            profile = self._localhost_profile(cfg)
        elif not sec.privileged and sec.seccomp != "Unconfined":
            if self._seccomp_profile is None:
                self._seccomp_profile = load_profile(self.seccomp_profile_path)
            profile = self._seccomp_profile
        spec = build_oci_spec(cfg, rootfs=rootfs, cgroups_path=self.cgroup_path(cid), user=user,
                              etc_files=etc_files, nofile=self.nofile, seccomp_profile=profile,
                              pids_limit=self.pids_limit)
        # 0600: the spec carries the pod's env (secrets); runc reads it as root
        write_private(os.path.join(bundle, "config.json"), json.dumps(spec, separators=(",", ":")))

        log_path = os.path.abspath(cfg.log_path)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        paths = MonitorPaths(bundle=bundle, container_pidfile=os.path.join(bundle, "pidfile"),
                             log_path=log_path, exit_dir=self.exit_dir, persist_dir=persist,
                             socket_dir=self.socket_dir, stderr_path=os.path.join(cdir, "conmon.stderr"))
        argv = conmon_argv(container_id=cid, name=f"{cfg.namespace}_{cfg.pod_name}_{cfg.container_name}_{cfg.attempt}",
                           runc_binary=self.run_shim if run else self.runc.binary, runc_root=self.runc_root,
                           paths=paths,
                           log_size_max=self.log_size_max, conmon_binary=self.conmon_binary,
                           log_level=self.conmon_log_level)
        released: list[float] = []

        def release() -> None:
            if ready is not None:
                ready()
            released.append(self.clock())   # conmon runs `runc run` from here: the start

        proc, pid = spawn_monitor(argv, stderr_path=paths.stderr_path,
                                  place=lambda p: self.cgroups.join(p, self.monitors_cgroup),
                                  timeout=self.create_timeout, ready=release)
        with self._lock:
            self._monitors[cid] = proc
        _write_text(os.path.join(cdir, "conmon.pid"), str(proc.pid))
        # The init process's identity (pid + start time, as runc itself keeps it): state()
        # reads liveness from /proc instead of forking `runc state` (≈ 10 ms each).
        _write_json(os.path.join(cdir, "init.json"), {"pid": pid, "start": proc_start_time(pid)})
        if run:
            _write_text(os.path.join(cdir, "started"), repr(released[0]))
        try:
            _logs.track_rotation(log_path)
        except OSError as e:     # e.g. a log filesystem without hard links: no <log>.1, still a log
            log.warning("container %s: cannot keep rotated logs for %s: %s", cid, log_path, e)
        log.debug("container %s created: init pid %d under conmon %d", cid, pid, proc.pid)

    def _localhost_profile(self, cfg: ContainerConfig) -> dict:
        """`seccompProfile: {type: Localhost, localhostProfile: P}`: the profile file P inside the
        node's seccomp directory (kubelet's `<root-dir>/seccomp`); never a path outside it."""
        where = (f"pod {cfg.namespace}/{cfg.pod_name}, container {cfg.container_name}: "
                 f"securityContext.seccompProfile.localhostProfile {cfg.security.seccomp_localhost!r}")
        if not self.seccomp_dir:
            raise ConfigRefused(f"{where}: this node has no seccomp profile directory")
        base = os.path.realpath(self.seccomp_dir)
        path = os.path.realpath(os.path.join(base, cfg.security.seccomp_localhost))
        if not path.startswith(base + os.sep):
            raise ConfigRefused(f"{where}: resolves outside {base}")
        try:
            return load_profile(path)
        except SeccompProfileError as e:
            raise ConfigRefused(f"{where}: {e}") from None

    def _resolve_user(self, cfg: ContainerConfig, rootfs: str) -> ResolvedUser:
        where = f"image {cfg.image.reference} ({cfg.image.digest})"
        passwd = _read_in_rootfs(rootfs, "etc/passwd")
        group = _read_in_rootfs(rootfs, "etc/group")
        return resolve_user(cfg.user, passwd=passwd, group=group, where=where)

    def _pod_ip(self, netns_path: str | None) -> str | None:
        """The pod's IPv4 address (for /etc/hosts), read inside its netns."""
        if not netns_path:
            return None
        r = self.runner.run(["nsenter", f"--net={netns_path}", "ip", "-4", "-o", "addr", "show",
                             "scope", "global"], timeout=5)
        if r.returncode != 0:
            log.debug("no pod IP in %s: %s", netns_path, r.stderr.decode(errors="replace").strip())
            return None
        m = re.search(rb"inet (\d+\.\d+\.\d+\.\d+)/", r.stdout)
        return m.group(1).decode() if m else None

    # ------------------------------------------------------------------ start / kill
    def start(self, container_id: str) -> None:
        self.runc.start(container_id)
        _write_text(os.path.join(self.container_dir(container_id), "started"), repr(self.clock()))

    def kill(self, container_id: str, signal: int) -> None:
        self.runc.kill(container_id, signal)

    # ------------------------------------------------------------------ state / list
    def state(self, container_id: str) -> ContainerState | None:
        cdir = self.container_dir(container_id)
        if not os.path.isdir(cdir):
            if not os.path.isdir(os.path.join(self.runc_root, container_id)):
                return None                      # nobody knows it (runc keeps a dir per container)
            rs = self.runc.state(container_id)   # only runc knows it: a leftover of a crashed create
            return None if rs is None else self._assemble(container_id, rs)
        return self._assemble(container_id, self._runc_view(container_id))

    def _runc_view(self, cid: str) -> dict | None:
        """What `runc state` would say of a container we created, from our own records and
        /proc — no fork on the hot path. runc is asked only when the records cannot tell
        (a create that died half-way, the moment between `runc create` and a recorded start)."""
        init = _read_json(os.path.join(self.container_dir(cid), "init.json"))
        if not init or not init.get("pid"):
            return self.runc.state(cid)
        if not os.path.isdir(os.path.join(self.runc_root, cid)):
            return None                              # deleted from runc
        alive = proc_alive(int(init["pid"]), init.get("start"))
        if alive and not os.path.exists(os.path.join(self.container_dir(cid), "started")):
            return self.runc.state(cid)              # created, or started just now
        return {"id": cid, "pid": int(init["pid"]) if alive else 0, "status": "running" if alive else "stopped"}

    def wait_exit(self, timeout: float) -> bool:
        """Block until a container exits (conmon writes its exit file) or timeout; True on an exit."""
        if self._exit_watcher is None:
            from shoal.agent.runtime.exitwatch import ExitWatcher
            self._exit_watcher = ExitWatcher(self.exit_dir)
        return self._exit_watcher.wait(timeout)

    def list(self) -> list[ContainerState]:
        ids: set[str] = set()
        for d in (self.containers_dir, self.runc_root):   # runc keeps one dir per container
            try:
                ids |= {x for x in os.listdir(d) if _ID.match(x)}
            except FileNotFoundError:
                pass
        out = []
        for cid in sorted(ids):
            st = self.state(cid)
            if st is not None:
                out.append(st)
        return out

    def _assemble(self, cid: str, rs: dict | None) -> ContainerState:
        rec = self._disk_record(cid, rs)
        if rs and rs.get("status") == "stopped" and rec.exit_code is None and rec.monitor_alive:
            # conmon writes the exit file right after reaping; give it a moment.
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and rec.exit_code is None and rec.monitor_alive:
                time.sleep(0.01)
                rec = self._disk_record(cid, rs)
        counter = None
        if rec.exit_code is not None and not rec.oom_file and self.cgroups.exists(self.cgroup_path(cid)):
            counter = self.cgroups.oom_kills(self.cgroup_path(cid))
        if rec.log_path:
            try:
                _logs.track_rotation(rec.log_path)
            except OSError as e:
                log.debug("log rotation tracking for %s: %s", cid, e)
        self._reap(cid)
        return assemble_state(rec, rs, oom_counter=counter)

    def _disk_record(self, cid: str, rs: dict | None) -> DiskRecord:
        cdir = self.container_dir(cid)
        meta = _read_json(os.path.join(cdir, "meta.json")) or {}
        # The monitor first, the exit file after: conmon writes the file and then exits, so a
        # monitor found dead has left its file by now. The other order can see "no file yet"
        # and then "monitor gone", and report an exit without its code or time (the pod
        # worker then restarted a crashing container without its back-off).
        alive = monitor_alive(_read_int(os.path.join(cdir, "conmon.pid")), cid)
        exit_path = os.path.join(self.exit_dir, cid)
        exit_code = finished = None
        try:
            with open(exit_path) as f:
                exit_code = parse_exit_file(f.read())
            finished = os.stat(exit_path).st_mtime
        except FileNotFoundError:
            persist_exit = os.path.join(cdir, "persist", "exit")
            try:
                with open(persist_exit) as f:
                    exit_code = parse_exit_file(f.read())
                finished = os.stat(persist_exit).st_mtime
            except FileNotFoundError:
                pass
        started = _read_float(os.path.join(cdir, "started"))
        return DiskRecord(
            id=cid, labels=meta.get("labels", {}), log_path=meta.get("log_path", ""),
            created_at=meta.get("created_at") or runc_created_at(rs), started_at=started,
            exit_code=exit_code, finished_at=finished,
            oom_file=os.path.exists(os.path.join(cdir, "persist", "oom")),
            monitor_alive=alive)

    def _reap(self, cid: str, *, wait: float = 0.0) -> None:
        with self._lock:
            proc = self._monitors.get(cid)
        if proc is None:
            return
        try:
            proc.wait(timeout=wait) if wait else proc.poll()
        except subprocess.TimeoutExpired:
            return
        if proc.returncode is not None:
            with self._lock:
                self._monitors.pop(cid, None)

    # ------------------------------------------------------------------ remove
    def remove(self, container_id: str) -> None:
        rs = self._runc_view(container_id) if os.path.isdir(self.container_dir(container_id)) \
            else self.runc.state(container_id)
        if rs is not None and rs.get("status") in ("running", "paused"):
            raise RuntimeError(f"container {container_id} is running (pid {rs.get('pid')}): "
                               f"stop it before removing it")
        self._cleanup(container_id, force=False, runc_state=rs)

    def _cleanup(self, cid: str, *, force: bool, runc_state: dict | None | bool = False) -> None:
        cdir = self.container_dir(cid)
        if runc_state is False:
            rs = self._runc_view(cid) if os.path.isdir(cdir) else self.runc.state(cid)
        else:
            rs = runc_state
        if rs is not None:
            self.runc.delete(cid, force=force or rs.get("status") not in ("stopped", "created"))
        # conmon exits once runc is done with the container: reap ours.
        self._reap(cid, wait=2.0)
        meta = _read_json(os.path.join(cdir, "meta.json")) or {}
        rootfs = self.rootfs_dir(cid)
        if os.path.isdir(rootfs) and is_mounted(rootfs):
            unmount(rootfs)
        left = self.cgroups.remove(meta.get("cgroup") or self.cgroup_path(cid))
        if left:
            log.warning("container %s: cgroups still busy after delete: %s", cid, left)
        for p in (os.path.join(self.exit_dir, cid), os.path.join(self.socket_dir, cid)):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        if meta.get("log_path"):
            try:
                _logs.forget_rotation(meta["log_path"])
            except OSError as e:
                log.warning("container %s: log rotation bookkeeping for %s: %s", cid, meta["log_path"], e)
        if os.path.isdir(rootfs) and is_mounted(rootfs):
            raise RuntimeError(f"container {cid}: rootfs {rootfs} is still mounted; not removing {cdir}")
        for d in (self.rw_dir(cid), cdir):
            if os.path.isdir(d):
                shutil.rmtree(d)
        log.debug("container %s removed", cid)

    # ------------------------------------------------------------------ exec
    def exec(self, container_id: str, argv: list[str], timeout: float) -> tuple[int, bytes]:
        if not argv:
            raise ValueError(f"exec in container {container_id}: empty command")
        cdir = self.container_dir(container_id)
        if not os.path.isdir(cdir):
            raise RuntimeError(f"exec in container {container_id}: no such container")
        pid_file = os.path.join(cdir, f"exec-{uuid.uuid4().hex[:12]}.pid")
        return self.runc.exec(container_id, argv, timeout=timeout, pid_file=pid_file)


# ---------------------------------------------------------------------------- helpers
def _write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_json(path: str, obj: dict) -> None:
    # Compact on purpose: with `indent` json falls back to its pure-Python
    # encoder, ~5 ms for a config.json on the pod-start path.
    _write_text(path, json.dumps(obj, separators=(",", ":")))


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat[stat.rfind(b")") + 2:].split()[19])


def proc_alive(pid: int, start: int | None) -> bool:
    """Is `pid` still the process that started at `start` (not recycled, not a zombie)?
    An unknown start time (the process was gone before it could be read) is not alive: a
    recycled pid must never pass for the container."""
    if start is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    fields = stat[stat.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return False
    return int(fields[19]) == start


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def _read_float(path: str) -> float | None:
    try:
        with open(path) as f:
            return float(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def _read_in_rootfs(rootfs: str, rel: str, *, limit: int = 1 << 20) -> str:
    """Read a small file of the container's rootfs without following a symlink
    out of it (an image may make /etc/passwd point at the host's files)."""
    parts = rel.split("/")
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | (0 if last else os.O_DIRECTORY)
            try:
                nfd = os.open(part, flags, dir_fd=fd)
            except (FileNotFoundError, NotADirectoryError):
                return ""
            except OSError as e:          # ELOOP: a symlink — not followed, treated as absent
                log.debug("not reading %s/%s: %s", rootfs, rel, e)
                return ""
            os.close(fd)
            fd = nfd
        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit).decode(errors="replace")
    finally:
        os.close(fd)
