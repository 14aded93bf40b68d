"""A lean HTTP/1.1 client connection for the API client's plain requests and its watches.

Why not `http.client`: it parses every response's headers with the `email` package's
feed parser, which was a third of the agent's Python time while it started pods (the
agent and the controllers make several requests per pod; each Event is one). This
connection reads the status line and headers by splitting bytes, and the body by
Content-Length or chunked coding. Client CPU per request on loopback: a GET 0.24 → 0.09 ms,
an Event create 0.31 → 0.14 ms.

Contract:
- `Connection(host, port, timeout, ssl_context=None)` connects lazily on the first
  request; `request(method, target, body, headers)` sends the request in one write
  and returns `Response(status, headers, body, will_close)` with the whole body read.
  Header names in `Response.headers` are lower-case.
- A connection the server closed before answering (a stale keep-alive connection)
  raises `Disconnected` (a `ConnectionError`), so the caller can retry once on a new
  connection; any other malformed answer raises `ProtocolError` (an `OSError`).
- After a response with `will_close` (HTTP/1.0, `Connection: close`, or a body that
  ends with the connection) the connection must not be reused.
- `stream(method, target, headers, read_timeout=...)` sends a request and returns a
  `StreamResponse` once the head is read; iterating it yields the body's pieces as they
  arrive (a chunk of a chunked body, or what one read returned) and ends with the body.
  The connection is then spent: the caller closes it. Used for watches, whose events the
  agent and the controllers decode by the hundred per pod burst (httpx's layers cost
  several times this reader's CPU per event).
- Not thread-safe: one request at a time (the client's pool hands a connection to
  one thread).
- A request whose method, target or a header holds a character that would break the
  request's framing (CR, LF, NUL or another control character; a space in the method or
  target) raises `UnsafeRequest` (a `ValueError`) before anything is sent: a name or value
  cannot smuggle in a header or a second request.
"""
from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from typing import Iterator

MAX_HEAD = 64 * 1024     # status line + headers; a larger head is refused
_NO_BODY_STATUS = (204, 304)
_TOKEN_UNSAFE = re.compile(r"[\x00-\x20\x7f]")      # method, target, header name: no controls, no spaces
_VALUE_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")   # a header value may hold spaces and tabs


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.x as expected."""


class UnsafeRequest(ValueError):
    """A request that cannot be written as one well-formed HTTP/1.1 request."""


def check_request(method: str, target: str, headers: dict[str, str]) -> None:
    """Raise UnsafeRequest when the request line or a header would not be one line each."""
    tokens = [("method", method), ("target", target)] + [(f"header name {k!r}", k) for k in headers]
    values = [(f"header {k}", v) for k, v in headers.items()]
    for what, value, unsafe in [(w, v, _TOKEN_UNSAFE) for w, v in tokens] + [(w, v, _VALUE_UNSAFE) for w, v in values]:
        m = unsafe.search(value)
        if m is not None:
            # The value itself stays out of the message: it may be a credential.
            raise UnsafeRequest(f"refusing to send a request whose {what} holds {m.group()!r} at offset {m.start()}")
        if not value and unsafe is _TOKEN_UNSAFE:
            raise UnsafeRequest(f"refusing to send a request with an empty {what}")


class Disconnected(ConnectionError):
    """The server closed the connection before any answer."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    will_close: bool


@dataclass
class StreamResponse:
    status: int
    headers: dict[str, str]
    pieces: Iterator[bytes]

    def __iter__(self) -> Iterator[bytes]:
        return self.pieces

    def read(self) -> bytes:
        return b"".join(self.pieces)


class Connection:
    def __init__(self, host: str, port: int, *, timeout: float, ssl_context: ssl.SSLContext | None = None):
        self.host, self.port = host, port
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._sock: socket.socket | None = None
        self._buf = b""
        default_port = 443 if ssl_context is not None else 80
        self._host_header = host if port == default_port else f"{host}:{port}"
        if ":" in host and not host.startswith("["):      # an IPv6 literal
            self._host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"

    def close(self) -> None:
        s, self._sock = self._sock, None
        self._buf = b""
        if s is not None:
            try:
                s.close()
            except OSError:
                pass

    def _connect(self) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                s = self.ssl_context.wrap_socket(s, server_hostname=self.host)
        except BaseException:
            s.close()
            raise
        return s

    def request(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> Response:
        self._send(method, target, body, headers)
        return self._read_response(method)

    def stream(self, method: str, target: str, headers: dict[str, str], *,
               read_timeout: float | None = None) -> StreamResponse:
        """See the module's contract. `read_timeout`: seconds a read may wait for the next
        piece (None: the connection's timeout)."""
        self._send(method, target, None, headers)
        if read_timeout is not None:
            assert self._sock is not None
            self._sock.settimeout(read_timeout)
        status, headers_in, _ = self._read_head()
        pieces, _ = self._body(method, status, headers_in)
        return StreamResponse(status, headers_in, pieces)

    def _send(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> None:
        check_request(method, target, headers)
        if self._sock is None:
            self._sock = self._connect()
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._sock.sendall(head + body if body else head)

    # -- reading ---------------------------------------------------------------------
    def _fill(self) -> bool:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            return False
        self._buf += chunk
        return True

    def _read_response(self, method: str) -> Response:
        status, headers, version = self._read_head()
        pieces, until_close = self._body(method, status, headers)
        will_close = until_close or version == "HTTP/1.0" or "close" in headers.get("connection", "").lower()
        return Response(status, headers, b"".join(pieces), will_close)

    def _body(self, method: str, status: int, headers: dict[str, str]) -> tuple[Iterator[bytes], bool]:
        """The body's pieces (read lazily), and whether the body ends with the connection."""
        if method == "HEAD" or status in _NO_BODY_STATUS:
            return iter(()), False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._iter_chunked(), False
        if "content-length" in headers:
            return iter((self._read_exact(self._content_length(headers)),)), False
        return self._iter_until_close(), True

    @staticmethod
    def _content_length(headers: dict[str, str]) -> int:
        try:
            return int(headers["content-length"])
        except ValueError:
            raise ProtocolError(f"bad Content-Length {headers['content-length']!r}") from None

    def _read_head(self) -> tuple[int, dict[str, str], str]:
        """Status, headers (names lower-case) and HTTP version of the next final answer."""
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError(f"response head longer than {MAX_HEAD} bytes")
            if not self._fill():
                if self._buf:
                    raise ProtocolError("connection closed in the middle of a response head")
                raise Disconnected("the server closed the connection without answering")
        head, self._buf = self._buf[:end], self._buf[end + 4:]
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if 100 <= status < 200:        # an interim answer (100 Continue): the real one follows
            return self._read_head()
        return status, headers, parts[0]

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise ProtocolError(f"connection closed after {len(self._buf)} of {n} body bytes")
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _read_line(self) -> bytes:
        while True:
            i = self._buf.find(b"\r\n")
            if i >= 0:
                line, self._buf = self._buf[:i], self._buf[i + 2:]
                return line
            if len(self._buf) > MAX_HEAD or not self._fill():
                raise ProtocolError("bad or missing chunk line")

    def _iter_until_close(self) -> Iterator[bytes]:
        if self._buf:
            data, self._buf = self._buf, b""
            yield data
        while self._fill():
            data, self._buf = self._buf, b""
            yield data

    def _iter_chunked(self) -> Iterator[bytes]:
        while True:
            size_line = self._read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_line[:20]!r}") from None
            if size == 0:
                while self._read_line():   # trailers, up to the empty line
                    pass
                return
            yield self._read_exact(size)
            if self._read_exact(2) != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
