"""NodeNetwork against RecordingNetlink/RecordingRunner: node, pods, overlay, hostPorts."""
import pytest

from shoal.agent.interfaces import HostPort, Network, Peer
from shoal.agent.network import NodeNetwork, RecordingNetlink, RecordingRunner, veth_name
from shoal.agent.network.node import mac_for_ip
from shoal.agent.network.netlink import RTPROT_SHOAL, FdbEntry, Neighbour, Route, VxlanInfo

pytestmark = pytest.mark.unit

UID_A = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
UID_B = "ffeeddcc-bbaa-9988-7766-554433221100"


@pytest.fixture
def nl():
    nl = RecordingNetlink()
    # an underlay: eth0 192.168.213.11/24, MTU 1500, default route
    nl.link_add("eth0", "bridge", mtu=1500)   # kind does not matter to NodeNetwork
    nl.link_set("eth0", up=True)
    nl.addr_add("eth0", "192.168.213.11/24")
    nl.route_replace(Route(dst="0.0.0.0/0", dev="eth0", gateway="192.168.213.1", proto=4))
    nl.calls.clear()
    return nl


@pytest.fixture
def runner():
    return RecordingRunner()


@pytest.fixture
def net(tmp_path, nl, runner):
    n = NodeNetwork(str(tmp_path / "state"), netlink=nl, runner=runner)
    n.ensure_node("10.244.1.0/24")
    return n


def test_is_a_network(net):
    assert isinstance(net, Network)


def test_ensure_node_builds_bridge_and_sysctls(net, nl):
    br = nl.ns().links["shoal0"]
    assert br.kind == "bridge" and br.up and br.mtu == 1450
    assert br.mac == "0a:58:0a:f4:01:01"           # fixed: never follows its ports
    assert nl.ns().addrs["shoal0"] == ["10.244.1.1/24"]
    assert nl.ns().sysctls == {"net.ipv4.ip_forward": "1", "net.ipv4.conf.shoal0.route_localnet": "0"}


def test_ensure_node_installs_the_nft_table_with_the_guard(net, runner):
    (argv, script), = runner.calls
    assert argv == ["nft", "-f", "-"] and 'iifname "shoal0" ip daddr 127.0.0.0/8 drop' in script


def test_ensure_node_is_idempotent_and_repairs(net, nl):
    nl.calls.clear()
    net.ensure_node("10.244.1.0/24")
    assert not [c for c in nl.calls if c[0] in ("link_add", "addr_add", "addr_flush", "link_del")]
    nl.addr_flush("shoal0")
    nl.link_set("shoal0", up=False)
    net.ensure_node("10.244.1.0/24")
    assert nl.ns().addrs["shoal0"] == ["10.244.1.1/24"] and nl.ns().links["shoal0"].up


def test_ensure_node_rejects_bad_cidr_naming_it(tmp_path, nl, runner):
    n = NodeNetwork(str(tmp_path), netlink=nl, runner=runner)
    with pytest.raises(ValueError, match="10.244.1.5/24"):
        n.ensure_node("10.244.1.5/24")


def test_setup_pod_builds_netns_veth_address_route(net, nl):
    pn = net.setup_pod(UID_A, "web-1")
    ns = "shoal-" + UID_A[:12]
    assert pn.pod_uid == UID_A and pn.ip == "10.244.1.2" and pn.netns_path == f"/run/netns/{ns}"
    host = nl.ns().links[veth_name(UID_A)]
    assert host.kind == "veth" and host.master == "shoal0" and host.up and host.mtu == 1450
    assert veth_name(UID_A).startswith("veth") and len(veth_name(UID_A)) == 12
    pod = nl.ns(ns)
    assert pod.links["eth0"].up and pod.links["eth0"].mtu == 1450 and pod.links["lo"].up
    assert pod.links["eth0"].mac == "0a:58:0a:f4:01:02"   # derived from the IP
    assert pod.addrs["eth0"] == ["10.244.1.2/24"]
    assert pod.routes == [Route(dst="0.0.0.0/0", dev="eth0", gateway="10.244.1.1")]
    assert ("release", ns) in nl.calls
    assert net.pods() == [UID_A]


def test_setup_pod_twice_same_result_and_no_changes(net, nl):
    first = net.setup_pod(UID_A, "web-1")
    nl.calls.clear()
    assert net.setup_pod(UID_A, "web-1") == first
    mutating = {"link_add", "link_del", "addr_add", "addr_flush", "route_replace", "link_set"}
    assert [c for c in nl.calls if c[0] in mutating] == []


def test_setup_pod_repairs_missing_pieces(net, nl):
    net.setup_pod(UID_A, "web-1")
    ns = "shoal-" + UID_A[:12]
    nl.link_del(veth_name(UID_A))                  # takes eth0 with it
    assert "eth0" not in nl.ns(ns).links
    again = net.setup_pod(UID_A, "web-1")
    assert again.ip == "10.244.1.2"
    assert nl.ns(ns).addrs["eth0"] == ["10.244.1.2/24"] and nl.ns().links[veth_name(UID_A)].master == "shoal0"
    # a wrong address and a lost default route
    nl.addr_flush("eth0", ns=ns)
    nl.addr_add("eth0", "10.9.9.9/24", ns=ns)
    nl.ns(ns).routes.clear()
    net.setup_pod(UID_A, "web-1")
    assert nl.ns(ns).addrs["eth0"] == ["10.244.1.2/24"]
    assert nl.ns(ns).routes == [Route(dst="0.0.0.0/0", dev="eth0", gateway="10.244.1.1")]
    # a changed MAC is put back
    nl.link_set("eth0", ns=ns, mac="02:99:99:99:99:99")
    net.setup_pod(UID_A, "web-1")
    assert nl.ns(ns).links["eth0"].mac == "0a:58:0a:f4:01:02"
    # whole netns gone (host reboot: /run is tmpfs)
    nl.netns_remove(ns)
    assert net.setup_pod(UID_A, "web-1").ip == "10.244.1.2" and nl.ns(ns).links["eth0"].up


def test_same_ip_after_agent_restart(tmp_path, nl, runner):
    state = str(tmp_path / "s")
    n1 = NodeNetwork(state, netlink=nl, runner=runner)
    n1.ensure_node("10.244.1.0/24")
    ip_b = (n1.setup_pod(UID_A, "a"), n1.setup_pod(UID_B, "b"))[1].ip
    n2 = NodeNetwork(state, netlink=nl, runner=runner)
    n2.ensure_node("10.244.1.0/24")
    assert n2.setup_pod(UID_B, "b").ip == ip_b and n2.pods() == sorted([UID_A, UID_B])


def test_teardown_removes_everything_and_is_idempotent(net, nl):
    net.setup_pod(UID_A, "web-1")
    net.setup_pod(UID_B, "web-2")
    net.teardown_pod(UID_A)
    assert "shoal-" + UID_A[:12] not in nl.spaces
    assert veth_name(UID_A) not in nl.ns().links and veth_name(UID_B) in nl.ns().links
    assert net.pods() == [UID_B]
    net.teardown_pod(UID_A)
    net.teardown_pod("never-existed")
    assert net.pods() == [UID_B]


def test_setup_before_ensure_node_explains(tmp_path, nl, runner):
    n = NodeNetwork(str(tmp_path), netlink=nl, runner=runner)
    with pytest.raises(RuntimeError, match=r"web-1.*ensure_node"):
        n.setup_pod(UID_A, "web-1")


def test_explicit_mtu_and_prefix(tmp_path, nl, runner):
    n = NodeNetwork(str(tmp_path), netlink=nl, runner=runner, mtu=1400, netns_prefix="lab1-h1-")
    n.ensure_node("10.244.7.0/24")
    pn = n.setup_pod(UID_A, "x")
    assert pn.netns_path == "/run/netns/lab1-h1-" + UID_A[:12]
    assert nl.ns("lab1-h1-" + UID_A[:12]).links["eth0"].mtu == 1400


# ---------------------------------------------------------------- overlay
def test_ensure_overlay_creates_device(net, nl, runner):
    mac = net.ensure_overlay("192.168.213.11")
    vx = nl.ns().links["shoal.1"]
    assert mac == vx.mac and vx.up and vx.mtu == 1450
    assert vx.vxlan == VxlanInfo(vni=1, port=8472, local="192.168.213.11", learning=False)
    assert nl.ns().addrs["shoal.1"] == ["10.244.1.0/32"]
    assert (["ethtool", "-K", "shoal.1", "tx", "off"], None) in runner.calls


def test_ensure_overlay_reuses_compatible_device(net, nl):
    mac = net.ensure_overlay("192.168.213.11")
    nl.calls.clear()
    assert net.ensure_overlay("192.168.213.11") == mac
    assert not [c for c in nl.calls if c[0] in ("link_add", "link_del")]


@pytest.mark.parametrize("vx", [
    VxlanInfo(vni=2, port=8472, local="192.168.213.11"),
    VxlanInfo(vni=1, port=4789, local="192.168.213.11"),
    VxlanInfo(vni=1, port=8472, local="192.168.213.99"),
    VxlanInfo(vni=1, port=8472, local="192.168.213.11", learning=True),
])
def test_ensure_overlay_replaces_incompatible_device(net, nl, vx):
    nl.link_add("shoal.1", "vxlan", mtu=1450, vxlan=vx)
    old = nl.ns().links["shoal.1"].index
    net.ensure_overlay("192.168.213.11")
    new = nl.ns().links["shoal.1"]
    assert new.index != old and new.vxlan == VxlanInfo(1, 8472, "192.168.213.11", False)


def test_ensure_overlay_needs_an_assigned_underlay(net):
    with pytest.raises(RuntimeError, match="192.168.213.77"):
        net.ensure_overlay("192.168.213.77")


def test_sync_peers_converges_and_removes(net, nl):
    net.ensure_overlay("192.168.213.11")
    b = Peer("b", "192.168.213.12", "aa:bb:cc:00:00:02", "10.244.2.0/24")
    c = Peer("c", "192.168.213.13", "aa:bb:cc:00:00:03", "10.244.3.0/24")
    me = Peer("a", "192.168.213.11", nl.ns().links["shoal.1"].mac, "10.244.1.0/24")
    net.sync_peers([me, b, c])
    m = nl.ns()
    assert sorted(r.dst for r in m.routes if r.dev == "shoal.1") == ["10.244.2.0/24", "10.244.3.0/24"]
    assert Route("10.244.2.0/24", "shoal.1", "10.244.2.0", True, RTPROT_SHOAL) in m.routes
    assert Neighbour("shoal.1", "10.244.3.0", "aa:bb:cc:00:00:03") in m.neighs
    assert FdbEntry("shoal.1", "aa:bb:cc:00:00:02", "192.168.213.12") in m.fdb
    nl.calls.clear()
    net.sync_peers([me, b, c])                         # converged: reads only
    assert {c[0] for c in nl.calls} <= {"link_get", "route_dump", "neigh_dump", "fdb_dump"}
    net.sync_peers([b])
    assert [r.dst for r in m.routes if r.dev == "shoal.1"] == ["10.244.2.0/24"]
    assert [n.ip for n in m.neighs] == ["10.244.2.0"] and [f.mac for f in m.fdb] == ["aa:bb:cc:00:00:02"]
    # the default route on eth0 is not ours to touch
    assert Route(dst="0.0.0.0/0", dev="eth0", gateway="192.168.213.1", proto=4) in m.routes


def test_sync_peers_before_overlay_explains(net):
    with pytest.raises(RuntimeError, match="ensure_overlay"):
        net.sync_peers([])


# ---------------------------------------------------------------- hostPorts
def test_host_ports_rendered_and_reapplied_only_on_change(net, runner):
    pa = net.setup_pod(UID_A, "web-1")
    runner.calls.clear()
    net.sync_host_ports([HostPort(UID_A, 18080, 8080)])
    (argv, script), = [c for c in runner.calls if c[0][0] == "nft"]
    assert argv == ["nft", "-f", "-"]
    assert f"tcp dport 18080 dnat to {pa.ip}:8080" in script
    net.sync_host_ports([HostPort(UID_A, 18080, 8080)])
    assert len([c for c in runner.calls if c[0][0] == "nft"]) == 1


def test_host_ports_follow_pod_setup_and_teardown(net, runner):
    net.sync_host_ports([HostPort(UID_B, 19090, 9090, "UDP")])     # pod not set up yet
    assert "dport 19090" not in runner.calls[-1][1]
    pb = net.setup_pod(UID_B, "dns")
    assert f"udp dport 19090 dnat to {pb.ip}:9090" in runner.calls[-1][1]
    net.teardown_pod(UID_B)
    assert "dport 19090" not in runner.calls[-1][1]


def test_mac_for_ip():
    assert mac_for_ip("10.244.1.2") == "0a:58:0a:f4:01:02"
    assert mac_for_ip("192.168.213.255") == "0a:58:c0:a8:d5:ff"
