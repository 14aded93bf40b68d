"""The netlink seam: exactly the kernel verbs the pod network needs, and a fake.

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
a string names a pod namespace under /run/netns.

Deleting something absent and creating a namespace that exists are no-ops, so
callers can be idempotent without racing `get` against `del`. Everything else
that fails raises `NetlinkOpError`, whose message names the verb, the object and
the namespace.

Design notes
------------
* pyroute2 >= 0.9 keeps its socket per *thread*, and a netlink socket belongs to
  the netns its creating thread was in. `setns(CLONE_NEWNET)` is per-thread, so
  each namespace gets one worker thread that entered it once and owns an
  `IPRoute` there: calls are serialized per namespace (which also makes the
  wrapper safe for concurrent pod workers) and cost a queue hop, not a fork.
  pyroute2's own `IPRoute(netns=...)` forks a helper per socket (≈10 ms).
* The requests of a pod's setup (veth add, link set, addr add, route replace, and
  link lookups by name) skip IPRoute: a plain rtnetlink socket per namespace thread
  (`_Rtnl`) sends messages built with pyroute2's message classes and reads only the
  ack. IPRoute's pipeline (an asyncio round and a full decode per request) was most of
  the agent's CPU per pod, and a new pod namespace never opens an IPRoute now. Dumps,
  the bridge, the VXLAN device, neighbours and FDB entries still go through IPRoute.
* Pod-namespace workers are cached (a small LRU) and must be dropped before the
  namespace is removed — a thread parked in a netns keeps it alive, and with it
  the veth. `netns_remove` does that; `release(ns)` lets a caller drop one early.
* Namespaces are created the way iproute2 does (a bind mount of the new
  namespace on /run/netns/NAME, /run/netns a shared mount) so `ip netns exec`
  works on them — but by the namespace's own worker thread (unshare, then
  mount /proc/self/task/TID/ns/net), which stays there to serve the pod-side
  calls that follow; no forked child.
* `RecordingNetlink` keeps an in-memory model with the kernel semantics the
  callers rely on (a veth dies with its peer, links die with their namespace,
  routes/neighbours/FDB entries die with their device, EEXIST/ENODEV) and
  records every call, for unit tests.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import socket
import struct
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol, runtime_checkable

log = logging.getLogger(__name__)

NETNS_RUN_DIR = "/run/netns"

# Routes we install carry this rtnetlink protocol number so that a dump can tell
# ours from anyone else's ("proto 83" in `ip route`; 83 is 'S', unassigned in
# /etc/iproute2/rt_protos).
RTPROT_SHOAL = 83

_RT_TABLE_MAIN = 254
_RTNH_F_ONLINK = 4
_NUD_PERMANENT = 0x80
_NTF_SELF = 0x02
_AF_INET = 2
_LOOPBACK_IFINDEX = 1    # the kernel gives every namespace's lo ifindex 1
_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_SHARED = 1 << 20
_MNT_DETACH = 2
_NETLINK_ROUTE = 0
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_REPLACE, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x100, 0x200, 0x400
_NLMSG_ERROR = 2
_RTM_NEWLINK, _RTM_GETLINK, _RTM_NEWADDR, _RTM_NEWROUTE = 16, 18, 20, 24
_IFF_UP = 1
_RTN_UNICAST = 1


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
                 mtu: int | None = None, master: str | None = None, mac: str | None = None) -> None: ...

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


def _ns_label(ns: str | None, node_ns: str | None) -> str:
    if ns is not None:
        return f"netns {ns}"
    return f"netns {node_ns}" if node_ns else "the node netns"


# ----------------------------------------------------------------------------- real implementation
class _NsWorker:
    """One thread parked in a namespace, owning an IPRoute opened there; and the namespace's
    plain rtnetlink socket, made there and then used from any thread (`rtnl`)."""

    def __init__(self, path: str | None, libc: Any):
        self.path = path
        self._libc = libc
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
        self._local = threading.local()
        self._rtnl: _Rtnl | None = None      # made (and assigned) on this worker's thread only
        # name -> ifindex seen in this namespace (plain dict operations, from any thread). Looking
        # a link up decodes its whole RTM_NEWLINK answer, the largest CPU cost of a pod's setup.
        self.indexes: dict[str, int] = {}

    def _enter(self) -> None:
        if not getattr(self._local, "entered", False):
            if self.path is not None:
                _setns_thread(self._libc, self.path)
            self._local.entered = True

    def _ipr(self):
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            self._enter()
            from pyroute2 import IPRoute
            ipr = IPRoute()
            self._local.ipr = ipr
        return ipr

    def rtnl(self) -> "_Rtnl":
        """This namespace's plain rtnetlink socket, for any thread. It is made on the worker's
        thread, inside the namespace, and keeps that namespace for good (a netlink socket's
        namespace is fixed when it is made), so the requests of a pod's setup need no hand-over
        to the namespace's thread — each was two thread switches, and under load a wait for the
        GIL on each side. `_Rtnl` serializes its requests."""
        r = self._rtnl
        if r is None:
            if getattr(self._local, "entered", False):
                r = self._make_rtnl()        # we are the namespace's thread (an IPRoute call's fn)
            else:
                r = self._pool.submit(self._make_rtnl).result()
        return r

    def _make_rtnl(self) -> "_Rtnl":
        """On the worker's thread only, so the socket is made once and inside the namespace."""
        if self._rtnl is None:
            self._enter()
            self._rtnl = _Rtnl()
        return self._rtnl

    def call(self, fn: Callable[[Any], Any]) -> Any:
        return self._pool.submit(lambda: fn(self._ipr())).result()

    def call_raw(self, fn: Callable[["_Rtnl"], Any]) -> Any:
        """fn(rtnl) on the calling thread, with the namespace's socket (no IPRoute)."""
        return fn(self.rtnl())

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run fn inside the namespace without an IPRoute (sysctl writes)."""
        def job():
            self._enter()
            return fn()
        return self._pool.submit(job).result()

    def create(self) -> None:
        """Make a new namespace from inside the worker thread and bind-mount it on
        `path`; the thread then stays in it, ready for the pod-side calls."""
        libc, path = self._libc, self.path

        def job():
            if libc.unshare(_CLONE_NEWNET) != 0:
                raise NetlinkOpError(ctypes.get_errno(), f"unshare a network namespace for {path}")
            self._local.entered = True    # even if the mount fails: never reuse this thread elsewhere
            src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
            if libc.mount(src, path.encode(), b"none", _MS_BIND, None) != 0:
                raise NetlinkOpError(ctypes.get_errno(), f"bind-mount network namespace on {path}")
            self._make_rtnl()             # the pod's requests follow at once: their socket, made in it
        self._pool.submit(job).result()

    def close(self) -> None:
        def shut():
            ipr = getattr(self._local, "ipr", None)
            if ipr is not None:
                ipr.close()
                self._local.ipr = None
        try:
            self._pool.submit(shut).result()
        finally:
            self._pool.shutdown(wait=True)
            r, self._rtnl = self._rtnl, None
            if r is not None:
                r.close()


class _Rtnl:
    """A plain NETLINK_ROUTE socket, opened in the namespace of the thread that makes it,
    for the requests of a pod's network setup: messages built with pyroute2's message
    classes, and of the answer only the ack (or an RTM_NEWLINK's ifindex) read here.
    pyroute2's IPRoute pipeline (an asyncio round and a full decode of every answer per
    request) cost ≈ 1 ms of CPU per request under load, and opening an IPRoute in each
    new pod namespace a few more; this is ≈ 0.05 ms."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0
        self._lock = threading.Lock()       # one request and its answer at a time, any thread

    def request(self, msg: Any, msg_type: int, flags: int = 0, *, ack: bool = True) -> bytes | None:
        """Send msg; return None on its ack, or (ack=False, a get) the answer's bytes.
        A kernel error raises pyroute2's NetlinkError (as IPRoute does)."""
        with self._lock:
            return self._request(msg, msg_type, flags, ack)

    def _request(self, msg: Any, msg_type: int, flags: int, ack: bool) -> bytes | None:
        from pyroute2.netlink.exceptions import NetlinkError
        self.seq += 1
        seq = self.seq
        h = msg["header"]
        h["type"], h["sequence_number"] = msg_type, seq
        h["flags"] = _NLM_F_REQUEST | (_NLM_F_ACK if ack else 0) | flags
        msg.encode()
        self.sock.send(msg.data)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, typ, _flags, rseq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    break
                if rseq == seq:
                    if typ == _NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, off + 16)[0]
                        if code:
                            raise NetlinkError(code, os.strerror(code))
                        return None
                    if not ack:
                        return data[off:off + length]
                off += (length + 3) & ~3

    def link_index(self, name: str) -> int | None:
        """RTM_GETLINK by name → its ifindex (from the ifinfomsg header, nothing decoded)."""
        from pyroute2.netlink.exceptions import NetlinkError
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
        m = ifinfmsg()
        m["attrs"] = [("IFLA_IFNAME", name)]
        try:
            answer = self.request(m, _RTM_GETLINK, ack=False)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise
        return struct.unpack_from("=i", answer, 16 + 4)[0]     # nlmsghdr, then family, pad, type

    def close(self) -> None:
        with self._lock:
            self.sock.close()


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _setns_thread(libc: Any, path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise NetlinkOpError(e, f"setns into {path}")
    finally:
        os.close(fd)


def _msg_attr(msg: Any, name: str, default: Any = None) -> Any:
    v = msg.get(name)
    return default if v is None else v


class PyrouteNetlink:
    """`Netlink` over pyroute2, bound to a node namespace (None = current)."""

    def __init__(self, *, netns: str | None = None, run_dir: str = NETNS_RUN_DIR,
                 max_pod_workers: int = 8):
        self.node_ns = netns
        self.run_dir = run_dir
        self._libc = _libc()
        self._lock = threading.Lock()
        self._node = _NsWorker(self.netns_path(netns) if netns else None, self._libc)
        self._pods: OrderedDict[str, _NsWorker] = OrderedDict()
        self._max_pod_workers = max_pod_workers

    # -- plumbing
    def _worker(self, ns: str | None) -> _NsWorker:
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
        return self._adopt(ns, _NsWorker(path, self._libc))

    def _adopt(self, ns: str, w: _NsWorker) -> _NsWorker:
        evicted: list[_NsWorker] = []
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
        """fn(IPRoute) in the namespace's thread — or fn(_Rtnl) with raw=True, on this one."""
        label = _ns_label(ns, self.node_ns)
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
        """The link's ifindex, cached per namespace (see _NsWorker.indexes)."""
        if name == "lo":
            return _LOOPBACK_IFINDEX
        cache = self._worker(ns).indexes
        idx = cache.get(name)
        if idx is None:
            idx = self._lookup(ns, name)
            if idx is None:
                raise NetlinkOpError(errno.ENODEV, f"no link {name} ({_ns_label(ns, self.node_ns)})")
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
        if self._libc.mount(b"none", d, None, _MS_SHARED | _MS_REC, None) == 0:
            return
        if ctypes.get_errno() != errno.EINVAL:
            raise NetlinkOpError(ctypes.get_errno(), f"make {self.run_dir} a shared mount")
        if self._libc.mount(d, d, b"none", _MS_BIND | _MS_REC, None) != 0:
            raise NetlinkOpError(ctypes.get_errno(), f"bind-mount {self.run_dir} on itself")
        if self._libc.mount(b"none", d, None, _MS_SHARED | _MS_REC, None) != 0:
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

        worker = _NsWorker(path, self._libc)
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
        if self._libc.umount2(path.encode(), _MNT_DETACH) != 0:
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
        return Link(name=msg.get("ifname"), index=msg["index"], kind=kind,
                    mtu=int(_msg_attr(msg, "mtu", 0)), up=bool(msg["flags"] & 1),
                    mac=_msg_attr(msg, "address", ""),
                    master=names.get(master) if master else None, vxlan=vx)

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

            def fn(r: _Rtnl) -> None:
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
                r.request(m, _RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL)
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
                 mtu: int | None = None, master: str | None = None, mac: str | None = None) -> None:
        def fn(r: _Rtnl) -> None:
            from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
            m = ifinfmsg()
            m["index"] = self._index(name, ns)
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
            if not attrs and up is None:
                return
            m["attrs"] = attrs
            r.request(m, _RTM_NEWLINK)
        parts = [f"link set {name}"] + ([f"mtu {mtu}"] if mtu is not None else []) + \
                ([f"address {mac}"] if mac else []) + \
                ([f"master {master}"] if master else []) + ([("up" if up else "down")] if up is not None else [])
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

        def fn(r: _Rtnl) -> None:      # `ip addr add CIDR dev DEV`: IFA_LOCAL and IFA_ADDRESS
            from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
            m = ifaddrmsg()
            m["family"], m["prefixlen"], m["index"] = _AF_INET, iface.network.prefixlen, self._index(dev, ns)
            m["attrs"] = [("IFA_LOCAL", str(iface.ip)), ("IFA_ADDRESS", str(iface.ip))]
            r.request(m, _RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL)
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

        def fn(r: _Rtnl) -> None:
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
            r.request(m, _RTM_NEWROUTE, _NLM_F_CREATE | _NLM_F_REPLACE)
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
        label = _ns_label(ns, self.node_ns)
        log.debug("sysctl %s=%s (%s)", key, value, label)

        def fn():
            # /proc/sys/net resolves against the calling *thread's* namespace.
            with open(path, "w") as f:
                f.write(value)
        try:
            self._worker(ns).run(fn)
        except OSError as exc:
            raise NetlinkOpError(exc.errno or errno.EIO, f"sysctl {key}={value} ({label})") from exc


# ----------------------------------------------------------------------------- recording fake
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
            raise NetlinkOpError(errno.ENODEV, f"no link {name} ({_ns_label(ns, None)})")
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
            raise NetlinkOpError(errno.EEXIST, f"netlink link add {name} ({_ns_label(ns, None)})")
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
            m.links[name] = replace(m.links[name], master=master, up=up)

    def link_del(self, name: str, *, ns: str | None = None) -> None:
        self.calls.append(("link_del", name, ns))
        self.ns(ns)
        self._drop_link(name, ns)

    def link_set(self, name: str, *, ns: str | None = None, up: bool | None = None,
                 mtu: int | None = None, master: str | None = None, mac: str | None = None) -> None:
        self.calls.append(("link_set", name, ns, up, mtu, master, mac))
        link = self._get(name, ns)
        if master is not None:
            self._get(master, ns)
        self.ns(ns).links[name] = replace(
            link, up=link.up if up is None else up, mtu=link.mtu if mtu is None else mtu,
            master=link.master if master is None else master, mac=link.mac if mac is None else mac)

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
