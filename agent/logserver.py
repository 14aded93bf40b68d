"""The agent's log endpoint, which the API server proxies `pods/{name}/log` to — over mutual TLS.

Contract (the API server side is `apiserver.logproxy` through `apiserver.nodeclient`):

    GET https://<the address the API server recorded at this node's join>
              :<status.daemonEndpoints.kubeletEndpoint.Port>
        /containerLogs/{namespace}/{pod}/{container}?follow=true&tailLines=N&previous=true

    TLS: the agent's serving certificate (`ServingTLS`: CN system:node:<node>, signed by the
    cluster CA at join, `agent.join`); the client must present a certificate chaining to the
    cluster CA with CN `shoal-apiserver` and extended key usage clientAuth — the API server's.
    Without one the handshake fails; with another (a node's serving certificate, another
    client) the answer is 403. No bearer token: there is no shared secret to leak.

    200 text/plain   the log lines (without the runtime's timestamp/stream prefix),
                     streamed until EOF, or — with follow — until the container
                     stops, a newer attempt starts, or the caller hangs up
    400              bad query (tailLines not an integer, previous without a previous attempt)
    403              a client certificate that is not the API server's
    404              no such pod on this node, no such container, no log yet
    GET /healthz     200 "ok" (to the API server's certificate too)

The TLS handshake runs in the request's own thread (`do_handshake_on_connect=False`), so a
client that stalls it holds one thread for at most `HANDSHAKE_TIMEOUT`, never the accept loop.

Log files are `<data-dir>/pods/<uid>/logs/<container>/<attempt>.log`, in the
CRI/k8s-file format conmon writes (`<RFC3339Nano> stdout|stderr F|P <text>`);
lines without that prefix are passed through as they are.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

# The API server's client certificate (apiserver.tls spells the same name).
APISERVER_CLIENT_CN = "shoal-apiserver"
HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class ServingTLS:
    """The agent's serving certificate, its key (0600, made on this node and never sent),
    the cluster CA that signed it and the API server's client certificate, and the address the
    API server verified at the join (the certificate's IP SAN), where it will connect."""
    cert_file: str
    key_file: str
    ca_file: str
    address: str

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED       # no client certificate: no handshake
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def listen_host(self, fallback: str) -> str:
        """Where the endpoint listens: the verified address when it is one of this host's (the
        API server connects nowhere else), else `fallback` (the node's --address) with a
        warning — the API server sees this node at an address it does not have (NAT), and its
        logs cannot be read until the agent joins from one it does."""
        try:
            fam = socket.AF_INET6 if ipaddress.ip_address(self.address).version == 6 else socket.AF_INET
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.bind((self.address, 0))
            return self.address
        except (OSError, ValueError) as e:
            log.warning("the API server recorded this node at %s, which is not an address of this host (%s): "
                        "the log endpoint listens on %s instead, where the API server does not connect; join "
                        "from an address of this host to make logs reachable", self.address, e, fallback)
            return fallback


def client_cert_problem(der: bytes | None) -> str | None:
    """Why a verified client certificate (DER) is not the API server's, or None (pure)."""
    if not der:
        return "no client certificate"
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return "an unreadable client certificate"
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [APISERVER_CLIENT_CN]:
        return f"the client certificate names {', '.join(str(c) for c in cns) or 'nobody'}, not {APISERVER_CLIENT_CN}"
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "the client certificate has no extended key usage (clientAuth expected)"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        return "the client certificate is not for client authentication"
    return None

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


class _TLSServer(ThreadingHTTPServer):
    """A threading HTTP server whose connections are TLS, the handshake left to the request
    thread (module docstring)."""
    daemon_threads = True

    def __init__(self, addr, handler, context: ssl.SSLContext):
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.context = context
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        # a failed handshake (no or a foreign client certificate, a port scan) is not the
        # agent's error: one debug line instead of http.server's traceback on stderr
        log.debug("log endpoint: connection from %s failed", client_address, exc_info=True)


class LogServer:
    """`resolve(namespace, pod, container, previous) -> (path, still_writing)` is the agent's lookup;
    `tls` the serving certificate and the CA client certificates must chain to."""

    def __init__(self, *, host: str, port: int, tls: ServingTLS,
                 resolve: Callable[[str, str, str, bool], tuple[Path, Callable[[], bool]]]):
        self.tls = tls
        self.resolve = resolve
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "shoal-agent"

            def setup(self):
                self.request.settimeout(HANDSHAKE_TIMEOUT)
                self.request.do_handshake()
                self.request.settimeout(None)
                super().setup()

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
                problem = client_cert_problem(self.request.getpeercert(binary_form=True))
                if problem:
                    return self._plain(403, f"Forbidden: the log endpoint answers the API server only: {problem}")
                if u.path == "/healthz":
                    return self._plain(200, "ok")
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

        self._httpd = _TLSServer((host, port), Handler, tls.context())
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="shoal-logs", daemon=True)

    def start(self) -> "LogServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
