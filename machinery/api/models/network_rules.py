"""Defaults, update preparation and validation of Service, Endpoints and EndpointSlice.

Kubernetes' rules, wording and field paths (pkg/apis/core/v1/defaults.go SetDefaults_Service,
pkg/registry/core/service strategy and storage, pkg/apis/core/validation ValidateService /
ValidateEndpoints, pkg/apis/discovery/validation), for a cluster with one IPv4 service range.
Registered into the models' tables by `models/__init__.py` (DEFAULTERS, VALIDATORS, and the
two tables below).

A Service write goes: decode → `default_service` → `prepare_service(new, old)` (the
contextual steps Kubernetes' service storage takes before validating: clusterIP/clusterIPs
kept in step, values the server allocated on an earlier write kept when a client leaves them
out, fields of the old type dropped on a type change, the IP family fields filled in) →
`validate_service` (+ `validate_service_update` with the stored object). The API server then
allocates what is still missing (`apiserver.allocation`): the cluster IP, the node ports.

What a single-stack IPv4 Kubernetes cluster answers, shoal answers: `ipFamilyPolicy`
defaults to SingleStack, PreferDualStack is accepted (one IPv4 address), RequireDualStack is
"this cluster is not configured for dual-stack services", IPv6 "not configured on this
cluster" — except for a headless Service without selector, which Kubernetes lets claim
both families (RequireDualStack, [IPv4, IPv6]) since it has no address of its own.

Refused by name because nothing in shoal would honour them (docs/services.md): type
ExternalName and `externalName` (cluster DNS serves no CNAME records).
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Optional

from shoal.machinery.api.errors import Cause
from shoal.machinery.api.models.field import FieldErrors
from shoal.machinery.api.models.network import (EndpointSlice, Endpoints, LoadBalancerStatus, Service,
                                                ServicePort, ServiceSpec, SessionAffinityConfig)
from shoal.machinery.api.models.validation import validate_labels, validate_object_meta
from shoal.machinery.api.names import (_regex_error, is_dns1123_label, is_dns1123_subdomain, is_ip,
                                       is_qualified_name, is_valid_port_name, max_len_error)

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")    # Kubernetes' values
SERVED_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
SESSION_AFFINITIES = ("ClientIP", "None")
TRAFFIC_POLICIES = ("Cluster", "Local")
IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
LOAD_BALANCER_IP_MODES = ("VIP", "Proxy")
PROTOCOLS = ("TCP", "UDP", "SCTP")
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
DEFAULT_CLIENT_IP_TIMEOUT = 10800         # Kubernetes' DefaultClientIPServiceAffinitySeconds (3 h)
MAX_CLIENT_IP_TIMEOUT = 86400             # MaxClientIPServiceAffinitySeconds (1 day)
NONE = "None"
MAX_SLICE_ENDPOINTS, MAX_SLICE_ADDRESSES, MAX_SLICE_PORTS = 1000, 100, 20000

DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_dns1035_re = re.compile(f"^{DNS1035_LABEL_FMT}\\Z")


def is_dns1035_label(value: str) -> list[str]:
    """A Service name: it becomes a DNS label and an environment variable prefix, so it starts
    with a letter (Kubernetes' IsDNS1035Label)."""
    errs = []
    if len(value) > 63:
        errs.append(max_len_error(63))
    if not _dns1035_re.match(value):
        errs.append(_regex_error("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                                 "start with an alphabetic character, and end with an alphanumeric character",
                                 DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def _empty_spec() -> ServiceSpec:
    return ServiceSpec.model_validate({})


def _too_many(errs: FieldErrors, path: str, n: int, most: int) -> None:
    errs.causes.append(Cause(path, f"Too many: {n}: must have at most {most} items", "FieldValueTooMany"))


def _family(ip: str) -> Optional[str]:
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return None


# --- Service: defaults --------------------------------------------------------------------

def needs_node_ports(svc_type: Optional[str]) -> bool:
    return svc_type in ("NodePort", "LoadBalancer")


def externally_accessible(spec: ServiceSpec) -> bool:
    """ExternallyAccessible: reached from outside the cluster (NodePort, LoadBalancer, or a
    ClusterIP Service with externalIPs) — what externalTrafficPolicy is about."""
    return needs_node_ports(spec.type) or (spec.type == "ClusterIP" and bool(spec.external_ips))


def needs_health_check(spec: ServiceSpec) -> bool:
    """NeedsHealthCheck: a LoadBalancer that keeps client addresses (externalTrafficPolicy
    Local) gets a node port answering whether the node has endpoints."""
    return spec.type == "LoadBalancer" and spec.external_traffic_policy == "Local"


def default_service(svc: Service) -> None:
    """SetDefaults_Service: what a Service gets when the client leaves it out."""
    if svc.spec is None:
        svc.spec = _empty_spec()
    spec = svc.spec
    if not spec.session_affinity:
        spec.session_affinity = "None"
    if spec.session_affinity == "None":
        spec.session_affinity_config = None
    elif spec.session_affinity == "ClientIP":
        cfg = spec.session_affinity_config
        if cfg is None or cfg.client_ip is None or cfg.client_ip.timeout_seconds is None:
            spec.session_affinity_config = SessionAffinityConfig.model_validate(
                {"clientIP": {"timeoutSeconds": DEFAULT_CLIENT_IP_TIMEOUT}})
    if not spec.type:
        spec.type = "ClusterIP"
    for p in spec.ports or []:
        if not p.protocol:
            p.protocol = "TCP"
        if p.target_port in (None, 0, ""):
            p.target_port = p.port
    if externally_accessible(spec) and not spec.external_traffic_policy:
        spec.external_traffic_policy = "Cluster"
    if spec.internal_traffic_policy is None and spec.type in SERVED_TYPES:
        spec.internal_traffic_policy = "Cluster"
    if spec.type == "LoadBalancer" and spec.allocate_load_balancer_node_ports is None:
        spec.allocate_load_balancer_node_ports = True
    if spec.type == "LoadBalancer" and svc.status is not None and svc.status.load_balancer is not None:
        for ing in svc.status.load_balancer.ingress or []:
            if ing.ip and ing.ip_mode is None:
                ing.ip_mode = "VIP"


# --- Service: preparation (create and update) --------------------------------------------------

def _cluster_ips(spec: ServiceSpec) -> list[str]:
    return list(spec.cluster_ips or [])


def _same_cluster_ips(a: ServiceSpec, b: ServiceSpec) -> bool:
    return (a.cluster_ip or "") == (b.cluster_ip or "") and _cluster_ips(a) == _cluster_ips(b)


def _node_ports(spec: ServiceSpec) -> set[int]:
    return {p.node_port for p in spec.ports or [] if p.node_port}


def _normalize_cluster_ips(new: ServiceSpec, old: Optional[ServiceSpec]) -> None:
    """Kubernetes' normalizeClusterIPs: keep the singular and plural fields in step for
    clients that set one of them."""
    if old is None:
        if new.cluster_ip and not new.cluster_ips:
            new.cluster_ips = [new.cluster_ip]
        return
    if _cluster_ips(old) and not _cluster_ips(new) and (old.cluster_ip or "") == (new.cluster_ip or ""):
        new.cluster_ips = list(old.cluster_ips or [])
    if (old.cluster_ip or "") != (new.cluster_ip or ""):
        if old.cluster_ip and not new.cluster_ip:
            if _cluster_ips(old) == _cluster_ips(new):
                new.cluster_ips = None          # the client cleared both (validation decides)
        elif _cluster_ips(old) == _cluster_ips(new):
            new.cluster_ips = [new.cluster_ip] if new.cluster_ip else None


def _patch_allocated_values(new: ServiceSpec, old: ServiceSpec) -> None:
    """Kubernetes' patchAllocatedValues: a client that resubmits its manifest (no clusterIP,
    no nodePort) keeps what the server allocated, instead of changing an immutable field."""
    if not new.cluster_ip:
        new.cluster_ip = old.cluster_ip
    if not _cluster_ips(new) and _cluster_ips(old):
        new.cluster_ips = list(old.cluster_ips or [])
    if needs_health_check(old) and needs_health_check(new) and not new.health_check_node_port:
        new.health_check_node_port = old.health_check_node_port
    if needs_node_ports(old.type) and needs_node_ports(new.type):
        used = _node_ports(old) & _node_ports(new)
        by_name = {p.name or "": p.node_port for p in old.ports or []}
        for p in new.ports or []:
            if not p.node_port:
                kept = by_name.get(p.name or "")
                if kept and kept not in used:
                    p.node_port = kept


def _drop_type_dependent_fields(svc: Service, old: Service) -> None:
    """Kubernetes' dropTypeDependentFields: on a type change, the old type's fields the client
    did not itself change go (node ports, allocateLoadBalancerNodePorts, externalTrafficPolicy,
    the load balancer status)."""
    new_spec, old_spec = svc.spec, old.spec
    assert new_spec is not None and old_spec is not None
    if needs_node_ports(old_spec.type) and not needs_node_ports(new_spec.type) \
            and _node_ports(new_spec) <= _node_ports(old_spec):
        for p in new_spec.ports or []:
            p.node_port = None
    if needs_health_check(old_spec) and not needs_health_check(new_spec) \
            and new_spec.health_check_node_port == old_spec.health_check_node_port:
        new_spec.health_check_node_port = None
    if old_spec.type == "LoadBalancer" and new_spec.type != "LoadBalancer":
        if new_spec.allocate_load_balancer_node_ports is not None and \
                new_spec.allocate_load_balancer_node_ports == old_spec.allocate_load_balancer_node_ports:
            new_spec.allocate_load_balancer_node_ports = None
    if externally_accessible(old_spec) and not externally_accessible(new_spec) \
            and new_spec.external_traffic_policy == old_spec.external_traffic_policy:
        new_spec.external_traffic_policy = None
    if new_spec.type != "LoadBalancer" and svc.status is not None and svc.status.load_balancer is not None:
        svc.status.load_balancer = LoadBalancerStatus()


def _init_ip_families(spec: ServiceSpec, old: Optional[ServiceSpec]) -> None:
    """Kubernetes' initIPFamilyFields on a cluster whose only service range is IPv4: the
    policy kept from the stored Service or defaulted, the families inferred from the
    addresses or defaulted. Validation then refuses what the cluster cannot serve."""
    if spec.type == "ExternalName":
        return
    headless_selectorless = spec.cluster_ip == NONE and not spec.selector
    if spec.ip_family_policy is None:
        if old is not None and old.ip_family_policy is not None:
            spec.ip_family_policy = old.ip_family_policy
        elif headless_selectorless:
            spec.ip_family_policy = "RequireDualStack"
        else:
            spec.ip_family_policy = "SingleStack"
    if old is not None and spec.ip_family_policy == "SingleStack":
        if _same_cluster_ips(old, spec) and len(_cluster_ips(spec)) > 1:
            spec.cluster_ips = _cluster_ips(spec)[:1]
        if (old.ip_families or []) == (spec.ip_families or []) and len(spec.ip_families or []) > 1:
            spec.ip_families = list(spec.ip_families or [])[:1]
    families = list(spec.ip_families or [])
    for i, ip in enumerate(_cluster_ips(spec)):
        if ip == NONE:
            break
        if i >= len(families) and _family(ip) == "IPv4":
            families.append("IPv4")
    if headless_selectorless:
        if not families:
            families = ["IPv4"]
        if len(families) < 2 and spec.ip_family_policy != "SingleStack":
            families.append("IPv6" if families[0] == "IPv4" else "IPv4")
    elif not families:
        families = ["IPv4"]
    spec.ip_families = families


def prepare_service(svc: Service, old: Optional[Service]) -> None:
    """The contextual steps before validation (module docstring). `old`: the stored Service
    (defaulted), None on create. Status writes do not come here."""
    spec = svc.spec
    assert spec is not None
    if old is not None and old.spec is not None:
        _patch_allocated_values(spec, old.spec)
        _normalize_cluster_ips(spec, old.spec)
        _drop_type_dependent_fields(svc, old)
    else:
        _normalize_cluster_ips(spec, None)
    _init_ip_families(spec, old.spec if old is not None else None)


# --- Service: validation ----------------------------------------------------------------------

def _port_number(errs: FieldErrors, path: str, value: Any) -> None:
    if value is None:
        errs.invalid(path, 0, "must be between 1 and 65535, inclusive")
    elif not 1 <= value <= 65535:
        errs.invalid(path, value, "must be between 1 and 65535, inclusive")


def _target_port(errs: FieldErrors, path: str, value: Any) -> None:
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            errs.invalid(path, value, "must be between 1 and 65535, inclusive")
    elif isinstance(value, str):
        errs.invalid_all(path, value, is_valid_port_name(value))
    else:
        errs.required(path)


def _service_port(errs: FieldErrors, p: ServicePort, path: str, *, require_name: bool, names: set[str]) -> None:
    if require_name and not p.name:
        errs.required(f"{path}.name")
    elif p.name:
        errs.invalid_all(f"{path}.name", p.name, is_dns1123_label(p.name))
        if p.name in names:
            errs.duplicate(f"{path}.name", p.name)
        names.add(p.name)
    _port_number(errs, f"{path}.port", p.port)
    errs.one_of(f"{path}.protocol", p.protocol, PROTOCOLS, required=True)
    _target_port(errs, f"{path}.targetPort", p.target_port)
    if p.app_protocol is not None:
        errs.invalid_all(f"{path}.appProtocol", p.app_protocol, is_qualified_name(p.app_protocol))


def _special_ip(errs: FieldErrors, path: str, ip: str) -> None:
    """ValidateNonSpecialIP (externalIPs) and ValidateEndpointIP: a real, routable address."""
    addr = ipaddress.ip_address(ip)
    if addr.is_unspecified:
        errs.invalid(path, ip, f"may not be unspecified ({'0.0.0.0' if addr.version == 4 else '::'})")
    if addr.is_loopback:
        errs.invalid(path, ip, "may not be in the loopback range (127.0.0.0/8, ::1/128)")
    if addr.is_link_local:
        errs.invalid(path, ip, "may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    if addr in ipaddress.ip_network("224.0.0.0/24") or (addr.version == 6 and addr in ipaddress.ip_network("ff02::/16")):
        errs.invalid(path, ip, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")


def _cluster_ip_fields(errs: FieldErrors, spec: ServiceSpec) -> None:
    """ValidateServiceClusterIPsRelatedFields, then what a single-stack IPv4 cluster serves."""
    ips = _cluster_ips(spec)
    if spec.cluster_ip:
        if not ips:
            errs.required("spec.clusterIPs")
        elif ips[0] != spec.cluster_ip:
            errs.invalid("spec.clusterIPs", ips, "first value must match `clusterIP`")
    elif ips:
        errs.invalid("spec.clusterIPs", ips, "must be empty when `clusterIP` is not specified")
    seen: set[str] = set()
    for i, fam in enumerate(spec.ip_families or []):
        if fam not in IP_FAMILIES:
            errs.not_supported(f"spec.ipFamilies[{i}]", fam, IP_FAMILIES)
        if fam in seen:
            errs.duplicate(f"spec.ipFamilies[{i}]", fam)
        seen.add(fam)
    if spec.ip_family_policy is not None:
        errs.one_of("spec.ipFamilyPolicy", spec.ip_family_policy, IP_FAMILY_POLICIES)
    bad_ip = False
    for i, ip in enumerate(ips):
        if i == 0 and ip == NONE:
            if len(ips) > 1:
                bad_ip = True
                errs.invalid("spec.clusterIPs", ips, "'None' must be the first and only value")
            continue
        problems = is_ip(ip)
        bad_ip = bad_ip or bool(problems)
        errs.invalid_all(f"spec.clusterIPs[{i}]", ip, problems)
    if len(ips) > 2:
        errs.invalid("spec.clusterIPs", ips, "may only hold up to 2 values")
    if bad_ip:
        return
    if len(ips) > 1 and len({_family(ip) for ip in ips}) != len(ips):
        errs.invalid("spec.clusterIPs", ips, "may specify no more than one IP for each IP family")
    headless = ips == [NONE]
    families = spec.ip_families or []
    if not headless:
        for i, ip in enumerate(ips):
            if i < len(families):
                if families[i] == "IPv4" and _family(ip) == "IPv6":
                    errs.invalid(f"spec.clusterIPs[{i}]", ip, f"expected an IPv4 value as indicated by `ipFamilies[{i}]`")
                if families[i] == "IPv6" and _family(ip) == "IPv4":
                    errs.invalid(f"spec.clusterIPs[{i}]", ip, f"expected an IPv6 value as indicated by `ipFamilies[{i}]`")
    if spec.ip_family_policy == "SingleStack":
        if len(ips) == 2:
            errs.invalid("spec.ipFamilyPolicy", spec.ip_family_policy,
                         "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified")
        if len(families) == 2:
            errs.invalid("spec.ipFamilyPolicy", spec.ip_family_policy,
                         "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified")
    # The cluster: one IPv4 service range. A headless Service without selector may claim both
    # families, as on any Kubernetes cluster (it has no address of its own).
    for i, ip in enumerate(ips):
        if ip != NONE and _family(ip) == "IPv6":
            errs.invalid(f"spec.clusterIPs[{i}]", ips, "IPv6 is not configured on this cluster")
    if headless and not spec.selector:
        return
    if spec.ip_family_policy == "RequireDualStack":
        errs.invalid("spec.ipFamilyPolicy", spec.ip_family_policy,
                     "this cluster is not configured for dual-stack services")
    for i, fam in enumerate(families):
        if fam == "IPv6":
            errs.invalid(f"spec.ipFamilies[{i}]", fam, "not configured on this cluster")


def _load_balancer_status(errs: FieldErrors, svc: Service) -> None:
    lb = svc.status.load_balancer if svc.status is not None else None
    ingress = (lb.ingress if lb is not None else None) or []
    if ingress and (svc.spec is None or svc.spec.type != "LoadBalancer"):
        errs.forbidden("status.loadBalancer.ingress", "may only be used when `spec.type` is 'LoadBalancer'")
        return
    for i, ing in enumerate(ingress):
        p = f"status.loadBalancer.ingress[{i}]"
        if ing.ip:
            errs.invalid_all(f"{p}.ip", ing.ip, is_ip(ing.ip))
        if ing.ip_mode is None:
            if ing.ip:
                errs.required(f"{p}.ipMode", "must be specified when `ip` is set")
        elif not ing.ip:
            errs.forbidden(f"{p}.ipMode", "may not be specified when `ip` is not set")
        else:
            errs.one_of(f"{p}.ipMode", ing.ip_mode, LOAD_BALANCER_IP_MODES)
        if ing.hostname:
            errs.invalid_all(f"{p}.hostname", ing.hostname, is_dns1123_subdomain(ing.hostname))
            if not is_ip(ing.hostname):
                errs.invalid(f"{p}.hostname", ing.hostname, "must be a DNS name, not an IP address")


def validate_service(errs: FieldErrors, svc: Service) -> None:
    validate_object_meta(errs, svc.metadata, namespaced=True, name_check=is_dns1035_label)
    spec = svc.spec or _empty_spec()
    ips = _cluster_ips(spec)
    headless = ips == [NONE]
    if spec.type == "ExternalName" or spec.external_name:
        if spec.type == "ExternalName":
            errs.invalid("spec.type", spec.type, "shoal does not serve ExternalName Services (its cluster DNS "
                                                 "answers no CNAME records); use ClusterIP, NodePort or "
                                                 "LoadBalancer")
        if spec.external_name:
            errs.forbidden("spec.externalName", "ExternalName Services are not supported by shoal")
    elif not spec.type:
        errs.required("spec.type")
    elif spec.type not in SERVICE_TYPES:
        errs.not_supported("spec.type", spec.type, SERVICE_TYPES)
    if not spec.ports and not headless:
        errs.required("spec.ports")
    if spec.type in ("LoadBalancer", "NodePort") and headless:
        errs.invalid("spec.clusterIPs[0]", NONE, f"may not be set to 'None' for {spec.type} services")
    names: set[str] = set()
    for i, p in enumerate(spec.ports or []):
        _service_port(errs, p, f"spec.ports[{i}]", require_name=len(spec.ports or []) > 1, names=names)
    if spec.selector is not None:
        validate_labels(errs, spec.selector, "spec.selector")
    if not spec.session_affinity:
        errs.required("spec.sessionAffinity")
    elif spec.session_affinity not in SESSION_AFFINITIES:
        errs.not_supported("spec.sessionAffinity", spec.session_affinity, SESSION_AFFINITIES)
    elif spec.session_affinity == "ClientIP":
        cfg, cp = spec.session_affinity_config, "spec.sessionAffinityConfig"
        why = "when session affinity type is ClientIP"
        if cfg is None:
            errs.required(cp, why)
        elif cfg.client_ip is None:
            errs.required(f"{cp}.clientIP", why)
        elif cfg.client_ip.timeout_seconds is None:
            errs.required(f"{cp}.clientIP.timeoutSeconds", why)
        elif not 0 < cfg.client_ip.timeout_seconds <= MAX_CLIENT_IP_TIMEOUT:
            errs.invalid(f"{cp}.clientIP.timeoutSeconds", cfg.client_ip.timeout_seconds,
                         f"must be greater than 0 and less than {MAX_CLIENT_IP_TIMEOUT}")
    elif spec.session_affinity_config is not None:
        errs.forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None")
    _cluster_ip_fields(errs, spec)
    if spec.type == "ClusterIP":
        for i, p in enumerate(spec.ports or []):
            if p.node_port:
                errs.forbidden(f"spec.ports[{i}].nodePort", "may not be used when `type` is 'ClusterIP'")
    node_ports: set[tuple[Optional[str], int]] = set()
    ports: set[tuple[Optional[str], Optional[int]]] = set()
    for i, p in enumerate(spec.ports or []):
        if p.node_port:
            if (p.protocol, p.node_port) in node_ports:
                errs.duplicate(f"spec.ports[{i}].nodePort", p.node_port)
            node_ports.add((p.protocol, p.node_port))
        if (p.protocol, p.port) in ports:
            errs.duplicate(f"spec.ports[{i}]", {"port": p.port, "protocol": p.protocol})
        ports.add((p.protocol, p.port))
    if spec.allocate_load_balancer_node_ports is not None and spec.type != "LoadBalancer":
        errs.forbidden("spec.allocateLoadBalancerNodePorts", "may only be used when `type` is 'LoadBalancer'")
    if spec.type == "LoadBalancer" and spec.allocate_load_balancer_node_ports is None:
        errs.required("spec.allocateLoadBalancerNodePorts")
    for i, ip in enumerate(spec.external_ips or []):
        problems = is_ip(ip)
        errs.invalid_all(f"spec.externalIPs[{i}]", ip, problems)
        if not problems:
            _special_ip(errs, f"spec.externalIPs[{i}]", ip)
    if externally_accessible(spec):
        errs.one_of("spec.externalTrafficPolicy", spec.external_traffic_policy, TRAFFIC_POLICIES, required=True)
    elif spec.external_traffic_policy:
        errs.invalid("spec.externalTrafficPolicy", spec.external_traffic_policy,
                     "may only be set for externally-accessible services")
    # Set by the API server when needed (apiserver.allocation) after these rules run: only a
    # value the client asked for is checked here.
    if spec.health_check_node_port:
        if not needs_health_check(spec):
            errs.invalid("spec.healthCheckNodePort", spec.health_check_node_port,
                         "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")
        else:
            _port_number(errs, "spec.healthCheckNodePort", spec.health_check_node_port)
    if spec.internal_traffic_policy is not None or spec.type in SERVED_TYPES:
        errs.one_of("spec.internalTrafficPolicy", spec.internal_traffic_policy, TRAFFIC_POLICIES, required=True)
    _load_balancer_status(errs, svc)


def validate_service_update(errs: FieldErrors, new: Service, old: Service) -> None:
    """validateUpgradeDowngradeClusterIPs and ...IPFamilies for one family: the cluster IP and
    the family never change once set (a headless Service stays headless)."""
    ns, os_ = new.spec or _empty_spec(), old.spec or _empty_spec()
    if needs_health_check(os_) and needs_health_check(ns) and os_.health_check_node_port \
            and ns.health_check_node_port != os_.health_check_node_port:
        errs.forbidden("spec.healthCheckNodePort", "field is immutable")
    if "ExternalName" in (ns.type, os_.type):
        return
    new_ips, old_ips = _cluster_ips(ns), _cluster_ips(os_)
    if not (old_ips == [NONE] and new_ips == [NONE]):
        if len(old_ips) == len(new_ips):
            for i, ip in enumerate(old_ips):
                if new_ips[i] != ip:
                    errs.invalid(f"spec.clusterIPs[{i}]", new_ips, "may not change once set")
        elif len(old_ips) > len(new_ips):
            if not new_ips:
                errs.invalid("spec.clusterIPs[0]", new_ips, "primary clusterIP can not be unset")
            elif new_ips[0] != old_ips[0]:
                errs.invalid("spec.clusterIPs[0]", new_ips, "may not change once set")
            if len(new_ips) == 1 and ns.ip_family_policy != "SingleStack":
                errs.invalid("spec.ipFamilyPolicy", ns.ip_family_policy,
                             "must be set to 'SingleStack' when releasing the secondary clusterIP")
        elif old_ips and new_ips[0] != old_ips[0]:
            errs.invalid("spec.clusterIPs[0]", new_ips, "may not change once set")
    if (old_ips == [NONE]) != (new_ips == [NONE]) or new_ips == [NONE]:
        return
    new_fam, old_fam = list(ns.ip_families or []), list(os_.ip_families or [])
    if len(old_fam) == len(new_fam):
        if new_fam != old_fam:
            errs.invalid("spec.ipFamilies[0]", new_fam, "may not change once set")
    elif len(old_fam) > len(new_fam):
        if new_fam and new_fam[0] != old_fam[0]:
            errs.invalid("spec.ipFamilies[0]", new_fam, "may not change once set")
        if len(new_fam) == 1 and ns.ip_family_policy != "SingleStack":
            errs.invalid("spec.ipFamilyPolicy", ns.ip_family_policy,
                         "must be set to 'SingleStack' when releasing the secondary ipFamily")
    elif old_fam and new_fam and new_fam[0] != old_fam[0]:
        errs.invalid("spec.ipFamilies[0]", new_fam, "may not change once set")


# --- Endpoints ---------------------------------------------------------------------------------



def validate_endpoints(errs: FieldErrors, ep: Endpoints) -> None:
    validate_object_meta(errs, ep.metadata, namespaced=True)
    for i, ss in enumerate(ep.subsets or []):
        p = f"subsets[{i}]"
        if not ss.addresses and not ss.not_ready_addresses:
            errs.required(p, "must specify `addresses` or `notReadyAddresses`")
        for field, addrs in (("addresses", ss.addresses), ("notReadyAddresses", ss.not_ready_addresses)):
            for j, a in enumerate(addrs or []):
                ap = f"{p}.{field}[{j}]"
                problems = is_ip(a.ip or "")
                errs.invalid_all(f"{ap}.ip", a.ip or "", problems)
                if not problems:
                    _special_ip(errs, f"{ap}.ip", a.ip or "")
                if a.hostname:
                    errs.invalid_all(f"{ap}.hostname", a.hostname, is_dns1123_label(a.hostname))
                if a.node_name is not None:
                    errs.invalid_all(f"{ap}.nodeName", a.node_name, is_dns1123_subdomain(a.node_name))
        for j, port in enumerate(ss.ports or []):
            pp = f"{p}.ports[{j}]"
            if len(ss.ports or []) > 1 and not port.name:
                errs.required(f"{pp}.name")
            elif port.name:
                errs.invalid_all(f"{pp}.name", port.name, is_dns1123_label(port.name))
            _port_number(errs, f"{pp}.port", port.port)
            errs.one_of(f"{pp}.protocol", port.protocol, PROTOCOLS, required=True)
            if port.app_protocol is not None:
                errs.invalid_all(f"{pp}.appProtocol", port.app_protocol, is_qualified_name(port.app_protocol))


def default_endpoints(ep: Endpoints) -> None:
    for ss in ep.subsets or []:
        for port in ss.ports or []:
            if not port.protocol:
                port.protocol = "TCP"


# --- EndpointSlice -----------------------------------------------------------------------------

def default_endpointslice(es: EndpointSlice) -> None:
    """SetDefaults_EndpointPort: a port's name defaults to "" and its protocol to TCP."""
    for port in es.ports or []:
        if port.name is None:
            port.name = ""
        if port.protocol is None:
            port.protocol = "TCP"


def validate_endpointslice(errs: FieldErrors, es: EndpointSlice) -> None:
    validate_object_meta(errs, es.metadata, namespaced=True)
    errs.one_of("addressType", es.address_type, ADDRESS_TYPES, required=True)
    endpoints = es.endpoints or []
    if len(endpoints) > MAX_SLICE_ENDPOINTS:
        _too_many(errs, "endpoints", len(endpoints), MAX_SLICE_ENDPOINTS)
    else:
        for i, ep in enumerate(endpoints):
            p = f"endpoints[{i}]"
            addrs = ep.addresses or []
            if not addrs:
                errs.required(f"{p}.addresses", "must contain at least 1 address")
            elif len(addrs) > MAX_SLICE_ADDRESSES:
                _too_many(errs, f"{p}.addresses", len(addrs), MAX_SLICE_ADDRESSES)
            for j, a in enumerate(addrs):
                ap = f"{p}.addresses[{j}]"
                if es.address_type in ("IPv4", "IPv6"):
                    fam = _family(a)
                    if fam != es.address_type:
                        errs.invalid(ap, a, f"must be a valid {es.address_type} address")
                    else:
                        _special_ip(errs, ap, a)
                elif es.address_type == "FQDN":
                    errs.invalid_all(ap, a, is_dns1123_subdomain(a))
            if ep.node_name is not None:
                errs.invalid_all(f"{p}.nodeName", ep.node_name, is_dns1123_subdomain(ep.node_name))
            if ep.hostname is not None:
                errs.invalid_all(f"{p}.hostname", ep.hostname, is_dns1123_label(ep.hostname))
    ports = es.ports or []
    if len(ports) > MAX_SLICE_PORTS:
        _too_many(errs, "ports", len(ports), MAX_SLICE_PORTS)
        return
    names: set[str] = set()
    for i, port in enumerate(ports):
        p = f"ports[{i}]"
        name = port.name or ""
        if name:
            errs.invalid_all(f"{p}.name", name, is_dns1123_label(name))
        if name in names:
            errs.duplicate(f"{p}.name", name)
        names.add(name)
        errs.one_of(f"{p}.protocol", port.protocol, PROTOCOLS, required=True)
        if port.port is not None and not 0 <= port.port <= 65535:
            errs.invalid(f"{p}.port", port.port, "must be between 0 and 65535, inclusive")
        if port.app_protocol is not None:
            errs.invalid_all(f"{p}.appProtocol", port.app_protocol, is_qualified_name(port.app_protocol))


def validate_endpointslice_update(errs: FieldErrors, new: EndpointSlice, old: EndpointSlice) -> None:
    if new.address_type != old.address_type:
        errs.invalid("addressType", new.address_type, "field is immutable")


# --- the tables models/__init__.py registers -------------------------------------------------------

DEFAULTERS: dict[str, Callable[[Any], None]] = {
    "Service": default_service, "Endpoints": default_endpoints, "EndpointSlice": default_endpointslice}
VALIDATORS: dict[str, Callable[[FieldErrors, Any], None]] = {
    "Service": validate_service, "Endpoints": validate_endpoints, "EndpointSlice": validate_endpointslice}
# (new, old or None) before validation, on create and update of the main resource.
PREPARERS: dict[str, Callable[[Any, Any], None]] = {"Service": prepare_service}
# (errs, new, old) besides `validation.validate_update`'s common checks.
UPDATE_VALIDATORS: dict[str, Callable[[FieldErrors, Any, Any], None]] = {
    "Service": validate_service_update, "EndpointSlice": validate_endpointslice_update}

__all__ = ["DEFAULTERS", "VALIDATORS", "PREPARERS", "UPDATE_VALIDATORS", "is_dns1035_label"]
