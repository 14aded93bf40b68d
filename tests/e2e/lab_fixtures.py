"""A 3-host `shoal lab` for e2e tests and bench/recovery.py (plain functions and a handle).

`LabHandle.start(n_hosts=3)` builds the busybox test images
(`images_fixtures.cached_test_images`), brings a lab up under a random name
(so it never touches a user's `lab`), pushes every image to the lab's
registry through its loopback port and returns the handle; `close()` runs
`Lab.down()` — call it in a finally/finalizer, always. `leftovers()` lists
anything of the lab still on the machine (namespaces, cgroups, processes,
mounts, directories, root-namespace links), which must be empty after `down`.

Helpers, all "eventually" (a deadline, the last value seen in the failure
message, never a timing assertion): `wait`, `deployment_pods`, `ready`,
`running_containers` (what runc says runs on each host, by pod name),
`pod_exec` (runc exec into a pod's container), `shoal` (the CLI as a
subprocess with the lab's kubeconfig).
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from images_fixtures import cached_test_images, push_image  # noqa: E402

from shoal.machinery.api import errors  # noqa: E402
from shoal.testkit.apiserver import wait_for  # noqa: E402
from shoal.testkit.lab import Lab, LabPlan, LabState, cgroup_pids, is_running, lab_cgroups, mounts_under  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def wait(what: str, fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2) -> Any:
    return wait_for(fn, timeout=timeout, interval=interval, what=what,
                    tolerate=(errors.ApiError, OSError, subprocess.SubprocessError))


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines()}


def is_ready(pod: dict) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def web_deployment(image: str, replicas: int = 6, *, name: str = "web", surge: int = 1, unavailable: int = 1,
                   probes: dict | None = None, env: list | None = None) -> dict:
    """A Deployment of one test-image container with a readiness probe on /healthz (the lab
    tests and bench/recovery.py share it)."""
    c = {"name": "web", "image": image, "ports": [{"containerPort": 8080}],
         "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}}
    c.update(probes or {})
    if env:
        c["env"] = env
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [c], "terminationGracePeriodSeconds": 5}}}}


@dataclass
class LabHandle:
    lab: Lab
    state: LabState
    plan: LabPlan
    images: dict[str, str] = field(default_factory=dict)     # "web:v1" → "127.0.0.1:P/web@sha256:…"
    digests: dict[str, str] = field(default_factory=dict)    # "web:v1" → "sha256:…"
    links_before: set[str] = field(default_factory=set)
    client: Any = None

    @classmethod
    def start(cls, n_hosts: int = 3, *, name: str | None = None, **up_kw) -> "LabHandle":
        imgs = cached_test_images()
        lab = Lab(name or ("e" + secrets.token_hex(3)), out=lambda m: print(m, flush=True))
        before = root_links()
        h = cls(lab=lab, state=None, plan=None, links_before=before)  # type: ignore[arg-type]
        try:
            h.state = lab.up(n_hosts, **up_kw)
            h.plan = lab.plan(h.state)
            reg = lab.registry_host(h.state)
            for key, img in imgs.items():
                digest = push_image(img.layout, f"http://{reg}", key)
                h.digests[key] = digest
                h.images[key] = f"{reg}/{img.name}@{digest}"
            h.client = lab.client()
        except BaseException:
            h.close()
            raise
        return h

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        self.lab.down(quiet=True)

    # ------------------------------------------------------------------ state of the cluster
    def refresh(self) -> None:
        self.state = self.lab.state()

    def pods(self, selector: str, namespace: str = "default") -> list[dict]:
        return self.client.list("pods", namespace, label_selector=selector)["items"]

    def shoal(self, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
        env = dict(os.environ, KUBECONFIG=self.plan.kubeconfig,
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        p = subprocess.run([sys.executable, "-m", "shoal.cli", *args], capture_output=True, text=True,
                           timeout=timeout, env=env, cwd=str(REPO))
        if check and p.returncode != 0:
            raise AssertionError(f"shoal {' '.join(args)} exited {p.returncode}: {p.stdout}{p.stderr}")
        return p

    def node_ready(self, name: str) -> bool:
        n = self.client.get("nodes", name)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions") or [])

    # ------------------------------------------------------------------ what runs where (runc's view)
    def running_containers(self) -> dict[str, list[tuple[str, str]]]:
        """pod name → [(host, container id)] of containers runc reports running, on every host."""
        out: dict[str, list[tuple[str, str]]] = {}
        for h in self.plan.hosts:
            if not Path(h.runc_root).is_dir():
                continue
            p = subprocess.run(["runc", "--root", h.runc_root, "list", "-f", "json"], capture_output=True,
                               text=True, timeout=30)
            for c in json.loads(p.stdout or "null") or []:
                if c.get("status") != "running":
                    continue
                meta = Path(h.data_dir, "runtime", "containers", c["id"], "meta.json")
                try:
                    pod = json.loads(meta.read_text())["pod_name"]
                except (OSError, ValueError, KeyError):
                    pod = "?"
                out.setdefault(pod, []).append((h.name, c["id"]))
        return out

    def container_of(self, pod: dict, container: str = "web") -> tuple[str, str]:
        """(runc root, container id) of a pod's running container."""
        host = self.plan.host(pod["spec"]["nodeName"])
        uid = pod["metadata"]["uid"]
        p = subprocess.run(["runc", "--root", host.runc_root, "list", "-f", "json"], capture_output=True, text=True,
                           timeout=30)
        ids = [c["id"] for c in json.loads(p.stdout or "null") or []
               if c["status"] == "running" and c["id"].startswith(uid[:12]) and f"-{container}-" in c["id"]]
        if not ids:
            raise AssertionError(f"pod {pod['metadata']['name']} has no running container {container} on "
                                 f"{host.name}: {p.stdout}")
        return host.runc_root, sorted(ids)[-1]

    def pod_exec(self, pod: dict, argv: list[str], *, container: str = "web",
                 timeout: float = 30) -> subprocess.CompletedProcess:
        root, cid = self.container_of(pod, container)
        return subprocess.run(["runc", "--root", root, "exec", cid, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def http_from_pod(self, pod: dict, url: str, *, attempts: int = 10) -> str | None:
        # busybox 1.35's `wget -T` segfaults: bound the request with `timeout` instead
        for _ in range(attempts):
            p = self.pod_exec(pod, ["timeout", "5", "wget", "-qO-", url])
            if p.returncode == 0:
                return p.stdout
            time.sleep(0.3)
        return None

    def host_exec(self, host: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(self.lab.exec_argv(host, argv), capture_output=True, text=True, timeout=timeout)

    # ------------------------------------------------------------------ after down
    def leftovers(self) -> list[str]:
        name = self.lab.name
        out: list[str] = []
        try:
            out += [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(name + "-")]
        except FileNotFoundError:
            pass
        from shoal.agent.runtime.cgroups import Cgroups
        cg = Cgroups()
        for g in lab_cgroups(cg, f"shoal-lab-{name}-"):
            out.append(f"cgroup {g} (pids {sorted(cgroup_pids(cg, g))})")
        recs = [self.state.server, self.state.registry, self.state.forwarder, *self.state.agents.values()] \
            if self.state else []
        out += [f"process {r.pid} ({' '.join(r.argv[:4])})" for r in recs if is_running(r)]
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cgs = Path(f"/proc/{pid}/cgroup").read_text()
                stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if f"/shoal-lab-{name}-" in cgs and stat != "Z":
                out.append(f"process {pid} in a lab cgroup")
        info = Path("/proc/self/mountinfo").read_text()
        out += [f"mount {m}" for m in mounts_under([str(self.lab.dir), str(self.lab.run_root / name)], info)]
        out += [f"dir {d}" for d in (self.lab.dir, self.lab.run_root / name) if d.exists()]
        # the lab creates no link in the root namespace (the forwarder is how it publishes ports);
        # other tests running meanwhile may add theirs, so only names of this lab count
        out += [f"root link {ln}" for ln in sorted(root_links() - self.links_before) if name in ln]
        return out
