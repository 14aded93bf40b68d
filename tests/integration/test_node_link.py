"""API server → agent over mutual TLS (issue 17): the serving certificate a join gets, logs end to
end, and the attacks the shared token and the node-written address allowed — each refused.

A real API server on a temp SQLite file (plain HTTP on loopback, as the test kit serves; one
test over HTTPS) and agents on the fakes (`agent_harness`), each with a real log endpoint
serving its real certificate."""
from __future__ import annotations

import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shoal.agent.join import ensure_credentials, serving_csr, serving_key, serving_tls
from shoal.apiserver import auth, tls
from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client
from shoal.testkit.apiserver import start_test_server

from agent_harness import AgentHarness, wait

pytestmark = pytest.mark.integration


@pytest.fixture
def h(tmp_path):
    with AgentHarness(tmp_path) as harness:
        yield harness


def running(h, name):
    cs = h.cstatus(name)
    return cs if "running" in (cs.get("state") or {}) else None


def _pod_running(h, node="node-1", name="web"):
    h.create_pod(name, node)
    wait("running", lambda: running(h, name))


def _server_tls(h):
    return h.srv.settings.data_dir / "tls"


def _logs(h, name="web", **kw) -> str:
    return "".join(h.admin.logs(name, "default", **kw))


# ---------------------------------------------------------------------------- what a join gets
def test_join_issues_a_serving_certificate_for_the_address_the_server_saw(h):
    n = h.start_agent("node-1")
    st = serving_tls(n.data_dir)
    cert = x509.load_pem_x509_certificate(open(st.cert_file, "rb").read())
    ca = x509.load_pem_x509_certificate((_server_tls(h) / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=system:node:node-1"
    assert tls.cert_sans(cert) == ["127.0.0.1"] and st.address == "127.0.0.1"
    rec = h.srv.store.node_endpoint("node-1")
    assert (rec.address, rec.key_sha256) == ("127.0.0.1", tls.public_key_sha256(cert))
    assert abs(rec.not_after - cert.not_valid_after_utc.timestamp()) < 1
    # the key never left the node: the server holds no copy of it
    key_pem = open(st.key_file, "rb").read()
    assert all(key_pem not in p.read_bytes() for p in h.srv.settings.data_dir.rglob("*") if p.is_file())
    # the shared log-endpoint token is gone on both sides
    assert "apiserver" not in h.srv.registry.tokens
    assert not (h.srv.settings.data_dir / "apiserver-token").exists()
    assert "apiserverToken" not in (n.data_dir / "credentials.json").read_text()


def test_the_address_is_the_sockets_not_one_the_request_names(api, tmp_path):
    key = serving_key(tmp_path / "a")
    r = httpx.post(api.url + "/shoal/v1/join", timeout=10,
                   headers={"Authorization": f"Bearer {api.join_token}", "X-Forwarded-For": "10.9.9.9",
                            "X-Real-IP": "10.9.9.9", "Forwarded": "for=10.9.9.9"},
                   json={"nodeName": "node-a", "nodePassword": "p" * 43,
                         "servingCertificateRequest": serving_csr(key, "node-a")})
    assert r.status_code == 200, r.text
    out = r.json()
    cert = x509.load_pem_x509_certificate(out["servingCertificate"].encode())
    assert out["address"] == "127.0.0.1" and tls.cert_sans(cert) == ["127.0.0.1"]
    assert api.store.node_endpoint("node-a").address == "127.0.0.1"


def test_a_csr_for_another_node_is_refused_and_changes_nothing(api, tmp_path):
    key = serving_key(tmp_path / "a")
    before = api.store.current_revision()
    with Client(api.url, api.join_token) as c:
        with pytest.raises(errors.Invalid, match="servingCertificateRequest: the certificate request's subject "
                                                 "must be exactly CN=system:node:node-a, not CN=system:node:node-b"):
            c.request("POST", "/shoal/v1/join", body={"nodeName": "node-a", "nodePassword": "p" * 43,
                                                      "servingCertificateRequest": serving_csr(key, "node-b")})
    for junk in ('"-----BEGIN CERTIFICATE REQUEST-----\\ud800"', '"junk"', '{"a": 1}', '["x"]'):
        r = httpx.post(api.url + "/shoal/v1/join", timeout=10, headers={
            "Authorization": f"Bearer {api.join_token}", "Content-Type": "application/json"},
            content='{"nodeName": "node-a", "nodePassword": "%s", "servingCertificateRequest": %s}' % ("p" * 43, junk))
        assert r.status_code == 422 and "servingCertificateRequest" in r.text, (junk, r.status_code, r.text)
    assert api.store.node_password_hash("node-a") is None          # the name was not bound
    assert api.store.node_endpoint("node-a") is None and api.store.current_revision() == before


def test_renewal_with_the_node_credential_only_for_itself(api, tmp_path):
    a = ensure_credentials(api.url, api.join_token, "node-a", tmp_path / "a")
    b = ensure_credentials(api.url, api.join_token, "node-b", tmp_path / "b")
    first = api.store.node_endpoint("node-a")
    new_key = serving_key(tmp_path / "elsewhere")
    body = {"nodeName": "node-a", "servingCertificateRequest": serving_csr(new_key, "node-a")}
    for token, error in ((b.token, errors.Forbidden), (api.join_token, errors.Forbidden),
                         (api.admin_token, errors.Forbidden)):
        with Client(api.url, token) as c, pytest.raises(error):
            c.request("POST", "/shoal/v1/node-certificate", body=body)
    assert api.store.node_endpoint("node-a") == first
    with Client(api.url, a.token) as c:
        with pytest.raises(errors.Invalid, match="servingCertificateRequest: required"):
            c.request("POST", "/shoal/v1/node-certificate", body={"nodeName": "node-a"})
        out = c.request("POST", "/shoal/v1/node-certificate", body=body)
    cert = x509.load_pem_x509_certificate(out["servingCertificate"].encode())
    assert cert.subject.rfc4514_string() == "CN=system:node:node-a" and out["address"] == "127.0.0.1"
    # the record follows the newest certificate: the old key is no longer accepted
    assert api.store.node_endpoint("node-a").key_sha256 == tls.public_key_sha256(cert) != first.key_sha256


def test_a_join_without_a_csr_or_a_deleted_node_forgets_the_endpoint(api, tmp_path):
    ensure_credentials(api.url, api.join_token, "node-a", tmp_path / "a")
    password = (tmp_path / "a" / "node-password").read_text().strip()
    assert api.store.node_endpoint("node-a") is not None
    with Client(api.url, api.join_token) as c:      # an agent of an older version: a credential, no certificate
        out = c.request("POST", "/shoal/v1/join", body={"nodeName": "node-a", "nodePassword": password})
    assert "servingCertificate" not in out and api.store.node_endpoint("node-a") is None
    ensure_credentials(api.url, api.join_token, "node-a", tmp_path / "a")   # 401: it rejoins with a CSR
    assert api.store.node_endpoint("node-a") is not None
    admin = api.client()
    admin.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}})
    admin.delete("nodes", "node-a")
    assert api.store.node_endpoint("node-a") is None


def test_an_agent_of_the_old_version_upgrades_in_place(api, tmp_path):
    """credentials.json with the shared token and no certificate: reused, renewed, cleaned."""
    d = tmp_path / "a"
    ensure_credentials(api.url, api.join_token, "node-a", d)
    creds = json.loads((d / "credentials.json").read_text())
    (d / "credentials.json").write_text(json.dumps({**creds, "apiserverToken": "shoal-apiserver-old"}))
    for f in ("serving.crt", "ca.crt"):
        (d / "tls" / f).unlink()
    again = ensure_credentials(api.url, "", "node-a", d)           # no join token: the node credential renews
    assert again.token == creds["token"] and serving_tls(d).address == "127.0.0.1"
    assert "apiserverToken" not in (d / "credentials.json").read_text()


def test_a_server_of_the_old_version_loses_its_shared_token_at_start(tmp_path):
    srv = start_test_server(tmp_path)
    data = srv.settings.data_dir
    old = "shoal-apiserver-old"
    srv.store.put_credential(auth.token_hash(old), "apiserver")
    srv.stop()
    auth.write_secret(data / "apiserver-token", old)
    srv = start_test_server(tmp_path)
    try:
        assert not (data / "apiserver-token").exists() and srv.store.count_credentials("apiserver") == 0
        with Client(srv.url, old) as c, pytest.raises(errors.Unauthorized):
            c.list("pods")
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- logs over mutual TLS
def test_logs_end_to_end_and_the_agent_answers_only_the_api_servers_certificate(h):
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    _pod_running(h)
    assert _logs(h) == "started web attempt 0: /bin/sh\n"
    port = n.agent.logserver.port
    url = f"https://127.0.0.1:{port}/containerLogs/default/web/web"
    ca = str(_server_tls(h) / "ca.crt")
    client = (str(_server_tls(h) / "apiserver-client.crt"), str(_server_tls(h) / "apiserver-client.key"))
    # plain HTTP gets nothing, and nor does TLS without a client certificate
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/containerLogs/default/web/web", timeout=5)
    with pytest.raises(httpx.HTTPError, match="certificate required"):
        httpx.get(url, verify=ssl.create_default_context(cafile=ca), timeout=5)
    # a certificate of the cluster CA that is not the API server's: 403
    ca_cert = x509.load_pem_x509_certificate((_server_tls(h) / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((_server_tls(h) / "ca.key").read_bytes(), password=None)
    import datetime as dt
    other, other_key = tls.new_client_cert(ca_cert, ca_key, now=dt.datetime.now(dt.timezone.utc),
                                           common_name="system:node:node-2")
    cf, kf = h.tmp / "other.crt", h.tmp / "other.key"
    cf.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    kf.write_bytes(other_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(str(cf), str(kf))
    r = httpx.get(url, verify=ctx, timeout=5)
    assert r.status_code == 403 and "names system:node:node-2, not shoal-apiserver" in r.text
    # a node's serving certificate is no client certificate (OpenSSL checks its usage)
    st = serving_tls(n.data_dir)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(st.cert_file, st.key_file)
    with pytest.raises(httpx.HTTPError, match="unsupported certificate"):
        httpx.get(url, verify=ctx, timeout=5)
    # the API server's client certificate: the log, and the agent's errors
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(*client)
    ok = httpx.get(url, verify=ctx, params={"tailLines": "1"}, timeout=5)
    assert ok.status_code == 200 and ok.text.startswith("started web attempt 0")
    assert httpx.get(url, verify=ctx, params={"previous": "true"}, timeout=5).status_code == 400
    assert httpx.get(url.replace("/web/web", "/web/nope"), verify=ctx, timeout=5).status_code == 404
    # the API server passes the agent's 400 on as a 400
    with pytest.raises(errors.BadRequest, match="previous terminated container"):
        _logs(h, previous=True)


def test_logs_over_an_https_api_server(tmp_path):
    class TLSHarness(AgentHarness):
        def __enter__(self):
            self.srv = start_test_server(self.tmp, tls=True)
            self.admin = self.srv.client()
            return self
    with TLSHarness(tmp_path) as h:
        assert h.srv.url.startswith("https://")
        h.start_agent("node-1")
        h.assign_cidr("node-1")
        _pod_running(h)
        assert _logs(h) == "started web attempt 0: /bin/sh\n"
        # the serving certificate's CA is the one the join token pins
        st = serving_tls(h.nodes[0].data_dir)
        assert open(st.ca_file, "rb").read() == (h.srv.settings.data_dir / "tls" / "ca.crt").read_bytes()


# ---------------------------------------------------------------------------- the attacks
class Rogue:
    """A local plain-HTTP service with something worth stealing; counts the requests it answers."""

    def __init__(self, host="127.0.0.1"):
        rogue = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                rogue.requests += 1
                body = b"SECRET-FROM-A-LOCAL-SERVICE\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _point_node(h, node, *, address=None, port=None):
    """What a lying node writes into its own Node (done with the admin credential here: the node
    authorizer may refuse it, and the log proxy must not depend on that)."""
    st = h.admin.get("nodes", node)["status"]
    if address:
        st["addresses"] = [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": node}]
    if port:
        st["daemonEndpoints"] = {"kubeletEndpoint": {"Port": port}}
    h.admin.patch("nodes", node, {"status": st}, subresource="status")


def test_a_node_pointing_its_internal_ip_and_port_at_a_local_service_gets_an_error_never_its_content(h):
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    _pod_running(h)
    n.agent.stop()                  # so that its status updates do not undo the lie below
    rogue_other = Rogue("127.0.0.2")
    rogue_local = Rogue("127.0.0.1")
    try:
        # the InternalIP is not used: the server connects to the recorded 127.0.0.1, where
        # nothing listens on that port (or something else answers — but never in plain HTTP)
        _point_node(h, "node-1", address="127.0.0.2", port=rogue_other.port)
        with pytest.raises(errors.ApiError) as ei:
            _logs(h)
        assert ei.value.code in (502, 503) and "SECRET" not in ei.value.message
        assert "node node-1" in ei.value.message and "127.0.0.1" in ei.value.message
        # the port is the node's to choose, on its own address: a plain-HTTP service there is no agent
        _point_node(h, "node-1", port=rogue_local.port)
        with pytest.raises(errors.ApiError) as ei:
            _logs(h)
        assert ei.value.code == 502 and "is not that node's agent" in ei.value.message, ei.value.message
        assert "SECRET" not in ei.value.message
        assert rogue_other.requests == rogue_local.requests == 0
    finally:
        rogue_other.close()
        rogue_local.close()


def test_an_https_service_of_another_ca_is_refused(h, tmp_path):
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    _pod_running(h)
    n.agent.stop()
    files = tls.ensure_server_certs(tmp_path / "foreign", "127.0.0.1", [])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files["cert"], files["key"])
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    served = []

    def serve():
        try:
            conn, _ = srv.accept()
            with ctx.wrap_socket(conn, server_side=True) as s:
                served.append(s.recv(1024))
                s.sendall(b"HTTP/1.0 200 OK\r\n\r\nSECRET\n")
        except (OSError, ssl.SSLError):
            pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        _point_node(h, "node-1", port=port)
        with pytest.raises(errors.ApiError) as ei:
            _logs(h)
        assert ei.value.code == 502 and "does not verify" in ei.value.message and "SECRET" not in ei.value.message
        t.join(timeout=5)
        assert served == []         # the request was never sent
    finally:
        srv.close()


def test_an_agent_whose_certificate_names_another_node_is_refused(h):
    n1 = h.start_agent("node-1")
    n2 = h.start_agent("node-2")
    h.assign_cidr("node-1")
    h.assign_cidr("node-2", "10.244.2.0/24")
    _pod_running(h, "node-1")
    n1.agent.stop()
    # node-1 points the server at node-2's agent (same address, a CA-signed certificate — of node-2)
    _point_node(h, "node-1", port=n2.agent.logserver.port)
    with pytest.raises(errors.ApiError) as ei:
        _logs(h)
    assert ei.value.code == 502
    assert "its certificate names system:node:node-2, not system:node:node-1" in ei.value.message


def test_a_certificate_of_an_earlier_machine_of_that_name_is_refused(h, tmp_path):
    """The record pins the key of the node's last join: a machine that held the name before (and
    kept its still-valid certificate) is not that node any more."""
    old = h.start_agent("node-1")
    h.assign_cidr("node-1")
    _pod_running(h)
    assert _logs(h)
    # the name moves on: the node renews with a new key (a reinstall that kept its password)
    new_key = serving_key(tmp_path / "new-machine")
    creds = json.loads((old.data_dir / "credentials.json").read_text())
    with Client(h.srv.url, creds["token"]) as c:
        c.request("POST", "/shoal/v1/node-certificate",
                  body={"nodeName": "node-1", "servingCertificateRequest": serving_csr(new_key, "node-1")})
    # the old agent still serves its old (CA-signed, unexpired) certificate at the same place
    with pytest.raises(errors.ApiError) as ei:
        _logs(h)
    assert ei.value.code == 502 and "not the one node node-1 registered" in ei.value.message
