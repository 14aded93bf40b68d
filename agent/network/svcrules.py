"""Service rules: the pure planner of the service proxy's nftables table.

Contract: `plan_ruleset(services, endpointslices, node_name=..., ...)` takes Services
(core/v1) and EndpointSlices (discovery.k8s.io/v1) as Kubernetes' JSON dicts and returns a
`Plan`: the complete `nft -f` script for table `ip shoal-svc` (one transaction: the node
converges to exactly this state or nothing changes), the structured `Ruleset` it was
rendered from, and the `Problem`s it skipped (a port claimed twice, a reserved port, an
address that is not IPv4). `agent.serviceproxy` is its executor; docs/services.md ("Data
path") has the packet walk.

Design (kube-proxy's nftables mode, written afresh for shoal):

* One table, dispatch by verdict maps. `nat-prerouting` (pods, other hosts) and
  `nat-output` (the host itself) jump to `services`, which looks the packet up in two
  maps: `service-ips` keyed `ip daddr . meta l4proto . th dport` (ClusterIPs, externalIPs,
  LoadBalancer ingress IPs) and `service-nodeports` keyed `meta l4proto . th dport`, used
  only for packets to one of this node's own addresses (`fib daddr type local`), never
  127.0.0.0/8 (NodePorts and the ports ServiceLB publishes; see "Loopback" below). The
  lookup costs the same for 1 or 10,000 Services.
* Per service port (`<ns>/<name>/<proto>/<port name>`, behind an 8-character hash that
  keeps names unique): `service-…` balances over the cluster-wide endpoints with
  `numgen random mod N vmap {0: goto endpoint-…, …}`; `local-…` over this node's endpoints
  (internal/externalTrafficPolicy Local); `external-…` is where NodePort, externalIP and
  LoadBalancer traffic enters: it marks the packet for masquerade (policy Cluster: the
  reply must come back through this node) and goes on to `service-…`; with policy Local
  it keeps the client's address and goes to `local-…`, except for this node's pods and the
  host itself, which are sent the cluster-wide way (kube-proxy's short-circuit).
  `endpoint-…__IP/PORT` DNATs to one endpoint.
* Endpoints: those with `ready` (nil counts as true, as Kubernetes reads it); when none is
  ready, those both `serving` and `terminating` (a rollout's last pods keep answering);
  never the others. `addresses[0]` of IPv4 slices only; slices belong to their Service by
  the `kubernetes.io/service-name` label; a port is matched by name and protocol.
* Masquerade: `mark-for-masquerade` sets a mark bit, `masquerading` (postrouting) clears
  it and masquerades. Marked: traffic to a ClusterIP whose source is no pod
  (`ip saddr != @pod-cidrs`: the host, another machine), so the reply returns through this
  node's conntrack rather than straight from the endpoint's node; external traffic
  (policy Cluster); and every connection to an endpoint on this node's bridge from a pod
  of this node — hairpin (a pod reaching itself through its Service) included. The last
  one because shoal does not need br_netfilter: the endpoint would answer a pod on its
  own bridge over L2, bypassing the DNAT it must undo.
* No endpoints: the Service's addresses and ports are in `no-endpoint-services` /
  `no-endpoint-nodeports`, which the filter chains (input, forward, output; new
  connections only) send to `reject-chain` — the client gets ICMP port unreachable, a
  refused connection, at once. A policy-Local port with endpoints elsewhere only is
  `drop`ped instead (kube-proxy's choice: an external load balancer's health check
  decides, and a drop is what it expects). A ClusterIP port no Service defines is rejected
  too (`cluster-ips`), rather than leaking to the default route.
* `sessionAffinity: ClientIP`: each endpoint has a set `affinity-…` (type ipv4_addr,
  flags dynamic,timeout; the Service's `timeoutSeconds`, 10800 by default) that its chain
  fills with `update @set { ip saddr }`; the service chain first sends a client found in
  one of those sets to that endpoint, then balances the rest.
* Loopback: a NodePort or ServiceLB port is never answered on 127.0.0.0/8 (kube-proxy's
  nftables mode does the same): DNAT of a loopback-sourced packet to a pod needs
  `route_localnet=1`, which shoal keeps off (issue 17: pods reaching the host's localhost
  services). Use the node's address.
* LoadBalancer, as k3s' ServiceLB: the Service's `port` is published on every node's
  addresses (in `service-nodeports` beside the NodePorts) and its
  `status.loadBalancer.ingress[].ip`s are in `service-ips`. A port a shoal component
  listens on (`reserved_ports`: the API server's, the agent's) is never taken, nor is a
  port another Service already claimed: the first claimant by creation time keeps it, the
  other is reported.

Atomic replacement of the whole state: the script is one `nft -f` transaction. With the
table's current chains and sets known (`existing`, from `parse_existing` of
`nft -t -j list table`), it adds what is missing, flushes every chain and map, refills
them, and deletes what is no longer wanted — everything but the affinity sets' contents is
rewritten, so whatever the table held before, it ends as planned, and the clients' session
affinity survives a resync. Without `existing` (unknown, or after a failed transaction)
it deletes and recreates the table, still in one transaction: atomic, only the affinity
memory is lost.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

TABLE = "shoal-svc"
MASQ_MARK = 0x4000
DEFAULT_AFFINITY_TIMEOUT = 10800      # seconds, Kubernetes' sessionAffinityConfig default
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
LOOPBACK = "127.0.0.0/8"
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}

# base chains: name -> hook spec
HOOKS: dict[str, str] = {
    "nat-prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    # -100 is dstnat's value; nft 1.0.6 rejects the name on the output hook
    "nat-output": "type nat hook output priority -100; policy accept;",
    "nat-postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    # after DNAT (so a translated packet is no longer addressed to a Service), before
    # the usual filter tables
    "filter-input": "type filter hook input priority -10; policy accept;",
    "filter-forward": "type filter hook forward priority -10; policy accept;",
    "filter-output": "type filter hook output priority -10; policy accept;",
}


def svc_table_for(bridge: str) -> str:
    """`shoal-svc` for the default bridge, else `shoal-svc-<bridge>` (two agents on one host,
    each with its own bridge, keep their own tables)."""
    if bridge == "shoal0":
        return TABLE
    return TABLE + "-" + re.sub(r"[^A-Za-z0-9_]", "_", bridge)


# ---------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Problem:
    subject: str        # "service default/web", "endpointslice default/web-abc"
    message: str


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str | None
    ready: bool
    serving: bool
    terminating: bool


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, with everything the rules need."""
    namespace: str
    name: str
    port_name: str
    protocol: str                       # nft's name: tcp, udp, sctp
    port: int
    cluster_ip: str | None
    node_port: int | None
    external_ips: tuple[str, ...]       # spec.externalIPs, then status.loadBalancer.ingress[].ip
    publish_on_nodes: bool              # type LoadBalancer: `port` on every node address (ServiceLB)
    internal_local: bool
    external_local: bool
    affinity_timeout: int | None        # sessionAffinity ClientIP
    endpoints: tuple[Endpoint, ...]
    order: tuple = ()                   # who claims a contested port first

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}/{self.protocol}/{self.port_name}"

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port_name or self.port}"


def _ipv4(value) -> str | None:
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError, TypeError):
        return None


def _cond(conds: Mapping, name: str, default: bool) -> bool:
    v = conds.get(name)
    return default if v is None else bool(v)


def slice_endpoints(slc: Mapping, port_name: str, protocol: str) -> list[Endpoint]:
    """The endpoints of one EndpointSlice for the service port named `port_name` (nft
    protocol name), with Kubernetes' reading of the conditions: `ready` nil is true,
    `serving` nil is `ready`, `terminating` nil is false."""
    if slc.get("addressType", "IPv4") != "IPv4":
        return []
    target = None
    for p in slc.get("ports") or []:
        if (p.get("name") or "") == port_name and PROTOCOLS.get(p.get("protocol") or "TCP") == protocol:
            target = p.get("port")
            break
    if not isinstance(target, int) or not 1 <= target <= 65535:
        return []
    out = []
    for ep in slc.get("endpoints") or []:
        addrs = ep.get("addresses") or []
        ip = _ipv4(addrs[0]) if addrs else None     # kube-proxy uses the first address only
        if ip is None:
            continue
        conds = ep.get("conditions") or {}
        ready = _cond(conds, "ready", True)
        out.append(Endpoint(ip=ip, port=target, node=ep.get("nodeName"), ready=ready,
                            serving=_cond(conds, "serving", ready), terminating=_cond(conds, "terminating", False)))
    return out


def service_ports(services: Iterable[Mapping], endpointslices: Iterable[Mapping]) -> tuple[list[ServicePort], list[Problem]]:
    """Every proxied port of `services` with its endpoints from `endpointslices`. Headless
    Services, ExternalName Services and Services without an IPv4 ClusterIP yet have none."""
    by_service: dict[tuple[str, str], list[Mapping]] = {}
    for slc in endpointslices:
        md = slc.get("metadata") or {}
        svc = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if svc:
            by_service.setdefault((md.get("namespace") or "default", svc), []).append(slc)
    out: list[ServicePort] = []
    problems: list[Problem] = []
    for svc in services:
        md = svc.get("metadata") or {}
        spec = svc.get("spec") or {}
        ns, name = md.get("namespace") or "default", md.get("name") or ""
        subject = f"service {ns}/{name}"
        typ = spec.get("type") or "ClusterIP"
        if typ == "ExternalName":
            continue
        raw_ips = [spec.get("clusterIP")] + list(spec.get("clusterIPs") or [])
        if "None" in raw_ips:
            continue                      # headless: DNS answers with the pods, no proxying
        cluster_ip = next((ip for ip in map(_ipv4, raw_ips) if ip), None)
        if cluster_ip is None:
            if any(raw_ips):
                problems.append(Problem(subject, f"clusterIP {spec.get('clusterIP')!r}: only IPv4 Services are proxied"))
            continue                      # not allocated yet
        external: list[str] = []
        for value in spec.get("externalIPs") or []:
            ip = _ipv4(value)
            if ip is None:
                problems.append(Problem(subject, f"externalIPs: {value!r} is not an IPv4 address"))
            else:
                external.append(ip)
        if typ == "LoadBalancer":
            for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
                if ing.get("ip"):
                    ip = _ipv4(ing["ip"])
                    if ip is None:
                        problems.append(Problem(subject, f"status.loadBalancer.ingress: {ing['ip']!r} is not an IPv4 address"))
                    elif ipaddress.IPv4Address(ip).is_loopback:
                        problems.append(Problem(subject, f"status.loadBalancer.ingress: {ip} is a loopback address; "
                                                         "the host's loopback is never published"))
                    else:
                        external.append(ip)
        timeout = None
        if spec.get("sessionAffinity") == "ClientIP":
            cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
            timeout = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
        slices = sorted(by_service.get((ns, name), []), key=lambda s: (s.get("metadata") or {}).get("name") or "")
        order = ((md.get("creationTimestamp") or ""), ns, name)
        for i, p in enumerate(spec.get("ports") or []):
            proto = PROTOCOLS.get(p.get("protocol") or "TCP")
            port = p.get("port")
            pname = p.get("name") or ""
            if proto is None:
                problems.append(Problem(subject, f"spec.ports[{i}].protocol {p.get('protocol')!r}: "
                                                 "only TCP, UDP and SCTP are proxied"))
                continue
            if not isinstance(port, int) or not 1 <= port <= 65535:
                problems.append(Problem(subject, f"spec.ports[{i}].port {port!r} is outside 1-65535"))
                continue
            eps: dict[tuple[str, int], Endpoint] = {}
            for slc in slices:
                for ep in slice_endpoints(slc, pname, proto):
                    have = eps.get((ep.ip, ep.port))
                    # the same address in two slices (a controller moving it): the readier wins
                    if have is None or (ep.ready, ep.serving) > (have.ready, have.serving):
                        eps[(ep.ip, ep.port)] = ep
            node_port = p.get("nodePort") if typ in ("NodePort", "LoadBalancer") else None
            out.append(ServicePort(
                namespace=ns, name=name, port_name=pname, protocol=proto, port=port, cluster_ip=cluster_ip,
                node_port=node_port if isinstance(node_port, int) and node_port > 0 else None,
                external_ips=tuple(dict.fromkeys(external)), publish_on_nodes=typ == "LoadBalancer",
                internal_local=spec.get("internalTrafficPolicy") == "Local",
                external_local=spec.get("externalTrafficPolicy") == "Local",
                affinity_timeout=timeout,
                endpoints=tuple(sorted(eps.values(), key=lambda e: (ipaddress.IPv4Address(e.ip), e.port))),
                order=order + (i,)))
    return out, problems


def usable(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """Kubernetes' choice of endpoints to send new connections to: the ready ones; when
    there are none, those still serving while terminating."""
    eps = list(endpoints)
    ready = [e for e in eps if e.ready]
    return ready or [e for e in eps if e.serving and e.terminating]


# ---------------------------------------------------------------------------- the ruleset
@dataclass
class NftSet:
    kind: str                   # "set" or "map"
    spec: str                   # "type ...; flags ...;"
    elements: list[str] = field(default_factory=list)
    dynamic: bool = False       # filled by the packet path (affinity): never flushed by a resync


@dataclass
class Ruleset:
    table: str
    chains: dict[str, list[str]] = field(default_factory=dict)     # render order = insertion order
    sets: dict[str, NftSet] = field(default_factory=dict)

    def chain(self, name: str) -> list[str]:
        return self.chains.setdefault(name, [])

    def names(self) -> "Existing":
        return Existing(chains=frozenset(self.chains),
                        sets=frozenset(n for n, s in self.sets.items() if s.kind == "set"),
                        maps=frozenset(n for n, s in self.sets.items() if s.kind == "map"))


@dataclass(frozen=True)
class Existing:
    """The names a table holds now (from `parse_existing`), or holds after a `Ruleset` is applied."""
    chains: frozenset[str] = frozenset()
    sets: frozenset[str] = frozenset()
    maps: frozenset[str] = frozenset()


def parse_existing(listing: str, table: str = TABLE) -> Existing:
    """The chains, sets and maps of `table` in the output of `nft -t -j list table ip TABLE`
    (terse: set elements left out)."""
    chains: set[str] = set()
    sets: set[str] = set()
    maps: set[str] = set()
    for item in json.loads(listing).get("nftables") or []:
        for kind, bucket in (("chain", chains), ("set", sets), ("map", maps)):
            obj = item.get(kind)
            if obj and obj.get("table") == table and obj.get("family") == "ip":
                bucket.add(obj["name"])
    return Existing(frozenset(chains), frozenset(sets), frozenset(maps))


def _hash(*parts: object) -> str:
    return base64.b32encode(hashlib.sha256("/".join(map(str, parts)).encode()).digest())[:8].decode()


def chain_names(sp: ServicePort) -> dict[str, str]:
    base = f"{_hash(sp.key)}-{sp.key}"
    return {"service": f"service-{base}", "local": f"local-{base}", "external": f"external-{base}"}


def endpoint_chain(sp: ServicePort, ep: Endpoint) -> str:
    return f"endpoint-{_hash(sp.key, ep.ip, ep.port)}-{sp.key}__{ep.ip}/{ep.port}"


def affinity_set(sp: ServicePort, ep: Endpoint) -> str:
    # the timeout is part of the hash: a changed timeout makes a new set, never a
    # redefinition of a live one (which nft refuses)
    return f"affinity-{_hash(sp.key, ep.ip, ep.port, sp.affinity_timeout)}-{sp.key}__{ep.ip}/{ep.port}"


def _balance(rs: Ruleset, sp: ServicePort, chain: str, eps: list[Endpoint]) -> None:
    rules = rs.chain(chain)
    targets = [endpoint_chain(sp, e) for e in eps]
    if sp.affinity_timeout is not None:
        for e, t in zip(eps, targets):
            rules.append(f"ip saddr @{affinity_set(sp, e)} goto {t}")
    if len(targets) == 1:
        rules.append(f"goto {targets[0]}")
    else:
        vmap = ", ".join(f"{i} : goto {t}" for i, t in enumerate(targets))
        rules.append(f"numgen random mod {len(targets)} vmap {{ {vmap} }}")


def _endpoint(rs: Ruleset, sp: ServicePort, ep: Endpoint, own_net: ipaddress.IPv4Network | None) -> None:
    name = endpoint_chain(sp, ep)
    if name in rs.chains:
        return
    rules = rs.chain(name)
    if own_net is not None and ipaddress.IPv4Address(ep.ip) in own_net:
        # a pod of this bridge (hairpin included) would get the reply over L2, un-DNATed
        rules.append(f"ip saddr {own_net} jump mark-for-masquerade")
    else:
        rules.append(f"ip saddr {ep.ip} jump mark-for-masquerade")       # hairpin
    if sp.affinity_timeout is not None:
        aff = affinity_set(sp, ep)
        rs.sets[aff] = NftSet("set", f"type ipv4_addr; flags dynamic,timeout; timeout {sp.affinity_timeout}s;",
                              dynamic=True)
        rules.append(f"update @{aff} {{ ip saddr }}")
    rules.append(f"meta l4proto {sp.protocol} dnat to {ep.ip}:{ep.port}")


def _base(rs: Ruleset, mark: int) -> None:
    m = f"0x{mark:x}"
    rs.sets["cluster-ips"] = NftSet("set", "type ipv4_addr;")
    rs.sets["pod-cidrs"] = NftSet("set", "type ipv4_addr; flags interval;")
    rs.sets["service-ips"] = NftSet("map", "type ipv4_addr . inet_proto . inet_service : verdict;")
    rs.sets["service-nodeports"] = NftSet("map", "type inet_proto . inet_service : verdict;")
    rs.sets["no-endpoint-services"] = NftSet("map", "type ipv4_addr . inet_proto . inet_service : verdict;")
    rs.sets["no-endpoint-nodeports"] = NftSet("map", "type inet_proto . inet_service : verdict;")
    rs.chain("nat-prerouting").append("jump services")
    rs.chain("nat-output").append("jump services")
    rs.chain("nat-postrouting").append("jump masquerading")
    rs.chain("filter-input").append("ct state new jump endpoints-check")
    for hook in ("filter-forward", "filter-output"):
        rs.chain(hook).extend(["ct state new jump endpoints-check", "ct state new jump cluster-ips-check"])
    local = f"ip daddr != {LOOPBACK} fib daddr type local"
    rs.chain("services").extend([
        # the host (or another machine) reaching a ClusterIP: the reply must come back here
        "ip daddr @cluster-ips ip saddr != @pod-cidrs jump mark-for-masquerade",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        f"{local} meta l4proto . th dport vmap @service-nodeports",
    ])
    rs.chain("endpoints-check").extend([
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
        f"{local} meta l4proto . th dport vmap @no-endpoint-nodeports",
    ])
    rs.chain("cluster-ips-check").append('ip daddr @cluster-ips reject comment "a port no Service defines"')
    rs.chain("mark-for-masquerade").append(f"meta mark set meta mark | {m}")
    rs.chain("masquerading").extend([
        f"meta mark & {m} == 0 return",
        f"meta mark set meta mark ^ {m}",
        "masquerade fully-random",
    ])
    rs.chain("reject-chain").append("reject")


def build_ruleset(ports: Iterable[ServicePort], *, node_name: str, node_pod_cidr: str | None,
                  pod_cidrs: Iterable[str] = (), reserved_ports: Mapping[int, str] | None = None,
                  table: str = TABLE, mark: int = MASQ_MARK) -> tuple[Ruleset, list[Problem]]:
    """The table for `ports` on node `node_name`, whose pods live in `node_pod_cidr`
    (None: not assigned yet); `pod_cidrs` are every node's (a source in them is a pod)."""
    rs = Ruleset(table)
    for name in HOOKS:
        rs.chain(name)
    _base(rs, mark)
    problems: list[Problem] = []
    own_net = ipaddress.IPv4Network(node_pod_cidr) if node_pod_cidr else None
    nets = []
    for c in list(pod_cidrs) + ([node_pod_cidr] if node_pod_cidr else []):
        try:
            nets.append(ipaddress.IPv4Network(c, strict=False))
        except ValueError:
            problems.append(Problem("nodes", f"pod CIDR {c!r} is not an IPv4 network"))
    # overlapping intervals are an error in an interval set
    rs.sets["pod-cidrs"].elements = [str(n) for n in ipaddress.collapse_addresses(nets)]
    reserved = reserved_ports or {}
    ip_claims: dict[tuple[str, str, int], str] = {}
    port_claims: dict[tuple[str, int], str] = {}
    service_ips: dict[tuple[str, str, int], str] = {}
    nodeports: dict[tuple[str, int], str] = {}
    no_ep_ips: dict[tuple[str, str, int], str] = {}
    no_ep_ports: dict[tuple[str, int], str] = {}
    cluster_ips: set[str] = set()
    ordered = sorted(ports, key=lambda sp: sp.order or (sp.namespace, sp.name))
    # ClusterIPs first: they are allocated uniquely, so a clash with one is the other's fault
    for sp in ordered:
        if sp.cluster_ip:
            cluster_ips.add(sp.cluster_ip)
    for sp in ordered:
        subject = f"service {sp.namespace}/{sp.name}"
        names = chain_names(sp)
        cluster = usable(sp.endpoints)
        local = usable(e for e in sp.endpoints if _is_local(e, node_name, own_net))
        has_endpoints = bool(cluster)
        # the addresses and ports this service port answers on
        ip_keys: list[tuple[str, str, int]] = []
        internal_key = (sp.cluster_ip, sp.protocol, sp.port) if sp.cluster_ip else None
        if internal_key:
            owner = ip_claims.setdefault(internal_key, sp.label)
            if owner != sp.label:
                problems.append(Problem(subject, f"{sp.cluster_ip}:{sp.port}/{sp.protocol.upper()} is already "
                                                 f"served for {owner}"))
                internal_key = None
        for ip in sp.external_ips:
            k = (ip, sp.protocol, sp.port)
            if ip in cluster_ips:
                problems.append(Problem(subject, f"external address {ip} is a ClusterIP"))
                continue
            owner = ip_claims.setdefault(k, sp.label)
            if owner != sp.label:
                problems.append(Problem(subject, f"{ip}:{sp.port}/{sp.protocol.upper()} is already served for {owner}"))
                continue
            ip_keys.append(k)
        port_keys: list[tuple[str, int]] = []
        local_ports = ([("nodePort", sp.node_port)] if sp.node_port else []) + \
                      ([("port", sp.port)] if sp.publish_on_nodes else [])
        for what, port in local_ports:
            pk = (sp.protocol, port)
            if port in reserved:
                problems.append(Problem(subject, f"{what} {port} of {sp.label} is reserved for {reserved[port]} "
                                                 "on this node: not published here"))
                continue
            owner = port_claims.setdefault(pk, sp.label)
            if owner != sp.label:
                problems.append(Problem(subject, f"{what} {port}/{sp.protocol.upper()} of {sp.label} is already "
                                                 f"published for {owner}"))
                continue
            if pk not in port_keys:
                port_keys.append(pk)
        external = bool(ip_keys or port_keys)

        if not has_endpoints:
            for k in ([internal_key] if internal_key else []) + ip_keys:
                no_ep_ips[k] = "goto reject-chain"
            for pk in port_keys:
                no_ep_ports[pk] = "goto reject-chain"
            continue

        # external traffic needs the cluster-wide chain under either policy (Local sends this
        # node's pods and the host there)
        if (internal_key and not sp.internal_local) or external:
            _balance(rs, sp, names["service"], cluster)
            for e in cluster:
                _endpoint(rs, sp, e, own_net)
        if local and ((internal_key and sp.internal_local) or (external and sp.external_local)):
            _balance(rs, sp, names["local"], local)
            for e in local:
                _endpoint(rs, sp, e, own_net)
        if internal_key:
            if not sp.internal_local:
                service_ips[internal_key] = f"goto {names['service']}"
            elif local:
                service_ips[internal_key] = f"goto {names['local']}"
            else:
                no_ep_ips[internal_key] = "drop"         # Local, and none of the endpoints is here
        if external:
            rules = rs.chain(names["external"])
            if not sp.external_local:
                rules.extend(["jump mark-for-masquerade", f"goto {names['service']}"])
            else:
                if own_net is not None:
                    rules.append(f"ip saddr {own_net} goto {names['service']}")    # this node's pods
                rules.extend(["fib saddr type local jump mark-for-masquerade",    # the host itself
                              f"fib saddr type local goto {names['service']}"])
                rules.append(f"goto {names['local']}" if local else "drop")
            for k in ip_keys:
                service_ips[k] = f"goto {names['external']}"
            for pk in port_keys:
                nodeports[pk] = f"goto {names['external']}"

    rs.sets["cluster-ips"].elements = sorted(cluster_ips, key=ipaddress.IPv4Address)
    rs.sets["service-ips"].elements = [f"{ip} . {pr} . {po} : {v}" for (ip, pr, po), v in
                                       sorted(service_ips.items(), key=_ip_key)]
    rs.sets["no-endpoint-services"].elements = [f"{ip} . {pr} . {po} : {v}" for (ip, pr, po), v in
                                                sorted(no_ep_ips.items(), key=_ip_key)]
    rs.sets["service-nodeports"].elements = [f"{pr} . {po} : {v}" for (pr, po), v in sorted(nodeports.items())]
    rs.sets["no-endpoint-nodeports"].elements = [f"{pr} . {po} : {v}" for (pr, po), v in sorted(no_ep_ports.items())]
    return rs, problems


def _ip_key(item):
    (ip, proto, port), _ = item
    return ipaddress.IPv4Address(ip), proto, port


def _is_local(ep: Endpoint, node_name: str, own_net: ipaddress.IPv4Network | None) -> bool:
    if ep.node:
        return ep.node == node_name
    return own_net is not None and ipaddress.IPv4Address(ep.ip) in own_net


# ---------------------------------------------------------------------------- rendering
def render(rs: Ruleset, existing: Existing | None) -> str:
    """The `nft -f` script that turns the table into `rs` in one transaction: converging
    from `existing` (add, flush, refill, delete the rest; affinity sets keep their
    contents), or, when None, deleting and recreating the table."""
    t = f"ip {rs.table}"
    lines = [f"add table {t}"]
    if existing is not None and any((rs.sets[n].kind == "map") != (n in existing.maps)
                                    for n in rs.sets if n in existing.sets | existing.maps):
        existing = None     # a set that must become a map (or back): only a new table can do that
    if existing is None:
        # "add" first makes the delete legal on a host without the table
        lines += [f"delete table {t}", f"add table {t}"]
        existing = Existing()
    for name in rs.chains:
        hook = HOOKS.get(name)
        lines.append(f"add chain {t} {name}" + (f" {{ {hook} }}" if hook else ""))
    for name, s in rs.sets.items():
        lines.append(f"add {s.kind} {t} {name} {{ {s.spec} }}")
    for name in sorted(existing.chains | set(rs.chains)):
        if name in existing.chains:
            lines.append(f"flush chain {t} {name}")
    for name in sorted(existing.sets | existing.maps):
        want = rs.sets.get(name)
        if want is not None and not want.dynamic:
            lines.append(f"flush {want.kind} {t} {name}")
    for name, rules in rs.chains.items():
        for r in rules:
            lines.append(f"add rule {t} {name} {r}")
    for name, s in rs.sets.items():
        if s.elements:
            lines.append(f"add element {t} {name} {{ {', '.join(s.elements)} }}")
    # stale objects last: every rule that could refer to them is gone by now
    for name in sorted(existing.chains - set(rs.chains)):
        lines.append(f"delete chain {t} {name}")
    for kind, names in (("set", existing.sets), ("map", existing.maps)):
        for name in sorted(names):
            want = rs.sets.get(name)
            if want is None or want.kind != kind:
                lines.append(f"delete {kind} {t} {name}")
    return "\n".join(lines) + "\n"


@dataclass
class Plan:
    script: str
    ruleset: Ruleset
    problems: list[Problem]
    service_ports: int
    endpoints: int


def plan_ruleset(services: Iterable[Mapping], endpointslices: Iterable[Mapping], *, node_name: str,
                 node_pod_cidr: str | None, pod_cidrs: Iterable[str] = (), existing: Existing | None = None,
                 reserved_ports: Mapping[int, str] | None = None, table: str = TABLE,
                 mark: int = MASQ_MARK) -> Plan:
    """The whole table for these Services and EndpointSlices, as one `nft -f` transaction
    (see the module docstring); `existing` as for `render`."""
    ports, problems = service_ports(services, endpointslices)
    rs, more = build_ruleset(ports, node_name=node_name, node_pod_cidr=node_pod_cidr, pod_cidrs=pod_cidrs,
                             reserved_ports=reserved_ports, table=table, mark=mark)
    return Plan(script=render(rs, existing), ruleset=rs, problems=problems + more, service_ports=len(ports),
                endpoints=sum(len(sp.endpoints) for sp in ports))


def delete_script(table: str = TABLE) -> str:
    """Remove the table whether or not it exists (one transaction)."""
    return f"add table ip {table}\ndelete table ip {table}\n"
