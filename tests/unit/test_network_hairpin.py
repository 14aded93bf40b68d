"""Pod veths are bridge ports in hairpin mode (agent.network.node): with br_netfilter loaded, a
pod DNATed back to itself (its own Service, its own hostPort) is bridged out of the port it
came in on, which a bridge drops otherwise."""
from __future__ import annotations

import errno
from dataclasses import replace

import pytest

from shoal.agent.network import NodeNetwork, RecordingNetlink, RecordingRunner, veth_name
from shoal.agent.network.netlink import NetlinkOpError, Route

pytestmark = pytest.mark.unit

UID = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"


@pytest.fixture
def nl():
    nl = RecordingNetlink()
    nl.link_add("eth0", "bridge", mtu=1500)
    nl.link_set("eth0", up=True)
    nl.addr_add("eth0", "192.168.213.11/24")
    nl.route_replace(Route(dst="0.0.0.0/0", dev="eth0", gateway="192.168.213.1", proto=4))
    return nl


@pytest.fixture
def net(tmp_path, nl):
    n = NodeNetwork(str(tmp_path / "state"), netlink=nl, runner=RecordingRunner())
    n.ensure_node("10.244.1.0/24")
    return n


def test_a_new_pod_port_is_in_hairpin_mode(net, nl):
    nl.calls.clear()
    net.setup_pod(UID, "web")
    veth = veth_name(UID)
    assert nl.ns().links[veth].hairpin is True and nl.ns().links[veth].master == "shoal0"
    adds = [i for i, c in enumerate(nl.calls) if c[0] == "link_add"]
    assert ("link_set", veth, None, None, None, None, None, True) in nl.calls[adds[0]:]


def test_a_port_without_hairpin_is_repaired_and_a_right_one_left_alone(net, nl):
    net.setup_pod(UID, "web")
    veth = veth_name(UID)
    nl.ns().links[veth] = replace(nl.ns().links[veth], hairpin=False)     # an older agent's pod
    nl.calls.clear()
    net.setup_pod(UID, "web")
    assert nl.ns().links[veth].hairpin is True
    assert [c for c in nl.calls if c[0] == "link_set" and c[1] == veth] == [
        ("link_set", veth, None, None, None, None, None, True)]
    nl.calls.clear()
    net.setup_pod(UID, "web")
    assert not [c for c in nl.calls if c[0] == "link_set" and c[1] == veth]


def test_a_port_moved_off_the_bridge_gets_master_then_hairpin(net, nl):
    net.setup_pod(UID, "web")
    veth = veth_name(UID)
    nl.ns().links[veth] = replace(nl.ns().links[veth], master=None, hairpin=None)
    net.setup_pod(UID, "web")
    link = nl.ns().links[veth]
    assert (link.master, link.hairpin, link.up) == ("shoal0", True, True)


def test_the_fake_refuses_hairpin_on_a_link_that_is_no_bridge_port(nl):
    with pytest.raises(NetlinkOpError) as e:
        nl.link_set("eth0", hairpin=True)
    assert e.value.errno == errno.EOPNOTSUPP and "eth0" in str(e.value)
