"""Agents' serving certificates: what `POST /shoal/v1/join` and `POST /shoal/v1/node-certificate`
sign, and the verified registration they record.

Contract:
- A join may carry `servingCertificateRequest`: a PEM CSR for `CN=system:node:<nodeName>` made
  from a key the agent generated and keeps (`agent.join`). `prepare(body, node, client)` checks
  it before anything is written (`apiserver.tls.check_node_csr`: 422 Invalid naming the field
  and the reason) and takes the join's TCP peer address as the node's address — the only
  address a certificate names and the only one the API server ever connects to for this node
  (`apiserver.nodeclient`). An address in the Node object, which the node writes itself, is
  never used for that.
- `issue(store, data_dir, node, pending)` signs the certificate with the cluster CA
  (`<data_dir>/tls`, created at the first join of a plain-HTTP server) and records
  `NodeEndpoint(node, address, key_sha256, not_after)` in the store's `node_endpoints` table,
  replacing the node's previous record. Its answer is the reply's
  `{"servingCertificate": PEM, "caCertificate": PEM, "address": ip}`. A join without a CSR
  (`pending` None) forgets the record: the credential it replaces is gone, and with it the
  registration it was made with.
- `POST /shoal/v1/node-certificate` is the renewal: the node's own credential (role node,
  subject = `nodeName`), a CSR, no join token or password; the same checks and record.
- The peer address is the socket's: the server runs uvicorn without proxy headers
  (`apiserver.server`), so no `X-Forwarded-For` can name another one. An IPv4 address seen
  through a dual-stack socket (`::ffff:a.b.c.d`) is recorded as the IPv4 address.

Next: `apiserver.nodeclient`, which connects to what is recorded here.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shoal.machinery.api import errors
from shoal.apiserver import tls
from shoal.apiserver.store import NodeEndpoint, Store

CSR_FIELD = "servingCertificateRequest"


@dataclass(frozen=True)
class PendingCert:
    """A CSR `prepare` accepted, for `node` seen at `address`."""
    node: str
    address: str
    csr: x509.CertificateSigningRequest


def peer_address(client: Any) -> str | None:
    """The request's peer IP (Starlette's `request.client`), normalized; None when the
    connection has no IP peer (a test transport, a Unix socket)."""
    host = getattr(client, "host", None) if client is not None else None
    if not host:
        return None
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def prepare(body: dict, node: str, client: Any, *, required: bool = False) -> PendingCert | None:
    """The checked CSR of a join or renewal body, or None when it has none (and may not:
    `required`); 422 Invalid naming `servingCertificateRequest` otherwise. Writes nothing."""
    pem = body.get(CSR_FIELD)
    if pem is None:
        if required:
            raise errors.Invalid(f"{CSR_FIELD}: required: a PEM certificate request for CN=system:node:{node}",
                                 causes=[errors.Cause(CSR_FIELD, "Required value", "FieldValueRequired")])
        return None
    if not isinstance(pem, str):
        raise errors.Invalid(f"{CSR_FIELD}: a PEM string is required",
                             causes=[errors.Cause(CSR_FIELD, "a PEM string is required", "FieldValueInvalid")])
    address = peer_address(client)
    if address is None:
        raise errors.Invalid(f"{CSR_FIELD}: the API server cannot tell which address this request came from, "
                             f"so it cannot name one in node {node}'s certificate",
                             causes=[errors.Cause(CSR_FIELD, "no peer address", "FieldValueInvalid")])
    try:
        csr = tls.check_node_csr(pem, node, [address])
    except tls.CSRRefused as e:
        raise errors.Invalid(f"{CSR_FIELD}: {e}", causes=[errors.Cause(CSR_FIELD, str(e), "FieldValueInvalid")]
                             ) from None
    return PendingCert(node, address, csr)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def issue(store: Store, data_dir: str | Path, node: str, pending: PendingCert | None, *,
          clock: Callable[[], dt.datetime] = _now) -> dict[str, str]:
    """Sign and record `pending` (module docstring); None forgets `node`'s record. The reply's
    certificate fields ({} for None)."""
    if pending is None:
        store.put_node_endpoint(node, None)
        return {}
    if pending.node != node:
        raise errors.BadRequest(f"a certificate request prepared for node {pending.node} cannot be issued to {node}")
    tls_dir = Path(data_dir) / "tls"
    ca, ca_key = tls.ensure_cluster_ca(tls_dir, clock=clock)
    cert = tls.sign_node_serving_cert(ca, ca_key, pending.csr, node, [pending.address], now=clock())
    store.put_node_endpoint(node, NodeEndpoint(node=node, address=pending.address,
                                               key_sha256=tls.public_key_sha256(cert),
                                               not_after=cert.not_valid_after_utc.timestamp()))
    return {"servingCertificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "caCertificate": ca.public_bytes(serialization.Encoding.PEM).decode(),
            "address": pending.address}


def renewal_node(role: str, subject: str, body: Any) -> str:
    """The node a `POST /shoal/v1/node-certificate` renews: the caller's own (role node), named
    in `nodeName`; Forbidden for any other caller or name."""
    node = body.get("nodeName") if isinstance(body, dict) else None
    if role != "node":
        raise errors.Forbidden("only a node's own credential may renew its serving certificate "
                               "(an agent joins with the join token instead)")
    if not node:
        raise errors.Invalid(f'nodeName: required: the node whose certificate is renewed ("{subject}")',
                             causes=[errors.Cause("nodeName", "Required value", "FieldValueRequired")])
    if node != subject:
        raise errors.Forbidden(f'node "{subject}" may renew only its own serving certificate, not {node!r}')
    return subject
