"""The client never writes a request a name or header value could break: names are
percent-encoded into paths, control characters refused before anything is sent."""
import socket
import threading

import pytest

from shoal.machinery.api.resources import resolve
from shoal.machinery.client import httpconn
from shoal.machinery.client.rest import RequestRefused, _path


def test_names_are_percent_encoded_into_paths():
    assert _path(resolve("pods"), "web", "default") == "/api/v1/namespaces/default/pods/web"
    assert _path(resolve("pods"), "a b/c?d#e", "default", "log") == \
        "/api/v1/namespaces/default/pods/a%20b%2Fc%3Fd%23e/log"
    assert _path(resolve("deploy"), namespace="default") == "/apis/apps/v1/namespaces/default/deployments"


@pytest.mark.parametrize("name,namespace", [("a\r\nb", "default"), ("a\x00", "default"), ("a", "def\nault"),
                                            ("a\x7f", None)])
def test_control_characters_in_a_name_are_refused(name, namespace):
    with pytest.raises(RequestRefused) as e:
        _path(resolve("pods"), name, namespace)
    assert "control characters" in str(e.value) and e.value.code == 0


@pytest.mark.parametrize("method,target,headers", [
    ("GET", "/a\r\nX-Injected: 1", {}),
    ("GET", "/a b", {}),
    ("GET\r\n", "/", {}),
    ("GET", "/", {"X-A": "ok\r\nX-Injected: 1"}),
    ("GET", "/", {"X-A": "ok\nX"}),
    ("GET", "/", {"X-A\r\n": "ok"}),
    ("GET", "/", {"": "ok"}),
    ("GET", "", {}),
])
def test_httpconn_refuses_a_request_that_would_not_be_one_request(method, target, headers):
    """Checked before connecting: nothing listens on the port, and no ConnectionError comes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = httpconn.Connection("127.0.0.1", port, timeout=1)
    with pytest.raises(httpconn.UnsafeRequest):
        conn.request(method, target, None, headers)
    with pytest.raises(httpconn.UnsafeRequest):
        conn.stream(method, target, headers)


def test_tabs_and_spaces_in_header_values_are_fine():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = {}

    def serve():
        c, _ = srv.accept()
        with c:
            got["req"] = c.recv(65536)
            c.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    t = threading.Thread(target=serve)
    t.start()
    conn = httpconn.Connection("127.0.0.1", srv.getsockname()[1], timeout=5)
    try:
        assert conn.request("GET", "/x", None, {"User-Agent": "shoal 1.0\t(test)"}).status == 204
    finally:
        conn.close()
        t.join(5)
        srv.close()
    assert b"User-Agent: shoal 1.0\t(test)\r\n" in got["req"]
