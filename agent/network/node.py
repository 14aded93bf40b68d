"""`NodeNetwork`: the real `agent.interfaces.Network` of one node.

Contract (see agent/interfaces.py): every verb is idempotent and level-based —
calling it again converges, repairing whatever went missing (a deleted veth, a
flushed address, a hand-removed route) without disturbing what is right.

    node netns (the host, or a lab host netns)            pod netns shoal-<uid[:12]>
    ┌──────────────────────────────────────────┐          ┌──────────────────────┐
    │ shoal0 (bridge) 10.244.N.1/24            │          │ eth0 10.244.N.k/24   │
    │   └─ veth<8 hex of sha256(uid)> ─────────┼── veth ──┤ default via .1       │
    │ shoal.1 (vxlan) 10.244.N.0/32            │          │ lo up                │
    │ nft table ip shoal (hostPorts)           │          └──────────────────────┘
    └──────────────────────────────────────────┘

State on disk (`state_dir/network.json`, see `ipam.NodeState`): the pod CIDR
and per pod uid its IP, name, netns and veth — the single source for `pods()`
and for "same IP after a restart". Kernel state is always re-read, never
cached, except the last hostPort ruleset applied (to skip identical `nft`
runs) and the desired hostPort set (so setup/teardown of a pod can re-render
its ports without waiting for the agent's next sync).

Namespace targeting: `netlink` and `runner` are bound to the node namespace
(the current one for a real agent — a lab agent started by `ip netns exec`
lives in its host netns already — or an explicit one, as tests and the lab do).

MTU: pod interfaces and the bridge get `mtu` if given, else the MTU of the
node's default-route interface minus the 50 bytes of VXLAN overhead, so a pod
packet always fits the overlay. The VXLAN device gets the MTU of the interface
holding the underlay address minus 50.

Forwarding/NAT footprint: `net.ipv4.ip_forward=1` (routing between bridge and
overlay), `route_localnet=0` on the bridge (hostPorts are never reached via
127.0.0.1, issue 17; set explicitly to undo older shoal's 1), and
the `ip shoal` nft table of `hostports` (installed by `ensure_node`, with a
guard against pod packets to 127.0.0.0/8). No masquerade for pod egress: pod
traffic is routed inside the cluster CIDR and goes nowhere else. br_netfilter
is neither required nor configured: nothing here depends on bridged frames
traversing the IP hooks. But where br_netfilter *is* loaded (Docker loads it), a
bridged frame runs the IP hooks, and a pod's packet DNATed back to itself (hairpin: a
pod through its own Service or hostPort) is then bridged out of the port it came in on,
which a bridge refuses unless the port is in hairpin mode: every pod's veth is (kubelet's
`hairpin-veth`; harmless without br_netfilter).
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import threading

from shoal.agent.interfaces import HostPort, Peer, PodNet

from shoal.agent.network import hostports as hp
from shoal.agent.network.ipam import NodeState, gateway_of
from shoal.agent.network.netlink import FdbEntry, Neighbour, Netlink, NetlinkOpError, Route, VxlanInfo
from shoal.agent.network.overlay import VXLAN_OVERHEAD, Action, Observed, desired_entries, plan_peer_sync, vtep_address
from shoal.agent.network.runner import Runner

log = logging.getLogger(__name__)

DEFAULT_MTU = 1500


def mac_for_ip(ip: str) -> str:
    """A stable, locally administered unicast MAC for an IPv4 address: 0a:58:<ip>.

    Pod interfaces and the bridge get MACs derived from their addresses, so a
    neighbour entry cached anywhere on the bridge stays right when a pod is
    re-created or an address is reused; and the bridge keeps its MAC instead of
    taking the lowest MAC of its ports, which changes as pods come and go and
    would black-hole pods' cached gateway entries."""
    return "0a:58:" + ":".join(f"{int(o):02x}" for o in ipaddress.IPv4Address(ip).packed)


def nft_table_for(bridge: str) -> str:
    """`shoal` for the default bridge, else `shoal_<bridge>` (nft names: letters, digits, `_`)."""
    if bridge == "shoal0":
        return hp.TABLE
    return hp.TABLE + "_" + re.sub(r"[^A-Za-z0-9_]", "_", bridge)


def veth_name(pod_uid: str) -> str:
    """Host-side veth: 'veth' + 8 hex of sha256(uid) — stable across restarts, ≤ 15 chars."""
    return "veth" + hashlib.sha256(pod_uid.encode()).hexdigest()[:8]


class NodeNetwork:
    def __init__(self, state_dir: str, *, netlink: Netlink, runner: Runner,
                 bridge: str = "shoal0", netns_prefix: str = "shoal-",
                 vxlan_dev: str = "shoal.1", vni: int = 1, vxlan_port: int = 8472,
                 mtu: int | None = None, pod_ifname: str = "eth0", nft_table: str | None = None):
        self.netlink = netlink
        self.runner = runner
        self.state = NodeState(state_dir)
        self.bridge = bridge
        # One nft table per bridge, so that two agents on one host (a second `shoal up`,
        # e2e tests) never overwrite each other's hostPorts.
        self.nft_table = nft_table or nft_table_for(bridge)
        self.netns_prefix = netns_prefix
        self.vxlan_dev = vxlan_dev
        self.vni = vni
        self.vxlan_port = vxlan_port
        self.pod_ifname = pod_ifname
        self._mtu = mtu
        self._lock = threading.Lock()     # guards the fields below
        self._desired_ports: list[HostPort] = []
        self._applied_ruleset: str | None = None
        self._underlay_ip: str | None = None

    # ------------------------------------------------------------------ helpers
    def netns_name(self, pod_uid: str) -> str:
        return self.netns_prefix + pod_uid[:12]

    def _pod_cidr(self, *, for_what: str) -> str:
        cidr = self.state.pod_cidr()
        if cidr is None:
            raise RuntimeError(f"{for_what}: the node's pod CIDR is unknown — call ensure_node(pod_cidr) first")
        return cidr

    def pod_mtu(self) -> int:
        if self._mtu is None:
            self._mtu = self._detect_underlay_mtu() - VXLAN_OVERHEAD
            log.info("pod MTU %d (underlay MTU − %d)", self._mtu, VXLAN_OVERHEAD)
        return self._mtu

    def _detect_underlay_mtu(self) -> int:
        links = {l.name: l for l in self.netlink.link_list()}
        for r in self.netlink.route_dump():
            if r.dst == "0.0.0.0/0" and r.dev in links:
                return links[r.dev].mtu
        ours = {self.bridge, self.vxlan_dev, "lo"}
        mtus = [l.mtu for l in links.values() if l.name not in ours and l.up and not l.name.startswith("veth")]
        return max(mtus) if mtus else DEFAULT_MTU

    def _ensure_addr(self, dev: str, cidr: str, *, ns: str | None = None) -> None:
        have = self.netlink.addr_list(dev, ns=ns)
        if have == [cidr]:
            return
        if have:
            log.info("replacing addresses %s on %s with %s", have, dev, cidr)
            self.netlink.addr_flush(dev, ns=ns)
        self.netlink.addr_add(dev, cidr, ns=ns)

    # ------------------------------------------------------------------ node
    def ensure_node(self, pod_cidr: str) -> None:
        try:
            net = ipaddress.IPv4Network(pod_cidr, strict=True)
        except ValueError as exc:
            raise ValueError(f"node podCIDR {pod_cidr!r} is not an IPv4 network: {exc}") from exc
        if net.prefixlen > 30:
            raise ValueError(f"node podCIDR {pod_cidr} is too small for a gateway and pods")
        old = self.state.set_pod_cidr(str(net))
        if old is not None and old != str(net):
            log.warning("node pod CIDR changed from %s to %s; pods allocated from %s get new addresses on their next setup", old, net, old)
        mtu = self.pod_mtu()
        br = self.netlink.link_get(self.bridge)
        if br is not None and br.kind != "bridge":
            log.warning("%s exists but is a %r, not a bridge; recreating it", self.bridge, br.kind)
            self.netlink.link_del(self.bridge)
            br = None
        gw = gateway_of(str(net))
        if br is None:
            self.netlink.link_add(self.bridge, "bridge", mac=mac_for_ip(gw))
            br = self.netlink.link_get(self.bridge)
        if br is not None and br.mac != mac_for_ip(gw):
            self.netlink.link_set(self.bridge, mac=mac_for_ip(gw))
        # Set explicitly (not at creation) so the kernel marks it user-set and
        # does not re-derive it from the ports (1500 when the last pod goes).
        if br is not None and br.mtu != mtu:
            self.netlink.link_set(self.bridge, mtu=mtu)
        self._ensure_addr(self.bridge, f"{gateway_of(str(net))}/{net.prefixlen}")
        if br is None or not br.up:
            self.netlink.link_set(self.bridge, up=True)
        self.netlink.sysctl_set("net.ipv4.ip_forward", "1")
        # No hostPort through 127.0.0.1 (agent.network.hostports): no loopback-sourced
        # packet may be routed out of the bridge. Older shoal set 1 here; undo it.
        self.netlink.sysctl_set(f"net.ipv4.conf.{self.bridge}.route_localnet", "0")
        # The nft table carries the loopback guard, so it is installed now, with
        # whatever hostPorts are currently desired.
        self._applied_ruleset = None
        self._apply_host_ports()

    # ------------------------------------------------------------------ pods
    def reserve_pod(self, pod_uid: str, pod_name: str) -> PodNet:
        # allocate() itself refuses (naming the pod) while the node has no pod CIDR
        ns = self.netns_name(pod_uid)
        rec = self.state.allocate(pod_uid, name=pod_name, netns=ns, veth=veth_name(pod_uid))
        return PodNet(pod_uid=pod_uid, netns_path=self.netlink.netns_path(ns), ip=rec.ip)

    def setup_pod(self, pod_uid: str, pod_name: str) -> PodNet:
        cidr = self._pod_cidr(for_what=f"setup of pod {pod_name} ({pod_uid})")
        net = ipaddress.ip_network(cidr)
        ns = self.netns_name(pod_uid)
        veth = veth_name(pod_uid)
        rec = self.state.allocate(pod_uid, name=pod_name, netns=ns, veth=veth)
        mtu = self.pod_mtu()
        ifn = self.pod_ifname
        try:
            created = self.netlink.netns_create(ns)
            if self._ensure_veth(ns, veth, pod_name, rec.ip, created=created):
                # Fresh pair (the common path): nothing to observe, only to do.
                self.netlink.link_set("lo", ns=ns, up=True)
                self.netlink.addr_add(ifn, f"{rec.ip}/{net.prefixlen}", ns=ns)
                self.netlink.link_set(ifn, ns=ns, up=True)
                self.netlink.route_replace(Route(dst="0.0.0.0/0", dev=ifn, gateway=gateway_of(cidr)), ns=ns)
            else:
                self._repair_pod(ns, veth, rec.ip, net.prefixlen, gateway_of(cidr), mtu)
        except NetlinkOpError as exc:
            raise NetlinkOpError(exc.errno or 0, f"network setup of pod {pod_name} ({pod_uid}) in netns {ns}: {exc}") from exc
        finally:
            self.netlink.release(ns)
        with self._lock:
            has_ports = any(p.pod_uid == pod_uid for p in self._desired_ports)
        if has_ports:
            self._apply_host_ports()
        return PodNet(pod_uid=pod_uid, netns_path=self.netlink.netns_path(ns), ip=rec.ip)

    def _ensure_veth(self, ns: str, veth: str, pod_name: str, ip: str, *, created: bool) -> bool:
        """Make sure the pair exists; True if it was (re)created just now."""
        ifn = self.pod_ifname
        host = self.netlink.link_get(veth)
        if host is not None and host.kind == "veth" and not created:
            inner = self.netlink.link_get(ifn, ns=ns)
            if inner is not None and inner.kind == "veth":
                return False
            log.info("pod %s: repairing veth pair %s/%s (pod side missing)", pod_name, veth, ifn)
        elif host is not None:
            log.info("pod %s: replacing %s (a %s, or its pod side is gone with the netns)", pod_name, veth, host.kind)
        if host is not None:
            self.netlink.link_del(veth)        # a veth takes its peer along
        if not created:
            self.netlink.link_del(ifn, ns=ns)  # an orphaned pod side from a crash
        self.netlink.link_add(veth, "veth", mtu=self.pod_mtu(), peer=ifn, peer_ns=ns, peer_mac=mac_for_ip(ip),
                              master=self.bridge, up=True)
        self.netlink.link_set(veth, hairpin=True)     # see the module docstring: hairpin
        return True

    def _repair_pod(self, ns: str, veth: str, ip: str, prefixlen: int, gw: str, mtu: int) -> None:
        """Observe an existing pod network and fix only what differs."""
        ifn = self.pod_ifname
        host = self.netlink.link_get(veth)
        if host is not None and (host.mtu != mtu or host.master != self.bridge or not host.up):
            self.netlink.link_set(veth, mtu=mtu if host.mtu != mtu else None, master=self.bridge, up=True,
                                  hairpin=True)
        elif host is not None and host.hairpin is not True:
            self.netlink.link_set(veth, hairpin=True)
        lo = self.netlink.link_get("lo", ns=ns)
        if lo is None or not lo.up:
            self.netlink.link_set("lo", ns=ns, up=True)
        inner = self.netlink.link_get(ifn, ns=ns)
        mac = mac_for_ip(ip)
        if inner is not None and (inner.mtu != mtu or not inner.up or inner.mac != mac):
            self.netlink.link_set(ifn, ns=ns, mtu=mtu if inner.mtu != mtu else None, up=True,
                                  mac=mac if inner.mac != mac else None)
        self._ensure_addr(ifn, f"{ip}/{prefixlen}", ns=ns)
        default = [r for r in self.netlink.route_dump(ns=ns) if r.dst == "0.0.0.0/0"]
        if not any(r.gateway == gw and r.dev == ifn for r in default):
            self.netlink.route_replace(Route(dst="0.0.0.0/0", dev=ifn, gateway=gw), ns=ns)

    def teardown_pod(self, pod_uid: str) -> None:
        rec = self.state.get(pod_uid)
        ns = rec.netns if rec and rec.netns else self.netns_name(pod_uid)
        veth = rec.veth if rec and rec.veth else veth_name(pod_uid)
        self.netlink.link_del(veth)       # takes the pod side with it
        self.netlink.netns_remove(ns)
        self.state.free(pod_uid)
        with self._lock:
            had_ports = any(p.pod_uid == pod_uid for p in self._desired_ports)
            self._desired_ports = [p for p in self._desired_ports if p.pod_uid != pod_uid]
        if had_ports:
            self._apply_host_ports()
        log.info("pod %s: network torn down (netns %s, veth %s%s)", pod_uid, ns, veth,
                 f", released {rec.ip}" if rec else "")

    def pods(self) -> list[str]:
        return sorted(self.state.pods())

    # ------------------------------------------------------------------ hostPorts
    def sync_host_ports(self, ports: list[HostPort]) -> None:
        with self._lock:
            self._desired_ports = list(ports)
        self._apply_host_ports()

    def _apply_host_ports(self) -> None:
        with self._lock:
            ports = list(self._desired_ports)
            applied = self._applied_ruleset
        # Only published pods' addresses are needed (reading every pod's record on each pod
        # start made a burst of N starts O(N²) for nodes that publish nothing).
        pod_ips = {uid: r.ip for uid, r in self.state.pods().items()} if ports else {}
        script, problems = hp.render_ruleset(ports, pod_ips, pod_cidr=self.state.pod_cidr(), bridge=self.bridge,
                                            table=self.nft_table)
        for p in problems:
            log.warning("hostPort skipped: %s", p.message)
        if script == applied:
            return
        self.runner.run(["nft", "-f", "-"], input=script)
        with self._lock:
            self._applied_ruleset = script

    # ------------------------------------------------------------------ overlay
    def ensure_overlay(self, underlay_ip: str) -> str:
        try:
            ipaddress.IPv4Address(underlay_ip)
        except ValueError as exc:
            raise ValueError(f"underlay address {underlay_ip!r} is not an IPv4 address") from exc
        cidr = self._pod_cidr(for_what=f"overlay device {self.vxlan_dev}")
        owner = next((dev for dev, a in self.netlink.addr_dump() if a.split("/")[0] == underlay_ip), None)
        if owner is None:
            raise RuntimeError(f"underlay address {underlay_ip} is not assigned to any interface of this node's namespace")
        under = self.netlink.link_get(owner)
        mtu = (under.mtu if under else DEFAULT_MTU) - VXLAN_OVERHEAD
        want = VxlanInfo(vni=self.vni, port=self.vxlan_port, local=underlay_ip, learning=False)
        dev = self.vxlan_dev
        link = self.netlink.link_get(dev)
        if link is not None and (link.kind != "vxlan" or link.vxlan != want):
            log.info("replacing %s: found %s %s, want vxlan %s", dev, link.kind or "link", link.vxlan, want)
            self.netlink.link_del(dev)
            link = None
        created = link is None
        if created:
            self.netlink.link_add(dev, "vxlan", mtu=mtu, vxlan=want)
        elif link.mtu != mtu:
            self.netlink.link_set(dev, mtu=mtu)
        # Idempotent and cheap; re-applied on every start in case a udev rule or
        # an operator turned it back on.
        self.runner.run(["ethtool", "-K", dev, "tx", "off"])
        self._ensure_addr(dev, f"{vtep_address(cidr)}/32")
        if created or not link.up:
            self.netlink.link_set(dev, up=True)
        link = self.netlink.link_get(dev)
        if link is None:
            raise RuntimeError(f"overlay device {dev} vanished right after creation")
        with self._lock:
            self._underlay_ip = underlay_ip
        log.info("overlay %s ready: vni %d port %d local %s mtu %d mac %s", dev, self.vni, self.vxlan_port,
                 underlay_ip, mtu, link.mac)
        return link.mac

    def observe_overlay(self) -> Observed:
        dev = self.vxlan_dev
        return Observed(routes=self.netlink.route_dump(dev=dev), neighs=self.netlink.neigh_dump(dev),
                        fdb=self.netlink.fdb_dump(dev))

    def sync_peers(self, peers: list[Peer]) -> None:
        dev = self.vxlan_dev
        if self.netlink.link_get(dev) is None:
            raise RuntimeError(f"sync_peers: overlay device {dev} does not exist — call ensure_overlay(underlay_ip) first")
        cidr = self.state.pod_cidr()
        with self._lock:
            underlay = self._underlay_ip
        _, problems = desired_entries(peers, dev=dev, local_cidr=cidr, local_underlay=underlay)
        for msg in problems:
            log.warning("overlay: %s", msg)
        actions = plan_peer_sync(peers, self.observe_overlay(), dev=dev, local_cidr=cidr, local_underlay=underlay)
        for a in actions:
            log.info("overlay: %s", a)
            self._execute(a)

    def _execute(self, a: Action) -> None:
        e = a.entry
        if isinstance(e, Route):
            (self.netlink.route_replace if a.op == "replace" else self.netlink.route_del)(e)
        elif isinstance(e, Neighbour):
            (self.netlink.neigh_replace if a.op == "replace" else self.netlink.neigh_del)(e)
        elif isinstance(e, FdbEntry):
            (self.netlink.fdb_append if a.op == "append" else self.netlink.fdb_del)(e)
