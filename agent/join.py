"""Joining a cluster: from a join token to a node credential and a serving certificate.

Contract:
- `join_cluster(server_url, join_token, node_name, data_dir) -> Client`: a
  client of the API server authenticated as `system:node:<node_name>` and
  trusting the server's CA. `ensure_credentials(...)` is the same but returns
  the `NodeCredentials`, having also made sure the agent has a current serving
  certificate (`serving_tls(data_dir)` loads it for the log endpoint).
- Credentials live in `<data_dir>/credentials.json` (mode 600):
  `{"server", "nodeName", "token", "ca"}` (`ca` is the PEM, or "" for a
  plain-HTTP server). A file written before the API server → agent link moved to
  mutual TLS also holds `apiserverToken`, the old shared log-endpoint token: it
  is ignored and dropped from the file. On restart the credentials are
  reused; the agent joins again only when the API server answers 401 to them
  (the credential was rotated or the database replaced), or when they were
  issued for another
  server URL or node name. A server that cannot be reached is not a reason to
  join again: the saved credential is returned and the agent retries.
- Node identity, k3s' node-password scheme: before its first join the agent
  generates a random node password (32 bytes) into `<data_dir>/node-password`
  (mode 600) and sends it with every join. The server binds the node name to
  it at the first join and refuses (403) a later join under that name with
  another password, so the join token alone cannot take over a node that has
  joined; an agent that keeps its data dir (restart, reinstall) rejoins. The
  password is written before it is sent, so a join whose answer was lost can
  be repeated.
- Serving certificate (docs/security.md "API server to agent"): the agent makes
  an EC P-256 key in `<data_dir>/tls/serving.key` (mode 600; it never leaves the
  node) and sends a CSR for `CN=system:node:<node>` with every join
  (`servingCertificateRequest`). The server signs it with the cluster CA for the
  address it saw the join come from, and records that address as the only one
  it will connect to for this node. The certificate goes to `serving.crt`, the
  CA that signed it to `ca.crt` (it also signs the API server's client
  certificate, which the log endpoint requires). Over https that CA must be the
  one the join token pins. At every start the certificate is checked
  (`serving_cert_problem`): missing, for another key, CA or node, or with less
  than a third of its lifetime left, it is renewed with the node credential
  (`POST /shoal/v1/node-certificate`, no join token needed). A server that
  cannot be reached then leaves a still-valid certificate in use; without one
  the agent cannot serve logs and `ensure_credentials` raises `JoinError`.
- Trust, as k3s does it: the join token `K10<sha256 of the CA PEM>::server:<secret>`
  pins the CA. The CA is fetched without verification from `GET /cacerts`
  (unauthenticated), its SHA-256 compared with the pin — a mismatch is refused
  with `JoinError` naming both hashes — and only then is the token sent, over
  a connection verified with that CA. An https server with a token that pins
  nothing is refused too (there would be nothing to trust). Plain-HTTP
  servers (loopback development clusters) skip the CA step; the CA of the
  serving certificate then comes with the join's answer.

Design notes: every network step goes through one small `JoinTransport`
Protocol (fetch the CA, post the join, renew the certificate, probe a
credential), so the decision logic — reuse, re-join, renew, refuse — is tested
with a scripted fake. The real transport is httpx plus
`shoal.machinery.client.Client`.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client
from shoal.agent.hostfiles import private_dir
from shoal.agent.logserver import ServingTLS

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"
NODE_PASSWORD_FILE = "node-password"
TLS_DIR = "tls"
SERVING_KEY, SERVING_CERT, CLUSTER_CA = "serving.key", "serving.crt", "ca.crt"
# apiserver.tls spells the same name: the agent does not import the server's modules
NODE_CN_PREFIX = "system:node:"
# the format apiserver.auth writes; parsed here too so the agent does not import the server's auth module
_FULL_TOKEN = re.compile(r"^K10([0-9a-f]{64})::([^:]+):(.+)$")


def split_join_token(token: str) -> tuple[str | None, str]:
    """`K10<ca-sha256>::server:<secret>` → (pin, secret); a token without a pin → (None, token)."""
    m = _FULL_TOKEN.match(token.strip())
    return (m.group(1), m.group(3)) if m else (None, token.strip())


class JoinError(Exception):
    """The agent cannot join: bad token, CA mismatch, refused by the server."""


@dataclass(frozen=True)
class NodeCredentials:
    server: str
    nodeName: str
    token: str              # the node credential (role node, subject nodeName)
    ca: str                 # PEM of the server's CA; "" for a plain-HTTP server

    def ca_data_b64(self) -> str | None:
        return base64.b64encode(self.ca.encode()).decode() if self.ca else None

    def client(self, **kw) -> Client:
        return Client(self.server, self.token, ca_data=self.ca_data_b64(), **kw)


class JoinTransport(Protocol):
    def fetch_ca(self, server: str) -> bytes:
        """GET <server>/cacerts without verifying the server (the pin does that)."""

    def join(self, server: str, join_token: str, node_name: str, ca_pem: str, node_password: str,
             csr_pem: str) -> dict:
        """POST /shoal/v1/join; returns {"nodeName", "token", "servingCertificate", "caCertificate", "address"}."""

    def renew(self, creds: NodeCredentials, csr_pem: str) -> dict:
        """POST /shoal/v1/node-certificate with the node credential; returns
        {"nodeName", "servingCertificate", "caCertificate", "address"}. Raises JoinError when
        refused, `ConnectionError` when the server cannot be reached."""

    def probe(self, creds: NodeCredentials) -> int:
        """An authenticated request with the node credential: the HTTP status, 0 when unreachable."""


class HttpJoinTransport:
    def __init__(self, *, timeout: float = 10.0):
        self.timeout = timeout

    def fetch_ca(self, server: str) -> bytes:
        import httpx
        try:
            r = httpx.get(f"{server.rstrip('/')}/cacerts", verify=False, timeout=self.timeout)
        except httpx.HTTPError as e:
            raise JoinError(f"cannot fetch the CA from {server}/cacerts: {e}") from None
        if r.status_code != 200:
            raise JoinError(f"{server}/cacerts answered HTTP {r.status_code}: {r.text[:200]}")
        return r.content

    def join(self, server: str, join_token: str, node_name: str, ca_pem: str, node_password: str,
             csr_pem: str) -> dict:
        ca = base64.b64encode(ca_pem.encode()).decode() if ca_pem else None
        c = Client(server, join_token, ca_data=ca, timeout=self.timeout, user_agent=f"shoal-agent/{node_name}")
        try:
            return c.request("POST", "/shoal/v1/join", body={"nodeName": node_name, "nodePassword": node_password,
                                                             "servingCertificateRequest": csr_pem})
        except errors.Unauthorized as e:
            raise JoinError(f"the API server {server} rejected the join token: {e} "
                            f"(use the current token from <server data-dir>/join-token)") from None
        except errors.ApiError as e:
            raise JoinError(f"joining {server} as node {node_name} failed: {e}") from None
        finally:
            c.close()

    def renew(self, creds: NodeCredentials, csr_pem: str) -> dict:
        from shoal.machinery.client.rest import ConnectionFailed
        c = creds.client(timeout=self.timeout, user_agent=f"shoal-agent/{creds.nodeName}")
        try:
            return c.request("POST", "/shoal/v1/node-certificate",
                             body={"nodeName": creds.nodeName, "servingCertificateRequest": csr_pem})
        except ConnectionFailed as e:
            raise ConnectionError(str(e)) from None
        except errors.ApiError as e:
            raise JoinError(f"the API server {creds.server} refused to renew node {creds.nodeName}'s serving "
                            f"certificate: {e}") from None
        except OSError as e:            # TLS and socket failures: unreachable, not refused
            raise ConnectionError(f"cannot reach {creds.server}: {e}") from None
        finally:
            c.close()

    def probe(self, creds: NodeCredentials) -> int:
        c = creds.client(timeout=self.timeout, user_agent=f"shoal-agent/{creds.nodeName}")
        try:
            c.get("nodes", creds.nodeName)
            return 200
        except errors.NotFound:
            return 404
        except errors.ApiError as e:
            return e.code or 0
        except Exception as e:  # noqa: BLE001 — TLS and socket failures: unreachable, not rejected
            log.warning("node %s: cannot check its credential against %s: %s", creds.nodeName, creds.server, e)
            return 0
        finally:
            c.close()


def load_credentials(data_dir: str | os.PathLike) -> NodeCredentials | None:
    """The saved credentials, or None. A file that still carries the retired `apiserverToken`
    is read without it and written back without it."""
    p = Path(data_dir) / CREDENTIALS_FILE
    try:
        d = json.loads(p.read_text())
        creds = NodeCredentials(**{k: d[k] for k in NodeCredentials.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring unreadable credentials %s (%s): joining again", p, e)
        return None
    if isinstance(d, dict) and "apiserverToken" in d:
        try:
            save_credentials(data_dir, creds)
            log.info("dropped the retired log-endpoint token from %s (the API server now uses mutual TLS)", p)
        except OSError as e:
            log.warning("cannot rewrite %s without the retired log-endpoint token: %s", p, e)
    return creds


def _write_private(p: Path, data: bytes) -> None:
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)


def save_credentials(data_dir: str | os.PathLike, creds: NodeCredentials) -> Path:
    d = private_dir(data_dir, tighten=False)
    p = d / CREDENTIALS_FILE
    _write_private(p, json.dumps(asdict(creds), indent=1).encode())
    return p


def node_password(data_dir: str | os.PathLike) -> str:
    """The node password in `<data_dir>/node-password`, generated (mode 600) when missing."""
    p = Path(data_dir) / NODE_PASSWORD_FILE
    try:
        pw = p.read_text().strip()
    except FileNotFoundError:
        pw = ""
    if pw:
        return pw
    pw = secrets.token_urlsafe(32)
    private_dir(p.parent, tighten=False)     # the data dir: the file itself is 0600
    _write_private(p, (pw + "\n").encode())
    log.info("node password generated in %s", p)
    return pw


# ---------------------------------------------------------------------------- serving certificate
def _tls_dir(data_dir: str | os.PathLike) -> Path:
    return private_dir(Path(data_dir) / TLS_DIR, tighten=True)


def serving_key(data_dir: str | os.PathLike) -> ec.EllipticCurvePrivateKey:
    """The agent's serving key `<data_dir>/tls/serving.key` (EC P-256, mode 600), made when
    missing or unreadable. It never leaves the node: the server gets a CSR."""
    p = _tls_dir(data_dir) / SERVING_KEY
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key
        log.warning("%s is not an EC key: making a new one", p)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        log.warning("unreadable serving key %s (%s): making a new one", p, e)
    key = ec.generate_private_key(ec.SECP256R1())
    _write_private(p, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    log.info("serving key generated in %s", p)
    return key


def serving_csr(key: ec.EllipticCurvePrivateKey, node: str) -> str:
    """A CSR for `CN=system:node:<node>` and nothing else: the server decides the addresses."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE_CN_PREFIX + node)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def serving_cert_problem(cert: x509.Certificate | None, key: ec.EllipticCurvePrivateKey,
                         ca: x509.Certificate | None, node: str, *, now: dt.datetime) -> str | None:
    """Why the agent needs a new serving certificate, or None (pure): missing, not for `key`,
    not signed by `ca`, not for `node`, without an IP address, or with less than a third of its
    lifetime left (the API server's rule for its own client certificate too)."""
    if cert is None or ca is None:
        return "no serving certificate"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (cert.public_key().public_bytes(serialization.Encoding.DER, spki)
            != key.public_key().public_bytes(serialization.Encoding.DER, spki)):
        return "the certificate is for another key"
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 — InvalidSignature, ValueError (another issuer)
        return "the certificate is not signed by the cluster CA"
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [NODE_CN_PREFIX + node]:
        return f"the certificate is for {', '.join(str(c) for c in cns) or 'nobody'}, not {NODE_CN_PREFIX + node}"
    if not _cert_addresses(cert):
        return "the certificate names no address"
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    if cert.not_valid_after_utc - now < life / 3:
        return f"the certificate expires {cert.not_valid_after_utc:%Y-%m-%d} (less than a third of its lifetime left)"
    return None


def _cert_addresses(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]


def _load_pem_cert(p: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(p.read_bytes())
    except (OSError, ValueError):
        return None


def _store_serving(data_dir: str | os.PathLike, node: str, reply: dict, key: ec.EllipticCurvePrivateKey,
                   creds: NodeCredentials, *, now: dt.datetime) -> None:
    """Check the certificate the server answered with and keep it (`serving.crt`, `ca.crt`)."""
    try:
        cert = x509.load_pem_x509_certificate(str(reply.get("servingCertificate") or "").encode())
        ca = x509.load_pem_x509_certificate(str(reply.get("caCertificate") or "").encode())
    except ValueError as e:
        raise JoinError(f"the API server {creds.server} answered node {node}'s certificate request without a "
                        f"usable certificate and CA: {e}") from None
    if creds.ca:
        pinned = x509.load_pem_x509_certificate(creds.ca.encode())
        if pinned != ca:
            raise JoinError(f"the API server {creds.server} signed node {node}'s certificate with a CA other than "
                            f"the one its join token pins: refusing it")
    problem = serving_cert_problem(cert, key, ca, node, now=now)
    if problem:
        raise JoinError(f"the serving certificate {creds.server} issued to node {node} is unusable: {problem}")
    d = _tls_dir(data_dir)
    _write_private(d / CLUSTER_CA, ca.public_bytes(serialization.Encoding.PEM))
    _write_private(d / SERVING_CERT, cert.public_bytes(serialization.Encoding.PEM))
    log.info("node %s: serving certificate for %s saved in %s (until %s)", node,
             ", ".join(_cert_addresses(cert)), d / SERVING_CERT, f"{cert.not_valid_after_utc:%Y-%m-%d}")


def _ensure_serving(data_dir: str | os.PathLike, creds: NodeCredentials, t: JoinTransport, *,
                    now: dt.datetime) -> None:
    """Renew the serving certificate with the node credential when `serving_cert_problem` says so."""
    key = serving_key(data_dir)
    d = _tls_dir(data_dir)
    cert, ca = _load_pem_cert(d / SERVING_CERT), _load_pem_cert(d / CLUSTER_CA)
    if creds.ca and ca is not None and ca != x509.load_pem_x509_certificate(creds.ca.encode()):
        why: str | None = "the certificate's CA is not the cluster's (the join token's pin)"
    else:
        why = serving_cert_problem(cert, key, ca, creds.nodeName, now=now)
    if why is None:
        return
    log.info("node %s: renewing its serving certificate: %s", creds.nodeName, why)
    try:
        reply = t.renew(creds, serving_csr(key, creds.nodeName))
    except ConnectionError as e:
        if cert is not None and ca is not None and cert.not_valid_after_utc > now and \
                serving_cert_problem(cert, key, ca, creds.nodeName, now=cert.not_valid_before_utc) is None:
            log.warning("node %s: cannot renew its serving certificate (%s): using the current one until %s",
                        creds.nodeName, e, f"{cert.not_valid_after_utc:%Y-%m-%d}")
            return
        raise JoinError(f"node {creds.nodeName} has no usable serving certificate ({why}) and the API server "
                        f"cannot be reached to issue one: {e}") from None
    _store_serving(data_dir, creds.nodeName, reply, key, creds, now=now)


def serving_tls(data_dir: str | os.PathLike) -> ServingTLS:
    """The log endpoint's TLS files in `<data_dir>/tls` and the address the API server verified
    (the certificate's first IP SAN). `ensure_credentials` made sure they exist."""
    d = Path(data_dir) / TLS_DIR
    cert = _load_pem_cert(d / SERVING_CERT)
    addrs = _cert_addresses(cert) if cert is not None else []
    if not addrs or not (d / CLUSTER_CA).exists() or not (d / SERVING_KEY).exists():
        raise JoinError(f"no serving certificate in {d}: the agent must join (or renew) first")
    return ServingTLS(cert_file=str(d / SERVING_CERT), key_file=str(d / SERVING_KEY), ca_file=str(d / CLUSTER_CA),
                      address=str(ipaddress.ip_address(addrs[0])))


# ---------------------------------------------------------------------------- join
def verified_ca(server: str, join_token: str, transport: JoinTransport) -> str:
    """The server's CA PEM, checked against the token's pin ("" for plain HTTP)."""
    pin, _secret = split_join_token(join_token)
    if not server.startswith("https://"):
        if pin:
            log.warning("the join token pins a CA but %s is plain HTTP: the pin is not used", server)
        return ""
    if not pin:
        raise JoinError(f"the join token pins no CA, so {server}'s certificate cannot be trusted: use the full "
                        f"token K10<ca-sha256>::server:<secret> from the server's <data-dir>/join-token")
    pem = transport.fetch_ca(server)
    got = hashlib.sha256(pem).hexdigest()
    if got != pin:
        raise JoinError(f"the CA served by {server}/cacerts has sha256 {got}, but the join token pins {pin}: "
                        f"refusing to join (wrong server, or a token from another cluster)")
    try:
        text = pem.decode("ascii")
    except UnicodeDecodeError:
        raise JoinError(f"{server}/cacerts did not return a PEM certificate") from None
    if "BEGIN CERTIFICATE" not in text:
        raise JoinError(f"{server}/cacerts did not return a PEM certificate")
    return text


def ensure_credentials(server_url: str, join_token: str, node_name: str, data_dir: str | os.PathLike, *,
                       transport: JoinTransport | None = None,
                       clock: Callable[[], dt.datetime] = _utcnow) -> NodeCredentials:
    """Reuse `<data_dir>/credentials.json` unless the server rejects it (401); else join. Either
    way the serving certificate is current afterwards (module docstring)."""
    t = transport or HttpJoinTransport()
    server = server_url.rstrip("/")
    saved = load_credentials(data_dir)
    if saved is not None and saved.server == server and saved.nodeName == node_name:
        status = t.probe(saved)
        if status != 401:
            log.info("node %s: reusing the credential in %s", node_name, Path(data_dir) / CREDENTIALS_FILE)
            _ensure_serving(data_dir, saved, t, now=clock())
            return saved
        log.warning("node %s: the API server rejected the saved credential (401): joining again", node_name)
    elif saved is not None:
        log.info("node %s: saved credential is for %s/%s: joining %s", node_name, saved.server, saved.nodeName, server)
    if not join_token:
        raise JoinError(f"node {node_name} has no usable credential in {Path(data_dir) / CREDENTIALS_FILE} "
                        f"and no join token was given (--token)")
    ca = verified_ca(server, join_token, t)
    key = serving_key(data_dir)
    out = t.join(server, join_token, node_name, ca, node_password(data_dir), serving_csr(key, node_name))
    if out.get("nodeName") != node_name or not out.get("token"):
        raise JoinError(f"the API server answered the join of {node_name} with {sorted(out)}: no node credential")
    creds = NodeCredentials(server=server, nodeName=node_name, token=out["token"], ca=ca)
    path = save_credentials(data_dir, creds)
    _store_serving(data_dir, node_name, out, key, creds, now=clock())
    log.info("node %s joined %s as %s; credential saved in %s", node_name, server, out.get("address"), path)
    return creds


def join_cluster(server_url: str, join_token: str, node_name: str, data_dir: str | os.PathLike, *,
                 transport: JoinTransport | None = None, **client_kw) -> Client:
    """A Client authenticated as the node (see `ensure_credentials`)."""
    creds = ensure_credentials(server_url, join_token, node_name, data_dir, transport=transport)
    return creds.client(**client_kw)
