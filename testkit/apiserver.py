"""A real API server for tests: uvicorn in a thread, loopback, temp SQLite file.

    with start_test_server(tmp_path) as srv:
        c = srv.client()
        c.create("namespaces", {...})

`start_test_server(tmp_path, controllers=False, **settings)`; the handle has
`url`, `admin_token`, `join_token`, `kubeconfig` (a file for the admin),
`client()`, `store`, `app`, `stop()`. It serves plain HTTP on loopback unless given
`tls=True`: the explicit opt-in `shoal server --insecure-http` also is, kept for the
speed of the many tests that are not about transport (a TLS handshake per connection).
`ServerSubprocess` runs `shoal server` as its own process, as users run it: HTTPS with
the cluster CA by default (benchmarks, e2e); `wait_for` is the one polling helper the
test fixtures build on.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from shoal.machinery.client.rest import Client
from shoal.apiserver.server import ServerProcess
from shoal.apiserver.settings import Settings


def wait_for(pred: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = "condition",
             detail: Callable[[], str] | None = None, tolerate: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll `pred()` until it returns a truthy value, which is returned. After `timeout`
    seconds, AssertionError naming `what`, the last value seen and `detail()`. Exceptions of
    the `tolerate` types count as a value and polling goes on. Deadlines only bound a hang:
    nothing here measures speed."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = pred()
        except tolerate as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last value: {last!r}"
                                 + (f"\n{detail()}" if detail else ""))
        time.sleep(interval)


def start_test_server(tmp_path: Path, *, controllers: bool = False, controller_options: Any = None,
                      **settings: Any) -> ServerProcess:
    data = Path(tmp_path) / "server"
    kw: dict[str, Any] = dict(data_dir=data, listen_host="127.0.0.1", listen_port=0, watch_poll_interval=0.2,
                              bookmark_interval=1.0, tls=False)
    kw.update(settings)
    s = Settings(**kw)
    srv = ServerProcess(s, kubeconfig_paths=[data / "admin.kubeconfig"])
    srv.kubeconfig = data / "admin.kubeconfig"
    factory = None
    if controllers:
        from shoal.controller.manager import run_controllers

        def factory(srv: ServerProcess):
            return run_controllers(srv.client(user_agent="shoal-controller"),
                                   **({"options": controller_options} if controller_options else {}))
    srv.start(controllers=factory)
    return srv


class ServerSubprocess:
    """`shoal server` (`python -m shoal.cli server`) as its own process, as users run it: its own
    GIL, and by default its controllers in a `shoal controller` child, on 127.0.0.1 with HTTPS
    and the CA it generates (the server's default); `args` are more `shoal server` flags
    (`--insecure-http` for plain HTTP). For benchmarks and e2e tests, whose measuring threads
    must not share the server's interpreter. Same handle as the thread server where it
    matters: `url` (from the kubeconfig it wrote), `admin_token`, `join_token`, `kubeconfig`,
    `client()` (trusting the CA), `stop()`; and `proc`, `log`, `ca_file` (None over HTTP)."""

    def __init__(self, data_dir: Path, args: list[str] | None = None, *, timeout: float = 60.0):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.kubeconfig = self.data_dir / "bench.kubeconfig"
        self.log = self.data_dir / "server.log"
        repo = Path(__file__).resolve().parents[1]
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shoal.cli", "server", "--data-dir", str(self.data_dir),
                 "--listen", f"127.0.0.1:{port}", "--write-kubeconfig", str(self.kubeconfig), *(args or [])],
                cwd=repo, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
        self.url = ""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API server exited with {self.proc.returncode}; see {self.log}")
            if self.kubeconfig.exists():
                try:
                    c = Client.from_kubeconfig(self.kubeconfig)
                    c.get("namespaces", "default")
                    self.url = c.server
                    c.close()
                    break
                except Exception:  # noqa: BLE001, S110 — not up yet
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the API server did not answer within {timeout:g} s; see {self.log}")
            time.sleep(0.05)
        self.admin_token = (self.data_dir / "admin-token").read_text().strip()
        self.join_token = (self.data_dir / "join-token").read_text().strip()
        ca = self.data_dir / "tls" / "ca.crt"
        self.ca_file: str | None = str(ca) if self.url.startswith("https://") else None

    def client(self, token: str | None = None, **kw):
        return Client(self.url, token or self.admin_token, ca_file=self.ca_file, **kw)

    def stop(self) -> None:
        """SIGTERM (the server stops its controller child), SIGKILL of the group after 15 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
