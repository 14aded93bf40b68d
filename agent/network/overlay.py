"""The VXLAN overlay between nodes: design notes, and the pure peer-sync planner.

Design notes (after flannel's vxlan backend, re-derived, not copied)
-------------------------------------------------------------------
Each node owns one VXLAN device, `shoal.1` (VNI 1, UDP 8472 — Linux's
historical port, flannel's default — `nolearning`, `local` = the node's underlay
address), whose address is its pod CIDR's *network* address as a /32
(10.244.3.0/32 for 10.244.3.0/24). That address is a VTEP identity, not a host
on any subnet: it gives the node a source address on the overlay, and the
network address is free because the bridge holds .1.

For every peer node exactly three kernel entries, all on `shoal.1`:

    route   10.244.7.0/24 via 10.244.7.0 dev shoal.1 onlink   # where: to the peer's VTEP
    neigh   10.244.7.0 lladdr <peer VTEP MAC> PERMANENT        # L3 -> L2: no ARP on the overlay
    fdb     <peer VTEP MAC> dst <peer underlay IP> self        # L2 -> underlay: no flooding

so a packet for 10.244.7.9 is routed to the onlink gateway 10.244.7.0, whose
MAC is known statically, and the VXLAN driver looks that MAC up in its FDB to
find the UDP destination. Nothing is learned or flooded; the control plane
(Node objects carrying each agent's underlay IP and VTEP MAC) is the only
source of truth.

Why this design: flannel's backend went through several. The earlier ones had
the kernel report L2/L3 misses over netlink and a daemon answer them by
installing entries on demand — user space in the first packet's path, slow to
converge and empty after a restart. The current one — one route, one neighbour
and one FDB entry per peer, installed ahead of time — needs no daemon in the
data path at all and keeps forwarding while the agent is down. We take
that, but drop flannel's event-driven add/remove: `sync_peers` receives the
*full* desired peer set and converges it against what netlink reports, so a
missed event, a restart or a hand-deleted entry heals on the next sync.

Ownership: we only ever remove entries that are provably ours — routes on the
device with protocol RTPROT_SHOAL (83), PERMANENT IPv4 neighbours on the
device, and FDB entries on the device with a non-zero MAC (learning is off, so
the kernel adds none; the all-zeros "default destination" entry is an
operator's, not ours).

MTU: VXLAN over IPv4 adds 50 bytes (outer IP 20 + UDP 8 + VXLAN 8 + inner
Ethernet 14), so the device and every pod interface get underlay MTU − 50.

TX checksum offload is turned off on the device: with some NIC/driver/kernel
combinations the inner checksum is never filled in and packets are dropped
silently at the receiver (a recurring flannel report); software checksums
cost little at our rates.

An existing device whose VNI, port, local address or learning flag differ (an
old agent config, another tool) is deleted and recreated; a compatible one is
reused, so `ensure_overlay` is idempotent and keeps the VTEP MAC stable across
agent restarts (peers need not re-learn it).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from shoal.agent.interfaces import Peer

from shoal.agent.network.netlink import RTPROT_SHOAL, FdbEntry, Neighbour, Route

VXLAN_OVERHEAD = 50
ZERO_MAC = "00:00:00:00:00:00"
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class Observed:
    """What netlink reports on the VXLAN device."""
    routes: list[Route]
    neighs: list[Neighbour]
    fdb: list[FdbEntry]


@dataclass(frozen=True)
class Action:
    op: Literal["replace", "append", "delete"]
    entry: Route | Neighbour | FdbEntry

    def __str__(self) -> str:
        e = self.entry
        if isinstance(e, Route):
            return f"route {self.op} {e.dst} via {e.gateway} dev {e.dev} onlink"
        if isinstance(e, Neighbour):
            return f"neigh {self.op} {e.ip} lladdr {e.mac} dev {e.dev}"
        return f"fdb {self.op} {e.mac} dst {e.dst} dev {e.dev}"


@dataclass(frozen=True)
class PeerEntries:
    node: str
    route: Route
    neigh: Neighbour
    fdb: FdbEntry


def vtep_address(pod_cidr: str) -> str:
    """The VTEP's overlay address: the pod CIDR's network address."""
    return str(ipaddress.ip_network(pod_cidr, strict=True).network_address)


def desired_entries(peers: list[Peer], *, dev: str, local_cidr: str | None = None,
                    local_underlay: str | None = None) -> tuple[list[PeerEntries], list[str]]:
    """The three entries per valid peer, and a message per peer skipped.

    Skipped silently: this node itself. Skipped with a message: malformed fields,
    and a second peer claiming a pod CIDR or VTEP MAC already taken (first by
    node name wins, so every node picks the same one)."""
    out: list[PeerEntries] = []
    problems: list[str] = []
    cidrs: dict[str, str] = {}
    macs: dict[str, str] = {}
    for p in sorted(peers, key=lambda p: p.node):
        try:
            net = ipaddress.IPv4Network(p.pod_cidr, strict=True)
        except ValueError:
            problems.append(f"peer {p.node}: podCIDR {p.pod_cidr!r} is not an IPv4 network")
            continue
        try:
            ipaddress.IPv4Address(p.underlay_ip)
        except ValueError:
            problems.append(f"peer {p.node}: underlay address {p.underlay_ip!r} is not an IPv4 address")
            continue
        mac = (p.vtep_mac or "").lower()
        if not _MAC_RE.match(mac) or mac == ZERO_MAC:
            problems.append(f"peer {p.node}: VTEP MAC {p.vtep_mac!r} is not a unicast MAC address")
            continue
        if (local_cidr and str(net) == str(ipaddress.ip_network(local_cidr))) or \
                (local_underlay and p.underlay_ip == local_underlay):
            continue  # this node itself: callers pass every Ready node, us included
        if str(net) in cidrs:
            problems.append(f"peer {p.node}: podCIDR {net} is already routed to peer {cidrs[str(net)]}; skipped")
            continue
        if mac in macs:
            problems.append(f"peer {p.node}: VTEP MAC {mac} is already used by peer {macs[mac]}; skipped")
            continue
        cidrs[str(net)] = p.node
        macs[mac] = p.node
        gw = str(net.network_address)
        out.append(PeerEntries(
            node=p.node,
            route=Route(dst=str(net), dev=dev, gateway=gw, onlink=True, proto=RTPROT_SHOAL),
            neigh=Neighbour(dev=dev, ip=gw, mac=mac, permanent=True),
            fdb=FdbEntry(dev=dev, mac=mac, dst=p.underlay_ip)))
    return out, problems


def _ours(observed: Observed, dev: str) -> tuple[list[Route], list[Neighbour], list[FdbEntry]]:
    routes = [r for r in observed.routes if r.dev == dev and r.proto == RTPROT_SHOAL]
    neighs = [n for n in observed.neighs if n.dev == dev and n.permanent]
    fdb = [f for f in observed.fdb if f.dev == dev and f.mac.lower() != ZERO_MAC]
    return routes, neighs, fdb


def plan_peer_sync(desired: list[Peer], observed: Observed, *, dev: str,
                   local_cidr: str | None = None, local_underlay: str | None = None) -> list[Action]:
    """Actions that turn `observed` into exactly the entries for `desired`.

    Order: deletions first (route, then neighbour, then FDB — a packet never
    finds a route whose next hop is gone), then additions in the reverse order
    (FDB, neighbour, route — the route appears last, when the path behind it is
    complete). Routes and neighbours are keyed by destination and changed with
    `replace`; an FDB entry is keyed by (MAC, underlay IP), so a moved peer gets
    the new entry appended and the old one deleted.
    """
    entries, _ = desired_entries(desired, dev=dev, local_cidr=local_cidr, local_underlay=local_underlay)
    routes, neighs, fdb = _ours(observed, dev)

    want_routes = {e.route.dst: e.route for e in entries}
    want_neighs = {e.neigh.ip: e.neigh for e in entries}
    want_fdb = {(e.fdb.mac, e.fdb.dst): e.fdb for e in entries}

    have_routes = {r.dst: r for r in routes}
    have_neighs = {n.ip: n for n in neighs}
    have_fdb = {(f.mac.lower(), f.dst): f for f in fdb}

    def route_ok(have: Route, want: Route) -> bool:
        return (have.gateway, have.onlink, have.proto) == (want.gateway, want.onlink, want.proto)

    actions: list[Action] = []
    actions += [Action("delete", r) for dst, r in sorted(have_routes.items()) if dst not in want_routes]
    actions += [Action("delete", n) for ip, n in sorted(have_neighs.items()) if ip not in want_neighs]
    actions += [Action("delete", f) for k, f in sorted(have_fdb.items()) if k not in want_fdb]
    actions += [Action("append", f) for k, f in sorted(want_fdb.items()) if k not in have_fdb]
    actions += [Action("replace", n) for ip, n in sorted(want_neighs.items())
                if ip not in have_neighs or have_neighs[ip].mac.lower() != n.mac]
    actions += [Action("replace", r) for dst, r in sorted(want_routes.items())
                if dst not in have_routes or not route_ok(have_routes[dst], r)]
    return actions
