"""The pure part of cluster IP and node port allocation (apiserver.allocation): ranges, the
static band, the random scan, and what a Service write holds and fills in."""
from __future__ import annotations

import ipaddress
import random

import pytest

from shoal.apiserver.allocation import (POOL_CLUSTER_IP, POOL_NODE_PORT, Ranges, pick, plan_service, static_band)
from shoal.machinery.api import errors
from shoal.machinery.api.models import validate

pytestmark = pytest.mark.unit

RANGES = Ranges.parse("10.43.0.0/16", "30000-32767")


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def service(spec: dict) -> dict:
    return validate("Service", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "d"},
                                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **spec}})


def plan(spec: dict, old: dict | None = None, *, taken_ips=(), taken_ports=(), ranges=RANGES, seed=1):
    return plan_service(service(spec), old, ranges, taken_ips=set(taken_ips), taken_ports=set(taken_ports),
                        rng=random.Random(seed))


def invalid(spec: dict, old: dict | None = None, **kw) -> list[tuple[str, str]]:
    with pytest.raises(errors.Invalid) as e:
        plan(spec, old, **kw)
    return [(c.field, c.message) for c in e.value.causes]


# --- ranges ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, least, most, step, band", [
    (65536, 16, 256, 16, 256),      # a /16: Kubernetes' ClusterIP band is capped at 256
    (4096, 16, 256, 16, 256),
    (1024, 16, 256, 16, 64),        # a /22
    (256, 16, 256, 16, 16),         # a /24: at least 16
    (16, 16, 256, 16, 0),           # tiny ranges have no band
    (2768, 16, 128, 32, 86),        # the node ports 30000-32767
    (100000, 16, 128, 32, 128),
])
def test_static_band_is_kubernetes_range_offset(size, least, most, step, band):
    assert static_band(size, least=least, most=most, step=step) == band


def test_ranges_reserve_network_broadcast_and_first_address():
    r = Ranges.parse("10.43.0.0/16", "30000-32767")
    assert (r.first_ip, r.last_ip) == (ip("10.43.0.1"), ip("10.43.255.254"))
    assert r.reserved_ip == ip("10.43.0.1")
    assert (r.ip_band(), r.port_band()) == (256, 86)


@pytest.mark.parametrize("cidr, ports, problem", [
    ("10.43.0.0/8", "30000-32767", "host bits set"),
    ("10.0.0.0/8", "30000-32767", "between /12 and /28"),
    ("10.43.0.0/29", "30000-32767", "between /12 and /28"),
    ("fd00::/112", "30000-32767", "only IPv4"),
    ("10.43.0.0/16", "32767-30000", "FIRST <= LAST"),
    ("10.43.0.0/16", "30000-70000", "1-65535"),
    ("10.43.0.0/16", "many", "expected FIRST-LAST"),
])
def test_ranges_refuse_what_cannot_be_served(cidr, ports, problem):
    with pytest.raises(ValueError, match=problem):
        Ranges.parse(cidr, ports)


def test_pick_prefers_the_upper_range_then_the_band_then_gives_up():
    taken: set[int] = set()
    rng = random.Random(3)
    got = [pick(100, 131, 16, lambda v: v in taken, rng) for _ in range(3)]
    assert all(116 <= v <= 131 for v in got if v is not None)
    taken = set(range(116, 132))                      # the upper part is full: the band is used
    assert 100 <= pick(100, 131, 16, lambda v: v in taken, rng) < 116
    taken = set(range(100, 132))
    assert pick(100, 131, 16, lambda v: v in taken, rng) is None


def test_pick_finds_the_one_free_value():
    free = 120
    assert pick(100, 131, 16, lambda v: v != free, random.Random(0)) == free


# --- plan_service: cluster IPs ---------------------------------------------------------------------------

def test_a_cluster_ip_is_picked_outside_the_band_and_the_reserved_address():
    for seed in range(20):
        p = plan({}, seed=seed)
        got = ip(p.service["spec"]["clusterIP"])
        assert ip("10.43.1.1") <= got <= ip("10.43.255.254")          # past the 256-address static band
        assert p.service["spec"]["clusterIPs"] == [p.service["spec"]["clusterIP"]]
        assert p.holds == {(POOL_CLUSTER_IP, got)} and not p.chosen


def test_taken_ips_are_never_picked():
    r = Ranges.parse("10.43.0.0/28", "30000-30015")                 # 14 usable addresses, .1 reserved
    taken = {ip(f"10.43.0.{i}") for i in range(2, 14)}                 # all but .14
    assert plan({}, ranges=r, taken_ips=taken).service["spec"]["clusterIP"] == "10.43.0.14"
    full = plan({}, ranges=r, taken_ips=taken | {ip("10.43.0.14")})
    assert full.full == POOL_CLUSTER_IP and "clusterIP" not in full.service["spec"]


def test_a_chosen_ip_is_honoured_when_free():
    p = plan({"clusterIP": "10.43.0.10"})
    assert p.service["spec"]["clusterIP"] == "10.43.0.10"
    assert p.holds == {(POOL_CLUSTER_IP, ip("10.43.0.10"))}
    assert p.chosen[(POOL_CLUSTER_IP, ip("10.43.0.10"))][0] == "spec.clusterIPs"


@pytest.mark.parametrize("chosen, taken, message", [
    ("10.43.0.10", {"10.43.0.10"}, 'Invalid value: ["10.43.0.10"]: failed to allocate IP 10.43.0.10: provided IP is '
                                   'already allocated'),
    ("10.43.0.1", set(), "failed to allocate IP 10.43.0.1: provided IP is already allocated"),       # reserved
    ("10.99.0.1", set(), "failed to allocate IP 10.99.0.1: the provided IP (10.99.0.1) is not in the valid range. "
                         "The range of valid IPs is 10.43.0.0/16"),
    ("10.43.0.0", set(), "is not in the valid range"),                 # the network address
    ("10.43.255.255", set(), "is not in the valid range"),             # the broadcast address
])
def test_a_chosen_ip_that_cannot_be_had_is_422(chosen, taken, message):
    [(field, text)] = invalid({"clusterIP": chosen}, taken_ips={ip(t) for t in taken})
    assert field == "spec.clusterIPs" and message in text, text


def test_headless_holds_no_ip():
    p = plan({"clusterIP": "None"})
    assert p.service["spec"]["clusterIP"] == "None" and p.holds == set()


def test_an_update_keeps_its_ip_even_outside_a_changed_range():
    old = dict(service({"clusterIP": "10.43.0.10"}))
    narrow = Ranges.parse("10.44.0.0/16", "30000-32767")
    p = plan({"clusterIP": "10.43.0.10"}, old, ranges=narrow)
    assert p.holds == {(POOL_CLUSTER_IP, ip("10.43.0.10"))} and not p.chosen


# --- plan_service: node ports --------------------------------------------------------------------------

def test_node_ports_are_picked_per_port_and_shared_by_one_number_on_create():
    p = plan({"type": "NodePort", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                                            {"name": "http", "port": 80}]})
    a, b, c = (q["nodePort"] for q in p.service["spec"]["ports"])
    assert a == b != c
    assert all(30086 <= v <= 32767 for v in (a, c))                   # past the 86-port static band
    assert {v for pool, v in p.holds if pool == POOL_NODE_PORT} == {a, c}


def test_a_chosen_node_port_is_shared_with_the_other_protocol():
    p = plan({"type": "NodePort", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053}]})
    assert [q["nodePort"] for q in p.service["spec"]["ports"]] == [30053, 30053]


@pytest.mark.parametrize("node_port, taken, message", [
    (30080, {30080}, "Invalid value: 30080: provided port is already allocated"),
    (80, set(), "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"),
    (32768, set(), "provided port is not in the valid range"),
])
def test_a_chosen_node_port_that_cannot_be_had_is_422(node_port, taken, message):
    [(field, text)] = invalid({"type": "NodePort", "ports": [{"port": 80, "nodePort": node_port}]}, taken_ports=taken)
    assert field == "spec.ports[0].nodePort" and message in text, text


def test_cluster_ip_services_hold_no_node_port():
    assert {pool for pool, _ in plan({}).holds} == {POOL_CLUSTER_IP}


def test_load_balancer_may_opt_out_of_node_ports_but_keeps_asked_ones():
    p = plan({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False,
              "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": 30081}]})
    assert [q.get("nodePort") for q in p.service["spec"]["ports"]] == [None, 30081]


def test_health_check_node_port_for_local_load_balancers():
    p = plan({"type": "LoadBalancer", "externalTrafficPolicy": "Local"})
    hc = p.service["spec"]["healthCheckNodePort"]
    assert hc != p.service["spec"]["ports"][0]["nodePort"]
    assert (POOL_NODE_PORT, hc) in p.holds
    asked = plan({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30100})
    assert asked.service["spec"]["healthCheckNodePort"] == 30100
    assert invalid({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30100},
                   taken_ports={30100}) == [("spec.healthCheckNodePort",
                                             "Invalid value: 30100: provided port is already allocated")]


def test_an_update_keeps_its_ports_and_adds_new_ones():
    old = service({"type": "NodePort", "clusterIP": "10.43.0.10",
                   "ports": [{"name": "a", "port": 80, "nodePort": 30080}]})
    p = plan({"type": "NodePort", "clusterIP": "10.43.0.10",
              "ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 80, "protocol": "UDP"}]},
             old, taken_ports={30081})
    a, b = (q["nodePort"] for q in p.service["spec"]["ports"])
    assert a == 30080 and b not in (30080, 30081)              # an update gives a new port its own node port
    assert not p.chosen                                          # 30080 was held already


def test_the_pool_running_out_of_ports_is_reported():
    r = Ranges.parse("10.43.0.0/16", "30000-30001")
    p = plan({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81},
                                            {"name": "c", "port": 82}]}, ranges=r)
    assert p.full == POOL_NODE_PORT
