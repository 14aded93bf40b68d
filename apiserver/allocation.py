"""Cluster IPs and node ports: what the API server hands out to Services, never twice.

Design notes
------------
* **Where the truth is.** Kubernetes keeps a bitmap of each range in etcd beside the
  Services and writes it in a separate step (or, since 1.31, one IPAddress object per IP),
  so a crash between the two can leak or double a value, and a repair loop reconciles the
  bitmap with the Services every few minutes. shoal's store is a SQL database: the values
  in use are rows of an `allocations` table (pool, value → holder key) claimed, kept and
  released *in the transaction that writes the Service* (`Store.create/update` with
  `allocations=`, `Store.delete` with `release_allocations=`). A value is held exactly as
  long as its Service is stored — through crashes and restarts — and a write that would
  hold a value another Service holds rolls back whole. Nothing can drift, so there is no
  repair loop. The primary key (pool, value) is the database's guarantee under every
  writer, several API server processes included.
* **Level-based.** Each write of a Service states the whole set of values it holds after
  the write; the store releases the others and claims the new ones. Create, update, a type
  change (NodePort → ClusterIP releases the node ports) and delete are the same operation.
* **Choosing a free value** happens before the write, from a read of the pool: values are
  picked as Kubernetes picks them (a random scan; dynamic allocations prefer the upper part
  of the range and leave the lower *static band* — 16 to 256 addresses, 16 to 128 ports,
  Kubernetes' KEP-3070/3668 sizes — to values users choose, like the cluster DNS's
  10.43.0.10). Another writer may take the same value between the read and the write: the
  write then fails with `AllocationTaken` and is retried with a fresh read (`ATTEMPTS`). A
  value the user chose is never replaced: taken, it is a 422 as in Kubernetes (`provided IP
  is already allocated`, `provided port is already allocated`).
* **Dry run** goes through the same code: `apiserver.dryrun`'s store checks the values
  like the real write (422 for a taken one) and claims none, so a dry-run create answers
  the address a real create would get now and holds nothing.
* **The first address** of the service range (10.43.0.1) is reserved for the `kubernetes`
  Service Kubernetes creates in `default`; shoal does not create that Service (its pods
  carry no service-account token to talk to the API with), but keeps the address free for
  it: never handed out, refused when asked for. The network and broadcast addresses are
  outside the range, as in Kubernetes.

`plan_service` is the pure part (what the Service holds and which values to fill in, given
what others hold); `ServiceAllocator` is the thin executor the registry calls.

Next: `apiserver.registry` (`_store_create`, `_store_update`, `_remove`), `apiserver.store`.
"""
from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from shoal.machinery.api import errors
from shoal.machinery.api.errors import Cause
from shoal.machinery.api.models.field import render as _render
from shoal.machinery.api.services import (CLUSTER_IP_NONE, DEFAULT_NODE_PORT_RANGE, DEFAULT_SERVICE_CIDR,
                                          parse_node_port_range, parse_service_cidr)
from shoal.apiserver.store import Allocation, AllocationTaken, object_key

POOL_CLUSTER_IP = "clusterip"
POOL_NODE_PORT = "nodeport"
ATTEMPTS = 16               # writes tried when other writers keep taking the values picked


def static_band(size: int, *, least: int, most: int, step: int) -> int:
    """Kubernetes' calculateRangeOffset: how many values at the bottom of a range dynamic
    allocation leaves for last, min(max(least, size/step), most); none in a small range."""
    if size <= least:
        return 0
    return min(max(least, size // step), most)


@dataclass(frozen=True)
class Ranges:
    """The service CIDR and the node port range of one cluster (`shoal server` flags)."""
    cidr: ipaddress.IPv4Network
    first_port: int
    last_port: int

    @classmethod
    def parse(cls, cidr: str = DEFAULT_SERVICE_CIDR, node_ports: str = DEFAULT_NODE_PORT_RANGE) -> "Ranges":
        first, last = parse_node_port_range(node_ports)
        return cls(parse_service_cidr(cidr), first, last)

    @property
    def first_ip(self) -> int:
        """The first allocatable address (network + 1), reserved for the kubernetes Service."""
        return int(self.cidr.network_address) + 1

    @property
    def last_ip(self) -> int:
        return int(self.cidr.broadcast_address) - 1

    @property
    def reserved_ip(self) -> int:
        return self.first_ip

    def ip_band(self) -> int:
        return static_band(self.cidr.num_addresses, least=16, most=256, step=16)

    def port_band(self) -> int:
        return static_band(self.last_port - self.first_port + 1, least=16, most=128, step=32)

    def ports_text(self) -> str:
        return f"{self.first_port}-{self.last_port}"


def pick(first: int, last: int, band: int, taken: Callable[[int], bool], rng: random.Random) -> int | None:
    """A free value of [first, last]: a random scan of the upper part (from first + band),
    then of the static band; None when every value is taken."""
    for lo, hi in ((first + band, last), (first, min(first + band - 1, last))):
        if lo > hi:
            continue
        size = hi - lo + 1
        start = rng.randrange(size)
        for i in range(size):
            v = lo + (start + i) % size
            if not taken(v):
                return v
    return None


@dataclass
class Plan:
    """What a Service write holds: `service` with its allocated values filled in, `holds`
    every (pool, value) it holds after the write, `chosen` the values the user asked for
    (with the field path and value a 422 names), `full` the pool that ran out (or "")."""
    service: dict
    holds: set[Allocation] = field(default_factory=set)
    chosen: dict[Allocation, tuple[str, Any, str]] = field(default_factory=dict)
    full: str = ""


def _needs_node_ports(spec: dict) -> bool:
    return spec.get("type") in ("NodePort", "LoadBalancer")


def _needs_health_check(spec: dict) -> bool:
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _allocates_new_node_ports(spec: dict) -> bool:
    """shouldAllocateNodePorts: a LoadBalancer may opt out (allocateLoadBalancerNodePorts)."""
    if spec.get("type") == "NodePort":
        return True
    return spec.get("type") == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False


def plan_service(svc: dict, old: dict | None, ranges: Ranges, *, taken_ips: set[int], taken_ports: set[int],
                 rng: random.Random) -> Plan:
    """The values Service `svc` (validated; `old`: the stored one on update) holds after its
    write, with the missing ones picked from what is free: `taken_*` are the values other
    objects hold. Raises Invalid (Kubernetes' wording and paths) for a value the user asked
    for that is outside the range or taken. Pure: the store is the executor's."""
    svc = dict(svc, spec=dict(svc.get("spec") or {}))
    spec = svc["spec"]
    old_spec = (old or {}).get("spec") or {}
    plan = Plan(svc)
    causes: list[Cause] = []
    name = (svc.get("metadata") or {}).get("name", "")

    # -- the cluster IP
    ips = list(spec.get("clusterIPs") or [])
    old_ips = list(old_spec.get("clusterIPs") or [])
    if ips[:1] != [CLUSTER_IP_NONE]:
        if ips:
            value = int(ipaddress.ip_address(ips[0]))
            path = "spec.clusterIPs"
            if ips[:1] != old_ips[:1]:          # asked for now (the stored one is held already)
                why = ""
                if not ranges.first_ip <= value <= ranges.last_ip:
                    why = (f"the provided IP ({ips[0]}) is not in the valid range. The range of valid IPs is "
                           f"{ranges.cidr}")
                elif value == ranges.reserved_ip or value in taken_ips:
                    why = "provided IP is already allocated"
                if why:
                    causes.append(Cause(path, f"Invalid value: {_render(ips)}: failed to allocate IP {ips[0]}: {why}",
                                        "FieldValueInvalid"))
                plan.chosen[(POOL_CLUSTER_IP, value)] = (path, ips, f"failed to allocate IP {ips[0]}: "
                                                                    f"provided IP is already allocated")
            plan.holds.add((POOL_CLUSTER_IP, value))
        else:
            got = pick(ranges.first_ip, ranges.last_ip, ranges.ip_band(),
                       lambda v: v in taken_ips or v == ranges.reserved_ip, rng)
            if got is None:
                plan.full = POOL_CLUSTER_IP
            else:
                ip = str(ipaddress.IPv4Address(got))
                spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
                plan.holds.add((POOL_CLUSTER_IP, got))

    # -- the node ports
    if _needs_node_ports(spec):
        ports = [dict(p) for p in spec.get("ports") or []]
        spec["ports"] = ports
        old_node_ports = {p.get("nodePort") for p in old_spec.get("ports") or [] if p.get("nodePort")} \
            if _needs_node_ports(old_spec) else set()
        if _needs_health_check(old_spec) and old_spec.get("healthCheckNodePort"):
            old_node_ports.add(old_spec["healthCheckNodePort"])
        mine: set[int] = set()

        def claim(i: int | None, value: int) -> None:
            path = f"spec.ports[{i}].nodePort" if i is not None else "spec.healthCheckNodePort"
            if value not in old_node_ports and value not in mine:
                why = ""
                if not ranges.first_port <= value <= ranges.last_port:
                    why = (f"provided port is not in the valid range. The range of valid ports is "
                           f"{ranges.ports_text()}")
                elif value in taken_ports:
                    why = "provided port is already allocated"
                if why:
                    causes.append(Cause(path, f"Invalid value: {value}: {why}", "FieldValueInvalid"))
                plan.chosen.setdefault((POOL_NODE_PORT, value), (path, value, "provided port is already allocated"))
            mine.add(value)

        def auto() -> int | None:
            got = pick(ranges.first_port, ranges.last_port, ranges.port_band(),
                       lambda v: v in taken_ports or v in mine, rng)
            if got is None:
                plan.full = plan.full or POOL_NODE_PORT
            else:
                mine.add(got)
            return got

        # A create gives the ports of one number (TCP and UDP 53) one node port, as Kubernetes.
        by_number: dict[Any, int] = {}
        for i, p in enumerate(ports):
            if not p.get("nodePort") and not _allocates_new_node_ports(spec):
                continue
            if p.get("nodePort"):
                claim(i, p["nodePort"])
                by_number.setdefault(p.get("port"), p["nodePort"])
                continue
            if old is None:
                shared = by_number.get(p.get("port")) or next(
                    (q["nodePort"] for q in ports[i + 1:] if q.get("port") == p.get("port") and q.get("nodePort")),
                    None)
                if shared:
                    p["nodePort"] = shared
                    claim(i, shared)
                    by_number.setdefault(p.get("port"), shared)
                    continue
            got = auto()
            if got is not None:
                p["nodePort"] = got
                by_number.setdefault(p.get("port"), got)
        # A LoadBalancer keeping client addresses gets one more: the node proxy answers on it
        # whether the node has endpoints (kube-proxy's health check).
        if _needs_health_check(spec):
            hc = spec["healthCheckNodePort"] if spec.get("healthCheckNodePort") else None
            if hc is not None and hc in mine:
                causes.append(Cause("spec.healthCheckNodePort", f"Invalid value: {hc}: provided port is already "
                                                                f"allocated (a node port of this Service)",
                                    "FieldValueInvalid"))
            elif hc is not None:
                claim(None, hc)
            else:
                got = auto()
                if got is not None:
                    spec["healthCheckNodePort"] = got
        plan.holds |= {(POOL_NODE_PORT, v) for v in mine}
    if causes:
        raise errors.Invalid(_invalid_message(name, causes), causes=causes, details={"name": name, "kind": "Service"})
    return plan


def _invalid_message(name: str, causes: list[Cause]) -> str:
    parts = [f"{c.field}: {c.message}" for c in causes]
    return f'Service "{name}" is invalid: ' + (parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]")


class ServiceAllocator:
    """Writes a Service together with the values it holds (module docstring). Stateless but
    for the ranges and a random source: one per registry, shared by its dry-run views."""

    def __init__(self, ranges: Ranges, *, rng: random.Random | None = None):
        self.ranges = ranges
        self.rng = rng or random.Random()

    def create(self, store: Any, obj: dict) -> dict:
        """`store.create("services", obj)` with its cluster IP and node ports."""
        return self._write(store, obj, None,
                           lambda svc, holds: store.create("services", svc, allocations=holds))

    def update(self, store: Any, obj: dict, old: dict, *, expected_revision: int) -> dict:
        """`store.update("services", obj)`: the values it keeps, gains and gives up."""
        return self._write(store, obj, old,
                           lambda svc, holds: store.update("services", svc, expected_revision=expected_revision,
                                                           allocations=holds))

    def _write(self, store: Any, obj: dict, old: dict | None, write: Callable[[dict, set[Allocation]], dict]) -> dict:
        md = obj.get("metadata") or {}
        key = object_key("services", md.get("namespace"), md.get("name", ""))
        lost: set[Allocation] = set()        # values picked and taken by another writer meanwhile
        for _ in range(ATTEMPTS):
            taken_ips = {v for v, k in store.allocations(POOL_CLUSTER_IP).items() if k != key}
            taken_ports = {v for v, k in store.allocations(POOL_NODE_PORT).items() if k != key}
            taken_ips |= {v for p, v in lost if p == POOL_CLUSTER_IP}
            taken_ports |= {v for p, v in lost if p == POOL_NODE_PORT}
            plan = plan_service(obj, old, self.ranges, taken_ips=taken_ips, taken_ports=taken_ports, rng=self.rng)
            if plan.full:
                what = "serviceIP" if plan.full == POOL_CLUSTER_IP else "nodePort"
                raise errors.ApiError(f"Internal error occurred: failed to allocate a {what}: range is full")
            try:
                return write(plan.service, plan.holds)
            except AllocationTaken as e:
                chosen = plan.chosen.get((e.pool, e.value))
                if chosen is not None:
                    path, value, why = chosen
                    cause = Cause(path, f"Invalid value: {_render(value)}: {why}", "FieldValueInvalid")
                    raise errors.Invalid(_invalid_message(md.get("name", ""), [cause]), causes=[cause],
                                         details={"name": md.get("name", ""), "kind": "Service"}) from None
                lost.add((e.pool, e.value))
        raise errors.Conflict(f'Operation cannot be fulfilled on services "{md.get("name", "")}": the values picked '
                              f'for it were taken by other Services {ATTEMPTS} times; try again',
                              details={"name": md.get("name", ""), "kind": "services"})
