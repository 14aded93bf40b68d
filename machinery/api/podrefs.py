"""The objects a pod references by name: what a node may read because of the pod.

`referenced_objects(pod)` walks a pod (a wire dict) and answers the set of
`(plural, namespace, name)` of the Secrets and ConfigMaps it names. The API server's node
authorizer grants a node `get` on exactly the objects the pods bound to it reference
(Kubernetes' Node authorizer graph: pod → secret/configmap edges, `apiserver.auth`); the
agent reads them through its node credential when it needs them.

Today a pod names Secrets in one place only: `spec.imagePullSecrets[].name`. Kubernetes'
graph also walks volumes (`secret.secretName`, `configMap.name`, `projected.sources[]`),
`env[].valueFrom.{secretKeyRef,configMapKeyRef}` and `envFrom[]` of every container kind;
when shoal's pod model grows one of those fields, its walk goes here, in this one function,
and every caller follows.

Every reference is in the pod's own namespace (a pod can name no other), so a pod in
another namespace naming the same Secret name relates its node to that namespace's Secret
only.
"""
from __future__ import annotations

from typing import Any, Mapping

Reference = tuple[str, str, str]     # (plural, namespace, name)


def referenced_objects(pod: Mapping[str, Any]) -> set[Reference]:
    """{("secrets" | "configmaps", namespace, name)} the pod names. A malformed entry
    (not an object, no name) names nothing."""
    md = pod.get("metadata") if isinstance(pod.get("metadata"), Mapping) else {}
    ns = (md or {}).get("namespace") or "default"
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    out: set[Reference] = set()
    for ref in (spec or {}).get("imagePullSecrets") or []:
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str) and ref["name"]:
            out.add(("secrets", ns, ref["name"]))
    return out


def image_pull_secret_names(pod: Mapping[str, Any]) -> list[str]:
    """The pod's `spec.imagePullSecrets[].name`, in order, without repeats."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    names: list[str] = []
    for ref in (spec or {}).get("imagePullSecrets") or []:
        name = ref.get("name") if isinstance(ref, Mapping) else None
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names
