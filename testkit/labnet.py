"""A lab network: N "hosts" as network namespaces joined by a bridge.

    netns <name>-lab                       netns <name>-h1          netns <name>-h2 ...
    ┌───────────────────────────────┐      ┌──────────────────┐
    │ br0 192.168.213.1/24          │      │ eth0 .11/24      │
    │   ├─ h1 ──────────── veth ────┼──────┤ default via .1   │
    │   ├─ h2 ──────────── veth ────┼──┐   └──────────────────┘
    │   └─ ...                      │  └── eth0 .12/24 in <name>-h2
    └───────────────────────────────┘

The lab namespace has no uplink and forwarding off: nothing in a lab can reach
anything outside its namespaces, whatever routes the hosts have. Host i gets
address .(10+i) of the subnet; the lab bridge holds .1 (a place for the
control plane or a port published to loopback later).

`create_lab_network` is idempotent and repairs a half-built lab (after a
crash); `destroy_lab_network` removes every namespace whose name starts with
"<name>-" — the lab's own and the pod namespaces its agents created with that
prefix — and works on a lab that was never completed.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass

from shoal.agent.network.netlink import Netlink, Route
from shoal.agent.network.pyroute import PyrouteNetlink

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")
LAB_BRIDGE = "br0"
HOST_IFNAME = "eth0"


@dataclass(frozen=True)
class LabHost:
    name: str        # "h1"
    netns: str       # "<lab>-h1"
    ifname: str      # "eth0" inside netns
    ip: str          # "192.168.213.11"
    prefixlen: int


@dataclass(frozen=True)
class LabNetwork:
    name: str
    lab_netns: str
    bridge: str
    subnet: str
    gateway: str
    hosts: list[LabHost]


def check_lab_name(name: str) -> None:
    """Raise ValueError unless `name` can name a lab (its namespaces are "<name>-...")."""
    if not _NAME_RE.match(name):
        raise ValueError(f"lab name {name!r}: use 1-16 lower-case letters and digits, starting with a letter")


def _check(name: str, subnet: str, n_hosts: int) -> ipaddress.IPv4Network:
    check_lab_name(name)
    net = ipaddress.IPv4Network(subnet, strict=True)
    if not net.is_private:
        raise ValueError(f"lab subnet {subnet} is not a private range; labs never use routable addresses")
    if n_hosts < 1 or net.num_addresses - 12 < n_hosts:
        raise ValueError(f"lab {name}: {n_hosts} hosts do not fit in {subnet}")
    return net


def lab_layout(name: str, n_hosts: int, subnet: str = "192.168.213.0/24") -> LabNetwork:
    """The lab's names and addresses (pure)."""
    net = _check(name, subnet, n_hosts)
    hosts = [LabHost(name=f"h{i}", netns=f"{name}-h{i}", ifname=HOST_IFNAME,
                     ip=str(net.network_address + 10 + i), prefixlen=net.prefixlen)
             for i in range(1, n_hosts + 1)]
    return LabNetwork(name=name, lab_netns=f"{name}-lab", bridge=LAB_BRIDGE, subnet=str(net),
                      gateway=str(net.network_address + 1), hosts=hosts)


def create_lab_network(name: str, n_hosts: int, subnet: str = "192.168.213.0/24", *,
                       netlink: Netlink | None = None) -> LabNetwork:
    lab = lab_layout(name, n_hosts, subnet)
    nl = netlink or PyrouteNetlink()
    try:
        _build(nl, lab)
    finally:
        if netlink is None:
            nl.close()  # type: ignore[attr-defined]
    return lab


def _build(nl: Netlink, lab: LabNetwork) -> None:
    ln = lab.lab_netns
    plen = ipaddress.ip_network(lab.subnet).prefixlen
    nl.netns_create(ln)
    if nl.link_get(lab.bridge, ns=ln) is None:
        nl.link_add(lab.bridge, "bridge", ns=ln)
    if nl.addr_list(lab.bridge, ns=ln) != [f"{lab.gateway}/{plen}"]:
        nl.addr_flush(lab.bridge, ns=ln)
        nl.addr_add(lab.bridge, f"{lab.gateway}/{plen}", ns=ln)
    nl.link_set(lab.bridge, ns=ln, up=True)
    nl.link_set("lo", ns=ln, up=True)
    wanted = {h.name for h in lab.hosts}
    # hosts beyond n from an earlier, bigger lab of the same name
    for ns in nl.netns_list():
        m = re.fullmatch(re.escape(lab.name) + r"-(h\d+)", ns)
        if m and m.group(1) not in wanted:
            nl.link_del(m.group(1), ns=ln)
            nl.netns_remove(ns)
    for h in lab.hosts:
        nl.netns_create(h.netns)
        port = nl.link_get(h.name, ns=ln)
        inner = nl.link_get(h.ifname, ns=h.netns)
        if port is None or inner is None:
            nl.link_del(h.name, ns=ln)
            nl.link_del(h.ifname, ns=h.netns)
            nl.link_add(h.name, "veth", ns=ln, peer=h.ifname, peer_ns=h.netns)
        nl.link_set(h.name, ns=ln, master=lab.bridge, up=True)
        cidr = f"{h.ip}/{h.prefixlen}"
        if nl.addr_list(h.ifname, ns=h.netns) != [cidr]:
            nl.addr_flush(h.ifname, ns=h.netns)
            nl.addr_add(h.ifname, cidr, ns=h.netns)
        nl.link_set("lo", ns=h.netns, up=True)
        nl.link_set(h.ifname, ns=h.netns, up=True)
        nl.route_replace(Route(dst="0.0.0.0/0", dev=h.ifname, gateway=lab.gateway), ns=h.netns)
        nl.release(h.netns)
    nl.release(ln)
    log.info("lab %s: %d hosts on %s", lab.name, len(lab.hosts), lab.subnet)


def destroy_lab_network(name: str, *, netlink: Netlink | None = None) -> list[str]:
    """Remove every namespace named "<name>-*"; return their names."""
    check_lab_name(name)
    nl = netlink or PyrouteNetlink()
    removed: list[str] = []
    try:
        # pod namespaces first: their veth peers live in host namespaces
        victims = [ns for ns in nl.netns_list() if ns.startswith(name + "-")]
        victims.sort(key=lambda ns: (ns == f"{name}-lab", re.fullmatch(re.escape(name) + r"-h\d+", ns) is not None))
        for ns in victims:
            nl.netns_remove(ns)
            removed.append(ns)
    finally:
        if netlink is None:
            nl.close()  # type: ignore[attr-defined]
    if removed:
        log.info("lab %s: removed namespaces %s", name, ", ".join(removed))
    return removed
