"""`PyrouteNetlink`: the real `netlink.Netlink`, over pyroute2 and plain rtnetlink sockets.

Design notes
------------
* Every namespace is served by one `nsworker.NsWorker` thread that entered it
  and owns an `IPRoute` there (pyroute2 keeps its socket per thread, and a
  netlink socket belongs to the netns its creating thread was in).
* The requests of a pod's setup (veth add, link set, addr add, route replace, and
  link lookups by name) skip IPRoute: a plain rtnetlink socket per namespace
  (`rtnl.Rtnl`) sends messages built with pyroute2's message classes and reads only the
  ack. IPRoute's pipeline (an asyncio round and a full decode per request) was most of
  the agent's CPU per pod, and a new pod namespace never opens an IPRoute now. Dumps,
  the bridge, the VXLAN device, neighbours and FDB entries still go through IPRoute.
* Pod-namespace workers are cached (a small LRU) and must be dropped before the
  namespace is removed — a thread parked in a netns keeps it alive, and with it
  the veth. `netns_remove` does that; `release(ns)` lets a caller drop one early.
* Namespaces are created the way iproute2 does (a bind mount of the new
  namespace on /run/netns/NAME, /run/netns a shared mount) so `ip netns exec`
  works on them — by the namespace's own worker thread (`NsWorker.create`).
* Link indexes are cached per namespace (`NsWorker.indexes`); an ENODEV with a
  non-empty cache clears it and retries once, in case a link was re-made behind
  our back.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import threading
from collections import OrderedDict
from typing import Any, Callable

from shoal.agent.network.netlink import (NETNS_RUN_DIR, FdbEntry, Link, Neighbour, NetlinkOpError, Route,
                                         VxlanInfo, ns_label)
from shoal.agent.network.nsworker import MNT_DETACH, MS_BIND, MS_REC, MS_SHARED, NsWorker, load_libc
from shoal.agent.network.rtnl import (NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, RTM_NEWADDR, RTM_NEWLINK,
                                      RTM_NEWROUTE, Rtnl)

log = logging.getLogger(__name__)

_RT_TABLE_MAIN = 254
_RTNH_F_ONLINK = 4
_NUD_PERMANENT = 0x80
_NTF_SELF = 0x02
_AF_INET = 2
_LOOPBACK_IFINDEX = 1    # the kernel gives every namespace's lo ifindex 1
_IFF_UP = 1
_RTN_UNICAST = 1


def _msg_attr(msg: Any, name: str, default: Any = None) -> Any:
    v = msg.get(name)
    return default if v is None else v


class PyrouteNetlink:
    """`Netlink` over pyroute2, bound to a node namespace (None = current)."""

    def __init__(self, *, netns: str | None = None, run_dir: str = NETNS_RUN_DIR,
                 max_pod_workers: int = 8):
        self.node_ns = netns
        self.run_dir = run_dir
        self._libc = load_libc()
        self._lock = threading.Lock()
        self._node = NsWorker(self.netns_path(netns) if netns else None, self._libc)
        self._pods: OrderedDict[str, NsWorker] = OrderedDict()
        self._max_pod_workers = max_pod_workers

    # -- plumbing
    def _worker(self, ns: str | None) -> NsWorker:
        if ns is None:
            return self._node
        with self._lock:
            w = self._pods.get(ns)
            if w is not None:
                self._pods.move_to_end(ns)
                return w
        path = self.netns_path(ns)
        if not os.path.ismount(path):
            raise NetlinkOpError(errno.ENOENT, f"network namespace {ns} does not exist ({path})")
        return self._adopt(ns, NsWorker(path, self._libc))

    def _adopt(self, ns: str, w: NsWorker) -> NsWorker:
        evicted: list[NsWorker] = []
        with self._lock:
            old = self._pods.get(ns)
            if old is not None:      # another caller got there first: keep theirs
                evicted.append(w)
                w = old
            else:
                self._pods[ns] = w
            self._pods.move_to_end(ns)
            while len(self._pods) > self._max_pod_workers:
                evicted.append(self._pods.popitem(last=False)[1])
        for e in evicted:
            e.close()
        return w

    def _call(self, ns: str | None, what: str, fn: Callable[[Any], Any], *, raw: bool = False) -> Any:
        """fn(IPRoute) in the namespace's thread — or fn(Rtnl) with raw=True, on this one."""
        label = ns_label(ns, self.node_ns)
        log.debug("netlink %s (%s)", what, label)
        from pyroute2.netlink.exceptions import NetlinkError
        worker = self._worker(ns)
        call = worker.call_raw if raw else worker.call
        try:
            try:
                return call(fn)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV or not worker.indexes:
                    raise
                # a cached index may be stale (a link deleted and re-made behind our back)
                worker.indexes.clear()
                return call(fn)
        except NetlinkError as exc:
            raise NetlinkOpError(exc.code, f"netlink {what} ({label})") from exc

    def _lookup(self, ns: str | None, name: str) -> int | None:
        """The link's ifindex by RTM_GETLINK by name (link_lookup() would dump and decode
        every link of the namespace), on the namespace's socket."""
        return self._worker(ns).rtnl().link_index(name)

    def _index(self, name: str, ns: str | None) -> int:
        """The link's ifindex, cached per namespace (see NsWorker.indexes)."""
        if name == "lo":
            return _LOOPBACK_IFINDEX
        cache = self._worker(ns).indexes
        idx = cache.get(name)
        if idx is None:
            idx = self._lookup(ns, name)
            if idx is None:
                raise NetlinkOpError(errno.ENODEV, f"no link {name} ({ns_label(ns, self.node_ns)})")
            cache[name] = idx
        return idx

    def close(self) -> None:
        with self._lock:
            workers = list(self._pods.values())
            self._pods.clear()
        for w in workers:
            w.close()
        self._node.close()

    def release(self, ns: str) -> None:
        with self._lock:
            w = self._pods.pop(ns, None)
        if w is not None:
            w.close()

    # -- namespaces
    def netns_path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def netns_list(self) -> list[str]:
        try:
            return sorted(os.listdir(self.run_dir))
        except FileNotFoundError:
            return []

    def _ensure_run_dir(self) -> None:
        # As iproute2 does: /run/netns must be a shared mount so that the bind
        # mounts below propagate to every mount namespace (ip netns exec's too).
        os.makedirs(self.run_dir, exist_ok=True)
        d = self.run_dir.encode()
        if self._libc.mount(b"none", d, None, MS_SHARED | MS_REC, None) == 0:
            return
        if ctypes.get_errno() != errno.EINVAL:
            raise NetlinkOpError(ctypes.get_errno(), f"make {self.run_dir} a shared mount")
        if self._libc.mount(d, d, b"none", MS_BIND | MS_REC, None) != 0:
            raise NetlinkOpError(ctypes.get_errno(), f"bind-mount {self.run_dir} on itself")
        if self._libc.mount(b"none", d, None, MS_SHARED | MS_REC, None) != 0:
            raise NetlinkOpError(ctypes.get_errno(), f"make {self.run_dir} a shared mount")

    def netns_create(self, name: str) -> bool:
        path = self.netns_path(name)
        if os.path.ismount(path):
            return False
        log.debug("netns create %s", path)
        self._ensure_run_dir()
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
        except FileExistsError:
            pass  # a stale, unmounted file from a crash: mount over it

        worker = NsWorker(path, self._libc)
        try:
            worker.create()
        except BaseException:
            worker.close()
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        self._adopt(name, worker)
        return True

    def netns_remove(self, name: str) -> None:
        self.release(name)
        path = self.netns_path(name)
        if not os.path.lexists(path):
            return
        log.debug("netns remove %s", path)
        if self._libc.umount2(path.encode(), MNT_DETACH) != 0:
            e = ctypes.get_errno()
            if e != errno.EINVAL:  # EINVAL: not mounted (a crash left the file only)
                raise NetlinkOpError(e, f"unmount network namespace {path}")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    # -- links
    def _to_link(self, msg: Any, names: dict[int, str]) -> Link:
        info = msg.get("linkinfo")
        kind = (info.get("kind") if info is not None else None) or ""
        vx = None
        if kind == "vxlan" and info is not None and info.get("data") is not None:
            d = info.get("data")
            vx = VxlanInfo(vni=int(d.get("vxlan_id") or 0), port=int(d.get("vxlan_port") or 0),
                           local=d.get("vxlan_local"), learning=bool(d.get("vxlan_learning")))
        master = msg.get("master")
        hairpin = None
        if info is not None and info.get("slave_kind") == "bridge" and info.get("slave_data") is not None:
            mode = info.get("slave_data").get("mode")
            hairpin = None if mode is None else bool(mode)
        return Link(name=msg.get("ifname"), index=msg["index"], kind=kind,
                    mtu=int(_msg_attr(msg, "mtu", 0)), up=bool(msg["flags"] & 1),
                    mac=_msg_attr(msg, "address", ""),
                    master=names.get(master) if master else None, vxlan=vx, hairpin=hairpin)

    def link_list(self, *, ns: str | None = None) -> list[Link]:
        def fn(ipr):
            msgs = list(ipr.link("dump"))
            names = {m["index"]: m.get("ifname") for m in msgs}
            return [self._to_link(m, names) for m in msgs]
        return self._call(ns, "link dump", fn)

    def link_get(self, name: str, *, ns: str | None = None) -> Link | None:
        # Most gets on the pod path ask about a link that is not there (a new pod's veth):
        # a raw lookup answers that without decoding; a link that exists is decoded below.
        if self._call(ns, f"link lookup {name}", lambda r: r.link_index(name), raw=True) is None:
            return None

        def fn(ipr):
            from pyroute2.netlink.exceptions import NetlinkError
            try:
                msg = ipr.link("get", ifname=name)[0]
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    return None
                raise
            master = msg.get("master")
            names = {}
            if master:
                m = ipr.link("get", index=master)
                names = {master: m[0].get("ifname")} if m else {}
            return self._to_link(msg, names)
        return self._call(ns, f"link get {name}", fn)

    def link_add(self, name: str, kind: str, *, ns: str | None = None, mtu: int | None = None,
                 peer: str | None = None, peer_ns: str | None = None,
                 vxlan: VxlanInfo | None = None, mac: str | None = None,
                 peer_mac: str | None = None, master: str | None = None, up: bool = False) -> None:
        kw: dict[str, Any] = {"ifname": name, "kind": kind}
        if mtu is not None:
            kw["mtu"] = mtu
        if mac is not None:
            kw["address"] = mac
        if kind == "veth":
            if not peer:
                raise ValueError(f"veth {name} needs a peer name")
            p: dict[str, Any] = {"ifname": peer}
            if mtu is not None:
                p["mtu"] = mtu
            if peer_mac is not None:
                p["address"] = peer_mac
            if peer_ns is not None:
                p["net_ns_fd"] = self.netns_path(peer_ns)
            kw["peer"] = p
        elif kind == "vxlan":
            if vxlan is None:
                raise ValueError(f"vxlan {name} needs VxlanInfo")
            kw.update(vxlan_id=vxlan.vni, vxlan_port=vxlan.port, vxlan_learning=int(vxlan.learning))
            if vxlan.local:
                kw["vxlan_local"] = vxlan.local
        if up:
            kw["state"] = "up"
        desc = f"link add {name} type {kind}" + (f" peer {peer}" + (f" in netns {peer_ns}" if peer_ns else "") if peer else "") \
            + (f" master {master}" if master else "") + (" up" if up else "")

        if kind == "veth":
            self._veth_add(name, peer or "", ns=ns, mtu=mtu, mac=mac, peer_mac=peer_mac, peer_ns=peer_ns,
                           master=master, up=up, desc=desc)
            return

        def fn(ipr):
            self._worker(ns).indexes.pop(name, None)
            if peer:
                self._worker(peer_ns).indexes.pop(peer, None)
            if master is not None:
                kw["master"] = self._index(master, ns)
            ipr.link("add", **kw)
        self._call(ns, desc, fn)

    def _veth_add(self, name: str, peer: str, *, ns: str | None, mtu: int | None, mac: str | None,
                  peer_mac: str | None, peer_ns: str | None, master: str | None, up: bool, desc: str) -> None:
        """`ip link add NAME [master M] [up] type veth peer PEER [netns NS]` as one raw message."""
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
        self._worker(ns).indexes.pop(name, None)
        self._worker(peer_ns).indexes.pop(peer, None)
        peer_attrs: list = [("IFLA_IFNAME", peer)] + ([("IFLA_MTU", mtu)] if mtu is not None else []) \
            + ([("IFLA_ADDRESS", peer_mac)] if peer_mac else [])
        fd = os.open(self.netns_path(peer_ns), os.O_RDONLY | os.O_CLOEXEC) if peer_ns is not None else None
        try:
            if fd is not None:
                peer_attrs.append(("IFLA_NET_NS_FD", fd))

            def fn(r: Rtnl) -> None:
                m = ifinfmsg()
                if up:
                    m["flags"] = m["change"] = _IFF_UP
                attrs: list = [("IFLA_IFNAME", name)]
                if mtu is not None:
                    attrs.append(("IFLA_MTU", mtu))
                if mac:
                    attrs.append(("IFLA_ADDRESS", mac))
                if master is not None:
                    attrs.append(("IFLA_MASTER", self._index(master, ns)))
                attrs.append(("IFLA_LINKINFO", {"attrs": [
                    ("IFLA_INFO_KIND", "veth"),
                    ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]})]}))
                m["attrs"] = attrs
                r.request(m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)
            self._call(ns, desc, fn, raw=True)
        finally:
            if fd is not None:
                os.close(fd)

    def link_del(self, name: str, *, ns: str | None = None) -> None:
        def fn(ipr):
            from pyroute2.netlink.exceptions import NetlinkError
            self._worker(ns).indexes.pop(name, None)
            try:
                ipr.link("del", ifname=name)   # by name: no lookup (and its decode) first
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise
        self._call(ns, f"link del {name}", fn)

    def link_set(self, name: str, *, ns: str | None = None, up: bool | None = None,
                 mtu: int | None = None, master: str | None = None, mac: str | None = None,
                 hairpin: bool | None = None) -> None:
        def fn(r: Rtnl) -> None:
            from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
            index = self._index(name, ns)
            m = ifinfmsg()
            m["index"] = index
            attrs: list = []
            if mtu is not None:
                attrs.append(("IFLA_MTU", mtu))
            if mac is not None:
                attrs.append(("IFLA_ADDRESS", mac))
            if master is not None:
                attrs.append(("IFLA_MASTER", self._index(master, ns)))
            if up is not None:
                m["change"] = _IFF_UP
                m["flags"] = _IFF_UP if up else 0
            if attrs or up is not None:
                m["attrs"] = attrs
                r.request(m, RTM_NEWLINK)
            if hairpin is not None:
                # a port's own setting (the bridge's slave data): only once it has its master
                h = ifinfmsg()
                h["index"] = index
                h["attrs"] = [("IFLA_LINKINFO", {"attrs": [
                    ("IFLA_INFO_SLAVE_KIND", "bridge"),
                    ("IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", 1 if hairpin else 0)]})]})]
                r.request(h, RTM_NEWLINK)
        parts = [f"link set {name}"] + ([f"mtu {mtu}"] if mtu is not None else []) + \
                ([f"address {mac}"] if mac else []) + \
                ([f"master {master}"] if master else []) + ([("up" if up else "down")] if up is not None else []) + \
                ([f"hairpin {'on' if hairpin else 'off'}"] if hairpin is not None else [])
        self._call(ns, " ".join(parts), fn, raw=True)

    # -- addresses
    def addr_dump(self, *, ns: str | None = None) -> list[tuple[str, str]]:
        def fn(ipr):
            names = {m["index"]: m.get("ifname") for m in ipr.link("dump")}
            return [(names.get(a["index"], ""), f"{a.get('address')}/{a['prefixlen']}")
                    for a in ipr.addr("dump", family=_AF_INET)]
        return self._call(ns, "addr dump", fn)

    def addr_list(self, dev: str, *, ns: str | None = None) -> list[str]:
        def fn(ipr):
            idx = self._index(dev, ns)
            return [f"{a.get('address')}/{a['prefixlen']}"
                    for a in ipr.addr("dump", family=_AF_INET) if a["index"] == idx]
        return self._call(ns, f"addr list dev {dev}", fn)

    def addr_add(self, dev: str, cidr: str, *, ns: str | None = None) -> None:
        iface = ipaddress.ip_interface(cidr)

        def fn(r: Rtnl) -> None:      # `ip addr add CIDR dev DEV`: IFA_LOCAL and IFA_ADDRESS
            from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
            m = ifaddrmsg()
            m["family"], m["prefixlen"], m["index"] = _AF_INET, iface.network.prefixlen, self._index(dev, ns)
            m["attrs"] = [("IFA_LOCAL", str(iface.ip)), ("IFA_ADDRESS", str(iface.ip))]
            r.request(m, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL)
        self._call(ns, f"addr add {cidr} dev {dev}", fn, raw=True)

    def addr_flush(self, dev: str, *, ns: str | None = None) -> None:
        def fn(ipr):
            idx = self._index(dev, ns)
            for a in ipr.addr("dump", family=_AF_INET):
                if a["index"] == idx:
                    ipr.addr("del", index=idx, address=a.get("address"), prefixlen=a["prefixlen"])
        self._call(ns, f"addr flush dev {dev}", fn)

    # -- routes
    def route_replace(self, route: Route, *, ns: str | None = None) -> None:
        net = ipaddress.ip_network("0.0.0.0/0" if route.dst == "default" else route.dst)

        def fn(r: Rtnl) -> None:
            from pyroute2.netlink.rtnl.rtmsg import rtmsg
            m = rtmsg()
            m["family"], m["dst_len"], m["table"], m["proto"] = _AF_INET, net.prefixlen, _RT_TABLE_MAIN, route.proto
            m["scope"], m["type"] = 0, _RTN_UNICAST          # universe
            if route.onlink:
                m["flags"] = _RTNH_F_ONLINK
            attrs: list = [("RTA_DST", str(net.network_address))] if net.prefixlen else []
            if route.gateway:
                attrs.append(("RTA_GATEWAY", route.gateway))
            attrs.append(("RTA_OIF", self._index(route.dev, ns)))
            m["attrs"] = attrs
            r.request(m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE)
        self._call(ns, f"route replace {route.dst} via {route.gateway} dev {route.dev}", fn, raw=True)

    def route_del(self, route: Route, *, ns: str | None = None) -> None:
        def fn(ipr):
            idx = self._lookup(ns, route.dev)
            if idx is None:
                return
            kw = {"dst": route.dst, "oif": idx, "table": _RT_TABLE_MAIN}
            if route.gateway:
                kw["gateway"] = route.gateway
            try:
                ipr.route("del", **kw)
            except Exception as exc:  # already gone is fine: deletion is idempotent
                if getattr(exc, "code", None) != errno.ESRCH:
                    raise
        self._call(ns, f"route del {route.dst} dev {route.dev}", fn)

    def route_dump(self, *, ns: str | None = None, dev: str | None = None) -> list[Route]:
        def fn(ipr):
            names = {m["index"]: m.get("ifname") for m in ipr.link("dump")}
            out = []
            for r in ipr.route("dump", family=_AF_INET):
                if (r.get("table") or r["table"]) != _RT_TABLE_MAIN:
                    continue
                name = names.get(r.get("oif"), "")
                if dev is not None and name != dev:
                    continue
                out.append(Route(dst=f"{r.get('dst') or '0.0.0.0'}/{r['dst_len']}", dev=name,
                                 gateway=r.get("gateway"), onlink=bool(r["flags"] & _RTNH_F_ONLINK),
                                 proto=r["proto"]))
            return out
        return self._call(ns, "route dump" + (f" dev {dev}" if dev else ""), fn)

    # -- neighbours and fdb (node namespace)
    def neigh_replace(self, n: Neighbour) -> None:
        def fn(ipr):
            ipr.neigh("replace", dst=n.ip, lladdr=n.mac, ifindex=self._index(n.dev, None),
                      state=_NUD_PERMANENT)
        self._call(None, f"neigh replace {n.ip} lladdr {n.mac} dev {n.dev}", fn)

    def neigh_del(self, n: Neighbour) -> None:
        def fn(ipr):
            idx = self._lookup(None, n.dev)
            if idx is None:
                return
            try:
                ipr.neigh("del", dst=n.ip, ifindex=idx)
            except Exception as exc:
                if getattr(exc, "code", None) != errno.ENOENT:
                    raise
        self._call(None, f"neigh del {n.ip} dev {n.dev}", fn)

    def neigh_dump(self, dev: str) -> list[Neighbour]:
        def fn(ipr):
            idx = self._lookup(None, dev)
            if idx is None:
                return []
            return [Neighbour(dev=dev, ip=m.get("dst"), mac=m.get("lladdr") or "",
                              permanent=bool(m["state"] & _NUD_PERMANENT))
                    for m in ipr.neigh("dump", ifindex=idx, family=_AF_INET)
                    if m["ifindex"] == idx]
        return self._call(None, f"neigh dump dev {dev}", fn)

    def fdb_append(self, e: FdbEntry) -> None:
        def fn(ipr):
            ipr.fdb("append", ifindex=self._index(e.dev, None), lladdr=e.mac, dst=e.dst)
        self._call(None, f"fdb append {e.mac} dst {e.dst} dev {e.dev}", fn)

    def fdb_del(self, e: FdbEntry) -> None:
        def fn(ipr):
            idx = self._lookup(None, e.dev)
            if idx is None:
                return
            try:
                ipr.fdb("del", ifindex=idx, lladdr=e.mac, dst=e.dst)
            except Exception as exc:
                if getattr(exc, "code", None) != errno.ENOENT:
                    raise
        self._call(None, f"fdb del {e.mac} dst {e.dst} dev {e.dev}", fn)

    def fdb_dump(self, dev: str) -> list[FdbEntry]:
        def fn(ipr):
            idx = self._lookup(None, dev)
            if idx is None:
                return []
            return [FdbEntry(dev=dev, mac=m.get("lladdr") or "", dst=m.get("dst") or "")
                    for m in ipr.fdb("dump", ifindex=idx)
                    if m["ifindex"] == idx and m.get("dst")]
        return self._call(None, f"fdb dump dev {dev}", fn)

    # -- sysctl
    def sysctl_set(self, key: str, value: str, *, ns: str | None = None) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        label = ns_label(ns, self.node_ns)
        log.debug("sysctl %s=%s (%s)", key, value, label)

        def fn():
            # /proc/sys/net resolves against the calling *thread's* namespace.
            with open(path, "w") as f:
                f.write(value)
        try:
            self._worker(ns).run(fn)
        except OSError as exc:
            raise NetlinkOpError(exc.errno or errno.EIO, f"sysctl {key}={value} ({label})") from exc
