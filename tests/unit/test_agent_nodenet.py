"""The node network's pure pieces (overlay peers, host ports) and its gating: the pod
network is ready only after ensure_node, and peers are synced only from a whole list."""
import pytest

from shoal.agent.interfaces import HostPort, Peer
from shoal.agent.nodenet import (ANN_UNDERLAY_IP, ANN_VTEP_MAC, NodeNetworkSync, host_ports, overlay_peers,
                                 refused_host_ports)
from shoal.machinery.control import Informer

pytestmark = pytest.mark.unit


def node(name, *, cidr="10.244.1.0/24", ip="10.0.0.1", mac="02:00:00:00:00:01", ready="True", rv=1):
    ann = {}
    if ip:
        ann[ANN_UNDERLAY_IP] = ip
    if mac:
        ann[ANN_VTEP_MAC] = mac
    return {"kind": "Node", "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": str(rv),
                                         "annotations": ann},
            "spec": {"podCIDR": cidr} if cidr else {},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}


@pytest.mark.parametrize("nodes, want", [
    ([], []),
    ([node("self")], []),
    ([node("b", ip="10.0.0.2"), node("a")],
     [Peer("a", "10.0.0.1", "02:00:00:00:00:01", "10.244.1.0/24"),
      Peer("b", "10.0.0.2", "02:00:00:00:00:01", "10.244.1.0/24")]),
    ([node("a", ready="False")], []),
    ([node("a", ready="Unknown")], []),
    ([node("a", cidr=None)], []),
    ([node("a", mac=None)], []),
    ([node("a", ip=None)], []),
])
def test_overlay_peers(nodes, want):
    assert overlay_peers(nodes, "self") == want


def test_host_ports():
    pods = [("u1", {"spec": {"containers": [
                {"name": "web", "ports": [{"containerPort": 80, "hostPort": 8080},
                                          {"containerPort": 81}]},
                {"name": "dns", "ports": [{"containerPort": 53, "hostPort": 53, "protocol": "UDP",
                                           "hostIP": "10.0.0.1"}]}]}}),
            ("u2", {"spec": {}})]
    assert host_ports(pods) == [HostPort("u1", 8080, 80, "TCP", ""), HostPort("u1", 53, 53, "UDP", "10.0.0.1")]


# Issue 17 ("Host exposure"): the ports of shoal's own components are never a pod's.
RESERVED = {6443: "the shoal API server", 10250: "the shoal agent's log endpoint"}


@pytest.mark.parametrize("ports,refused", [
    ([], []),
    ([{"containerPort": 80}], []),
    ([{"containerPort": 80, "hostPort": 8080}], []),
    ([{"containerPort": 8443, "hostPort": 6443}],
     ["hostPort 6443 of container web is reserved for the shoal API server on this node"]),
    # any protocol, any hostIP: the component holds the number
    ([{"containerPort": 53, "hostPort": 10250, "protocol": "UDP", "hostIP": "10.0.0.1"}],
     ["hostPort 10250 of container web is reserved for the shoal agent's log endpoint on this node"]),
    ([{"containerPort": 1, "hostPort": 6443}, {"containerPort": 80, "hostPort": 8080},
      {"containerPort": 2, "hostPort": 10250}],
     ["hostPort 6443 of container web is reserved for the shoal API server on this node",
      "hostPort 10250 of container web is reserved for the shoal agent's log endpoint on this node"]),
    # a containerPort of 6443 without a hostPort publishes nothing on the host
    ([{"containerPort": 6443}], []),
])
def test_refused_host_ports(ports, refused):
    assert refused_host_ports({"name": "web", "ports": ports}, RESERVED) == refused


def test_host_ports_never_include_a_reserved_port():
    pods = [("u1", {"spec": {"containers": [{"name": "web", "ports": [
        {"containerPort": 8443, "hostPort": 6443}, {"containerPort": 80, "hostPort": 8080}]}]}})]
    assert host_ports(pods, RESERVED) == [HostPort("u1", 8080, 80, "TCP", "")]
    net = Net()
    nn = NodeNetworkSync(Api(), node_name="self", address="10.0.0.9", network=net,
                         sandboxed_pods=lambda: pods, on_ready=lambda: None, reserved_ports=RESERVED)
    nn.sync_host_ports()
    assert net.calls == [("sync_host_ports", [HostPort("u1", 8080, 80, "TCP", "")])]


class Net:
    def __init__(self, fail_node=False):
        self.calls, self.fail_node = [], fail_node

    def ensure_node(self, cidr):
        self.calls.append(("ensure_node", cidr))
        if self.fail_node:
            raise OSError("bridge: permission denied")

    def ensure_overlay(self, address):
        self.calls.append(("ensure_overlay", address))
        return "02:aa:00:00:00:01"

    def sync_peers(self, peers):
        self.calls.append(("sync_peers", [p.node for p in peers]))

    def sync_host_ports(self, ports):
        self.calls.append(("sync_host_ports", ports))


class Api:
    def __init__(self):
        self.patches = []

    def patch(self, kind, name, body, *args, **kw):
        self.patches.append((kind, name, body))
        return body


def make(net=None):
    ready = []
    nn = NodeNetworkSync(Api(), node_name="self", address="10.0.0.9", network=net or Net(),
                     sandboxed_pods=lambda: [], on_ready=lambda: ready.append(True))
    inf = Informer(client=None, kind="nodes")
    nn.attach(inf)
    return nn, inf, ready


def test_peers_are_synced_from_a_whole_list_only():
    nn, inf, _ = make()
    inf._upsert(node("a"), from_watch=True)       # as the first list applies its items
    inf._upsert(node("b", ip="10.0.0.2"), from_watch=True)
    assert not [c for c in nn.network.calls if c[0] == "sync_peers"]
    nn._on_list()
    inf._handle({"type": "MODIFIED", "object": node("b", ip="10.0.0.2", rv=2)})      # nothing changed for peers
    inf._handle({"type": "MODIFIED", "object": node("a", ready="False", rv=3)})
    assert [c for c in nn.network.calls if c[0] == "sync_peers"] == [("sync_peers", ["a", "b"]),
                                                                     ("sync_peers", ["b"])]


def test_own_cidr_builds_the_network_publishes_the_mac_and_wakes_once():
    nn, inf, ready = make()
    inf._handle({"type": "ADDED", "object": node("self", cidr=None)})
    assert not nn.ready and ready == []
    inf._handle({"type": "MODIFIED", "object": node("self", cidr="10.244.9.0/24", rv=2)})
    inf._handle({"type": "MODIFIED", "object": node("self", cidr="10.244.9.0/24", rv=3)})
    assert nn.ready and ready == [True] and nn.pod_cidr == "10.244.9.0/24"
    assert nn.network.calls[:2] == [("ensure_node", "10.244.9.0/24"), ("ensure_overlay", "10.0.0.9")]
    assert nn.client.patches == [("nodes", "self", {"metadata": {"annotations": {ANN_VTEP_MAC: "02:aa:00:00:00:01"}}})]


def test_a_failed_ensure_node_keeps_sandboxes_waiting_and_is_retried():
    net = Net(fail_node=True)
    nn, _, ready = make(net)
    nn.on_own_node(node("self", cidr="10.244.9.0/24"))
    assert not nn.ready
    net.fail_node = False
    nn.on_own_node(node("self", cidr="10.244.9.0/24"))
    assert nn.ready and ready == [True]
