"""`RecordingNetlink`: the in-memory `netlink.Netlink` for unit tests.

It keeps a model of namespaces and their links, addresses, routes, neighbours,
FDB entries and sysctls, with the kernel semantics the callers rely on (a veth
dies with its peer, links die with their namespace, routes/neighbours/FDB
entries die with their device, EEXIST/ENODEV), and records every call in
`calls` so a test can assert on the verbs as well as on the resulting state.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field, replace

from shoal.agent.network.netlink import (NETNS_RUN_DIR, FdbEntry, Link, Neighbour, NetlinkOpError, Route,
                                         VxlanInfo, ns_label)

_ZERO_MAC = "00:00:00:00:00:00"


@dataclass
class _NsModel:
    links: dict[str, Link] = field(default_factory=dict)
    peers: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # veth -> (ns, name)
    addrs: dict[str, list[str]] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    neighs: list[Neighbour] = field(default_factory=list)
    fdb: list[FdbEntry] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)


class RecordingNetlink:
    """In-memory `Netlink` for unit tests: a model of namespaces and their
    links/addresses/routes/neighbours/FDB, plus `calls`, the ordered list of
    (verb, args...) tuples that mutated or read it."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.spaces: dict[str | None, _NsModel] = {None: _NsModel()}
        self._next_index = 2
        self._mac_seq = 0
        self.spaces[None].links["lo"] = Link("lo", 1, "", 65536, False, _ZERO_MAC)

    # -- helpers for tests
    def ns(self, ns: str | None = None) -> _NsModel:
        if ns not in self.spaces:
            raise NetlinkOpError(errno.ENOENT, f"network namespace {ns} does not exist")
        return self.spaces[ns]

    def verbs(self) -> list[str]:
        return [c[0] for c in self.calls]

    def _mac(self) -> str:
        self._mac_seq += 1
        return "02:00:00:00:%02x:%02x" % (self._mac_seq >> 8 & 0xFF, self._mac_seq & 0xFF)

    def _new_link(self, name: str, kind: str, mtu: int | None, mac: str | None = None, **kw) -> Link:
        self._next_index += 1
        return Link(name=name, index=self._next_index, kind=kind, mtu=mtu or 1500, up=False,
                    mac=mac or self._mac(), **kw)

    def _get(self, name: str, ns: str | None) -> Link:
        m = self.ns(ns)
        if name not in m.links:
            raise NetlinkOpError(errno.ENODEV, f"no link {name} ({ns_label(ns, None)})")
        return m.links[name]

    def _drop_link(self, name: str, ns: str | None) -> None:
        m = self.spaces.get(ns)
        if m is None or name not in m.links:
            return
        del m.links[name]
        m.addrs.pop(name, None)
        m.routes = [r for r in m.routes if r.dev != name]
        m.neighs = [n for n in m.neighs if n.dev != name]
        m.fdb = [f for f in m.fdb if f.dev != name]
        peer = m.peers.pop(name, None)
        if peer is not None:
            self._drop_link(peer[1], peer[0])

    # -- namespaces
    def netns_path(self, name: str) -> str:
        return f"{NETNS_RUN_DIR}/{name}"

    def netns_list(self) -> list[str]:
        self.calls.append(("netns_list",))
        return sorted(k for k in self.spaces if k is not None)

    def netns_create(self, name: str) -> bool:
        self.calls.append(("netns_create", name))
        if name in self.spaces:
            return False
        self.spaces[name] = _NsModel()
        self._next_index += 1
        self.spaces[name].links["lo"] = Link("lo", 1, "", 65536, False, _ZERO_MAC)
        return True

    def netns_remove(self, name: str) -> None:
        self.calls.append(("netns_remove", name))
        m = self.spaces.get(name)
        if m is None:
            return
        for link in list(m.links):
            self._drop_link(link, name)
        del self.spaces[name]

    def release(self, ns: str) -> None:
        self.calls.append(("release", ns))

    # -- links
    def link_get(self, name: str, *, ns: str | None = None) -> Link | None:
        self.calls.append(("link_get", name, ns))
        return self.ns(ns).links.get(name)

    def link_list(self, *, ns: str | None = None) -> list[Link]:
        self.calls.append(("link_list", ns))
        return list(self.ns(ns).links.values())

    def link_add(self, name: str, kind: str, *, ns: str | None = None, mtu: int | None = None,
                 peer: str | None = None, peer_ns: str | None = None,
                 vxlan: VxlanInfo | None = None, mac: str | None = None,
                 peer_mac: str | None = None, master: str | None = None, up: bool = False) -> None:
        self.calls.append(("link_add", name, kind, ns, mtu, peer, peer_ns, vxlan, mac, peer_mac)
                          + ((master, up) if master is not None or up else ()))
        m = self.ns(ns)
        if name in m.links:
            raise NetlinkOpError(errno.EEXIST, f"netlink link add {name} ({ns_label(ns, None)})")
        if master is not None:
            self._get(master, ns)
        if kind == "veth":
            pm = self.ns(peer_ns if peer_ns is not None else ns)
            if not peer or peer in pm.links or (peer_ns is None and peer == name):
                raise NetlinkOpError(errno.EEXIST, f"netlink link add {name} peer {peer}")
            m.links[name] = self._new_link(name, "veth", mtu, mac)
            pm.links[peer] = self._new_link(peer, "veth", mtu, peer_mac)
            m.peers[name] = (peer_ns if peer_ns is not None else ns, peer)
            pm.peers[peer] = (ns, name)
        elif kind == "vxlan":
            m.links[name] = self._new_link(name, "vxlan", mtu, mac, vxlan=vxlan)
        elif kind == "bridge":
            m.links[name] = self._new_link(name, "bridge", mtu, mac)
        else:
            raise NetlinkOpError(errno.EOPNOTSUPP, f"netlink link add {name} type {kind}")
        if master is not None or up:
            m.links[name] = replace(m.links[name], master=master, up=up,
                                    hairpin=False if master is not None else None)

    def link_del(self, name: str, *, ns: str | None = None) -> None:
        self.calls.append(("link_del", name, ns))
        self.ns(ns)
        self._drop_link(name, ns)

    def link_set(self, name: str, *, ns: str | None = None, up: bool | None = None,
                 mtu: int | None = None, master: str | None = None, mac: str | None = None,
                 hairpin: bool | None = None) -> None:
        self.calls.append(("link_set", name, ns, up, mtu, master, mac)
                          + ((hairpin,) if hairpin is not None else ()))
        link = self._get(name, ns)
        if master is not None:
            self._get(master, ns)
        port = link.master if master is None else master
        if hairpin is not None and port is None:
            raise NetlinkOpError(errno.EOPNOTSUPP, f"netlink link set {name} hairpin: not a bridge port")
        self.ns(ns).links[name] = replace(
            link, up=link.up if up is None else up, mtu=link.mtu if mtu is None else mtu,
            master=port, mac=link.mac if mac is None else mac,
            hairpin=hairpin if hairpin is not None else (link.hairpin if master is None else
                                                          (link.hairpin if link.master == master else False)))

    # -- addresses
    def addr_list(self, dev: str, *, ns: str | None = None) -> list[str]:
        self.calls.append(("addr_list", dev, ns))
        self._get(dev, ns)
        return list(self.ns(ns).addrs.get(dev, []))

    def addr_dump(self, *, ns: str | None = None) -> list[tuple[str, str]]:
        self.calls.append(("addr_dump", ns))
        return [(d, a) for d, lst in self.ns(ns).addrs.items() for a in lst]

    def addr_add(self, dev: str, cidr: str, *, ns: str | None = None) -> None:
        self.calls.append(("addr_add", dev, cidr, ns))
        self._get(dev, ns)
        lst = self.ns(ns).addrs.setdefault(dev, [])
        if cidr in lst:
            raise NetlinkOpError(errno.EEXIST, f"netlink addr add {cidr} dev {dev}")
        lst.append(cidr)

    def addr_flush(self, dev: str, *, ns: str | None = None) -> None:
        self.calls.append(("addr_flush", dev, ns))
        self._get(dev, ns)
        self.ns(ns).addrs[dev] = []

    # -- routes
    def route_replace(self, route: Route, *, ns: str | None = None) -> None:
        self.calls.append(("route_replace", route, ns))
        self._get(route.dev, ns)
        m = self.ns(ns)
        m.routes = [r for r in m.routes if r.dst != route.dst] + [route]

    def route_del(self, route: Route, *, ns: str | None = None) -> None:
        self.calls.append(("route_del", route, ns))
        m = self.ns(ns)
        m.routes = [r for r in m.routes if not (r.dst == route.dst and r.dev == route.dev)]

    def route_dump(self, *, ns: str | None = None, dev: str | None = None) -> list[Route]:
        self.calls.append(("route_dump", ns, dev))
        return [r for r in self.ns(ns).routes if dev is None or r.dev == dev]

    # -- neighbours / fdb
    def neigh_replace(self, n: Neighbour) -> None:
        self.calls.append(("neigh_replace", n))
        self._get(n.dev, None)
        m = self.ns(None)
        m.neighs = [x for x in m.neighs if not (x.dev == n.dev and x.ip == n.ip)] + [replace(n, permanent=True)]

    def neigh_del(self, n: Neighbour) -> None:
        self.calls.append(("neigh_del", n))
        m = self.ns(None)
        m.neighs = [x for x in m.neighs if not (x.dev == n.dev and x.ip == n.ip)]

    def neigh_dump(self, dev: str) -> list[Neighbour]:
        self.calls.append(("neigh_dump", dev))
        return [n for n in self.ns(None).neighs if n.dev == dev]

    def fdb_append(self, e: FdbEntry) -> None:
        self.calls.append(("fdb_append", e))
        self._get(e.dev, None)
        m = self.ns(None)
        if e in m.fdb:
            raise NetlinkOpError(errno.EEXIST, f"netlink fdb append {e.mac} dst {e.dst}")
        m.fdb.append(e)

    def fdb_del(self, e: FdbEntry) -> None:
        self.calls.append(("fdb_del", e))
        m = self.ns(None)
        m.fdb = [x for x in m.fdb if x != e]

    def fdb_dump(self, dev: str) -> list[FdbEntry]:
        self.calls.append(("fdb_dump", dev))
        return [f for f in self.ns(None).fdb if f.dev == dev]

    def sysctl_set(self, key: str, value: str, *, ns: str | None = None) -> None:
        self.calls.append(("sysctl_set", key, value, ns))
        self.ns(ns).sysctls[key] = value
