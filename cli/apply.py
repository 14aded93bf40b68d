"""`shoal apply -f FILE|DIR|-`: client-side apply with kubectl's last-applied annotation.

Contract: every valid document is created when absent, updated when the
manifest changed something, and left alone otherwise; the output is
`deployment.apps/web created|configured|unchanged`, one line per object. A
document that fails (YAML syntax, local checks, server validation) prints
`error: FILE: document N (Kind/name): field: message` — one line per field
cause — changes nothing on the server, does not stop the other documents,
and makes the command exit 1.

Design notes:
- What "changed" means: kubectl's three-way rule. The manifest is applied
  onto the live object (`merge_for_apply`): fields the manifest sets win;
  fields that were in the previous manifest (the
  `kubectl.kubernetes.io/last-applied-configuration` annotation) but are not
  in this one are removed; everything else — server-set metadata, status,
  defaults the server filled in, fields changed by others such as `scale` —
  stays as it is live. Lists of named things (containers, env, ports,
  volumes...) merge item by item on their key, so defaults inside a
  container survive too. If the result equals the live object, nothing is
  sent: `unchanged`.
- The write is a compare-and-swap PUT on the live resourceVersion; on
  Conflict the object is re-read and the merge recomputed (a few times).
- Namespaces are applied first so that objects in a new namespace can be
  created in the same run.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Protocol

from shoal.machinery.api import errors
from shoal.machinery.api.resources import resolve

from shoal.cli.manifests import Document, check_document, load

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

# list fields that merge item by item, and the key that identifies an item (as in strategic merge patch)
MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name",
    "hostAliases": "ip", "readinessGates": "conditionType",
}

MAX_CONFLICT_RETRIES = 5


class ApplyClient(Protocol):
    def get(self, kind: str, name: str, namespace: str | None = None) -> dict: ...
    def create(self, kind: str, obj: dict, namespace: str | None = None) -> dict: ...
    def update(self, kind: str, obj: dict) -> dict: ...


class DocumentError(Exception):
    """A document that cannot be applied; `lines` are the `field: message` lines to print."""

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = lines


# --- pure parts ---------------------------------------------------------------------------

def order_documents(docs: list[Document]) -> list[Document]:
    """Namespaces first, everything else in file order."""
    return sorted(docs, key=lambda d: 0 if d.obj.get("kind") == "Namespace" else 1)


def desired_object(manifest: dict, namespace: str | None) -> dict:
    """The manifest as it is sent: namespace filled in (namespaced kinds) and the
    last-applied annotation holding the manifest itself, as kubectl writes it."""
    res = resolve(manifest["kind"])
    obj = copy.deepcopy(manifest)
    md = obj.setdefault("metadata", {})
    if res.namespaced:
        md["namespace"] = md.get("namespace") or namespace or "default"
    else:
        md.pop("namespace", None)
    ann = dict(md.get("annotations") or {})
    ann.pop(LAST_APPLIED, None)
    md["annotations"] = ann
    # kubectl's form: compact JSON, sorted keys, a trailing newline
    ann_value = json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n"
    md["annotations"] = {**ann, LAST_APPLIED: ann_value}
    return obj


def _keyed(items: list, key: str) -> dict | None:
    if not all(isinstance(i, dict) and key in i for i in items):
        return None
    return {i[key]: i for i in items}


def merge_for_apply(live: Any, manifest: Any, last: Any) -> Any:
    """Three-way merge of `manifest` onto `live`, removing what `last` had and `manifest` dropped."""
    if not (isinstance(live, dict) and isinstance(manifest, dict)):
        return copy.deepcopy(manifest)
    last = last if isinstance(last, dict) else {}
    result = copy.deepcopy(live)
    for k in last:
        if k not in manifest:
            result.pop(k, None)
    for k, v in manifest.items():
        if v is None:  # an explicit null deletes, as in a merge patch
            result.pop(k, None)
            continue
        lv = result.get(k)
        if isinstance(v, dict) and isinstance(lv, dict):
            result[k] = merge_for_apply(lv, v, last.get(k))
        elif isinstance(v, list) and isinstance(lv, list) and k in MERGE_KEYS:
            key = MERGE_KEYS[k]
            live_by, man_by = _keyed(lv, key), _keyed(v, key)
            if live_by is None or man_by is None:
                result[k] = copy.deepcopy(v)
                continue
            last_by = _keyed(last.get(k) or [], key) if isinstance(last.get(k), list) else None
            result[k] = [merge_for_apply(live_by[item[key]], item, (last_by or {}).get(item[key]))
                         if item[key] in live_by else copy.deepcopy(item) for item in v]
        else:
            result[k] = copy.deepcopy(v)
    return result


def last_applied_of(live: dict) -> dict:
    raw = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not raw:
        return {}
    try:
        v = json.loads(raw)
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def cause_lines(err: errors.ApiError) -> list[str]:
    """`field: message` per cause (the message alone when the server gave no causes)."""
    lines = []
    for c in err.causes:
        msg = c.message or c.reason or ""
        if c.field and c.field not in msg:
            lines.append(f"{c.field}: {msg}")
        else:
            lines.append(msg)
    return lines or [err.message]


# --- executor ------------------------------------------------------------------------------

def apply_object(client: ApplyClient, manifest: dict, namespace: str | None) -> str:
    """Create or update one object; returns `created`, `configured` or `unchanged`."""
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    desired = desired_object(manifest, namespace)
    ns = (desired.get("metadata") or {}).get("namespace")
    for _ in range(MAX_CONFLICT_RETRIES):
        try:
            live = client.get(kind, name, ns)
        except errors.NotFound:
            try:
                client.create(kind, desired, ns)
                return "created"
            except errors.AlreadyExists:
                continue  # someone created it meanwhile: compare with theirs
        merged = merge_for_apply(live, desired, last_applied_of(live))
        if merged == live:
            return "unchanged"
        try:
            client.update(kind, merged)
            return "configured"
        except errors.Conflict:
            continue  # stale resourceVersion: re-read and merge again
    raise errors.Conflict(f'{resolve(kind).group_resource} "{name}": gave up after {MAX_CONFLICT_RETRIES} '
                          f'conflicting concurrent updates; try again')


@dataclass(frozen=True)
class Outcome:
    doc: Document
    action: str | None  # created/configured/unchanged, None on error
    error_lines: tuple[str, ...] = ()


def namespace_for(doc: Document, flag_ns: str | None, default_ns: str) -> str | None:
    """The namespace a document goes to; raises DocumentError when -n contradicts the manifest."""
    res = resolve(doc.obj["kind"])
    if not res.namespaced:
        return None
    own = (doc.obj.get("metadata") or {}).get("namespace")
    if own and flag_ns and own != flag_ns:
        raise DocumentError([f'the namespace from the provided object "{own}" does not match the namespace '
                             f'"{flag_ns}". You must pass \'--namespace={own}\' to perform this operation.'])
    return own or flag_ns or default_ns


def run(args) -> int:
    """The `shoal apply` handler."""
    ctx = args.ctx
    loaded = load(args.filename, stdin=ctx.stdin, recursive=getattr(args, "recursive", False))
    failed = False
    for e in loaded.errors:
        ctx.error(str(e))
        failed = True
    client = None
    for doc in order_documents(loaded.documents):
        problems = check_document(doc)
        if problems:
            for p in problems:
                ctx.error(f"{doc.where()}: {p}")
            failed = True
            continue
        try:
            ns = namespace_for(doc, ctx.namespace_flag, ctx.namespace())
            client = client or ctx.client()
            action = apply_object(client, doc.obj, ns)
        except DocumentError as e:
            for ln in e.lines:
                ctx.error(f"{doc.where()}: {ln}")
            failed = True
            continue
        except errors.ApiError as e:
            if getattr(e, "reason", "") == "ConnectionFailed":
                raise
            for ln in cause_lines(e):
                ctx.error(f"{doc.where()}: {ln}")
            failed = True
            continue
        res = resolve(doc.obj["kind"])
        ctx.line(f"{res.kind_lower_group}/{doc.obj['metadata']['name']} {action}")
    if not loaded.documents and not loaded.errors:
        ctx.error("no objects passed to apply")
        return 1
    return 1 if failed else 0
