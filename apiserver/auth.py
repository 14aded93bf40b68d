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
  admission does (`node_restriction`): the kubelet's labels only, taints and
  `spec.unschedulable` as the admin left them, no `spec.podCIDR(s)` (the
  server's to assign), and the addresses it registered; `NodeAdmission` adds
  the checks that need the store and state: the node's verified join address,
  and its Events — about its Node or pods bound to it, size-bounded, and
  rate-limited per node (429 with Retry-After). docs/security.md, "What a node
  may write".
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
import json
import logging
import math
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

# --- NodeRestriction: what a node may write on its own Node ---------------------------------------
# The labels a kubelet may set on its Node (k8s.io/kubelet/pkg/apis IsKubeletLabel): these keys,
# and any key whose prefix is one of KUBELET_LABEL_NAMESPACES or a subdomain of one.
KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
    "beta.kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type", "topology.kubernetes.io/region", "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone"})
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
# Labels only an admin sets, so that workloads can be steered to nodes by labels no node can
# give itself (Kubernetes' node-restriction.kubernetes.io/ prefix).
NODE_RESTRICTION_LABEL_NAMESPACE = "node-restriction.kubernetes.io"
# Addresses other components act on: the overlay and the API server's view of the node
# (InternalIP), ServiceLB's load-balancer ingress (ExternalIP).
PINNED_ADDRESS_TYPES = ("InternalIP", "ExternalIP")
UNDERLAY_ANNOTATION = "shoal.io/underlay-ip"     # the overlay's peer address (agent.nodenet)


def label_namespace(key: str) -> str:
    """The prefix of a label key (`kubernetes.io` of `kubernetes.io/os`), "" without one."""
    return key.split("/", 1)[0] if "/" in key else ""


def _in_namespace(key: str, namespace: str) -> bool:
    ns = label_namespace(key)
    return ns == namespace or ns.endswith("." + namespace)


def is_kubelet_label(key: str) -> bool:
    """Kubernetes' IsKubeletLabel: a label a node may set on itself."""
    return key in KUBELET_LABELS or any(_in_namespace(key, ns) for ns in KUBELET_LABEL_NAMESPACES)


def forbidden_node_labels(new: dict | None, old: dict | None) -> list[str]:
    """The label keys a node's write adds, removes or changes (`old` None: a create sets them
    all) that NodeRestriction refuses: those under `node-restriction.kubernetes.io/` and the
    `kubernetes.io`/`k8s.io` ones outside the kubelet's set. Other labels are the node's own,
    as in Kubernetes. Sorted."""
    new, old = new or {}, old or {}
    modified = {k for k in set(new) | set(old) if new.get(k) != old.get(k)}
    return sorted(k for k in modified
                  if _in_namespace(k, NODE_RESTRICTION_LABEL_NAMESPACE)
                  or ((_in_namespace(k, "kubernetes.io") or _in_namespace(k, "k8s.io")) and not is_kubelet_label(k)))


def node_addresses(node: dict | None, kind: str) -> set[str]:
    """The addresses of one type (`InternalIP`, ...) in a Node's `status.addresses`."""
    status = (node or {}).get("status")
    addrs = status.get("addresses") if isinstance(status, dict) else None
    return {a["address"] for a in addrs or [] if isinstance(a, dict) and a.get("type") == kind
            and isinstance(a.get("address"), str)}


@dataclass(frozen=True)
class Refusal:
    """Why NodeRestriction refuses a write: the field and Kubernetes' wording of the reason."""
    field: str
    reason: str


def node_restriction(node: str, new: dict, old: dict | None, *, subresource: str | None = None,
                     joined_from: str | None = None) -> Refusal | None:
    """Whether node `node` may store `new` as its own Node over `old` (None: a create), by
    NodeRestriction's rules (docs/security.md "What a node may write"); a Refusal when not.

    - Labels: `forbidden_node_labels`, on create and update.
    - `spec.podCIDR(s)`: never set or changed by a node (the server assigns them).
    - On update: `spec.taints` and `spec.unschedulable` (cordoning is the admin's) stay as
      they are; the `shoal.io/underlay-ip` annotation changes only to a registered address.
    - `status.addresses` (a /status write): the InternalIP and ExternalIP addresses are those
      the Node had, once it has any; the InternalIP may move to `joined_from`, the address
      the node's join was verified from (`apiserver.nodecerts`). An admin may change them.
    Main-resource writes keep the stored status and /status writes the stored metadata and
    spec (`Registry.update`), so each is checked for what it can change."""
    md = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
    old_md = (old or {}).get("metadata") if isinstance((old or {}).get("metadata"), dict) else {}
    spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
    old_spec = (old or {}).get("spec") if isinstance((old or {}).get("spec"), dict) else {}
    if subresource == "status":
        if old is None or not any(node_addresses(old, t) for t in PINNED_ADDRESS_TYPES):
            return None         # the node registers its addresses
        for kind in PINNED_ADDRESS_TYPES:
            had, has = node_addresses(old, kind), node_addresses(new, kind)
            if has == had or (kind == "InternalIP" and joined_from and has == {joined_from}):
                continue
            return Refusal("status.addresses",
                           f'node "{node}" is not allowed to change its {kind} addresses from '
                           f'{sorted(had) or "none"} to {sorted(has) or "none"}: a node keeps the addresses it '
                           f'registered' + (f' (or moves its InternalIP to {joined_from}, the address it joined '
                                            f'from)' if kind == "InternalIP" and joined_from else '')
                           + '; an admin may change them')
        return None
    labels = md.get("labels") if isinstance(md.get("labels"), dict) else {}
    old_labels = old_md.get("labels") if isinstance(old_md.get("labels"), dict) else {}
    bad = forbidden_node_labels(labels, None if old is None else old_labels)
    if bad:
        if old is None:
            return Refusal("metadata.labels", f'node "{node}" is not allowed to set the following labels: '
                                              f'{", ".join(bad)}')
        return Refusal("metadata.labels", f'is not allowed to modify labels: {", ".join(bad)}')
    for field in NODE_ASSIGNED_BY_SERVER:
        if (spec.get(field) or None) != (old_spec.get(field) or None):
            return Refusal(f"spec.{field}", f"may not set spec.{field}: the pod CIDR of a node is assigned by "
                                            f"the server")
    if old is None:
        return None
    if (spec.get("taints") or None) != (old_spec.get("taints") or None):
        return Refusal("spec.taints", f'node "{node}" is not allowed to modify taints')
    if bool(spec.get("unschedulable")) != bool(old_spec.get("unschedulable")):
        return Refusal("spec.unschedulable", f'node "{node}" is not allowed to modify spec.unschedulable: '
                                             f'cordoning a node is the admin\'s (kubectl cordon / uncordon)')
    ann = md.get("annotations") if isinstance(md.get("annotations"), dict) else {}
    old_ann = old_md.get("annotations") if isinstance(old_md.get("annotations"), dict) else {}
    underlay = ann.get(UNDERLAY_ANNOTATION)
    if underlay is not None and underlay != old_ann.get(UNDERLAY_ANNOTATION):
        allowed = node_addresses(old, "InternalIP") | ({joined_from} if joined_from else set())
        if underlay not in allowed:
            return Refusal(f"metadata.annotations[{UNDERLAY_ANNOTATION}]",
                           f'node "{node}" is not allowed to set {UNDERLAY_ANNOTATION} to {underlay!r}: '
                           f'the overlay address must be an address the node registered '
                           f'({", ".join(sorted(allowed)) or "none"})')
    return None


def admit(p: Principal, res: Resource | None, new: dict | None, old: dict | None, *,
          subresource: str | None = None, joined_from: str | None = None) -> None:
    """NodeRestriction: raise Forbidden when a node's write to its own Node does what
    `node_restriction` refuses. `new` is the object the write stores (the body of a create or
    update, the patched object of a patch), `old` the stored one (None on create);
    `subresource` "status" for a /status write; `joined_from` the node's verified join address
    (`Store.node_endpoint`), if any. Nothing for other callers or kinds (`NodeAdmission`
    handles a node's Events)."""
    if p.role != "node" or res is None or res.kind != "Node" or not isinstance(new, dict):
        return
    refusal = node_restriction(p.subject, new, old, subresource=subresource, joined_from=joined_from)
    if refusal is None:
        return
    md = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
    name = md.get("name") or p.subject
    why = refusal.reason if not refusal.reason.startswith("may not") else f'User "{p.username}" {refusal.reason}'
    raise errors.Forbidden(f'nodes "{name}" is forbidden: {why}',
                           causes=[errors.Cause(refusal.field, refusal.reason, "FieldValueForbidden")])


# --- a node's Events ---------------------------------------------------------------------------
# Kubernetes' kubelet defaults (KubeletConfiguration eventRecordQPS 50, eventBurst 100): a node
# sending Events as a kubelet does is never refused; beyond that 429.
NODE_EVENT_QPS = 50.0
NODE_EVENT_BURST = 100
NODE_EVENT_MESSAGE_BYTES = 1024      # events.k8s.io's note limit; the recorders truncate to it
NODE_EVENT_BYTES = 4096              # the whole Event as a node sends it (rate x size bounds a node)


class TokenBuckets:
    """A token bucket per key (`qps` tokens a second, at most `burst`), as Kubernetes'
    EventRateLimit keeps one per user. Keys idle long enough to be full again are forgotten."""

    def __init__(self, qps: float, burst: int, *, clock=time.monotonic, max_keys: int = 10000):
        self.qps, self.burst, self.clock, self.max_keys = qps, burst, clock, max_keys
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """Take a token for `key`: 0.0 when there was one, else the seconds until there is."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.qps)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.qps if self.qps > 0 else float("inf")
            if len(self._buckets) > self.max_keys:
                full = (float(self.burst) - 1.0) / self.qps if self.qps > 0 else float("inf")
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
        return wait


def event_subject_refusal(node: str, event: dict, lookup) -> str:
    """Why node `node` may not write `event` ("" when it may): an Event must be about the
    node's own Node (in namespace `default`, where Events of cluster-scoped objects go) or a
    pod bound to it (in the pod's namespace; with its uid when the Event names one).
    `lookup(namespace, name)` is the pod, or its last value when it was deleted recently
    (`Store.last_logged`), else None."""
    ref = event.get("involvedObject")
    ns = (event.get("metadata") or {}).get("namespace") if isinstance(event.get("metadata"), dict) else None
    if not isinstance(ref, dict):
        return "an Event of a node must name its involvedObject"
    kind, name, ref_ns, uid = (ref.get(k) for k in ("kind", "name", "namespace", "uid"))
    if kind == "Node":
        if name != node:
            return f"a node may write Events only about its own Node ({node!r}), not node {name!r}"
        if ns not in (None, "default"):
            return 'Events about a Node go to namespace "default"'
        return ""
    if kind != "Pod":
        return f"a node may write Events only about its own Node and the pods bound to it, not a {kind!r}"
    if not isinstance(name, str) or not isinstance(ref_ns, str) or (ns is not None and ref_ns != ns):
        return "involvedObject.namespace must be the Event's namespace"
    pod = lookup(ref_ns, name)
    if pod is None or ((pod.get("spec") or {}).get("nodeName")) != node:
        return f"no relationship found between node '{node}' and pod {ref_ns}/{name}"
    if uid and (pod.get("metadata") or {}).get("uid") != uid:
        return f"pod {ref_ns}/{name} with uid {uid} is not bound to node '{node}'"
    return ""


def event_size_refusal(event: dict) -> errors.ApiError | None:
    """422 for an Event a node may not store for its size (None when it may)."""
    msg = event.get("message")
    if isinstance(msg, str) and len(msg.encode()) > NODE_EVENT_MESSAGE_BYTES:
        return errors.Invalid(f'Event "{(event.get("metadata") or {}).get("name", "")}" is invalid: message: Too '
                              f'long: may not be more than {NODE_EVENT_MESSAGE_BYTES} bytes',
                              causes=[errors.Cause("message", f"Too long: may not be more than "
                                                              f"{NODE_EVENT_MESSAGE_BYTES} bytes", "FieldValueTooLong")])
    size = len(json.dumps(event, separators=(",", ":")).encode())
    if size > NODE_EVENT_BYTES:
        return errors.Invalid(f'Event "{(event.get("metadata") or {}).get("name", "")}" is invalid: the Event is '
                              f'{size} bytes; a node may write Events of at most {NODE_EVENT_BYTES} bytes',
                              causes=[errors.Cause("", f"Too long: may not be more than {NODE_EVENT_BYTES} bytes",
                                                   "FieldValueTooLong")])
    return None


class NodeAdmission:
    """Admission of nodes' writes that needs the store or state: NodeRestriction of the node's
    own Node (`admit`, with the node's verified join address) and of its Events (subject,
    size, a rate limit per node: `NODE_EVENT_QPS`/`NODE_EVENT_BURST`, 429 TooManyRequests with
    Retry-After beyond it, as Kubernetes' EventRateLimit of type User). Admins and controllers
    are not limited. One per API server process (the buckets are in memory)."""

    def __init__(self, store: Store, *, event_qps: float = NODE_EVENT_QPS, event_burst: int = NODE_EVENT_BURST,
                 clock=time.monotonic):
        self.store = store
        self.events = TokenBuckets(event_qps, event_burst, clock=clock)

    def admit(self, p: Principal, res: Resource | None, new: dict | None, old: dict | None, *,
              subresource: str | None = None) -> None:
        if p.role != "node" or res is None or not isinstance(new, dict):
            return
        if res.kind == "Node":
            joined = None
            if old is not None:
                ep = self.store.node_endpoint(p.subject)
                joined = ep.address if ep is not None else None
            admit(p, res, new, old, subresource=subresource, joined_from=joined)
        elif res.kind == "Event":
            self._admit_event(p, new, old)

    def _admit_event(self, p: Principal, new: dict, old: dict | None) -> None:
        name = (new.get("metadata") or {}).get("name", "") if isinstance(new.get("metadata"), dict) else ""
        for ev in ([old] if old is not None else []) + [new]:
            why = event_subject_refusal(p.subject, ev, self._pod)
            if why:
                raise errors.Forbidden(f'events "{name}" is forbidden: User "{p.username}" cannot write this '
                                       f'Event: {why}',
                                       causes=[errors.Cause("involvedObject", why, "FieldValueForbidden")])
        too_big = event_size_refusal(new)
        if too_big is not None:
            raise too_big
        wait = self.events.take(p.username)
        if wait > 0:
            raise errors.TooManyRequests(f"Too many requests: limit reached on type User for key {p.username}",
                                         details={"retryAfterSeconds": max(1, math.ceil(wait))})

    def _pod(self, namespace: str, name: str) -> dict | None:
        return self.store.get("pods", namespace, name) or self.store.last_logged("pods", namespace, name)


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
    if kind == "Node":      # never delete: as Kubernetes' system:node role (a node would free its name)
        return (verb in ("update", "patch") and name == node) or \
            (verb == "create" and (obj or {}).get("metadata", {}).get("name") == node)
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
