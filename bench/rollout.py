"""Rollout behind a Service: N replicas (50) rolled to a new digest under a steady client, on a
3-host `shoal lab`, beside `podman kube play --replace` of the same manifest in the same run.

The manifest (one file per version, the same bytes for both systems): a Deployment of N replicas
of the busybox test image web:v1 or web:v2 (an httpd answering "version v1"/"version v2", a
readiness probe on /healthz every second, the default RollingUpdate strategy 25 %/25 %, the
default grace period, no preStop hook) and a NodePort Service in front of it. Images come from
the lab's registry on loopback (podman pulls with --tls-verify=false).

shoal: `shoal apply -f v1.yaml`, all Ready; then a steady client in the lab's outside namespace
(`shoal.testkit.steadyclient`: `--rate` requests a second, a new connection each, round-robin over
the node port of the three hosts); `shoal apply -f v2.yaml`; measured from the apply command's
start: the Deployment complete (what `rollout status` waits for: N updated, N available, no old
replica) and every v1 pod gone (drained and stopped); the requests that failed; the answers of
requests started after the last v1 pod was gone; the drain waits the agents logged (deletion seen
→ every node's Service rules without the pod).

podman: `podman kube play v1.yaml`, every pod answering; the same client, round-robin over the
addresses podman has allocated to the pods (its CNI IPAM directory, re-read every 50 ms: a client
that discovers its servers, as one must without a Service); `podman kube play --replace
v2.yaml`: the command's time, the time until all N new pods answer v2, the requests that
failed, and the longest stretch with no successful answer (podman stops every old pod before it
starts a new one). podman runs first, while the lab sits idle; it is installed from Debian if
missing (`apt-get install -y podman`), and runs with a temporary containers.conf
(CONTAINERS_CONF): cgroupfs, runc, file events, and ulimits this VM allows.

One JSON line per figure. Usage: sudo .venv/bin/python bench/rollout.py [--replicas 50]
[--rate 120] [--skip-podman] [--skip-shoal]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from lab_fixtures import LabHandle, is_ready, wait  # noqa: E402
from shoal.testkit.steadyclient import load, summarize  # noqa: E402

APP = "roll"
PODMAN_NET = "podman-default-kube-network"
CNI_DIR = Path("/var/lib/cni/networks") / PODMAN_NET
DRAIN_LINE = re.compile(r"out of the Service rules after ([0-9.]+)s")


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def manifest(image: str, replicas: int) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {APP}
  namespace: default
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {APP}}}
  template:
    metadata:
      labels: {{app: {APP}}}
    spec:
      containers:
      - name: web
        image: {image}
        readinessProbe:
          httpGet: {{path: /healthz, port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: {APP}
  namespace: default
spec:
  type: NodePort
  selector: {{app: {APP}}}
  ports:
  - {{port: 80, targetPort: 8080}}
"""


class Client:
    """The steady client as a process (in `netns_argv`), stopped by a file."""

    def __init__(self, netns_argv: list[str], *, rate: float, targets: list[str] | None = None,
                 targets_file: str = ""):
        """`rate`: requests a second in all; fixed `targets` share it, or a `targets_file` is read."""
        self.dir = Path(tempfile.mkdtemp(prefix="shoal-bench-rollout-"))
        per_target = rate / len(targets) if targets else rate     # steadyclient's --rate is per target
        argv = [*netns_argv, sys.executable, "-m", "shoal.testkit.steadyclient", "--rate", str(per_target),
                "--threads", "48", "--timeout", "1", "--stop-file", str(self.dir / "stop"), "--max", "200000",
                "--out", str(self.dir / "out.json")]
        argv += [x for t in targets or () for x in ("--target", t)]
        if targets_file:
            argv += ["--targets-file", targets_file]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT)))

    def finish(self) -> list:
        (self.dir / "stop").touch()
        out, _ = self.proc.communicate(timeout=60)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the steady client failed: {out}")
        recs = load(str(self.dir / "out.json"))[1]
        shutil.rmtree(self.dir, ignore_errors=True)
        return recs

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def longest_gap(recs: list, t0: float, t1: float) -> float:
    """The longest stretch inside [t0, t1] between two successful answers (or an end)."""
    oks = [r[0] for r in recs if r[2] and t0 <= r[0] <= t1]
    edges = [t0, *oks, t1]
    return max((b - a for a, b in zip(edges, edges[1:])), default=t1 - t0)


def http_ok(ip: str, port: int, want: str) -> bool:
    import http.client
    try:
        c = http.client.HTTPConnection(ip, port, timeout=1)
        c.request("GET", "/")
        ok = want in c.getresponse().read().decode()
        c.close()
        return ok
    except OSError:
        return False


# ---------------------------------------------------------------------------------------- podman
def podman_env(tmp: Path) -> dict:
    import resource
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 4096)
    # podman's defaults (nofile 1048576, nproc 4194304) are over what this VM lets runc set
    conf = tmp / "containers.conf"
    conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
                    '[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\nevents_logger = "file"\n')
    return dict(os.environ, CONTAINERS_CONF=str(conf))


def ensure_podman() -> str:
    if shutil.which("podman") is None:
        print("podman is missing: apt-get install -y podman", file=sys.stderr, flush=True)
        subprocess.run(["apt-get", "install", "-y", "podman"], check=True, stdout=subprocess.DEVNULL)
    return subprocess.run(["podman", "--version"], capture_output=True, text=True, check=True).stdout.strip()


def podman_ips() -> list[str]:
    try:
        return sorted(n for n in os.listdir(CNI_DIR) if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", n))
    except FileNotFoundError:
        return []


def bench_podman(files: dict[str, Path], replicas: int, rate: float) -> None:
    version = ensure_podman()
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-podman-"))
    env = podman_env(tmp)

    def podman(*args: str, timeout: float = 600) -> tuple[float, subprocess.CompletedProcess]:
        t = time.monotonic()
        p = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)
        return time.monotonic() - t, p

    stop = threading.Event()
    client = None
    try:
        podman("kube", "down", str(files["v2"]))          # leftovers of an interrupted run
        podman("kube", "down", str(files["v1"]))
        took, p = podman("kube", "play", "--tls-verify=false", str(files["v1"]))
        if p.returncode != 0:
            raise RuntimeError(f"podman kube play failed: {p.stderr[-2000:]}")
        wait(f"{replicas} podman pods answering v1",
             lambda: len(podman_ips()) == replicas and all(http_ok(ip, 8080, "v1") for ip in podman_ips()),
             timeout=120, interval=0.2)
        emit(bench="rollout", system="podman", case="play", version=version, replicas=replicas,
             seconds=round(took, 2))
        targets = tmp / "targets"
        targets.write_text(" ".join(f"{ip}:8080" for ip in podman_ips()))

        def refresh():
            while not stop.is_set():
                (tmp / "targets.new").write_text(" ".join(f"{ip}:8080" for ip in podman_ips()))
                os.replace(tmp / "targets.new", targets)
                stop.wait(0.05)
        threading.Thread(target=refresh, daemon=True).start()
        client = Client([], rate=rate, targets_file=str(targets))
        time.sleep(2.0)
        t0 = time.time()
        took, p = podman("kube", "play", "--replace", "--tls-verify=false", str(files["v2"]))
        if p.returncode != 0:
            raise RuntimeError(f"podman kube play --replace failed: {p.stderr[-2000:]}")
        wait(f"{replicas} podman pods answering v2",
             lambda: len(podman_ips()) == replicas and all(http_ok(ip, 8080, "v2") for ip in podman_ips()),
             timeout=120, interval=0.05)
        t_all = time.time()
        time.sleep(1.5)
        recs = client.finish()
        client = None
    finally:
        stop.set()
        if client is not None:
            client.kill()
        podman("kube", "down", str(files["v2"]))
        podman("kube", "down", str(files["v1"]))
        shutil.rmtree(tmp, ignore_errors=True)
    s = summarize(recs, after=t_all)
    emit(bench="rollout", system="podman", case="replace", replicas=replicas, command_seconds=round(took, 2),
         all_new_answering_seconds=round(t_all - t0, 2), requests=s.requests, failed=s.failed,
         rate=round(s.rate, 1), longest_without_an_answer_seconds=round(longest_gap(recs, t0, t_all), 2),
         errors=sorted({f[3].split(":")[0] for f in s.failures}), answers_after=dict(s.answers_after))


# ---------------------------------------------------------------------------------------- shoal
def deployment_complete(lab: LabHandle, replicas: int) -> bool:
    d = lab.client.get("deployments", APP, "default")
    st = d.get("status") or {}
    return (st.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and st.get("updatedReplicas") == replicas and st.get("availableReplicas") == replicas
            and st.get("replicas") == replicas)


def drain_waits(lab: LabHandle, since: dict[str, int]) -> list[float]:
    """The drain waits the agents logged after `since` (their log sizes then)."""
    out = []
    for h in lab.plan.hosts:
        p = Path(lab.plan.logs_dir) / f"agent-{h.name}.log"
        with open(p, "rb") as f:
            f.seek(since.get(h.name, 0))
            out += [float(m.group(1)) for m in DRAIN_LINE.finditer(f.read().decode(errors="replace"))]
    return sorted(out)


def log_sizes(lab: LabHandle) -> dict[str, int]:
    return {h.name: (Path(lab.plan.logs_dir) / f"agent-{h.name}.log").stat().st_size for h in lab.plan.hosts}


def bench_shoal(lab: LabHandle, files: dict[str, Path], replicas: int, rate: float) -> None:
    images = {"v1": lab.images["web:v1"], "v2": lab.images["web:v2"]}
    lab.shoal("apply", "-f", str(files["v1"]), check=True)
    wait(f"{replicas} ready v1 pods", lambda: sum(1 for p in lab.pods(f"app={APP}") if is_ready(p)) == replicas,
         timeout=300, interval=0.2)
    node_port = lab.client.get("services", APP, "default")["spec"]["ports"][0]["nodePort"]
    netns = ["ip", "netns", "exec", lab.plan.lab_netns]
    for h in lab.plan.hosts:
        wait(f"the node port on {h.name}", lambda: subprocess.run(
            [*netns, sys.executable, "-c", f"import urllib.request; urllib.request.urlopen("
             f"'http://{h.ip}:{node_port}/', timeout=2).read()"], capture_output=True).returncode == 0, timeout=60)
    hosts = sorted({p["spec"]["nodeName"] for p in lab.pods(f"app={APP}")})
    sizes = log_sizes(lab)
    client = Client(netns, rate=rate, targets=[f"{h.ip}:{node_port}" for h in lab.plan.hosts])
    try:
        time.sleep(2.0)
        t0, m0 = time.time(), time.monotonic()
        lab.shoal("apply", "-f", str(files["v2"]), check=True)
        t_complete = t_gone = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (t_complete is None or t_gone is None):
            if t_complete is None and deployment_complete(lab, replicas):
                t_complete = time.monotonic() - m0
            if t_gone is None and not any(p["spec"]["containers"][0]["image"] == images["v1"]
                                          for p in lab.pods(f"app={APP}")):
                t_gone, t_gone_wall = time.monotonic() - m0, time.time()
            time.sleep(0.05)
        if t_complete is None or t_gone is None:
            raise RuntimeError(f"the rollout did not finish in 300 s (complete {t_complete}, v1 gone {t_gone})")
        time.sleep(1.5)
        recs = client.finish()
    finally:
        client.kill()
    s = summarize(recs, after=t_gone_wall)
    waits = drain_waits(lab, sizes)
    timeouts = [e for e in lab.client.list("events", "default")["items"] if e["reason"] == "ServiceDrainTimeout"]
    emit(bench="rollout", system="shoal", case="apply", replicas=replicas, hosts=hosts, strategy="RollingUpdate 25%/25%",
         complete_seconds=round(t_complete, 2), old_pods_gone_seconds=round(t_gone, 2), goal_seconds=10,
         requests=s.requests, failed=s.failed, rate=round(s.rate, 1),
         errors=sorted({f[3].split(":")[0] for f in s.failures}), answers_after=dict(s.answers_after),
         drain_waits=len(waits), drain_wait_p50=waits[len(waits) // 2] if waits else None,
         drain_wait_max=waits[-1] if waits else None, drain_timeouts=len(timeouts),
         longest_without_an_answer_seconds=round(longest_gap(recs, t0, t_gone_wall), 2))
    lab.client.delete("deployments", APP, "default")
    lab.client.delete("services", APP, "default")
    wait(f"{APP} pods gone", lambda: not lab.pods(f"app={APP}"), timeout=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicas", type=int, default=50)
    ap.add_argument("--rate", type=float, default=120.0, help="requests a second, all targets together")
    ap.add_argument("--skip-podman", action="store_true")
    ap.add_argument("--skip-shoal", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/rollout.py needs root (it builds a lab)", file=sys.stderr)
        return 1
    t = time.monotonic()
    lab = LabHandle.start(3)
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-manifests-"))
    try:
        emit(bench="rollout", case="lab_up", hosts=3, seconds=round(time.monotonic() - t, 2))
        files = {}
        for v in ("v1", "v2"):
            files[v] = tmp / f"{APP}-{v}.yaml"
            files[v].write_text(manifest(lab.images[f"web:{v}"], a.replicas))
        if not a.skip_podman:
            bench_podman(files, a.replicas, a.rate)
        if not a.skip_shoal:
            bench_shoal(lab, files, a.replicas, a.rate)
    finally:
        lab.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
