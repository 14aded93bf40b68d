"""Answers in another shape than the object's: `meta.k8s.io` Tables and PartialObjectMetadata.

`kubectl get` asks for a Table (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io, ...,
application/json`) and prints its cells verbatim: the server chooses the columns (kubectl's,
from `shoal.machinery.api.printing`) and formats AGE. Metadata-only clients ask for
`as=PartialObjectMetadata` (one object, watch events) or `as=PartialObjectMetadataList`.

Contract, as Kubernetes' API server (handlers/response.go, negotiation):
- `view_for(accept, query, target)` reads the Accept header: the first clause (by `q`, then
  order) that shoal can serve decides. A clause without `as=` is the object itself (None: the
  handler answers as before). A clause with `as=Table|PartialObjectMetadata(List)`, `g=meta.k8s.io`,
  `v=v1|v1beta1` and a JSON media type (or a wildcard) is served as that view; other `as=`
  clauses are skipped, and a header with nothing servable is 406 NotAcceptable.
  PartialObjectMetadata of a list (or a List of one object) is 406, as in Kubernetes.
- `includeObject` (Table only): `Metadata` (default) puts a PartialObjectMetadata in each row,
  `Object` the whole object, `None` nothing (`"object": null`); anything else is 400.
- A Table's `metadata.resourceVersion` is the list's (or the object's) resourceVersion.
- Watch: every event's object is converted (a one-row Table, or PartialObjectMetadata), except
  an ERROR's Status. Only the first event's Table carries `columnDefinitions`; later ones
  carry none (`null`) and kubectl reuses the first ones, as Kubernetes does to save bytes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from starlette.responses import Response

from shoal.machinery.api import errors, printing
from shoal.machinery.api.resources import Resource

GROUP = "meta.k8s.io"
VERSIONS = ("v1", "v1beta1")
VIEWS = ("Table", "PartialObjectMetadata", "PartialObjectMetadataList")
INCLUDE_OBJECT = ("Metadata", "Object", "None")
_JSON_TYPES = ("application/json", "application/*", "*/*")
ACCEPTED = ("application/json, application/json;as=Table;v=v1;g=meta.k8s.io, "
            "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io, "
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io")


@dataclass(frozen=True)
class View:
    """What to answer instead of the object: `kind` is one of VIEWS, `api_version`
    `meta.k8s.io/v1` or `meta.k8s.io/v1beta1`, `include_object` one of INCLUDE_OBJECT."""
    kind: str
    api_version: str
    include_object: str = "Metadata"

    @property
    def media_type(self) -> str:
        version = self.api_version.rsplit("/", 1)[1]
        return f"application/json;as={self.kind};v={version};g={GROUP}"


def _clauses(accept: str) -> list[tuple[str, dict[str, str]]]:
    """The Accept header's media ranges as (type, params), by descending q (stable); q=0 dropped."""
    out = []
    for i, part in enumerate(accept.split(",")):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        params: dict[str, str] = {}
        for f in fields[1:]:
            k, _, v = f.partition("=")
            params[k.strip().lower()] = v.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            out.append((-q, i, fields[0].lower(), params))
    out.sort(key=lambda c: (c[0], c[1]))
    return [(t, p) for _, _, t, p in out]


def view_for(accept: str | None, query: Any, *, target: str) -> View | None:
    """The view an Accept header asks for, for `target` "object", "list" or "watch" (see the
    module docstring); None: the object (or list) itself. `query` holds `includeObject`.
    Raises BadRequest for a bad includeObject, and ApiError 406 when nothing is servable."""
    if not accept or "as=" not in accept.replace(" ", "").lower():     # the common case: no parsing
        return None
    skipped = False
    for media, params in _clauses(accept):
        as_kind = params.get("as")
        if as_kind is None:
            return None
        if (media in _JSON_TYPES and as_kind in VIEWS and params.get("g") == GROUP
                and params.get("v") in VERSIONS):
            view = View(as_kind, f"{GROUP}/{params['v']}")
            if view.kind == "Table":
                return View(view.kind, view.api_version, _include_object(query))
            if view.kind == "PartialObjectMetadataList" and target != "list":
                raise _not_acceptable("you requested PartialObjectMetadataList, but the requested object is not a list")
            if view.kind == "PartialObjectMetadata" and target == "list":
                raise _not_acceptable("you requested PartialObjectMetadata, but the requested object is a list")
            return view
        skipped = True
    if skipped:
        raise _not_acceptable(f"only the following media types are accepted: {ACCEPTED}")
    return None


def _not_acceptable(message: str) -> errors.ApiError:
    return errors.ApiError(message, code=406, reason="NotAcceptable")


def _include_object(query: Any) -> str:
    value = query.get("includeObject") if query is not None else None
    if value in (None, ""):
        return "Metadata"
    if value not in INCLUDE_OBJECT:
        raise errors.BadRequest(f"Unable to convert to Table as requested: includeObject: Invalid value: "
                                f"\"{value}\": must be 'Metadata', 'Object', 'None', or empty")
    return value


# --- shapes ----------------------------------------------------------------------------------

def partial_object_metadata(obj: dict, api_version: str) -> dict:
    """The object's whole metadata, as `meta.k8s.io` PartialObjectMetadata."""
    return {"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": obj.get("metadata") or {}}


def _row_object(view: View, res: Resource, obj: dict) -> dict | None:
    if view.include_object == "None":
        return None
    if view.include_object == "Object":
        return {"apiVersion": res.api_version, "kind": res.kind, **obj}
    return partial_object_metadata(obj, view.api_version)


def table(view: View, res: Resource, objs: Iterable[dict], *, resource_version: str | None, now: datetime,
          headers: bool = True) -> dict:
    """A `meta.k8s.io` Table of `objs` with `res`'s columns (all of them: kubectl drops the
    priority-1 ones unless `-o wide`). Without `headers`, `columnDefinitions` is null."""
    rows = []
    for obj in objs:
        row: dict[str, Any] = {"cells": printing.cells(res.kind, obj, now)}
        conditions = printing.row_conditions(res.kind, obj)
        if conditions:
            row["conditions"] = conditions
        row["object"] = _row_object(view, res, obj)
        rows.append(row)
    md = {"resourceVersion": resource_version} if resource_version else {}
    return {"kind": "Table", "apiVersion": view.api_version, "metadata": md,
            "columnDefinitions": [c.definition() for c in printing.columns(res.kind)] if headers else None,
            "rows": rows}


def for_list(view: View, res: Resource, items: list[dict], resource_version: str, *,
             now: datetime | None = None) -> dict:
    """A list's answer in `view` (Table or PartialObjectMetadataList)."""
    if view.kind == "Table":
        return table(view, res, items, resource_version=resource_version, now=now or _now())
    return {"kind": "PartialObjectMetadataList", "apiVersion": view.api_version,
            "metadata": {"resourceVersion": resource_version},
            "items": [partial_object_metadata(o, view.api_version) for o in items]}


def for_object(view: View, res: Resource, obj: dict, *, now: datetime | None = None, headers: bool = True) -> dict:
    """One object's answer in `view`: a one-row Table, or its PartialObjectMetadata."""
    if view.kind == "Table":
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        return table(view, res, [obj], resource_version=rv, now=now or _now(), headers=headers)
    return partial_object_metadata(obj, view.api_version)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def response(view: View, body: dict, encode: Callable[[Any], bytes]) -> Response:
    """The answer, serialized by `encode` (the server's JSON writer), with the view's media type."""
    return Response(encode(body), media_type=view.media_type)


class WatchConverter:
    """Converts the newline-delimited events of one watch response to `view`, keeping the
    "column definitions on the first event only" state of that response."""

    def __init__(self, view: View, res: Resource):
        self.view, self.res = view, res
        self.headers = True

    def event(self, ev: dict, now: datetime) -> dict:
        obj = ev.get("object")
        if ev.get("type") != "ERROR" and isinstance(obj, dict) and obj.get("kind") != "Status":
            ev = {"type": ev.get("type"), "object": for_object(self.view, self.res, obj, now=now,
                                                                headers=self.headers)}
        self.headers = False
        return ev

    def chunk(self, data: bytes) -> bytes:
        now = _now()
        out = []
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            ev = self.event(json.loads(line), now)
            out.append(json.dumps(ev, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
        return b"".join(out)
