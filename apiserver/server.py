"""Running the API server: `shoal server` and the in-thread server tests use.

`ServerProcess` wires settings → store → app → uvicorn, bootstraps tokens and
the kubeconfig, runs the controllers through the factory it is given (k3s style: in
this process or as a child), and stops cleanly on SIGTERM/SIGINT.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import uvicorn

from shoal.apiserver.app import create_app
from shoal.machinery.client.rest import Client, write_kubeconfig
from shoal.apiserver.settings import Settings
from shoal.apiserver.store import Store

log = logging.getLogger(__name__)


def bind_socket(host: str, port: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as e:
        s.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror} (is another shoal server running?)") from None
    s.listen(2048)
    s.set_inheritable(True)
    return s


class Stoppable(Protocol):
    """What a controller factory returns: something the server stops when it stops."""

    def stop(self) -> None: ...


# The controllers are embedded through a factory the composition root (`shoal.cli`) passes
# in: the API server never imports them. Called once the server answers and the kubeconfigs
# are written, with the running server (its `client()`, `url`, `kubeconfig_paths`).
ControllerFactory = Callable[["ServerProcess"], Stoppable]


class ServerProcess:
    """One API server. `start()` returns once it answers; `stop()` shuts it down."""

    def __init__(self, settings: Settings, *, kubeconfig_paths: list[Path] | None = None):
        self.settings = settings
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)
        self.store = Store(settings.datastore_url(), sqlite_synchronous=settings.sqlite_synchronous)
        self.app = create_app(settings, self.store)
        self.sock = bind_socket(settings.listen_host, settings.listen_port)
        self.port = self.sock.getsockname()[1]
        self.tls_files: dict[str, str] | None = None
        if settings.tls:
            from shoal.apiserver.tls import ensure_server_certs
            self.tls_files = ensure_server_certs(Path(settings.data_dir) / "tls", settings.listen_host,
                                                 settings.tls_sans)
        scheme = "https" if self.tls_files else "http"
        host = settings.listen_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"      # an IPv6 literal in a URL
        self.url = f"{scheme}://{host}:{self.port}"
        cfg_kw: dict[str, Any] = {}
        if self.tls_files:
            cfg_kw = {"ssl_certfile": self.tls_files["cert"], "ssl_keyfile": self.tls_files["key"]}
        # proxy_headers=False: a request's peer is its socket's, whatever X-Forwarded-For says
        # (uvicorn trusts it from 127.0.0.1 by default) — a node's join records that address as
        # the only one the API server connects to for it (apiserver.nodecerts)
        self._uv = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on", access_log=False,
                                                 timeout_graceful_shutdown=2, proxy_headers=False, **cfg_kw))
        self._thread: threading.Thread | None = None
        self.kubeconfig_paths = kubeconfig_paths or []
        self.controllers: Stoppable | None = None

    @property
    def registry(self):
        return self.app.state.registry

    @property
    def admin_token(self) -> str:
        return self.registry.tokens["admin"]

    @property
    def join_token(self) -> str:
        return self.registry.tokens["join"]

    def ca_data_b64(self) -> str | None:
        if not self.tls_files:
            return None
        import base64
        return base64.b64encode(Path(self.tls_files["ca"]).read_bytes()).decode()

    def client(self, token: str | None = None, **kw) -> Client:
        return Client(self.url, token or self.admin_token, ca_file=(self.tls_files or {}).get("ca"), **kw)

    def start(self, *, controllers: ControllerFactory | None = None) -> "ServerProcess":
        """Serve, then run `controllers(self)` when given: threads of this process (what tests
        use) or a `shoal controller` child (what `shoal server` and `shoal up` use: the
        controllers then get a core of their own instead of sharing this process's GIL)."""
        self._thread = threading.Thread(target=self._uv.run, kwargs={"sockets": [self.sock]},
                                        name="apiserver", daemon=True)
        self._thread.start()
        deadline = time.time() + 30
        while not self._uv.started:
            if not self._thread.is_alive():
                raise RuntimeError("the API server failed to start (see the log above)")
            if time.time() > deadline:
                raise RuntimeError("the API server did not start within 30 s")
            time.sleep(0.02)
        for p in self.kubeconfig_paths:
            write_kubeconfig(p, server=self.url, token=self.admin_token, ca_data_b64=self.ca_data_b64())
        if controllers is not None:
            self.controllers = controllers(self)
        return self

    def stop(self) -> None:
        if self.controllers is not None:
            try:
                self.controllers.stop()
            except Exception:
                log.exception("stopping controllers failed")
            self.controllers = None
        self._uv.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.store.close()
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def wait_for_signal(self) -> None:
        """Block until SIGTERM/SIGINT, then stop."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set() and self._thread and self._thread.is_alive():
            stop.wait(0.5)
        self.stop()
