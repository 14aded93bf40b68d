"""The API server's certificates: a private CA and one serving certificate.

Contract:
- `ensure_server_certs(tls_dir, listen_host, sans)` returns
  `{"ca": path, "cert": path, "key": path}` under `tls_dir`:
  `ca.crt`/`ca.key` (EC P-256, valid 10 years) and `server.crt`/`server.key`
  (EC P-256, signed by that CA, valid 1 year). Keys are written mode 600,
  every file atomically (write to a temporary name, then rename).
- Restarts reuse what is there. The serving certificate is issued again when
  its SANs differ from `desired_sans(listen_host, sans)`, when it expires
  within 30 days, or when it was not signed by the CA on disk; the CA itself
  is only created when `ca.crt` or `ca.key` is missing or unreadable — a new
  CA invalidates every join token and kubeconfig, so that never happens
  silently for any other reason.
- `ca_hash(pem)` is the hex SHA-256 of the CA certificate exactly as served at
  `GET /cacerts`: the pin carried in the join token (k3s's `K10<hash>::…`).

Design notes: SANs are 127.0.0.1, ::1, localhost, the machine's hostname,
the listen address(es) and every `--tls-san`. A specific listen address is
the only one clients can reach, so it is the one added; a wildcard listen
(0.0.0.0, ::) adds the host's own addresses as k3s picks its node IP
(`host_addresses`: the source address of the default route per family and
what the hostname resolves to, never loopback or link-local). Other names
(a VIP, a DNS name, a NAT address) come from `--tls-san`. Values that parse
as IP addresses become IP SANs, the rest DNS SANs. `desired_sans` is pure
(the addresses are passed in) so the "regenerate when SANs change" rule is
table-tested without writing files. The clock is injected for the same reason.

The CA signs two more kinds of certificate, for the API server → agent link
(`apiserver.nodeclient`, docs/security.md "API server to agent"):
- `ensure_apiserver_client_cert(tls_dir)`: the API server's client certificate,
  CN `shoal-apiserver`, extended key usage clientAuth only, 1 year, in
  `apiserver-client.crt`/`apiserver-client.key` (both 0600). It is made with the
  CA (`ensure_server_certs` calls it) and issued again once less than a third of
  its lifetime is left or the CA changed (`renewal_due`). A plain-HTTP server
  (`--insecure-http`, loopback) has no serving certificate, but it has a CA and
  this certificate all the same, made at its first node join: agents on
  loopback are reached over the same mutual TLS.
- `sign_node_serving_cert(...)`: an agent's serving certificate, issued at its
  join from a CSR (`check_node_csr`): CN `system:node:<node>`, extended key usage
  serverAuth only, 1 year (kubelet's), IP SANs = the address(es) the API server
  saw the join come from — never one the agent names. No DNS SAN: the node picks
  its own name, and a name SAN could be the API server's own (`localhost`, the
  server's host name), which would let a node's certificate pass for the API
  server with clients that trust the cluster CA. The API server identifies an
  agent by the IP it connects to (checked by the handshake) and the CN
  (`node_cert_problem`, after it).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=30)
WILDCARD_HOSTS = ("", "0.0.0.0", "::")

# The API server → agent link (docs/security.md "API server to agent"). The agent side
# (agent.logserver, agent.join) spells the same names: the two packages do not import each other.
CLIENT_VALIDITY = dt.timedelta(days=365)
NODE_CERT_VALIDITY = dt.timedelta(days=365)        # kubelet's serving certificates: 1 year
APISERVER_CLIENT_CN = "shoal-apiserver"
NODE_CN_PREFIX = "system:node:"
CLIENT_CERT_FILE, CLIENT_KEY_FILE = "apiserver-client.crt", "apiserver-client.key"
MAX_CSR_BYTES = 16 * 1024


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def ca_path(data_dir: str | os.PathLike) -> Path:
    """Where `shoal server --data-dir D` keeps its CA certificate."""
    return Path(data_dir) / "tls" / "ca.crt"


def ca_hash(pem: bytes | str) -> str:
    """Hex SHA-256 of the CA certificate PEM (the join token's pin)."""
    if isinstance(pem, str):
        pem = pem.encode()
    return hashlib.sha256(pem).hexdigest()


def host_addresses() -> list[str]:
    """This host's addresses other machines most likely use for it, as k3s picks its node IP:
    the source address of the default route (IPv4 and IPv6) and the addresses the hostname
    resolves to, without loopback, link-local or unspecified ones. A UDP `connect` only
    chooses a route: no packet is sent. Empty when the host has no route and no name."""
    found: list[str] = []
    for fam, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                found.append(s.getsockname()[0])
        except OSError:
            continue
    try:
        found += [str(ai[4][0]) for ai in socket.getaddrinfo(socket.gethostname(), None)]
    except OSError:
        pass
    out: list[str] = []
    for a in found:
        try:
            ip = ipaddress.ip_address(a.split("%", 1)[0])
        except ValueError:
            continue
        if ip.is_loopback or ip.is_link_local or ip.is_unspecified:
            continue
        if str(ip) not in out:
            out.append(str(ip))
    return out


def desired_sans(listen_host: str, sans: Iterable[str], *, hostname: str | None = None,
                 addresses: Iterable[str] = ()) -> list[str]:
    """The SANs the serving certificate must carry, sorted and de-duplicated (pure).
    `addresses` (the host's own, see `host_addresses`) count only for a wildcard listen host."""
    out = {"127.0.0.1", "::1", "localhost"}
    if hostname:
        out.add(hostname.lower())
    if listen_host not in WILDCARD_HOSTS:
        out.add(_normalize(listen_host.strip("[]")))
    else:
        out.update(_normalize(a) for a in addresses if a)
    for s in sans:
        s = s.strip().strip("[]")
        if s:
            out.add(_normalize(s))
    return sorted(out)


def _normalize(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value.lower()


def _general_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def cert_sans(cert: x509.Certificate) -> list[str]:
    """The SANs of a certificate in `desired_sans`' form."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    names += [d.lower() for d in ext.get_values_for_type(x509.DNSName)]
    return sorted(set(names))


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_ca(*, now: dt.datetime, common_name: str = "shoal-ca") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name}@{int(now.timestamp())}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def new_server_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, sans: list[str], *,
                    now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoal-apiserver")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + SERVER_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([_general_name(s) for s in sans]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def _load_ca(d: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)
    except (OSError, ValueError) as e:
        if (d / "ca.crt").exists() or (d / "ca.key").exists():
            log.warning("TLS: the CA in %s cannot be read (%s); creating a new CA — join tokens and "
                        "kubeconfigs that pin the old one stop working", d, e)
        return None
    return cert, key  # type: ignore[return-value]


def server_cert_needs_renewal(cert: x509.Certificate | None, ca: x509.Certificate, wanted: list[str], *,
                              now: dt.datetime) -> str | None:
    """Why the serving certificate must be issued again, or None (pure)."""
    if cert is None:
        return "no serving certificate"
    if cert.issuer != ca.subject:
        return "signed by another CA"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception):  # noqa: BLE001 — InvalidSignature and friends
        return "signed by another CA"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    have = cert_sans(cert)
    if have != wanted:
        return f"SANs changed from {','.join(have)} to {','.join(wanted)}"
    return None


def ensure_server_certs(tls_dir: str | os.PathLike, listen_host: str, sans: Iterable[str], *,
                        clock: Callable[[], dt.datetime] = _utcnow,
                        hostname: str | None = None,
                        addresses: Iterable[str] | None = None) -> dict[str, str]:
    """Create or reuse the CA and serving certificate under `tls_dir` (see the module docstring).
    `hostname` and `addresses` default to this machine's (`socket.gethostname()`,
    `host_addresses()`, the latter only looked up for a wildcard listen host)."""
    d = Path(tls_dir)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    now = clock()
    if addresses is None:
        addresses = host_addresses() if listen_host in WILDCARD_HOSTS else []
    wanted = desired_sans(listen_host, sans, hostname=hostname if hostname is not None else socket.gethostname(),
                          addresses=addresses)
    ca, ca_key = ensure_cluster_ca(d, clock=lambda: now)
    cert: x509.Certificate | None
    try:
        cert = x509.load_pem_x509_certificate((d / "server.crt").read_bytes())
        if not (d / "server.key").exists():
            cert = None
    except (OSError, ValueError):
        cert = None
    why = server_cert_needs_renewal(cert, ca, wanted, now=now)
    if why:
        cert, key = new_server_cert(ca, ca_key, wanted, now=now)
        _write(d / "server.key", _key_pem(key), 0o600)
        _write(d / "server.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        log.info("TLS: issued a serving certificate for %s (%s)", ", ".join(wanted), why)
    ensure_apiserver_client_cert(d, clock=lambda: now)      # made with the CA (module docstring)
    return {"ca": str(d / "ca.crt"), "cert": str(d / "server.crt"), "key": str(d / "server.key")}


# ---------------------------------------------------------------------------- the cluster CA
_ca_lock = threading.Lock()


def ensure_cluster_ca(tls_dir: str | os.PathLike, *,
                      clock: Callable[[], dt.datetime] = _utcnow) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA in `tls_dir` (`ca.crt`, `ca.key` mode 600), created when missing or unreadable.
    One creator at a time in this process: two first joins of a plain-HTTP server must not make
    two CAs, the loser's certificates signed by a key that is then overwritten."""
    d = Path(tls_dir)
    with _ca_lock:
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        loaded = _load_ca(d)
        if loaded is not None:
            return loaded
        ca, ca_key = new_ca(now=clock())
        _write(d / "ca.key", _key_pem(ca_key), 0o600)
        _write(d / "ca.crt", ca.public_bytes(serialization.Encoding.PEM), 0o644)
        log.info("TLS: created a CA in %s (sha256 %s)", d, ca_hash((d / "ca.crt").read_bytes()))
        return ca, ca_key


def renewal_due(cert: x509.Certificate | None, ca: x509.Certificate, *, now: dt.datetime) -> str | None:
    """Why a certificate the CA issued for the API server → agent link must be issued again, or
    None (pure): missing, not signed by `ca`, or less than a third of its lifetime left
    (kubelet's rotation point is 70-90 %; a third leaves months for a restart to renew it)."""
    if cert is None:
        return "no certificate"
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 — InvalidSignature, ValueError (another issuer), TypeError (key type)
        return "signed by another CA"
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    left = cert.not_valid_after_utc - now
    if left < life / 3:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d} (less than a third of its lifetime left)"
    return None


def new_client_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, now: dt.datetime,
                    common_name: str = APISERVER_CLIENT_CN) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A client certificate (extended key usage clientAuth only) for `common_name`."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_leaf_builder(ca, ca_key, key.public_key(), common_name, now=now, validity=CLIENT_VALIDITY)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def _leaf_builder(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, public_key, common_name: str, *,
                  now: dt.datetime, validity: dt.timedelta) -> x509.CertificateBuilder:
    digital_signature_only = x509.KeyUsage(
        digital_signature=True, key_encipherment=isinstance(public_key, rsa.RSAPublicKey), key_cert_sign=False,
        crl_sign=False, content_commitment=False, data_encipherment=False, key_agreement=False,
        encipher_only=False, decipher_only=False)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.subject).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(digital_signature_only, critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))


def ensure_apiserver_client_cert(tls_dir: str | os.PathLike, *,
                                 clock: Callable[[], dt.datetime] = _utcnow) -> dict[str, str]:
    """The API server's client certificate for agents (module docstring), made or renewed as
    needed; creates the CA too when there is none. Returns {"ca", "cert", "key"} paths."""
    d = Path(tls_dir)
    ca, ca_key = ensure_cluster_ca(d, clock=clock)
    now = clock()
    cert_path, key_path = d / CLIENT_CERT_FILE, d / CLIENT_KEY_FILE
    cert: x509.Certificate | None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        cert = None
    why = renewal_due(cert, ca, now=now)
    if why:
        cert, key = new_client_cert(ca, ca_key, now=now)
        _write(key_path, _key_pem(key), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o600)
        log.info("TLS: issued the API server's client certificate for agents (%s)", why)
    return {"ca": str(d / "ca.crt"), "cert": str(cert_path), "key": str(key_path)}


# ---------------------------------------------------------------------------- node serving certificates
class CSRRefused(ValueError):
    """A node's certificate signing request the API server will not sign; the message says why."""


def node_common_name(node: str) -> str:
    return f"{NODE_CN_PREFIX}{node}"


def public_key_sha256(obj: x509.Certificate | x509.CertificateSigningRequest) -> str:
    """Hex SHA-256 of the DER SubjectPublicKeyInfo: what the API server pins per node."""
    der = obj.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def check_node_csr(csr_pem: str, node: str, addresses: list[str]) -> x509.CertificateSigningRequest:
    """The parsed CSR if the API server may sign it for `node` seen at `addresses`; else
    CSRRefused naming what is wrong (pure). Accepted: a PEM CSR of at most `MAX_CSR_BYTES`, a
    valid self-signature, the subject exactly `CN=system:node:<node>`, an EC P-256/P-384 or
    RSA ≥ 2048-bit key, and no extension but a subjectAltName whose names are all among
    `addresses` (the agent usually asks for none: the server adds them)."""
    try:
        raw = csr_pem.encode()
    except UnicodeEncodeError:      # a lone surrogate from a JSON escape: no PEM text
        raise CSRRefused("not a PEM certificate request: it holds characters no PEM text has") from None
    if len(raw) > MAX_CSR_BYTES:
        raise CSRRefused(f"the certificate request is larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(raw)
    except ValueError as e:
        raise CSRRefused(f"not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----): {e}") from None
    if not csr.is_signature_valid:
        raise CSRRefused("the certificate request's signature does not match its key")
    want = node_common_name(node)
    attrs = [(a.oid, a.value) for a in csr.subject]
    if attrs != [(NameOID.COMMON_NAME, want)]:
        raise CSRRefused(f"the certificate request's subject must be exactly CN={want}, not "
                         f"{csr.subject.rfc4514_string() or 'empty'}")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise CSRRefused(f"EC keys must be on P-256 or P-384, not {key.curve.name}")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CSRRefused(f"RSA keys must have at least 2048 bits, not {key.key_size}")
    else:
        raise CSRRefused(f"unsupported key type {type(key).__name__}: use EC P-256 (what the agent makes) or RSA")
    allowed = {_normalize(a) for a in addresses}
    for ext in csr.extensions:
        if not isinstance(ext.value, x509.SubjectAlternativeName):
            raise CSRRefused(f"the certificate request carries extension {ext.oid.dotted_string} "
                             f"({getattr(ext.oid, '_name', 'unknown')}): only subjectAltName may be asked for")
        for gn in ext.value:
            if not isinstance(gn, x509.IPAddress):
                raise CSRRefused(f"subjectAltName {gn.value!r}: only IP addresses the server sees the node at "
                                 f"may be asked for")
            if str(gn.value) not in allowed:
                raise CSRRefused(f"subjectAltName {gn.value}: the join came from {', '.join(sorted(allowed))}; "
                                 f"a node's certificate names only addresses the API server has seen it at")
    return csr


def sign_node_serving_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                           csr: x509.CertificateSigningRequest, node: str, addresses: list[str], *,
                           now: dt.datetime) -> x509.Certificate:
    """The serving certificate of `node`'s agent (module docstring) for a CSR `check_node_csr`
    accepted; `addresses` are the ones the server verified (the join's peer address)."""
    if not addresses:
        raise CSRRefused(f"no verified address for node {node}: a serving certificate names at least one")
    sans = [x509.IPAddress(ipaddress.ip_address(a)) for a in sorted({_normalize(a) for a in addresses})]
    return (_leaf_builder(ca, ca_key, csr.public_key(), node_common_name(node), now=now,
                          validity=NODE_CERT_VALIDITY)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))


def node_cert_problem(cert: x509.Certificate, node: str, *, key_sha256: str | None = None) -> str | None:
    """Why `cert` (an agent's, already verified by the TLS handshake: chain to the cluster CA,
    validity, IP SAN) is not the serving certificate of `node`, or None (pure): its CN must be
    `system:node:<node>`, its extended key usage serverAuth, and — when the server recorded one
    at the node's join — its key the one the node registered."""
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    want = node_common_name(node)
    if cns != [want]:
        shown = ", ".join(str(c) for c in cns) or "no common name"
        return f"its certificate names {shown}, not {want}"
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "its certificate has no extended key usage (serverAuth expected)"
    if ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        return "its certificate is not a serving certificate (no serverAuth usage)"
    if key_sha256 is not None and public_key_sha256(cert) != key_sha256:
        return (f"its certificate's key is not the one node {node} registered at its last join "
                f"(a certificate of an earlier machine of that name?)")
    return None
