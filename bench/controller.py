"""Control-plane benchmark: hollow nodes, many pods — how fast are they scheduled?

Starts `python -m shoal.cli server` (the API server with the controllers embedded, as `shoal server`
runs by default) on loopback with a temp SQLite file, registers --nodes hollow nodes
(tests/integration/hollow.py: leases renewed, bound pods marked Running/Ready), creates
--deployments Deployments of --replicas each, and measures:
  schedule_all_seconds   first Deployment created -> every pod bound to a node
  scheduler_pods_per_s   pods bound / (last bind - first bind), from the pod watch
  all_ready_seconds      first Deployment created -> every Deployment available
  server_rss_mb          peak resident memory of the server process (VmHWM), and at the end
  api_p50_ms/api_p99_ms  latency of a GET probe issued every 20 ms during the run
Prints one JSON line per figure. Goals (docs/benchmarks.md): 3000 pods bound in <= 60 s,
>= 100 pods/s, server RSS <= 150 MB.

Usage: python bench/controller.py [--nodes 100] [--deployments 30] [--replicas 100]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from shoal.testkit.apiserver import ServerSubprocess  # noqa: E402
from hollow import HollowCluster, deployment  # noqa: E402


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--deployments", type=int, default=30)
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--lease-period", type=float, default=4.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    a = ap.parse_args(argv)
    total = a.deployments * a.replicas
    data = Path(tempfile.mkdtemp(prefix="shoal-bench-controller-"))
    srv = ServerSubprocess(data)
    proc, client = srv.proc, srv.client()
    hollow = None
    stop = threading.Event()
    try:
        hollow = HollowCluster(client, nodes=[f"hollow-{i:03d}" for i in range(a.nodes)], cpu="8", memory="32Gi",
                               lease_period=a.lease_period, workers=4).start()
        rv = client.list("pods", all_namespaces=True)["metadata"]["resourceVersion"]
        bound: dict[str, float] = {}
        all_bound = threading.Event()

        def watch_binds():
            wc = srv.client()
            cur = rv
            while not stop.is_set() and not all_bound.is_set():
                try:
                    for ev in wc.watch("pods", resource_version=cur, all_namespaces=True, timeout_seconds=30):
                        obj = ev["object"]
                        cur = obj["metadata"].get("resourceVersion", cur)
                        if ev["type"] in ("ADDED", "MODIFIED") and obj.get("spec", {}).get("nodeName"):
                            bound.setdefault(obj["metadata"]["name"], time.perf_counter())
                            if len(bound) >= total:
                                all_bound.set()
                                return
                        if stop.is_set():
                            return
                except Exception:
                    time.sleep(0.2)

        lat: list[float] = []

        def probe():
            pc = srv.client()
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    pc.get("nodes", "hollow-000")
                    lat.append(time.perf_counter() - t)
                except Exception:
                    pass
                stop.wait(0.02)

        threads = [threading.Thread(target=watch_binds, daemon=True), threading.Thread(target=probe, daemon=True)]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        for i in range(a.deployments):
            client.create("deployments", deployment(f"bench-{i:02d}", replicas=a.replicas))
        if not all_bound.wait(a.timeout):
            emit(metric="schedule_all_seconds", value=None, bound=len(bound), pods=total, error="timeout")
            return 1
        t_bound = time.perf_counter()
        binds = sorted(bound.values())
        emit(metric="schedule_all_seconds", value=round(t_bound - t0, 2), pods=total, nodes=a.nodes)
        emit(metric="scheduler_pods_per_s", value=round(len(binds) / max(binds[-1] - binds[0], 1e-6), 1),
             pods=len(binds))

        def all_available():
            items = client.list("deployments", "default")["items"]
            return all((d.get("status") or {}).get("availableReplicas") == a.replicas for d in items)
        deadline = time.monotonic() + a.timeout
        while not all_available() and time.monotonic() < deadline:
            time.sleep(0.5)
        emit(metric="all_ready_seconds", value=round(time.perf_counter() - t0, 2) if all_available() else None,
             pods=total)
        stop.set()
        emit(metric="server_rss_mb", peak=round(rss_kb(proc.pid, "VmHWM") / 1024, 1),
             end=round(rss_kb(proc.pid, "VmRSS") / 1024, 1), note="API server process")
        for child in children(proc.pid):
            emit(metric="controller_rss_mb", peak=round(rss_kb(child, "VmHWM") / 1024, 1),
                 end=round(rss_kb(child, "VmRSS") / 1024, 1), note="`shoal controller` child of the server")
        emit(metric="api_get_latency_ms", p50=round(pct(lat, 50) * 1000, 2), p99=round(pct(lat, 99) * 1000, 2),
             samples=len(lat))
        return 0
    finally:
        stop.set()
        if hollow is not None:
            hollow.stop()
        srv.stop()
        shutil.rmtree(data, ignore_errors=True)     # the database of 3000 pods: ≈ 80 MB


if __name__ == "__main__":
    sys.exit(main())
