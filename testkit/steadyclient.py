"""A steady HTTP client for rollout tests and benchmarks: a fixed request rate at one or more
targets, a new TCP connection for every request (so each one goes through the Service rules
afresh — a kept-alive connection would stay on the pod it first reached), and a record of
every request: when it started, where it went, and what came back.

Run it where the targets are reachable (a lab host's or the lab's outside namespace):

    python -m shoal.testkit.steadyclient --target 10.43.0.10:80 --target 10.99.0.11:30080 \\
        --rate 120 --stop-file /tmp/x/stop --max 20000 --out /tmp/x/records.json

Each target gets `--rate` requests a second, spread over `--threads` threads (or, with
`--targets-file`, one pool goes round-robin over the addresses the file lists at the moment —
a client that discovers its servers, as one without a Service must), each request
`GET /` with `Connection: close` and a `--timeout` (seconds) for connect and read; it runs
until the stop file appears or `--max` requests were sent, then writes
`{"targets": [...], "records": [[t, target index, ok, answer or error, local port], ...]}` (t:
wall-clock start time, so other processes on the machine can compare; answer: the body,
stripped).
Only the standard library: it runs in any namespace with a Python.

`load(path)` reads that file back; `summarize(records, after=...)` (pure) counts requests,
failures (with their times and errors), the answers, and the answers of requests started
after a given time.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence


class _Conn(http.client.HTTPConnection):
    """An HTTP connection whose socket is made here, so that its local port is known even
    when the connect fails (a failure's port tells whether a stale conntrack entry caught it)."""

    local_port = 0

    def connect(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect((self.host, self.port))      # the kernel picks the port, as for any client
        except BaseException:
            self._note_port(s)
            s.close()
            raise
        self._note_port(s)
        self.sock = s

    def _note_port(self, s: socket.socket) -> None:
        try:
            self.local_port = s.getsockname()[1]
        except OSError:
            pass


def _one(host: str, port: int, timeout: float) -> tuple[bool, str, int]:
    conn = _Conn(host, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        r = conn.getresponse()
        body = r.read().decode(errors="replace").strip()
        if r.status != 200:
            return False, f"HTTP {r.status}: {body[:80]}", conn.local_port
        return True, body, conn.local_port
    except Exception as e:          # every failure is a record, not a crash
        return False, f"{type(e).__name__}: {e}"[:160], conn.local_port
    finally:
        conn.close()


def run(targets: Sequence[tuple[str, int]], *, rate: float, threads: int, timeout: float, stop_file: str,
        max_requests: int, targets_file: str | None = None) -> tuple[list[str], list[list]]:
    """Returns (targets as "host:port", records). With `targets_file`, `targets` is ignored: one
    pool of `threads` sends `rate` requests a second round-robin over the addresses the file
    lists now (re-read every 50 ms); a request when it lists none is a failure ("no target")."""
    records: list[list] = []
    lock = threading.Lock()
    sent = [0]
    stop = threading.Event()
    names: list[str] = []
    index: dict[str, int] = {}
    current: list[tuple[str, int]] = []
    turn = [0]

    def ti_of(t: tuple[str, int]) -> int:
        name = f"{t[0]}:{t[1]}"
        if name not in index:
            index[name] = len(names)
            names.append(name)
        return index[name]

    def pick_fixed(i: int):
        return lambda: targets[i]

    def pick_next():
        with lock:
            if not current:
                return None
            turn[0] += 1
            return current[turn[0] % len(current)]

    def worker(pick, lane_rate: float, phase: float) -> None:
        interval = threads / lane_rate
        nxt = time.monotonic() + phase
        while not stop.is_set():
            now = time.monotonic()
            if nxt > now:
                time.sleep(nxt - now)
            nxt = max(nxt + interval, time.monotonic() - interval)   # a slow request does not cause a burst
            with lock:
                if sent[0] >= max_requests:
                    stop.set()
                    return
                sent[0] += 1
            t = time.time()
            target = pick()
            if target is None:
                with lock:
                    records.append([round(t, 4), -1, False, "no target", 0])
                continue
            ok, what, lport = _one(target[0], target[1], timeout)
            with lock:
                records.append([round(t, 4), ti_of(target), ok, what, lport])

    def reread() -> None:
        assert targets_file is not None
        try:
            with open(targets_file) as f:
                new = [_parse(line) for line in f.read().split() if line.strip()]
        except OSError:
            return
        with lock:
            current[:] = new

    if targets_file is not None:
        reread()
        ts = [threading.Thread(target=worker, args=(pick_next, rate, k / rate), daemon=True) for k in range(threads)]
    else:
        for t in targets:
            ti_of(t)
        ts = [threading.Thread(target=worker, args=(pick_fixed(i), rate, k / rate), daemon=True)
              for i in range(len(targets)) for k in range(threads)]
    for t in ts:
        t.start()
    while not stop.is_set():
        if os.path.exists(stop_file):
            stop.set()
            break
        if targets_file is not None:
            reread()
        stop.wait(0.05)
    for t in ts:
        t.join(timeout + 1)
    with lock:
        return list(names), sorted(records)


def _parse(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host, int(port)


def load(path: str) -> tuple[list[str], list[list]]:
    with open(path) as f:
        d = json.load(f)
    return d["targets"], d["records"]


@dataclass
class Summary:
    requests: int
    failed: int
    first: float | None
    last: float | None
    failures: list[list] = field(default_factory=list)            # [t, target, False, error, port]
    answers: Counter = field(default_factory=Counter)
    answers_after: Counter = field(default_factory=Counter)      # of requests started after `after`

    @property
    def rate(self) -> float:
        """Requests a second over the run."""
        if not self.requests or self.first is None or self.last is None or self.last <= self.first:
            return 0.0
        return self.requests / (self.last - self.first)


def summarize(records: Iterable[Sequence], *, after: float | None = None) -> Summary:
    recs = list(records)
    fails = [list(r) for r in recs if not r[2]]
    s = Summary(requests=len(recs), failed=len(fails), first=recs[0][0] if recs else None,
                last=recs[-1][0] if recs else None, failures=fails)
    for t, _ti, ok, what, *_ in recs:
        if ok:
            s.answers[what] += 1
            if after is not None and t > after:
                s.answers_after[what] += 1
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", action="append", default=[], metavar="HOST:PORT")
    ap.add_argument("--targets-file", help="a file of HOST:PORT words, re-read every 50 ms: round-robin over them")
    ap.add_argument("--rate", type=float, default=100.0, help="requests a second per target (%(default)s)")
    ap.add_argument("--threads", type=int, default=4, help="threads per target (%(default)s)")
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--max", type=int, default=100_000, dest="max_requests")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if not a.target and not a.targets_file:
        ap.error("give --target at least once, or --targets-file")
    names, recs = run([_parse(t) for t in a.target], rate=a.rate, threads=a.threads, timeout=a.timeout,
                      stop_file=a.stop_file, max_requests=a.max_requests, targets_file=a.targets_file)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"targets": names, "records": recs}, f)
    os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
