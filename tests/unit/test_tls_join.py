"""TLS certificates, the pinned join token and the agent's join decisions (no network)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat

import pytest
from cryptography import x509

from shoal.agent import join as J
from shoal.apiserver import auth, tls

pytestmark = pytest.mark.unit

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------------------- SANs
@pytest.mark.parametrize("listen,extra,hostname,addresses,want", [
    ("127.0.0.1", [], "box", ["192.168.1.5"], ["127.0.0.1", "::1", "box", "localhost"]),
    ("0.0.0.0", ["10.213.0.2"], "box", [], ["10.213.0.2", "127.0.0.1", "::1", "box", "localhost"]),
    ("::", ["[fd00::1]", "API.Example.com", " "], None, [],
     ["127.0.0.1", "::1", "api.example.com", "fd00::1", "localhost"]),
    ("192.168.1.10", ["192.168.1.10"], "h", ["10.0.0.9"], ["127.0.0.1", "192.168.1.10", "::1", "h", "localhost"]),
    # a wildcard listen: the host's own addresses are where clients reach it
    ("0.0.0.0", [], "Box", ["192.168.1.5", "FD00:0::2"], ["127.0.0.1", "192.168.1.5", "::1", "box", "fd00::2",
                                                          "localhost"]),
    ("", [], "box", ["10.1.2.3"], ["10.1.2.3", "127.0.0.1", "::1", "box", "localhost"]),
    ("::1", [], "box", ["10.1.2.3"], ["127.0.0.1", "::1", "box", "localhost"]),
    ("[fd00::7]", [], "box", [], ["127.0.0.1", "::1", "box", "fd00::7", "localhost"]),
])
def test_desired_sans(listen, extra, hostname, addresses, want):
    assert tls.desired_sans(listen, extra, hostname=hostname, addresses=addresses) == want


def test_host_addresses_are_reachable_kinds_only():
    got = tls.host_addresses()
    import ipaddress
    for a in got:
        ip = ipaddress.ip_address(a)
        assert not (ip.is_loopback or ip.is_link_local or ip.is_unspecified), a
    assert len(got) == len(set(got))


def test_wildcard_listen_puts_the_host_addresses_in_the_certificate(tmp_path, monkeypatch):
    monkeypatch.setattr(tls, "host_addresses", lambda: ["192.0.2.77"])
    files = tls.ensure_server_certs(tmp_path / "a", "0.0.0.0", [], clock=lambda: NOW, hostname="box")
    assert "192.0.2.77" in tls.cert_sans(_cert(files["cert"]))
    files = tls.ensure_server_certs(tmp_path / "b", "127.0.0.1", [], clock=lambda: NOW, hostname="box")
    assert "192.0.2.77" not in tls.cert_sans(_cert(files["cert"]))


def _cert(path):
    return x509.load_pem_x509_certificate(open(path, "rb").read())


def test_certs_are_created_with_modes_and_sans_and_reused(tmp_path):
    d = tmp_path / "tls"
    files = tls.ensure_server_certs(d, "0.0.0.0", ["10.213.0.2"], clock=lambda: NOW, hostname="box", addresses=[])
    assert set(files) == {"ca", "cert", "key"}
    for name in ("ca.key", "server.key"):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600
    ca, srv = _cert(files["ca"]), _cert(files["cert"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (ca.not_valid_after_utc - NOW).days >= 3649
    assert tls.cert_sans(srv) == ["10.213.0.2", "127.0.0.1", "::1", "box", "localhost"]
    srv.verify_directly_issued_by(ca)
    before = {n: (d / n).read_bytes() for n in ("ca.crt", "ca.key", "server.crt", "server.key")}
    tls.ensure_server_certs(d, "0.0.0.0", ["10.213.0.2"], clock=lambda: NOW, hostname="box", addresses=[])
    assert {n: (d / n).read_bytes() for n in before} == before


def test_serving_cert_is_reissued_when_sans_change_but_ca_stays(tmp_path):
    d = tmp_path / "tls"
    tls.ensure_server_certs(d, "0.0.0.0", ["10.0.0.1"], clock=lambda: NOW, hostname="box", addresses=[])
    ca_before, cert_before = (d / "ca.crt").read_bytes(), (d / "server.crt").read_bytes()
    tls.ensure_server_certs(d, "0.0.0.0", ["10.0.0.1", "10.0.0.2"], clock=lambda: NOW, hostname="box",
                            addresses=[])
    assert (d / "ca.crt").read_bytes() == ca_before
    assert (d / "server.crt").read_bytes() != cert_before
    assert "10.0.0.2" in tls.cert_sans(_cert(d / "server.crt"))


def test_renewal_reasons():
    ca, key = tls.new_ca(now=NOW)
    other_ca, other_key = tls.new_ca(now=NOW)
    cert, _ = tls.new_server_cert(ca, key, ["127.0.0.1", "localhost"], now=NOW)
    foreign, _ = tls.new_server_cert(other_ca, other_key, ["127.0.0.1", "localhost"], now=NOW)
    want = ["127.0.0.1", "localhost"]
    assert tls.server_cert_needs_renewal(cert, ca, want, now=NOW) is None
    assert tls.server_cert_needs_renewal(None, ca, want, now=NOW) == "no serving certificate"
    assert tls.server_cert_needs_renewal(foreign, ca, want, now=NOW) == "signed by another CA"
    assert "SANs changed" in tls.server_cert_needs_renewal(cert, ca, ["127.0.0.1"], now=NOW)
    later = NOW + dt.timedelta(days=340)
    assert tls.server_cert_needs_renewal(cert, ca, want, now=later).startswith("expires")


def test_ca_hash_is_sha256_of_the_pem(tmp_path):
    files = tls.ensure_server_certs(tmp_path, "127.0.0.1", [], clock=lambda: NOW, hostname="box")
    pem = open(files["ca"], "rb").read()
    assert tls.ca_hash(pem) == hashlib.sha256(pem).hexdigest() == tls.ca_hash(pem.decode())


# ---------------------------------------------------------------------------- token format
PIN = "ab" * 32


@pytest.mark.parametrize("token,want", [
    (f"K10{PIN}::server:s3cret-_x", (PIN, "s3cret-_x")),
    ("K10plainrandom", (None, "K10plainrandom")),
    (f"K10{PIN[:-1]}::server:x", (None, f"K10{PIN[:-1]}::server:x")),   # a short pin is no pin
    (f"  K10{PIN}::server:abc\n", (PIN, "abc")),
])
def test_split_join_token_agent_and_server_agree(token, want):
    assert auth.split_join_token(token) == want
    assert J.split_join_token(token) == want


def test_format_join_token():
    assert auth.format_join_token("abc", PIN) == f"K10{PIN}::server:abc"
    assert auth.format_join_token("K10abc", None) == "K10abc"


# ---------------------------------------------------------------------------- join decisions
class FakeTransport:
    """Scripted: serves `ca` (a real CA, which signs the agent's CSRs as the API server would, for
    `address`), answers probes with `probe_status`, renewals with `renew_error` when set, and
    records every call."""

    def __init__(self, probe_status: int = 200, address: str = "10.0.0.5"):
        from cryptography.hazmat.primitives import serialization
        self.ca_cert, self.ca_key = tls.new_ca(now=dt.datetime.now(dt.timezone.utc))
        self.ca = self.ca_cert.public_bytes(serialization.Encoding.PEM)
        self.probe_status, self.calls, self.n, self.address = probe_status, [], 0, address
        self.renew_error: Exception | None = None

    def fetch_ca(self, server):
        self.calls.append(("fetch_ca", server))
        return self.ca

    def _sign(self, node, csr_pem):
        from cryptography.hazmat.primitives import serialization
        csr = tls.check_node_csr(csr_pem, node, [self.address])
        cert = tls.sign_node_serving_cert(self.ca_cert, self.ca_key, csr, node, [self.address],
                                          now=dt.datetime.now(dt.timezone.utc))
        return {"servingCertificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
                "caCertificate": self.ca.decode(), "address": self.address}

    def join(self, server, join_token, node_name, ca_pem, node_password, csr_pem):
        self.calls.append(("join", server, join_token, node_name, ca_pem, node_password, csr_pem))
        self.n += 1
        return {"nodeName": node_name, "token": f"node-tok-{self.n}", **self._sign(node_name, csr_pem)}

    def renew(self, creds, csr_pem):
        self.calls.append(("renew", creds.token, csr_pem))
        if self.renew_error is not None:
            raise self.renew_error
        return {"nodeName": creds.nodeName, **self._sign(creds.nodeName, csr_pem)}

    def probe(self, creds):
        self.calls.append(("probe", creds.token))
        return self.probe_status


def _pin(t: FakeTransport) -> str:
    return hashlib.sha256(t.ca).hexdigest()


def test_first_join_verifies_pin_then_saves_credentials_mode_600(tmp_path):
    t = FakeTransport()
    tok = f"K10{_pin(t)}::server:sec"
    creds = J.ensure_credentials("https://10.0.0.1:6443/", tok, "h1", tmp_path, transport=t)
    assert [c[0] for c in t.calls] == ["fetch_ca", "join"]
    assert t.calls[1][4] == t.ca.decode()
    assert creds == J.NodeCredentials(server="https://10.0.0.1:6443", nodeName="h1", token="node-tok-1",
                                      ca=t.ca.decode())
    f = tmp_path / "credentials.json"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert json.loads(f.read_text())["token"] == "node-tok-1"


def test_restart_reuses_credentials_and_rejoins_only_on_401(tmp_path):
    t = FakeTransport()
    tok = f"K10{_pin(t)}::server:sec"
    J.ensure_credentials("https://s:6443", tok, "h1", tmp_path, transport=t)
    for status in (200, 404, 0, 403, 503):      # unreachable or not a rejection: keep it
        t.probe_status, t.calls = status, []
        assert J.ensure_credentials("https://s:6443", tok, "h1", tmp_path, transport=t).token == "node-tok-1"
        assert [c[0] for c in t.calls] == ["probe"]
    t.probe_status, t.calls = 401, []
    assert J.ensure_credentials("https://s:6443", tok, "h1", tmp_path, transport=t).token == "node-tok-2"
    assert [c[0] for c in t.calls] == ["probe", "fetch_ca", "join"]
    assert J.load_credentials(tmp_path).token == "node-tok-2"


def test_every_join_sends_the_node_password_kept_mode_600_in_the_data_dir(tmp_path):
    t = FakeTransport()
    tok = f"K10{_pin(t)}::server:sec"
    J.ensure_credentials("https://s:6443", tok, "h1", tmp_path, transport=t)
    f = tmp_path / "node-password"
    pw = f.read_text().strip()
    assert stat.S_IMODE(f.stat().st_mode) == 0o600 and len(pw) >= 43     # 32 random bytes, base64
    assert t.calls[-1][5] == pw
    t.probe_status = 401                        # the credential was revoked: the rejoin proves the same node
    J.ensure_credentials("https://s:6443", tok, "h1", tmp_path, transport=t)
    assert t.calls[-1][5] == pw and f.read_text().strip() == pw
    other = tmp_path / "other"
    J.ensure_credentials("https://s:6443", tok, "h2", other, transport=t)
    assert t.calls[-1][5] == (other / "node-password").read_text().strip() != pw


def test_credentials_for_another_server_or_node_are_not_reused(tmp_path):
    t = FakeTransport()
    tok = f"K10{_pin(t)}::server:sec"
    J.ensure_credentials("https://s:6443", tok, "h1", tmp_path, transport=t)
    t.calls = []
    assert J.ensure_credentials("https://s:6443", tok, "h2", tmp_path, transport=t).nodeName == "h2"
    assert [c[0] for c in t.calls] == ["fetch_ca", "join"]


def test_wrong_ca_is_refused_and_nothing_is_sent_or_saved(tmp_path):
    t = FakeTransport()
    with pytest.raises(J.JoinError, match=r"sha256 [0-9a-f]{64}, but the join token pins " + "cd" * 32):
        J.ensure_credentials("https://s:6443", f"K10{'cd' * 32}::server:sec", "h1", tmp_path, transport=t)
    assert [c[0] for c in t.calls] == ["fetch_ca"]
    assert not (tmp_path / "credentials.json").exists()


def test_https_without_pin_is_refused_and_http_skips_the_ca(tmp_path):
    t = FakeTransport()
    with pytest.raises(J.JoinError, match="pins no CA"):
        J.ensure_credentials("https://s:6443", "K10bare", "h1", tmp_path, transport=t)
    creds = J.ensure_credentials("http://127.0.0.1:6443", "K10bare", "h1", tmp_path, transport=t)
    assert creds.ca == "" and creds.ca_data_b64() is None
    assert [c[0] for c in t.calls] == ["join"]


def test_no_token_and_no_credentials_is_a_clear_error(tmp_path):
    with pytest.raises(J.JoinError, match="no join token was given"):
        J.ensure_credentials("https://s:6443", "", "h1", tmp_path, transport=FakeTransport())


def test_unreadable_credentials_mean_join_again(tmp_path):
    (tmp_path / "credentials.json").write_text("{not json")
    t = FakeTransport()
    assert J.ensure_credentials("https://s", f"K10{_pin(t)}::server:x", "h1", tmp_path, transport=t).token == "node-tok-1"
