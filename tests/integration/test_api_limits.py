"""The request pipeline's limits against the real API server: request bodies (3 MiB, read only
after authentication, large ones decoded off the event loop), stored objects (1.5 MiB),
integer ranges, control characters in names on both sides, Status bodies byte for byte, and
deletecollection."""
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from shoal.apiserver import app as app_module, auth
from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client, RequestRefused

PODS = "/api/v1/namespaces/default/pods"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
LIMIT = 3 * 1024 * 1024


def pod(name, node=None, labels=None, **spec):
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"app": "x"}},
         "spec": {"containers": [{"name": "c", "image": "busybox:1"}], **spec}}
    if node:
        p["spec"]["nodeName"] = node
    return p


def deployment(name="web", replicas=2):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": "busybox:1"}]}}}}


@pytest.fixture
def http(api):
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.admin_token}"},
                      timeout=30) as h:
        yield h


class Raw:
    """One HTTP/1.1 connection written by hand, to send a head and a body piece by piece."""

    def __init__(self, api, timeout=10.0):
        u = urlsplit(api.url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict, bytes]:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed before an answer: {buf!r}"
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        n = int(headers.get("content-length", "0"))
        while len(body) < n:
            chunk = self.sock.recv(65536)
            assert chunk
            body += chunk
        return int(lines[0].split()[1]), headers, body

    def close(self):
        self.sock.close()


def head(method, path, token, extra=""):
    auth_line = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth_line}Content-Type: application/json\r\n{extra}\r\n"
            ).encode()


# --- request bodies ------------------------------------------------------------------------

def test_an_oversized_body_is_refused_by_its_content_length_before_it_is_read(api):
    raw = Raw(api)
    try:
        raw.send(head("POST", PODS, api.admin_token, f"Content-Length: {LIMIT + 1}\r\n"))   # no body follows
        status, headers, body = raw.response()
    finally:
        raw.close()
    assert status == 413 and headers.get("connection") == "close"
    assert json.loads(body) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": f"Request entity too large: the body is {LIMIT + 1} bytes; limit is "
                                           f"{LIMIT}", "reason": "RequestEntityTooLarge", "code": 413}


def test_a_streamed_body_is_cut_at_the_limit_while_the_server_answers_others(api, http):
    """No Content-Length (chunked): the server counts the bytes as they arrive. While the
    upload dawdles, /healthz and other requests are answered at once."""
    raw = Raw(api)
    try:
        raw.send(head("POST", PODS, api.admin_token, "Transfer-Encoding: chunked\r\n"))
        piece = b"x" * (1024 * 1024)
        raw.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        t0 = time.monotonic()
        assert httpx.get(api.url + "/healthz", timeout=5).text == "ok"
        assert http.get("/api/v1/namespaces/default").status_code == 200
        assert time.monotonic() - t0 < 2.0
        rest = b"x" * (LIMIT + 1 - len(piece))       # one byte over, then nothing more
        raw.send(b"%x\r\n%s\r\n" % (len(rest), rest))
        status, headers, body = raw.response()
    finally:
        raw.close()
    assert status == 413 and json.loads(body)["reason"] == "RequestEntityTooLarge"
    assert json.loads(body)["message"] == f"Request entity too large: limit is {LIMIT}"


def test_a_body_of_exactly_the_limit_is_read(api, http):
    body = json.dumps(pod("p")).encode()
    body = body[:-1] + b" " * (LIMIT - len(body)) + b"}"        # padded with JSON whitespace
    assert len(body) == LIMIT
    r = http.post(PODS, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text


def test_a_large_body_is_decoded_off_the_event_loop(api, http, monkeypatch):
    """A body over 64 KiB is decoded on a thread: a slow decode (here made slow on purpose,
    as YAML of a few megabytes is) does not hold other requests."""
    real = app_module._decode_body
    started = threading.Event()

    def slow(raw, ct):
        started.set()
        time.sleep(1.5)
        return real(raw, ct)

    monkeypatch.setattr(app_module, "_decode_body", slow)
    big = pod("big")
    big["metadata"]["annotations"] = {"note": "y" * 100_000}
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", http.post(PODS, json=big)))
    t.start()
    assert started.wait(10)
    t0 = time.monotonic()
    assert httpx.get(api.url + "/healthz", timeout=5).text == "ok"
    assert time.monotonic() - t0 < 1.0, "the event loop waited for the decode"
    t.join(20)
    assert out["r"].status_code == 201


def test_bodies_are_read_only_after_authentication_and_authorization(api):
    """No token: 401 without reading the body. A token that may not make the write whatever
    its body says (the join token; a node updating a Deployment): 403 without reading it.
    The body is never sent: a server that waited for it would time out."""
    api.client().create("deploy", deployment())
    node_token = auth.issue_node_credential(api.store, "n1")
    cases = [(None, "POST", PODS, 401), (api.join_token, "POST", DEPLOYMENTS, 403),
             (node_token, "PUT", f"{DEPLOYMENTS}/web", 403), (node_token, "PATCH", f"{DEPLOYMENTS}/web", 403)]
    for token, method, path, code in cases:
        raw = Raw(api, timeout=5)
        try:
            raw.send(head(method, path, token, "Content-Length: 2000000\r\n"))
            status, _, body = raw.response()
        finally:
            raw.close()
        assert (method, status) == (method, code), body


# --- stored objects --------------------------------------------------------------------------

def test_stored_objects_are_capped_at_etcds_limit(api, http):
    def event(name, size):
        return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                "reason": "Big", "message": "m" * size, "type": "Normal"}
    r = http.post("/api/v1/namespaces/default/events", json=event("big", 1_600_000))
    assert r.status_code == 413, r.text
    st = r.json()
    assert st["reason"] == "RequestEntityTooLarge" and 'events "big" in namespace "default"' in st["message"]
    assert "limit is 1572864 bytes" in st["message"]
    assert http.get("/api/v1/namespaces/default/events/big").status_code == 404
    assert http.post("/api/v1/namespaces/default/events", json=event("fits", 1_400_000)).status_code == 201
    # an update that would grow it past the limit changes nothing
    r = http.patch("/api/v1/namespaces/default/events/fits", json={"message": "m" * 1_600_000},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 413
    assert len(http.get("/api/v1/namespaces/default/events/fits").json()["message"]) == 1_400_000


# --- integers ----------------------------------------------------------------------------------

def test_integers_out_of_range_are_invalid_naming_the_field(api, http):
    r = http.post(DEPLOYMENTS, json=deployment(replicas=10**12))
    assert r.status_code == 422
    assert [c["field"] for c in r.json()["details"]["causes"]] == ["spec.replicas"]
    assert "must be between -2147483648 and 2147483647, inclusive" in r.json()["message"]
    r = http.post(PODS, json=pod("p", terminationGracePeriodSeconds=2**70))
    assert r.status_code == 422
    assert r.json()["details"]["causes"][0]["field"] == "spec.terminationGracePeriodSeconds"
    api.client().create("deploy", deployment())
    r = http.patch(f"{DEPLOYMENTS}/web/scale", json={"spec": {"replicas": 2**40}},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 422 and "spec.replicas" in r.text
    assert api.client().get("deploy", "web")["spec"]["replicas"] == 2


def test_delete_options_and_query_integers_are_range_checked(api, http):
    api.client().create("pods", pod("p", node="n1"))
    r = http.delete(f"{PODS}/p", params={"gracePeriodSeconds": str(2**70)})
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "gracePeriodSeconds"
    r = http.request("DELETE", f"{PODS}/p", json={"gracePeriodSeconds": 2**70})
    assert r.status_code == 422
    assert "deletionTimestamp" not in api.client().get("pods", "p")["metadata"]
    r = http.get(PODS, params={"watch": "true", "resourceVersion": str(10**30)})
    assert r.status_code == 400 and "resourceVersion" in r.json()["message"]


def test_a_huge_valid_grace_period_deletes_instead_of_failing(api, http):
    """terminationGracePeriodSeconds near the int64 bound: the deletion is marked (its
    deadline as late as a time can be written), never a 500, and the namespace goes."""
    c = api.client()
    c.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    c.create("pods", pod("p", node="n1", terminationGracePeriodSeconds=2**62), namespace="team")
    r = http.delete("/api/v1/namespaces/team/pods/p")
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["deletionTimestamp"].startswith("9999-12-31")
    assert http.delete("/api/v1/namespaces/team").status_code == 200
    c.delete("pods", "p", namespace="team", grace_period_seconds=0)       # the node confirms
    from shoal.testkit.apiserver import wait_for
    wait_for(lambda: http.get("/api/v1/namespaces/team").status_code == 404, what="namespace team gone")


# --- names and control characters ----------------------------------------------------------------

@pytest.mark.parametrize("meta,field", [
    ({"name": "web\n"}, "metadata.name"),
    ({"name": "web\r\nX-Injected: 1"}, "metadata.name"),
    ({"generateName": "web-\n"}, "metadata.generateName"),
    ({"name": "web", "labels": {"app": "v\n"}}, "metadata.labels"),
])
def test_names_with_control_characters_are_invalid(api, http, meta, field):
    body = pod("x")
    body["metadata"] = meta
    r = http.post(PODS, json=body)
    assert r.status_code == 422 and field in [c["field"] for c in r.json()["details"]["causes"]], r.text
    assert api.client().list("pods")["items"] == []


def test_names_in_the_url_with_control_characters_are_refused(api, http):
    r = http.get(PODS + "/a%0D%0AX-Injected:%201")
    assert r.status_code == 400 and r.json()["details"]["causes"][0]["field"] == "name"
    r = http.get("/api/v1/namespaces/a%0Ab/pods")
    assert r.status_code == 400 and "namespace" in r.json()["message"]
    r = http.request("DELETE", "/api/v1/nodes/n%00")
    assert r.status_code == 400


def test_the_client_refuses_to_send_a_name_with_control_characters(api):
    c = api.client()
    with pytest.raises(RequestRefused) as e:
        c.get("pods", "a\r\nX-Injected: 1")
    assert "must not contain control characters" in str(e.value)
    with pytest.raises(RequestRefused):
        c.delete("pods", "p", namespace="default\n")
    with pytest.raises(RequestRefused):
        c.create("pods", pod("p"), namespace="a\rb")
    # nothing is sent at all: against a port nobody listens on, still RequestRefused
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", "t") as off, pytest.raises(RequestRefused):
        off.get("pods", "a\nb")
    with pytest.raises(RequestRefused) as e:
        Client(api.url, "secret-token\r\nX-Injected: 1")
    assert "secret-token" not in str(e.value)            # a credential stays out of the message


def test_other_names_travel_percent_encoded(api):
    with pytest.raises(errors.NotFound) as e:
        api.client().get("pods", "a b?c#d")
    assert e.value.message == 'pods "a b?c#d" not found'


# --- Status byte for byte ---------------------------------------------------------------------------

def test_status_bodies_are_kubernetes_bytes(api, http):
    r = http.get(f"{DEPLOYMENTS}/web")
    assert r.status_code == 404
    assert r.content == (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":'
                         b'"deployments.apps \\"web\\" not found","reason":"NotFound","details":{"name":"web",'
                         b'"group":"apps","kind":"deployments"},"code":404}\n')
    r = http.get(f"{PODS}/p")
    assert r.content == (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":'
                         b'"pods \\"p\\" not found","reason":"NotFound","details":{"name":"p","kind":"pods"},'
                         b'"code":404}\n')
    node = api.client().create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    r = http.delete("/api/v1/nodes/n1")
    assert r.content == (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":'
                         b'{"name":"n1","kind":"nodes","uid":"%s"}}\n' % node["metadata"]["uid"].encode())
    r = httpx.get(api.url + "/api/v1/namespaces")
    assert r.status_code == 401 and r.content.endswith(b'"reason":"Unauthorized","code":401}\n')


def test_objects_are_written_as_gos_encoder_writes_them(api, http):
    p = pod("p")
    p["metadata"]["annotations"] = {"html": "<b>&</b>", "text": "caf\u00e9 \u2028"}
    r = http.post(PODS, json=p)
    assert r.status_code == 201 and r.content.endswith(b"}\n")
    assert b'"html":"\\u003cb\\u003e\\u0026\\u003c/b\\u003e"' in r.content
    assert '"text":"caf\u00e9 \\u2028"'.encode() in r.content
    assert r.json()["metadata"]["annotations"] == p["metadata"]["annotations"]


# --- deletecollection ----------------------------------------------------------------------------------

def test_delete_collection_with_selectors(api, http):
    c = api.client()
    for i, app in enumerate(["a", "a", "b"]):
        c.create("pods", pod(f"p{i}", labels={"app": app}))
    r = http.delete(PODS, params={"labelSelector": "app=a"})
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "PodList" and [p["metadata"]["name"] for p in r.json()["items"]] == ["p0", "p1"]
    assert [p["metadata"]["name"] for p in c.list("pods")["items"]] == ["p2"]
    c.create("pods", pod("p3", labels={"app": "b"}))
    r = http.delete(PODS, params={"fieldSelector": "metadata.name=p3"})
    assert [p["metadata"]["name"] for p in r.json()["items"]] == ["p3"]
    assert [p["metadata"]["name"] for p in c.list("pods")["items"]] == ["p2"]


def test_delete_collection_of_a_cluster_kind_and_not_of_namespaces(api, http):
    c = api.client()
    for n in ("n1", "n2"):
        c.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": {"pool": "x"}}})
    r = http.delete("/api/v1/nodes", params={"labelSelector": "pool=x"})
    assert r.status_code == 200 and r.json()["kind"] == "NodeList" and len(r.json()["items"]) == 2
    assert c.list("nodes")["items"] == []
    r = http.delete("/api/v1/namespaces")
    assert r.status_code == 405 and r.json()["reason"] == "MethodNotAllowed"
    assert http.delete("/api/v1/pods").status_code == 405       # nor across namespaces
    disco = {e["name"]: e["verbs"] for e in http.get("/api/v1").json()["resources"]}
    assert "deletecollection" in disco["pods"] and "deletecollection" not in disco["namespaces"]


def test_delete_collection_takes_delete_options_and_is_authorized_as_such(api, http):
    c = api.client()
    c.create("pods", pod("bound", node="n1"))
    token = auth.issue_node_credential(api.store, "n1")
    r = httpx.request("DELETE", api.url + PODS, params={"fieldSelector": "spec.nodeName=n1"},
                      headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and 'cannot deletecollection resource "pods"' in r.json()["message"]
    r = http.request("DELETE", PODS, json={"gracePeriodSeconds": 0})
    assert r.status_code == 200 and c.list("pods")["items"] == []
    r = http.request("DELETE", PODS, json={"gracePeriodSeconds": -(2**64)})
    assert r.status_code == 422


def test_delete_collection_with_the_official_client(api):
    k8s = pytest.importorskip("kubernetes.client")
    cfg = k8s.Configuration()
    cfg.host = api.url
    cfg.api_key = {"authorization": api.admin_token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    c = api.client()
    c.create("pods", pod("a", labels={"tier": "web"}))
    c.create("pods", pod("b", labels={"tier": "db"}))
    with k8s.ApiClient(cfg) as ac:
        k8s.CoreV1Api(ac).delete_collection_namespaced_pod("default", label_selector="tier=web")
    assert [p["metadata"]["name"] for p in c.list("pods")["items"]] == ["b"]
