"""Durability: kill -9 the server during a burst of writes; every acknowledged write survives."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from shoal.machinery.client.rest import Client
from shoal.machinery.api import errors

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "shoal.cli", "server", "--data-dir", str(data), "--listen",
                             f"127.0.0.1:{port}", "--no-controller", "--write-kubeconfig", str(data / "kc")],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            # HTTPS with the server's CA: what the kubeconfig it wrote carries
            if (data / "kc").exists():
                probe = Client.from_kubeconfig(data / "kc", timeout=1)
                try:
                    if probe.request("GET", "/healthz", raw=True) == "ok":
                        return proc
                finally:
                    probe.close()
        except (errors.ApiError, OSError, ValueError):
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.fixture
def server_proc(tmp_path):
    procs = []

    def start():
        p = start_server(tmp_path / "data", port)
        procs.append(p)
        return p

    port = free_port()
    yield start, port, tmp_path / "data"
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def test_kill_9_mid_burst_loses_no_acknowledged_write(server_proc):
    start, port, data = server_proc
    proc = start()
    token = (data / "admin-token").read_text().strip()
    acked: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(t):
        c = Client.from_kubeconfig(data / "kc", timeout=5)
        i = 0
        while not stop.is_set():
            name = f"p-{t}-{i}"
            try:
                out = c.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}})
                with lock:
                    acked[name] = int(out["metadata"]["resourceVersion"])
            except (errors.ApiError, httpx.HTTPError):
                return
            i += 1

    ts = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    [t.start() for t in ts]
    while len(acked) < 150:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    stop.set()
    [t.join(timeout=10) for t in ts]
    assert len(acked) >= 150

    start()
    c = Client.from_kubeconfig(data / "kc")
    assert c.server == f"https://127.0.0.1:{port}" and c.token == token
    items = c.list("pods")["items"]
    stored = {p["metadata"]["name"]: int(p["metadata"]["resourceVersion"]) for p in items}
    missing = sorted(set(acked) - set(stored))
    assert not missing, f"acknowledged writes lost: {missing[:10]}"
    for name, rv in acked.items():
        assert stored[name] == rv
    revs = list(stored.values())
    assert len(set(revs)) == len(revs), "duplicate revisions"
    # The sequence continues past everything written before the crash.
    after = c.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after"},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}})
    assert int(after["metadata"]["resourceVersion"]) > max(revs)


def test_sigterm_stops_cleanly_and_state_survives_restart(server_proc):
    start, port, data = server_proc
    proc = start()
    c = Client.from_kubeconfig(data / "kc")
    c.create("ns", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "keep"}})
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    start()
    assert c.get("ns", "keep")["metadata"]["name"] == "keep"
    # Tokens persist: the same admin token still works; the join token file is private.
    assert oct((data / "join-token").stat().st_mode & 0o777) == "0o600"
