"""`shoal up` and `shoal down`: the embedded default — API server and controllers on
SQLite plus an agent for this host, in one command.

The agent is embedded in the same process but still goes through HTTP with its own
node credential (obtained with the join token, as a remote agent would). `--detach`
re-runs `shoal up` in the background (its own session, log in <data-dir>/up.log,
pid in <data-dir>/up.pid) and returns when the node is Ready; `shoal down` stops it
and, like a host shutdown, stops this node's containers too (their pods stay in the
API and are started again by the next `shoal up`).
"""
from __future__ import annotations

import argparse
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


def register(sub) -> None:
    p = sub.add_parser("up", help="start a one-host cluster: API server, controllers and an agent",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Start the embedded default: the API server and controllers on SQLite, and an "
                                   "agent running this host's containers with runc. Writes the kubeconfig the CLI "
                                   "uses. Foreground until Ctrl-C, or --detach.",
                       epilog="examples:\n  shoal up                  # foreground, Ctrl-C stops it\n"
                              "  shoal up --detach         # background; `shoal down` stops it\n"
                              "  shoal up --listen 0.0.0.0:6443 --detach   # let agents on other hosts join")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"all state ({DEFAULT_DATA_DIR})")
    p.add_argument("--listen", default="127.0.0.1:6443", help="API server HOST:PORT (127.0.0.1:6443)")
    p.add_argument("--datastore", default="", help="SQLAlchemy URL (default: SQLite in the data dir)")
    p.add_argument("--node-name", default=None, help="this node's name (default: the host name)")
    p.add_argument("--node-ip", default="127.0.0.1",
                   help="this node's address for logs and hostPorts (127.0.0.1; a LAN address for multi-host)")
    p.add_argument("--write-kubeconfig", type=Path, default=None,
                   help="kubeconfig to write (default: $KUBECONFIG or ~/.shoal/kubeconfig)")
    p.add_argument("--detach", "-d", action="store_true", help="run in the background")
    p.add_argument("--registry-mirror", action="append", default=[], metavar="HOST=URL")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST")
    p.add_argument("--backoff-initial", type=float, default=10.0)
    p.add_argument("--backoff-max", type=float, default=300.0)
    p.add_argument("--skip-checks", action="store_true", help="do not check prerequisites")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run_up)

    d = sub.add_parser("down", help="stop the cluster started by `shoal up --detach` and this node's containers",
                       description="Stop `shoal up` (API server, controllers, agent) and the containers it runs. "
                                   "Objects stay in the datastore: the next `shoal up` starts the pods again.",
                       epilog="example:\n  shoal down", formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    d.add_argument("--keep-containers", action="store_true", help="leave the containers running")
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
    data_dir = Path(args.data_dir)
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
        print(f"shoal is already running (pid {pid}, data dir {data_dir}); `shoal down` stops it")
        return 0
    if args.detach:
        return _detach(args, data_dir)
    return _foreground(args, data_dir)


def _detach(args, data_dir: Path) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [a for a in sys.argv[1:] if a not in ("--detach", "-d")]
    if not argv or argv[0] != "up":
        argv = ["up", "--data-dir", str(data_dir), "--listen", args.listen, "--node-ip", args.node_ip,
                "--write-kubeconfig", str(_kubeconfig_path(args))]
    elif "--write-kubeconfig" not in argv:
        argv += ["--write-kubeconfig", str(_kubeconfig_path(args))]
    log_path = data_dir / "up.log"
    kubeconfig = _kubeconfig_path(args)
    started = time.time()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", *argv], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=str(Path(__file__).resolve().parents[1]))
    (data_dir / "up.pid").write_text(f"{proc.pid}\n")
    print(f"shoal up: starting in the background (pid {proc.pid}, log {log_path})", flush=True)
    from apiserver.client import Client
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
                    print(f"shoal up: node {node} is Ready; API server {c.server}; kubeconfig {kubeconfig}")
                    print("  shoal get nodes -o wide      # stop with: shoal down")
                    return 0
                msg = f"waiting for node {node} to become Ready"
            else:
                msg = "waiting for the API server"
        except Exception as e:  # noqa: BLE001 — keep polling until the deadline, say why
            msg = f"waiting for node {node}: {type(e).__name__}"
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
    from apiserver.server import ServerProcess
    from apiserver.settings import Settings
    from agent.agent import Agent, AgentOptions
    from agent.join import JoinError, ensure_credentials
    from cli.cmd_agent import _mirror, _runc_version, build_seams
    from cli.cmd_server import parse_listen
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "up.pid").write_text(f"{os.getpid()}\n")
    host, port = parse_listen(args.listen)
    loopback = host in ("127.0.0.1", "localhost", "::1")
    settings = Settings(data_dir=data_dir / "server", datastore=args.datastore, listen_host=host, listen_port=port,
                        tls=not loopback)
    kubeconfig = _kubeconfig_path(args)
    srv = agent = None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        srv = ServerProcess(settings, kubeconfig_paths=[data_dir / "server" / "admin.kubeconfig", kubeconfig])
        srv.start(controllers=True)
        print(f"shoal up: API server on {srv.url} (SQLite in {settings.data_dir}); kubeconfig {kubeconfig}",
              flush=True)
        node = (args.node_name or _hostname()).lower()
        agent_dir = data_dir / "agent"
        agent_dir.mkdir(parents=True, exist_ok=True)
        join_token = (Path(settings.data_dir) / "join-token").read_text().strip()
        creds = ensure_credentials(srv.url, join_token, node, agent_dir)
        agent_args = Namespace(fake_runtime=False, registry_mirror=[_mirror(m) for m in args.registry_mirror],
                               insecure_registry=args.insecure_registry, runc_root=None, cgroup_parent="/shoal",
                               pod_netns_prefix="shoal-")
        images, runtime, network, prober, rt_version = build_seams(agent_args, agent_dir)
        opts = AgentOptions(backoff_initial=args.backoff_initial, backoff_max=args.backoff_max,
                            kubelet_port=10250, kubelet_token=creds.apiserverToken, probe_executor=prober,
                            runtime_version=rt_version or _runc_version())
        agent = Agent(creds.client(user_agent=f"shoal-agent/{node}"), node_name=node, address=args.node_ip,
                      data_dir=agent_dir, images=images, runtime=runtime, network=network, options=opts)
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
        n = stop_node_containers(data_dir / "agent")
        if n:
            print(f"stopped {n} container(s) of this node; `shoal up` starts their pods again")
    return 0


def stop_node_containers(agent_dir: Path) -> int:
    """Kill and remove every container of the agent with this data dir, and its pods' networks."""
    if not (agent_dir / "runtime").exists():
        return 0
    from agent.network import real_node_network
    from agent.runtime import RuncRuntime
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
        network = real_node_network(str(agent_dir / "network"))
        for uid in network.pods():
            network.teardown_pod(uid)
    except Exception as e:  # noqa: BLE001
        print(f"warning: tearing down pod networks: {e}", file=sys.stderr)
    return len(states)
