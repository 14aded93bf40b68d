"""The API server → agent link's certificates (issue 17), without a network: what the API server
signs for a node's CSR (CN, SANs, usage, validity) and refuses, its own client certificate, the
checks each side makes of the other's certificate, and the agent's keep-or-renew decisions."""
from __future__ import annotations

import datetime as dt
import json
import os
import stat
import threading
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal.agent import join as J
from shoal.agent.logserver import client_cert_problem
from shoal.apiserver import logproxy, nodecerts, nodeclient, tls
from shoal.machinery.api import errors

pytestmark = pytest.mark.unit

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
PEER = "10.0.0.5"


@pytest.fixture(scope="module")
def ca():
    return tls.new_ca(now=NOW)


def _csr(subject=None, *, key=None, sans=None, extensions=(), node="h1"):
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = subject if subject is not None else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                f"system:node:{node}")])
    b = x509.CertificateSigningRequestBuilder().subject_name(name)
    if sans is not None:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext in extensions:
        b = b.add_extension(ext, critical=False)
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(key, algo).public_bytes(serialization.Encoding.PEM).decode(), key


def _issue(ca, node="h1", addresses=(PEER,), key=None, now=NOW):
    pem, key = _csr(node=node, key=key)
    csr = tls.check_node_csr(pem, node, list(addresses))
    return tls.sign_node_serving_cert(ca[0], ca[1], csr, node, list(addresses), now=now), key


# ---------------------------------------------------------------------------- what is signed
def test_serving_certificate_names_the_node_and_only_the_verified_address(ca):
    cert, key = _issue(ca)
    cert.verify_directly_issued_by(ca[0])
    assert cert.subject.rfc4514_string() == "CN=system:node:h1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [PEER]
    assert san.get_values_for_type(x509.DNSName) == []          # no name SAN (tls module docstring)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - NOW == tls.NODE_CERT_VALIDITY == dt.timedelta(days=365)
    assert tls.public_key_sha256(cert) == tls.public_key_sha256(x509.load_pem_x509_csr(_csr(key=key)[0].encode()))


def test_an_ipv4_seen_as_mapped_ipv6_is_named_as_ipv4(ca):
    assert nodecerts.peer_address(SimpleNamespace(host="::ffff:10.0.0.5")) == PEER
    cert, _ = _issue(ca, addresses=[nodecerts.peer_address(SimpleNamespace(host="::ffff:10.0.0.5"))])
    assert tls.cert_sans(cert) == [PEER]


@pytest.mark.parametrize("client,want", [
    (SimpleNamespace(host="127.0.0.1", port=5), "127.0.0.1"),
    (SimpleNamespace(host="::ffff:192.0.2.1", port=5), "192.0.2.1"),
    (SimpleNamespace(host="FD00::1", port=5), "fd00::1"),
    (SimpleNamespace(host="fe80::1%eth0", port=5), "fe80::1"),
    (SimpleNamespace(host="testclient", port=5), None),     # Starlette's test transport: no IP peer
    (None, None),
])
def test_peer_address(client, want):
    assert nodecerts.peer_address(client) == want


def _name(*attrs):
    return x509.Name([x509.NameAttribute(oid, v) for oid, v in attrs])


@pytest.mark.parametrize("case,match", [
    ("another node's name", "subject must be exactly CN=system:node:h1, not CN=system:node:h2"),
    ("a bare name", "subject must be exactly CN=system:node:h1, not CN=h1"),
    ("extra subject", "subject must be exactly CN=system:node:h1"),
    ("an address not seen", "subjectAltName 10.9.9.9: the join came from 10.0.0.5"),
    ("a DNS name", "subjectAltName 'kubernetes.default': only IP addresses"),
    ("another extension", "only subjectAltName may be asked for"),
    ("a short RSA key", "RSA keys must have at least 2048 bits, not 1024"),
    ("an Ed25519 key", "unsupported key type"),
    ("a P-521 key", "EC keys must be on P-256 or P-384, not secp521r1"),
    ("not PEM", "not a PEM certificate request"),
    ("a lone surrogate", "not a PEM certificate request: it holds characters no PEM text has"),
    ("too large", "larger than 16384 bytes"),
    ("a forged signature", "signature does not match its key"),
])
def test_refused_requests_say_why(case, match):
    h1 = ((NameOID.COMMON_NAME, "system:node:h1"),)
    make = {
        "another node's name": lambda: _csr(node="h2")[0],
        "a bare name": lambda: _csr(_name((NameOID.COMMON_NAME, "h1")))[0],
        "extra subject": lambda: _csr(_name(*h1, (NameOID.ORGANIZATION_NAME, "system:masters")))[0],
        "an address not seen": lambda: _csr(sans=[x509.IPAddress(__import__("ipaddress").ip_address("10.9.9.9"))])[0],
        "a DNS name": lambda: _csr(sans=[x509.DNSName("kubernetes.default")])[0],
        "another extension": lambda: _csr(extensions=[x509.BasicConstraints(ca=True, path_length=None)])[0],
        "a short RSA key": lambda: _csr(key=rsa.generate_private_key(public_exponent=65537, key_size=1024))[0],
        "an Ed25519 key": lambda: _csr(key=ed25519.Ed25519PrivateKey.generate())[0],
        "a P-521 key": lambda: _csr(key=ec.generate_private_key(ec.SECP521R1()))[0],
        "not PEM": lambda: "-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n",
        "too large": lambda: "x" * (tls.MAX_CSR_BYTES + 1),
        "a lone surrogate": lambda: "-----BEGIN CERTIFICATE REQUEST-----\ud800",
        "a forged signature": lambda: _forged(),
    }[case]
    with pytest.raises(tls.CSRRefused, match=match):
        tls.check_node_csr(make(), "h1", [PEER])


def _forged() -> str:
    """h1's CSR with another key swapped in: the self-signature no longer verifies."""
    good = x509.load_pem_x509_csr(_csr()[0].encode())
    other = x509.load_pem_x509_csr(_csr()[0].encode())
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    a = good.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    b = other.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    i = bytes(der).index(a)
    der[i:i + len(a)] = b
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


def test_accepted_requests(ca):
    import ipaddress
    assert tls.check_node_csr(_csr()[0], "h1", [PEER])
    assert tls.check_node_csr(_csr(sans=[x509.IPAddress(ipaddress.ip_address(PEER))])[0], "h1", [PEER])
    assert tls.check_node_csr(_csr(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))[0],
                              "h1", [PEER])
    assert tls.check_node_csr(_csr(key=ec.generate_private_key(ec.SECP384R1()))[0], "h1", [PEER])


def test_prepare_checks_before_anything_is_written():
    client = SimpleNamespace(host=PEER)
    assert nodecerts.prepare({"nodeName": "h1"}, "h1", client) is None
    with pytest.raises(errors.Invalid, match="servingCertificateRequest: required") as ei:
        nodecerts.prepare({"nodeName": "h1"}, "h1", client, required=True)
    assert ei.value.causes[0].field == "servingCertificateRequest"
    with pytest.raises(errors.Invalid, match="a PEM string is required"):
        nodecerts.prepare({"servingCertificateRequest": 7}, "h1", client)
    with pytest.raises(errors.Invalid, match="CN=system:node:h1, not CN=system:node:h2"):
        nodecerts.prepare({"servingCertificateRequest": _csr(node="h2")[0]}, "h1", client)
    with pytest.raises(errors.Invalid, match="cannot tell which address"):
        nodecerts.prepare({"servingCertificateRequest": _csr()[0]}, "h1", SimpleNamespace(host="testclient"))
    p = nodecerts.prepare({"servingCertificateRequest": _csr()[0]}, "h1", client)
    assert (p.node, p.address) == ("h1", PEER)


@pytest.mark.parametrize("role,subject,body,error", [
    ("node", "h1", {"nodeName": "h1"}, None),
    ("node", "h1", {"nodeName": "h2"}, errors.Forbidden),
    ("node", "h1", {}, errors.Invalid),
    ("join", "", {"nodeName": "h1"}, errors.Forbidden),
    ("admin", "", {"nodeName": "h1"}, errors.Forbidden),
])
def test_only_a_node_renews_and_only_its_own(role, subject, body, error):
    if error is None:
        assert nodecerts.renewal_node(role, subject, body) == "h1"
    else:
        with pytest.raises(error):
            nodecerts.renewal_node(role, subject, body)


# ---------------------------------------------------------------------------- checks after the handshake
def test_the_api_server_accepts_only_the_named_nodes_registered_certificate(ca):
    cert, _ = _issue(ca, node="h1")
    assert tls.node_cert_problem(cert, "h1", key_sha256=tls.public_key_sha256(cert)) is None
    assert tls.node_cert_problem(cert, "h2") == "its certificate names system:node:h1, not system:node:h2"
    assert "not the one node h1 registered" in tls.node_cert_problem(cert, "h1", key_sha256="00" * 32)
    client, _ = tls.new_client_cert(ca[0], ca[1], now=NOW)
    assert "names shoal-apiserver, not system:node:h1" in tls.node_cert_problem(client, "h1")
    as_node, _ = tls.new_client_cert(ca[0], ca[1], now=NOW, common_name="system:node:h1")
    assert tls.node_cert_problem(as_node, "h1") == "its certificate is not a serving certificate (no serverAuth usage)"


def _der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def test_the_agent_accepts_only_the_api_servers_client_certificate(ca):
    client, _ = tls.new_client_cert(ca[0], ca[1], now=NOW)
    assert client_cert_problem(_der(client)) is None
    other, _ = tls.new_client_cert(ca[0], ca[1], now=NOW, common_name="system:node:h2")
    assert client_cert_problem(_der(other)) == "the client certificate names system:node:h2, not shoal-apiserver"
    serving, _ = tls.new_server_cert(ca[0], ca[1], ["127.0.0.1"], now=NOW)     # the API server's own, CN alike
    assert client_cert_problem(_der(serving)) == "the client certificate is not for client authentication"
    assert client_cert_problem(None) == "no client certificate"
    assert client_cert_problem(b"junk") == "an unreadable client certificate"


# ---------------------------------------------------------------------------- the API server's client certificate
def test_client_certificate_is_made_with_the_ca_private_and_reused(tmp_path):
    d = tmp_path / "tls"
    tls.ensure_server_certs(d, "127.0.0.1", [], clock=lambda: NOW, hostname="box")
    for name in ("apiserver-client.key", "apiserver-client.crt", "ca.key", "server.key"):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600, name
    ca = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((d / "apiserver-client.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=shoal-apiserver"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    before = (d / "apiserver-client.crt").read_bytes()
    assert tls.ensure_apiserver_client_cert(d, clock=lambda: NOW + dt.timedelta(days=200))["cert"]
    assert (d / "apiserver-client.crt").read_bytes() == before           # 165 days of 365 left: kept
    tls.ensure_apiserver_client_cert(d, clock=lambda: NOW + dt.timedelta(days=250))
    assert (d / "apiserver-client.crt").read_bytes() != before           # under a third left: renewed
    assert (d / "ca.crt").read_bytes() == ca.public_bytes(serialization.Encoding.PEM)


def test_a_plain_http_server_gets_its_ca_and_client_certificate_at_first_use(tmp_path):
    files = tls.ensure_apiserver_client_cert(tmp_path / "tls", clock=lambda: NOW)
    assert set(files) == {"ca", "cert", "key"} and not (tmp_path / "tls" / "server.crt").exists()
    assert stat.S_IMODE(os.stat(tmp_path / "tls").st_mode) == 0o700


def test_concurrent_first_uses_make_one_ca(tmp_path):
    got = []
    threads = [threading.Thread(target=lambda: got.append(tls.ensure_cluster_ca(tmp_path / "tls")[0]))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({c.fingerprint(hashes.SHA256()) for c in got}) == 1


@pytest.mark.parametrize("days,other_ca,want", [
    (0, False, None),
    (240, False, None),
    (250, False, "less than a third"),
    (400, False, "less than a third"),
    (0, True, "signed by another CA"),
])
def test_renewal_due(ca, days, other_ca, want):
    issuer = tls.new_ca(now=NOW) if other_ca else ca
    cert, _ = tls.new_client_cert(issuer[0], issuer[1], now=NOW)
    got = tls.renewal_due(cert, ca[0], now=NOW + dt.timedelta(days=days))
    assert got is None if want is None else want in got
    assert tls.renewal_due(None, ca[0], now=NOW) == "no certificate"


def test_the_link_is_rebuilt_when_the_client_certificate_is_due(tmp_path):
    now = [dt.datetime.now(dt.timezone.utc)]
    a = nodeclient.link_for(tmp_path, clock=lambda: now[0])
    assert nodeclient.link_for(tmp_path, clock=lambda: now[0]) is a
    now[0] += dt.timedelta(days=250)
    b = nodeclient.link_for(tmp_path, clock=lambda: now[0])
    assert b is not a and b.files["cert"] == a.files["cert"] and b.renew_at > a.renew_at


def test_log_path_quotes_every_part():
    assert logproxy.agent_path("ns", "p/x", "c d", {"follow": "true", "tailLines": "3", "x": "y"}) == \
        "/containerLogs/ns/p%2Fx/c%20d?follow=true&tailLines=3"
    assert logproxy.agent_path("ns", "p", "c", {}) == "/containerLogs/ns/p/c"


# ---------------------------------------------------------------------------- the agent's side
def test_agent_key_stays_private_and_the_csr_asks_for_the_name_only(tmp_path):
    key = J.serving_key(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "tls" / "serving.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "tls").st_mode) == 0o700
    assert J.serving_key(tmp_path).private_numbers() == key.private_numbers()        # kept, not remade
    csr = x509.load_pem_x509_csr(J.serving_csr(key, "h1").encode())
    assert csr.subject.rfc4514_string() == "CN=system:node:h1" and len(csr.extensions) == 0
    assert tls.check_node_csr(J.serving_csr(key, "h1"), "h1", [PEER])             # what the server signs


def test_agent_serving_cert_problems(ca):
    cert, key = _issue(ca)
    other_key = ec.generate_private_key(ec.SECP256R1())
    assert J.serving_cert_problem(cert, key, ca[0], "h1", now=NOW) is None
    assert J.serving_cert_problem(None, key, ca[0], "h1", now=NOW) == "no serving certificate"
    assert J.serving_cert_problem(cert, other_key, ca[0], "h1", now=NOW) == "the certificate is for another key"
    assert J.serving_cert_problem(cert, key, tls.new_ca(now=NOW)[0], "h1", now=NOW) == \
        "the certificate is not signed by the cluster CA"
    assert J.serving_cert_problem(cert, key, ca[0], "h2", now=NOW) == \
        "the certificate is for system:node:h1, not system:node:h2"
    assert "less than a third" in J.serving_cert_problem(cert, key, ca[0], "h1", now=NOW + dt.timedelta(days=250))


class Transport:
    """The server side scripted on a real CA (tests/unit/test_tls_join.py has the join decisions)."""

    def __init__(self, *, address=PEER, probe=200):
        self.ca_cert, self.ca_key = tls.new_ca(now=dt.datetime.now(dt.timezone.utc))
        self.ca = self.ca_cert.public_bytes(serialization.Encoding.PEM)
        self.address, self.probe_status, self.calls, self.renew_error, self.ca_answered = address, probe, [], None, None
        self.now: dt.datetime | None = None         # the server's clock (None: the real one)

    def fetch_ca(self, server):
        return self.ca

    def _sign(self, node, pem):
        now = self.now or dt.datetime.now(dt.timezone.utc)
        cert = tls.sign_node_serving_cert(self.ca_cert, self.ca_key, tls.check_node_csr(pem, node, [self.address]),
                                          node, [self.address], now=now)
        return {"servingCertificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
                "caCertificate": (self.ca_answered or self.ca).decode(), "address": self.address}

    def join(self, server, token, node, ca_pem, password, csr_pem):
        self.calls.append("join")
        return {"nodeName": node, "token": "tok", **self._sign(node, csr_pem)}

    def renew(self, creds, csr_pem):
        self.calls.append("renew")
        if self.renew_error:
            raise self.renew_error
        return {"nodeName": creds.nodeName, **self._sign(creds.nodeName, csr_pem)}

    def probe(self, creds):
        self.calls.append("probe")
        return self.probe_status


def _token(t):
    import hashlib
    return f"K10{hashlib.sha256(t.ca).hexdigest()}::server:s"


def test_join_saves_certificate_and_ca_and_serving_tls_reads_the_verified_address(tmp_path):
    t = Transport(address="192.0.2.9")
    J.ensure_credentials("https://s:6443", _token(t), "h1", tmp_path, transport=t)
    st = J.serving_tls(tmp_path)
    assert st.address == "192.0.2.9" and st.key_file.endswith("tls/serving.key")
    assert open(st.ca_file, "rb").read() == t.ca
    assert stat.S_IMODE(os.stat(st.cert_file).st_mode) == 0o600
    st.context()                                    # cert, key and CA load into an SSL context
    assert "apiserverToken" not in (tmp_path / "credentials.json").read_text()


def test_restart_renews_only_when_due(tmp_path):
    t = Transport()
    J.ensure_credentials("https://s:6443", _token(t), "h1", tmp_path, transport=t)
    key = (tmp_path / "tls" / "serving.key").read_bytes()
    cert = (tmp_path / "tls" / "serving.crt").read_bytes()
    t.calls = []
    J.ensure_credentials("https://s:6443", _token(t), "h1", tmp_path, transport=t)
    assert t.calls == ["probe"] and (tmp_path / "tls" / "serving.crt").read_bytes() == cert
    t.now = later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=250)
    J.ensure_credentials("https://s:6443", "", "h1", tmp_path, transport=t, clock=lambda: later)
    assert t.calls == ["probe", "probe", "renew"]                  # no join token needed to renew
    assert (tmp_path / "tls" / "serving.crt").read_bytes() != cert
    assert (tmp_path / "tls" / "serving.key").read_bytes() == key  # the same key, a new certificate


def test_a_lost_certificate_is_renewed_and_an_unreachable_server_keeps_a_valid_one(tmp_path):
    t = Transport()
    J.ensure_credentials("https://s:6443", _token(t), "h1", tmp_path, transport=t)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=250)
    t.renew_error = ConnectionError("connection refused")
    J.ensure_credentials("https://s:6443", "", "h1", tmp_path, transport=t, clock=lambda: later)   # kept
    assert J.serving_tls(tmp_path).address == PEER
    (tmp_path / "tls" / "serving.crt").unlink()
    with pytest.raises(J.JoinError, match="no usable serving certificate .* cannot be reached"):
        J.ensure_credentials("https://s:6443", "", "h1", tmp_path, transport=t)
    t.renew_error = None
    J.ensure_credentials("https://s:6443", "", "h1", tmp_path, transport=t)
    assert J.serving_tls(tmp_path).address == PEER


def test_a_certificate_from_a_ca_other_than_the_pinned_one_is_refused(tmp_path):
    t = Transport()
    t.ca_answered = tls.new_ca(now=NOW)[0].public_bytes(serialization.Encoding.PEM)
    with pytest.raises(J.JoinError, match="CA other than the one its join token pins"):
        J.ensure_credentials("https://s:6443", _token(t), "h1", tmp_path, transport=t)
    assert not (tmp_path / "tls" / "serving.crt").exists()


def test_old_credentials_with_the_shared_token_are_read_and_rewritten_without_it(tmp_path):
    t = Transport()
    J.ensure_credentials("https://s:6443", _token(t), "h1", tmp_path, transport=t)
    f = tmp_path / "credentials.json"
    d = json.loads(f.read_text())
    f.write_text(json.dumps({**d, "apiserverToken": "shoal-apiserver-old"}))
    creds = J.load_credentials(tmp_path)
    assert creds.token == "tok" and "apiserverToken" not in f.read_text()
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
