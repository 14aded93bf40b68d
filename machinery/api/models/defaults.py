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
- A Secret's `stringData` is merged into `data` and dropped (it is write-only); its
  `type` defaults to `Opaque`.
"""
from __future__ import annotations

import base64
from typing import Any, Callable

from shoal.machinery.api.models.apps import Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment
from shoal.machinery.api.models.core import (Container, EmptyDirVolumeSource, Namespace, NamespaceStatus, Node, Pod,
                                             PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements)
from shoal.machinery.api.models.config import Secret
from shoal.machinery.api.models.imageref import parse_image_reference
# The values themselves live in one model-free module (the CLI and the controllers read them too).
from shoal.machinery.api.defaults import (DEFAULT_DEPLOYMENT_STRATEGY, DEFAULT_DNS_POLICY, DEFAULT_HTTP_GET_PATH,
                                          DEFAULT_HTTP_GET_SCHEME, DEFAULT_MAX_SURGE, DEFAULT_MAX_UNAVAILABLE,
                                          DEFAULT_PROBE_FAILURE_THRESHOLD, DEFAULT_PROBE_PERIOD_SECONDS,
                                          DEFAULT_PROBE_SUCCESS_THRESHOLD, DEFAULT_PROBE_TIMEOUT_SECONDS,
                                          DEFAULT_PROGRESS_DEADLINE_SECONDS, DEFAULT_PROTOCOL, DEFAULT_REPLICAS,
                                          DEFAULT_RESTART_POLICY, DEFAULT_REVISION_HISTORY_LIMIT,
                                          DEFAULT_SCHEDULER_NAME, DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS,
                                          DEFAULT_TERMINATION_MESSAGE_PATH, DEFAULT_TERMINATION_MESSAGE_POLICY,
                                          default_pull_policy)

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DEFAULT_SECRET_TYPE = "Opaque"


def default_image_pull_policy(image: str | None) -> str | None:
    """Kubernetes' rule; None when the image cannot be parsed (validation reports it)."""
    if not image:
        return None
    try:
        parse_image_reference(image.strip())
    except ValueError:
        return None
    return default_pull_policy(image.strip())


def default_probe(p: Probe | None) -> None:
    if p is None:
        return
    if not p.timeout_seconds:
        p.timeout_seconds = DEFAULT_PROBE_TIMEOUT_SECONDS
    if not p.period_seconds:
        p.period_seconds = DEFAULT_PROBE_PERIOD_SECONDS
    if not p.success_threshold:
        p.success_threshold = DEFAULT_PROBE_SUCCESS_THRESHOLD
    if not p.failure_threshold:
        p.failure_threshold = DEFAULT_PROBE_FAILURE_THRESHOLD
    if p.http_get is not None:
        if not p.http_get.path:
            p.http_get.path = DEFAULT_HTTP_GET_PATH
        if not p.http_get.scheme:
            p.http_get.scheme = DEFAULT_HTTP_GET_SCHEME


def default_container(c: Container, *, pod: bool) -> None:
    if c.image_pull_policy is None:
        c.image_pull_policy = default_image_pull_policy(c.image)
    if c.termination_message_path is None:
        c.termination_message_path = DEFAULT_TERMINATION_MESSAGE_PATH
    if c.termination_message_policy is None:
        c.termination_message_policy = DEFAULT_TERMINATION_MESSAGE_POLICY
    if c.resources is None:
        c.resources = ResourceRequirements()
    if pod and c.resources.limits:
        requests = dict(c.resources.requests or {})
        for name, value in c.resources.limits.items():
            requests.setdefault(name, value)
        c.resources.requests = requests
    for port in c.ports or []:
        if port.protocol is None:
            port.protocol = DEFAULT_PROTOCOL
    for probe in (c.liveness_probe, c.readiness_probe, c.startup_probe):
        default_probe(probe)


def default_pod_spec(spec: PodSpec, *, pod: bool) -> None:
    if spec.restart_policy is None:
        spec.restart_policy = DEFAULT_RESTART_POLICY
    if spec.termination_grace_period_seconds is None:
        spec.termination_grace_period_seconds = DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS
    if spec.dns_policy is None:
        spec.dns_policy = DEFAULT_DNS_POLICY
    if spec.scheduler_name is None:
        spec.scheduler_name = DEFAULT_SCHEDULER_NAME
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
        spec.replicas = DEFAULT_REPLICAS
    if spec.strategy is None:
        spec.strategy = DeploymentStrategy()
    if not spec.strategy.type:
        spec.strategy.type = DEFAULT_DEPLOYMENT_STRATEGY
    if spec.strategy.type == "RollingUpdate":
        ru = spec.strategy.rolling_update
        if ru is None:
            ru = spec.strategy.rolling_update = RollingUpdateDeployment()
        if ru.max_unavailable is None:
            ru.max_unavailable = DEFAULT_MAX_UNAVAILABLE
        if ru.max_surge is None:
            ru.max_surge = DEFAULT_MAX_SURGE
    if spec.revision_history_limit is None:
        spec.revision_history_limit = DEFAULT_REVISION_HISTORY_LIMIT
    if spec.progress_deadline_seconds is None:
        spec.progress_deadline_seconds = DEFAULT_PROGRESS_DEADLINE_SECONDS
    default_pod_template(spec.template)


def default_replicaset(rs: ReplicaSet) -> None:
    spec = rs.spec
    if spec is None:
        return
    if spec.replicas is None:
        spec.replicas = DEFAULT_REPLICAS
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


def default_secret(secret: Secret) -> None:
    """`stringData` is write-only: each entry replaces the same key of `data` (as its UTF-8
    bytes, base64 on the wire) and the field itself is never stored, as in Kubernetes'
    conversion of a v1 Secret. An empty `type` is `Opaque`."""
    if secret.string_data:
        data = dict(secret.data or {})
        for key, value in secret.string_data.items():
            data[key] = base64.b64encode(value.encode()).decode("ascii")
        secret.data = data
    secret.string_data = None
    if not secret.type:
        secret.type = DEFAULT_SECRET_TYPE


def _noop(_obj) -> None:
    return None


DEFAULTERS: dict[str, Callable[[Any], None]] = {
    "Namespace": default_namespace, "Pod": default_pod, "Node": default_node, "Event": _noop,
    "Deployment": default_deployment, "ReplicaSet": default_replicaset, "Lease": _noop,
    "Scale": _noop, "DeleteOptions": _noop,
    "ConfigMap": _noop, "Secret": default_secret,
}
