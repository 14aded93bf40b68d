"""Authentication (bearer tokens) and authorization (admin, node, join).

Tokens are random 32-byte URL-safe strings; the database keeps only their
SHA-256. Roles:
- `admin`: everything (the kubeconfig `shoal server` writes).
- `join`: may only exchange itself for a node credential (`POST /shoal/v1/join`).
- `node` (subject = node name): reads only what a kubelet needs — every Node (its
  overlay peers), its own Lease, and the pods bound to it (a get of a pod bound
  there; a list or watch only with `fieldSelector=spec.nodeName=<node>`), never
  pod logs, Events or any other kind but Services and EndpointSlices, which it may get, list
  and watch in every namespace (its service proxy, `agent.serviceproxy`, needs them all, as
  kube-proxy does with Kubernetes' `system:node-proxier` role); writes only its own Node and Lease, the
  status of pods bound to it, deletion confirmations of those pods, and Events —
  as Kubernetes' Node authorizer graph allows a kubelet. It may `get` a Secret or
  ConfigMap only when a pod bound to it references that object
  (`machinery.api.podrefs.referenced_objects`: today `imagePullSecrets`); never list
  or watch them. The edges are read from the store at the request
  (`node_related_objects`: the pods of that one namespace, filtered by node), so a
  binding or a deletion counts at once; a refusal says `no relationship found
  between node '<node>' and this object`, as Kubernetes' does. `admit` then
  looks at the object a write would store, as Kubernetes' NodeRestriction
  admission does: a node may not set or change its Node's `spec.podCIDR(s)`,
  which are the server's to assign (the node IPAM controller).
- There is no token for the API server's calls to agents: it connects to them over
  mutual TLS with a client certificate of the cluster CA (`apiserver.nodeclient`).
  The `apiserver` role of earlier versions is gone; `bootstrap_tokens` deletes its
  credential and its `apiserver-token` file where they remain.

Node identity is k3s' node-password scheme (`join_node`): the join token admits
a node name once. The first join under a name stores the hash of the node
password the agent generated (kept in its data dir); a later join under that
name must present the same password — it then gets a fresh credential and the
old one is revoked (a reinstalled agent that kept its data dir) — else it is
refused with 403 and nothing changes. Deleting the Node frees the name. The
admin token may take a name over (a join without a password revokes the node's
credential and frees the name).

Join tokens carry the CA pin when the server has a CA, as k3s's do:
`K10<sha256 of the CA PEM>::server:<secret>`. Only the secret is a credential
(its hash is what the database keeps); `authenticate` accepts the full form or
the bare secret. The pin lets an agent trust the CA it fetches from the
unauthenticated `GET /cacerts` (see `agent.join`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from shoal.machinery.api import errors
from shoal.machinery.api.podrefs import Reference, referenced_objects
from shoal.machinery.api.resources import Resource
from shoal.machinery.api.selectors import parse_field_selector
from shoal.apiserver.store import Store

log = logging.getLogger(__name__)


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    role: str
    subject: str = ""

    @property
    def username(self) -> str:
        if self.role == "node":
            return f"system:node:{self.subject}"
        if self.role == "admin":
            return "shoal:admin"
        return f"shoal:{self.role}"


_FULL_TOKEN = re.compile(r"^K10([0-9a-f]{64})::([^:]+):(.+)$")


def split_join_token(token: str) -> tuple[str | None, str]:
    """`K10<pin>::server:<secret>` → (pin, secret); any other token → (None, token)."""
    m = _FULL_TOKEN.match(token.strip())
    if m:
        return m.group(1), m.group(3)
    return None, token.strip()


def format_join_token(secret: str, ca_pin: str | None) -> str:
    return f"K10{ca_pin}::server:{secret}" if ca_pin else secret


def _server_ca_pin(data_dir: Path) -> str | None:
    # the CA exists only when the server serves TLS (apiserver.tls writes it before the app starts)
    ca = Path(data_dir) / "tls" / "ca.crt"
    try:
        return hashlib.sha256(ca.read_bytes()).hexdigest()
    except OSError:
        return None


def authenticate(store: Store, header: str | None) -> Principal:
    if not header or not header.lower().startswith("bearer "):
        raise errors.Unauthorized("Unauthorized: a bearer token is required (see your kubeconfig)")
    tok = split_join_token(header[7:])[1]
    found = store.lookup_credential(token_hash(tok))
    if found is None:
        raise errors.Unauthorized("Unauthorized: the token is not valid (it may have been rotated)")
    return Principal(*found)


class TokenCache:
    """Principals of recently seen tokens, so that a request costs no credential query.
    Entries live `ttl` seconds; rotation and joins clear the cache, and other server
    processes' rotations are seen within `ttl`."""

    def __init__(self, store: Store, ttl: float = 5.0):
        self.store, self.ttl, self._time = store, ttl, time.monotonic
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Principal]] = {}

    def get(self, header: str | None) -> Principal:
        now = self._time()
        with self._lock:
            hit = self._cache.get(header or "")
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        p = authenticate(self.store, header)
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[header or ""] = (now, p)
        return p

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


def authorize(p: Principal, verb: str, res: Resource | None, *, namespace: str | None = None,
              name: str | None = None, subresource: str | None = None, obj: dict | None = None,
              old: dict | None = None, field_selector: str | None = None,
              related: Collection[Reference] | None = None) -> None:
    """Raise Forbidden unless `p` may do `verb` on the object. `obj`/`old` are the new and stored
    values (`old` is the stored object on a get too, where the rule depends on it: a node's
    pods); `field_selector` is a list's or watch's; `related` the objects the pods bound to a
    node reference (`node_related_objects`), for a node's get of a Secret or ConfigMap (see
    `needs_graph_for_get`; None: none)."""
    if p.role == "admin":
        return
    reason = ""
    if p.role == "node":
        if res is not None and res.kind in GRAPH_KINDS:
            reason = _node_graph_denial(p.subject, verb, res, namespace, name, subresource, related)
            if not reason:
                return
        elif _node_allows(p.subject, verb, res, namespace, name, subresource, obj, old, field_selector):
            return
    what = res.plural if res else "this path"
    group = res.group if res else ""
    where = f' in the namespace "{namespace}"' if namespace else ""
    target = f'{what} "{name}"' if name else what
    raise errors.Forbidden(f'{target} is forbidden: User "{p.username}" cannot {verb} resource "{what}"'
                           f'{"/" + subresource if subresource else ""} in API group "{group}"{where}'
                           f'{": " + reason if reason else ""}')


# Kinds on which a node's write may be allowed, depending on the stored object or the body.
NODE_WRITABLE_KINDS = frozenset({"Node", "Lease", "Event", "Pod"})


def authorize_before_read(p: Principal, verb: str, res: Resource | None, *, namespace: str | None = None,
                          name: str | None = None, subresource: str | None = None) -> None:
    """Refuse, before the stored object is read, a write no stored object could make allowed
    (a node's update, patch or delete of a Secret, a Deployment, ...): the refusal is then the
    same whether the object exists or not, so it tells nothing about names in namespaces the
    caller may not read. Writes whose decision depends on the stored object pass here and are
    decided by `authorize` with it."""
    if p.role == "admin" or (p.role == "node" and res is not None and res.kind in NODE_WRITABLE_KINDS):
        return
    authorize(p, verb, res, namespace=namespace, name=name, subresource=subresource)


# Kinds a node reads through its pods' references (the Node authorizer's graph).
GRAPH_KINDS = frozenset({"Secret", "ConfigMap"})


def needs_graph_for_get(p: Principal, res: Resource | None) -> bool:
    """Whether `authorize(p, "get", res, ...)` decides on `related` (`node_related_objects`)."""
    return p.role == "node" and res is not None and res.kind in GRAPH_KINDS


def node_related_objects(store: Store, node: str, namespace: str | None) -> set[Reference]:
    """The (plural, namespace, name) of every object the pods bound to `node` in `namespace`
    reference. Reads that namespace's pods (an indexed range of the store), never the
    cluster's; references are immutable once a pod exists (its spec is), so only binding
    and deletion change the answer, and both are seen by the next request."""
    if not namespace:
        return set()
    out: set[Reference] = set()
    pods, _ = store.list("pods", namespace)
    for pod in pods:
        if (pod.get("spec") or {}).get("nodeName") == node:
            out |= referenced_objects(pod)
    return out


def _node_graph_denial(node: str, verb: str, res: Resource, ns: str | None, name: str | None, sub: str | None,
                       related: Collection[Reference] | None) -> str:
    """Why `node` may not do `verb` on a Secret or ConfigMap ("" when it may), in the words of
    Kubernetes' Node authorizer."""
    if verb != "get":
        return "can only get individual resources of this type"
    if sub:
        return "cannot get subresource"
    if not ns or not name:
        return "can only get namespaced objects of this type"
    if (res.plural, ns, name) in (related or ()):
        return ""
    return f"no relationship found between node '{node}' and this object"


NODE_ASSIGNED_BY_SERVER = ("podCIDR", "podCIDRs")


def admit(p: Principal, res: Resource | None, new: dict | None, old: dict | None) -> None:
    """Raise Forbidden when a node's write would set or change a field of its Node that only
    the server assigns. `new` is the object the write stores (the body of a create or
    update, the patched object of a patch), `old` the stored one (None on create); the
    status subresource never changes spec, so it needs no call."""
    if p.role != "node" or res is None or res.kind != "Node" or not isinstance(new, dict):
        return
    new_spec, old_spec = new.get("spec"), (old or {}).get("spec")
    new_spec = new_spec if isinstance(new_spec, dict) else {}
    old_spec = old_spec if isinstance(old_spec, dict) else {}
    for field in NODE_ASSIGNED_BY_SERVER:
        if (new_spec.get(field) or None) != (old_spec.get(field) or None):
            name = (new.get("metadata") or {}).get("name") if isinstance(new.get("metadata"), dict) else None
            raise errors.Forbidden(
                f'nodes "{name or p.subject}" is forbidden: User "{p.username}" may not set spec.{field}: '
                f'the pod CIDR of a node is assigned by the server',
                causes=[errors.Cause(f"spec.{field}", "a node may not set the pod CIDR of its Node",
                                     "FieldValueForbidden")])


def needs_stored_for_get(p: Principal, res: Resource | None) -> bool:
    """Whether `authorize(p, "get", res, ...)` decides on the stored object (`old`)."""
    return p.role == "node" and res is not None and res.kind == "Pod"


def _selects_node(field_selector: str | None, node: str) -> bool:
    """Whether a field selector requires `spec.nodeName=<node>` (whatever else it requires)."""
    try:
        reqs = parse_field_selector(field_selector)
    except ValueError:
        return False
    return any(f == "spec.nodeName" and op in ("=", "==") and v == node for f, op, v in reqs)


def _node_reads(node: str, verb: str, kind: str, ns: str | None, name: str | None, sub: str | None,
                old: dict | None, field_selector: str | None) -> bool:
    if kind == "Node":
        return sub is None                            # every Node: the overlay's peers
    if kind == "Lease":
        return verb == "get" and ns == "kube-node-lease" and name == node
    if kind == "Pod" and sub is None:
        if verb == "get":
            return ((old or {}).get("spec") or {}).get("nodeName") == node
        return _selects_node(field_selector, node)    # list / watch of its own pods only
    if kind in ("Service", "EndpointSlice"):
        return sub is None                            # the node's service proxy: all of them, as kube-proxy
    return False                                      # logs, Events, workloads, namespaces: not a node's


def _node_allows(node: str, verb: str, res: Resource | None, ns: str | None, name: str | None,
                 sub: str | None, obj: dict | None, old: dict | None, field_selector: str | None = None) -> bool:
    if res is None:
        return False
    if verb in ("get", "list", "watch"):
        return _node_reads(node, verb, res.kind, ns, name, sub, old, field_selector)
    kind = res.kind
    if kind == "Node":
        return name == node or (verb == "create" and (obj or {}).get("metadata", {}).get("name") == node)
    if kind == "Lease":
        target = name or (obj or {}).get("metadata", {}).get("name")
        return ns == "kube-node-lease" and target == node and verb in ("create", "update", "patch", "get")
    if kind == "Event":
        return verb in ("create", "update", "patch")
    if kind == "Pod":
        bound = ((old or obj or {}).get("spec") or {}).get("nodeName")
        if bound != node:
            return False
        if verb in ("update", "patch") and sub == "status":
            return True
        if verb == "delete":
            return True
    return False


def write_secret(path: Path, value: str) -> None:
    """`value` into `path` (0600), atomically and durably: the file holds the old value or
    the new one after any crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pending(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def _finish_rotation(store: Store, path: Path, role: str) -> None:
    """A rotation cut short by a crash (`rotate_token`): its new token is in `<file>.new`.
    If the database took it, the rotation happened: the file follows; if not, it did not:
    the pending file goes."""
    pending = _pending(path)
    if not pending.exists():
        return
    full = pending.read_text().strip()
    tok = split_join_token(full)[1] if role == "join" else full
    if tok and store.lookup_credential(token_hash(tok)) is not None:
        os.replace(pending, path)
        _fsync_dir(path.parent)
        log.warning("finished the rotation of the %s token that a crash interrupted: %s holds the new one",
                    role, path)
    else:
        pending.unlink()
        log.warning("a rotation of the %s token was interrupted before it took effect; the token in %s stays",
                    role, path)


def bootstrap_tokens(store: Store, data_dir: Path) -> dict[str, str]:
    """On first start, create the admin and join tokens (files mode 600 in data_dir); on later
    starts read them back. Returns {"admin": ..., "join": ...}. The retired shared token of
    the log endpoint (role `apiserver`) is deleted from the database and the data dir."""
    out = {}
    pin = _server_ca_pin(data_dir)
    if store.delete_credentials("apiserver"):
        log.info("deleted the retired apiserver token: agents are reached over mutual TLS now")
    try:
        (Path(data_dir) / "apiserver-token").unlink()
    except FileNotFoundError:
        pass
    for role, fname in (("admin", "admin-token"), ("join", "join-token")):
        path = Path(data_dir) / fname
        _finish_rotation(store, path, role)
        full = path.read_text().strip() if path.exists() else ""
        tok = split_join_token(full)[1] if role == "join" else full
        if not tok or store.lookup_credential(token_hash(tok)) is None:
            if tok and store.count_credentials(role):
                # The database holds another token of this role: this file is stale (rotated
                # through another API server of the same database, or restored from a backup).
                # Reviving it would undo a rotation: a new token is made instead.
                log.warning("the %s token in %s is no longer valid (it was rotated); writing a new one", role, path)
                tok = ""
            if not tok:
                tok = new_token({"join": "" if pin else "K10", "admin": "shoal-admin-"}[role])
            store.replace_credentials(role, token_hash(tok))
        if role == "join":
            tok = format_join_token(tok, pin)   # the pin follows the CA on disk
        if tok != full:
            write_secret(path, tok)
        out[role] = tok
    return out


def rotate_token(store: Store, data_dir: Path, role: str) -> str:
    """Replace the admin or join token; the old one stops working at once.

    Crash-safe in three durable steps: the new token goes to `<role>-token.new`, the
    database swaps the credentials in one transaction, the file is renamed over
    `<role>-token`. A crash between any two leaves a state `bootstrap_tokens` completes or
    undoes (`_finish_rotation`); the old token is never revived once the swap committed."""
    if role not in ("admin", "join"):
        raise errors.BadRequest(f"cannot rotate tokens of role {role!r}: only admin and join")
    pin = _server_ca_pin(data_dir) if role == "join" else None
    secret = new_token({"join": "" if pin else "K10", "admin": "shoal-admin-"}[role])
    tok = format_join_token(secret, pin) if role == "join" else secret
    path = Path(data_dir) / f"{role}-token"
    write_secret(_pending(path), tok)
    store.replace_credentials(role, token_hash(secret))
    os.replace(_pending(path), path)
    _fsync_dir(path.parent)
    return tok


def join_node(store: Store, node: str, password: str | None, *, admin: bool = False) -> str:
    """A fresh credential for `node` if `password` is the one its name is bound to (the
    first join binds it); else Forbidden and nothing changes. `admin`: take the name over —
    bind it to `password`, or free it when None — whatever it was bound to."""
    if admin:
        store.put_node_password(node, token_hash(password) if password else None)
    elif not password and store.node_password_hash(node) is None:
        raise errors.Invalid("nodePassword: required: the agent's node password (see agent.join)",
                             causes=[errors.Cause("nodePassword", "Required value", "FieldValueRequired")])
    elif not password or not store.claim_node_password(node, token_hash(password)):
        raise errors.Forbidden(f"node {node} is already registered and the node password does not match; "
                               f"delete the Node (shoal delete node {node}) to let a new machine take the name")
    return issue_node_credential(store, node)


def release_node_name(store: Store, node: str) -> None:
    """The Node is gone: a new machine may join under its name, and the API server no longer
    connects to the old one's agent (its recorded endpoint is forgotten)."""
    store.put_node_password(node, None)
    store.put_node_endpoint(node, None)


def issue_node_credential(store: Store, node: str) -> str:
    """A fresh credential for `node`; earlier ones for the same node stop working."""
    tok = new_token(f"shoal-node-{node}-")
    store.replace_credentials("node", token_hash(tok), node)
    return tok
