"""The resource types shoal serves, and how their names map to URL paths.

Every component (API server, client, CLI, controllers, agent) resolves a
kind, plural or short name through this table, so that paths are built in
exactly one place. The table mirrors Kubernetes' discovery documents: group,
version, plural, kind, scope, short names and subresources.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    singular: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """`deployments.apps`, `pods` — the name Kubernetes uses in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def kind_lower_group(self) -> str:
        """`deployment.apps`, `pod` — the prefix kubectl prints: `deployment.apps/web created`."""
        k = self.kind.lower()
        return f"{k}.{self.group}" if self.group else k

    def base_path(self, namespace: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{root}/{self.plural}"

    def path(self, name: str | None = None, namespace: str | None = None, subresource: str | None = None) -> str:
        p = self.base_path(namespace)
        if name:
            p += f"/{name}"
            if subresource:
                p += f"/{subresource}"
        return p


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", False, ("ns",), ("status",), singular="namespace"),
    Resource("", "v1", "pods", "Pod", True, ("po",), ("status", "log", "binding"), ("all",), singular="pod"),
    Resource("", "v1", "nodes", "Node", False, ("no",), ("status",), singular="node"),
    Resource("", "v1", "events", "Event", True, ("ev",), (), singular="event"),
    Resource("", "v1", "configmaps", "ConfigMap", True, ("cm",), (), singular="configmap"),
    Resource("", "v1", "secrets", "Secret", True, (), (), singular="secret"),
    Resource("", "v1", "services", "Service", True, ("svc",), ("status",), ("all",), singular="service"),
    Resource("", "v1", "endpoints", "Endpoints", True, ("ep",), (), singular="endpoints"),
    Resource("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale"), ("all",), singular="deployment"),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale"), ("all",), singular="replicaset"),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True, (), (), singular="lease"),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, (), (), singular="endpointslice"),
)

_BY_KIND = {r.kind: r for r in RESOURCES}
_LOOKUP: dict[str, Resource] = {}
for _r in RESOURCES:
    for _n in (_r.kind.lower(), _r.plural, _r.singular, _r.group_resource, _r.kind_lower_group, *_r.short_names):
        _LOOKUP[_n] = _r


class UnknownResource(KeyError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f'the server doesn\'t have a resource type "{self.name}"'


def resolve(name: str) -> Resource:
    """Resolve a kind (`Deployment`), plural (`deployments`), singular,
    short name (`deploy`) or `deployments.apps` form to its Resource."""
    if name in _BY_KIND:
        return _BY_KIND[name]
    r = _LOOKUP.get(name.lower())
    if r is None:
        raise UnknownResource(name)
    return r


def by_api_path(group: str, version: str, plural: str) -> Resource | None:
    for r in RESOURCES:
        if r.group == group and r.version == version and r.plural == plural:
            return r
    return None
