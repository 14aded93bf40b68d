"""The user's path under test: an isolated `shoal up` cluster on this host, and its cleanup.

A test cluster must not meet the user's (or another engineer's) `shoal up` on the same
host, so `isolated_host_network()` picks names nobody else uses: its own bridge (and
VXLAN device named after it), a cluster CIDR no route on the host overlaps, a free UDP
port for the overlay, any free port for the log endpoint and a pod netns prefix of its
own. Those names are also what makes cleanup checkable: after `shoal down`,
`leftovers()` looks for processes whose command line names the data dir, mounts under
it, network namespaces with the prefix and links on the bridge, removes what it finds
(processes by pid: all of them were started by the test) and returns what it found so
the test can fail on it.

Used by tests/e2e/test_demo_script.py (which runs scripts/demo.sh) and
tests/e2e/test_manifests.py (which applies every manifest in manifests/).
"""
from __future__ import annotations

import tempfile

import shutil

import contextlib

import dataclasses
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def _host_routes() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    nets = []
    for line in out.splitlines():
        dst = line.split()[0] if line.split() else ""
        if dst in ("default", "broadcast", "local") or not dst[:1].isdigit():
            dst = line.split()[1] if dst in ("broadcast", "local") and len(line.split()) > 1 else ""
        try:
            nets.append(ipaddress.ip_network(dst, strict=False))
        except ValueError:
            continue
    return nets


@dataclasses.dataclass(frozen=True)
class HostNet:
    bridge: str
    cluster_cidr: str
    vxlan_port: int
    netns_prefix: str

    @property
    def vxlan_device(self) -> str:
        return f"{self.bridge[:13]}.1"      # as cli.cmd_up.HostNetwork names it

    def up_args(self) -> list[str]:
        return ["--bridge", self.bridge, "--cluster-cidr", self.cluster_cidr, "--vxlan-port", str(self.vxlan_port),
                "--kubelet-port", "0", "--pod-netns-prefix", self.netns_prefix]


def isolated_host_network() -> HostNet:
    tag = secrets.token_hex(3)
    used = _host_routes()
    for second in sorted(range(100, 200), key=lambda _: secrets.randbelow(1000)):
        cidr = ipaddress.ip_network(f"10.{second}.0.0/16")
        if not any(cidr.overlaps(n) for n in used if n.prefixlen > 0):
            return HostNet(bridge=f"sht{tag}", cluster_cidr=str(cidr), vxlan_port=free_udp_port(),
                           netns_prefix=f"sht{tag}-")
    raise RuntimeError("no free 10.x.0.0/16 for a test cluster CIDR: every one overlaps a route on this host")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def table_column(output: str, *, header_has: str, row_prefix: str, column: str) -> list[str]:
    """Values of `column` in the rows starting with `row_prefix` of every table in `output`
    whose header contains `header_has` (kubectl-style tables: single-token cells up to it)."""
    values, header = [], None
    for line in strip_ansi(output).splitlines():
        if header_has in line and column in line.split():
            header = line.split()
            continue
        if header and line.startswith(row_prefix):
            cells = line.split()
            idx = header.index(column)
            if idx < len(cells):
                values.append(cells[idx])
        elif header and not line.strip():
            header = None
    return values


# ---------------------------------------------------------------------------------- cleanup
def _pids_naming(path: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in cmd:
            pids.append(int(d.name))
    return pids


def _mounts_under(path: str) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4]
        if mnt == path or mnt.startswith(path + "/"):
            found.append(mnt)
    return found


def _netns_with(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def _links_on(bridge: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "link", "show", "master", bridge], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return []
    return [link["ifname"] for link in json.loads(out.stdout)]


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def shoal_down(data_dir: Path, *, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "shoal.cli", "down", "--data-dir", str(data_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=90)


def kill_registry(data_dir: Path) -> None:
    """Stop the registry scripts/demo.sh started for this data dir (by the pid it wrote)."""
    pid_file = data_dir / "registry" / "registry.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if str(data_dir).encode() in cmd:     # the pid is ours, not a recycled one
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)


def leftovers(data_dir: Path, net: HostNet) -> list[str]:
    """After `shoal down`: find and remove what the cluster in `data_dir` left; say what it was."""
    found: list[str] = []
    path = str(data_dir)
    pids = _pids_naming(path)
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            os.kill(pid, signal.SIGKILL)
            found.append(f"process {pid}: {cmd[:160]}")
        except (OSError, ProcessLookupError):
            continue
    for mnt in sorted(_mounts_under(path), key=len, reverse=True):
        found.append(f"mount {mnt}")
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    for ns in _netns_with(net.netns_prefix):
        found.append(f"netns {ns}")
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
    for link in _links_on(net.bridge):
        found.append(f"link {link} on bridge {net.bridge}")
        subprocess.run(["ip", "link", "delete", link], capture_output=True)
    # The bridge and the VXLAN device stay after `shoal down` by design (like docker0);
    # the test created them, so it removes them.
    for dev in (net.vxlan_device, net.bridge):
        if _link_exists(dev):
            subprocess.run(["ip", "link", "delete", dev], capture_output=True)
    _drop_hostport_table_if_ours(net.bridge)
    return found


def _drop_hostport_table_if_ours(bridge: str) -> None:
    """The agent's hostPort table is named after its bridge (`ip shoal_<bridge>`); drop ours."""
    from shoal.agent.network.node import nft_table_for
    table = nft_table_for(bridge)
    if table != "shoal":
        subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)


# ---------------------------------------------------------------------------------- cluster
@dataclasses.dataclass
class UpCluster:
    """A detached `shoal up` in its own data dir, with its own registry and host network."""
    data_dir: Path
    kubeconfig: Path
    api_port: int
    registry: str                  # host:port
    net: HostNet
    images: dict[str, str]         # "web:v2" -> registry/web@sha256:…

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "NO_COLOR": "1"}

    def shoal(self, *args: str, timeout: float = 60, check: bool = True,
              input: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "shoal.cli", *args], cwd=REPO, env=self.env(), input=input,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"shoal {' '.join(args)} exited {r.returncode}\nstdout:\n{r.stdout}\n"
                                 f"stderr:\n{r.stderr}\n(cluster log: {self.data_dir / 'up.log'})")
        return r

    def get_json(self, *args: str) -> dict:
        return json.loads(self.shoal("get", *args, "-o", "json").stdout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "".join((self.data_dir / "up.log").read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return "(no up.log)"


def start_up_cluster(data_dir: Path) -> UpCluster:
    """Registry + demo images pushed + `shoal up --detach`, all isolated. The caller must
    call `stop_up_cluster` (even when this raises: it cleans up what was started)."""
    from shoal.testkit.images import cached_test_images, push_image
    data_dir.mkdir(parents=True, exist_ok=True)
    net = isolated_host_network()
    (data_dir / "hostnet.json").write_text(json.dumps(dataclasses.asdict(net)))
    reg_port = free_tcp_port()
    registry = f"127.0.0.1:{reg_port}"
    regdir = data_dir / "registry"
    (regdir / "storage").mkdir(parents=True, exist_ok=True)
    (regdir / "config.yml").write_text(
        "version: 0.1\nlog: {level: warn, accesslog: {disabled: true}}\n"
        f"storage: {{filesystem: {{rootdirectory: {regdir / 'storage'}}}, delete: {{enabled: true}}}}\n"
        f'http: {{addr: "{registry}"}}\n')
    with open(regdir / "registry.log", "ab") as log:
        proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(regdir / "config.yml")], stdout=log,
                                stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    (regdir / "registry.pid").write_text(f"{proc.pid}\n")
    import httpx
    for _ in range(100):
        try:
            if httpx.get(f"http://{registry}/v2/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        raise AssertionError(f"the test registry did not answer on {registry}: {regdir / 'registry.log'}")
    images = {}
    for key, img in cached_test_images().items():
        images[key] = f"{registry}/{img.name}@{push_image(img.layout, f'http://{registry}', key)}"
    api_port = free_tcp_port()
    kubeconfig = data_dir / "kubeconfig"
    cluster = UpCluster(data_dir=data_dir, kubeconfig=kubeconfig, api_port=api_port, registry=registry, net=net,
                        images=images)
    r = cluster.shoal("up", "--detach", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{api_port}",
                      "--write-kubeconfig", str(kubeconfig), *net.up_args(), timeout=180, check=False)
    if r.returncode != 0:
        raise AssertionError(f"shoal up --detach failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\n"
                             f"{cluster.log_tail()}")
    return cluster


def stop_up_cluster(data_dir: Path, *, python: str = sys.executable) -> list[str]:
    """`shoal down`, stop the registry, then remove and report anything left behind."""
    try:
        net = HostNet(**json.loads((data_dir / "hostnet.json").read_text()))
    except (OSError, ValueError, TypeError):
        net = None
    problems = []
    if (data_dir / "up.pid").exists() or (data_dir / "agent").exists():
        r = shoal_down(data_dir, python=python)
        if r.returncode != 0:
            problems.append(f"shoal down exited {r.returncode}: {r.stderr.strip()}")
    kill_registry(data_dir)
    if net is not None:
        problems += leftovers(data_dir, net)
    return problems


@contextlib.contextmanager
def up_cluster(prefix: str):
    """`shoal up` in a fresh /tmp data dir for the block; `shoal down` after, asserting it
    left nothing behind (processes, mounts, netns, links, tables)."""
    data = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield start_up_cluster(data)
    finally:
        problems = stop_up_cluster(data)
        shutil.rmtree(data, ignore_errors=True)
        assert not problems, "the cluster left these behind after `shoal down`:\n" + "\n".join(problems)
