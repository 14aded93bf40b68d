"""Kubernetes' resource paths resolved by dictionary lookup.

FastAPI finds a route by trying every route's regular expression in turn, then
solves the handler's dependencies; with ~110 resource routes that is a sixth of
the server's CPU for a small write. `RouteTable` holds the same routes, keyed by
what a path *means* — (method, API root, plural, namespaced form, has a name,
subresource) — and resolves a request path by splitting it once.

`add(method, template, handler)` takes the very path templates given to FastAPI
(`/api/v1/namespaces/{namespace}/pods/{name}/status`), so both routers always
know the same routes; `resolve(method, path)` gives the handler and its path
parameters, or None for anything else (which FastAPI then answers, 404 and 405
included). Pure: no I/O, no framework.
"""
from __future__ import annotations

from typing import Any, Callable

Key = tuple[str, str, str, bool, bool, str]


class RouteTable:
    def __init__(self, resources) -> None:
        """`resources`: the `shoal.machinery.api.resources.Resource`s served (for which plurals are
        namespaced under which API root)."""
        self._namespaced = {(self._root(r), r.plural) for r in resources if r.namespaced}
        self._routes: dict[Key, Callable[..., Any]] = {}

    @staticmethod
    def _root(res) -> str:
        return f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"

    def _parse(self, method: str, path: str) -> tuple[Key, dict[str, str]] | None:
        parts = path.split("/")
        if len(parts) < 4 or parts[0] != "" or "" in parts[1:]:
            return None           # relative, trailing slash or empty segment: FastAPI's answer
        if parts[1] == "api":
            root, rest = f"/api/{parts[2]}", parts[3:]
        elif parts[1] == "apis" and len(parts) >= 5:
            root, rest = f"/apis/{parts[2]}/{parts[3]}", parts[4:]
        else:
            return None
        params: dict[str, str] = {}
        # /namespaces/{ns}/{plural}... when {plural} is namespaced here; otherwise the path is
        # cluster-scoped — which is also how /namespaces/{name}[/status] itself is read.
        if len(rest) >= 3 and rest[0] == "namespaces" and (root, rest[2]) in self._namespaced:
            params["namespace"] = rest[1]
            namespaced, plural, tail = True, rest[2], rest[3:]
        else:
            namespaced, plural, tail = False, rest[0], rest[1:]
        if len(tail) > 2:
            return None
        if tail:
            params["name"] = tail[0]
        sub = tail[1] if len(tail) == 2 else ""
        return (method, root, plural, namespaced, bool(tail), sub), params

    def add(self, method: str, template: str, handler: Callable[..., Any]) -> None:
        parsed = self._parse(method, template)
        if parsed is None:
            raise ValueError(f"{template} is not a resource path")
        key, params = parsed
        expected = {k: "{" + k + "}" for k in params}
        if params != expected:
            raise ValueError(f"{template}: path parameters must be {{namespace}} and {{name}}")
        if key in self._routes:
            raise ValueError(f"{method} {template} is routed twice")
        self._routes[key] = handler

    def resolve(self, method: str, path: str) -> tuple[Callable[..., Any], dict[str, str]] | None:
        parsed = self._parse(method, path)
        if parsed is None:
            return None
        handler = self._routes.get(parsed[0])
        return (handler, parsed[1]) if handler is not None else None

    def __len__(self) -> int:
        return len(self._routes)
