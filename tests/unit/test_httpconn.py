"""shoal.machinery.client.httpconn against a scripted HTTP server on loopback: bodies by length, by
chunks and by close; interim answers; a stale keep-alive connection (the pool retries it
once); malformed answers."""
import socket
import threading

import pytest

from shoal.machinery.client import httpconn
from shoal.machinery.client.rest import _Pool


class Scripted:
    """Accepts connections; for each request read, sends the next scripted answer.
    An answer of None closes the connection instead of answering."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self):
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            with conn:
                buf = b""
                while self.answers:
                    while b"\r\n\r\n" not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                    if b"\r\n\r\n" not in buf:
                        break
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    n = 0
                    for line in head.split(b"\r\n")[1:]:
                        k, _, v = line.partition(b":")
                        if k.strip().lower() == b"content-length":
                            n = int(v)
                    while len(buf) < n:
                        buf += conn.recv(65536)
                    body, buf = buf[:n], buf[n:]
                    self.requests.append((head.decode(), body))
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    conn.sendall(answer)
                    if b"Connection: close" in answer.split(b"\r\n\r\n")[0]:
                        break

    def close(self):
        self.sock.close()


@pytest.fixture
def server(request):
    servers = []

    def make(*answers):
        s = Scripted(answers)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()


def conn(s):
    return httpconn.Connection("127.0.0.1", s.port, timeout=5.0)


def test_length_and_chunked_bodies_on_one_kept_connection(server):
    s = server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nhello",
               b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\n"
               b"X-Trailer: 1\r\n\r\n")
    c = conn(s)
    r1 = c.request("GET", "/api/v1/pods", None, {"Accept": "application/json"})
    assert (r1.status, r1.body, r1.will_close) == (200, b"hello", False)
    assert r1.headers["content-type"] == "application/json"
    r2 = c.request("POST", "/api/v1/namespaces/default/events", b'{"a":1}', {"Content-Type": "application/json"})
    assert (r2.status, r2.body, r2.will_close) == (201, b"wikipedia", False)
    assert s.conns == 1
    head, body = s.requests[1]
    assert head.startswith("POST /api/v1/namespaces/default/events HTTP/1.1\r\nHost: 127.0.0.1:")
    assert "Content-Length: 7" in head and body == b'{"a":1}'
    c.close()


def test_interim_answer_no_body_status_and_body_to_close(server):
    s = server(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
    c = conn(s)
    r = c.request("DELETE", "/x", None, {})
    assert (r.status, r.body, r.will_close) == (204, b"", False)
    r = c.request("GET", "/y", None, {})
    assert (r.status, r.body, r.will_close) == (200, b"until the end", True)
    c.close()


def test_a_connection_closed_before_any_answer_is_disconnected(server):
    s = server(None)
    c = conn(s)
    with pytest.raises(httpconn.Disconnected):
        c.request("GET", "/", None, {})
    c.close()


@pytest.mark.parametrize("answer, what", [
    (b"SPDY/3 200 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort", "of 10 body bytes"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
])
def test_malformed_answers_are_protocol_errors(server, answer, what):
    s = server(answer, None)
    c = conn(s)
    with pytest.raises(httpconn.ProtocolError, match=what):
        c.request("GET", "/", None, {})
    c.close()


def test_the_pool_sends_again_once_when_a_kept_connection_went_stale(server):
    # first connection: one answer, then the server closes it while idle;
    # second connection: the retried request's answer
    s = server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain")
    pool = _Pool(f"http://127.0.0.1:{s.port}", True, 5.0)
    try:
        assert pool.request("GET", "/a", None, {}) == (200, b"ok")
        assert pool.request("GET", "/b", None, {}) == (200, b"again")
        assert s.conns == 2
        assert [h.split(" ")[1] for h, _ in s.requests] == ["/a", "/b", "/b"]
    finally:
        pool.close()


class Trickle:
    """Answers one request with a chunked head and then the chunks it is handed, one at a time."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.sends = []
        self.ready = threading.Semaphore(0)
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            while True:
                self.ready.acquire()
                data = self.sends.pop(0)
                if data is None:
                    return
                conn.sendall(data)

    def send(self, data):
        self.sends.append(data)
        self.ready.release()

    def close(self):
        self.send(None)
        self.sock.close()


def test_a_stream_yields_each_chunk_as_it_arrives_and_times_out_when_quiet():
    srv = Trickle()
    conn = httpconn.Connection("127.0.0.1", srv.port, timeout=5)
    try:
        srv.send(b"6\r\nfirst\n\r\n")
        r = conn.stream("GET", "/watch", {}, read_timeout=0.3)
        assert r.status == 200
        pieces = iter(r)
        assert next(pieces) == b"first\n"          # before the server has sent any more
        srv.send(b"7\r\nsecond\n\r\n0\r\n\r\n")
        assert list(pieces) == [b"second\n"]
    finally:
        conn.close()
        srv.close()
    srv = Trickle()
    conn = httpconn.Connection("127.0.0.1", srv.port, timeout=5)
    try:
        r = conn.stream("GET", "/watch", {}, read_timeout=0.2)
        with pytest.raises(OSError):                # socket.timeout: nothing came
            next(iter(r))
    finally:
        conn.close()
        srv.close()


def test_a_streamed_error_answer_is_read_whole(server):
    srv = server(b"HTTP/1.1 410 Gone\r\nContent-Length: 11\r\n\r\n{\"code\":41}")
    conn = httpconn.Connection("127.0.0.1", srv.port, timeout=5)
    try:
        r = conn.stream("GET", "/watch", {})
        assert (r.status, r.read()) == (410, b'{"code":41}')
    finally:
        conn.close()
