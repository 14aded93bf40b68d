"""Joining a cluster: from a join token to a node credential the agent keeps.

Contract:
- `join_cluster(server_url, join_token, node_name, data_dir) -> Client`: a
  client of the API server authenticated as `system:node:<node_name>` and
  trusting the server's CA. `ensure_credentials(...)` is the same but returns
  the `NodeCredentials` (the agent also needs `apiserver_token`, which the API
  server presents on the agent's log endpoint).
- Credentials live in `<data_dir>/credentials.json` (mode 600):
  `{"server", "nodeName", "token", "apiserverToken", "ca"}` (`ca` is the PEM, or
  "" for a plain-HTTP server). On restart they are reused; the agent joins
  again only when the API server answers 401 to them (the credential was
  rotated or the database replaced), or when they were issued for another
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
- Trust, as k3s does it: the join token `K10<sha256 of the CA PEM>::server:<secret>`
  pins the CA. The CA is fetched without verification from `GET /cacerts`
  (unauthenticated), its SHA-256 compared with the pin — a mismatch is refused
  with `JoinError` naming both hashes — and only then is the token sent, over
  a connection verified with that CA. An https server with a token that pins
  nothing is refused too (there would be nothing to trust). Plain-HTTP
  servers (loopback development clusters) skip the CA step.

Design notes: every network step goes through one small `JoinTransport`
Protocol (fetch the CA, post the join, probe a credential), so the decision
logic — reuse, re-join, refuse — is tested with a scripted fake. The real
transport is httpx plus `shoal.machinery.client.Client`.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client
from shoal.agent.hostfiles import private_dir

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"
NODE_PASSWORD_FILE = "node-password"
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
    apiserverToken: str     # what the API server presents on the agent's log endpoint
    ca: str                 # PEM of the server's CA; "" for a plain-HTTP server

    def ca_data_b64(self) -> str | None:
        return base64.b64encode(self.ca.encode()).decode() if self.ca else None

    def client(self, **kw) -> Client:
        return Client(self.server, self.token, ca_data=self.ca_data_b64(), **kw)


class JoinTransport(Protocol):
    def fetch_ca(self, server: str) -> bytes:
        """GET <server>/cacerts without verifying the server (the pin does that)."""

    def join(self, server: str, join_token: str, node_name: str, ca_pem: str, node_password: str) -> dict:
        """POST /shoal/v1/join; returns {"nodeName", "token", "apiserverToken"}."""

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

    def join(self, server: str, join_token: str, node_name: str, ca_pem: str, node_password: str) -> dict:
        ca = base64.b64encode(ca_pem.encode()).decode() if ca_pem else None
        c = Client(server, join_token, ca_data=ca, timeout=self.timeout, user_agent=f"shoal-agent/{node_name}")
        try:
            return c.request("POST", "/shoal/v1/join", body={"nodeName": node_name, "nodePassword": node_password})
        except errors.Unauthorized as e:
            raise JoinError(f"the API server {server} rejected the join token: {e} "
                            f"(use the current token from <server data-dir>/join-token)") from None
        except errors.ApiError as e:
            raise JoinError(f"joining {server} as node {node_name} failed: {e}") from None
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
    p = Path(data_dir) / CREDENTIALS_FILE
    try:
        d = json.loads(p.read_text())
        return NodeCredentials(**{k: d[k] for k in NodeCredentials.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring unreadable credentials %s (%s): joining again", p, e)
        return None


def save_credentials(data_dir: str | os.PathLike, creds: NodeCredentials) -> Path:
    d = private_dir(data_dir, tighten=False)
    p = d / CREDENTIALS_FILE
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(creds), f, indent=1)
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)
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
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pw + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)
    log.info("node password generated in %s", p)
    return pw


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
                       transport: JoinTransport | None = None) -> NodeCredentials:
    """Reuse `<data_dir>/credentials.json` unless the server rejects it (401); else join."""
    t = transport or HttpJoinTransport()
    server = server_url.rstrip("/")
    saved = load_credentials(data_dir)
    if saved is not None and saved.server == server and saved.nodeName == node_name:
        status = t.probe(saved)
        if status != 401:
            log.info("node %s: reusing the credential in %s", node_name, Path(data_dir) / CREDENTIALS_FILE)
            return saved
        log.warning("node %s: the API server rejected the saved credential (401): joining again", node_name)
    elif saved is not None:
        log.info("node %s: saved credential is for %s/%s: joining %s", node_name, saved.server, saved.nodeName, server)
    if not join_token:
        raise JoinError(f"node {node_name} has no usable credential in {Path(data_dir) / CREDENTIALS_FILE} "
                        f"and no join token was given (--token)")
    ca = verified_ca(server, join_token, t)
    out = t.join(server, join_token, node_name, ca, node_password(data_dir))
    if out.get("nodeName") != node_name or not out.get("token"):
        raise JoinError(f"the API server answered the join of {node_name} with {sorted(out)}: no node credential")
    creds = NodeCredentials(server=server, nodeName=node_name, token=out["token"],
                            apiserverToken=out.get("apiserverToken") or "", ca=ca)
    path = save_credentials(data_dir, creds)
    log.info("node %s joined %s; credential saved in %s", node_name, server, path)
    return creds


def join_cluster(server_url: str, join_token: str, node_name: str, data_dir: str | os.PathLike, *,
                 transport: JoinTransport | None = None, **client_kw) -> Client:
    """A Client authenticated as the node (see `ensure_credentials`)."""
    creds = ensure_credentials(server_url, join_token, node_name, data_dir, transport=transport)
    return creds.client(**client_kw)
