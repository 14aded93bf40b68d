"""Field ownership for server-side apply: Kubernetes' `metadata.managedFields`.

What this is. Every write records which *manager* (the request's `fieldManager`, else the
User-Agent's product name) set which fields, in `metadata.managedFields`, exactly as
Kubernetes' structured-merge-diff (SMD) does: one entry per (manager, operation
Apply|Update, subresource), each holding a set of field paths in the `FieldsV1` format
(`f:<field>`; `k:{"name":"web"}` for an item of a list merged by key; `v:"x"` for an item of
a set; `.` for "the item itself" where a node also has children). An apply
(`application/apply-patch+yaml`) merges the applied configuration into the live object,
owns exactly the configuration's fields, removes what the same manager applied before but no
longer does (unless another manager owns it too), and refuses (409) to change a value another
manager owns unless forced. This module is the pure logic; `apiserver.registry` calls
`track_update` on every create/update/patch and `apply` for applies.

Design notes.
- The schema (which maps are structs, which lists merge by which keys, which are sets or
  atomic) is derived once per kind from shoal's pydantic models, with the list and struct
  types Kubernetes declares (`+listType=map`, `+listMapKey`, `+structType=atomic`, …) in the
  tables below. A kind added to the models gets a schema at once; a list not in the tables
  is atomic, which is what Kubernetes assumes of a list it knows nothing about.
- Paths are tuples of FieldsV1 keys (`("f:spec", "f:replicas")`), so a managedFields tree
  *is* a trie of paths and the hot path (an Update: a controller's or an agent's status
  write) never decodes an entry: it walks the few changed paths into each entry's tree and
  copies only the nodes on the way (copy on write). A write that changes nothing touches no
  entry, so its `time` stays and a no-op PUT stays a no-op.
- Comparing two objects descends only where they differ (`==` on dicts is C-speed), so a
  status write costs what its changes cost, not the size of the pod.
- Kubernetes compares typed Go objects, in which a non-pointer struct (`spec`, `template`,
  `resources`, …) exists even when empty and `containers` is `null` rather than absent: the
  comparison fills those in (`Struct.skeleton`) so that entries look like Kubernetes' own
  (`f:spec` without `.`, but `f:rollingUpdate: {.: {}, …}` for a new pointer struct).
- Differences from Kubernetes, on purpose: managedFields written by a client are validated
  (422 naming the bad entry) instead of being silently replaced by the stored ones; an
  Apply that changes an entry's fields but not the object sets that entry's `time` (Kubernetes
  leaves a new entry without one); only one version per kind exists, so no conversion.

Next: `apiserver.registry` (where it is called), `apiserver.patch` (the other patch types).
"""
from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Union

from shoal.machinery.api import errors
from shoal.machinery.api.models.codec import unwrap_type
from shoal.machinery.api.models.field import FieldErrors
from shoal.machinery.api.times import format_time, parse_time

APPLY, UPDATE = "Apply", "Update"
FIELDS_TYPE = "FieldsV1"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
BEFORE_FIRST_APPLY = "before-first-apply"
ANCIENT_CHANGES = "ancient-changes"
MAX_UPDATE_MANAGERS = 10          # Kubernetes' DefaultMaxUpdateManagers
FIELD_MANAGER_MAX_LENGTH = 128    # bytes, Kubernetes' FieldManagerMaxLength
UNKNOWN_MANAGER = "unknown"

Path = tuple[str, ...]

# ------------------------------------------------------------------------------------- schema
# Kubernetes' list types for the lists of the kinds shoal serves, by (model class, wire field):
# associative lists (`+listType=map`) with their keys and key defaults, and sets
# (`+listType=set`). Every other list is atomic (replaced whole), as Kubernetes declares
# them (containerStatuses, tolerations, command, args, taints, …).
LIST_MAPS: dict[tuple[str, str], tuple[tuple[str, ...], dict[str, Any]]] = {
    ("ObjectMeta", "ownerReferences"): (("uid",), {}),
    ("PodSpec", "containers"): (("name",), {}),
    ("PodSpec", "initContainers"): (("name",), {}),
    ("PodSpec", "ephemeralContainers"): (("name",), {}),
    ("PodSpec", "volumes"): (("name",), {}),
    ("PodSpec", "imagePullSecrets"): (("name",), {}),
    ("PodSpec", "topologySpreadConstraints"): (("topologyKey", "whenUnsatisfiable"), {}),
    ("Container", "env"): (("name",), {}),
    ("Container", "ports"): (("containerPort", "protocol"), {"protocol": "TCP"}),
    ("Container", "volumeMounts"): (("mountPath",), {}),
    ("PodStatus", "conditions"): (("type",), {}),
    ("PodStatus", "podIPs"): (("ip",), {}),
    ("DeploymentStatus", "conditions"): (("type",), {}),
    ("ReplicaSetStatus", "conditions"): (("type",), {}),
    ("NodeStatus", "conditions"): (("type",), {}),
    ("NodeStatus", "addresses"): (("type",), {}),
    ("NamespaceStatus", "conditions"): (("type",), {}),
    ("ServiceSpec", "ports"): (("port", "protocol"), {"protocol": "TCP"}),
}
LIST_SETS: frozenset[tuple[str, str]] = frozenset({
    ("ObjectMeta", "finalizers"), ("NodeSpec", "podCIDRs"), ("Endpoint", "addresses"),
})
# Structs Kubernetes declares `+structType=atomic`, and `+mapType=atomic` maps: one leaf each.
ATOMIC_STRUCTS: frozenset[str] = frozenset({"LabelSelector", "ObjectReference"})
ATOMIC_MAPS: frozenset[tuple[str, str]] = frozenset({("PodSpec", "nodeSelector"), ("ServiceSpec", "selector")})
# What a typed Go object holds where the wire object has nothing: non-pointer structs are `{}`,
# `containers` (a slice without omitempty) is null. By (model class, wire field).
_EMPTY, _NULL = "{}", "null"
SKELETON: dict[tuple[str, str], str] = {
    **{(k, f): _EMPTY for k in ("Deployment", "ReplicaSet", "Pod", "Node", "Namespace", "Service")
       for f in ("metadata", "spec", "status")},
    ("ServiceStatus", "loadBalancer"): _EMPTY,
    ("Endpoints", "metadata"): _EMPTY, ("EndpointSlice", "metadata"): _EMPTY, ("Endpoint", "conditions"): _EMPTY,
    ("Lease", "metadata"): _EMPTY, ("Lease", "spec"): _EMPTY,
    ("ConfigMap", "metadata"): _EMPTY, ("Secret", "metadata"): _EMPTY,
    ("Event", "metadata"): _EMPTY, ("Event", "involvedObject"): _EMPTY, ("Event", "source"): _EMPTY,
    ("DeploymentSpec", "template"): _EMPTY, ("DeploymentSpec", "strategy"): _EMPTY,
    ("ReplicaSetSpec", "template"): _EMPTY,
    ("PodTemplateSpec", "metadata"): _EMPTY, ("PodTemplateSpec", "spec"): _EMPTY,
    ("PodSpec", "containers"): _NULL,
    ("Container", "resources"): _EMPTY,
    ("ContainerStatus", "state"): _EMPTY, ("ContainerStatus", "lastState"): _EMPTY,
    ("NodeStatus", "daemonEndpoints"): _EMPTY, ("NodeStatus", "nodeInfo"): _EMPTY,
    ("NodeDaemonEndpoints", "kubeletEndpoint"): _EMPTY,
}
# Metadata the server owns: never anybody's field (Kubernetes' stripMeta).
STRIPPED_META: frozenset[str] = frozenset({"name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName",
                                           "generation", "managedFields", "resourceVersion"})
STRIPPED_TOP: frozenset[str] = frozenset({"apiVersion", "kind"})

LEAF, STRUCT, MAP, ASSOC, SET = "leaf", "struct", "map", "assoc", "set"


class Node:
    """One schema node. `kind`: leaf (scalar or atomic), struct (named fields), map
    (granular, keys free), assoc (list merged by `keys`), set (list of scalars)."""
    __slots__ = ("kind", "fields", "skeleton", "elem", "keys", "defaults", "name")

    def __init__(self, kind: str, *, name: str = "", elem: "Node | None" = None,
                 keys: tuple[str, ...] = (), defaults: dict[str, Any] | None = None):
        self.kind = kind
        self.name = name
        self.fields: dict[str, Node] = {}
        self.skeleton: dict[str, Any] = {}
        self.elem = elem
        self.keys = keys
        self.defaults = defaults or {}

    def child(self, key: str) -> "Node":
        if self.kind == STRUCT:
            return self.fields.get(key) or _LEAF_NODE
        return self.elem or _LEAF_NODE


_LEAF_NODE = Node(LEAF)


def _is_model(tp: Any) -> bool:
    from pydantic import BaseModel
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _struct_node(cls: Any, cache: dict[type, Node]) -> Node:
    if cls in cache:
        return cache[cls]
    if cls.__name__ in ATOMIC_STRUCTS:
        return Node(LEAF, name=cls.__name__)
    node = cache[cls] = Node(STRUCT, name=cls.__name__)
    for attr, info in cls.model_fields.items():
        wire = info.alias or attr
        node.fields[wire] = _type_node(info.annotation, cls.__name__, wire, cache)
        sk = SKELETON.get((cls.__name__, wire))
        if sk is not None:
            node.skeleton[wire] = {} if sk == _EMPTY else None
    return node


def _type_node(tp: Any, owner: str, wire: str, cache: dict[type, Node]) -> Node:
    tp = unwrap_type(tp)
    if _is_model(tp):
        return _struct_node(tp, cache)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is dict:
        if (owner, wire) in ATOMIC_MAPS or len(args) != 2:
            return _LEAF_NODE
        return Node(MAP, elem=_type_node(args[1], owner, wire, cache))
    if origin is list:
        if (owner, wire) in LIST_MAPS:
            keys, defaults = LIST_MAPS[(owner, wire)]
            return Node(ASSOC, elem=_type_node(args[0] if args else Any, owner, wire, cache), keys=keys,
                        defaults=defaults)
        if (owner, wire) in LIST_SETS:
            return Node(SET, elem=_LEAF_NODE)
    return _LEAF_NODE


@lru_cache(maxsize=None)
def schema_for(kind: str) -> Node:
    """The schema of `kind` (a key of `machinery.api.models.KINDS`), built once."""
    from shoal.machinery.api.models import KINDS
    info = KINDS.get(kind)
    if info is None:
        raise KeyError(f"no schema for kind {kind!r}")
    return _struct_node(info.model, {})


# ------------------------------------------------------------------------------ path elements
def _go_json(value: Any) -> str:
    """JSON as Go's encoding/json writes it: compact, UTF-8, HTML characters escaped."""
    s = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if "<" in s or ">" in s or "&" in s or "\u2028" in s or "\u2029" in s:
        s = (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
             .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return s


def field_pe(name: str) -> str:
    return "f:" + name


def key_pe(values: dict[str, Any]) -> str:
    """`k:{"containerPort":80,"protocol":"TCP"}`: the key fields sorted by name."""
    try:
        # the type too: 1 and True are equal keys of a cache, not of a list
        return _key_pe(tuple(sorted((k, type(v), v) for k, v in values.items())))
    except TypeError:           # an unhashable key value (a list or a map): not worth caching
        return "k:" + _go_json({k: values[k] for k in sorted(values)})


@lru_cache(maxsize=8192)
def _key_pe(items: tuple) -> str:
    # Container names, condition types and ports repeat across every object: the JSON of a
    # key is computed once (it was a third of the cost of comparing a pod's status).
    return "k:" + _go_json({k: v for k, _, v in items})


def value_pe(value: Any) -> str:
    return "v:" + _go_json(value)


def _value_order(v: Any) -> tuple:
    """SMD's total order of values: numbers < strings < booleans < lists < maps < null."""
    if isinstance(v, bool):
        return (2, v)
    if isinstance(v, (int, float)):
        return (0, v)
    if isinstance(v, str):
        return (1, v)
    if isinstance(v, list):
        return (3, tuple(_value_order(x) for x in v))
    if isinstance(v, dict):
        return (4, tuple((k, _value_order(v[k])) for k in sorted(v)))
    return (5,)


@lru_cache(maxsize=8192)
def pe_order(pe: str) -> tuple:
    """The sort key of a FieldsV1 key: `.` first, then fields by name, keys, values, indexes."""
    if pe == ".":
        return (0,)
    t, body = pe[:2], pe[2:]
    if t == "f:":
        return (1, body)
    if t == "k:":
        fields = json.loads(body)
        return (2, tuple((k, _value_order(fields[k])) for k in sorted(fields)))
    if t == "v:":
        return (3, _value_order(json.loads(body)))
    if t == "i:":
        return (4, int(body))
    return (5, pe)


def _go_string(v: Any) -> str:
    """A value as SMD's `value.ToString` prints it in a path: strings quoted."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_go_string(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_go_string(v[k])}" for k in sorted(v)) + "}"
    return str(v)


def path_string(path: Path) -> str:
    """`.spec.template.spec.containers[name="web"].image`, as Kubernetes names a field in a
    conflict."""
    out = []
    for pe in path:
        t, body = pe[:2], pe[2:]
        if t == "f:":
            out.append("." + body)
        elif t == "k:":
            fields = json.loads(body)
            out.append("[" + ",".join(f"{k}={_go_string(fields[k])}" for k in sorted(fields)) + "]")
        elif t == "v:":
            out.append("[=" + _go_string(json.loads(body)) + "]")
        elif t == "i:":
            out.append(f"[{body}]")
    return "".join(out)


class SchemaError(Exception):
    """An object does not fit its schema (a list item without its key, a duplicate key):
    `path` says where."""

    def __init__(self, path: Path, message: str):
        super().__init__(f"{path_string(path) or '.'}: {message}")
        self.path = path


def _item_pe(node: Node, item: Any) -> str | None:
    """The path element of one list item: its key (assoc) or value (set); None when an assoc
    item lacks a key field that has no default."""
    if node.kind == SET:
        return value_pe(item)
    if not isinstance(item, dict):
        return None
    vals = {}
    for k in node.keys:
        v = item.get(k)
        if v is None:
            if k not in node.defaults:
                return None
            v = node.defaults[k]
        vals[k] = v
    return key_pe(vals)


def _index(node: Node, items: list, path: Path, *, strict: bool) -> tuple[list[str], dict[str, Any]] | None:
    """(path elements in list order, element -> item). A duplicate keeps its first item
    unless `strict` (an applied configuration), where duplicates and items without their
    key are errors; a live list with an item without its key gives None (compare it
    atomically)."""
    pes: list[str] = []
    seen: dict[str, Any] = {}
    for i, item in enumerate(items):
        pe = _item_pe(node, item)
        if pe is None:
            if strict:
                missing = next((k for k in node.keys if not (isinstance(item, dict) and item.get(k) is not None)),
                               "?")
                raise SchemaError(path, f"element {i}: associative list with keys has an element that omits key "
                                        f'field "{missing}" (and doesn\'t have default value)')
            return None
        if pe in seen:
            if strict:
                raise SchemaError(path, f"duplicate entries for key {path_string((pe,))}")
            continue
        seen[pe] = item
        pes.append(pe)
    return pes, seen


# ------------------------------------------------------------------------------ tries (FieldsV1)
# A FieldsV1 tree maps path elements to subtrees; `{}` is a member leaf, `"."` marks a node
# that is a member and has children too. A trie of paths to add or remove uses the same shape
# with `_END` marking "this path itself".
_END = ""


def _trie(paths: Iterable[Path]) -> dict:
    root: dict = {}
    for p in paths:
        n = root
        for pe in p:
            n = n.setdefault(pe, {})
        n[_END] = True
    return root


def _is_member(node: dict) -> bool:
    return not node or "." in node


def _assemble(member: bool, children: dict, *, sort: bool) -> dict | None:
    """A node from its membership and children; None when it is neither (it disappears)."""
    if not children:
        return {} if member else None
    keys = sorted(children, key=pe_order) if sort else list(children)
    out: dict = {".": {}} if member else {}
    for k in keys:
        out[k] = children[k]
    return out


def _children(node: dict) -> dict:
    return {k: v for k, v in node.items() if k != "."}


def _tree_remove(node: dict, trie: dict) -> dict | None:
    """`node` without the members named by `trie` (relative to it); the same object when
    nothing changes, None when nothing is left."""
    changed = False
    children = None
    for pe, sub in trie.items():
        if pe == _END:
            continue
        child = node.get(pe)
        if child is None:
            continue
        nc = _tree_remove(child, sub)
        if nc is child:
            continue
        if children is None:
            children = _children(node)
        changed = True
        if nc is None:
            del children[pe]
        else:
            children[pe] = nc
    member = _is_member(node)
    if _END in trie and member:
        member, changed = False, True
    if not changed:
        return node
    return _assemble(member, children if children is not None else _children(node), sort=False)


def _tree_add(node: dict | None, trie: dict) -> dict:
    """`node` (None: absent) with the members named by `trie` added; the same object when
    they were all there."""
    if node is None:
        member = _END in trie
        return _assemble(member, {pe: _tree_add(None, sub) for pe, sub in trie.items() if pe != _END},
                         sort=True) or {}
    member = _is_member(node)
    changed = _END in trie and not member
    children = None
    added_key = False
    for pe, sub in trie.items():
        if pe == _END:
            continue
        child = node.get(pe)
        nc = _tree_add(child, sub)
        if nc is child:
            continue
        if children is None:
            children = _children(node)
        if child is None:
            added_key = True
        children[pe] = nc
        changed = True
    if not changed:
        return node
    return _assemble(member or _END in trie, children if children is not None else _children(node),
                     sort=added_key) or {}


def set_remove(tree: dict, trie: dict) -> dict:
    """A field set (a FieldsV1 root, never a member itself) without the paths of `trie`;
    the same object when none of them was there."""
    out: dict | None = None
    for pe, sub in trie.items():
        child = tree.get(pe)
        if child is None or pe == _END:
            continue
        nc = _tree_remove(child, sub)
        if nc is child:
            continue
        if out is None:
            out = _children(tree)
        if nc is None:
            del out[pe]
        else:
            out[pe] = nc
    return tree if out is None else out


def set_add(tree: dict, trie: dict) -> dict:
    """A field set with the paths of `trie` added (Kubernetes' key order kept); the same
    object when they were all there."""
    out: dict | None = None
    new_key = False
    for pe, sub in trie.items():
        if pe == _END:
            continue
        child = tree.get(pe)
        nc = _tree_add(child, sub)
        if nc is child:
            continue
        if out is None:
            out = _children(tree)
        new_key = new_key or child is None
        out[pe] = nc
    if out is None:
        return tree
    return {k: out[k] for k in sorted(out, key=pe_order)} if new_key else out


def tree_has(tree: dict, path: Path) -> bool:
    node: dict | None = tree
    for pe in path:
        node = node.get(pe) if node is not None else None
        if node is None:
            return False
    return node is not None and _is_member(node)


def tree_paths(tree: dict, prefix: Path = ()) -> set[Path]:
    """Every member path of a FieldsV1 tree."""
    out: set[Path] = set()
    stack = [(prefix, tree)]
    while stack:
        p, node = stack.pop()
        if p and _is_member(node):
            out.add(p)
        for pe, sub in node.items():
            if pe != ".":
                stack.append((p + (pe,), sub))
    return out


def paths_tree(paths: Iterable[Path]) -> dict:
    """The FieldsV1 tree of a set of member paths, in Kubernetes' order."""
    return set_add({}, _trie(paths))


def iterate_order(paths: Iterable[Path]) -> list[Path]:
    """Paths in SMD's `Set.Iterate` order: at each level the members, then the children."""
    out: list[Path] = []

    def walk(node: dict, prefix: Path) -> None:
        keys = sorted((k for k in node if k != "."), key=pe_order)
        for k in keys:
            if _is_member(node[k]):
                out.append(prefix + (k,))
        for k in keys:
            if _children(node[k]):
                walk(node[k], prefix + (k,))

    walk(paths_tree(paths), ())
    return out


# ------------------------------------------------------------------------------ object walks
_MISSING: Any = object()


@dataclass
class Comparison:
    """What changed from an old object to a new one: paths added, removed, and leaves
    modified (SMD's `typed.Comparison`)."""
    added: list[Path]
    removed: list[Path]
    modified: list[Path]

    @property
    def changed(self) -> list[Path]:
        return self.added + self.modified


def _scope_keys(node: Node, obj: dict, scope: str | None) -> Iterable[str]:
    """Top-level fields in scope: "status" only the status; otherwise all but the status and
    the type fields."""
    if scope == "status":
        return ("status",) if "status" in obj else ()
    return (k for k in obj if k != "status" and k not in STRIPPED_TOP)


def compare(kind: str, old: dict | None, new: dict, *, scope: str | None = None) -> Comparison:
    """What changed from `old` (None: nothing, as on create) to `new`, both of `kind`, within
    `scope` ("status": the status; None: everything else). Server-owned metadata is left out."""
    node = schema_for(kind)
    cmp = Comparison([], [], [])
    lhs = old if isinstance(old, dict) else {}
    keys = list(_scope_keys(node, lhs, scope))
    keys += [k for k in _scope_keys(node, new, scope) if k not in lhs]
    for k in keys:
        lv, rv = lhs.get(k, _MISSING), new.get(k, _MISSING)
        if lv is not _MISSING and (lv is rv or lv == rv):
            continue
        if k in node.skeleton:
            lv = _skeleton(node, k, lv)
            rv = _skeleton(node, k, rv)
            if lv == rv:
                continue
        if k == "metadata":
            _compare_meta(node.child(k), lv, rv, cmp)
        else:
            _compare(node.child(k), lv, rv, (field_pe(k),), cmp)
    return cmp


def _skeleton(parent: Node, key: str, v: Any) -> Any:
    if v is _MISSING:
        sk = parent.skeleton[key]
        return {} if isinstance(sk, dict) else None
    return v


def _compare_meta(node: Node, lhs: Any, rhs: Any, cmp: Comparison) -> None:
    lm = lhs if isinstance(lhs, dict) else {}
    rm = rhs if isinstance(rhs, dict) else {}
    for k in list(lm) + [k for k in rm if k not in lm]:
        if k in STRIPPED_META:
            continue
        lv, rv = lm.get(k, _MISSING), rm.get(k, _MISSING)
        if lv is not _MISSING and (lv is rv or lv == rv):
            continue
        _compare(node.child(k), lv, rv, ("f:metadata", field_pe(k)), cmp)


def _leaf(lhs: Any, rhs: Any, path: Path, cmp: Comparison) -> None:
    if lhs is _MISSING:
        cmp.added.append(path)
    elif rhs is _MISSING:
        cmp.removed.append(path)
    elif lhs != rhs:
        cmp.modified.append(path)


def _compare(node: Node, lhs: Any, rhs: Any, path: Path, cmp: Comparison) -> None:
    kind = node.kind
    if kind == STRUCT or kind == MAP:
        lm = lhs if isinstance(lhs, dict) else None
        rm = rhs if isinstance(rhs, dict) else None
        if not lm and not rm:
            _leaf(lhs, rhs, path, cmp)
            return
        lm, rm = lm or {}, rm or {}
        struct = kind == STRUCT
        for k in list(lm) + [k for k in rm if k not in lm]:
            lv, rv = lm.get(k, _MISSING), rm.get(k, _MISSING)
            if lv is not _MISSING and (lv is rv or lv == rv):
                continue
            if struct and k in node.skeleton:
                if lhs is not _MISSING:
                    lv = _skeleton(node, k, lv)
                if rhs is not _MISSING:
                    rv = _skeleton(node, k, rv)
                if lv == rv:
                    continue
            _compare(node.child(k), lv, rv, path + (field_pe(k),), cmp)
    elif kind == ASSOC or kind == SET:
        ll = lhs if isinstance(lhs, list) else None
        rl = rhs if isinstance(rhs, list) else None
        if not ll and not rl:
            _leaf(lhs, rhs, path, cmp)
            return
        li = _index(node, ll or [], path, strict=False)
        ri = _index(node, rl or [], path, strict=False)
        if li is None or ri is None:
            _leaf(lhs, rhs, path, cmp)      # an item without its key: compare the list whole
            return
        lpes, lmap = li
        rpes, rmap = ri
        elem = node.elem or _LEAF_NODE
        for pe in lpes + [p for p in rpes if p not in lmap]:
            lv, rv = lmap.get(pe, _MISSING), rmap.get(pe, _MISSING)
            if lv is not _MISSING and (lv is rv or lv == rv):
                continue
            _compare(elem, lv, rv, path + (pe,), cmp)
    else:
        _leaf(lhs, rhs, path, cmp)
        return
    if lhs is _MISSING:
        cmp.added.append(path)
    elif rhs is _MISSING:
        cmp.removed.append(path)


def field_set(kind: str, obj: dict, *, scope: str | None = None) -> set[Path]:
    """The fields an (applied) object sets, as SMD's `ToFieldSet`: leaves, list items, map
    entries and empty or null structs, within `scope`; server-owned metadata left out.
    Raises SchemaError for an item without its key or a duplicate key."""
    node = schema_for(kind)
    out: set[Path] = set()
    for k in _scope_keys(node, obj, scope):
        v = obj[k]
        if k == "metadata" and isinstance(v, dict):
            child = node.child(k)
            for mk, mv in v.items():
                if mk not in STRIPPED_META:
                    _to_set(child, mk, mv, ("f:metadata",), out, named=True)
            continue
        _to_set(node, k, v, (), out, named=True)
    return out


def _to_set(parent: Node, key: str, v: Any, prefix: Path, out: set[Path], *, named: bool) -> None:
    """Add the field `key` of a struct (named) or map holding `v`."""
    path = prefix + (field_pe(key),)
    node = parent.child(key)
    if v is None or (isinstance(v, dict) and not v) or not named:
        out.add(path)
    _to_set_value(node, v, path, out)


def _to_set_value(node: Node, v: Any, path: Path, out: set[Path]) -> None:
    kind = node.kind
    if kind == STRUCT or kind == MAP:
        if isinstance(v, dict):
            for k, cv in v.items():
                _to_set(node, k, cv, path, out, named=kind == STRUCT)
        return
    if kind == ASSOC or kind == SET:
        if isinstance(v, list):
            pes, items = _index(node, v, path, strict=True) or ([], {})
            elem = node.elem or _LEAF_NODE
            for pe in pes:
                out.add(path + (pe,))
                if kind == ASSOC:
                    _to_set_value(elem, items[pe], path + (pe,), out)
        elif v is not None:
            out.add(path)
        return
    out.add(path)


def merge(kind: str, live: dict, config: dict) -> dict:
    """The configuration merged into the live object (SMD's `Merge`): the configuration's
    values win; structs and maps merge field by field; associative lists and sets item by
    item, in the order SMD gives (the configuration's order for the items it names, the live
    items it does not name where they were); atomic lists and leaves are replaced. A new
    object; neither input is modified (values may be shared)."""
    node = schema_for(kind)
    out = _merge(node, live, config, ())
    return out if isinstance(out, dict) else {}


def _merge(node: Node, lhs: Any, rhs: Any, path: Path) -> Any:
    if rhs is _MISSING:
        return lhs
    if lhs is _MISSING or lhs is None:
        return rhs
    kind = node.kind
    if kind == STRUCT or kind == MAP:
        lm = lhs if isinstance(lhs, dict) else None
        rm = rhs if isinstance(rhs, dict) else None
        if not lm and not rm:
            return rhs
        lm, rm = lm or {}, rm or {}
        out = {}
        for k, lv in lm.items():
            out[k] = _merge(node.child(k), lv, rm.get(k, _MISSING), path + (field_pe(k),))
        for k, rv in rm.items():
            if k not in lm:
                out[k] = rv
        return out
    if kind == ASSOC or kind == SET:
        ll = lhs if isinstance(lhs, list) else None
        rl = rhs if isinstance(rhs, list) else None
        if not ll and not rl:
            return rhs
        return _merge_list(node, ll or [], rl or [], path)
    return rhs


def _merge_list(node: Node, lhs: list, rhs: list, path: Path) -> Any:
    """SMD's `visitListItems`: items in both are merged; the result follows the live order for
    live-only items and the configuration's order for the rest."""
    rpes, rmap = _index(node, rhs, path, strict=True) or ([], {})
    lpes: list[str] = []
    lmap: dict[str, Any] = {}
    for item in lhs:
        pe = _item_pe(node, item)
        if pe is None:
            return rhs          # a live item without its key: the configuration replaces the list
        lmap[pe] = None if pe in lmap else item   # a duplicated live item merges as nothing
        lpes.append(pe)
    elem = node.elem or _LEAF_NODE
    shared = [pe for pe in rpes if pe in lmap]
    shared.reverse()
    next_shared = shared.pop() if shared else None
    merged_rhs: set[str] = set()
    out: list = []

    def add(lv: Any, rv: Any, pe: str) -> None:
        v = _merge(elem, _MISSING if lv is None else lv, rv, path + (pe,)) if rv is not _MISSING else lv
        if v is not None and v is not _MISSING:
            out.append(v)

    li = ri = 0
    while li < len(lpes) or ri < len(rpes):
        if li < len(lpes) and ri < len(rpes):
            pe = lpes[li]
            if pe == rpes[ri]:
                merged_rhs.add(pe)
                add(lmap.get(pe), rmap[pe], pe)
                li += 1
                ri += 1
                next_shared = shared.pop() if shared else None
                continue
            if pe in rmap and next_shared is not None and next_shared != pe:
                li += 1
                continue
        if li < len(lpes):
            pe = lpes[li]
            if pe not in rmap:
                add(lhs[li], _MISSING, pe)
                li += 1
                continue
            if pe in merged_rhs:
                li += 1
        if ri < len(rpes):
            pe = rpes[ri]
            merged_rhs.add(pe)
            add(lmap.get(pe), rmap[pe], pe)
            ri += 1
            if next_shared is not None and next_shared == pe:
                next_shared = shared.pop() if shared else None
    return out


def _ensure_named(node: Node, paths: Iterable[Path]) -> set[Path]:
    """The paths and every prefix of theirs that ends on a struct's named field (SMD's
    `EnsureNamedFieldsAreMembers`)."""
    out = set(paths)
    for p in list(out):
        n = node
        for i, pe in enumerate(p[:-1]):
            named = n.kind == STRUCT and pe.startswith("f:")
            n = n.child(pe[2:]) if pe.startswith("f:") else (n.elem or _LEAF_NODE)
            if named:
                out.add(p[:i + 1])
    return out


def prune(kind: str, merged: dict, last_applied: set[Path], owned: set[Path]) -> dict:
    """Remove from `merged` what the applying manager applied last time (`last_applied`) and
    nobody owns now (`owned`: every manager's fields, the new applied set included), as SMD's
    `prune` does: a field, map entry or list item goes with everything below it when it, or
    something above it, is owned by nobody (named struct fields above owned paths count as
    owned); a container left empty goes too. Returns a new object."""
    if not last_applied:
        return merged
    node = schema_for(kind)
    lens = _ensure_named(node, last_applied)
    oens = _ensure_named(node, owned)
    out = _prune(node, merged, _trie(lens), (), lens, oens, False)
    return out if isinstance(out, dict) else {}


_GONE: Any = object()


def _prune(node: Node, value: Any, trie: dict, path: Path, lens: set[Path], oens: set[Path], doomed: bool,
           keys: tuple[str, ...] = ()) -> Any:
    """`keys`: the key fields of the list item `value` is; an item that stays keeps them."""
    kind = node.kind
    if kind in (STRUCT, MAP) and isinstance(value, dict) and value:
        out: dict | None = None
        for k, v in value.items():
            pe = field_pe(k)
            sub = trie.get(pe)
            if sub is None or k in keys:
                continue
            cp = path + (pe,)
            cdoom = doomed or cp not in oens
            nv = _GONE if (cdoom and cp in lens) else _prune(node.child(k), v, sub, cp, lens, oens, cdoom)
            if nv is v:
                continue
            if out is None:
                out = dict(value)
            if nv is _GONE:
                del out[k]
            else:
                out[k] = nv
        if out is None:
            return value
        return out if out else _GONE
    if kind in (ASSOC, SET) and isinstance(value, list) and value:
        elem = node.elem or _LEAF_NODE
        kept: list = []
        changed = False
        for item in value:
            ipe = _item_pe(node, item)
            sub = trie.get(ipe) if ipe is not None else None
            if sub is None or ipe is None:
                kept.append(item)
                continue
            cp = path + (ipe,)
            cdoom = doomed or cp not in oens
            nv = _GONE if (cdoom and cp in lens) else _prune(elem, item, sub, cp, lens, oens, cdoom, node.keys)
            if nv is not item:
                changed = True
            if nv is not _GONE:
                kept.append(nv)
        if not changed:
            return value
        return kept if kept else _GONE
    return value


# ------------------------------------------------------------------------------ managers
@dataclass(frozen=True)
class Manager:
    """Who writes: `name` (the fieldManager), the operation, and the subresource written
    through ("" for the main resource)."""
    name: str
    operation: str = UPDATE
    subresource: str = ""


def _entry_manager(e: dict) -> tuple:
    """The identity of an entry (Kubernetes' BuildManagerIdentifier): an Apply entry is one
    per manager and subresource whatever its apiVersion; an Update one per apiVersion too."""
    op = e.get("operation")
    return (e.get("manager") or "", op, e.get("subresource") or "", "" if op == APPLY else e.get("apiVersion"))


def _identity_json(e: dict) -> str:
    """The identity as Kubernetes spells it (the order conflicts are printed in)."""
    d: dict[str, Any] = {"manager": e.get("manager") or ""}
    if e.get("operation"):
        d["operation"] = e["operation"]
    if e.get("operation") != APPLY and e.get("apiVersion"):
        d["apiVersion"] = e["apiVersion"]
    if e.get("subresource"):
        d["subresource"] = e["subresource"]
    return json.dumps(d, separators=(",", ":"))


def _new_entry(m: Manager, api_version: str, tree: dict, time: str | None) -> dict:
    e: dict[str, Any] = {"manager": m.name, "operation": m.operation, "apiVersion": api_version}
    if time:
        e["time"] = time
    e["fieldsType"] = FIELDS_TYPE
    e["fieldsV1"] = tree
    if m.subresource:
        e["subresource"] = m.subresource
    return e


def _with(e: dict, **changes: Any) -> dict:
    """A copy of entry `e` with `changes`, keeping Kubernetes' field order."""
    out = dict(e)
    out.update(changes)
    order = ("manager", "operation", "apiVersion", "time", "fieldsType", "fieldsV1", "subresource")
    return {k: out[k] for k in order if k in out and out[k] is not None}


def _sort_entries(entries: list[dict]) -> list[dict]:
    """Kubernetes' order: Apply before Update, then by time, manager, apiVersion, subresource."""
    return sorted(entries, key=lambda e: (e.get("operation") or "", e.get("time") or "", e.get("manager") or "",
                                          e.get("apiVersion") or "", e.get("subresource") or ""))


def is_reset(value: Any) -> bool:
    """A request's managedFields that clear them: `[]` or `[{}]` (Kubernetes' reset)."""
    return isinstance(value, list) and (not value or (len(value) == 1 and value[0] == {}))


def check_field_manager(name: str, field: str = "fieldManager") -> list[errors.Cause]:
    """Kubernetes' ValidateFieldManager: at most 128 bytes, printable characters only."""
    causes = []
    if len(name.encode()) > FIELD_MANAGER_MAX_LENGTH:
        causes.append(errors.Cause(field, f"Too long: may not be more than {FIELD_MANAGER_MAX_LENGTH} bytes",
                                   "FieldValueTooLong"))
    for i, ch in enumerate(name):
        if not ch.isprintable():
            causes.append(errors.Cause(field, f"Invalid value: {json.dumps(name)}: invalid character "
                                              f"U+{ord(ch):04X} (at position {i})", "FieldValueInvalid"))
    return causes


def _printable_prefix(user_agent: str) -> str:
    out, size = [], 0
    for ch in user_agent.split("/", 1)[0]:
        if not ch.isprintable():
            continue
        n = len(ch.encode())
        if size + n > FIELD_MANAGER_MAX_LENGTH:
            break
        out.append(ch)
        size += n
    return "".join(out)


def request_manager(field_manager: str | None, user_agent: str | None, *, options: str,
                    apply: bool = False, force: str | None = None) -> str:
    """The manager of a request, as Kubernetes picks it: the `fieldManager` query parameter,
    else the User-Agent up to its first `/` (`kubectl/v1.32.4 …` → `kubectl`,
    `OpenAPI-Generator/31.0.0/python` → `OpenAPI-Generator`), else `unknown`. Raises Invalid
    (`<options>.meta.k8s.io "" is invalid: …`, `options` being CreateOptions, UpdateOptions or
    PatchOptions) for a bad fieldManager, an apply without one, or `force` on another patch."""
    causes: list[errors.Cause] = []
    if apply and not field_manager:
        causes.append(errors.Cause("fieldManager", "Required value: is required for apply patch",
                                   "FieldValueRequired"))
    if not apply and force is not None and options == "PatchOptions":
        causes.append(errors.Cause("force", "Forbidden: may not be specified for non-apply patch",
                                   "FieldValueForbidden"))
    if apply and force not in (None, "", "true", "false", "True", "False", "1", "0"):
        causes.append(errors.Cause("force", f"Invalid value: {json.dumps(force)}: must be true or false",
                                   "FieldValueInvalid"))
    if field_manager:
        causes += check_field_manager(field_manager)
    if causes:
        parts = [f"{c.field}: {c.message}" for c in causes]
        body = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
        raise errors.Invalid(f'{options}.meta.k8s.io "" is invalid: {body}', causes=causes,
                             details={"group": "meta.k8s.io", "kind": options})
    return field_manager or _printable_prefix(user_agent or "") or UNKNOWN_MANAGER


# ------------------------------------------------------------------------------ decoding entries
def _canonical_pe(pe: Any, where: str, errs: FieldErrors) -> str | None:
    if not isinstance(pe, str) or len(pe) < 2 or pe[1] != ":":
        errs.invalid(where, pe, 'must be a FieldsV1 key: "f:<name>", "k:<json object>", "v:<json value>" or '
                                '"i:<index>"')
        return None
    t, body = pe[0], pe[2:]
    if t == "f":
        return pe
    try:
        if t == "k":
            v = json.loads(body)
            if not isinstance(v, dict) or not v:
                raise ValueError
            return key_pe(v)
        if t == "v":
            return value_pe(json.loads(body))
        if t == "i":
            return f"i:{int(body)}"
    except ValueError:
        pass
    errs.invalid(where, pe, 'must be a FieldsV1 key: "f:<name>", "k:<json object>", "v:<json value>" or '
                            '"i:<index>"')
    return None


def _canonical_tree(tree: Any, where: str, errs: FieldErrors, *, root: bool = False) -> dict:
    if not isinstance(tree, dict):
        errs.invalid(where, tree, "must be an object")
        return {}
    out: dict = {}
    member = False
    for k, v in tree.items():
        if k == ".":
            if v != {}:
                errs.invalid(f"{where}[.]", v, "must be {}")
            member = True
            continue
        pe = _canonical_pe(k, where, errs)
        if pe is None:
            continue
        sub = _canonical_tree(v, f"{where}[{k}]", errs)
        if pe in out:
            errs.duplicate(where, k)
        out[pe] = sub
    if not out:
        return {}
    return _assemble(member and not root, out, sort=True) or {}


def decode_entries(raw: Any, *, qualified: str = "ObjectMeta", name: str = "",
                   path: str = "metadata.managedFields") -> list[dict]:
    """A client's managedFields, checked and in canonical form (Kubernetes' field order, keys
    sorted, times at whole seconds, entries sorted). Raises Invalid naming each bad entry:
    operation Apply|Update, non-empty apiVersion, fieldsType FieldsV1, a fieldManager-valid
    manager, FieldsV1 keys, an RFC 3339 time, no unknown fields, no manager twice."""
    errs = FieldErrors()
    if not isinstance(raw, list):
        errs.invalid(path, raw, "must be a list of managed fields entries")
        errs.raise_if_any(qualified, name)
    out: list[dict] = []
    seen: set[tuple] = set()
    allowed = {"manager", "operation", "apiVersion", "time", "fieldsType", "fieldsV1", "subresource"}
    for i, e in enumerate(raw):
        p = f"{path}[{i}]"
        if not isinstance(e, dict):
            errs.invalid(p, e, "must be an object")
            continue
        for k in e:
            if k not in allowed:
                errs.invalid(f"{p}.{k}", e[k], "unknown field")
        manager = e.get("manager") or ""
        if not isinstance(manager, str):
            errs.invalid(f"{p}.manager", manager, "must be a string")
            manager = ""
        for c in check_field_manager(manager, f"{p}.manager"):
            errs.causes.append(c)
        op = e.get("operation")
        if op not in (APPLY, UPDATE):
            errs.invalid(f"{p}.operation", op, "must be `Apply` or `Update`")
        av = e.get("apiVersion")
        if not isinstance(av, str) or not av:
            errs.required(f"{p}.apiVersion", "must not be empty")
        if e.get("fieldsType") != FIELDS_TYPE:
            errs.invalid(f"{p}.fieldsType", e.get("fieldsType"), "must be `FieldsV1`")
        sub = e.get("subresource") or ""
        if not isinstance(sub, str):
            errs.invalid(f"{p}.subresource", sub, "must be a string")
            sub = ""
        time = e.get("time")
        if time is not None:
            t = parse_time(time) if isinstance(time, str) else None
            if t is None:
                errs.invalid(f"{p}.time", time, "must be an RFC 3339 time, e.g. 2024-05-01T12:00:00Z")
            time = format_time(t) if t is not None else None
        tree = _canonical_tree(e.get("fieldsV1", {}), f"{p}.fieldsV1", errs, root=True)
        entry = _with({}, manager=manager, operation=op, apiVersion=av, time=time, fieldsType=FIELDS_TYPE,
                      fieldsV1=tree, subresource=sub or None)
        ident = _entry_manager(entry)
        if ident in seen:
            errs.duplicate(p, {"manager": manager, "operation": op, "subresource": sub})
        seen.add(ident)
        out.append(entry)
    errs.raise_if_any(qualified, name)
    return _sort_entries(out)


def requested_entries(requested: Any, live_entries: list[dict], *, qualified: str = "ObjectMeta",
                      name: str = "") -> list[dict]:
    """The managedFields an update starts from (Kubernetes' decodeLiveOrNew): the stored ones
    when the request leaves them out (None) or sends them back unchanged; none after a reset
    (`[]` or `[{}]`); else the request's own, checked (`decode_entries`)."""
    if requested is None or requested == live_entries:
        return live_entries
    if is_reset(requested):
        return []
    return decode_entries(requested, qualified=qualified, name=name)


# ------------------------------------------------------------------------------ update
def created_fields(kind: str, obj: dict, *, scope: str | None = None) -> dict:
    """The FieldsV1 tree of every field a create of `obj` sets: the same set as the paths
    `compare(kind, None, obj)` reports, built directly in Kubernetes' order (a create is the
    write every pod starts with)."""
    node = schema_for(kind)
    out: dict = {}
    for k in sorted(_scope_keys(node, obj, scope)):
        v = obj[k]
        if k == "metadata" and isinstance(v, dict):
            meta = node.child(k)
            sub = {}
            for mk in sorted(v):
                if mk not in STRIPPED_META:
                    sub["f:" + mk] = _added_tree(meta.child(mk), v[mk])
            if sub:
                out["f:metadata"] = sub
            continue
        tree = _vs_skeleton(node, k, v)
        if tree is not None:
            out["f:" + k] = tree
    return out


def _vs_skeleton(parent: Node, key: str, v: Any) -> dict | None:
    """The tree of field `key` (value `v`) of a struct that exists on the old side: against
    the typed Go object's zero value for it (`{}` for a value struct, null for containers),
    else as added. None when nothing differs."""
    node = parent.child(key)
    if key not in parent.skeleton:
        return _added_tree(node, v)
    sk = parent.skeleton[key]
    if node.kind == STRUCT and isinstance(sk, dict):
        if not isinstance(v, dict) or not v:
            return None if v == sk else {}
        out = {}
        for k in sorted(v):
            t = _vs_skeleton(node, k, v[k])
            if t is not None:
                out["f:" + k] = t
        return out or None
    if node.kind in (ASSOC, SET) and sk is None and isinstance(v, list) and v:
        items = _items_tree(node, v)
        return items if items is not None else {}
    return None if v == sk else {}


def _items_tree(node: Node, v: list) -> dict | None:
    idx = _index(node, v, (), strict=False)
    if idx is None:
        return None
    pes, items = idx
    elem = node.elem or _LEAF_NODE
    return {pe: (_added_tree(elem, items[pe]) if node.kind == ASSOC else {}) for pe in sorted(pes, key=pe_order)}


def _added_tree(node: Node, v: Any) -> dict:
    """The tree of a value that is new (nothing on the old side): a member, with its fields,
    items or entries below it."""
    kind = node.kind
    if (kind == STRUCT or kind == MAP) and isinstance(v, dict) and v:
        out: dict = {".": {}}
        for k in sorted(v):
            out["f:" + k] = _added_tree(node.child(k), v[k])
        return out
    if (kind == ASSOC or kind == SET) and isinstance(v, list) and v:
        items = _items_tree(node, v)
        if items is None:
            return {}
        out = {".": {}}
        out.update(items)
        return out
    return {}


def track_update(kind: str, entries: list[dict], live: dict | None, new: dict, *, manager: Manager,
                 api_version: str, now: str, scope: str | None = None) -> list[dict]:
    """managedFields after a create (`live` None) or an update from `live` to `new` made by
    `manager` (operation Update): the fields the write added or changed become the manager's
    (taken from any other), fields it removed leave every manager. `entries` is what the
    write starts from (`requested_entries`). An existing object that has no entries is not
    tracked (Kubernetes' rule: it stays so until an apply). Returns `entries` itself when
    nothing changes, so an unchanged write keeps every `time`."""
    if live is not None and not entries:
        return entries
    if live is None and not entries:
        tree = created_fields(kind, new, scope=scope)
        return [_new_entry(manager, api_version, tree, now)] if tree else []
    cmp = compare(kind, live, new, scope=scope)
    return _record(entries, cmp, manager=manager, api_version=api_version, now=now)


def _record(entries: list[dict], cmp: Comparison, *, manager: Manager, api_version: str, now: str) -> list[dict]:
    """Kubernetes' Update bookkeeping: every entry loses the removed paths, every other entry
    the changed ones, the manager's entry gains the changed ones (and the time `now`); empty
    entries go."""
    changed = cmp.changed
    if not changed and not cmp.removed:
        return entries
    me = (manager.name, UPDATE, manager.subresource, api_version)
    drop_others = _trie(changed + cmp.removed)
    drop_mine = _trie(cmp.removed)
    out: list[dict] = []
    mine: dict | None = None
    touched = False
    for e in entries:
        is_me = _entry_manager(e) == me
        tree = e.get("fieldsV1") or {}
        drop = drop_mine if is_me else drop_others
        nt = set_remove(tree, drop) if drop else tree
        if not nt:
            touched = True
            continue            # nothing left: the entry goes
        if nt is not tree:
            touched = True
            e = _with(e, fieldsV1=nt)
        if is_me:
            mine = e
        else:
            out.append(e)
    if changed:
        add = _trie(changed)
        mine = (_new_entry(manager, api_version, set_add({}, add), now) if mine is None
                else _with(mine, fieldsV1=set_add(mine.get("fieldsV1") or {}, add), time=now))
        touched = True
    if not touched:
        return entries
    if mine is not None:
        out.append(mine)
    return cap_managers(_sort_entries(out))


def cap_managers(entries: list[dict], limit: int = MAX_UPDATE_MANAGERS) -> list[dict]:
    """At most `limit` Update entries: the oldest are merged into one `ancient-changes` entry
    per apiVersion (Kubernetes' capManagers)."""
    updaters = [e for e in entries if e.get("operation") == UPDATE]
    if len(updaters) <= limit:
        return entries
    updaters.sort(key=lambda e: (e.get("time") or "", _identity_json(e)))
    gone: set[int] = set()
    first: dict[str, dict] = {}
    buckets: dict[str, dict] = {}
    existing = {e.get("apiVersion") or "": e for e in updaters
                if e.get("manager") == ANCIENT_CHANGES and not e.get("subresource")}
    length = len(updaters)
    for e in updaters:
        if length <= limit:
            break
        version = e.get("apiVersion") or ""
        if version not in first:
            first[version] = e
            continue
        bucket = buckets.get(version)
        if bucket is None:
            bucket = existing.get(version) or first[version]
            gone.add(id(bucket))
        if bucket is e:
            continue
        paths = tree_paths(bucket.get("fieldsV1") or {}) | tree_paths(e.get("fieldsV1") or {})
        buckets[version] = _new_entry(Manager(ANCIENT_CHANGES), version, paths_tree(paths), e.get("time"))
        gone.add(id(e))
        length -= 1
    return _sort_entries([e for e in entries if id(e) not in gone] + list(buckets.values()))


# ------------------------------------------------------------------------------ apply
@dataclass
class Conflict:
    manager: dict       # the entry (its identity and apiVersion)
    path: Path


def conflict_error(conflicts: list[Conflict]) -> errors.Conflict:
    """409 as Kubernetes words it: `Apply failed with 1 conflict: conflict with "m" using
    apps/v1: .spec.replicas`, one `FieldManagerConflict` cause per field."""
    def who(e: dict) -> str:
        s = json.dumps(e.get("manager") or "", ensure_ascii=False)
        if e.get("subresource"):
            s += f" with subresource {json.dumps(e['subresource'], ensure_ascii=False)}"
        if e.get("operation") == UPDATE:
            s += f" using {e.get('apiVersion')}"
        return s

    causes = [errors.Cause(path_string(c.path), f"conflict with {who(c.manager)}", "FieldManagerConflict")
              for c in conflicts]
    if len(conflicts) == 1:
        msg = f"Apply failed with 1 conflict: conflict with {who(conflicts[0].manager)}: " \
              f"{path_string(conflicts[0].path)}"
    else:
        lines: list[str] = []
        by: dict[str, list[Conflict]] = {}
        for c in conflicts:
            by.setdefault(_identity_json(c.manager), []).append(c)
        for ident in sorted(by):
            lines.append(f"conflicts with {who(by[ident][0].manager)}:")
            lines += [f"- {path_string(c.path)}" for c in by[ident]]
        msg = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return errors.Conflict(msg, causes=causes)


def _strip(paths: set[Path]) -> set[Path]:
    """Server-owned metadata out of a field set (stripMeta)."""
    return {p for p in paths if not (p[0] == "f:metadata" and (len(p) == 1 or (len(p) == 2 and p[1][2:] in
                                                                               STRIPPED_META)))}


def check_config(kind: str, api_version: str, config: Any) -> None:
    """An applied configuration must be an object of the kind and version it is applied to,
    and may not carry managedFields (Kubernetes' checks, 400)."""
    if not isinstance(config, dict):
        raise errors.BadRequest("the applied configuration must be an object")
    av, k = config.get("apiVersion") or "", config.get("kind") or ""
    if av != api_version or k != kind:
        group, _, version = av.rpartition("/")
        raise errors.BadRequest(f"invalid object type: {group}/{version}, Kind={k}: an applied configuration "
                                f"must say apiVersion: {api_version} and kind: {kind}",
                                causes=[errors.Cause("apiVersion" if av != api_version else "kind",
                                                     f"expected {api_version if av != api_version else kind}")])
    md = config.get("metadata")
    if md is not None and not isinstance(md, dict):
        raise errors.BadRequest("metadata: must be an object", causes=[errors.Cause("metadata", "must be an object")])
    if md and md.get("managedFields") is not None:
        raise errors.BadRequest("metadata.managedFields must be nil",
                                causes=[errors.Cause("metadata.managedFields", "must be nil in an applied "
                                                                               "configuration")])


def _last_applied_allowed(kind: str, api_version: str, live: dict, scope: str | None) -> set[Path] | None:
    """Fields of the live object's client-side-apply annotation whose value is still the live
    one: conflicts on them are what upgrading from `kubectl apply` to `kubectl apply
    --server-side` takes over (Kubernetes' lastAppliedManager). None without a usable
    annotation."""
    text = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not text:
        return None
    try:
        last = json.loads(text)
    except ValueError:
        return None
    if not isinstance(last, dict) or last.get("apiVersion") != api_version:
        return None
    try:
        fields = field_set(kind, last, scope=scope)
    except SchemaError:
        return None
    cmp = compare(kind, last, live, scope=scope)
    return fields - set(cmp.added) - set(cmp.modified) - set(cmp.removed)


def last_applied_value(config: dict) -> str:
    """The client-side-apply annotation of `config`: Go's JSON of it (keys sorted) without the
    annotation itself, and a newline, as Kubernetes' lastAppliedUpdater writes it."""
    cfg = dict(config)
    md = cfg.get("metadata")
    if isinstance(md, dict) and isinstance(md.get("annotations"), dict):
        ann = {k: v for k, v in md["annotations"].items() if k != LAST_APPLIED}
        cfg["metadata"] = dict(md, annotations=ann)
    s = json.dumps(cfg, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") + "\n"


def apply(kind: str, entries: list[dict], live: dict | None, config: dict, *, manager: str, api_version: str,
          now: str, force: bool = False, subresource: str = "") -> dict:
    """Server-side apply of `config` by `manager` to `live` (None: the object does not exist;
    it is created from the configuration). Returns the merged object (not yet defaulted or
    validated) carrying its new `metadata.managedFields`; the caller keeps the server-owned
    metadata and the resourceVersion check. Raises errors.Conflict (409) listing every field
    another manager owns with a different value, unless `force`; BadRequest when the
    configuration does not fit the schema.

    Steps (SMD's Updater.Apply inside Kubernetes' field-manager chain): an object without
    managedFields first gets a `before-first-apply` Update entry owning all of it; the
    configuration is merged in; the manager's entry becomes exactly the configuration's
    fields; what it applied last time and nobody owns now is pruned; the change from the live
    object is checked against every other manager (conflicts) and what it removed leaves
    their entries. For manager `kubectl`, conflicts on fields whose value is still that of the
    client-side-apply annotation are taken over, and that annotation, when present, is set to
    the new configuration."""
    scope = "status" if subresource == "status" else None
    ident = Manager(manager, APPLY, subresource)
    try:
        applied = _strip(field_set(kind, config, scope=scope))
        merged = merge(kind, live or {}, config)
    except SchemaError as err:
        raise errors.BadRequest(f"failed to create typed patch object: {err}",
                                causes=[errors.Cause(path_string(err.path).lstrip("."), str(err))]) from None
    entries = list(entries)
    if live is not None and not entries:
        before = Manager(BEFORE_FIRST_APPLY, UPDATE, subresource)
        entries = track_update(kind, [], None, live, manager=before, api_version=api_version, now=now, scope=scope)
    me = (ident.name, APPLY, ident.subresource, "")
    mine = next((e for e in entries if _entry_manager(e) == me), None)
    others = [e for e in entries if e is not mine]
    last = tree_paths(mine.get("fieldsV1") or {}) if mine is not None else set()
    if last:
        owned = set(applied)
        for e in others:
            owned |= tree_paths(e.get("fieldsV1") or {})
        merged = prune(kind, merged, last, owned)
    cmp = compare(kind, live or {}, merged, scope=scope)
    conflicts: list[Conflict] = []
    if cmp.changed:
        for e in others:
            tree = e.get("fieldsV1") or {}
            for p in iterate_order(p for p in cmp.changed if tree_has(tree, p)):
                conflicts.append(Conflict(e, p))
    if conflicts and not force:
        allowed = _last_applied_allowed(kind, api_version, live or {}, scope) if manager == "kubectl" else None
        if allowed is not None:
            conflicts = [c for c in conflicts if c.path not in allowed]
        if conflicts:
            conflicts.sort(key=lambda c: _identity_json(c.manager))
            raise conflict_error(conflicts)
    # forced (or no) conflicts: the other managers lose what changed and what went
    drop = _trie(cmp.changed + cmp.removed)
    out: list[dict] = []
    for e in others:
        tree = e.get("fieldsV1") or {}
        nt = set_remove(tree, drop) if drop else tree
        if nt:
            out.append(e if nt is tree else _with(e, fieldsV1=nt))
    if applied:
        tree = paths_tree(applied)
        object_changed = live is None or merged != live
        if mine is not None and not object_changed and tree_paths(mine.get("fieldsV1") or {}) == applied:
            out.append(mine)
        else:
            out.append(_new_entry(ident, api_version, tree, now) if mine is None
                       else _with(mine, fieldsV1=tree, time=now, apiVersion=api_version))
    md = dict(merged.get("metadata") or {})
    if manager == "kubectl" and ((md.get("annotations") or {}).get(LAST_APPLIED)):
        md["annotations"] = dict(md["annotations"], **{LAST_APPLIED: last_applied_value(config)})
    result = _sort_entries(out)
    if result:
        md["managedFields"] = result
    else:
        md.pop("managedFields", None)
    merged = dict(merged, metadata=md)
    return merged
