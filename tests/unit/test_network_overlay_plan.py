"""plan_peer_sync: table tests over (desired peers, observed kernel entries)."""
import pytest

from shoal.agent.interfaces import Peer
from shoal.agent.network.netlink import RTPROT_SHOAL, FdbEntry, Neighbour, Route
from shoal.agent.network.overlay import Action, Observed, desired_entries, plan_peer_sync

pytestmark = pytest.mark.unit

DEV = "shoal.1"
B = Peer(node="b", underlay_ip="192.168.213.12", vtep_mac="aa:bb:cc:00:00:02", pod_cidr="10.244.2.0/24")
C = Peer(node="c", underlay_ip="192.168.213.13", vtep_mac="aa:bb:cc:00:00:03", pod_cidr="10.244.3.0/24")


def entries(p: Peer, *, mac=None, ip=None):
    gw = p.pod_cidr.split("/")[0]
    return (Route(dst=p.pod_cidr, dev=DEV, gateway=gw, onlink=True, proto=RTPROT_SHOAL),
            Neighbour(dev=DEV, ip=gw, mac=mac or p.vtep_mac),
            FdbEntry(dev=DEV, mac=mac or p.vtep_mac, dst=ip or p.underlay_ip))


def observed(*peers_entries, extra_routes=(), extra_neighs=(), extra_fdb=()):
    rs, ns, fs = list(extra_routes), list(extra_neighs), list(extra_fdb)
    for r, n, f in peers_entries:
        rs.append(r), ns.append(n), fs.append(f)
    return Observed(routes=rs, neighs=ns, fdb=fs)


def plan(desired, obs, **kw):
    return [(a.op, a.entry) for a in plan_peer_sync(desired, obs, dev=DEV, **kw)]


def test_add_two_peers_fdb_then_neigh_then_route():
    got = plan([B, C], observed())
    rb, nb, fb = entries(B)
    rc, nc, fc = entries(C)
    assert got == [("append", fb), ("append", fc), ("replace", nb), ("replace", nc),
                   ("replace", rb), ("replace", rc)]


def test_noop_when_converged():
    assert plan([B, C], observed(entries(B), entries(C))) == []


def test_remove_peer_route_then_neigh_then_fdb():
    rc, nc, fc = entries(C)
    assert plan([B], observed(entries(B), entries(C))) == [("delete", rc), ("delete", nc), ("delete", fc)]


def test_remove_all():
    assert len(plan([], observed(entries(B), entries(C)))) == 6


def test_mac_change_replaces_neigh_and_swaps_fdb():
    new = Peer(B.node, B.underlay_ip, "aa:bb:cc:00:00:99", B.pod_cidr)
    _, _, old_fdb = entries(B)
    _, n, f = entries(new)
    assert plan([new], observed(entries(B))) == [("delete", old_fdb), ("append", f), ("replace", n)]


def test_underlay_ip_change_swaps_fdb_only():
    moved = Peer(B.node, "192.168.213.50", B.vtep_mac, B.pod_cidr)
    _, _, old = entries(B)
    _, _, new = entries(moved)
    assert plan([moved], observed(entries(B))) == [("delete", old), ("append", new)]


def test_mac_case_is_normalised():
    upper = Peer(B.node, B.underlay_ip, B.vtep_mac.upper(), B.pod_cidr)
    assert plan([upper], observed(entries(B))) == []


def test_route_with_wrong_gateway_or_foreign_proto_is_replaced():
    r, n, f = entries(B)
    bad = Route(dst=r.dst, dev=DEV, gateway="10.244.2.7", onlink=True, proto=RTPROT_SHOAL)
    assert plan([B], observed(extra_routes=[bad], extra_neighs=[n], extra_fdb=[f])) == [("replace", r)]
    foreign = Route(dst=r.dst, dev=DEV, gateway=r.gateway, onlink=True, proto=4)
    assert plan([B], observed(extra_routes=[foreign], extra_neighs=[n], extra_fdb=[f])) == [("replace", r)]


def test_entries_that_are_not_ours_are_never_touched():
    foreign_route = Route(dst="10.99.0.0/16", dev=DEV, gateway=None, proto=4)      # static, operator's
    other_dev = Route(dst="10.244.7.0/24", dev="eth0", gateway="192.168.213.1", proto=RTPROT_SHOAL)
    dynamic = Neighbour(dev=DEV, ip="10.244.8.0", mac="aa:aa:aa:aa:aa:aa", permanent=False)
    default_dst = FdbEntry(dev=DEV, mac="00:00:00:00:00:00", dst="192.168.213.99")
    assert plan([], observed(extra_routes=[foreign_route, other_dev], extra_neighs=[dynamic],
                             extra_fdb=[default_dst])) == []


def test_stale_dynamic_neigh_for_a_peer_is_made_permanent():
    r, n, f = entries(B)
    stale = Neighbour(dev=DEV, ip=n.ip, mac="aa:aa:aa:aa:aa:aa", permanent=False)
    assert plan([B], observed(extra_routes=[r], extra_neighs=[stale], extra_fdb=[f])) == [("replace", n)]


@pytest.mark.parametrize("bad,needle", [
    (Peer("x", "192.168.213.20", "aa:bb:cc:00:00:20", "10.244.20.1/24"), "podCIDR"),
    (Peer("x", "not-an-ip", "aa:bb:cc:00:00:20", "10.244.20.0/24"), "underlay"),
    (Peer("x", "192.168.213.20", "zz:bb:cc:00:00:20", "10.244.20.0/24"), "MAC"),
    (Peer("x", "192.168.213.20", "00:00:00:00:00:00", "10.244.20.0/24"), "MAC"),
])
def test_malformed_peers_are_skipped_with_a_message_naming_them(bad, needle):
    got, problems = desired_entries([B, bad], dev=DEV)
    assert [e.node for e in got] == ["b"]
    assert len(problems) == 1 and problems[0].startswith("peer x:") and needle in problems[0]
    assert plan([B, bad], observed(entries(B))) == []


def test_self_and_duplicates_are_skipped():
    me = Peer("a", "192.168.213.11", "aa:bb:cc:00:00:01", "10.244.1.0/24")
    dup_cidr = Peer("z", "192.168.213.30", "aa:bb:cc:00:00:30", B.pod_cidr)
    dup_mac = Peer("y", "192.168.213.31", B.vtep_mac, "10.244.31.0/24")
    got, problems = desired_entries([me, B, dup_cidr, dup_mac], dev=DEV, local_cidr="10.244.1.0/24",
                                    local_underlay="192.168.213.11")
    assert [e.node for e in got] == ["b"]
    assert not any("peer a" in p for p in problems)
    assert any("peer z: podCIDR 10.244.2.0/24 is already routed to peer b" in p for p in problems)
    assert any("peer y: VTEP MAC" in p for p in problems)


def test_action_str_reads_like_ip_commands():
    r, n, f = entries(B)
    assert str(Action("replace", r)) == "route replace 10.244.2.0/24 via 10.244.2.0 dev shoal.1 onlink"
    assert str(Action("delete", n)) == "neigh delete 10.244.2.0 lladdr aa:bb:cc:00:00:02 dev shoal.1"
    assert str(Action("append", f)) == "fdb append aa:bb:cc:00:00:02 dst 192.168.213.12 dev shoal.1"
