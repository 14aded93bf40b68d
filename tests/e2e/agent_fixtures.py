"""A whole one-node cluster for end-to-end tests of the agent, as root: a loopback
`docker-registry` holding the busybox test images, the real API server with its
controllers, and one real `shoal agent` (LocalImageStore, RuncRuntime with conmon,
NodeNetwork) running as a subprocess so a test can SIGKILL it.

    with E2ECluster(tmp_dir) as c:          # or the module fixture in test_agent_real.py
        c.create_pod(pod_manifest(...))
        c.wait_pod("web", ready)

Isolation — everything this cluster makes on the host carries a random tag `r`:
- data dir and runc root under the given tmp dir; cgroup parent `/shoal-e2e-<r>`;
- bridge `se2e<r>`, VXLAN device `se2e<r>.1` (VNI and port from r), nft table `ip se2e<r>`, pod
  namespaces `se2e<r>-<uid12>`; a cluster CIDR `10.<200..239>.0.0/16` drawn at
  random, so the node's /24 does not collide with `shoal up`'s 10.244.0.0/24.
`cli.cmd_agent` has no flags for the bridge, VXLAN device or nft table, so this
module is also the agent's entry point (`python agent_fixtures.py agent …`): it
runs `shoal agent` unchanged except for a `NodeNetwork` with those names.

`close()` ALWAYS removes everything — pods through the API (the agent tears them
down), then the agent (by PID), then whatever is left: every container of the runc
root, the pod networks, the bridge, VXLAN device and nft table — and returns the
list of what it still finds (netns with the prefix, mounts under the data dir,
cgroup dirs under the parent, conmon processes of the runc root, runc state).
"""
from __future__ import annotations

import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shoal.agent.runtime.mounts import is_mounted  # noqa: E402
from shoal.testkit import apiserver as testing  # noqa: E402

log = logging.getLogger(__name__)
NAMESPACE = "default"


# ------------------------------------------------------------------ the network with our names
def e2e_network(state_dir: str, tag: str):
    from shoal.agent.network import NodeNetwork, PyrouteNetlink, SubprocessRunner
    # VNI and UDP port from the tag too: the kernel refuses a second VXLAN device with the
    # same VNI and port (a `shoal up` on this host has shoal.1 with VNI 1, port 8472)
    n = int(tag, 16)
    return NodeNetwork(state_dir, netlink=PyrouteNetlink(), runner=SubprocessRunner(), bridge=f"se2e{tag}",
                       vxlan_dev=f"se2e{tag}.1", netns_prefix=f"se2e{tag}-", nft_table=f"se2e{tag}",
                       vni=1000 + n % 1_000_000, vxlan_port=20000 + n % 20000)


def _agent_main(argv: list[str]) -> int:
    """`agent_fixtures.py agent --tag R -- <shoal agent args>`: shoal agent with our network names."""
    tag = argv[argv.index("--tag") + 1]
    rest = argv[argv.index("--") + 1:]
    import shoal.cli.cmd_agent as ca
    from shoal.cli.main import main
    orig = ca.build_seams

    def build_seams(args, data_dir):
        images, runtime, _net, prober, version = orig(args, data_dir)
        return images, runtime, e2e_network(str(Path(data_dir) / "network"), tag), prober, version

    ca.build_seams = build_seams
    return main(["agent", *rest])


# ------------------------------------------------------------------ manifests
def container(name: str, image: str, **kw) -> dict:
    c = {"name": name, "image": image}
    c.update(kw)
    return c


def http_probe(path: str = "/healthz", port: int = 8080, **kw) -> dict:
    p = {"httpGet": {"path": path, "port": port}, "periodSeconds": 1, "timeoutSeconds": 1}
    p.update(kw)
    return p


def pod_manifest(name: str, containers: list[dict], **spec) -> dict:
    s = {"containers": containers, "terminationGracePeriodSeconds": 5}
    s.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE,
                                                             "labels": {"e2e": name}}, "spec": s}


def deployment_manifest(name: str, image: str, replicas: int, **cspec) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"terminationGracePeriodSeconds": 5,
                                           "containers": [container("web", image, **cspec)]}}}}


# ------------------------------------------------------------------ pod predicates
def cstatus(pod: dict, name: str | None = None) -> dict:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if name is None or cs.get("name") == name:
            return cs
    return {}


def is_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def host_address() -> str | None:
    """A global IPv4 address of this host (not a pod bridge's if another exists): where the
    host itself reaches a hostPort — 127.0.0.1 never does (issue 17, docs/networking.md)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                         text=True).stdout
    found = [(line.split()[1], line.split()[3].split("/")[0]) for line in out.splitlines() if len(line.split()) > 3]
    plain = [a for dev, a in found if not dev.startswith(("shoal", "se2e", "sht", "veth"))]
    return (plain or [a for _, a in found] or [None])[0]


def waiting_reason(pod: dict, name: str | None = None) -> str | None:
    return ((cstatus(pod, name).get("state") or {}).get("waiting") or {}).get("reason")


def wait_for(pred: Callable[[], object], *, timeout: float = 60.0, what: str = "condition",
             interval: float = 0.1, detail: Callable[[], str] | None = None):
    """Poll until pred() is truthy; generous deadlines, nothing timed is asserted."""
    return testing.wait_for(pred, timeout=timeout, what=what, interval=interval, detail=detail)


# ------------------------------------------------------------------ the cluster
class E2ECluster:
    def __init__(self, tmp: Path, *, backoff_initial: float = 1.0, backoff_max: float = 4.0,
                 images: dict | None = None, server_process: bool = False):
        """server_process: run the API server as `shoal server` does (its own process, the
        controllers in a child) instead of threads of this process — for benchmarks."""
        self.tmp = Path(tmp)
        self.tag = secrets.token_hex(3)
        self.node = f"e2e-{self.tag}"
        self.cgroup_parent = f"/shoal-e2e-{self.tag}"
        self.cluster_cidr = f"10.{random.randint(200, 239)}.0.0/16"
        self.agent_dir = self.tmp / "agent"
        # The agent's volatile state on a tmpfs of its own, as a real host's /run is
        # (`--run-dir`): runc's state, bundles, conmon's files.
        self.run_dir = self.tmp / "run"
        self.runc_root = self.run_dir / "runc"
        self.netns_prefix = f"se2e{self.tag}-"
        self.bridge = f"se2e{self.tag}"
        self.vxlan = f"se2e{self.tag}.1"
        self.table = f"se2e{self.tag}"
        self.backoff = (backoff_initial, backoff_max)
        self._images = images
        self.registry = None
        self.srv = None
        self.client = None
        self.refs: dict[str, str] = {}
        self.images: dict = {}
        self.agent: subprocess.Popen | None = None
        self.agent_log = self.tmp / "shoal.agent.log"
        self._rt = None
        self.server_process = server_process
        self.sync_threads: int | None = None     # the agent's --sync-threads (None: its default)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "E2ECluster":
        # the agent's service proxy table is named after the default bridge (`ip shoal-svc`):
        # ours to remove at close unless it was there before (a real `shoal up` on this host)
        self._svc_table_was_there = subprocess.run(["nft", "list", "table", "ip", "shoal-svc"],
                                                   capture_output=True).returncode == 0
        from shoal.testkit.images import cached_test_images, push_all, start_registry
        from shoal.testkit.apiserver import ServerSubprocess, start_test_server
        from shoal.controller.manager import ControllerOptions
        self.images = self._images or cached_test_images()
        self.registry = start_registry(self.tmp / "registry")
        self.refs = push_all(self.images, self.registry)
        # A long node grace: the agent is deliberately down for a while in one test and
        # its pods must not be evicted meanwhile.
        if self.server_process:
            self.srv = ServerSubprocess(self.tmp / "server", [
                "--cluster-cidr", self.cluster_cidr, "--node-grace-period", "120", "--eviction-delay", "60"])
        else:
            opts = ControllerOptions(cluster_cidr=self.cluster_cidr, node_grace_period=120.0, eviction_delay=60.0)
            self.srv = start_test_server(self.tmp, controllers=True, controller_options=opts)
        self.client = self.srv.client()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700,size=256m", "tmpfs", str(self.run_dir)], check=True)
        self.start_agent()
        wait_for(self._node_ready, timeout=60, what=f"node {self.node} Ready with a pod CIDR",
                 detail=self.agent_tail)
        return self

    def __enter__(self) -> "E2ECluster":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        problems = self.close()
        if problems and exc[0] is None:
            raise AssertionError("e2e cluster left things behind: " + "; ".join(problems))

    def _node_ready(self) -> bool:
        try:
            n = self.client.get("nodes", self.node)
        except Exception:
            return False
        return bool((n.get("spec") or {}).get("podCIDR")) and is_ready(n)

    def agent_argv(self) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "agent", "--tag", self.tag, "--",
                "--server", self.srv.url, "--token", self.srv.join_token, "--node-name", self.node,
                "--address", "127.0.0.1", "--data-dir", str(self.agent_dir), "--run-dir", str(self.run_dir),
                "--runc-root", str(self.runc_root),
                "--cgroup-parent", self.cgroup_parent, "--pod-netns-prefix", self.netns_prefix,
                "--backoff-initial", str(self.backoff[0]), "--backoff-max", str(self.backoff[1]),
                "--kubelet-port", "0", "--lease-interval", "1"] + \
            (["--sync-threads", str(self.sync_threads)] if self.sync_threads else [])

    def start_agent(self) -> subprocess.Popen:
        assert self.agent is None or self.agent.poll() is not None, "the agent is already running"
        logf = open(self.agent_log, "ab")
        try:
            # its own process group, so kill_agent() can SIGKILL all of it (conmon setsid()s itself)
            self.agent = subprocess.Popen(self.agent_argv(), cwd=str(REPO), stdout=logf, stderr=logf,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            logf.close()
        return self.agent

    def kill_agent(self) -> None:
        """kill -9 of the agent's whole process group."""
        if self.agent is not None and self.agent.poll() is None:
            os.killpg(self.agent.pid, signal.SIGKILL)
            self.agent.wait(timeout=10)

    def stop_agent(self, timeout: float = 15.0) -> None:
        if self.agent is None or self.agent.poll() is not None:
            return
        self.agent.send_signal(signal.SIGTERM)
        try:
            self.agent.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_agent()

    def agent_tail(self, n: int = 40) -> str:
        try:
            lines = self.agent_log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "agent log (tail):\n" + "\n".join(lines[-n:])

    # -- looking at the host ------------------------------------------------------------
    @property
    def runtime(self):
        """A RuncRuntime over the agent's dirs: reads what the agent's runtime sees."""
        if self._rt is None:
            from shoal.agent.runtime import RuncRuntime
            self._rt = RuncRuntime(str(self.agent_dir / "runtime"), state_dir=str(self.run_dir / "runtime"),
                                   runc_root=str(self.runc_root), cgroup_parent=self.cgroup_parent)
        return self._rt

    def containers_of(self, pod: dict) -> list:
        uid = pod["metadata"]["uid"]
        return [s for s in self.runtime.list() if (s.labels or {}).get("shoal.io/pod-uid") == uid]

    def running_container(self, pod: dict, name: str):
        live = [s for s in self.containers_of(pod) if s.status == "running" and s.pid
                and s.labels.get("shoal.io/container") == name]
        return max(live, key=lambda s: int(s.labels.get("shoal.io/attempt", "0"))) if live else None

    def netns_of(self, pod: dict) -> str:
        return self.netns_prefix + pod["metadata"]["uid"][:12]

    def leftovers(self, *, uid: str | None = None) -> list[str]:
        """What of this cluster (or of one pod uid) is still on the host."""
        found = []
        key = uid[:12] if uid else ""
        netns_dir = Path("/run/netns")
        if netns_dir.exists():
            found += [f"netns {n.name}" for n in netns_dir.iterdir()
                      if n.name.startswith(self.netns_prefix + key)]
        data = str(self.tmp)
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mp = line.split()[4]
            if mp.startswith(data) and (not key or key in mp):
                found.append(f"mount {mp}")
        if self.runc_root.exists():
            found += [f"runc state {d.name}" for d in self.runc_root.iterdir() if d.name.startswith(key)]
        for hier in _cgroup_roots():
            parent = hier / self.cgroup_parent.lstrip("/")
            if parent.exists():
                found += [f"cgroup {c}" for c in parent.iterdir()
                          if c.is_dir() and (c.name.startswith(key) if key else True)]
        for pid, cmd in _processes():
            if cmd and cmd[0].endswith("conmon") and str(self.runc_root) in " ".join(cmd) \
                    and (not key or any(key in a for a in cmd)):
                found.append(f"conmon pid {pid}")
        if uid:
            from shoal.agent.network import veth_name
            if Path(f"/sys/class/net/{veth_name(uid)}").exists():
                found.append(f"veth {veth_name(uid)}")
        else:
            if self.bridge and Path(f"/sys/class/net/{self.bridge}/brif").exists():
                found += [f"veth {p.name}" for p in Path(f"/sys/class/net/{self.bridge}/brif").iterdir()]
        return found

    # -- API helpers ---------------------------------------------------------------------
    def create_pod(self, manifest: dict) -> dict:
        return self.client.create("pods", manifest, NAMESPACE)

    def get_pod(self, name: str) -> dict | None:
        from shoal.machinery.api import errors
        try:
            return self.client.get("pods", name, NAMESPACE)
        except errors.NotFound:
            return None

    def wait_pod(self, name: str, pred: Callable[[dict], object], *, timeout: float = 60.0, what: str = ""):
        def check():
            p = self.get_pod(name)
            return p if p is not None and pred(p) else None
        return wait_for(check, timeout=timeout, what=f"pod {name}: {what or pred.__name__}",
                        detail=lambda: f"pod status: {json.dumps((self.get_pod(name) or {}).get('status'))}\n"
                                       + self.agent_tail())

    def pods_with(self, selector: str) -> list[dict]:
        return self.client.list("pods", NAMESPACE, label_selector=selector)["items"]

    def events_for(self, name: str) -> list[dict]:
        return [e for e in self.client.list("events", NAMESPACE)["items"]
                if (e.get("involvedObject") or {}).get("name") == name]

    def wait_events(self, name: str, reason: str, match: Callable[[dict], bool] = lambda e: True,
                    *, timeout: float = 15.0) -> list[dict]:
        """The events of `reason` about `name`, once one of them satisfies `match`. Events are
        written behind the state they describe (the agent holds them while it is busy, up to a
        second), so a test that has seen the state waits for its events."""
        def found():
            evs = [e for e in self.events_for(name) if e["reason"] == reason]
            return evs if any(match(e) for e in evs) else None
        return wait_for(found, timeout=timeout, what=f"a {reason} event about {name}",
                        detail=lambda: f"events: {[(e['reason'], e['message']) for e in self.events_for(name)]}")

    def delete_pod_and_wait(self, name: str, *, timeout: float = 60.0) -> None:
        from shoal.machinery.api import errors
        try:
            self.client.delete("pods", name, NAMESPACE)
        except errors.NotFound:
            return
        wait_for(lambda: self.get_pod(name) is None, timeout=timeout, what=f"pod {name} deletion confirmed",
                 detail=self.agent_tail)

    # -- teardown ------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Remove everything; return what could not be removed (empty = clean)."""
        problems: list[str] = []
        if self.client is not None and self.agent is not None and self.agent.poll() is None:
            try:
                for d in self.client.list("deployments", NAMESPACE)["items"]:
                    self.client.delete("deployments", d["metadata"]["name"], NAMESPACE,
                                       propagation_policy="Background")
                for p in self.client.list("pods", NAMESPACE)["items"]:
                    try:
                        self.client.delete("pods", p["metadata"]["name"], NAMESPACE, grace_period_seconds=0)
                    except Exception:
                        pass
                wait_for(lambda: not self.client.list("pods", NAMESPACE)["items"], timeout=30,
                         what="all pods deleted")
            except Exception as e:    # go on: the forced clean-up below removes the rest
                problems.append(f"deleting pods through the agent: {e}")
        self.stop_agent()
        if self.agent_dir.exists():
            problems += self._force_clean()
        problems += self._unmount_run_dir()
        if self.srv is not None:
            try:
                self.client.close()
            except Exception:
                pass
            self.srv.stop()
            self.srv = None
        if self.registry is not None:
            self.registry.close()
            self.registry = None
        left = self.leftovers()
        for what, path in (("bridge", self.bridge), ("vxlan", self.vxlan)):
            if Path(f"/sys/class/net/{path}").exists():
                left.append(f"{what} {path}")
        if subprocess.run(["nft", "list", "table", "ip", self.table], capture_output=True).returncode == 0:
            left.append(f"nft table ip {self.table}")
        return problems + left

    def _unmount_run_dir(self) -> list[str]:
        """The run dir's tmpfs, once nothing uses it (monitors leave a moment after their
        containers are removed)."""
        if not is_mounted(str(self.run_dir)):
            return []
        deadline = time.monotonic() + 10
        while True:
            r = subprocess.run(["umount", str(self.run_dir)], capture_output=True, text=True)
            if r.returncode == 0:
                return []
            if time.monotonic() > deadline:
                subprocess.run(["umount", "--lazy", str(self.run_dir)], capture_output=True)
                return [f"run dir {self.run_dir} still busy at clean-up: {r.stderr.strip()}"]
            time.sleep(0.1)

    def _force_clean(self) -> list[str]:
        from shoal.testkit.runtime import teardown_runtime
        problems = []
        if (self.agent_dir / "runtime").exists():
            problems += teardown_runtime(self.runtime)
        try:
            net = e2e_network(str(self.agent_dir / "network"), self.tag)
            for uid in net.pods():
                net.teardown_pod(uid)
        except Exception as e:
            problems.append(f"tearing down pod networks: {e}")
        netns_dir = Path("/run/netns")
        if netns_dir.exists():
            for n in netns_dir.iterdir():
                if n.name.startswith(self.netns_prefix):
                    subprocess.run(["ip", "netns", "delete", n.name], capture_output=True)
        for dev in (self.vxlan, self.bridge):
            if Path(f"/sys/class/net/{dev}").exists():
                subprocess.run(["ip", "link", "delete", dev], capture_output=True)
        subprocess.run(["nft", "delete", "table", "ip", self.table], capture_output=True)
        if not getattr(self, "_svc_table_was_there", True):
            subprocess.run(["nft", "delete", "table", "ip", "shoal-svc"], capture_output=True)
        return problems


def _cgroup_roots() -> list[Path]:
    roots = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            roots.append(Path(left.split()[4]))
    return roots


def _processes() -> list[tuple[int, list[str]]]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        out.append((int(d.name), [c.decode(errors="replace") for c in cmd if c]))
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "agent":
        sys.exit(_agent_main(sys.argv[2:]))
    print(f"usage: {sys.argv[0]} agent --tag TAG -- <shoal agent arguments>", file=sys.stderr)
    sys.exit(2)
