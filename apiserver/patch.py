"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
Kubernetes' strategic merge patch (the subset kubectl's client-side apply and
the Python client send). Server-side apply is not a patch format: it merges by
field ownership, in `apiserver.managedfields`.

All functions are pure: they return a new document and never modify their
inputs. Bad patches raise `errors.BadRequest` / `errors.Invalid` naming the
operation or path.
"""
from __future__ import annotations

import copy
from typing import Any

from shoal.machinery.api import errors

# Lists merged by key in a strategic merge patch, by field name (Kubernetes' patchMergeKey).
MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "ports": "containerPort", "conditions": "type",
    "ownerReferences": "uid", "tolerations": "key", "imagePullSecrets": "name", "addresses": "type",
    "containerStatuses": "name", "taints": "key",
}
# Where a field name means another list: (the field of the enclosing object, field) → its merge
# key, or None for a list replaced whole. A Service's `spec.ports` merge by `port`; an
# EndpointSlice's top-level `ports` are atomic. Elements of a merged list are reached with
# `<list>[]` as their field (`containers[]` → `ports` is a container's: MERGE_KEYS).
MERGE_KEYS_IN: dict[tuple[str, str], str | None] = {("spec", "ports"): "port", ("", "ports"): None}


def merge_key(parent: str, name: str) -> str | None:
    """The strategic-merge key of list `name` inside the object that is field `parent`."""
    if (parent, name) in MERGE_KEYS_IN:
        return MERGE_KEYS_IN[(parent, name)]
    return MERGE_KEYS.get(name)


def pins_resource_version(body: Any, content_type: str) -> bool:
    """Whether a patch sets `metadata.resourceVersion`, which makes it conditional on that
    version (Kubernetes' precondition): a merge or strategic patch naming one, or a JSON
    patch with an operation on `/metadata/resourceVersion` (kubectl's managedFields
    migration sends `replace` of it with the version it read)."""
    if content_type == "application/json-patch+json":
        return isinstance(body, list) and any(
            isinstance(op, dict) and op.get("path") == "/metadata/resourceVersion"
            and op.get("op") in ("add", "replace") and op.get("value") for op in body)
    return isinstance(body, dict) and isinstance(body.get("metadata"), dict) and \
        bool(body["metadata"].get("resourceVersion"))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = merge_patch(out.get(k), v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _unescape(tok: str) -> str:
    return tok.replace("~1", "/").replace("~0", "~")


def _resolve(doc: Any, path: str, op_index: int) -> tuple[Any, str | int]:
    if not path.startswith("/"):
        raise errors.BadRequest(f"json patch operation {op_index}: path {path!r} must start with '/'")
    parts = [_unescape(p) for p in path.split("/")[1:]]
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, list):
            try:
                cur = cur[int(p)]
            except (ValueError, IndexError):
                raise errors.Invalid(f"json patch operation {op_index}: path {path!r}: no element {p}") from None
        elif isinstance(cur, dict):
            if p not in cur:
                raise errors.Invalid(f"json patch operation {op_index}: path {path!r}: missing key {p!r}")
            cur = cur[p]
        else:
            raise errors.Invalid(f"json patch operation {op_index}: path {path!r} crosses a scalar")
    last: str | int = parts[-1] if parts else ""
    if isinstance(cur, list) and last != "-":
        try:
            last = int(last)
        except ValueError:
            raise errors.Invalid(f"json patch operation {op_index}: path {path!r}: bad index") from None
    return cur, last


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 add/remove/replace/move/copy/test."""
    if not isinstance(ops, list):
        raise errors.BadRequest("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise errors.BadRequest(f"json patch operation {i} needs 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if path == "" and kind in ("add", "replace"):
            doc = copy.deepcopy(op.get("value"))
            continue
        if kind in ("add", "replace", "test"):
            parent, key = _resolve(doc, path, i)
            val = copy.deepcopy(op.get("value"))
            if kind == "test":
                cur = parent[key] if isinstance(parent, list) or key in parent else None
                if cur != val:
                    raise errors.Invalid(f"json patch operation {i}: test failed at {path}")
            elif isinstance(parent, list):
                if key == "-":
                    parent.append(val)
                elif kind == "add":
                    parent.insert(key, val)
                else:
                    parent[key] = val
            else:
                if kind == "replace" and key not in parent:
                    # Kubernetes' json patch (evanphx) rejects replace of a missing key.
                    raise errors.Invalid(f"json patch operation {i}: replace of missing path {path}")
                parent[key] = val
        elif kind == "remove":
            parent, key = _resolve(doc, path, i)
            try:
                del parent[key]
            except (KeyError, IndexError, TypeError):
                raise errors.Invalid(f"json patch operation {i}: remove of missing path {path}") from None
        elif kind in ("move", "copy"):
            src = op.get("from", "")
            sp, sk = _resolve(doc, src, i)
            try:
                val = sp[sk]
            except (KeyError, IndexError, TypeError):
                raise errors.Invalid(f"json patch operation {i}: from path {src} missing") from None
            if kind == "move":
                del sp[sk]
            doc = json_patch(doc, [{"op": "add", "path": path, "value": copy.deepcopy(val)}])
        else:
            raise errors.BadRequest(f"json patch operation {i}: unknown op {kind!r}")
    return doc


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Kubernetes' strategic merge patch: like a merge patch, but lists of objects
    named in MERGE_KEYS merge element-wise by their key, and the directives
    `$patch: replace|delete`, `$setElementOrder/<list>`, `$retainKeys` and
    `$deleteFromPrimitiveList/<list>` are honoured."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    orders = {k.split("/", 1)[1]: v for k, v in patch.items() if k.startswith("$setElementOrder/")}
    for k, v in patch.items():
        if k.startswith("$"):
            if k.startswith("$deleteFromPrimitiveList/"):
                name = k.split("/", 1)[1]
                if isinstance(out.get(name), list):
                    out[name] = [x for x in out[name] if x not in (v or [])]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            merged = strategic_merge_patch(out.get(k), v, k)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        elif isinstance(v, list) and merge_key(field, k) and all(isinstance(x, dict) for x in v):
            out[k] = _merge_list(out.get(k) or [], v, merge_key(field, k) or "", orders.get(k), field=f"{k}[]")
        else:
            out[k] = copy.deepcopy(v)
    for name, order in orders.items():
        if name not in patch and isinstance(out.get(name), list) and merge_key(field, name):
            out[name] = _merge_list(out[name], [], merge_key(field, name) or "", order, field=f"{name}[]")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(current: list, patch: list, key: str, order: list | None, *, field: str = "") -> list:
    by_key = {}
    result: list = []
    for item in current:
        if isinstance(item, dict) and key in item:
            by_key[item[key]] = item
        result.append(item)
    for p in patch:
        if key not in p:
            result.append(copy.deepcopy(p))
            continue
        existing = by_key.get(p[key])
        if p.get("$patch") == "delete":
            result = [x for x in result if not (isinstance(x, dict) and x.get(key) == p[key])]
            by_key.pop(p[key], None)
            continue
        if existing is None:
            new = strategic_merge_patch({}, p, field)
            result.append(new)
            by_key[p[key]] = new
        else:
            merged = strategic_merge_patch(existing, p, field)
            result = [merged if x is existing else x for x in result]
            by_key[p[key]] = merged
    if order:
        keys = [o.get(key) for o in order if isinstance(o, dict)]
        rank = {k: i for i, k in enumerate(keys)}
        # Elements not named in the order keep their relative place after the named ones.
        result.sort(key=lambda x: rank.get(x.get(key) if isinstance(x, dict) else None, len(rank)))
    return result
