"""The service vocabulary every component shares: labels, ranges and the small pure rules.

The API server allocates (apiserver.allocation), the endpointslice controller keeps the
slices (controller.endpointslice), the node proxy and DNS read them, the CLI prints them;
all of them name the same labels and read a Service's ports the same way, from here. Plain
wire dicts in, plain values out; nothing here imports the models.
"""
from __future__ import annotations

import ipaddress
from typing import Any

# Ranges (`shoal server --service-cidr`, `--service-node-port-range`): k3s' and Kubernetes' defaults.
DEFAULT_SERVICE_CIDR = "10.43.0.0/16"
DEFAULT_NODE_PORT_RANGE = "30000-32767"

# EndpointSlice labels, Kubernetes' names: the proxy and DNS select a Service's slices by the
# first; the controller touches only slices carrying the second with its value.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
# On the slices and the Endpoints of a headless Service (clusterIP None), as Kubernetes sets it.
HEADLESS_LABEL = "service.kubernetes.io/headless"
# On the Endpoints objects the controller keeps (Kubernetes 1.33's label): only those are
# deleted when their Service goes; a selectorless Service's own Endpoints are the user's.
ENDPOINTS_MANAGED_BY_LABEL = "endpoints.kubernetes.io/managed-by"
ENDPOINTS_MANAGED_BY = "endpoint-controller"
# Kubernetes' --max-endpoints-per-slice default, and the Endpoints object's capacity.
MAX_ENDPOINTS_PER_SLICE = 100
MAX_ENDPOINTS_PER_ENDPOINTS = 1000
OVER_CAPACITY_ANNOTATION = "endpoints.kubernetes.io/over-capacity"

CLUSTER_IP_NONE = "None"
TYPES_WITH_NODE_PORTS = ("NodePort", "LoadBalancer")


def parse_node_port_range(text: str) -> tuple[int, int]:
    """`30000-32767` (or a single port) → (first, last), both included. ValueError, saying
    why, for anything else (Kubernetes' --service-node-port-range syntax)."""
    lo, sep, hi = str(text).strip().partition("-")
    try:
        first = int(lo)
        last = int(hi) if sep else first
    except ValueError:
        raise ValueError(f"node port range {text!r}: expected FIRST-LAST, e.g. {DEFAULT_NODE_PORT_RANGE}") from None
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"node port range {text!r}: ports must be 1-65535 and FIRST <= LAST")
    return first, last


def parse_service_cidr(text: str) -> ipaddress.IPv4Network:
    """The service CIDR, IPv4 only (shoal serves single-stack IPv4 Services), between /12 (as
    Kubernetes limits it: 2^20 addresses) and /28. ValueError, saying why, otherwise."""
    try:
        net = ipaddress.ip_network(str(text).strip(), strict=True)
    except ValueError as e:
        raise ValueError(f"service CIDR {text!r}: {e}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise ValueError(f"service CIDR {text!r}: only IPv4 service networks are supported")
    if not 12 <= net.prefixlen <= 28:
        raise ValueError(f"service CIDR {text!r}: the prefix must be between /12 and /28")
    return net


def spec_of(svc: dict) -> dict:
    return svc.get("spec") or {}


def is_headless(svc: dict) -> bool:
    return spec_of(svc).get("clusterIP") == CLUSTER_IP_NONE


def service_type(svc: dict) -> str:
    return spec_of(svc).get("type") or "ClusterIP"


def container_port(pod: dict, name: str, protocol: str) -> int | None:
    """The number of the container port named `name` with `protocol` (containers, then
    init containers, as Kubernetes' FindPort), or None."""
    spec = pod.get("spec") or {}
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        for p in c.get("ports") or []:
            if p.get("name") == name and (p.get("protocol") or "TCP") == protocol:
                n = p.get("containerPort")
                return n if isinstance(n, int) else None
    return None


def resolve_target_port(pod: dict, port: dict[str, Any]) -> int | None:
    """The pod's port a Service port sends to: `targetPort` as a number, or the number of the
    pod's container port of that name and protocol; None when the pod has no such port (the
    pod is then no endpoint for that Service port, as in Kubernetes)."""
    target = port.get("targetPort")
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, str) and target:
        return container_port(pod, target, port.get("protocol") or "TCP")
    number = port.get("port")          # unset targetPort: defaulted to port by the API server
    return number if isinstance(number, int) else None
