"""The API server's one way to a node's agent: mutual TLS to the verified registration.

Everything the API server asks of an agent — container logs today (`apiserver.logproxy`),
exec, attach and port-forward streams later — goes through `connect(store, data_dir, node)`:

- Where: the address recorded when the node joined or renewed its certificate
  (`store.node_endpoint(node)`, written by `apiserver.nodecerts`: the TCP peer of that
  request), and the port the agent publishes in its Node
  (`status.daemonEndpoints.kubeletEndpoint.Port`). The Node's `status.addresses`, which the
  node writes itself, are never used: a node that lies about its InternalIP cannot point the
  API server at another machine or at a local service. The port is the node's to choose, on
  its own verified address.
- How: TLS 1.2+ with the API server's client certificate (`apiserver.tls`,
  CN `shoal-apiserver`, which the agent requires), verifying the agent's certificate chains
  to the cluster CA and names the recorded address (the handshake's hostname check on the IP
  SAN); then, before a byte of request is sent, that it is the serving certificate of this
  node (`tls.node_cert_problem`: CN `system:node:<node>`, serverAuth, and the key the node
  registered). Anything else — plain HTTP, another CA, another node's agent, an earlier
  machine's certificate — is an error, never an answer.
- What comes back: a verified `anyio` TLS byte stream. `request(...)` speaks one HTTP/1.1
  request over it (h11) and returns a `NodeResponse` whose body streams; a WebSocket or SPDY
  upgrade for exec/port-forward will send its own request on the same stream.

Errors are API errors the caller passes on: 503 ServiceUnavailable when the node or its
registration is missing or the agent cannot be reached; 502 BadGateway when something
answered that is not that node's agent. Each names the node and the address.

`link_for(data_dir)` (blocking: run it off the event loop) holds the client side's
`SSLContext`, built once per data dir and rebuilt when the client certificate is renewed
(`tls.ensure_apiserver_client_cert`: a third of its lifetime left) or the files change.
"""
from __future__ import annotations

import datetime as dt
import os
import ssl
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import anyio
import h11
from anyio.abc import ByteStream
from anyio.streams.tls import TLSAttribute
from cryptography import x509

from shoal.machinery.api import errors
from shoal.apiserver import tls
from shoal.apiserver.store import Store

CONNECT_TIMEOUT = 10.0
USER_AGENT = "shoal-apiserver"


@dataclass(frozen=True)
class NodeTarget:
    """Where and whom `connect` talks to."""
    node: str
    address: str
    port: int
    key_sha256: str

    @property
    def where(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


class NodeLink:
    """The client side of the link: the CA and the API server's client certificate."""

    def __init__(self, files: dict[str, str], *, renew_at: float, stamp: tuple):
        self.files = files
        self.renew_at = renew_at        # epoch seconds from which the client certificate is due
        self.stamp = stamp              # the files' (inode, mtime) when read
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files["ca"])
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = True       # the recorded IP must be an IP SAN of the agent's certificate
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(files["cert"], files["key"])
        self.context = ctx


_links: dict[str, NodeLink] = {}
_links_lock = threading.Lock()


def _stamp(files: dict[str, str]) -> tuple:
    out: list[tuple[int, int] | None] = []
    for k in ("ca", "cert", "key"):
        try:
            st = os.stat(files[k])
            out.append((st.st_ino, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def link_for(data_dir: str | os.PathLike, *, clock: Callable[[], dt.datetime] = _utcnow) -> NodeLink:
    """The `NodeLink` of the server whose data dir is `data_dir` (module docstring). Blocking."""
    tls_dir = Path(data_dir) / "tls"
    key = str(tls_dir)
    with _links_lock:
        link = _links.get(key)
        if link is not None and clock().timestamp() < link.renew_at and _stamp(link.files) == link.stamp:
            return link
        files = tls.ensure_apiserver_client_cert(tls_dir, clock=clock)
        cert = x509.load_pem_x509_certificate(Path(files["cert"]).read_bytes())
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        link = NodeLink(files, renew_at=(cert.not_valid_after_utc - life / 3).timestamp(), stamp=_stamp(files))
        _links[key] = link
        return link


def target_for(store: Store, node_name: str) -> NodeTarget:
    """Where node `node_name`'s agent is: its recorded address and key, its published port."""
    node = store.get("nodes", None, node_name)
    if node is None:
        raise errors.ServiceUnavailable(f"node {node_name} is gone: its agent cannot be reached")
    rec = store.node_endpoint(node_name)
    if rec is None:
        raise errors.ServiceUnavailable(
            f"node {node_name} has no verified agent endpoint: its agent joined without a serving certificate "
            f"(an agent older than this server?); restart the agent to register one")
    port = ((node.get("status") or {}).get("daemonEndpoints") or {}).get("kubeletEndpoint", {}).get("Port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise errors.ServiceUnavailable(f"node {node_name} publishes no agent port "
                                        f"(status.daemonEndpoints.kubeletEndpoint.Port)")
    return NodeTarget(node=node_name, address=rec.address, port=port, key_sha256=rec.key_sha256)


def _not_the_agent(t: NodeTarget, why: str) -> errors.ApiError:
    return errors.ApiError(f"the endpoint {t.where} recorded for node {t.node} is not that node's agent: {why}",
                           code=502, reason="BadGateway")


async def connect_target(link: NodeLink, t: NodeTarget, *, timeout: float = CONNECT_TIMEOUT) -> ByteStream:
    """A TLS stream to `t`, verified as module docstring says; the caller closes it."""
    try:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(t.address, t.port, tls=True, ssl_context=link.context,
                                             tls_hostname=t.address, tls_standard_compatible=False)
    except ssl.SSLCertVerificationError as e:
        raise _not_the_agent(t, f"its certificate does not verify: {e.verify_message}") from None
    except ssl.SSLError as e:
        raise _not_the_agent(t, f"TLS handshake failed ({e.reason or e})") from None
    except TimeoutError:
        raise errors.ServiceUnavailable(f"cannot reach the agent of node {t.node} at {t.where}: "
                                        f"no TLS connection within {timeout:g} s") from None
    except (anyio.BrokenResourceError, anyio.EndOfStream):
        raise _not_the_agent(t, "it closed the connection during the TLS handshake") from None
    except OSError as e:
        raise errors.ServiceUnavailable(f"cannot reach the agent of node {t.node} at {t.where}: "
                                        f"{getattr(e, 'strerror', None) or e or type(e).__name__}") from None
    try:
        der = stream.extra(TLSAttribute.peer_certificate_binary)
        problem = tls.node_cert_problem(x509.load_der_x509_certificate(der), t.node, key_sha256=t.key_sha256) \
            if der else "it presented no certificate"
    except BaseException:
        await stream.aclose()
        raise
    if problem:
        await stream.aclose()
        raise _not_the_agent(t, problem)
    return stream


async def connect(store: Store, data_dir: str | os.PathLike, node_name: str, *,
                  timeout: float = CONNECT_TIMEOUT) -> tuple[ByteStream, NodeTarget]:
    """A verified TLS stream to node `node_name`'s agent, and where it goes (module docstring)."""
    t = await anyio.to_thread.run_sync(target_for, store, node_name)
    link = await anyio.to_thread.run_sync(link_for, data_dir)
    return await connect_target(link, t, timeout=timeout), t


class NodeResponse:
    """The head of an agent's answer; `aiter_bytes()` streams its body, `aclose()` ends it."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], conn: h11.Connection, stream: ByteStream,
                 t: NodeTarget, read_timeout: float | None):
        self.status_code, self.headers = status, headers
        self._conn, self._stream, self._target, self._read_timeout = conn, stream, t, read_timeout

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            ev = await _next_event(self._conn, self._stream, self._target, self._read_timeout)
            if isinstance(ev, h11.Data):
                yield bytes(ev.data)
            elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def aread(self, limit: int = 64 * 1024) -> bytes:
        out = b""
        async for chunk in self.aiter_bytes():
            out += chunk
            if len(out) >= limit:
                break
        return out[:limit]

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _next_event(conn: h11.Connection, stream: ByteStream, t: NodeTarget, read_timeout: float | None) -> Any:
    eof = False
    while True:
        try:
            ev = conn.next_event()
        except h11.RemoteProtocolError as e:
            if eof:
                raise errors.ServiceUnavailable(f"the agent of node {t.node} at {t.where} closed the connection "
                                                f"in the middle of its answer") from None
            raise _not_the_agent(t, f"its answer is not HTTP/1.1 ({e})") from None
        if ev is not h11.NEED_DATA:
            return ev
        try:
            with anyio.fail_after(read_timeout) if read_timeout else nullcontext():
                data = await stream.receive()
        except TimeoutError:        # before OSError, its base class
            raise errors.ServiceUnavailable(f"the agent of node {t.node} at {t.where} did not answer within "
                                            f"{read_timeout:g} s") from None
        except (anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError, OSError):
            data = b""              # the agent closed: h11 tells a complete answer from a cut one
            eof = True
        conn.receive_data(data)


async def request(store: Store, data_dir: str | os.PathLike, node_name: str, method: str, target: str, *,
                  read_timeout: float | None = 30.0) -> NodeResponse:
    """Send `method target` (path and query, already encoded) to node `node_name`'s agent over
    `connect` and return its answer's head; the body streams from the response, which the
    caller must `aclose()`. `read_timeout` bounds each wait for data (None: a follow)."""
    stream, t = await connect(store, data_dir, node_name)
    try:
        conn = h11.Connection(h11.CLIENT)
        head = conn.send(h11.Request(method=method, target=target, headers=[
            ("Host", t.where), ("User-Agent", USER_AGENT), ("Connection", "close")]))
        await stream.send(head + (conn.send(h11.EndOfMessage()) or b""))
        while True:
            ev = await _next_event(conn, stream, t, read_timeout)
            if isinstance(ev, h11.Response):
                return NodeResponse(ev.status_code, list(ev.headers), conn, stream, t, read_timeout)
            if isinstance(ev, h11.ConnectionClosed):
                raise errors.ServiceUnavailable(f"the agent of node {t.node} at {t.where} closed the connection "
                                                f"without an answer")
            # h11.InformationalResponse (1xx): wait for the final answer
    except BaseException:
        await stream.aclose()
        raise
