"""List benchmark: time and peak memory of the API server answering a list of N pods.

Fills a SQLite datastore with N bound, running pods (≈ 2 KiB of JSON each, written straight
through `Store`, which is what the server would have stored), then for each case starts a
fresh `python -m shoal.cli server --insecure-http --no-controller` on it, sends one warm-up
request, and measures the case: the wall time of the request(s) seen by the client and the
server process's peak RSS (`VmHWM` of /proc/<pid>/status) above its RSS just before (the
high-water mark is per process, hence one process per case), measured once the server has
settled (its CPU time still for 3 s: the start-up sweep of every object is done). Cases:
  full      GET /api/v1/pods (no limit): the whole list in one answer
  table     the same with kubectl's Accept (a meta.k8s.io Table, rows with metadata)
  pages     GET ?limit=500 then every `continue` to the end (kubectl's default chunking)
Prints one JSON line per case. Usage: python bench/list_memory.py [--pods 10000] [--cases full,table,pages]
The code measured is whatever `shoal` the interpreter imports: to measure another checkout,
put a directory holding a `shoal` symlink to it first on PYTHONPATH (the server process
inherits it).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TABLE = ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
         "application/json")


def pod(i: int, node: str) -> dict:
    name = f"web-7d4b9c8f6-{i:05d}"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": f"ns-{i % 10}", "uid": f"00000000-0000-4000-8000-{i:012d}",
                     "generateName": "web-7d4b9c8f6-", "creationTimestamp": "2025-01-01T00:00:00Z",
                     # no ownerReferences: the collector would delete pods of an owner that is not there
                     "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6", "tier": "frontend"}},
        "spec": {"nodeName": node, "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                 "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                 "containers": [{"name": "web", "image": "registry.example:5000/web@sha256:" + "ab" * 32,
                                 "imagePullPolicy": "IfNotPresent",
                                 "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "http"}],
                                 "env": [{"name": "MODE", "value": "production"}, {"name": "REPLICA", "value": str(i)}],
                                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                               "limits": {"cpu": "500m", "memory": "128Mi"}},
                                 "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                                    "periodSeconds": 10, "timeoutSeconds": 1,
                                                    "failureThreshold": 3, "successThreshold": 1},
                                 "terminationMessagePath": "/dev/termination-log",
                                 "terminationMessagePolicy": "File"}]},
        "status": {"phase": "Running", "hostIP": "192.168.1.10", "podIP": f"10.244.{i // 250}.{i % 250 + 2}",
                   "podIPs": [{"ip": f"10.244.{i // 250}.{i % 250 + 2}"}], "qosClass": "Burstable",
                   "startTime": "2025-01-01T00:00:01Z",
                   "conditions": [{"type": t, "status": "True", "lastProbeTime": None,
                                   "lastTransitionTime": "2025-01-01T00:00:05Z"}
                                  for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
                   "containerStatuses": [{"name": "web", "ready": True, "started": True, "restartCount": 0,
                                          "image": "registry.example:5000/web:1.0",
                                          "imageID": "registry.example:5000/web@sha256:" + "ab" * 32,
                                          "containerID": f"shoal://{i:064x}",
                                          "state": {"running": {"startedAt": "2025-01-01T00:00:02Z"}}}]}}


def fill(data: Path, n: int) -> int:
    """N pods into <data>/state.db; returns the bytes of one pod's JSON."""
    from shoal.apiserver.store import Store
    data.mkdir(parents=True, exist_ok=True)
    st = Store(f"sqlite:///{data / 'state.db'}", sqlite_synchronous="normal")
    try:
        for i in range(n):
            st.create("pods", pod(i, f"node-{i % 20}"))
    finally:
        st.close()
    return len(json.dumps(pod(0, "node-0"), separators=(",", ":")))


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def start(data: Path) -> tuple[subprocess.Popen, str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "shoal.cli", "server", "--data-dir", str(data), "--listen",
                             f"127.0.0.1:{port}", "--no-controller", "--insecure-http"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            token = (data / "admin-token").read_text().strip()
            if httpx.get(url + "/api/v1/namespaces/default", headers={"Authorization": f"Bearer {token}"},
                         timeout=5).status_code == 200:
                return proc, url, token
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def settle(pid: int, quiet: float = 3.0, timeout: float = 120.0) -> None:
    """Wait until the server's CPU time stops moving for `quiet` seconds: its start-up work
    (the collector's sweep of every object) must not be measured as the list's."""
    def cpu() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    deadline = time.monotonic() + timeout
    last, since = cpu(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = cpu()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def run_case(case: str, http: httpx.Client) -> tuple[int, int]:
    """(items received, bytes received)."""
    if case == "full":
        r = http.get("/api/v1/pods")
        r.raise_for_status()
        return len(r.json()["items"]), len(r.content)
    if case == "table":
        r = http.get("/api/v1/pods", headers={"Accept": TABLE})
        r.raise_for_status()
        return len(r.json()["rows"]), len(r.content)
    if case == "pages":
        items = size = 0
        params: dict = {"limit": "500"}
        while True:
            r = http.get("/api/v1/pods", params=params)
            r.raise_for_status()
            body = r.json()
            items += len(body["items"])
            size += len(r.content)
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return items, size
            params = {"limit": "500", "continue": token}
    raise SystemExit(f"unknown case {case}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=10000)
    ap.add_argument("--cases", default="full,table,pages")
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        seed = Path(tmp) / "seed"
        one = fill(seed, args.pods)
        for case in args.cases.split(","):
            data = Path(tmp) / case
            subprocess.run(["cp", "-r", str(seed), str(data)], check=True)
            proc, url, token = start(data)
            try:
                with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300) as http:
                    http.get("/api/v1/namespaces/default/pods", params={"limit": "1"})    # warm-up
                    settle(proc.pid)
                    rss0 = proc_kib(proc.pid, "VmRSS")
                    hwm0 = proc_kib(proc.pid, "VmHWM")
                    t0 = time.perf_counter()
                    items, size = run_case(case, http)
                    seconds = time.perf_counter() - t0
                    hwm = proc_kib(proc.pid, "VmHWM")
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            print(json.dumps({"bench": "list", "case": case, "pods": args.pods, "items": items,
                              "pod_json_bytes": one, "response_bytes": size, "seconds": round(seconds, 3),
                              "rss_before_mib": round(rss0 / 1024, 1), "hwm_before_mib": round(hwm0 / 1024, 1),
                              "peak_rss_above_mib": round((hwm - rss0) / 1024, 1)}), flush=True)


if __name__ == "__main__":
    main()
