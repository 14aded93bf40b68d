"""OpenAPI v2 and v3 documents of the API shoal serves: what kubectl validates against,
explains and computes strategic merge patches from.

What the documents say, and where it comes from:
- **Schemas are what shoal accepts.** Each kind's component schema is generated from its
  pydantic model (`shoal.machinery.api.models.KINDS`), field by field: a field the model
  refuses (unknown fields are a 400 there) is not in the document, and every field the model
  has is. Types follow the model's annotations (`Int32` → integer/int32, `Time` → a `$ref`
  to metav1 Time, `IntOrString`, `Quantity`, maps, lists).
- **Names and words are Kubernetes'.** The models are walked side by side with Kubernetes'
  own schema of the same version as `/version` claims (the JSON schemas the
  `kubernetes-validate` package ships, read at run time; nothing of their text is kept in
  this repository). From it each field takes its description (so `kubectl explain
  deployment.spec` reads as on Kubernetes), its format, `required`, and its `x-kubernetes-*`
  extensions: `x-kubernetes-patch-merge-key`/`-patch-strategy` (kubectl computes
  strategic merge patches from them) and `x-kubernetes-list-type`/`-list-map-keys`/
  `-map-type`. A nested model's schema gets the name Kubernetes' field refers to
  (`io.k8s.api.core.v1.Container`); a shoal-only field gets no description.
- **Paths are the routes shoal serves** (`resources.RESOURCES`, the verbs of
  `discovery.served_verbs`, the subresources): every operation carries
  `x-kubernetes-group-version-kind` and `x-kubernetes-action`; writes take `dryRun`,
  `fieldManager` and `fieldValidation` (kubectl then leaves validation to the server:
  `fieldValidation=Strict`), patches `force` and the four patch content types (kubectl uses
  the strategic-merge one as the sign that the document's schemas may build its patch).
  Only the query parameters shoal honours are declared.

Served (`discovery.add_discovery_routes`): `/openapi/v3` (the index, each group-version's
`serverRelativeURL` carrying `?hash=` of its document), `/openapi/v3/api/v1`,
`/openapi/v3/apis/{group}/{version}` (v3.0 documents, `components.schemas`) and
`/openapi/v2` (one Swagger 2.0 document, `definitions`). Everything is computed once per
process (`documents()`), serialized once, and answered with its hash as ETag.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel

from shoal.machinery.api.models import KINDS, KindInfo
from shoal.machinery.api.models.base import IntRange, MicroTime, Quantity, Time
from shoal.machinery.api.resources import RESOURCES, Resource

# Kubernetes' schema the documents borrow names and words from: the version /version claims.
REFERENCE_VERSION = "1.32.0"
COMPONENTS = "#/components/schemas/"
DEFINITIONS = "#/definitions/"

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
TIME, MICRO_TIME = META + "Time", META + "MicroTime"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
STATUS, LIST_META, DELETE_OPTIONS, PATCH = META + "Status", META + "ListMeta", META + "DeleteOptions", META + "Patch"
PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json")
_EXTENSIONS_KEPT = ("x-kubernetes-patch-merge-key", "x-kubernetes-patch-strategy", "x-kubernetes-list-type",
                    "x-kubernetes-list-map-keys", "x-kubernetes-map-type")


class ReferenceMissing(RuntimeError):
    """Kubernetes' schemas (the kubernetes-validate package) are not installed."""


@functools.cache
def reference() -> dict[str, dict]:
    """Kubernetes' definitions of REFERENCE_VERSION by name (`io.k8s.api.apps.v1.Deployment`),
    as kubernetes-validate ships them (JSON Schema: nullable types, `#/$defs/` references)."""
    spec = importlib.util.find_spec("kubernetes_validate")     # found, not imported (it pulls jsonschema)
    if spec is None or not spec.submodule_search_locations:
        raise ReferenceMissing("the kubernetes-validate package is not installed: it holds Kubernetes' schemas "
                               "that the OpenAPI documents take their descriptions from (pip install "
                               "kubernetes-validate)")
    path = (Path(list(spec.submodule_search_locations)[0]) / "kubernetes-json-schema" /
            f"v{REFERENCE_VERSION}-local" / "_definitions.json")
    try:
        return json.loads(path.read_text())["$defs"]
    except OSError as e:
        raise ReferenceMissing(f"Kubernetes' schemas for v{REFERENCE_VERSION} are missing from kubernetes-validate "
                               f"({path}: {e.strerror})") from None


def _ref_name(prop: dict | None) -> str | None:
    """The definition a reference property points to (through items/additionalProperties)."""
    while isinstance(prop, dict):
        if "$ref" in prop:
            return prop["$ref"].rsplit("/", 1)[-1]
        prop = prop.get("items") or prop.get("additionalProperties")
    return None


def _ref_type(prop: dict | None) -> str | None:
    t = (prop or {}).get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    return t


def ref(name: str) -> dict:
    """A reference to a component schema, in v3 form (v2 is derived by `_to_v2`)."""
    return {"$ref": COMPONENTS + name}


def _described(schema: dict, description: str | None, extra: dict | None = None) -> dict:
    """A property: a `$ref` wrapped in allOf (OpenAPI 3.0 ignores siblings of `$ref`), with its words."""
    out = {"allOf": [schema]} if "$ref" in schema else dict(schema)
    if description:
        out["description"] = description
    out.update(extra or {})
    return out


# --- schemas from the models ---------------------------------------------------------------

class SchemaBuilder:
    """Component schemas for pydantic models, named and described after Kubernetes' schema.

    `model(cls, name)` adds the schema of `cls` (and of every model it nests) under `name`;
    one class has one name and one name one class (a clash is an error: it would mean two
    shapes claim one Kubernetes definition)."""

    def __init__(self, ref_defs: dict[str, dict]):
        self.ref_defs = ref_defs
        self.schemas: dict[str, dict] = {}
        self.names: dict[type, str] = {}

    def model(self, cls: type[BaseModel], name: str, *, gvk: list[dict] | None = None) -> str:
        if cls in self.names:
            return self.names[cls]
        taken = next((c for c, n in self.names.items() if n == name), None)
        if taken is not None:
            raise ValueError(f"{cls.__name__} and {taken.__name__} both map to the OpenAPI definition {name}")
        self.names[cls] = name
        rdef = self.ref_defs.get(name) or {}
        rprops = rdef.get("properties") or {}
        schema: dict[str, Any] = {}
        if rdef.get("description"):
            schema["description"] = rdef["description"]
        schema["type"] = "object"
        self.schemas[name] = schema        # before the fields: models may nest themselves
        props: dict[str, dict] = {}
        for fname, field in cls.model_fields.items():
            wire = field.alias or fname
            rprop = rprops.get(wire)
            props[wire] = self.field(field.annotation, rprop, owner=name)
        schema["properties"] = dict(sorted(props.items()))
        required = [r for r in rdef.get("required") or [] if r in props]
        if required:
            schema["required"] = required
        for k, v in rdef.items():
            if k in _EXTENSIONS_KEPT:
                schema[k] = v
        if gvk:
            schema["x-kubernetes-group-version-kind"] = gvk
        return name

    def field(self, annotation: Any, rprop: dict | None, *, owner: str) -> dict:
        """A property's schema: its type from the annotation, its words from `rprop`."""
        extra = {k: v for k, v in (rprop or {}).items() if k in _EXTENSIONS_KEPT}
        schema = self.type_schema(annotation, rprop, owner=owner)
        return _described(schema, (rprop or {}).get("description"), extra)

    def type_schema(self, annotation: Any, rprop: dict | None, *, owner: str) -> dict:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            if len(members) == 1:
                return self.type_schema(members[0], rprop, owner=owner)
            if {self._base(a) for a in members} == {int, str}:
                return ref(self.scalar(INT_OR_STRING))
            raise TypeError(f"{owner}: no OpenAPI type for {annotation!r}")
        if annotation == Time:
            return ref(self.scalar(TIME))
        if annotation == MicroTime:
            return ref(self.scalar(MICRO_TIME))
        if annotation == Quantity:
            return ref(self.scalar(QUANTITY))
        if origin is typing.Annotated:
            schema = self.type_schema(args[0], rprop, owner=owner)
            for m in annotation.__metadata__:
                if isinstance(m, IntRange):
                    schema["format"] = m.name
            return schema
        if origin is list:
            item_ref = (rprop or {}).get("items")
            return {"type": "array", "items": self.type_schema(args[0], item_ref, owner=owner)}
        if origin is dict:
            value_ref = (rprop or {}).get("additionalProperties")
            value_ref = value_ref if isinstance(value_ref, dict) else None
            return {"type": "object", "additionalProperties": self.type_schema(args[1], value_ref, owner=owner)}
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            name = _ref_name(rprop) or owner.rsplit(".", 1)[0] + "." + annotation.__name__
            return ref(self.model(annotation, name))
        simple = {str: "string", bool: "boolean", int: "integer", float: "number"}.get(annotation)
        if simple is not None:
            out: dict[str, Any] = {"type": simple}
            if rprop and _ref_type(rprop) == simple and rprop.get("format"):
                out["format"] = rprop["format"]     # int32/int64, byte (base64), date-time...
            return out
        if annotation is Any:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        raise TypeError(f"{owner}: no OpenAPI type for {annotation!r}")

    @staticmethod
    def _base(annotation: Any) -> Any:
        return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation

    def scalar(self, name: str) -> str:
        """The schemas of Kubernetes' string-shaped types, as Kubernetes' OpenAPI writes them."""
        if name not in self.schemas:
            shape = {TIME: {"type": "string", "format": "date-time"},
                     MICRO_TIME: {"type": "string", "format": "date-time"},
                     QUANTITY: {"type": "string"},
                     INT_OR_STRING: {"type": "string", "format": "int-or-string"}}[name]
            desc = (self.ref_defs.get(name) or {}).get("description")
            self.schemas[name] = {**({"description": desc} if desc else {}), **shape}
        return name

    def from_reference(self, name: str, fields: Iterable[str], overrides: dict[str, dict] | None = None) -> str:
        """A response-only schema (Status, ListMeta...) as the subset of Kubernetes' `name` that
        shoal writes: `fields` from the reference, `overrides` replacing some of them."""
        if name in self.schemas:
            return name
        rdef = self.ref_defs.get(name) or {}
        rprops = rdef.get("properties") or {}
        props: dict[str, dict] = {}
        for f in fields:
            rprop = rprops.get(f) or {}
            if overrides and f in overrides:
                props[f] = _described(overrides[f], rprop.get("description"))
            else:
                props[f] = _described(self._plain(rprop), rprop.get("description"))
        self.schemas[name] = {**({"description": rdef["description"]} if rdef.get("description") else {}),
                              "type": "object", "properties": dict(sorted(props.items()))}
        return name

    @staticmethod
    def _plain(rprop: dict) -> dict:
        t = _ref_type(rprop) or "object"
        out: dict[str, Any] = {"type": t}
        if rprop.get("format"):
            out["format"] = rprop["format"]
        if t == "array":
            out["items"] = SchemaBuilder._plain(rprop.get("items") or {})
        return out


# --- the documents ----------------------------------------------------------------------

def _gvk(group: str, version: str, kind: str) -> dict:
    return {"group": group, "version": version, "kind": kind}


def _kind_name(b: SchemaBuilder, info: KindInfo) -> str:
    """Kubernetes' definition name of a kind (the one whose GVK matches), else io.k8s.api-style."""
    wanted = {(*_split_api_version(av), info.kind) for av in info.accepted_versions}
    for name, d in b.ref_defs.items():
        for g in d.get("x-kubernetes-group-version-kind") or []:
            if (g.get("group"), g.get("version"), g.get("kind")) in wanted:
                return name
    group, version = _split_api_version(info.api_version)
    short = group.split(".")[0] if group else "core"
    return f"io.k8s.api.{short}.{version}.{info.kind}"


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


@dataclass
class Documents:
    """Every document, built once: `v3[gv_key]` (gv_key `api/v1`, `apis/apps/v1`) and `v2`,
    each also as the bytes served and their hash (uppercase hex SHA-512, as Kubernetes)."""
    v3: dict[str, dict]
    v3_bytes: dict[str, bytes]
    v3_hash: dict[str, str]
    v2: dict
    v2_bytes: bytes
    v2_hash: str

    def index(self) -> dict:
        """The `/openapi/v3` discovery document."""
        return {"paths": {k: {"serverRelativeURL": f"/openapi/v3/{k}?hash={self.v3_hash[k]}"}
                          for k in sorted(self.v3)}}


def gv_key(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _dump(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, sort_keys=False).encode()


@functools.cache
def documents(version: str = "") -> Documents:
    """All documents (`version`: the server's, for `info.version`). Computed once per process."""
    b = SchemaBuilder(reference())
    kind_names: dict[str, str] = {}
    for kind, info in KINDS.items():
        group, ver = info.group, info.api_version.rsplit("/", 1)[-1]
        name = _kind_name(b, info)
        rgvk = (b.ref_defs.get(name) or {}).get("x-kubernetes-group-version-kind") or [_gvk(group, ver, kind)]
        kind_names[kind] = b.model(info.model, name, gvk=rgvk)
    _response_schemas(b, kind_names)
    by_gv: dict[str, list[Resource]] = {}
    for r in RESOURCES:
        by_gv.setdefault(gv_key(r.group, r.version), []).append(r)
    v3: dict[str, dict] = {}
    for key, resources in by_gv.items():
        paths: dict[str, dict] = {}
        for r in resources:
            paths.update(_paths(b, r, kind_names))
        v3[key] = {"openapi": "3.0.0", "info": {"title": "shoal", "version": version or "unversioned"},
                   "paths": paths, "components": {"schemas": _closure(b.schemas, paths)}}
    all_paths = {p: item for doc in v3.values() for p, item in doc["paths"].items()}
    v2 = {"swagger": "2.0", "info": {"title": "shoal", "version": version or "unversioned"},
          "paths": {p: _path_to_v2(item) for p, item in sorted(all_paths.items())},
          "definitions": {n: _to_v2(s) for n, s in sorted(_closure(b.schemas, all_paths).items())}}
    v3_bytes = {k: _dump(d) for k, d in v3.items()}
    v2_bytes = _dump(v2)
    return Documents(v3, v3_bytes, {k: _hash(d) for k, d in v3_bytes.items()}, v2, v2_bytes, _hash(v2_bytes))


def _hash(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest().upper()


def _closure(schemas: dict[str, dict], root: Any) -> dict[str, dict]:
    """The schemas `root` refers to, directly or through other schemas, sorted by name."""
    seen: dict[str, dict] = {}
    todo = [root]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            r = node.get("$ref")
            if isinstance(r, str) and r.startswith(COMPONENTS):
                name = r[len(COMPONENTS):]
                if name not in seen:
                    seen[name] = schemas[name]
                    todo.append(schemas[name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return dict(sorted(seen.items()))


def _response_schemas(b: SchemaBuilder, kind_names: dict[str, str]) -> None:
    """Lists, Status, Patch and Binding: what shoal answers or reads besides the kinds."""
    b.from_reference(LIST_META, ["resourceVersion"])
    cause = b.from_reference(META + "StatusCause", ["field", "message", "reason"])
    details = b.from_reference(META + "StatusDetails", ["causes", "group", "kind", "name", "retryAfterSeconds",
                                                        "uid"],
                               {"causes": {"type": "array", "items": ref(cause)}})
    b.from_reference(STATUS, ["apiVersion", "code", "details", "kind", "message", "metadata", "reason", "status"],
                     {"details": ref(details), "metadata": ref(LIST_META)})
    if PATCH not in b.schemas:
        rdef = b.ref_defs.get(PATCH) or {}
        b.schemas[PATCH] = {**({"description": rdef["description"]} if rdef.get("description") else {}),
                            "type": "object"}
    for r in RESOURCES:
        kname = kind_names.get(r.kind)
        if kname is None:
            continue
        list_name = kname + "List"
        b.from_reference(list_name, ["apiVersion", "items", "kind", "metadata"],
                         {"items": {"type": "array", "items": ref(kname)}, "metadata": ref(LIST_META)})
        b.schemas[list_name]["required"] = ["items"]
        b.schemas[list_name]["x-kubernetes-group-version-kind"] = [_gvk(r.group, r.version, r.kind + "List")]
    if any("binding" in r.subresources for r in RESOURCES) and "ObjectReference" in {c.__name__ for c in b.names}:
        obj_ref = next(n for c, n in b.names.items() if c.__name__ == "ObjectReference")
        meta_name = next(n for c, n in b.names.items() if c.__name__ == "ObjectMeta")
        name = "io.k8s.api.core.v1.Binding"
        b.from_reference(name, ["apiVersion", "kind", "metadata", "target"],
                         {"metadata": ref(meta_name), "target": ref(obj_ref)})
        b.schemas[name]["required"] = ["target"]
        b.schemas[name]["x-kubernetes-group-version-kind"] = [_gvk("", "v1", "Binding")]


# --- paths -------------------------------------------------------------------------------

def _param(name: str, where: str, type_: str, description: str, *, required: bool = False) -> dict:
    p: dict[str, Any] = {"name": name, "in": where, "description": description, "schema": {"type": type_}}
    if required:
        p["required"] = True
    if where == "query" and type_ == "string":
        p["schema"]["uniqueItems"] = True
    return p


DRY_RUN = _param("dryRun", "query", "string",
                 "All: validate and admit the request exactly as the real call, and store nothing (no event, "
                 "no watch event). The only value.")
FIELD_MANAGER = _param("fieldManager", "query", "string",
                       "The name of the actor making the change. Required for server-side apply "
                       "(application/apply-patch+yaml).")
FIELD_VALIDATION = _param("fieldValidation", "query", "string",
                          "Unknown or duplicate fields in the body: Strict (the default) refuses the request and "
                          "names each field, Warn drops them with a Warning header, Ignore drops them.")
FORCE = _param("force", "query", "boolean",
               "Server-side apply: take over the fields other managers own instead of answering a conflict.")
LABEL_SELECTOR = _param("labelSelector", "query", "string", "Only objects whose labels match this selector.")
FIELD_SELECTOR = _param("fieldSelector", "query", "string",
                        "Only objects whose fields match this selector (metadata.name, metadata.namespace and "
                        "each kind's selectable fields).")
LIST_PARAMS = [
    _param("allowWatchBookmarks", "query", "boolean", "Watch: also send BOOKMARK events carrying the current "
           "resourceVersion."),
    _param("continue", "query", "string", "List: the `metadata.continue` of the previous page, to get the next "
           "one (read at the first page's resourceVersion; 410 Expired once that is compacted)."),
    FIELD_SELECTOR, LABEL_SELECTOR,
    _param("limit", "query", "integer", "List: answer at most this many objects (matching the selectors), and "
           "`metadata.continue` when more follow."),
    _param("resourceVersion", "query", "string", "Watch: stream the changes after this resourceVersion (410 Gone "
           "once compacted); empty or 0: the current objects first, as ADDED events. List: empty or 0 the "
           "newest state; else a state not older than it, or exactly it (resourceVersionMatch=Exact)."),
    _param("resourceVersionMatch", "query", "string", "List: how resourceVersion applies, NotOlderThan (the "
           "default) or Exact."),
    _param("timeoutSeconds", "query", "integer", "Watch: end the stream after this many seconds."),
    _param("watch", "query", "boolean", "Stream changes as newline-delimited watch events instead of a list."),
]
DELETE_PARAMS = [
    DRY_RUN,
    _param("gracePeriodSeconds", "query", "integer", "Seconds a pod gets to stop before it is killed; 0: at once."),
    _param("propagationPolicy", "query", "string", "What happens to dependents: Background (the default: the "
           "collector deletes them afterwards), Foreground (deleted first, the owner waits) or Orphan (kept, "
           "their owner reference removed)."),
]
LOG_PARAMS = [
    _param("container", "query", "string", "The container; may be left out when the pod has one."),
    _param("follow", "query", "boolean", "Stream the log as it grows."),
    _param("previous", "query", "boolean", "The log of the container's previous run."),
    _param("tailLines", "query", "integer", "Only the last lines."),
    _param("timestamps", "query", "boolean", "Prefix each line with its time."),
]


def _words(group: str) -> str:
    """`Core`, `Apps`, `Coordination`: the group as operation ids spell it."""
    if not group:
        return "Core"
    return "".join(p[:1].upper() + p[1:] for p in group.removesuffix(".k8s.io").split("."))


def _content(schema: dict, types_: Iterable[str] = ("application/json",)) -> dict:
    return {t: {"schema": schema} for t in types_}


def _ok(schema: dict, *codes: str) -> dict:
    out = {c: {"description": {"200": "OK", "201": "Created", "202": "Accepted"}[c], "content": _content(schema)}
           for c in codes}
    out["401"] = {"description": "Unauthorized"}
    return out


def _op(action: str, op_id: str, gvk: dict, tag: str, description: str, *, params: list[dict] | None = None,
        responses: dict, body: dict | None = None) -> dict:
    op: dict[str, Any] = {"tags": [tag], "description": description, "operationId": op_id}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    op["responses"] = responses
    op["x-kubernetes-action"] = action
    op["x-kubernetes-group-version-kind"] = gvk
    return op


def _paths(b: SchemaBuilder, r: Resource, kind_names: dict[str, str]) -> dict[str, dict]:
    from shoal.apiserver.discovery import served_verbs

    kname = kind_names.get(r.kind)
    if kname is None:
        return {}
    verbs = set(served_verbs(r))
    root = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
    coll = f"{root}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{root}/{r.plural}"
    item = coll + "/{name}"
    gw, vw = _words(r.group), r.version.capitalize()
    scope = "Namespaced" if r.namespaced else ""
    tag = f"{(r.group.removesuffix('.k8s.io').replace('.', '_') or 'core')}_{r.version}"
    gvk = _gvk(r.group, r.version, r.kind)
    obj, lst = ref(kname), ref(kname + "List")
    ns_param = [_param("namespace", "path", "string", "The namespace of the objects.", required=True)]
    name_param = [_param("name", "path", "string", f"The name of the {r.kind}.", required=True)]
    body = {"content": _content(obj, ("*/*",)), "required": True}
    patch_body = {"content": _content(ref(PATCH), PATCH_TYPES), "required": True}
    delete_body = {"content": _content(ref(DELETE_OPTIONS), ("*/*",))}
    write_params = [DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION]
    deleted = obj if r.kind in ("Pod", "Service") else ref(STATUS)     # Registry.RETURNS_DELETED_OBJECT
    paths: dict[str, dict] = {}

    c: dict[str, Any] = {}
    if "list" in verbs:
        c["get"] = _op("list", f"list{gw}{vw}{scope}{r.kind}", gvk, tag, f"List or watch {r.plural}.",
                       params=LIST_PARAMS, responses=_ok(lst, "200"))
    if "create" in verbs:
        c["post"] = _op("post", f"create{gw}{vw}{scope}{r.kind}", gvk, tag, f"Create a {r.kind}.",
                        params=write_params, body=body, responses=_ok(obj, "200", "201", "202"))
    if "deletecollection" in verbs:
        c["delete"] = _op("deletecollection", f"delete{gw}{vw}Collection{scope}{r.kind}", gvk, tag,
                          f"Delete every {r.kind} the selectors match.",
                          params=[*DELETE_PARAMS, FIELD_SELECTOR, LABEL_SELECTOR], body=delete_body,
                          responses=_ok(lst, "200"))
    paths[coll] = {**c, "parameters": ns_param if r.namespaced else []}
    if not r.namespaced:
        del paths[coll]["parameters"]

    i: dict[str, Any] = {}
    if "get" in verbs:
        i["get"] = _op("get", f"read{gw}{vw}{scope}{r.kind}", gvk, tag, f"Read a {r.kind}.",
                       responses=_ok(obj, "200"))
    if "update" in verbs:
        i["put"] = _op("put", f"replace{gw}{vw}{scope}{r.kind}", gvk, tag, f"Replace a {r.kind}.",
                       params=write_params, body=body, responses=_ok(obj, "200", "201"))
    if "patch" in verbs:
        i["patch"] = _op("patch", f"patch{gw}{vw}{scope}{r.kind}", gvk, tag, f"Patch a {r.kind}.",
                         params=[*write_params, FORCE], body=patch_body, responses=_ok(obj, "200", "201"))
    if "delete" in verbs:
        i["delete"] = _op("delete", f"delete{gw}{vw}{scope}{r.kind}", gvk, tag, f"Delete a {r.kind}.",
                          params=DELETE_PARAMS, body=delete_body, responses=_ok(deleted, "200", "202"))
    paths[item] = {**i, "parameters": name_param + (ns_param if r.namespaced else [])}

    if r.namespaced and "list" in verbs:
        paths[f"{root}/{r.plural}"] = {"get": _op("list", f"list{gw}{vw}{r.kind}ForAllNamespaces", gvk, tag,
                                                  f"List or watch {r.plural} of every namespace.",
                                                  params=LIST_PARAMS, responses=_ok(lst, "200"))}
    sub_params = name_param + (ns_param if r.namespaced else [])
    if "status" in r.subresources:
        paths[item + "/status"] = {
            "get": _op("get", f"read{gw}{vw}{scope}{r.kind}Status", gvk, tag, f"Read the status of a {r.kind}.",
                       responses=_ok(obj, "200")),
            "put": _op("put", f"replace{gw}{vw}{scope}{r.kind}Status", gvk, tag,
                       f"Replace the status of a {r.kind}.", params=write_params, body=body,
                       responses=_ok(obj, "200", "201")),
            "patch": _op("patch", f"patch{gw}{vw}{scope}{r.kind}Status", gvk, tag,
                         f"Patch the status of a {r.kind}.", params=[*write_params, FORCE], body=patch_body,
                         responses=_ok(obj, "200", "201")),
            "parameters": sub_params}
    if "scale" in r.subresources and "Scale" in kind_names:
        scale, sgvk = ref(kind_names["Scale"]), _gvk("autoscaling", "v1", "Scale")
        paths[item + "/scale"] = {
            "get": _op("get", f"read{gw}{vw}{scope}{r.kind}Scale", sgvk, tag, f"Read the scale of a {r.kind}.",
                       responses=_ok(scale, "200")),
            "put": _op("put", f"replace{gw}{vw}{scope}{r.kind}Scale", sgvk, tag,
                       f"Replace the scale of a {r.kind}.", params=write_params,
                       body={"content": _content(scale, ("*/*",)), "required": True},
                       responses=_ok(scale, "200", "201")),
            "patch": _op("patch", f"patch{gw}{vw}{scope}{r.kind}Scale", sgvk, tag,
                         f"Patch the scale of a {r.kind}.", params=[*write_params, FORCE], body=patch_body,
                         responses=_ok(scale, "200", "201")),
            "parameters": sub_params}
    if "binding" in r.subresources and "io.k8s.api.core.v1.Binding" in b.schemas:
        binding = ref("io.k8s.api.core.v1.Binding")
        paths[item + "/binding"] = {
            "post": _op("post", f"create{gw}{vw}{scope}{r.kind}Binding", _gvk("", "v1", "Binding"), tag,
                        f"Bind a {r.kind} to a node.", params=write_params,
                        body={"content": _content(binding, ("*/*",)), "required": True},
                        responses=_ok(ref(STATUS), "200", "201", "202")),
            "parameters": sub_params}
    if "log" in r.subresources:
        paths[item + "/log"] = {
            "get": _op("get", f"read{gw}{vw}{scope}{r.kind}Log", gvk, tag, f"Read a container's log of a {r.kind}.",
                       params=LOG_PARAMS,
                       responses={"200": {"description": "OK", "content": _content({"type": "string"},
                                                                                   ("text/plain",))},
                                  "401": {"description": "Unauthorized"}}),
            "parameters": sub_params}
    return paths


# --- Swagger 2.0 from the v3 forms ------------------------------------------------------------

def _to_v2(node: Any) -> Any:
    """A v3 schema in Swagger 2.0 form: `#/definitions/` references, no allOf wrapping."""
    if isinstance(node, list):
        return [_to_v2(x) for x in node]
    if not isinstance(node, dict):
        return node
    if "allOf" in node and len(node["allOf"]) == 1 and "$ref" in node["allOf"][0]:
        rest = {k: _to_v2(v) for k, v in node.items() if k != "allOf"}
        return {**rest, "$ref": DEFINITIONS + node["allOf"][0]["$ref"][len(COMPONENTS):]}
    out = {}
    for k, v in node.items():
        if k == "$ref" and isinstance(v, str) and v.startswith(COMPONENTS):
            out[k] = DEFINITIONS + v[len(COMPONENTS):]
        else:
            out[k] = _to_v2(v)
    return out


def _param_to_v2(p: dict) -> dict:
    out = {k: v for k, v in p.items() if k != "schema"}
    out.update(p.get("schema") or {})
    return out


def _path_to_v2(item: dict) -> dict:
    out: dict[str, Any] = {}
    for method, op in item.items():
        if method == "parameters":
            out[method] = [_param_to_v2(p) for p in op]
            continue
        o: dict[str, Any] = {}
        consumes: list[str] = []
        params = [_param_to_v2(p) for p in op.get("parameters") or []]
        body = op.get("requestBody")
        if body:
            consumes = list(body["content"])
            schema = next(iter(body["content"].values()))["schema"]
            params.insert(0, {"name": "body", "in": "body", "required": bool(body.get("required")),
                              "schema": _to_v2(schema)})
        produces: list[str] = []
        responses: dict[str, Any] = {}
        for code, resp in op["responses"].items():
            r: dict[str, Any] = {"description": resp["description"]}
            if resp.get("content"):
                produces += [t for t in resp["content"] if t not in produces]
                r["schema"] = _to_v2(next(iter(resp["content"].values()))["schema"])
            responses[code] = r
        for k, v in op.items():
            if k in ("parameters", "requestBody", "responses"):
                continue
            o[k] = v
        if consumes:
            o["consumes"] = consumes
        if produces:
            o["produces"] = produces
        if params:
            o["parameters"] = params
        o["responses"] = responses
        out[method] = o
    return out
