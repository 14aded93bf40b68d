"""Index functions shared by the controllers' informers (see Informer.add_index).

`ensure(informer, name)` adds a named index once, so controllers that share an informer can
each ask for the indexes they need."""
from __future__ import annotations

from shoal.machinery.api.objects import controller_ref, meta, namespace_of, node_name_of

CONTROLLER = "controller-uid"   # controller ownerReference uid
ORPHANS = "orphans-by-namespace"  # namespace, for objects without a controller reference
OWNERS = "owner-uid"            # every ownerReference uid
NAMESPACE = "namespace"
NODE = "node"                   # pods by spec.nodeName


def _controller(obj: dict) -> list[str]:
    ref = controller_ref(obj)
    return [ref["uid"]] if ref and ref.get("uid") else []


def _orphans(obj: dict) -> list[str]:
    return [] if controller_ref(obj) else [namespace_of(obj)]


def _owners(obj: dict) -> list[str]:
    return [r["uid"] for r in meta(obj).get("ownerReferences") or [] if r.get("uid")]


def _namespace(obj: dict) -> list[str]:
    return [namespace_of(obj)]


def _node(obj: dict) -> list[str]:
    n = node_name_of(obj)
    return [n] if n else []


FUNCS = {CONTROLLER: _controller, ORPHANS: _orphans, OWNERS: _owners, NAMESPACE: _namespace, NODE: _node}


def ensure(informer, name: str) -> None:
    if not informer.has_index(name):
        informer.add_index(name, FUNCS[name])
