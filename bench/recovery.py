"""Recovery benchmark on a 3-host `shoal lab`: how fast does the cluster heal?

Brings a lab up (a random name; always torn down), pushes the busybox test
images, then measures, printing one JSON line per figure:

  1. container_crash      a web container SIGKILLed through runc → its pod is
                          Running+Ready again (restartCount + 1)
  2. liveness_restart     flaky:v1 whose /healthz vanishes FAIL_AFTER s after start,
                          liveness period 1 s, failureThreshold 2 → restartCount 1
                          (from the moment /healthz went away, second precision)
  3. host_stopped         `stop-host` → node NotReady, and → all replicas
                          Running+Ready on the other hosts (defaults: grace 8 s +
                          eviction 5 s; goal ≤ 15 s)
  4. rollout_12           12 replicas across 3 hosts, web:v1 → web:v2 (maxSurge 3,
                          maxUnavailable 0): duration, and the requests that failed
                          for a client inside the lab (in host h1's namespace)
                          that re-lists Ready pods every 0.2 s and sends GETs
                          round-robin to their pod IPs as fast as it can

Usage: sudo python3 bench/recovery.py [--repeat 1] [--skip-rollout]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from lab_fixtures import LabHandle, is_ready, wait, web_deployment  # noqa: E402
from shoal.machinery.api.times import parse_time  # noqa: E402


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def deployment(name: str, image: str, replicas: int, *, surge=1, unavailable=0, liveness=None, env=None) -> dict:
    return web_deployment(image, replicas, name=name, surge=surge, unavailable=unavailable, env=env,
                          probes={"livenessProbe": liveness} if liveness else None)


def ready(lab: LabHandle, app: str, *, exclude: str | None = None) -> list[dict]:
    return [p for p in lab.pods(f"app={app}") if is_ready(p) and p["spec"].get("nodeName") != exclude]


def wait_ready(lab: LabHandle, app: str, n: int, timeout: float = 180, **kw) -> list[dict]:
    return wait(f"{n} ready {app} pods", lambda: (lambda ps: ps if len(ps) == n else None)(ready(lab, app, **kw)),
                timeout, interval=0.05)


def delete_and_wait(lab: LabHandle, app: str) -> None:
    lab.client.delete("deployments", app, "default")

    def gone():
        left = lab.pods(f"app={app}")
        return True if not left else None
    try:
        wait(f"{app} pods gone", gone, timeout=90)
    except AssertionError:
        left = [(p["metadata"]["name"], p["spec"].get("nodeName"), p["status"].get("phase"),
                 p["metadata"].get("deletionTimestamp"), p["metadata"].get("finalizers"))
                for p in lab.pods(f"app={app}")]
        raise AssertionError(f"pods of {app} still there 90 s after deleting the deployment: {left}") from None


def restarts(p: dict) -> int:
    return sum(cs.get("restartCount", 0) for cs in p["status"].get("containerStatuses") or [])


def bench_container_crash(lab: LabHandle) -> None:
    lab.client.create("deployments", deployment("crashy", lab.images["web:v1"], 3), "default")
    pods = wait_ready(lab, "crashy", 3)
    for p in pods:
        root, cid = lab.container_of(p)
        before = restarts(p)
        t0 = time.monotonic()
        subprocess.run(["runc", "--root", root, "kill", cid, "KILL"], check=True, capture_output=True)
        name = p["metadata"]["name"]

        def back():
            q = lab.client.get("pods", name, "default")
            return q if restarts(q) > before and is_ready(q) else None
        wait(f"{name} running again", back, timeout=120, interval=0.05)
        emit(bench="recovery", case="container_crash", pod=name, node=p["spec"]["nodeName"],
             seconds=round(time.monotonic() - t0, 2))
    delete_and_wait(lab, "crashy")


def bench_liveness(lab: LabHandle, fail_after: int = 5) -> None:
    live = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2}
    lab.client.create("deployments", deployment("flaky", lab.images["flaky:v1"], 3, liveness=live,
                                                env=[{"name": "FAIL_AFTER", "value": str(fail_after)}]), "default")
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and len(seen) < 3:
        for p in lab.pods("app=flaky"):
            name = p["metadata"]["name"]
            if name in seen or restarts(p) < 1:
                continue
            seen[name] = time.time()
            cs = p["status"]["containerStatuses"][0]
            started = (cs.get("lastState") or {}).get("terminated", {}).get("startedAt")
            t_started = parse_time(started)
            fail_at = t_started + fail_after if t_started is not None else None
            emit(bench="recovery", case="liveness_restart", pod=name, node=p["spec"]["nodeName"],
                 seconds_after_health_lost=round(seen[name] - fail_at, 2) if fail_at else None,
                 probe_period=1, failure_threshold=2)
        time.sleep(0.1)
    delete_and_wait(lab, "flaky")


def bench_host_stopped(lab: LabHandle, victim: str = "h3") -> None:
    lab.client.create("deployments", deployment("survivor", lab.images["web:v1"], 6), "default")
    pods = wait_ready(lab, "survivor", 6)
    on_victim = sum(p["spec"]["nodeName"] == victim for p in pods)
    t0 = time.monotonic()
    lab.lab.stop_host(victim)
    wait(f"{victim} NotReady", lambda: not lab.node_ready(victim), timeout=60, interval=0.05)
    t_nr = time.monotonic() - t0
    wait_ready(lab, "survivor", 6, exclude=victim)
    emit(bench="recovery", case="host_stopped", host=victim, pods_on_host=on_victim,
         notready_seconds=round(t_nr, 2), replacements_ready_seconds=round(time.monotonic() - t0, 2),
         goal_seconds=15)
    lab.lab.start_host(victim)
    lab.refresh()
    wait(f"{victim} Ready", lambda: lab.node_ready(victim), timeout=90)
    delete_and_wait(lab, "survivor")


# runs inside host h1's namespace: the only place pod IPs are reachable from
CLIENT = r"""
import json, os, ssl, sys, threading, time, urllib.request, base64
server, token, ca_b64, app, stop_file = sys.argv[1:6]
ctx = ssl.create_default_context(cadata=base64.b64decode(ca_b64).decode())
def ready_ips():
    req = urllib.request.Request(f"{server}/api/v1/namespaces/default/pods?labelSelector=app%3D{app}",
                                 headers={"Authorization": f"Bearer {token}"})
    items = json.load(urllib.request.urlopen(req, context=ctx, timeout=5))["items"]
    return [p["status"]["podIP"] for p in items if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]
ips, ok, failed, errors = [], 0, 0, {}
def refresh():
    global ips
    while not os.path.exists(stop_file):
        try: ips = ready_ips()
        except Exception: pass
        time.sleep(0.2)
threading.Thread(target=refresh, daemon=True).start()
i = 0
while not os.path.exists(stop_file):
    cur = ips
    if not cur:
        time.sleep(0.05); continue
    ip = cur[i % len(cur)]; i += 1
    try:
        urllib.request.urlopen(f"http://{ip}:8080/index.html", timeout=2).read(); ok += 1
    except Exception as e:
        failed += 1; k = type(e).__name__; errors[k] = errors.get(k, 0) + 1
print(json.dumps({"ok": ok, "failed": failed, "errors": errors}))
"""


def bench_rollout(lab: LabHandle, replicas: int = 12) -> None:
    import base64
    lab.client.create("deployments", deployment("roll", lab.images["web:v1"], replicas, surge=3, unavailable=0),
                      "default")
    wait_ready(lab, "roll", replicas)
    token = Path(lab.plan.server_dir, "admin-token").read_text().strip()
    ca = base64.b64encode(Path(lab.plan.server_dir, "tls", "ca.crt").read_bytes()).decode()
    stop = Path(tempfile.mkdtemp(prefix="shoal-bench-")) / "stop"
    client = subprocess.Popen(lab.lab.exec_argv("h1", [sys.executable, "-c", CLIENT, lab.plan.server_url, token,
                                                       ca, "roll", str(stop)]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)           # the client's first list and a few requests before the rollout
        dep = lab.client.get("deployments", "roll", "default")
        dep["spec"]["template"]["spec"]["containers"][0]["image"] = lab.images["web:v2"]
        t0 = time.monotonic()
        lab.client.update("deployments", dep)
        r = lab.shoal("rollout", "status", "deployment/roll", "--timeout", "300s", timeout=330)
        dur = time.monotonic() - t0
        time.sleep(1)
    finally:
        stop.touch()
        out, err = client.communicate(timeout=30)
        shutil.rmtree(stop.parent, ignore_errors=True)
    stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err[-500:]}
    hosts = sorted({p["spec"]["nodeName"] for p in ready(lab, "roll")})
    emit(bench="recovery", case="rollout", replicas=replicas, hosts=hosts, max_surge=3, max_unavailable=0,
         rollout_status_exit=r.returncode, seconds=round(dur, 2), requests_ok=stats.get("ok"),
         requests_failed=stats.get("failed"), errors=stats.get("errors") or stats.get("error"))
    delete_and_wait(lab, "roll")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-rollout", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="repeat the host-stopped case (1)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/recovery.py needs root (it builds a lab)", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    lab = LabHandle.start(3)
    emit(bench="recovery", case="lab_up", hosts=3, seconds=round(time.monotonic() - t0, 2))
    try:
        bench_container_crash(lab)
        bench_liveness(lab)
        for _ in range(a.repeat):
            bench_host_stopped(lab)
        if not a.skip_rollout:
            bench_rollout(lab)
    finally:
        lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
