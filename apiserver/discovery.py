"""Discovery (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`) and the OpenAPI
documents (`/openapi/v2`, `/openapi/v3` and its group-versions: `apiserver.openapi` builds
them). Built from `shoal.machinery.api.resources`, so a new resource appears everywhere at
once.
"""
from __future__ import annotations

import json

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import Response

from shoal.apiserver import openapi
from shoal.machinery.api import errors
from shoal.machinery.api.resources import RESOURCES, Resource

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# As in Kubernetes, namespaces are deleted one by one: no DELETE on their collection.
NAMESPACE_VERBS = [v for v in VERBS if v != "deletecollection"]


def served_verbs(r: Resource) -> list[str]:
    """The verbs `r` is served with (discovery's `verbs`, the OpenAPI documents' operations)."""
    return NAMESPACE_VERBS if r.kind == "Namespace" else VERBS


def _resource_entries(group: str, version: str) -> list[dict]:
    out = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        e = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
             "verbs": served_verbs(r)}
        if r.short_names:
            e["shortNames"] = list(r.short_names)
        if r.categories:
            e["categories"] = list(r.categories)
        out.append(e)
        for sub in r.subresources:
            if sub == "scale":
                out.append({"name": f"{r.plural}/scale", "singularName": "", "namespaced": r.namespaced,
                            "group": "autoscaling", "version": "v1", "kind": "Scale",
                            "verbs": ["get", "patch", "update"]})
            elif sub == "status":
                out.append({"name": f"{r.plural}/status", "singularName": "", "namespaced": r.namespaced,
                            "kind": r.kind, "verbs": ["get", "patch", "update"]})
            elif sub == "binding":
                out.append({"name": f"{r.plural}/binding", "singularName": "", "namespaced": r.namespaced,
                            "kind": "Binding", "verbs": ["create"]})
            elif sub == "log":
                out.append({"name": f"{r.plural}/log", "singularName": "", "namespaced": r.namespaced,
                            "kind": r.kind, "verbs": ["get"]})
    return out


def _groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for r in RESOURCES:
        if r.group and r.version not in groups.setdefault(r.group, []):
            groups[r.group].append(r.version)
    return groups


def add_discovery_routes(app: FastAPI, server_version: str = "") -> None:
    """The discovery and OpenAPI routes; `server_version` is the documents' info.version."""
    @app.get("/api", tags=["discovery"])
    async def api_versions():
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}

    @app.get("/apis", tags=["discovery"])
    async def api_groups():
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
             "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
            for g, vs in _groups().items()]}

    @app.get("/api/v1", tags=["discovery"])
    async def core_resources():
        return {"kind": "APIResourceList", "groupVersion": "v1", "resources": _resource_entries("", "v1")}

    @app.get("/apis/{group}/{version}", tags=["discovery"])
    async def group_resources(group: str, version: str):
        if version not in _groups().get(group, []):
            raise errors.NotFound(f"the server could not find the requested resource (group {group}/{version})")
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}",
                "resources": _resource_entries(group, version)}

    @app.get("/openapi/v3", tags=["discovery"])
    async def openapi_v3_index(request: Request):
        docs = await _documents()
        return _document(request, _dump(docs.index()), None)

    @app.get("/openapi/v3/api/{version}", tags=["discovery"])
    async def openapi_v3_core(request: Request, version: str):
        return _gv_document(request, await _documents(), "", version)

    @app.get("/openapi/v3/apis/{group}/{version}", tags=["discovery"])
    async def openapi_v3_group(request: Request, group: str, version: str):
        return _gv_document(request, await _documents(), group, version)

    @app.get("/openapi/v2", tags=["discovery"])
    async def openapi_v2(request: Request):
        if not _accepts_json(request.headers.get("accept")):
            # kubectl's `explain --output plaintext-openapiv2` asks for the protobuf form only;
            # shoal has the JSON one (v3 is what kubectl uses otherwise)
            raise errors.ApiError("only the following media types are accepted: application/json",
                                  code=406, reason="NotAcceptable")
        docs = await _documents()
        return _document(request, docs.v2_bytes, docs.v2_hash)

    async def _documents() -> openapi.Documents:
        # built once per process (about half a second): not on the event loop
        return await anyio.to_thread.run_sync(openapi.documents, server_version)

    def _gv_document(request: Request, docs: openapi.Documents, group: str, gv: str) -> Response:
        key = openapi.gv_key(group, gv)
        if key not in docs.v3:
            raise errors.NotFound(f"the server could not find the requested resource (OpenAPI document {key})")
        h = docs.v3_hash[key]
        asked = request.query_params.get("hash")
        if asked is not None and asked != h:
            # an old hash (the document changed): where the current one is, as Kubernetes answers
            return Response(status_code=301, headers={"Location": f"/openapi/v3/{key}?hash={h}",
                                                      "Cache-Control": "no-cache, private"})
        return _document(request, docs.v3_bytes[key], h, immutable=asked is not None)


def _accepts_json(accept: str | None) -> bool:
    """No Accept header, or one with JSON or a wildcard that q=0 does not exclude."""
    if not accept or not accept.strip():
        return True
    for part in accept.split(","):
        fields = [f.strip().lower() for f in part.split(";")]
        if fields[0] in ("application/json", "application/*", "*/*") and "q=0" not in fields[1:]:
            return True
    return False


def _dump(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _document(request: Request, body: bytes, etag: str | None, *, immutable: bool = False) -> Response:
    """A document with its hash as ETag (304 when the client has it); one fetched by its
    `?hash=` never changes, and may be cached as long as a client likes."""
    headers = {"Cache-Control": "public, immutable" if immutable else "no-cache, private"}
    if etag:
        headers["ETag"] = f'"{etag}"'
        if request.headers.get("if-none-match") in (f'"{etag}"', etag):
            return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
