"""The netlink seam: exactly the kernel verbs the pod network needs.

This module is what callers type against — the `Netlink` Protocol, its value
types and its error — and nothing that talks to a kernel. Implementations:
`pyroute.PyrouteNetlink` (pyroute2 and a plain rtnetlink socket, one thread per
namespace; design notes there) and `fakenetlink.RecordingNetlink` (in memory,
for unit tests).

Contract
--------
`Netlink` is a small Protocol over rtnetlink: links (add/del/set/get/list),
IPv4 addresses (add/flush/list), routes of the main table (replace/del/dump),
permanent neighbours and VXLAN FDB entries (replace|append/del/dump), named
network namespaces (create/remove/list) and, as the one non-netlink exception,
`sysctl_set` — because a sysctl under /proc/sys/net must be written from
*inside* the namespace it configures, so it belongs to the object that owns the
namespace handles.

Every method takes `ns=` where it makes sense: `None` means "the node
namespace" this wrapper is bound to (the current namespace of the process by
default, or a named one — the multi-host lab runs one agent per host netns),
a string names a pod namespace under /run/netns (`NETNS_RUN_DIR`).

Deleting something absent and creating a namespace that exists are no-ops, so
callers can be idempotent without racing `get` against `del`. Everything else
that fails raises `NetlinkOpError`, whose message names the verb, the object and
the namespace (`ns_label`). Handles an implementation caches on a namespace keep
it alive: `netns_remove` drops them, `release(ns)` lets a caller drop them early.

A fake must keep the kernel semantics callers rely on: a veth dies with its
peer, links die with their namespace, routes/neighbours/FDB entries die with
their device, adding what exists is EEXIST, naming a missing device is ENODEV.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

NETNS_RUN_DIR = "/run/netns"

# Routes we install carry this rtnetlink protocol number so that a dump can tell
# ours from anyone else's ("proto 83" in `ip route`; 83 is 'S', unassigned in
# /etc/iproute2/rt_protos).
RTPROT_SHOAL = 83


class NetlinkOpError(OSError):
    """A kernel call failed; the message names verb, object and namespace."""

    def __init__(self, err: int, message: str):
        super().__init__(err, message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.message}: {os.strerror(self.errno) if self.errno else 'error'}"


# ----------------------------------------------------------------------------- value types
@dataclass(frozen=True)
class VxlanInfo:
    vni: int
    port: int
    local: str | None
    learning: bool = False


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    kind: str            # "bridge", "veth", "vxlan", "" for loopback/physical
    mtu: int
    up: bool             # administratively up (IFF_UP)
    mac: str
    master: str | None = None
    vxlan: VxlanInfo | None = None
    hairpin: bool | None = None     # a bridge port's hairpin mode; None: not a bridge port


@dataclass(frozen=True)
class Route:
    """An IPv4 route of the main table. dst "0.0.0.0/0" is the default route."""
    dst: str
    dev: str
    gateway: str | None = None
    onlink: bool = False
    proto: int = RTPROT_SHOAL


@dataclass(frozen=True)
class Neighbour:
    dev: str
    ip: str
    mac: str
    permanent: bool = True


@dataclass(frozen=True)
class FdbEntry:
    dev: str
    mac: str
    dst: str


@runtime_checkable
class Netlink(Protocol):
    # namespaces (named, under /run/netns)
    def netns_list(self) -> list[str]: ...
    def netns_create(self, name: str) -> bool:
        """Create /run/netns/NAME unless it exists; True if created now."""
    def netns_remove(self, name: str) -> None: ...
    def netns_path(self, name: str) -> str: ...
    def release(self, ns: str) -> None:
        """Drop cached handles on namespace `ns` (they keep it alive)."""

    # links
    def link_get(self, name: str, *, ns: str | None = None) -> Link | None: ...
    def link_list(self, *, ns: str | None = None) -> list[Link]: ...
    def link_add(self, name: str, kind: str, *, ns: str | None = None, mtu: int | None = None,
                 peer: str | None = None, peer_ns: str | None = None,
                 vxlan: VxlanInfo | None = None, mac: str | None = None,
                 peer_mac: str | None = None, master: str | None = None, up: bool = False) -> None:
        """kind "bridge" | "veth" (peer name, optionally created in peer_ns) | "vxlan";
        master and up apply to `name` in the same message (`ip link add … master BR up`)."""
    def link_del(self, name: str, *, ns: str | None = None) -> None: ...
    def link_set(self, name: str, *, ns: str | None = None, up: bool | None = None,
                 mtu: int | None = None, master: str | None = None, mac: str | None = None,
                 hairpin: bool | None = None) -> None:
        """`hairpin` sets the bridge port's hairpin mode (`bridge link set dev NAME hairpin on`),
        after the rest, so a link given its master here may get it too."""

    # IPv4 addresses, "a.b.c.d/len"
    def addr_list(self, dev: str, *, ns: str | None = None) -> list[str]: ...
    def addr_dump(self, *, ns: str | None = None) -> list[tuple[str, str]]:
        """(device, cidr) for every IPv4 address in the namespace."""
    def addr_add(self, dev: str, cidr: str, *, ns: str | None = None) -> None: ...
    def addr_flush(self, dev: str, *, ns: str | None = None) -> None: ...

    # IPv4 routes, main table
    def route_replace(self, route: Route, *, ns: str | None = None) -> None: ...
    def route_del(self, route: Route, *, ns: str | None = None) -> None: ...
    def route_dump(self, *, ns: str | None = None, dev: str | None = None) -> list[Route]: ...

    # neighbours and FDB of a device in the node namespace
    def neigh_replace(self, n: Neighbour) -> None: ...
    def neigh_del(self, n: Neighbour) -> None: ...
    def neigh_dump(self, dev: str) -> list[Neighbour]: ...
    def fdb_append(self, e: FdbEntry) -> None: ...
    def fdb_del(self, e: FdbEntry) -> None: ...
    def fdb_dump(self, dev: str) -> list[FdbEntry]: ...

    # not netlink, but namespace-scoped: "net.ipv4.ip_forward" = "1"
    def sysctl_set(self, key: str, value: str, *, ns: str | None = None) -> None: ...


def ns_label(ns: str | None, node_ns: str | None) -> str:
    """How an error message names a namespace: `ns`, else the node namespace (`node_ns`
    when the wrapper is bound to a named one)."""
    if ns is not None:
        return f"netns {ns}"
    return f"netns {node_ns}" if node_ns else "the node netns"
