"""Discovery (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`) and the small
OpenAPI v3 documents kubectl needs for `apply` with server-side field
validation. Built from `shoal.machinery.api.resources`, so a new resource appears
everywhere at once.
"""
from __future__ import annotations

from fastapi import FastAPI

from shoal.machinery.api import errors
from shoal.machinery.api.resources import RESOURCES

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# As in Kubernetes, namespaces are deleted one by one: no DELETE on their collection.
NAMESPACE_VERBS = [v for v in VERBS if v != "deletecollection"]


def _resource_entries(group: str, version: str) -> list[dict]:
    out = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        e = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
             "verbs": NAMESPACE_VERBS if r.kind == "Namespace" else VERBS}
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


def _openapi_gv(group: str, version: str) -> dict:
    paths = {}
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        root = f"/apis/{group}/{version}" if group else f"/api/{version}"
        item = f"{root}/namespaces/{{namespace}}/{r.plural}/{{name}}" if r.namespaced else f"{root}/{r.plural}/{{name}}"
        gvk = {"group": group, "version": version, "kind": r.kind}
        op = {"x-kubernetes-group-version-kind": gvk,
              "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                             {"name": "fieldManager", "in": "query", "schema": {"type": "string"}}],
              "responses": {"200": {"description": "OK"}}}
        paths[item] = {"get": {"x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}},
                       "put": op, "patch": op}
    return {"openapi": "3.0.0", "info": {"title": "shoal", "version": version}, "paths": paths}


def add_discovery_routes(app: FastAPI) -> None:
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
    async def openapi_v3_index():
        paths = {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"}}
        for g, vs in _groups().items():
            for v in vs:
                paths[f"apis/{g}/{v}"] = {"serverRelativeURL": f"/openapi/v3/apis/{g}/{v}"}
        return {"paths": paths}

    @app.get("/openapi/v3/api/v1", tags=["discovery"])
    async def openapi_v3_core():
        return _openapi_gv("", "v1")

    @app.get("/openapi/v3/apis/{group}/{version}", tags=["discovery"])
    async def openapi_v3_group(group: str, version: str):
        if version not in _groups().get(group, []):
            raise errors.NotFound(f"no OpenAPI document for {group}/{version}")
        return _openapi_gv(group, version)
