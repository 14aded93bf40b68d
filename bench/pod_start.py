"""Pod start: N replicas applied → all Ready, beside raw `runc run -d` of the same
rootfs in the same run; and container crash → running again.

One cluster as in tests/e2e/test_agent_real.py (`tests/e2e/agent_fixtures.E2ECluster`),
laid out as `shoal server` runs it: a loopback registry with the busybox test images,
the API server in its own process with its controllers in a child, and one real
`shoal agent` (runc + conmon, overlayfs, a netns and veth per pod) whose `--run-dir`
is a tmpfs, as a host's /run is. Root only. Everything it makes is removed at the end.

- pod_start: a Deployment of N replicas of web:v1 by digest, image already cached
  (a warm-up pod pulled it), no probes; timed from the create call until a pod watch
  has seen N pods Ready (a watch, not polling, so the measuring adds no load). Then
  the deletion until every pod is gone (SIGTERM → exit → teardown → confirmed).
- floor: `runc run -d` of N containers of the same image — one read-only overlay of
  the same layer dirs, the same entrypoint (busybox httpd) — `--parallel` at a time
  (default 1, 2 and the agent's default 8 sync threads; shoal's agent runs with
  `--sync-threads` set to the same number before each), twice: alone (runc makes an unnamed
  netns; no veth, no IP), and after what a pod's network needs done with `ip` (named
  netns, veth pair on a bridge, address, lo up, default route — the floor issue 4
  describes). runc keeps its state on the agent's run-dir tmpfs, as under a host's /run.
  `ratio` = pod_start / floor for each.
- crash_recovery: SIGKILL of a running container's main process from the host →
  the runtime shows the next attempt running (`to_running`), and → the API server
  shows it running with restartCount+1 (`to_status`). One kill per pod (the first
  restart is immediate by policy; later ones back off).
- podman `kube play` of the same manifest where podman exists (not on this host).

    python3 bench/pod_start.py [-n 10 -n 50] [--parallel 1 --parallel 2 --parallel 8] [--repeat 5]
                               [--crash-samples 5]

Each figure is the median of `--repeat` rounds, shoal and both floors interleaved
(timings on a small VM swing by ±20 % between minutes); the rounds are printed too.
Before each timed run the bench waits for the machine to be idle (`settle`), so that what
the previous run left (the cluster's held events, a floor's teardown) is not timed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from agent_fixtures import (NAMESPACE, E2ECluster, container, cstatus, deployment_manifest, is_ready,  # noqa: E402
                            pod_manifest, wait_for)
from shoal.agent.interfaces import ContainerConfig, PulledImage  # noqa: E402
from shoal.agent.runtime import build_oci_spec  # noqa: E402
from shoal.agent.runtime.seccomp import load_profile  # noqa: E402
from shoal.agent.runtime.cgroups import Cgroups  # noqa: E402
from shoal.agent.runtime.runc import DEFAULT_RUNC  # noqa: E402

AGENT_SYNC_THREADS = 8     # AgentOptions.sync_threads default


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def ms(x: float) -> float:
    return round(x * 1000, 1)


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of the whole machine, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return f[3] + f[4], sum(f)


def settle(max_wait: float = 15.0, window: float = 0.3, idle_share: float = 0.85) -> float:
    """Wait until the machine is idle (at least `idle_share` of its CPU time idle over `window`
    seconds, at most `max_wait` in all): what one timed run leaves behind — the cluster's held
    events and garbage collection, a floor's teardown — must not run inside the next one,
    whichever side it would slow down. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        i0, a0 = _cpu_times()
        time.sleep(window)
        i1, a1 = _cpu_times()
        if a1 > a0 and (i1 - i0) / (a1 - a0) >= idle_share:
            break
    return time.monotonic() - t0


# ----------------------------------------------------------------------------- shoal
def warm_image(c: E2ECluster, ref: str) -> PulledImage:
    c.create_pod(pod_manifest("warmup", [container("web", ref)]))
    c.wait_pod("warmup", is_ready, timeout=120)
    c.delete_pod_and_wait("warmup")
    hexd = ref.split("@sha256:")[1]
    store = c.agent_dir / "images"
    rec = json.loads((store / "images" / f"{hexd}.json").read_text())
    return PulledImage(reference=ref, digest=rec.get("digest", ""), image_id=ref,
                       layers=[str(store / l["dir"]) for l in rec["layers"]], config=rec["config"].get("config", {}))


def shoal_pod_start(c: E2ECluster, ref: str, n: int) -> dict:
    """Create the Deployment, then follow the pods on a watch (a poll every few ms would
    load the API server it measures) until n are Ready; then delete it and watch them go."""
    name = f"bench{n}-{uuid.uuid4().hex[:4]}"
    sel = f"app={name}"
    wc = c.srv.client()
    try:
        rv = wc.list("pods", NAMESPACE, label_selector=sel)["metadata"]["resourceVersion"]
        t0 = time.monotonic()
        c.client.create("deployments", deployment_manifest(name, ref, n), NAMESPACE)
        ready: set[str] = set()
        for ev in wc.watch("pods", NAMESPACE, resource_version=rv, label_selector=sel,
                           timeout_seconds=60 + 5 * n):
            pod = ev["object"]
            rv = pod["metadata"]["resourceVersion"]
            (ready.add if ev["type"] != "DELETED" and is_ready(pod) else ready.discard)(pod["metadata"]["name"])
            if len(ready) == n:
                break
        else:
            raise AssertionError(f"{n} pods of {name} not Ready in time ({len(ready)} were)\n{c.agent_tail()}")
        ready_s = time.monotonic() - t0
        t1 = time.monotonic()
        c.client.delete("deployments", name, NAMESPACE, propagation_policy="Background")
        left = {p["metadata"]["name"] for p in wc.list("pods", NAMESPACE, label_selector=sel)["items"]}
        if left:
            for ev in wc.watch("pods", NAMESPACE, resource_version=rv, label_selector=sel,
                               timeout_seconds=60 + 5 * n):
                (left.discard if ev["type"] == "DELETED" else left.add)(ev["object"]["metadata"]["name"])
                if not left:
                    break
        wait_for(lambda: not c.pods_with(sel), timeout=30, interval=0.05, what=f"{n} pods deleted",
                 detail=c.agent_tail)
        return {"all_ready_s": round(ready_s, 3), "all_deleted_s": round(time.monotonic() - t1, 3)}
    finally:
        wc.close()


def crash_recovery(c: E2ECluster, ref: str, samples: int) -> list[dict]:
    names = [f"crash-{i}-{uuid.uuid4().hex[:4]}" for i in range(samples)]
    for nm in names:
        c.create_pod(pod_manifest(nm, [container("web", ref)]))
    out = []
    try:
        for nm in names:
            pod = c.wait_pod(nm, is_ready, timeout=60)
            st = c.running_container(pod, "web")
            t0 = time.monotonic()
            os.kill(st.pid, signal.SIGKILL)
            new = wait_for(lambda: (s := c.running_container(pod, "web")) and s.id != st.id and s,
                           timeout=30, interval=0.005, what=f"{nm} running again")
            to_running = time.monotonic() - t0
            wait_for(lambda: (p := c.get_pod(nm)) and cstatus(p).get("restartCount") == 1
                     and "running" in (cstatus(p).get("state") or {}), timeout=30, interval=0.005,
                     what=f"{nm} reported running again")
            out.append({"to_running_ms": ms(to_running), "to_status_ms": ms(time.monotonic() - t0),
                        "new_attempt": new.labels.get("shoal.io/attempt")})
    finally:
        for nm in names:
            c.delete_pod_and_wait(nm)
    return out


# ----------------------------------------------------------------------------- floor
def raw_runc(image: PulledImage, work: Path, n: int, parallel: int, *, run_dir: Path, net: bool = False) -> float:
    """Seconds for `runc run -d` of n containers of `image`, `parallel` at a time. With
    net=True each also gets what a pod gets, made the way a shell user would (`ip`): its
    own named netns, a veth pair on a bridge, an address, lo up and a default route.
    runc keeps its state under `run_dir` — the same tmpfs as the agent's (a host's /run)."""
    tag = uuid.uuid4().hex[:6]
    cgroup_parent = f"/shoal-bench-floor-{tag}"
    runc_root = run_dir / f"floor-runc-{tag}"
    rootfs = work / f"rootfs-{tag}"
    rootfs.mkdir(parents=True)
    bridge, subnet = f"sbf{tag}", f"10.254.{int(tag[:2], 16) % 250}"
    # the same layer dirs the agent's containers stack, mounted once, read-only
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    "lowerdir=" + ":".join(reversed(image.layers)), str(rootfs)], check=True)
    bundles = []
    try:
        if net:
            for argv in (["ip", "link", "add", bridge, "type", "bridge"],
                         ["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge], ["ip", "link", "set", bridge, "up"]):
                subprocess.run(argv, check=True)
        argv = list(image.config.get("Entrypoint") or []) + list(image.config.get("Cmd") or [])
        for i in range(n):
            cid = f"floor-{tag}-{i}"
            cfg = ContainerConfig(id=cid, pod_uid=cid, pod_name=cid, namespace="bench", container_name="web",
                                  attempt=0, image=image, argv=argv, env=list(image.config.get("Env") or []),
                                  log_path=str(work / f"{cid}.log"),
                                  netns_path=f"/var/run/netns/{bridge}-{i}" if net else None)
            b = work / "bundles" / cid
            b.mkdir(parents=True)
            # the same seccomp profile and pids limit as the agent's containers get: the floor
            # measures runc, not a lighter container
            spec = build_oci_spec(cfg, rootfs=str(rootfs), cgroups_path=f"{cgroup_parent}/{cid}",
                                  readonly_rootfs=True, nofile=20000, seccomp_profile=load_profile())
            (b / "config.json").write_text(json.dumps(spec))
            bundles.append((i, cid, str(b)))

        def sh(*argv: str) -> None:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)

        def run(item):
            i, cid, bundle = item
            if net:
                ns, veth = f"{bridge}-{i}", f"{bridge}v{i}"
                sh("ip", "netns", "add", ns)
                sh("ip", "link", "add", veth, "master", bridge, "up", "type", "veth", "peer", "name", "eth0",
                   "netns", ns)
                sh("ip", "-n", ns, "addr", "add", f"{subnet}.{i + 2}/24", "dev", "eth0")
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                sh("ip", "-n", ns, "route", "add", "default", "via", f"{subnet}.1")
            subprocess.run([DEFAULT_RUNC, "--root", str(runc_root), "run", "--detach", "--bundle", bundle, cid],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=True)
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            list(pool.map(run, bundles))
        return time.monotonic() - t0
    finally:
        for i, cid, _ in bundles:
            subprocess.run([DEFAULT_RUNC, "--root", str(runc_root), "delete", "--force", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if net:
                subprocess.run(["ip", "netns", "del", f"{bridge}-{i}"], stderr=subprocess.DEVNULL)
        if net:
            subprocess.run(["ip", "link", "del", bridge], stderr=subprocess.DEVNULL)
        subprocess.run(["umount", str(rootfs)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        Cgroups().remove(cgroup_parent)
        shutil.rmtree(work / "bundles", ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, action="append", help="replicas (repeatable; default 10 and 50)")
    ap.add_argument("--parallel", type=int, action="append",
                    help=f"floor parallelism (repeatable; default 1, 2 and {AGENT_SYNC_THREADS})")
    ap.add_argument("--crash-samples", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5, help="rounds per figure; medians are reported")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("pod_start needs root (runc, overlayfs, cgroups, network namespaces)")
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-podstart-"))
    c = E2ECluster(work / "cluster", backoff_initial=10.0, backoff_max=300.0, server_process=True)
    try:
        c.start()
        ref = c.refs["web:v1"]
        image = warm_image(c, ref)
        for n in args.n or [10, 50]:
            for par in args.parallel or [1, 2, AGENT_SYNC_THREADS]:
                # shoal at this parallelism (the agent's --sync-threads), then the floors at it
                c.stop_agent()
                c.sync_threads = par
                mark = c.agent_log.stat().st_size
                c.start_agent()
                wait_for(lambda: b" joined " in c.agent_log.read_bytes()[mark:], timeout=60,
                         what="the agent back", detail=c.agent_tail)
                warm_image(c, ref)      # a warm agent, as in the first round: one pod started and deleted
                # Rounds interleaved (shoal, floor, netns floor, shoal, ...): this VM's timings
                # swing ±20 % from one minute to the next; the medians are compared.
                runs: dict[str, list[float]] = {"shoal": [], "deleted": [], "floor": [], "netns": []}
                for _ in range(args.repeat):
                    settle()
                    shoal = shoal_pod_start(c, ref, n)
                    runs["shoal"].append(shoal["all_ready_s"])
                    runs["deleted"].append(shoal["all_deleted_s"])
                    settle()
                    runs["floor"].append(raw_runc(image, work / "floor", n, par, run_dir=c.run_dir, net=False))
                    settle()
                    runs["netns"].append(raw_runc(image, work / "floor", n, par, run_dir=c.run_dir, net=True))
                med = {k: statistics.median(v) for k, v in runs.items()}
                emit(bench="pod_start", what="shoal: deployment applied -> all pods Ready (image cached)", n=n,
                     parallel=par, all_ready_s=round(med["shoal"], 3), all_deleted_s=round(med["deleted"], 3),
                     rounds=[round(x, 3) for x in runs["shoal"]])
                for key, what in (("floor", "floor: runc run -d alone (runc makes an unnamed netns, no veth)"),
                                  ("netns", "floor: ip netns + veth + address, then runc run -d")):
                    emit(bench="pod_start", what=what, n=n, parallel=par, total_s=round(med[key], 3),
                         rounds=[round(x, 3) for x in runs[key]],
                         ratio_shoal_to_floor=round(med["shoal"] / med[key], 2))
        if shutil.which("podman"):
            emit(bench="pod_start", what="podman kube play", skipped="not implemented here: podman needs the "
                 "containers.conf settings of issue 4 (cgroupfs, runc, file events, default_ulimits)")
        else:
            emit(bench="pod_start", what="podman kube play", skipped="podman is not installed on this host")
        samples = crash_recovery(c, ref, args.crash_samples)
        for key in ("to_running_ms", "to_status_ms") if samples else ():
            vals = sorted(s[key] for s in samples)
            emit(bench="crash_recovery", what=f"SIGKILL of the main process -> {key[3:-3].replace('_', ' ')}",
                 samples=len(vals), p50_ms=round(statistics.median(vals), 1), max_ms=vals[-1], all_ms=vals)
    finally:
        problems = c.close()
        if problems:
            print(f"cleanup problems: {problems}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
