"""Where a pod start's time and CPU go: rounds of bench/pod_start.py's shoal case, traced.

The same cluster as bench/pod_start.py (API server process + controllers child, one real
agent with `--sync-threads P`, web:v1 cached). Each round applies a Deployment of N replicas
and, until every pod is Ready, records:
- when each pod was first seen created, bound, running and Ready (one pod watch);
- the CPU of the API server, the controllers and the agent (/proc), of the containers and of
  the monitors (conmon + runc: the cgroup parent's and `shoal-monitors`' cpuacct), and of the
  whole machine (/proc/stat);
- the writes the round made, by resource, type and Event reason (read from the server's log).
It prints those as JSON lines, plus the processes' pids so that a profiler can be attached
(`py-spy record --gil -p PID`, `perf stat -p PID`) around a `--pause` before each round.
Root only; everything is removed at the end. Figures, not assertions: use it to find out
what to change, and bench/pod_start.py to measure the change.

    python3 bench/pod_start_trace.py [-n 10] [--parallel 8] [--rounds 3] [--pods] [--pause 0]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from agent_fixtures import NAMESPACE, E2ECluster, deployment_manifest, is_ready, wait_for  # noqa: E402
from pod_start import emit, settle, warm_image  # noqa: E402

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def proc_cpu_ms(pid: int) -> float:
    """utime + stime of the process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) * TICK_MS


def machine_busy_ms() -> float:
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(f) - f[3] - f[4]) * TICK_MS


def cgroup_cpu_ms(rel: str) -> float:
    try:
        return int(Path(f"/sys/fs/cgroup/cpuacct/{rel.strip('/')}/cpuacct.usage").read_text()) / 1e6
    except (OSError, ValueError):
        return float("nan")          # no cgroup v1 cpuacct here


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def writes_since(db: Path, revision: int) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT resource, type, value FROM events WHERE id > ?", (revision,)).fetchall()
    finally:
        con.close()
    out: collections.Counter = collections.Counter()
    for resource, type_, value in rows:
        reason = json.loads(value).get("reason", "") if resource == "events" else ""
        out[" ".join(x for x in (resource, type_, reason) if x)] += 1
    return dict(sorted(out.items()))


def one_round(c: E2ECluster, ref: str, n: int, pids: dict[str, int], db: Path, show_pods: bool) -> None:
    name = f"trace{n}-{uuid.uuid4().hex[:4]}"
    sel = f"app={name}"
    wc = c.srv.client()
    try:
        rv = wc.list("pods", NAMESPACE, label_selector=sel)["metadata"]["resourceVersion"]
        cpu0 = {k: proc_cpu_ms(p) for k, p in pids.items()}
        cg0 = (cgroup_cpu_ms(c.cgroup_parent), cgroup_cpu_ms(f"{c.cgroup_parent}/shoal-monitors"))
        busy0 = machine_busy_ms()
        t0 = time.monotonic()
        c.client.create("deployments", deployment_manifest(name, ref, n), NAMESPACE)
        pods: dict[str, dict[str, float]] = {}
        ready = set()
        for ev in wc.watch("pods", NAMESPACE, resource_version=rv, label_selector=sel, timeout_seconds=120):
            t = round((time.monotonic() - t0) * 1000, 1)
            p = ev["object"]
            d = pods.setdefault(p["metadata"]["name"], {})
            d.setdefault("created", t)
            if p["spec"].get("nodeName"):
                d.setdefault("bound", t)
            cs = (p.get("status") or {}).get("containerStatuses") or []
            if cs and "running" in (cs[0].get("state") or {}):
                d.setdefault("running", t)
            if is_ready(p):
                d.setdefault("ready", t)
                ready.add(p["metadata"]["name"])
            if len(ready) == n:
                break
        all_ready = round((time.monotonic() - t0) * 1000, 1)
        cpu = {k: round(proc_cpu_ms(p) - cpu0[k]) for k, p in pids.items()}
        cg = (cgroup_cpu_ms(c.cgroup_parent) - cg0[0], cgroup_cpu_ms(f"{c.cgroup_parent}/shoal-monitors") - cg0[1])
        first = {k: min(d.get(k, float("inf")) for d in pods.values()) for k in ("created", "bound", "ready")}
        emit(round_of=n, all_ready_ms=all_ready, first_ms=first, cpu_ms=cpu,
             containers_and_monitors_cpu_ms=round(cg[0]), monitors_cpu_ms=round(cg[1]),
             machine_busy_ms=round(machine_busy_ms() - busy0), writes=writes_since(db, int(rv)))
        if show_pods:
            for pod_name, d in sorted(pods.items(), key=lambda kv: kv[1].get("created", 0)):
                emit(pod=pod_name, **d)
        c.client.delete("deployments", name, NAMESPACE, propagation_policy="Background")
        wait_for(lambda: not c.pods_with(sel), timeout=120, interval=0.05, what=f"pods of {name} gone")
    finally:
        wc.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10, help="replicas per round (10)")
    ap.add_argument("--parallel", type=int, default=8, help="the agent's --sync-threads (8)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pods", action="store_true", help="also one line per pod: created/bound/running/ready ms")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds to wait before each round (attach a profiler)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/pod_start_trace.py runs containers: run it as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="shoal-trace-"))
    c = E2ECluster(work / "cluster", backoff_initial=10.0, backoff_max=300.0, server_process=True)
    try:
        c.start()
        ref = c.refs["web:v1"]
        c.stop_agent()
        c.sync_threads = args.parallel
        c.start_agent()
        wait_for(c._node_ready, timeout=60, what="the agent's node Ready", detail=c.agent_tail)
        warm_image(c, ref)
        pids = {"apiserver": c.srv.proc.pid, "agent": c.agent.pid}
        kids = children(c.srv.proc.pid)
        if kids:
            pids["controllers"] = kids[0]
        db = next(p for p in (work / "cluster").rglob("state.db"))
        emit(pids=pids, n=args.n, parallel=args.parallel)
        for _ in range(args.rounds):
            settle()                 # the previous round's held events and clean-up are not this one's
            if args.pause:
                time.sleep(args.pause)
            one_round(c, ref, args.n, pids, db, args.pods)
    finally:
        c.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
