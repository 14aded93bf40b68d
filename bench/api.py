"""API server benchmark: write latency at a fixed rate, watch delivery latency, peak writes/s.

Starts `python -m shoal.cli server` on loopback with a temp SQLite file (no controllers), serving
HTTPS with its generated CA as users run it (`--insecure-http` measures plain HTTP instead; every
line names its `transport`), and talks to it through the kubeconfig it writes. Then:
  1. paced writes at --rate writes/s from --concurrency threads for --seconds,
     with a watcher measuring when each write's event arrives;
  2. unpaced writes for --seconds to find the peak rate.
Prints one JSON line per figure.  Usage: python bench/api.py [--rate 200] [--concurrency 8]
[--sqlite-synchronous full,normal]: with several values the whole run is repeated once per value,
each on a fresh server and database (every line then names its `synchronous`), to compare them
side by side in one session. The temp directory is under --tmp (default: the system's); keep it
on a real disk, since fsync on tmpfs costs nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shoal.machinery.client.rest import Client  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


TAGS: dict = {}      # added to every line (the synchronous mode of the current run)


def emit(**kw) -> None:
    print(json.dumps({**kw, **TAGS}), flush=True)


def start_server(data: Path, synchronous: str = "full", *,
                 insecure_http: bool = False) -> tuple[subprocess.Popen, Path]:
    """The server process and the kubeconfig it wrote (server URL, CA, admin token)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "shoal.cli", "server", "--data-dir", str(data), "--listen",
                             f"127.0.0.1:{port}", "--no-controller", "--write-kubeconfig", str(data / "kc"),
                             "--sqlite-synchronous", synchronous, *(["--insecure-http"] if insecure_http else [])],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(300):
        if (data / "kc").exists():
            try:
                Client.from_kubeconfig(data / "kc").get("ns", "default")
                return proc, data / "kc"
            except Exception:
                pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "api"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}


def paced(kc: Path, rate: float, conc: int, seconds: float) -> None:
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    recv: dict[str, float] = {}
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    c0 = Client.from_kubeconfig(kc)
    rv = c0.list("pods")["metadata"]["resourceVersion"]
    stop = threading.Event()

    def watcher():
        wc = Client.from_kubeconfig(kc)
        for ev in wc.watch("pods", resource_version=rv, timeout_seconds=seconds + 15):
            recv[ev["object"]["metadata"]["name"]] = time.perf_counter()
            if stop.is_set() and len(recv) >= len(acked):
                break

    wt = threading.Thread(target=watcher, daemon=True)
    wt.start()
    time.sleep(0.3)
    total = int(rate * seconds)
    t0 = time.perf_counter()

    def writer(k: int):
        c = Client.from_kubeconfig(kc)
        for i in range(k, total, conc):
            due = t0 + i / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            name = f"paced-{i}"
            s = time.perf_counter()
            with lock:
                sent[name] = s
            try:
                c.create("pods", pod(name))
            except Exception:
                errors[0] += 1
                continue
            e = time.perf_counter()
            with lock:
                acked[name] = e
                lat.append(e - s)

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(conc)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    elapsed = time.perf_counter() - t0
    stop.set()
    deadline = time.time() + 10
    while len(recv) < len(acked) and time.time() < deadline:
        time.sleep(0.05)
    wl = [recv[n] - sent[n] for n in acked if n in recv]
    emit(bench="api", figure="write_latency", rate_target=rate, rate_achieved=round(len(acked) / elapsed, 1),
         concurrency=conc, writes=len(acked), errors=errors[0], p50_ms=round(pct(lat, 50) * 1000, 2),
         p99_ms=round(pct(lat, 99) * 1000, 2), goal_p99_ms=50)
    emit(bench="api", figure="watch_delivery_latency", events=len(wl), missing=len(acked) - len(wl),
         p50_ms=round(pct(wl, 50) * 1000, 2), p99_ms=round(pct(wl, 99) * 1000, 2), goal_p99_ms=50,
         note="from sending the write to receiving its watch event")


def peak(kc: Path, conc: int, seconds: float) -> None:
    count = [0]
    lat: list[float] = []
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def writer(k: int):
        c = Client.from_kubeconfig(kc)
        i = 0
        while time.perf_counter() < end:
            s = time.perf_counter()
            c.create("pods", pod(f"peak-{k}-{i}"))
            with lock:
                count[0] += 1
                lat.append(time.perf_counter() - s)
            i += 1

    t0 = time.perf_counter()
    ts = [threading.Thread(target=writer, args=(k,)) for k in range(conc)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    el = time.perf_counter() - t0
    emit(bench="api", figure="peak_writes_per_second", concurrency=conc, writes=count[0],
         writes_per_s=round(count[0] / el, 1), p50_ms=round(pct(lat, 50) * 1000, 2),
         p99_ms=round(pct(lat, 99) * 1000, 2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--sqlite-synchronous", default="full",
                    help="comma-separated PRAGMA synchronous modes to run one after the other (full)")
    ap.add_argument("--tmp", default=None, help="where the temp data directory goes (default: the system's)")
    ap.add_argument("--insecure-http", action="store_true",
                    help="measure the server started with --insecure-http (plain HTTP) instead of HTTPS")
    args = ap.parse_args()
    TAGS["transport"] = "http" if args.insecure_http else "https"
    modes = [m.strip() for m in args.sqlite_synchronous.split(",") if m.strip()]
    for mode in modes:
        if len(modes) > 1:
            TAGS["synchronous"] = mode
        with tempfile.TemporaryDirectory(dir=args.tmp) as d:
            proc, kc = start_server(Path(d) / "data", mode, insecure_http=args.insecure_http)
            try:
                paced(kc, args.rate, args.concurrency, args.seconds)
                peak(kc, args.concurrency, min(args.seconds, 5))
                rss = int(open(f"/proc/{proc.pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024
                emit(bench="api", figure="server_rss_mb", value=rss)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)


if __name__ == "__main__":
    main()
