"""Shapes of the service kinds: core/v1 Service and Endpoints, discovery.k8s.io/v1 EndpointSlice.

Shape only, as in `core` and `config`: defaults, the update preparation Kubernetes' service
strategy makes (allocated values kept, type-dependent fields dropped) and the rules are in
`network_rules`; the values the API server allocates (cluster IPs, node ports) are
`apiserver.allocation`'s.

What shoal models is what it honours; Kubernetes fields left out are refused by name as
unknown fields (strict decoding), never accepted and ignored (docs/services.md):
- ServiceSpec: no `loadBalancerIP` (deprecated), `loadBalancerSourceRanges`, `loadBalancerClass`
  (there is one load balancer: the nodes), `trafficDistribution`. `externalName` is modelled
  only so that type ExternalName and the field are refused by name with a reason
  (`network_rules`), not as an unknown field.
- ServiceStatus: no `conditions`; a load-balancer ingress has no `ports`.
- Endpoint (of a slice): no `hints`, `deprecatedTopology`.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from shoal.machinery.api.models.base import Int32, IntOrString, WireModel
from shoal.machinery.api.models.core import ObjectReference
from shoal.machinery.api.models.meta import ObjectMeta


# --- Service -------------------------------------------------------------------------------

class ServicePort(WireModel):
    name: Optional[str] = None
    protocol: Optional[str] = None
    app_protocol: Optional[str] = None
    port: Optional[Int32] = None
    target_port: Optional[IntOrString] = None
    node_port: Optional[Int32] = None


class ClientIPConfig(WireModel):
    timeout_seconds: Optional[Int32] = None


class SessionAffinityConfig(WireModel):
    client_ip: Optional[ClientIPConfig] = Field(None, alias="clientIP")


class ServiceSpec(WireModel):
    ports: Optional[list[ServicePort]] = None
    selector: Optional[dict[str, str]] = None
    cluster_ip: Optional[str] = Field(None, alias="clusterIP")
    cluster_ips: Optional[list[str]] = Field(None, alias="clusterIPs")
    type: Optional[str] = None
    session_affinity: Optional[str] = None
    session_affinity_config: Optional[SessionAffinityConfig] = None
    external_traffic_policy: Optional[str] = None
    internal_traffic_policy: Optional[str] = None
    ip_families: Optional[list[str]] = None
    ip_family_policy: Optional[str] = None
    allocate_load_balancer_node_ports: Optional[bool] = None
    publish_not_ready_addresses: Optional[bool] = None
    external_name: Optional[str] = None
    external_ips: Optional[list[str]] = Field(None, alias="externalIPs")
    health_check_node_port: Optional[Int32] = None


class LoadBalancerIngress(WireModel):
    ip: Optional[str] = None
    hostname: Optional[str] = None
    ip_mode: Optional[str] = None


class LoadBalancerStatus(WireModel):
    ingress: Optional[list[LoadBalancerIngress]] = None


class ServiceStatus(WireModel):
    load_balancer: Optional[LoadBalancerStatus] = None


class Service(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    spec: Optional[ServiceSpec] = None
    status: Optional[ServiceStatus] = None


# --- Endpoints (core/v1, for older clients) ------------------------------------------------

class EndpointAddress(WireModel):
    ip: Optional[str] = None
    hostname: Optional[str] = None
    node_name: Optional[str] = None
    target_ref: Optional[ObjectReference] = None


class EndpointPort(WireModel):
    name: Optional[str] = None
    port: Optional[Int32] = None
    protocol: Optional[str] = None
    app_protocol: Optional[str] = None


class EndpointSubset(WireModel):
    addresses: Optional[list[EndpointAddress]] = None
    not_ready_addresses: Optional[list[EndpointAddress]] = None
    ports: Optional[list[EndpointPort]] = None


class Endpoints(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    subsets: Optional[list[EndpointSubset]] = None


# --- EndpointSlice (discovery.k8s.io/v1) ---------------------------------------------------

class EndpointConditions(WireModel):
    ready: Optional[bool] = None
    serving: Optional[bool] = None
    terminating: Optional[bool] = None


class Endpoint(WireModel):
    addresses: Optional[list[str]] = None
    conditions: Optional[EndpointConditions] = None
    hostname: Optional[str] = None
    target_ref: Optional[ObjectReference] = None
    node_name: Optional[str] = None
    zone: Optional[str] = None


class SliceEndpointPort(WireModel):
    """discovery/v1 EndpointPort (same wire fields as core/v1's, other rules)."""
    name: Optional[str] = None
    protocol: Optional[str] = None
    port: Optional[Int32] = None
    app_protocol: Optional[str] = None


class EndpointSlice(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    address_type: Optional[str] = None
    endpoints: Optional[list[Endpoint]] = None
    ports: Optional[list[SliceEndpointPort]] = None
