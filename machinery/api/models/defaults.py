"""Kubernetes' defaults, applied to decoded models before validation.

Defaulting fills only what is absent (None), except where Kubernetes also
replaces a zero (probe timeout/period/thresholds: `0` means "default"). It
never invents required values (a missing image stays missing so validation
can say so). Running it twice changes nothing, so the stored object can be
re-defaulted when compared on update.

Notable choices, all Kubernetes':
- `imagePullPolicy`: Always when the tag is `latest` or absent (and there is
  no digest), else IfNotPresent.
- requests default to limits, per resource, only for Pods (Kubernetes does it
  in Pod defaulting, not for Deployment/ReplicaSet templates), so a
  template's hash is what the user wrote.
- A volume with no source becomes an `emptyDir`.
- Namespaces get `status.phase: Active` and the immutable label
  `kubernetes.io/metadata.name: <name>`.
"""
from __future__ import annotations

from typing import Any, Callable

from shoal.machinery.api.models.apps import Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment
from shoal.machinery.api.models.core import (Container, EmptyDirVolumeSource, Namespace, NamespaceStatus, Node, Pod,
                                             PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements)
from shoal.machinery.api.models.imageref import parse_image_reference

DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def default_image_pull_policy(image: str | None) -> str | None:
    """Kubernetes' rule; None when the image cannot be parsed (validation reports it)."""
    if not image:
        return None
    try:
        ref = parse_image_reference(image.strip())
    except ValueError:
        return None
    if ref.tag == "latest" or (ref.tag is None and ref.digest is None):
        return "Always"
    return "IfNotPresent"


def default_probe(p: Probe | None) -> None:
    if p is None:
        return
    if not p.timeout_seconds:
        p.timeout_seconds = 1
    if not p.period_seconds:
        p.period_seconds = 10
    if not p.success_threshold:
        p.success_threshold = 1
    if not p.failure_threshold:
        p.failure_threshold = 3
    if p.http_get is not None:
        if not p.http_get.path:
            p.http_get.path = "/"
        if not p.http_get.scheme:
            p.http_get.scheme = "HTTP"


def default_container(c: Container, *, pod: bool) -> None:
    if c.image_pull_policy is None:
        c.image_pull_policy = default_image_pull_policy(c.image)
    if c.termination_message_path is None:
        c.termination_message_path = "/dev/termination-log"
    if c.termination_message_policy is None:
        c.termination_message_policy = "File"
    if c.resources is None:
        c.resources = ResourceRequirements()
    if pod and c.resources.limits:
        requests = dict(c.resources.requests or {})
        for name, value in c.resources.limits.items():
            requests.setdefault(name, value)
        c.resources.requests = requests
    for port in c.ports or []:
        if port.protocol is None:
            port.protocol = "TCP"
    for probe in (c.liveness_probe, c.readiness_probe, c.startup_probe):
        default_probe(probe)


def default_pod_spec(spec: PodSpec, *, pod: bool) -> None:
    if spec.restart_policy is None:
        spec.restart_policy = "Always"
    if spec.termination_grace_period_seconds is None:
        spec.termination_grace_period_seconds = 30
    if spec.dns_policy is None:
        spec.dns_policy = "ClusterFirst"
    if spec.scheduler_name is None:
        spec.scheduler_name = "default-scheduler"
    if spec.security_context is None:
        spec.security_context = PodSecurityContext()
    for vol in spec.volumes or []:
        if vol.empty_dir is None and vol.host_path is None:
            vol.empty_dir = EmptyDirVolumeSource()
    for c in (spec.init_containers or []) + (spec.containers or []):
        default_container(c, pod=pod)


def default_pod_template(tmpl: PodTemplateSpec | None) -> None:
    """Defaults for a workload's pod template (no requests-from-limits: see module notes)."""
    if tmpl is None:
        return
    if tmpl.spec is not None:
        default_pod_spec(tmpl.spec, pod=False)


def default_pod(pod: Pod) -> None:
    if pod.spec is not None:
        default_pod_spec(pod.spec, pod=True)


def default_deployment(d: Deployment) -> None:
    spec = d.spec
    if spec is None:
        return
    if spec.replicas is None:
        spec.replicas = 1
    if spec.strategy is None:
        spec.strategy = DeploymentStrategy()
    if not spec.strategy.type:
        spec.strategy.type = "RollingUpdate"
    if spec.strategy.type == "RollingUpdate":
        ru = spec.strategy.rolling_update
        if ru is None:
            ru = spec.strategy.rolling_update = RollingUpdateDeployment()
        if ru.max_unavailable is None:
            ru.max_unavailable = DEFAULT_MAX_UNAVAILABLE
        if ru.max_surge is None:
            ru.max_surge = DEFAULT_MAX_SURGE
    if spec.revision_history_limit is None:
        spec.revision_history_limit = 10
    if spec.progress_deadline_seconds is None:
        spec.progress_deadline_seconds = 600
    default_pod_template(spec.template)


def default_replicaset(rs: ReplicaSet) -> None:
    spec = rs.spec
    if spec is None:
        return
    if spec.replicas is None:
        spec.replicas = 1
    default_pod_template(spec.template)


def default_namespace(ns: Namespace) -> None:
    if ns.status is None:
        ns.status = NamespaceStatus()
    if ns.status.phase is None:
        ns.status.phase = "Active"
    meta = ns.metadata
    if meta is not None and meta.name:
        meta.labels = {**(meta.labels or {}), NAMESPACE_NAME_LABEL: meta.name}


def default_node(node: Node) -> None:
    st = node.status
    if st is not None and st.capacity and st.allocatable is None:
        st.allocatable = dict(st.capacity)


def _noop(_obj) -> None:
    return None


DEFAULTERS: dict[str, Callable[[Any], None]] = {
    "Namespace": default_namespace, "Pod": default_pod, "Node": default_node, "Event": _noop,
    "Deployment": default_deployment, "ReplicaSet": default_replicaset, "Lease": _noop,
    "Scale": _noop, "DeleteOptions": _noop,
}
