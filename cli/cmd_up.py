"""`shoal up` and `shoal down`: the embedded default — API server and controllers on
SQLite plus an agent for this host, in one command.

The API server serves HTTPS with the cluster CA it generates (plain HTTP only with
`--insecure-http`, on loopback); the kubeconfig it writes carries that CA and the admin
token, so shoal's CLI, kubectl and the Python kubernetes client work as they are. The
agent is embedded in the same process but still goes through the API with its own
node credential, obtained as a remote agent would: the join token pins the CA, the
agent fetches it from `/cacerts`, checks the pin, then joins over verified TLS (and gets the
serving certificate of its log endpoint, which the API server reaches over mutual TLS). `--detach`
re-runs `shoal up` in the background (its own session, log in <data-dir>/up.log,
pid in <data-dir>/up.pid) and returns when the node is Ready; `shoal down` stops it
and, like a host shutdown, stops this node's containers too (their pods stay in the
API and are started again by the next `shoal up`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from argparse import Namespace
from pathlib import Path

DEFAULT_DATA_DIR = Path("/var/lib/shoal")


@dataclasses.dataclass(frozen=True)
class HostNetwork:
    """The host-level names one `shoal up` claims. Two clusters on one host (a user's and a
    test's) must differ in all of them; `shoal up` saves them in <data-dir>/up.json so that
    `shoal down` tears down exactly what that cluster set up."""
    cluster_cidr: str = "10.244.0.0/16"
    bridge: str = "shoal0"
    vxlan_port: int = 8472
    kubelet_port: int = 10250
    netns_prefix: str = "shoal-"

    @property
    def vxlan_device(self) -> str:
        """`shoal.1` for the default bridge (flannel's `flannel.1` habit), else `<bridge>.1`
        cut to the kernel's 15-character limit on interface names."""
        return "shoal.1" if self.bridge == "shoal0" else f"{self.bridge[:13]}.1"

    @classmethod
    def from_args(cls, args) -> "HostNetwork":
        return cls(cluster_cidr=args.cluster_cidr, bridge=args.bridge, vxlan_port=args.vxlan_port,
                   kubelet_port=args.kubelet_port, netns_prefix=args.pod_netns_prefix)

    def save(self, data_dir: Path) -> None:
        (data_dir / "up.json").write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, data_dir: Path) -> "HostNetwork":
        """What the last `shoal up` in this data dir used (defaults when it never ran or predates up.json)."""
        try:
            saved = json.loads((data_dir / "up.json").read_text())
        except (OSError, ValueError):
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


DEFAULT_NETWORK = HostNetwork()


def validate_host_network(net: HostNetwork) -> list[str]:
    """What is wrong with these settings, each naming its flag (empty = all good)."""
    import ipaddress
    problems = []
    name = net.bridge
    if not name or len(name) > 15 or any(c in name for c in "/ \t:") or name in (".", ".."):
        problems.append(f"--bridge {name!r}: an interface name is 1 to 15 characters without '/', ':' or spaces")
    try:
        cidr = ipaddress.ip_network(net.cluster_cidr, strict=False)
        if cidr.version != 4 or cidr.prefixlen > 23:
            problems.append(f"--cluster-cidr {net.cluster_cidr}: an IPv4 network of /23 or larger "
                            "(each node takes a /24)")
    except ValueError:
        problems.append(f"--cluster-cidr {net.cluster_cidr!r} is not a network such as 10.244.0.0/16")
    if not 1 <= net.vxlan_port <= 65535:
        problems.append(f"--vxlan-port {net.vxlan_port}: a UDP port is 1 to 65535")
    if not 0 <= net.kubelet_port <= 65535:
        problems.append(f"--kubelet-port {net.kubelet_port}: a TCP port is 0 (any) to 65535")
    if not net.netns_prefix or len(net.netns_prefix) > 32 or "/" in net.netns_prefix:
        problems.append(f"--pod-netns-prefix {net.netns_prefix!r}: 1 to 32 characters without '/'")
    return problems


def register(sub) -> None:
    p = sub.add_parser("up", help="start a one-host cluster: API server, controllers and an agent",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Start the embedded default: the API server and controllers on SQLite, and an "
                                   "agent running this host's containers with runc. Writes the kubeconfig the CLI "
                                   "uses. Foreground until Ctrl-C, or --detach.",
                       epilog="examples:\n  shoal up                  # foreground, Ctrl-C stops it\n"
                              "  shoal up --detach         # background; `shoal down` stops it\n"
                              "  shoal up --listen 0.0.0.0:6443 --tls-san 192.168.1.10 --detach"
                              "   # let agents on other hosts join")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="DIR",
                   help=f"all state: database, images, containers, up.log ({DEFAULT_DATA_DIR})")
    p.add_argument("--listen", default="127.0.0.1:6443", metavar="HOST:PORT",
                   help="API server address (127.0.0.1:6443), HTTPS with the cluster CA")
    p.add_argument("--datastore", default="", metavar="URL",
                   help="SQLAlchemy URL, e.g. postgresql://… (default: SQLite in the data dir)")
    p.add_argument("--node-name", default=None, metavar="NAME", help="this node's name (default: the host name)")
    p.add_argument("--node-ip", default="127.0.0.1", metavar="IP",
                   help="this node's InternalIP (127.0.0.1; a LAN address for multi-host); "
                        "hostPorts answer on the host's addresses, never on 127.0.0.1")
    p.add_argument("--write-kubeconfig", type=Path, default=None, metavar="FILE",
                   help="kubeconfig to write (default: $KUBECONFIG or ~/.shoal/kubeconfig)")
    p.add_argument("--detach", "-d", action="store_true",
                   help="run in the background and return once the node is Ready (`shoal down` stops it)")
    p.add_argument("--registry-mirror", action="append", default=[], metavar="HOST=URL",
                   help="pull images of registry HOST from URL instead (repeatable)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                   help="talk plain HTTP to registry HOST (repeatable; 127.0.0.1 and localhost always may)")
    from shoal.cli.cmd_agent import add_dns_flags, add_registry_auth_flag, add_service_proxy_flag
    add_registry_auth_flag(p)
    add_dns_flags(p)
    p.add_argument("--backoff-initial", type=float, default=10.0, metavar="SECONDS", help="first crash-loop delay, seconds (10)")
    p.add_argument("--backoff-max", type=float, default=300.0, metavar="SECONDS", help="longest crash-loop delay, seconds (300)")
    add_service_proxy_flag(p)
    p.add_argument("--skip-checks", action="store_true",
                   help="do not check prerequisites (root, runc, conmon, overlayfs, cgroups, bridge, vxlan)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    from shoal.cli.cmd_server import add_tls_flags
    add_tls_flags(p)
    net = p.add_argument_group("host network (change only to run a second cluster on the same host)")
    net.add_argument("--cluster-cidr", default=DEFAULT_NETWORK.cluster_cidr, metavar="CIDR",
                     help="pod network, one /24 per node (%(default)s)")
    net.add_argument("--bridge", default=DEFAULT_NETWORK.bridge, metavar="NAME",
                     help="pods' bridge on this host (%(default)s); the VXLAN device is named after it")
    net.add_argument("--vxlan-port", type=int, default=DEFAULT_NETWORK.vxlan_port, metavar="PORT",
                     help="UDP port of the overlay (%(default)s)")
    net.add_argument("--kubelet-port", type=int, default=DEFAULT_NETWORK.kubelet_port, metavar="PORT",
                     help="port of the node's log endpoint, 0 = any free port (%(default)s)")
    net.add_argument("--pod-netns-prefix", default=DEFAULT_NETWORK.netns_prefix, metavar="PREFIX",
                     help="pods' network namespaces are PREFIX<12 characters of the pod uid> (%(default)s)")
    p.set_defaults(func=run_up)

    d = sub.add_parser("down", help="stop the cluster started by `shoal up --detach` and this node's containers",
                       description="Stop `shoal up` (API server, controllers, agent) and the containers it runs. "
                                   "Objects stay in the datastore: the next `shoal up` starts the pods again.",
                       epilog="example:\n  shoal down", formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="DIR",
                   help=f"the data dir `shoal up` used ({DEFAULT_DATA_DIR})")
    d.add_argument("--keep-containers", action="store_true",
                   help="leave the containers running (the next `shoal up` adopts them)")
    d.set_defaults(func=run_down)


# ---------------------------------------------------------------------------------- checks
def check_prerequisites() -> list[str]:
    """What is missing to run containers here, each with how to fix it (empty = all good)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("shoal up must run as root (containers, cgroups and network namespaces need it): "
                        "use sudo")
    for binary, pkg in (("runc", "runc"), ("conmon", "conmon"), ("nft", "nftables"), ("ip", "iproute2"),
                        ("nsenter", "util-linux")):
        if not shutil.which(binary) and not (binary == "conmon" and Path("/usr/libexec/podman/conmon").exists()):
            problems.append(f"{binary} not found: apt-get install {pkg}")
    fs = Path("/proc/filesystems").read_text() if Path("/proc/filesystems").exists() else ""
    if "overlay" not in fs and not _modprobe("overlay"):
        problems.append("the kernel has no overlayfs (modprobe overlay failed): a kernel with CONFIG_OVERLAY_FS")
    if not Path("/sys/fs/cgroup").is_dir() or not any(Path("/sys/fs/cgroup").iterdir()):
        problems.append("cgroups are not mounted at /sys/fs/cgroup")
    for mod in ("bridge", "vxlan"):
        if not Path(f"/sys/module/{mod}").exists() and not _modprobe(mod):
            problems.append(f"kernel module {mod} is not available (modprobe {mod} failed)")
    return problems


def _modprobe(module: str) -> bool:
    if not shutil.which("modprobe"):
        return False
    return subprocess.run(["modprobe", module], capture_output=True).returncode == 0


# ---------------------------------------------------------------------------------- up
def _kubeconfig_path(args) -> Path:
    return Path(args.write_kubeconfig or os.environ.get("KUBECONFIG") or Path.home() / ".shoal" / "kubeconfig")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie child counts as gone.
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _running_pid(data_dir: Path) -> int | None:
    pf = data_dir / "up.pid"
    try:
        pid = int(pf.read_text().strip())
    except (OSError, ValueError):
        return None
    # The detached child finds its own pid here (its parent wrote it): that is not "another" shoal.
    return pid if pid != os.getpid() and _pid_alive(pid) else None


def run_up(args) -> int:
    from shoal.cli.cmd_server import parse_listen, tls_settings
    data_dir = Path(args.data_dir)
    bad = validate_host_network(HostNetwork.from_args(args))
    try:
        host, _port = parse_listen(args.listen)
    except argparse.ArgumentTypeError as e:
        bad.append(str(e))
    else:
        refused = tls_settings(args, host)[1]
        if refused:
            bad.append(refused)
    from shoal.cli.cmd_agent import registry_auth_problem
    auth_problem = registry_auth_problem(args)
    if auth_problem:
        bad.append(auth_problem)
    if bad:
        for b in bad:
            print(f"error: {b}", file=sys.stderr)
        return 2
    if not args.skip_checks:
        problems = check_prerequisites()
        if problems:
            print("error: shoal up cannot run containers on this host:", file=sys.stderr)
            for p in problems:
                print(f"  - {p}", file=sys.stderr)
            print("(scripts/install.sh installs everything on Debian 12)", file=sys.stderr)
            return 1
    pid = _running_pid(data_dir)
    if pid is not None:
        down = "shoal down" if data_dir == DEFAULT_DATA_DIR else f"shoal down --data-dir {data_dir}"
        print(f"shoal is already running (pid {pid}, data dir {data_dir}); `{down}` stops it")
        return 0
    if args.detach:
        return _detach(args, data_dir)
    return _foreground(args, data_dir)


def _detach(args, data_dir: Path) -> int:
    from shoal.agent.hostfiles import private_dir
    private_dir(data_dir, tighten=False)   # 0700 when new: the server's SQLite and tokens, the agent's state
    argv = [a for a in sys.argv[1:] if a not in ("--detach", "-d")]
    if not argv or argv[0] != "up":
        argv = ["up", "--data-dir", str(data_dir), "--listen", args.listen, "--node-ip", args.node_ip,
                "--write-kubeconfig", str(_kubeconfig_path(args)), "--cluster-cidr", args.cluster_cidr,
                "--bridge", args.bridge, "--vxlan-port", str(args.vxlan_port),
                "--kubelet-port", str(args.kubelet_port), "--pod-netns-prefix", args.pod_netns_prefix]
        argv += [f"--tls-san={san}" for san in args.tls_san]
        if args.insecure_http:
            argv.append("--insecure-http")
        if args.no_service_proxy:
            argv.append("--no-service-proxy")
    elif "--write-kubeconfig" not in argv:
        argv += ["--write-kubeconfig", str(_kubeconfig_path(args))]
    if args.registry_auth:       # absolute (the child runs elsewhere); the last one given wins
        argv += ["--registry-auth", str(args.registry_auth)]
    if args.resolv_conf:         # the same: absolute
        argv += ["--resolv-conf", str(args.resolv_conf)]
    log_path = data_dir / "up.log"
    kubeconfig = _kubeconfig_path(args)
    started = time.time()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "shoal.cli", *argv], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=str(Path(__file__).resolve().parents[1]))
    (data_dir / "up.pid").write_text(f"{proc.pid}\n")
    print(f"shoal up: starting in the background (pid {proc.pid}, log {log_path})", flush=True)
    from shoal.machinery.client.rest import Client
    node = (args.node_name or _hostname()).lower()
    deadline = time.time() + 120
    last = ""
    while time.time() < deadline:
        if proc.poll() is not None:
            print(f"error: shoal up exited with status {proc.returncode}; the end of {log_path}:", file=sys.stderr)
            print("".join(log_path.read_text(errors="replace").splitlines(True)[-20:]), file=sys.stderr)
            return 1
        try:
            if kubeconfig.exists() and kubeconfig.stat().st_mtime >= started - 1:
                c = Client.from_kubeconfig(kubeconfig, timeout=5)
                n = c.get("nodes", node)
                ready = next((x for x in (n.get("status") or {}).get("conditions") or [] if x.get("type") == "Ready"),
                             {})
                if ready.get("status") == "True":
                    down = "shoal down" if data_dir == DEFAULT_DATA_DIR else f"shoal down --data-dir {data_dir}"
                    print(f"shoal up: node {node} is Ready; API server {c.server}; kubeconfig {kubeconfig}")
                    print(f"  shoal get nodes -o wide      # stop with: {down}")
                    return 0
                msg = f"waiting for node {node} to become Ready"
            else:
                msg = "waiting for the API server"
        except Exception as e:  # noqa: BLE001 — keep polling until the deadline, say why
            reason = getattr(e, "reason", "") or type(e).__name__
            msg = (f"waiting for node {node} to register" if reason == "NotFound"
                   else f"waiting for node {node} ({reason})")
        if msg != last:
            print(f"shoal up: {msg}...", flush=True)
            last = msg
        time.sleep(0.5)
    print(f"error: the cluster did not become ready within 120 s; see {log_path}", file=sys.stderr)
    return 1


def _hostname() -> str:
    import socket
    return socket.gethostname()


def _foreground(args, data_dir: Path) -> int:
    from shoal.apiserver.server import ServerProcess
    from shoal.apiserver.settings import Settings
    from shoal.agent.agent import Agent, AgentOptions
    from shoal.agent.hostfiles import private_dir
    from shoal.agent.join import JoinError, ensure_credentials, serving_tls
    from shoal.agent.network.svcrules import svc_table_for
    from shoal.cli.cmd_agent import (_mirror, _runc_version, build_seams, dns_options, service_proxy_conntrack,
                                     service_proxy_runner)
    from shoal.cli.cmd_server import controllers_as_child, parse_listen
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # One line per HTTP request (the agent and controllers talk to the API all the
        # time) would bury what up.log is read for: errors, pulls, starts, probe failures.
        for noisy in ("httpx", "httpcore", "uvicorn.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    private_dir(data_dir, tighten=False)   # 0700 when new: the server's SQLite and tokens, the agent's state
    (data_dir / "up.pid").write_text(f"{os.getpid()}\n")
    host, port = parse_listen(args.listen)
    settings = Settings(data_dir=data_dir / "server", datastore=args.datastore, listen_host=host, listen_port=port,
                        tls=not args.insecure_http, tls_sans=list(args.tls_san))
    hostnet = HostNetwork.from_args(args)
    hostnet.save(data_dir)
    kubeconfig = _kubeconfig_path(args)
    srv = agent = None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        srv = ServerProcess(settings, kubeconfig_paths=[data_dir / "server" / "admin.kubeconfig", kubeconfig])
        srv.start(controllers=controllers_as_child(["--cluster-cidr", hostnet.cluster_cidr]))
        print(f"shoal up: API server on {srv.url} (SQLite in {settings.data_dir}); kubeconfig {kubeconfig}",
              flush=True)
        node = (args.node_name or _hostname()).lower()
        agent_dir = data_dir / "agent"
        private_dir(agent_dir)
        join_token = (Path(settings.data_dir) / "join-token").read_text().strip()
        creds = ensure_credentials(srv.url, join_token, node, agent_dir)
        agent_args = Namespace(fake_runtime=False, registry_mirror=[_mirror(m) for m in args.registry_mirror],
                               insecure_registry=args.insecure_registry, runc_root=None, cgroup_parent="/shoal",
                               pod_netns_prefix=hostnet.netns_prefix, registry_auth=args.registry_auth,
                               resolv_conf=args.resolv_conf)
        images, runtime, network, prober, rt_version = build_seams(agent_args, agent_dir)
        network = _node_network(agent_dir, hostnet)
        opts = AgentOptions(backoff_initial=args.backoff_initial, backoff_max=args.backoff_max,
                            kubelet_port=hostnet.kubelet_port, kubelet_tls=serving_tls(agent_dir), probe_executor=prober,
                            runtime_version=rt_version or _runc_version(), dns=dns_options(args, serve=True))
        opts.service_table = svc_table_for(hostnet.bridge)
        proxy_runner = service_proxy_runner(args, hostnet.bridge)
        agent = Agent(creds.client(user_agent=f"shoal-agent/{node}"), node_name=node, address=args.node_ip,
                      data_dir=agent_dir, images=images, runtime=runtime, network=network, options=opts,
                      service_proxy_runner=proxy_runner, service_proxy_conntrack=service_proxy_conntrack(proxy_runner))
        agent.start()
        print(f"shoal up: node {node} ({args.node_ip}) started; Ctrl-C to stop", flush=True)
        stop.wait()
    except (OSError, JoinError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if agent is not None:
            agent.stop()
        if srv is not None:
            srv.stop()
        try:
            if (data_dir / "up.pid").read_text().strip() == str(os.getpid()):
                (data_dir / "up.pid").unlink()
        except OSError:
            pass
    print("shoal up: stopped", flush=True)
    return 0


# ---------------------------------------------------------------------------------- down
def run_down(args) -> int:
    data_dir = Path(args.data_dir)
    pid = _running_pid(data_dir)
    if pid is None:
        print(f"shoal is not running (no live pid in {data_dir / 'up.pid'})")
    else:
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 30
        while _pid_alive(pid) and time.time() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            print(f"shoal up (pid {pid}) did not stop within 30 s: killing it", file=sys.stderr)
            os.kill(pid, signal.SIGKILL)
        print(f"shoal up (pid {pid}) stopped")
        try:
            (data_dir / "up.pid").unlink()
        except OSError:
            pass
    if not args.keep_containers:
        n = stop_node_containers(data_dir / "agent", hostnet=HostNetwork.load(data_dir))
        if n:
            print(f"stopped {n} container(s) of this node; `shoal up` starts their pods again")
    return 0


def _node_network(agent_dir: Path, hostnet: HostNetwork):
    from shoal.agent.network import real_node_network
    return real_node_network(str(agent_dir / "network"), netns_prefix=hostnet.netns_prefix, bridge=hostnet.bridge,
                             vxlan_dev=hostnet.vxlan_device, vxlan_port=hostnet.vxlan_port)


def stop_node_containers(agent_dir: Path, *, hostnet: HostNetwork = DEFAULT_NETWORK) -> int:
    """Kill and remove every container of the agent with this data dir, and its pods' networks."""
    if not (agent_dir / "runtime").exists():
        remove_host_network(hostnet)
        return 0
    from shoal.agent.runtime import RuncRuntime
    runtime = RuncRuntime(str(agent_dir / "runtime"), runc_root=str(agent_dir / "runc"), cgroup_parent="/shoal")
    states = runtime.list()
    for st in states:
        if st.status in ("running", "created"):
            runtime.kill(st.id, signal.SIGKILL)
    deadline = time.time() + 10
    for st in states:
        while time.time() < deadline:
            cur = runtime.state(st.id)
            if cur is None or cur.status not in ("running", "created"):
                break
            time.sleep(0.05)
        try:
            runtime.remove(st.id)
        except Exception as e:  # noqa: BLE001 — report and go on with the others
            print(f"warning: removing container {st.id}: {e}", file=sys.stderr)
    try:
        network = _node_network(agent_dir, hostnet)
        for uid in network.pods():
            network.teardown_pod(uid)
    except Exception as e:  # noqa: BLE001
        print(f"warning: tearing down pod networks: {e}", file=sys.stderr)
    remove_host_network(hostnet)
    return len(states)


def remove_host_network(hostnet: HostNetwork) -> None:
    """Remove the bridge, the VXLAN device, the hostPort nft table and the service proxy's table
    of this node, as a host shutdown would (k3s-killall.sh does the same); the next `shoal up`
    recreates them."""
    from shoal.agent.network.node import nft_table_for
    from shoal.agent.network.svcrules import svc_table_for
    for dev in (hostnet.vxlan_device, hostnet.bridge):
        if Path(f"/sys/class/net/{dev}").exists():
            subprocess.run(["ip", "link", "delete", dev], capture_output=True)
    for table in (nft_table_for(hostnet.bridge), svc_table_for(hostnet.bridge)):
        subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)
