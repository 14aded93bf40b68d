"""The agent's log endpoint, which the API server proxies `pods/{name}/log` to.

Contract (the API server side is `apiserver.logproxy`):

    GET http://<node InternalIP>:<status.daemonEndpoints.kubeletEndpoint.Port>
        /containerLogs/{namespace}/{pod}/{container}?follow=true&tailLines=N&previous=true
    Authorization: Bearer <the API server's token, handed to agents at join>

    200 text/plain   the log lines (without the runtime's timestamp/stream prefix),
                     streamed until EOF, or — with follow — until the container
                     stops, a newer attempt starts, or the caller hangs up
    400              bad query (tailLines not an integer, previous without a previous attempt)
    401              missing or wrong token
    404              no such pod on this node, no such container, no log yet
    GET /healthz     200 "ok", no token

Log files are `<data-dir>/pods/<uid>/logs/<container>/<attempt>.log`, in the
CRI/k8s-file format conmon writes (`<RFC3339Nano> stdout|stderr F|P <text>`);
lines without that prefix are passed through as they are.
"""
from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

_CRI = re.compile(rb"^(\S+) (stdout|stderr) ([FP]) ?(.*)$", re.S)


def decode_line(raw: bytes) -> bytes:
    """One k8s-file line → the bytes the container wrote (a full line keeps its newline)."""
    m = _CRI.match(raw.rstrip(b"\n"))
    if not m:
        return raw if raw.endswith(b"\n") else raw + b"\n"
    text = m.group(4)
    return text + b"\n" if m.group(3) == b"F" else text


def read_log(path: Path, *, tail_lines: int | None = None, follow: bool = False,
             still_writing: Callable[[], bool] = lambda: False, poll: float = 0.2) -> Iterator[bytes]:
    """Yield decoded chunks of a log file; with `follow`, keep yielding new lines
    while `still_writing()` is true."""
    with open(path, "rb") as f:
        lines = f.readlines()
        if tail_lines is not None:
            lines = lines[-tail_lines:] if tail_lines > 0 else []
        for ln in lines:
            yield decode_line(ln)
        if not follow:
            return
        buf = b""
        while True:
            chunk = f.readline()
            if chunk:
                buf += chunk
                if buf.endswith(b"\n"):
                    yield decode_line(buf)
                    buf = b""
                continue
            if not still_writing():
                rest = f.read()
                if buf + rest:
                    for ln in (buf + rest).splitlines(keepends=True):
                        yield decode_line(ln)
                return
            time.sleep(poll)


try:    # the runtime's reader also follows conmon's size rotation (<log>.1)
    from shoal.agent.runtime.logs import read_log as _runtime_read_log
except ImportError:     # pragma: no cover - the runtime package is optional for hollow agents
    _runtime_read_log = None


class LogNotFound(Exception):
    pass


class LogRequestInvalid(Exception):
    pass


class LogServer:
    """`resolve(namespace, pod, container, previous) -> (path, still_writing)` is the agent's lookup."""

    def __init__(self, *, host: str, port: int, token: str | None,
                 resolve: Callable[[str, str, str, bool], tuple[Path, Callable[[], bool]]]):
        self.token = token
        self.resolve = resolve
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "shoal-agent"

            def log_message(self, fmt, *args):
                log.debug("log endpoint: " + fmt, *args)

            def _plain(self, code: int, text: str) -> None:
                body = (text.rstrip("\n") + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                u = urlsplit(self.path)
                if u.path == "/healthz":
                    return self._plain(200, "ok")
                auth = self.headers.get("Authorization") or ""
                presented = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
                if not server.token or not hmac.compare_digest(presented.encode(), server.token.encode()):
                    return self._plain(401, "Unauthorized: the log endpoint needs the API server's token")
                parts = [unquote(p) for p in u.path.split("/") if p]
                if len(parts) != 4 or parts[0] != "containerLogs":
                    return self._plain(404, f"no such path {u.path}: use /containerLogs/NAMESPACE/POD/CONTAINER")
                _, ns, pod, container = parts
                q = {k: v[-1] for k, v in parse_qs(u.query).items()}
                truthy = lambda k: (q.get(k) or "").lower() in ("true", "1")
                tail = None
                if q.get("tailLines") not in (None, ""):
                    try:
                        tail = int(q["tailLines"])
                    except ValueError:
                        return self._plain(400, f"tailLines must be an integer, got {q['tailLines']!r}")
                try:
                    path, writing = server.resolve(ns, pod, container, truthy("previous"))
                except LogNotFound as e:
                    return self._plain(404, str(e))
                except LogRequestInvalid as e:
                    return self._plain(400, str(e))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    reader = _runtime_read_log or read_log
                    for chunk in reader(str(path), tail_lines=tail, follow=truthy("follow"), still_writing=writing):
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                except FileNotFoundError:
                    pass      # rotated/removed under us: end the stream

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="shoal-logs", daemon=True)

    def start(self) -> "LogServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
