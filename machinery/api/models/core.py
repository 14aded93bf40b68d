"""core/v1 shapes: Pod (with its spec, containers, probes, volumes and status),
Namespace, Node and Event.

Only shape lives here (see `base`); requiredness, ranges and syntax are in
`validation`, defaults in `defaults`. The field set is what a small fleet
uses; anything else is rejected as an unknown field, so a manifest never
silently asks for something shoal would ignore. docs/manifest-fields.md lists
every field.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from shoal.machinery.api.models.base import (Int32, Int64, IntOrString, MicroTime, Quantity, ResourceList, Time,
                                             WireModel)
from shoal.machinery.api.models.meta import ObjectMeta


# --- containers -------------------------------------------------------------

class EnvVar(WireModel):
    name: Optional[str] = None
    value: Optional[str] = None


class ContainerPort(WireModel):
    name: Optional[str] = None
    container_port: Optional[Int32] = None
    host_port: Optional[Int32] = None
    host_ip: Optional[str] = Field(None, alias="hostIP")
    protocol: Optional[str] = None


class ResourceRequirements(WireModel):
    limits: Optional[ResourceList] = None
    requests: Optional[ResourceList] = None


class VolumeMount(WireModel):
    name: Optional[str] = None
    mount_path: Optional[str] = None
    sub_path: Optional[str] = None
    read_only: Optional[bool] = None


class HTTPHeader(WireModel):
    name: Optional[str] = None
    value: Optional[str] = None


class HTTPGetAction(WireModel):
    path: Optional[str] = None
    port: Optional[IntOrString] = None
    host: Optional[str] = None
    scheme: Optional[str] = None
    http_headers: Optional[list[HTTPHeader]] = None


class TCPSocketAction(WireModel):
    port: Optional[IntOrString] = None
    host: Optional[str] = None


class ExecAction(WireModel):
    command: Optional[list[str]] = None


class Probe(WireModel):
    exec: Optional[ExecAction] = None
    http_get: Optional[HTTPGetAction] = None
    tcp_socket: Optional[TCPSocketAction] = None
    initial_delay_seconds: Optional[Int32] = None
    timeout_seconds: Optional[Int32] = None
    period_seconds: Optional[Int32] = None
    success_threshold: Optional[Int32] = None
    failure_threshold: Optional[Int32] = None
    termination_grace_period_seconds: Optional[Int64] = None


class Capabilities(WireModel):
    add: Optional[list[str]] = None
    drop: Optional[list[str]] = None


class SeccompProfile(WireModel):
    type: Optional[str] = None
    localhost_profile: Optional[str] = None


class SecurityContext(WireModel):
    run_as_user: Optional[Int64] = None
    run_as_group: Optional[Int64] = None
    run_as_non_root: Optional[bool] = None
    read_only_root_filesystem: Optional[bool] = None
    allow_privilege_escalation: Optional[bool] = None
    privileged: Optional[bool] = None
    capabilities: Optional[Capabilities] = None
    seccomp_profile: Optional[SeccompProfile] = None


class PodSecurityContext(WireModel):
    run_as_user: Optional[Int64] = None
    run_as_group: Optional[Int64] = None
    run_as_non_root: Optional[bool] = None
    fs_group: Optional[Int64] = None
    supplemental_groups: Optional[list[Int64]] = None
    seccomp_profile: Optional[SeccompProfile] = None


class Container(WireModel):
    name: Optional[str] = None
    image: Optional[str] = None
    image_pull_policy: Optional[str] = None
    command: Optional[list[str]] = None
    args: Optional[list[str]] = None
    working_dir: Optional[str] = None
    env: Optional[list[EnvVar]] = None
    ports: Optional[list[ContainerPort]] = None
    resources: Optional[ResourceRequirements] = None
    volume_mounts: Optional[list[VolumeMount]] = None
    liveness_probe: Optional[Probe] = None
    readiness_probe: Optional[Probe] = None
    startup_probe: Optional[Probe] = None
    security_context: Optional[SecurityContext] = None
    termination_message_path: Optional[str] = None
    termination_message_policy: Optional[str] = None


# --- pod spec -----------------------------------------------------------------

class EmptyDirVolumeSource(WireModel):
    medium: Optional[str] = None
    size_limit: Optional[Quantity] = None


class HostPathVolumeSource(WireModel):
    path: Optional[str] = None
    type: Optional[str] = None


class Volume(WireModel):
    name: Optional[str] = None
    empty_dir: Optional[EmptyDirVolumeSource] = None
    host_path: Optional[HostPathVolumeSource] = None


class Toleration(WireModel):
    key: Optional[str] = None
    operator: Optional[str] = None
    value: Optional[str] = None
    effect: Optional[str] = None
    toleration_seconds: Optional[Int64] = None


class LocalObjectReference(WireModel):
    """An object of the same namespace, by name (`imagePullSecrets[]`)."""
    name: Optional[str] = None


class PodDNSConfigOption(WireModel):
    name: Optional[str] = None
    value: Optional[str] = None


class PodDNSConfig(WireModel):
    """`dnsConfig`: nameservers, search domains and resolver options added to those the
    pod's `dnsPolicy` gives it (the whole of its resolv.conf with `dnsPolicy: None`)."""
    nameservers: Optional[list[str]] = None
    searches: Optional[list[str]] = None
    options: Optional[list[PodDNSConfigOption]] = None


class PodSpec(WireModel):
    init_containers: Optional[list[Container]] = None
    containers: Optional[list[Container]] = None
    volumes: Optional[list[Volume]] = None
    restart_policy: Optional[str] = None
    termination_grace_period_seconds: Optional[Int64] = None
    active_deadline_seconds: Optional[Int64] = None
    dns_policy: Optional[str] = None
    dns_config: Optional[PodDNSConfig] = None
    node_selector: Optional[dict[str, str]] = None
    node_name: Optional[str] = None
    hostname: Optional[str] = None
    security_context: Optional[PodSecurityContext] = None
    scheduler_name: Optional[str] = None
    tolerations: Optional[list[Toleration]] = None
    image_pull_secrets: Optional[list[LocalObjectReference]] = None


class PodTemplateSpec(WireModel):
    metadata: Optional[ObjectMeta] = None
    spec: Optional[PodSpec] = None


# --- pod status -----------------------------------------------------------------

class PodCondition(WireModel):
    type: Optional[str] = None
    status: Optional[str] = None
    last_probe_time: Optional[Time] = None
    last_transition_time: Optional[Time] = None
    reason: Optional[str] = None
    message: Optional[str] = None


class PodIP(WireModel):
    ip: Optional[str] = None


class HostIP(WireModel):
    ip: Optional[str] = None


class ContainerStateRunning(WireModel):
    started_at: Optional[Time] = None


class ContainerStateWaiting(WireModel):
    reason: Optional[str] = None
    message: Optional[str] = None


class ContainerStateTerminated(WireModel):
    exit_code: Optional[Int32] = None
    signal: Optional[Int32] = None
    reason: Optional[str] = None
    message: Optional[str] = None
    started_at: Optional[Time] = None
    finished_at: Optional[Time] = None
    container_id: Optional[str] = Field(None, alias="containerID")


class ContainerState(WireModel):
    waiting: Optional[ContainerStateWaiting] = None
    running: Optional[ContainerStateRunning] = None
    terminated: Optional[ContainerStateTerminated] = None


class ContainerStatus(WireModel):
    name: Optional[str] = None
    state: Optional[ContainerState] = None
    last_state: Optional[ContainerState] = None
    ready: Optional[bool] = None
    restart_count: Optional[Int32] = None
    image: Optional[str] = None
    image_id: Optional[str] = Field(None, alias="imageID")
    container_id: Optional[str] = Field(None, alias="containerID")
    started: Optional[bool] = None


class PodStatus(WireModel):
    phase: Optional[str] = None
    conditions: Optional[list[PodCondition]] = None
    message: Optional[str] = None
    reason: Optional[str] = None
    host_ip: Optional[str] = Field(None, alias="hostIP")
    host_ips: Optional[list[HostIP]] = Field(None, alias="hostIPs")
    pod_ip: Optional[str] = Field(None, alias="podIP")
    pod_ips: Optional[list[PodIP]] = Field(None, alias="podIPs")
    start_time: Optional[Time] = None
    init_container_statuses: Optional[list[ContainerStatus]] = None
    container_statuses: Optional[list[ContainerStatus]] = None
    qos_class: Optional[str] = None


class Pod(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    spec: Optional[PodSpec] = None
    status: Optional[PodStatus] = None


# --- namespace ------------------------------------------------------------------

class NamespaceSpec(WireModel):
    finalizers: Optional[list[str]] = None


class NamespaceCondition(WireModel):
    type: Optional[str] = None
    status: Optional[str] = None
    last_transition_time: Optional[Time] = None
    reason: Optional[str] = None
    message: Optional[str] = None


class NamespaceStatus(WireModel):
    phase: Optional[str] = None
    conditions: Optional[list[NamespaceCondition]] = None


class Namespace(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    spec: Optional[NamespaceSpec] = None
    status: Optional[NamespaceStatus] = None


# --- node -------------------------------------------------------------------------

class Taint(WireModel):
    key: Optional[str] = None
    value: Optional[str] = None
    effect: Optional[str] = None
    time_added: Optional[Time] = None


class NodeSpec(WireModel):
    pod_cidr: Optional[str] = Field(None, alias="podCIDR")
    pod_cidrs: Optional[list[str]] = Field(None, alias="podCIDRs")
    unschedulable: Optional[bool] = None
    taints: Optional[list[Taint]] = None


class NodeCondition(WireModel):
    type: Optional[str] = None
    status: Optional[str] = None
    last_heartbeat_time: Optional[Time] = None
    last_transition_time: Optional[Time] = None
    reason: Optional[str] = None
    message: Optional[str] = None


class NodeAddress(WireModel):
    type: Optional[str] = None
    address: Optional[str] = None


class NodeSystemInfo(WireModel):
    machine_id: Optional[str] = Field(None, alias="machineID")
    system_uuid: Optional[str] = Field(None, alias="systemUUID")
    boot_id: Optional[str] = Field(None, alias="bootID")
    kernel_version: Optional[str] = None
    os_image: Optional[str] = None
    container_runtime_version: Optional[str] = None
    kubelet_version: Optional[str] = None
    kube_proxy_version: Optional[str] = None
    operating_system: Optional[str] = None
    architecture: Optional[str] = None


class DaemonEndpoint(WireModel):
    port: Optional[Int32] = Field(None, alias="Port")


class NodeDaemonEndpoints(WireModel):
    kubelet_endpoint: Optional[DaemonEndpoint] = None


class NodeStatus(WireModel):
    capacity: Optional[ResourceList] = None
    allocatable: Optional[ResourceList] = None
    phase: Optional[str] = None
    conditions: Optional[list[NodeCondition]] = None
    addresses: Optional[list[NodeAddress]] = None
    daemon_endpoints: Optional[NodeDaemonEndpoints] = None
    node_info: Optional[NodeSystemInfo] = None


class Node(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    spec: Optional[NodeSpec] = None
    status: Optional[NodeStatus] = None


# --- event --------------------------------------------------------------------------

class ObjectReference(WireModel):
    kind: Optional[str] = None
    namespace: Optional[str] = None
    name: Optional[str] = None
    uid: Optional[str] = None
    api_version: Optional[str] = None
    resource_version: Optional[str] = None
    field_path: Optional[str] = None


class EventSource(WireModel):
    component: Optional[str] = None
    host: Optional[str] = None


class EventSeries(WireModel):
    count: Optional[Int32] = None
    last_observed_time: Optional[MicroTime] = None


class Event(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    involved_object: Optional[ObjectReference] = None
    reason: Optional[str] = None
    message: Optional[str] = None
    source: Optional[EventSource] = None
    first_timestamp: Optional[Time] = None
    last_timestamp: Optional[Time] = None
    count: Optional[Int32] = None
    type: Optional[str] = None
    event_time: Optional[MicroTime] = None
    series: Optional[EventSeries] = None
    action: Optional[str] = None
    related: Optional[ObjectReference] = None
    reporting_component: Optional[str] = None
    reporting_instance: Optional[str] = None
