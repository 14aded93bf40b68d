"""plan_ruleset: the service proxy's nft table, planned from Services and EndpointSlices."""
from __future__ import annotations

import json
import random

import pytest

from shoal.agent.network.svcrules import (Existing, chain_names, endpoint_chain, affinity_set, parse_existing,
                                          plan_ruleset, service_ports, svc_table_for, usable, Endpoint)

pytestmark = pytest.mark.unit

NODE = "n1"
CIDR = "10.244.1.0/24"


def svc(name, ports, *, ip="10.43.0.10", ns="default", created="2024-01-01T00:00:00Z", status=None, **spec):
    obj = {"metadata": {"namespace": ns, "name": name, "creationTimestamp": created},
           "spec": {"clusterIP": ip, "ports": ports, **spec}}
    if status:
        obj["status"] = status
    return obj


def ep(ip, node=None, **conditions):
    e = {"addresses": [ip]}
    if node:
        e["nodeName"] = node
    if conditions:
        e["conditions"] = conditions
    return e


def slc(service, endpoints, ports=({"name": "http", "port": 8080},), *, name=None, ns="default", address_type="IPv4"):
    return {"metadata": {"namespace": ns, "name": name or f"{service}-abc",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": address_type, "endpoints": list(endpoints), "ports": [dict(p) for p in ports]}


HTTP = {"name": "http", "port": 80, "targetPort": 8080}


def plan(services, slices=(), *, existing=None, cidr=CIDR, pod_cidrs=("10.244.2.0/24", "10.244.3.0/24"), **kw):
    return plan_ruleset(services, slices, node_name=NODE, node_pod_cidr=cidr, pod_cidrs=pod_cidrs,
                        existing=existing, **kw)


def rules(p, chain):
    return p.ruleset.chains[chain]


def elements(p, name):
    return p.ruleset.sets[name].elements


def names(p, prefix):
    return sorted(c for c in p.ruleset.chains if c.startswith(prefix))


def web_chains(service="web", port="http"):
    sp = service_ports([svc(service, [dict(HTTP, name=port)])], [])[0][0]
    return chain_names(sp)


# ---------------------------------------------------------------------------- the frame
def test_no_services_still_gives_the_whole_frame_in_one_transaction():
    p = plan([])
    lines = p.script.splitlines()
    # unknown table state: delete and recreate, all in this one script
    assert lines[:3] == ["add table ip shoal-svc", "delete table ip shoal-svc", "add table ip shoal-svc"]
    assert "add chain ip shoal-svc nat-prerouting { type nat hook prerouting priority dstnat; policy accept; }" in lines
    assert "add chain ip shoal-svc nat-output { type nat hook output priority -100; policy accept; }" in lines
    assert "add chain ip shoal-svc nat-postrouting { type nat hook postrouting priority srcnat; policy accept; }" in lines
    for hook in ("input", "forward", "output"):
        assert (f"add chain ip shoal-svc filter-{hook} {{ type filter hook {hook} priority -10; policy accept; }}"
                in lines)
    assert rules(p, "nat-prerouting") == ["jump services"] and rules(p, "nat-output") == ["jump services"]
    assert rules(p, "services") == [
        "ip daddr @cluster-ips ip saddr != @pod-cidrs jump mark-for-masquerade",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        "ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports",
    ]
    assert rules(p, "masquerading") == ["meta mark & 0x4000 == 0 return", "meta mark set meta mark ^ 0x4000",
                                       "masquerade fully-random"]
    assert rules(p, "mark-for-masquerade") == ["meta mark set meta mark | 0x4000"]
    assert "dnat" not in p.script and p.problems == []
    assert elements(p, "pod-cidrs") == ["10.244.1.0/24", "10.244.2.0/23"]       # merged: an interval set


def test_table_name_follows_the_bridge():
    assert svc_table_for("shoal0") == "shoal-svc"
    assert svc_table_for("lab0") == "shoal-svc-lab0"
    assert svc_table_for("br.x") == "shoal-svc-br_x"
    assert "table ip shoal-svc-lab0" in plan([], table="shoal-svc-lab0").script


def test_mark_is_a_parameter():
    p = plan([], mark=0x10000)
    assert rules(p, "mark-for-masquerade") == ["meta mark set meta mark | 0x10000"]


# ---------------------------------------------------------------------------- ClusterIP
def test_cluster_ip_balances_over_ready_endpoints_on_every_host():
    p = plan([svc("web", [HTTP])],
             [slc("web", [ep("10.244.2.7", "n2"), ep("10.244.1.5", "n1"), ep("10.244.3.9", "n3", ready=True)])])
    c = web_chains()
    assert elements(p, "service-ips") == [f"10.43.0.10 . tcp . 80 : goto {c['service']}"]
    assert elements(p, "cluster-ips") == ["10.43.0.10"]
    eps = names(p, "endpoint-")
    assert len(eps) == 3
    targets = [e for e in (endpoint_chain(service_ports([svc("web", [HTTP])], [])[0][0],
                                          Endpoint(ip, 8080, None, True, True, False))
                           for ip in ("10.244.1.5", "10.244.2.7", "10.244.3.9"))]
    assert rules(p, c["service"]) == [
        f"numgen random mod 3 vmap {{ 0 : goto {targets[0]}, 1 : goto {targets[1]}, 2 : goto {targets[2]} }}"]
    assert rules(p, targets[1])[-1] == "meta l4proto tcp dnat to 10.244.2.7:8080"
    assert elements(p, "no-endpoint-services") == [] and elements(p, "service-nodeports") == []
    assert p.service_ports == 1 and p.endpoints == 3


def test_a_single_endpoint_is_a_plain_goto():
    p = plan([svc("web", [HTTP])], [slc("web", [ep("10.244.2.7", "n2")])])
    (target,) = names(p, "endpoint-")
    assert rules(p, web_chains()["service"]) == [f"goto {target}"]


@pytest.mark.parametrize("endpoints,chosen", [
    # only ready endpoints take new connections; nil ready counts as ready
    ([ep("10.244.2.1"), ep("10.244.2.2", ready=False), ep("10.244.2.3", ready=True)], ["10.244.2.1", "10.244.2.3"]),
    # a terminating but still-serving endpoint is used only when nothing is ready...
    ([ep("10.244.2.1", ready=False, serving=True, terminating=True), ep("10.244.2.2", ready=True)], ["10.244.2.2"]),
    ([ep("10.244.2.1", ready=False, serving=True, terminating=True),
      ep("10.244.2.2", ready=False, serving=False, terminating=True),
      ep("10.244.2.3", ready=False)], ["10.244.2.1"]),
    # ...and a not-ready endpoint that is not terminating never is
    ([ep("10.244.2.1", ready=False, serving=True)], []),
])
def test_endpoint_choice_follows_kubernetes(endpoints, chosen):
    p = plan([svc("web", [HTTP])], [slc("web", endpoints)])
    got = sorted(r.split("dnat to ")[1].split(":")[0] for c in names(p, "endpoint-") for r in rules(p, c) if "dnat" in r)
    assert got == chosen
    if not chosen:
        assert elements(p, "no-endpoint-services") == ["10.43.0.10 . tcp . 80 : goto reject-chain"]
        assert elements(p, "service-ips") == []


def test_usable_reads_nil_conditions_as_kubernetes_does():
    sp, _ = service_ports([svc("web", [HTTP])], [slc("web", [ep("10.244.2.1"), ep("10.244.2.2", ready=False)])])
    (e1, e2) = sp[0].endpoints
    assert (e1.ready, e1.serving, e1.terminating) == (True, True, False)
    assert (e2.ready, e2.serving, e2.terminating) == (False, False, False)
    assert usable(sp[0].endpoints) == [e1]


def test_no_endpoints_rejects_and_leaves_no_nat_chain():
    p = plan([svc("web", [dict(HTTP, nodePort=30080)], type="NodePort")], [])
    assert elements(p, "no-endpoint-services") == ["10.43.0.10 . tcp . 80 : goto reject-chain"]
    assert elements(p, "no-endpoint-nodeports") == ["tcp . 30080 : goto reject-chain"]
    assert names(p, "service-") == [] and names(p, "external-") == [] and names(p, "endpoint-") == []
    assert rules(p, "reject-chain") == ["reject"]
    # the filter hooks check new connections against those maps, then the ClusterIPs' other ports
    assert rules(p, "filter-input") == ["ct state new jump endpoints-check"]
    assert rules(p, "filter-forward") == rules(p, "filter-output") == [
        "ct state new jump endpoints-check", "ct state new jump cluster-ips-check"]
    assert rules(p, "endpoints-check") == [
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
        "ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports"]
    assert rules(p, "cluster-ips-check") == ['ip daddr @cluster-ips reject comment "a port no Service defines"']
    assert elements(p, "cluster-ips") == ["10.43.0.10"]


@pytest.mark.parametrize("service", [
    svc("headless", [HTTP], ip="None"),
    svc("headless2", [HTTP], ip="None", clusterIPs=["None"]),
    svc("ext", [], ip=None, type="ExternalName", externalName="example.com"),
    svc("unallocated", [HTTP], ip=None),
])
def test_services_without_a_virtual_ip_get_nothing(service):
    p = plan([service], [slc(service["metadata"]["name"], [ep("10.244.2.1")])])
    assert names(p, "service-") == [] and names(p, "endpoint-") == []
    assert elements(p, "cluster-ips") == [] and elements(p, "no-endpoint-services") == []
    assert p.problems == []


def test_an_ipv6_cluster_ip_is_reported_not_proxied():
    p = plan([svc("v6", [HTTP], ip="fd00::10")], [])
    assert elements(p, "cluster-ips") == []
    assert [pr.message for pr in p.problems] == ["clusterIP 'fd00::10': only IPv4 Services are proxied"]


def test_several_ports_named_target_ports_and_protocols():
    service = svc("multi", [{"name": "http", "port": 80, "targetPort": "web"},
                            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353},
                            {"name": "metrics", "port": 9100}])
    slices = [slc("multi", [ep("10.244.2.4", "n2")],
                  [{"name": "http", "port": 8081}, {"name": "dns", "port": 5353, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 5354, "protocol": "TCP"}])]
    p = plan([service], slices)
    dnat = sorted(r for c in names(p, "endpoint-") for r in rules(p, c) if "dnat" in r)
    assert dnat == ["meta l4proto tcp dnat to 10.244.2.4:5354", "meta l4proto tcp dnat to 10.244.2.4:8081",
                    "meta l4proto udp dnat to 10.244.2.4:5353"]
    keys = [e.split(" :")[0] for e in elements(p, "service-ips")]
    assert keys == ["10.43.0.10 . tcp . 53", "10.43.0.10 . tcp . 80", "10.43.0.10 . udp . 53"]
    # the slice has no port named "metrics": that port has no endpoints
    assert elements(p, "no-endpoint-services") == ["10.43.0.10 . tcp . 9100 : goto reject-chain"]


def test_only_this_services_ipv4_slices_count_and_duplicates_merge():
    slices = [
        slc("web", [ep("10.244.2.1", "n2")], name="web-a"),
        slc("web", [ep("10.244.2.1", "n2", ready=False), ep("10.244.2.2", "n2")], name="web-b"),  # moving
        slc("web", [ep("fd00::1")], name="web-v6", address_type="IPv6"),
        slc("web", [ep("10.244.2.9", "n2")], name="web-other-ns", ns="other"),
        slc("api", [ep("10.244.2.8", "n2")], name="api-a"),
        {"metadata": {"namespace": "default", "name": "unlabelled"}, "addressType": "IPv4",
         "endpoints": [ep("10.244.2.7")], "ports": [{"name": "http", "port": 8080}]},
    ]
    p = plan([svc("web", [HTTP])], slices)
    dnat = sorted(r for c in names(p, "endpoint-") for r in rules(p, c) if "dnat" in r)
    assert dnat == ["meta l4proto tcp dnat to 10.244.2.1:8080", "meta l4proto tcp dnat to 10.244.2.2:8080"]


def test_the_same_world_in_any_order_renders_the_same_script():
    services = [svc(f"s{i}", [HTTP], ip=f"10.43.0.{i + 10}") for i in range(5)]
    slices = [slc(f"s{i}", [ep(f"10.244.{j}.{i + 2}", f"n{j}") for j in (1, 2, 3)]) for i in range(5)]
    a = plan(services, slices).script
    random.seed(7)
    for _ in range(3):
        random.shuffle(services)
        random.shuffle(slices)
        assert plan(services, slices).script == a


# ---------------------------------------------------------------------------- masquerade, hairpin, the host
def test_hairpin_and_same_bridge_traffic_is_masqueraded_remote_keeps_the_pod_source():
    p = plan([svc("web", [HTTP])], [slc("web", [ep("10.244.1.5", "n1"), ep("10.244.2.5", "n2")])])
    by_ip = {r.split("dnat to ")[1].split(":")[0]: rules(p, c) for c in names(p, "endpoint-")
             for r in rules(p, c) if "dnat" in r}
    # an endpoint on this node's bridge: any pod of the bridge (itself included) is masqueraded
    assert by_ip["10.244.1.5"][0] == "ip saddr 10.244.1.0/24 jump mark-for-masquerade"
    # elsewhere: only the endpoint reaching itself, which cannot come through this node
    assert by_ip["10.244.2.5"][0] == "ip saddr 10.244.2.5 jump mark-for-masquerade"


def test_an_endpoint_without_node_name_is_local_by_address():
    p = plan([svc("web", [HTTP], internalTrafficPolicy="Local")], [slc("web", [ep("10.244.1.5"), ep("10.244.2.5")])])
    c = web_chains()
    assert elements(p, "service-ips") == [f"10.43.0.10 . tcp . 80 : goto {c['local']}"]
    assert "10.244.1.5" in rules(p, c["local"])[0]


def test_the_host_reaches_cluster_ips_through_the_output_hook_masqueraded():
    p = plan([svc("web", [HTTP])], [slc("web", [ep("10.244.2.5", "n2")])])
    assert rules(p, "nat-output") == ["jump services"]
    assert rules(p, "services")[0] == "ip daddr @cluster-ips ip saddr != @pod-cidrs jump mark-for-masquerade"


def test_pod_cidrs_are_merged_for_the_interval_set():
    p = plan([], cidr="10.244.1.0/24", pod_cidrs=["10.244.0.0/24", "10.244.1.0/24", "10.244.0.0/23", "bad"])
    assert elements(p, "pod-cidrs") == ["10.244.0.0/23"]
    assert [pr.message for pr in p.problems] == ["pod CIDR 'bad' is not an IPv4 network"]


def test_before_the_node_has_a_pod_cidr_every_endpoint_gets_the_hairpin_rule():
    p = plan([svc("web", [HTTP])], [slc("web", [ep("10.244.1.5", "n1")])], cidr=None, pod_cidrs=[])
    (chain,) = names(p, "endpoint-")
    assert rules(p, chain)[0] == "ip saddr 10.244.1.5 jump mark-for-masquerade"
    assert elements(p, "pod-cidrs") == []


# ---------------------------------------------------------------------------- NodePort, LoadBalancer, externalIPs
def test_node_port_on_every_local_address_but_loopback_masqueraded():
    p = plan([svc("web", [dict(HTTP, nodePort=30080)], type="NodePort")], [slc("web", [ep("10.244.2.5", "n2")])])
    c = web_chains()
    assert elements(p, "service-nodeports") == [f"tcp . 30080 : goto {c['external']}"]
    assert elements(p, "service-ips") == [f"10.43.0.10 . tcp . 80 : goto {c['service']}"]
    assert rules(p, c["external"]) == ["jump mark-for-masquerade", f"goto {c['service']}"]
    nodeport_rule = rules(p, "services")[2]
    assert nodeport_rule.startswith("ip daddr != 127.0.0.0/8 fib daddr type local ")


def test_a_node_port_on_a_cluster_ip_service_is_ignored():
    p = plan([svc("web", [dict(HTTP, nodePort=30080)])], [slc("web", [ep("10.244.2.5", "n2")])])
    assert elements(p, "service-nodeports") == [] and names(p, "external-") == []


def test_load_balancer_publishes_its_port_on_the_nodes_and_its_ingress_ips():
    lb = svc("web", [dict(HTTP, nodePort=30080)], type="LoadBalancer",
             status={"loadBalancer": {"ingress": [{"ip": "192.168.213.11"}, {"ip": "192.168.213.12"},
                                                  {"hostname": "lb.example"}]}})
    p = plan([lb], [slc("web", [ep("10.244.2.5", "n2")])])
    c = web_chains()
    assert elements(p, "service-nodeports") == [f"tcp . 80 : goto {c['external']}", f"tcp . 30080 : goto {c['external']}"]
    assert elements(p, "service-ips") == [f"10.43.0.10 . tcp . 80 : goto {c['service']}",
                                          f"192.168.213.11 . tcp . 80 : goto {c['external']}",
                                          f"192.168.213.12 . tcp . 80 : goto {c['external']}"]
    assert elements(p, "cluster-ips") == ["10.43.0.10"]     # ingress IPs are node addresses: never rejected


def test_load_balancer_without_node_ports():
    lb = svc("web", [HTTP], type="LoadBalancer", allocateLoadBalancerNodePorts=False)
    p = plan([lb], [slc("web", [ep("10.244.2.5", "n2")])])
    assert [e.split(" :")[0] for e in elements(p, "service-nodeports")] == ["tcp . 80"]


def test_a_loopback_ingress_ip_is_refused():
    lb = svc("web", [HTTP], type="LoadBalancer", status={"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}})
    p = plan([lb], [slc("web", [ep("10.244.2.5", "n2")])])
    assert not any(e.startswith("127.") for e in elements(p, "service-ips"))
    assert "127.0.0.1 is a loopback address" in p.problems[0].message


def test_load_balancer_ports_never_take_a_reserved_port_nor_anothers():
    a = svc("api", [{"name": "https", "port": 6443, "targetPort": 6443}], type="LoadBalancer", ip="10.43.0.20")
    first = svc("first", [{"name": "http", "port": 8000}], type="LoadBalancer", ip="10.43.0.21",
                created="2024-01-01T00:00:00Z")
    second = svc("second", [{"name": "http", "port": 8000}], type="LoadBalancer", ip="10.43.0.22",
                 created="2024-01-02T00:00:00Z")
    slices = [slc(n, [ep(f"10.244.2.{i}", "n2")], [{"name": pn, "port": 8080}])
              for i, (n, pn) in enumerate([("api", "https"), ("first", "http"), ("second", "http")], start=2)]
    for order in ([a, first, second], [second, first, a]):
        p = plan(order, slices, reserved_ports={6443: "the shoal API server"})
        ports = [e.split(" :")[0] for e in elements(p, "service-nodeports")]
        assert ports == ["tcp . 8000"]
        assert chain_names(service_ports([first], [])[0][0])["external"] in elements(p, "service-nodeports")[0]
        assert sorted(pr.message for pr in p.problems) == [
            "port 6443 of default/api:https is reserved for the shoal API server on this node: not published here",
            "port 8000/TCP of default/second:http is already published for default/first:http"]
        # their ClusterIPs keep working
        assert len(elements(p, "service-ips")) == 3


def test_external_ips():
    p = plan([svc("web", [HTTP], externalIPs=["192.168.50.5", "not-an-ip", "10.43.0.10"])],
             [slc("web", [ep("10.244.2.5", "n2")])])
    c = web_chains()
    assert f"192.168.50.5 . tcp . 80 : goto {c['external']}" in elements(p, "service-ips")
    assert sorted(pr.message for pr in p.problems) == ["external address 10.43.0.10 is a ClusterIP",
                                                       "externalIPs: 'not-an-ip' is not an IPv4 address"]


# ---------------------------------------------------------------------------- traffic policies
def test_external_traffic_policy_local_keeps_the_source_and_short_circuits_pods_and_host():
    p = plan([svc("web", [dict(HTTP, nodePort=30080)], type="NodePort", externalTrafficPolicy="Local")],
             [slc("web", [ep("10.244.1.5", "n1"), ep("10.244.2.5", "n2")])])
    c = web_chains()
    assert rules(p, c["external"]) == [
        f"ip saddr 10.244.1.0/24 goto {c['service']}",
        "fib saddr type local jump mark-for-masquerade",
        f"fib saddr type local goto {c['service']}",
        f"goto {c['local']}",
    ]
    (local_target,) = [r.split("goto ")[1] for r in rules(p, c["local"])]
    assert "10.244.1.5" in local_target
    assert rules(p, c["service"])[0].startswith("numgen random mod 2 ")


def test_external_local_without_local_endpoints_drops_outside_traffic():
    p = plan([svc("web", [dict(HTTP, nodePort=30080)], type="NodePort", externalTrafficPolicy="Local")],
             [slc("web", [ep("10.244.2.5", "n2")])])
    c = web_chains()
    assert rules(p, c["external"])[-1] == "drop"
    assert c["local"] not in p.ruleset.chains


def test_internal_traffic_policy_local():
    service = svc("web", [HTTP], internalTrafficPolicy="Local")
    p = plan([service], [slc("web", [ep("10.244.1.5", "n1"), ep("10.244.2.5", "n2")])])
    c = web_chains()
    assert elements(p, "service-ips") == [f"10.43.0.10 . tcp . 80 : goto {c['local']}"]
    assert c["service"] not in p.ruleset.chains
    # endpoints elsewhere only: dropped, not rejected (kube-proxy)
    p = plan([service], [slc("web", [ep("10.244.2.5", "n2")])])
    assert elements(p, "no-endpoint-services") == ["10.43.0.10 . tcp . 80 : drop"]
    assert names(p, "endpoint-") == []


# ---------------------------------------------------------------------------- session affinity
def test_session_affinity_client_ip():
    service = svc("web", [HTTP], sessionAffinity="ClientIP")
    p = plan([service], [slc("web", [ep("10.244.1.5", "n1"), ep("10.244.2.5", "n2")])])
    sp = service_ports([service], [])[0][0]
    c = chain_names(sp)
    e1 = Endpoint("10.244.1.5", 8080, None, True, True, False)
    e2 = Endpoint("10.244.2.5", 8080, None, True, True, False)
    s1, s2 = affinity_set(sp, e1), affinity_set(sp, e2)
    assert sp.affinity_timeout == 10800
    assert p.ruleset.sets[s1].spec == "type ipv4_addr; flags dynamic,timeout; timeout 10800s;"
    assert rules(p, c["service"]) == [
        f"ip saddr @{s1} goto {endpoint_chain(sp, e1)}",
        f"ip saddr @{s2} goto {endpoint_chain(sp, e2)}",
        f"numgen random mod 2 vmap {{ 0 : goto {endpoint_chain(sp, e1)}, 1 : goto {endpoint_chain(sp, e2)} }}",
    ]
    assert rules(p, endpoint_chain(sp, e2)) == [
        "ip saddr 10.244.2.5 jump mark-for-masquerade",
        f"update @{s2} {{ ip saddr }}",
        "meta l4proto tcp dnat to 10.244.2.5:8080",
    ]
    # a changed timeout is a new set, never a redefinition of the live one
    other = svc("web", [HTTP], sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    sp60 = service_ports([other], [])[0][0]
    assert sp60.affinity_timeout == 60 and affinity_set(sp60, e1) != s1
    p60 = plan([other], [slc("web", [ep("10.244.1.5", "n1")])])
    assert p60.ruleset.sets[affinity_set(sp60, e1)].spec.endswith("timeout 60s;")


def test_no_affinity_no_sets():
    p = plan([svc("web", [HTTP], sessionAffinity="None")], [slc("web", [ep("10.244.1.5", "n1")])])
    assert not [s for s in p.ruleset.sets if s.startswith("affinity-")]
    assert "update @" not in p.script


# ---------------------------------------------------------------------------- converging an existing table
def test_converging_flushes_refills_and_deletes_only_what_is_stale():
    service = svc("web", [HTTP], sessionAffinity="ClientIP")
    before = plan([service], [slc("web", [ep("10.244.1.5", "n1"), ep("10.244.2.5", "n2")])])
    after = plan([service], [slc("web", [ep("10.244.2.5", "n2")])], existing=before.ruleset.names())
    lines = after.script.splitlines()
    assert lines[0] == "add table ip shoal-svc" and "delete table ip shoal-svc" not in lines
    (gone,) = [c for c in before.ruleset.chains if c not in after.ruleset.chains]
    (gone_set,) = [s for s in before.ruleset.sets if s not in after.ruleset.sets]
    (kept_set,) = [s for s in after.ruleset.sets if s.startswith("affinity-")]
    assert "10.244.1.5" in gone and "10.244.1.5" in gone_set
    # every chain that exists is flushed; the stale ones are deleted after everything else
    for c in before.ruleset.chains:
        assert f"flush chain ip shoal-svc {c}" in lines
    assert lines[-2:] == [f"delete chain ip shoal-svc {gone}", f"delete set ip shoal-svc {gone_set}"]
    last_add = max(i for i, l in enumerate(lines) if l.startswith("add "))
    first_flush = min(i for i, l in enumerate(lines) if l.startswith("flush "))
    assert first_flush < min(i for i, l in enumerate(lines) if l.startswith("add rule"))
    assert last_add < lines.index(f"delete chain ip shoal-svc {gone}")
    # the maps are flushed and refilled; the affinity memory of a remaining endpoint is kept
    assert "flush map ip shoal-svc service-ips" in lines
    assert f"flush set ip shoal-svc {kept_set}" not in lines
    assert f"add set ip shoal-svc {kept_set} {{ type ipv4_addr; flags dynamic,timeout; timeout 10800s; }}" in lines


def test_deleting_every_service_leaves_only_the_frame():
    service = svc("web", [dict(HTTP, nodePort=30080)], type="NodePort", sessionAffinity="ClientIP")
    full = plan([service], [slc("web", [ep("10.244.1.5", "n1")])])
    empty = plan([], [], existing=full.ruleset.names())
    assert empty.ruleset.names() == plan([]).ruleset.names()
    deleted = sorted(l.split()[-1] for l in empty.script.splitlines() if l.startswith("delete "))
    assert deleted == sorted((full.ruleset.names().chains - empty.ruleset.names().chains)
                             | (full.ruleset.names().sets - empty.ruleset.names().sets))
    assert not [l for l in empty.script.splitlines() if l.startswith("add element") and "pod-cidrs" not in l]


def test_a_set_that_became_a_map_is_replaced():
    odd = Existing(chains=frozenset({"services"}), sets=frozenset({"service-ips", "leftover"}), maps=frozenset())
    assert plan([], existing=odd).script == plan([]).script          # recreated, in one transaction
    stale = Existing(chains=frozenset({"services"}), sets=frozenset({"leftover"}), maps=frozenset({"old-map"}))
    lines = plan([], existing=stale).script.splitlines()
    assert lines[-2:] == ["delete set ip shoal-svc leftover", "delete map ip shoal-svc old-map"]


def test_parse_existing_reads_the_terse_json_listing():
    listing = json.dumps({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "ip", "name": "shoal-svc", "handle": 1}},
        {"chain": {"family": "ip", "table": "shoal-svc", "name": "services", "handle": 2}},
        {"chain": {"family": "ip", "table": "shoal-svc", "name": "nat-output", "handle": 3, "type": "nat",
                   "hook": "output", "prio": -100, "policy": "accept"}},
        {"set": {"family": "ip", "table": "shoal-svc", "name": "cluster-ips", "type": "ipv4_addr", "handle": 4}},
        {"map": {"family": "ip", "table": "shoal-svc", "name": "service-ips", "type": ["ipv4_addr"], "map": "verdict"}},
        {"chain": {"family": "ip", "table": "shoal", "name": "hostports", "handle": 9}},
        {"rule": {"family": "ip", "table": "shoal-svc", "chain": "services", "handle": 5, "expr": []}},
    ]})
    assert parse_existing(listing) == Existing(chains=frozenset({"services", "nat-output"}),
                                               sets=frozenset({"cluster-ips"}), maps=frozenset({"service-ips"}))


def test_unsupported_protocol_and_bad_port_are_reported():
    p = plan([svc("web", [{"name": "a", "port": 80, "protocol": "ICMP"}, {"name": "b", "port": 0}])], [])
    assert [pr.message for pr in p.problems] == [
        "spec.ports[0].protocol 'ICMP': only TCP, UDP and SCTP are proxied",
        "spec.ports[1].port 0 is outside 1-65535"]
    assert all(pr.subject == "service default/web" for pr in p.problems)
