"""`shoal lab`: a multi-host cluster on one machine, built from network namespaces.

Layout of a lab named L with N hosts (subnet 10.213.0.0/24 by default; every
address lives only inside the lab's own namespaces):

    netns L-lab: bridge br0 10.213.0.1/24 (no uplink, no forwarding)
      ├─ port cp ── eth0 10.213.0.2   netns L-cp: `shoal server --listen 0.0.0.0:6443`
      │                                          (HTTPS, SAN 10.213.0.2) and docker-registry :5000
      ├─ port h1 ── eth0 10.213.0.11  netns L-h1: `shoal agent --node-name h1 ...`
      └─ port hN ── eth0 10.213.0.(10+N)
    root netns: a forwarder publishing 127.0.0.1:<api> → 10.213.0.2:6443 and
                127.0.0.1:<registry> → 10.213.0.2:5000 (it binds on loopback, then
                enters L-cp, so the root namespace gets no route, address or link)

Files: /var/lib/shoal/lab/L/{state.json,kubeconfig,logs/,server/,registry/,<host>/}
(a host's data dir is /var/lib/shoal/lab/L/<host>); runc roots under
/run/shoal-lab/L/<host>/runc (tmpfs, as a real host's /run: a "reboot" loses it).

Processes and how they are found again: every process the lab starts is put,
before it execs, into a cgroup named `shoal-lab-L-*` in every hierarchy —
`shoal-lab-L-cp/{server,registry,forwarder}` and, per host, the agent in
`shoal-lab-L-<host>/shoal-agent` where `shoal-lab-L-<host>` is also the agent's
`--cgroup-parent` (its conmon monitors and containers land below it). PIDs and
start times are recorded in state.json too, but `down` does not depend on it:
it kills whatever is in the `shoal-lab-L-*` cgroups, deletes the `L-*`
namespaces, unmounts what is under the lab's directories and removes them —
so it is idempotent and works after a crash or on a half-built lab.

Agents run under `ip netns exec`, which gives each a private (slave) mount
namespace: its overlay rootfs mounts and pod namespace mounts exist only there,
and vanish with its last process — which is what `stop-host` (SIGKILL to the
agent and everything in its cgroups, then wipe its /run) relies on to be "the
VM died". `exec` enters the agent's mount and network namespaces when it is
alive, else the host's network namespace.

Pure planning (`plan_lab`, `server_argv`, `agent_argv`, `registry_config`) is
separate from the executor (`Lab`) so the argv and names are table-tested.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

log = logging.getLogger(__name__)

LAB_ROOT = Path("/var/lib/shoal/lab")
RUN_ROOT = Path("/run/shoal-lab")
DEFAULT_SUBNET = "10.213.0.0/24"
API_PORT = 6443
REGISTRY_PORT = 5000
REPO_ROOT = Path(__file__).resolve().parent.parent


class LabError(Exception):
    """A lab operation failed; the message names the lab, host, process or path."""


# ---------------------------------------------------------------------------- plan (pure)
@dataclass(frozen=True)
class HostPlan:
    name: str              # "h1" (also the node name)
    netns: str             # "L-h1"
    ip: str
    data_dir: str
    runc_root: str
    cgroup_parent: str     # "shoal-lab-L-h1"

    @property
    def agent_cgroup(self) -> str:
        return f"{self.cgroup_parent}/shoal-agent"


@dataclass(frozen=True)
class LabPlan:
    name: str
    subnet: str
    lab_netns: str
    cp_netns: str
    cp_ip: str
    dir: str
    run_dir: str
    hosts: tuple[HostPlan, ...]

    @property
    def cgroup_prefix(self) -> str:
        return f"shoal-lab-{self.name}-"

    @property
    def cp_cgroup(self) -> str:
        return f"shoal-lab-{self.name}-cp"

    @property
    def server_dir(self) -> str:
        return f"{self.dir}/server"

    @property
    def registry_dir(self) -> str:
        return f"{self.dir}/registry"

    @property
    def logs_dir(self) -> str:
        return f"{self.dir}/logs"

    @property
    def state_file(self) -> str:
        return f"{self.dir}/state.json"

    @property
    def kubeconfig(self) -> str:
        return f"{self.dir}/kubeconfig"

    @property
    def server_url(self) -> str:
        """The API server as the lab's hosts reach it."""
        return f"https://{self.cp_ip}:{API_PORT}"

    def host(self, name: str) -> HostPlan:
        for h in self.hosts:
            if name in (h.name, h.netns):
                return h
        raise LabError(f"lab {self.name} has no host {name!r} (hosts: {', '.join(h.name for h in self.hosts)})")


def plan_lab(name: str, n_hosts: int, *, subnet: str = DEFAULT_SUBNET, root: Path = LAB_ROOT,
             run_root: Path = RUN_ROOT) -> LabPlan:
    """Names, addresses and paths of a lab (pure; validates like `labnet.lab_layout`)."""
    from shoal.testkit.labnet import lab_layout
    try:
        net = lab_layout(name, n_hosts, subnet)
    except ValueError as e:
        raise LabError(str(e)) from None
    d, r = Path(root) / name, Path(run_root) / name
    cp_ip = str(ipaddress.IPv4Network(net.subnet).network_address + 2)
    hosts = tuple(HostPlan(name=h.name, netns=h.netns, ip=h.ip, data_dir=str(d / h.name),
                           runc_root=str(r / h.name / "runc"), cgroup_parent=f"shoal-lab-{name}-{h.name}")
                  for h in net.hosts)
    return LabPlan(name=name, subnet=net.subnet, lab_netns=net.lab_netns, cp_netns=f"{name}-cp", cp_ip=cp_ip,
                   dir=str(d), run_dir=str(r), hosts=hosts)


def shoal_argv() -> list[str]:
    """How to run this shoal: the same interpreter, `-m shoal.cli` (PYTHONPATH = the repo)."""
    return [sys.executable, "-m", "shoal.cli"]


def server_argv(plan: LabPlan, *, node_grace_period: float | None = None,
                eviction_delay: float | None = None) -> list[str]:
    """Run in plan.cp_netns (see `spawn`)."""
    argv = [*shoal_argv(), "server",
            "--listen", f"0.0.0.0:{API_PORT}", "--tls-san", plan.cp_ip,      # HTTPS: the default
            "--data-dir", plan.server_dir, "--write-kubeconfig", f"{plan.server_dir}/admin.kubeconfig"]
    if node_grace_period is not None:
        argv += ["--node-grace-period", str(node_grace_period)]
    if eviction_delay is not None:
        argv += ["--eviction-delay", str(eviction_delay)]
    return argv


def agent_argv(plan: LabPlan, host: HostPlan, *, join_token: str, registry_mirror: str,
               extra: Iterable[str] = ()) -> list[str]:
    """Run in host.netns (see `spawn`)."""
    return [*shoal_argv(), "agent",
            "--server", plan.server_url, "--token", join_token, "--node-name", host.name,
            "--address", host.ip, "--data-dir", host.data_dir, "--runc-root", host.runc_root,
            "--cgroup-parent", host.cgroup_parent, "--registry-mirror", registry_mirror,
            "--pod-netns-prefix", f"{host.netns}-", *extra]


def registry_config(plan: LabPlan) -> str:
    return "\n".join([
        "version: 0.1", "log:", "  level: warn", "  accesslog:", "    disabled: true",
        "storage:", "  filesystem:", f"    rootdirectory: {plan.registry_dir}/storage",
        "  delete:", "    enabled: true",
        "http:", f"  addr: 0.0.0.0:{REGISTRY_PORT}", f"  secret: lab-{plan.name}",
        "health:", "  storagedriver:", "    enabled: false", ""])


def forwarder_argv(plan: LabPlan, *, api_port: int, registry_port: int, ports_file: str) -> list[str]:
    return [sys.executable, "-m", "shoal.testkit.lab", "forward", "--netns", f"/run/netns/{plan.cp_netns}",
            "--ports-file", ports_file,
            "--map", f"127.0.0.1:{api_port}={plan.cp_ip}:{API_PORT}",
            "--map", f"127.0.0.1:{registry_port}={plan.cp_ip}:{REGISTRY_PORT}"]


# ---------------------------------------------------------------------------- processes
@dataclass
class ProcRecord:
    pid: int
    start: int              # /proc/<pid>/stat starttime: a recycled PID has another
    argv: list[str]
    log: str
    cgroup: str


def proc_start_time(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw.rpartition(")")[2].split()[19])


def is_running(rec: ProcRecord | None) -> bool:
    if rec is None:
        return False
    st = proc_start_time(rec.pid)
    if st is None or st != rec.start:
        return False
    try:
        state = Path(f"/proc/{rec.pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _cgroups():
    from shoal.agent.runtime.cgroups import Cgroups
    return Cgroups()


_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_REC, _MS_SLAVE = 0x4000, 0x80000


def spawn(argv: list[str], *, log_path: str, cgroup: str, netns: str | None = None, cgroups=None,
          env: dict[str, str] | None = None) -> ProcRecord:
    """Start a detached process (own session) that joins `cgroup` before it execs and,
    with `netns`, enters that network namespace and a private mount namespace.

    Not `ip netns exec`: it remounts /sys for the namespace, which hides the cgroup
    mounts under /sys/fs/cgroup from runc ("no cgroup mount found in mountinfo").
    The private mount namespace (slave of the root one: mounts propagate in, never
    out) keeps a host's container and pod-namespace mounts to that host, so they
    vanish with its last process, as a VM's would."""
    cg = cgroups or _cgroups()
    libc = ctypes.CDLL(None, use_errno=True)
    ns_fd = os.open(f"/run/netns/{netns}", os.O_RDONLY) if netns else -1
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), full_env.get("PYTHONPATH", "")) if p)
    full_env.pop("KUBECONFIG", None)     # a child never writes the user's kubeconfig
    full_env.update(env or {})

    def place() -> None:
        cg.join(os.getpid(), cgroup)
        if ns_fd >= 0:
            if libc.setns(ns_fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into network namespace {netns}")
            if libc.unshare(_CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare the mount namespace")
            if libc.mount(None, b"/", None, _MS_REC | _MS_SLAVE, None) != 0:
                raise OSError(ctypes.get_errno(), "make / a slave mount")

    try:
        with open(log_path, "ab") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, preexec_fn=place, env=full_env, cwd="/")
    finally:
        if ns_fd >= 0:
            os.close(ns_fd)
    # the child is reaped by init once this CLI exits; while it lives, a thread reaps it
    threading.Thread(target=p.wait, daemon=True).start()
    start = proc_start_time(p.pid) or 0
    log.debug("lab: started pid %d in cgroup %s: %s", p.pid, cgroup, " ".join(argv))
    return ProcRecord(pid=p.pid, start=start, argv=argv, log=log_path, cgroup=cgroup)


def kill_record(rec: ProcRecord | None, *, sig: int = signal.SIGKILL) -> bool:
    """Signal a recorded process if it is still the same process; True if it was."""
    if not is_running(rec):
        return False
    try:
        os.kill(rec.pid, sig)
    except ProcessLookupError:
        return False
    return True


def cgroup_pids(cgroups, rel: str) -> set[int]:
    """Every PID in `rel` and below, in every hierarchy."""
    pids: set[int] = set()
    for d in cgroups.paths(rel):
        for root, _dirs, files in os.walk(d):
            if "cgroup.procs" not in files:
                continue
            try:
                text = Path(root, "cgroup.procs").read_text()
            except OSError:
                continue
            pids.update(int(x) for x in text.split() if x.strip().isdigit())
    return pids


def kill_cgroup(cgroups, rel: str, *, timeout: float = 10.0) -> list[int]:
    """SIGKILL everything in `rel` (repeatedly, until it is empty), then remove the groups."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        pids = cgroup_pids(cgroups, rel) - {os.getpid()}
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise LabError(f"processes {sorted(pids)} in cgroup {rel} survived SIGKILL for {timeout:.0f}s")
        time.sleep(0.05)
    left = cgroups.remove(rel)
    if left:
        # a group can stay busy for a moment after its last task exits
        time.sleep(0.2)
        left = cgroups.remove(rel)
    if left:
        log.warning("lab: cgroups not removed (busy): %s", ", ".join(left))
    return sorted(killed)


def lab_cgroups(cgroups, prefix: str) -> list[str]:
    """Top-level groups whose name starts with `prefix`, in any hierarchy."""
    names: set[str] = set()
    for h in cgroups.hierarchies:
        try:
            names.update(n for n in os.listdir(h.mountpoint)
                         if n.startswith(prefix) and os.path.isdir(os.path.join(h.mountpoint, n)))
        except OSError:
            continue
    return sorted(names)


def mounts_under(paths: Iterable[str], mountinfo: str) -> list[str]:
    """Mount points at or below any of `paths`, deepest first (pure)."""
    roots = [p.rstrip("/") for p in paths]
    out = []
    for line in mountinfo.splitlines():
        f = line.split()
        if len(f) < 5:
            continue
        mp = f[4].replace("\\040", " ")
        if any(mp == r or mp.startswith(r + "/") for r in roots):
            out.append(mp)
    return sorted(set(out), key=lambda m: (-m.count("/"), m))


def _umount(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(path.encode(), 2) != 0:     # MNT_DETACH
        e = ctypes.get_errno()
        if e not in (errno.EINVAL, errno.ENOENT):
            raise LabError(f"cannot unmount {path}: {os.strerror(e)}")


# ---------------------------------------------------------------------------- state
@dataclass
class LabState:
    name: str
    subnet: str
    n_hosts: int
    api_port: int = 0
    registry_port: int = 0
    join_token_file: str = ""
    server: ProcRecord | None = None
    registry: ProcRecord | None = None
    forwarder: ProcRecord | None = None
    agents: dict[str, ProcRecord] = field(default_factory=dict)
    agent_extra: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "LabState":
        rec = lambda x: ProcRecord(**x) if x else None  # noqa: E731
        return cls(name=d["name"], subnet=d["subnet"], n_hosts=d["n_hosts"], api_port=d.get("api_port", 0),
                   registry_port=d.get("registry_port", 0), join_token_file=d.get("join_token_file", ""),
                   server=rec(d.get("server")), registry=rec(d.get("registry")), forwarder=rec(d.get("forwarder")),
                   agents={k: ProcRecord(**v) for k, v in (d.get("agents") or {}).items()},
                   agent_extra=list(d.get("agent_extra") or []))


def write_json(path: str, obj: dict, mode: int = 0o600) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, p)


# ---------------------------------------------------------------------------- the executor
def _http_ok(url: str, ca_file: str | None, timeout: float = 2.0) -> bool:
    import httpx
    import ssl
    verify = ssl.create_default_context(cafile=ca_file) if ca_file else False
    try:
        return httpx.get(url, verify=verify, timeout=timeout).status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def _tail(path: str, n: int = 15) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + ln for ln in lines[-n:])


class Lab:
    """One lab on this machine. Every verb re-reads state.json; `down` needs nothing but the name."""

    def __init__(self, name: str = "lab", *, root: Path = LAB_ROOT, run_root: Path = RUN_ROOT,
                 out: Callable[[str], None] | None = None):
        from shoal.testkit.labnet import check_lab_name
        try:
            check_lab_name(name)
        except ValueError as e:
            raise LabError(str(e)) from None
        self.name = name
        self.root, self.run_root = Path(root), Path(run_root)
        self.say = out or (lambda msg: print(msg, file=sys.stderr, flush=True))

    # -- state
    @property
    def dir(self) -> Path:
        return self.root / self.name

    def state(self) -> LabState:
        p = self.dir / "state.json"
        try:
            return LabState.from_json(json.loads(p.read_text()))
        except FileNotFoundError:
            raise LabError(f"lab {self.name} is not up ({p} not found): run `shoal lab up --name {self.name}`") \
                from None

    def _save(self, st: LabState) -> None:
        write_json(str(self.dir / "state.json"), st.to_json())

    def plan(self, st: LabState | None = None) -> LabPlan:
        st = st or self.state()
        return plan_lab(self.name, st.n_hosts, subnet=st.subnet, root=self.root, run_root=self.run_root)

    # -- up
    def up(self, n_hosts: int, *, subnet: str = DEFAULT_SUBNET, api_port: int = 0, registry_port: int = 0,
           node_grace_period: float | None = None, eviction_delay: float | None = None,
           agent_extra: Iterable[str] = (), ready_timeout: float = 120.0) -> LabState:
        plan = plan_lab(self.name, n_hosts, subnet=subnet, root=self.root, run_root=self.run_root)
        if (self.dir / "state.json").exists():
            st = self.state()
            if any(is_running(r) for r in [st.server, st.registry, st.forwarder, *st.agents.values()]):
                raise LabError(f"lab {self.name} is already up (see `shoal lab status --name {self.name}`); "
                               f"run `shoal lab down --name {self.name}` first")
        self.down(quiet=True)           # leftovers of a crashed or half-built lab
        try:
            return self._up(plan, api_port=api_port, registry_port=registry_port,
                            node_grace_period=node_grace_period, eviction_delay=eviction_delay,
                            agent_extra=list(agent_extra), ready_timeout=ready_timeout)
        except BaseException:
            self.say(f"lab {self.name}: bringing it up failed; logs are in {plan.logs_dir} — removing the lab")
            try:
                self._keep_logs(plan)
                self.down(quiet=True)
            except Exception as e:  # noqa: BLE001 — report the original failure
                self.say(f"lab {self.name}: clean-up after the failure failed too: {e}")
            raise

    def _keep_logs(self, plan: LabPlan) -> None:
        # logs outlive a failed `up` in /tmp so the error can be read after the clean-up
        src = Path(plan.logs_dir)
        if src.is_dir():
            dst = Path("/tmp") / f"shoal-lab-{self.name}-failed-logs"
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
            self.say(f"lab {self.name}: logs copied to {dst}")

    def _up(self, plan: LabPlan, *, api_port: int, registry_port: int, node_grace_period: float | None,
            eviction_delay: float | None, agent_extra: list[str], ready_timeout: float) -> LabState:
        for d in (plan.dir, plan.logs_dir, plan.server_dir, plan.registry_dir, plan.run_dir):
            Path(d).mkdir(parents=True, exist_ok=True)
        os.chmod(plan.dir, 0o700)
        st = LabState(name=self.name, subnet=plan.subnet, n_hosts=len(plan.hosts),
                      join_token_file=f"{plan.server_dir}/join-token", agent_extra=agent_extra)
        self._save(st)
        self._build_network(plan)
        self.say(f"lab {self.name}: network {plan.subnet}: control plane {plan.cp_ip} ({plan.cp_netns}), "
                 + ", ".join(f"{h.name} {h.ip}" for h in plan.hosts))
        cg = _cgroups()
        cfg = Path(plan.registry_dir) / "config.yml"
        cfg.write_text(registry_config(plan))
        st.registry = spawn(["docker-registry", "serve", str(cfg)], netns=plan.cp_netns,
                            log_path=f"{plan.logs_dir}/registry.log", cgroup=f"{plan.cp_cgroup}/registry", cgroups=cg)
        st.server = spawn(server_argv(plan, node_grace_period=node_grace_period, eviction_delay=eviction_delay),
                          netns=plan.cp_netns, log_path=f"{plan.logs_dir}/server.log",
                          cgroup=f"{plan.cp_cgroup}/server", cgroups=cg)
        self._save(st)
        ports_file = f"{plan.dir}/ports.json"
        st.forwarder = spawn(forwarder_argv(plan, api_port=api_port, registry_port=registry_port,
                                            ports_file=ports_file),
                             log_path=f"{plan.logs_dir}/forwarder.log", cgroup=f"{plan.cp_cgroup}/forwarder",
                             cgroups=cg)
        self._save(st)
        ports = self._wait(lambda: json.loads(Path(ports_file).read_text()) if Path(ports_file).exists() else None,
                           "the loopback forwarder to listen", st.forwarder, 15)
        st.api_port, st.registry_port = ports[0], ports[1]
        self._save(st)
        ca = f"{plan.server_dir}/tls/ca.crt"
        api = f"https://127.0.0.1:{st.api_port}"
        self._wait(lambda: Path(ca).exists() and Path(st.join_token_file).exists()
                   and _http_ok(f"{api}/readyz", ca), f"the API server at {api}", st.server, 60)
        self._wait(lambda: _http_ok(f"http://127.0.0.1:{st.registry_port}/v2/", None),
                   f"the registry at 127.0.0.1:{st.registry_port}", st.registry, 30)
        self.write_kubeconfig(plan, st)
        for h in plan.hosts:
            st.agents[h.name] = self._spawn_agent(plan, st, h, cg)
            self._save(st)
        self._wait_nodes_ready(plan, st, ready_timeout)
        return st

    def write_kubeconfig(self, plan: LabPlan, st: LabState) -> str:
        import base64
        from shoal.machinery.client.rest import write_kubeconfig
        token = Path(plan.server_dir, "admin-token").read_text().strip()
        ca = base64.b64encode(Path(plan.server_dir, "tls", "ca.crt").read_bytes()).decode()
        write_kubeconfig(plan.kubeconfig, server=f"https://127.0.0.1:{st.api_port}", token=token, ca_data_b64=ca,
                         name=f"lab-{self.name}")
        return plan.kubeconfig

    def registry_host(self, st: LabState | None = None) -> str:
        st = st or self.state()
        return f"127.0.0.1:{st.registry_port}"

    def _spawn_agent(self, plan: LabPlan, st: LabState, h: HostPlan, cg) -> ProcRecord:
        Path(h.data_dir).mkdir(parents=True, exist_ok=True)
        Path(h.runc_root).mkdir(parents=True, exist_ok=True)
        token = Path(st.join_token_file).read_text().strip()
        mirror = f"{self.registry_host(st)}=http://{plan.cp_ip}:{REGISTRY_PORT}"
        return spawn(agent_argv(plan, h, join_token=token, registry_mirror=mirror, extra=st.agent_extra),
                     netns=h.netns, log_path=f"{plan.logs_dir}/agent-{h.name}.log", cgroup=h.agent_cgroup, cgroups=cg)

    def _wait(self, fn, what: str, proc: ProcRecord | None, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = fn()
            if v:
                return v
            if proc is not None and not is_running(proc):
                raise LabError(f"lab {self.name}: waiting for {what}: pid {proc.pid} exited; "
                               f"the end of {proc.log}:\n{_tail(proc.log)}")
            time.sleep(0.1)
        raise LabError(f"lab {self.name}: {what} did not come up within {timeout:.0f}s"
                       + (f"; the end of {proc.log}:\n{_tail(proc.log)}" if proc else ""))

    def client(self):
        from shoal.machinery.client.rest import Client
        return Client.from_kubeconfig(str(self.dir / "kubeconfig"), user_agent=f"shoal-lab/{self.name}")

    def _wait_nodes_ready(self, plan: LabPlan, st: LabState, timeout: float) -> None:
        c = self.client()
        want = {h.name for h in plan.hosts}
        deadline = time.monotonic() + timeout
        ready: set[str] = set()
        try:
            while time.monotonic() < deadline:
                for h in plan.hosts:
                    if not is_running(st.agents.get(h.name)):
                        rec = st.agents.get(h.name)
                        raise LabError(f"lab {self.name}: the agent of {h.name} exited; the end of "
                                       f"{rec.log if rec else '?'}:\n{_tail(rec.log) if rec else ''}")
                try:
                    nodes = c.list("nodes")["items"]
                except Exception:  # noqa: BLE001 — the server may be busy starting the controllers
                    nodes = []
                ready = {n["metadata"]["name"] for n in nodes if _node_ready(n) and (n.get("spec") or {}).get("podCIDR")}
                if want <= ready:
                    self.say(f"lab {self.name}: nodes {', '.join(sorted(want))} are Ready")
                    return
                time.sleep(0.25)
        finally:
            c.close()
        raise LabError(f"lab {self.name}: nodes {sorted(want - ready)} not Ready within {timeout:.0f}s; "
                       f"agent logs in {plan.logs_dir}")

    def _build_network(self, plan: LabPlan) -> None:
        from shoal.agent.network import PyrouteNetlink, Route
        from shoal.testkit.labnet import create_lab_network
        create_lab_network(self.name, len(plan.hosts), plan.subnet)
        nl = PyrouteNetlink()
        try:
            ln, cp = plan.lab_netns, plan.cp_netns
            plen = ipaddress.IPv4Network(plan.subnet).prefixlen
            nl.netns_create(cp)
            if nl.link_get("cp", ns=ln) is None or nl.link_get("eth0", ns=cp) is None:
                nl.link_del("cp", ns=ln)
                nl.link_del("eth0", ns=cp)
                nl.link_add("cp", "veth", ns=ln, peer="eth0", peer_ns=cp)
            nl.link_set("cp", ns=ln, master="br0", up=True)
            nl.addr_flush("eth0", ns=cp)
            nl.addr_add("eth0", f"{plan.cp_ip}/{plen}", ns=cp)
            nl.link_set("lo", ns=cp, up=True)
            nl.link_set("eth0", ns=cp, up=True)
            gw = str(ipaddress.IPv4Network(plan.subnet).network_address + 1)
            nl.route_replace(Route(dst="0.0.0.0/0", dev="eth0", gateway=gw), ns=cp)
        finally:
            nl.close()

    # -- hosts
    def stop_host(self, host: str) -> list[int]:
        """As if the VM died: SIGKILL the agent, its monitors and containers; its /run is lost."""
        st = self.state()
        plan = self.plan(st)
        h = plan.host(host)
        kill_record(st.agents.get(h.name))
        killed = self._kill_host(plan, h)
        self.say(f"lab {self.name}: host {h.name} stopped ({len(killed)} processes killed)")
        return killed

    def _kill_host(self, plan: LabPlan, h: HostPlan) -> list[int]:
        cg = _cgroups()
        self._runc_kill_all(h)
        killed = kill_cgroup(cg, h.cgroup_parent)
        # a rebooted VM has an empty /run: runc's state and the pod namespaces' files
        shutil.rmtree(Path(h.runc_root).parent, ignore_errors=True)
        self._remove_pod_netns(h)
        return killed

    def _runc_kill_all(self, h: HostPlan) -> None:
        if not Path(h.runc_root).is_dir():
            return
        try:
            out = subprocess.run(["runc", "--root", h.runc_root, "list", "-q"], capture_output=True, text=True,
                                 timeout=20).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            return
        for cid in out:
            subprocess.run(["runc", "--root", h.runc_root, "kill", "--all", cid, "KILL"], capture_output=True,
                           timeout=20)

    def _remove_pod_netns(self, h: HostPlan) -> None:
        from shoal.agent.network import PyrouteNetlink
        nl = PyrouteNetlink()
        try:
            for ns in nl.netns_list():
                if ns.startswith(h.netns + "-"):
                    nl.netns_remove(ns)
        finally:
            nl.close()

    def start_host(self, host: str) -> ProcRecord:
        st = self.state()
        plan = self.plan(st)
        h = plan.host(host)
        if is_running(st.agents.get(h.name)):
            raise LabError(f"lab {self.name}: the agent of {h.name} is running (pid {st.agents[h.name].pid})")
        # the host's cgroups may still hold something if a previous stop was interrupted
        self._kill_host(plan, h)
        st.agents[h.name] = self._spawn_agent(plan, st, h, _cgroups())
        self._save(st)
        self.say(f"lab {self.name}: host {h.name} started (agent pid {st.agents[h.name].pid})")
        return st.agents[h.name]

    def set_link(self, host: str, up: bool) -> None:
        from shoal.agent.network import PyrouteNetlink
        plan = self.plan()
        h = plan.host(host)
        nl = PyrouteNetlink()
        try:
            if nl.link_get(h.name, ns=plan.lab_netns) is None:
                raise LabError(f"lab {self.name}: host {h.name} has no link in {plan.lab_netns}")
            nl.link_set(h.name, ns=plan.lab_netns, up=up)
        finally:
            nl.close()
        self.say(f"lab {self.name}: host {h.name} link {'up (healed)' if up else 'down (cut)'}")

    def exec_argv(self, host: str, argv: list[str]) -> list[str]:
        """The command line running argv in the host's namespaces."""
        st = self.state()
        h = self.plan(st).host(host)
        rec = st.agents.get(h.name)
        if is_running(rec):
            return ["nsenter", "-t", str(rec.pid), "-m", "-n", "--", *argv]
        return ["ip", "netns", "exec", h.netns, *argv]

    def status(self) -> dict:
        st = self.state()
        plan = self.plan(st)
        from shoal.agent.network import PyrouteNetlink
        nl = PyrouteNetlink()
        try:
            links = {l.name: l.up for l in nl.link_list(ns=plan.lab_netns)}
        except Exception:  # noqa: BLE001 — a half-built lab has no lab namespace
            links = {}
        finally:
            nl.close()
        nodes: dict[str, dict] = {}
        try:
            c = self.client()
            try:
                nodes = {n["metadata"]["name"]: n for n in c.list("nodes")["items"]}
            finally:
                c.close()
        except Exception:  # noqa: BLE001 — status works with the control plane down
            pass
        return {
            "name": self.name, "subnet": plan.subnet, "kubeconfig": plan.kubeconfig,
            "registry": self.registry_host(st), "api": f"https://127.0.0.1:{st.api_port}",
            "controlPlane": {"ip": plan.cp_ip, "server": _pinfo(st.server), "registry": _pinfo(st.registry),
                             "forwarder": _pinfo(st.forwarder)},
            "hosts": [{"name": h.name, "ip": h.ip, "netns": h.netns, "agent": _pinfo(st.agents.get(h.name)),
                       "link": "up" if links.get(h.name) else ("down" if h.name in links else "missing"),
                       "node": ("Ready" if _node_ready(nodes[h.name]) else "NotReady") if h.name in nodes else "-"}
                      for h in plan.hosts],
        }

    # -- down
    def down(self, *, quiet: bool = False) -> list[str]:
        """Remove every process, cgroup, namespace, mount and file of the lab (idempotent)."""
        from shoal.testkit.labnet import destroy_lab_network
        done: list[str] = []
        st = None
        try:
            st = self.state()
        except (LabError, ValueError, KeyError, TypeError):
            pass
        if st is not None:
            recs = [st.forwarder, st.server, st.registry, *st.agents.values()]
            for r in recs:
                if kill_record(r):
                    done.append(f"process {r.pid}")
        cg = _cgroups()
        hosts_cgroups = [g for g in lab_cgroups(cg, f"shoal-lab-{self.name}-")]
        for g in hosts_cgroups:      # runc state first: its containers may hold cgroup children
            host = g[len(f"shoal-lab-{self.name}-"):]
            root = self.run_root / self.name / host / "runc"
            if root.is_dir():
                self._runc_kill_all(HostPlan(host, f"{self.name}-{host}", "", "", str(root), g))
        for g in hosts_cgroups:
            pids = kill_cgroup(cg, g)
            if pids:
                done.append(f"cgroup {g} ({len(pids)} processes)")
        for ns in destroy_lab_network(self.name):
            done.append(f"netns {ns}")
        with open("/proc/self/mountinfo") as f:
            info = f.read()
        for mp in mounts_under([str(self.dir), str(self.run_root / self.name)], info):
            _umount(mp)
            done.append(f"mount {mp}")
        for d in (self.run_root / self.name, self.dir):
            if d.exists():
                shutil.rmtree(d)
                done.append(f"dir {d}")
        for parent in (self.run_root,):
            try:
                parent.rmdir()
            except OSError:
                pass
        if not quiet:
            self.say(f"lab {self.name}: removed " + (", ".join(done) if done else "nothing (it was not up)"))
        return done


def _node_ready(node: dict) -> bool:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _pinfo(rec: ProcRecord | None) -> dict:
    return {"pid": rec.pid if rec else None, "running": is_running(rec), "log": rec.log if rec else None}


# ---------------------------------------------------------------------------- loopback forwarder
def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:      # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns into {path}")
    finally:
        os.close(fd)


def _pump(a: socket.socket, b: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    try:
        open_ends = 2
        while open_ends:
            for key, _ in sel.select():
                src, dst = key.fileobj, key.data
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(src)
                    open_ends -= 1
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                try:
                    dst.sendall(data)
                except OSError:
                    return
    finally:
        sel.close()
        a.close()
        b.close()


def run_forwarder(maps: list[tuple[str, int, str, int]], *, netns_path: str, ports_file: str) -> None:
    """Listen on the root namespace's loopback, then enter `netns_path`: each accepted
    connection is relayed to its target as seen from inside the lab."""
    listeners = []
    for lhost, lport, thost, tport in maps:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((lhost, lport))
        s.listen(256)
        listeners.append((s, (thost, tport)))
    _setns(netns_path)      # sockets created from now on live in the lab; the listeners stay on loopback
    write_json(ports_file, [s.getsockname()[1] for s, _ in listeners], mode=0o644)

    def serve(ls: socket.socket, target: tuple[str, int]) -> None:
        while True:
            conn, _ = ls.accept()
            try:
                up = socket.create_connection(target, timeout=10)
                up.settimeout(None)
            except OSError as e:
                print(f"forwarder: {target[0]}:{target[1]} unreachable: {e}", file=sys.stderr, flush=True)
                conn.close()
                continue
            for s in (conn, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_pump, args=(conn, up), daemon=True).start()

    threads = [threading.Thread(target=serve, args=l, daemon=True) for l in listeners]
    for t in threads:
        t.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


def _forward_main(argv: list[str]) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m shoal.testkit.lab forward")
    p.add_argument("cmd", choices=["forward"])
    p.add_argument("--netns", required=True)
    p.add_argument("--ports-file", required=True)
    p.add_argument("--map", action="append", default=[], help="LHOST:LPORT=THOST:TPORT")
    a = p.parse_args(argv)
    maps = []
    for m in a.map:
        l, _, t = m.partition("=")
        lh, _, lp = l.rpartition(":")
        th, _, tp = t.rpartition(":")
        maps.append((lh, int(lp), th, int(tp)))
    run_forwarder(maps, netns_path=a.netns, ports_file=a.ports_file)
    return 0


if __name__ == "__main__":
    sys.exit(_forward_main(sys.argv[1:]))
