"""The cluster DNS server (agent.dns) on loopback, no root: answers over UDP and TCP, forwarding
to fake upstreams (shoal.testkit.dnsupstream) with TCP fallback and resolver failover,
truncation, client filtering, malformed input; then the records fed by informers on a real
API server through a node's credential, and the agent's wiring."""
from __future__ import annotations

import socket
import struct
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from shoal.agent.dns import ClusterDNS, DNSOptions, DNSServer, HostResolvers
from shoal.agent.dnsrecords import ClusterRecords, Zone, service_entry
from shoal.machinery.control.informer import Informer
from shoal.testkit.apiserver import start_test_server, wait_for
from shoal.testkit.dnsupstream import FakeUpstream

pytestmark = pytest.mark.integration

BIG_TXT = [f'TXT "{i:03d}-' + "x" * 80 + '"' for i in range(10)]        # ≈ 1 KB: more than 512, less than 1232
UPSTREAM_RECORDS = {"outside.example": ["A 192.0.2.10"], "big.example": BIG_TXT}


def web():
    return {"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}


def headless(n: int):
    svc = {"metadata": {"name": "many", "namespace": "default"}, "spec": {"clusterIP": "None"}}
    sl = {"addressType": "IPv4", "metadata": {"name": "many-1", "namespace": "default"},
          "endpoints": [{"addresses": [f"10.244.{i // 250}.{i % 250 + 1}"]} for i in range(n)], "ports": []}
    return svc, [sl]


def make_records() -> ClusterRecords:
    recs = ClusterRecords()
    recs.set_service("default", "web", service_entry(web()), now=time.time())
    svc, slices = headless(120)
    recs.set_service("default", "many", service_entry(svc, slices), now=time.time())
    recs.synced = True
    return recs


@pytest.fixture
def upstream():
    with FakeUpstream(UPSTREAM_RECORDS, address="127.0.0.2") as up:
        yield up


def start_server(tmp_path, upstream_port, nameservers, *, clients="127.0.0.0/8", timeout=0.5,
                 records=None) -> DNSServer:
    conf = tmp_path / "resolv.conf"
    conf.write_text("".join(f"nameserver {ns}\n" for ns in nameservers) + "search lan\n")
    srv = DNSServer(records or make_records(), Zone.of("cluster.local"), HostResolvers(str(conf)),
                    forward_timeout=timeout, upstream_port=upstream_port)
    srv.start("127.0.0.1", port=0, clients=clients)
    return srv


@pytest.fixture
def server(tmp_path, upstream):
    srv = start_server(tmp_path, upstream.port, ["127.0.0.2"])
    yield srv
    srv.stop()


def udp(srv, name, rdtype="A", **kw):
    q = dns.message.make_query(name, rdtype, **kw)
    r = dns.query.udp(q, srv.address, port=srv.port, timeout=3, ignore_trailing=True)
    assert r.id == q.id
    return r


def tcp(srv, name, rdtype="A", **kw):
    q = dns.message.make_query(name, rdtype, **kw)
    r = dns.query.tcp(q, srv.address, port=srv.port, timeout=3)
    assert r.id == q.id
    return r


def addrs(r) -> list[str]:
    return sorted(str(rd) for rr in r.answer for rd in rr)


def test_cluster_names_over_udp_and_tcp_never_forwarded(server, upstream):
    for ask in (udp, tcp):
        r = ask(server, "web.default.svc.cluster.local")
        assert addrs(r) == ["10.43.0.10"] and r.flags & dns.flags.AA
        assert ask(server, "nope.default.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    assert upstream.queries == []


def test_other_names_are_forwarded_with_the_clients_id(server, upstream):
    r = udp(server, "outside.example")
    assert addrs(r) == ["192.0.2.10"] and not r.flags & dns.flags.AA
    assert udp(server, "missing.example").rcode() == dns.rcode.NXDOMAIN
    assert tcp(server, "outside.example").answer
    assert upstream.queries == [("udp", "outside.example.", "A"), ("udp", "missing.example.", "A"),
                                ("tcp", "outside.example.", "A")]


def test_a_truncated_upstream_answer_is_fetched_over_tcp(server, upstream):
    r = udp(server, "big.example", "TXT")                       # the client: plain 512-byte UDP
    assert r.flags & dns.flags.TC                                 # it must ask again over TCP
    assert upstream.queries == [("udp", "big.example.", "TXT"), ("tcp", "big.example.", "TXT")]
    r = udp(server, "big.example", "TXT", use_edns=0, payload=1232)
    assert len(list(r.answer[0])) == 10 and not r.flags & dns.flags.TC
    r = tcp(server, "big.example", "TXT")
    assert len(list(r.answer[0])) == 10 and not r.flags & dns.flags.TC


def test_large_cluster_answers_are_truncated_over_udp(server):
    assert udp(server, "many.default.svc.cluster.local").flags & dns.flags.TC
    r = udp(server, "many.default.svc.cluster.local", use_edns=0, payload=4096)
    assert r.flags & dns.flags.TC                                # capped at 1232 bytes whatever the client offers
    r = tcp(server, "many.default.svc.cluster.local")
    assert len(addrs(r)) == 120 and not r.flags & dns.flags.TC


def test_ptr_of_other_addresses_is_forwarded(server, upstream):
    assert udp(server, "10.0.43.10.in-addr.arpa", "PTR").answer[0][0].to_text() == "web.default.svc.cluster.local."
    assert udp(server, "1.2.0.192.in-addr.arpa", "PTR").rcode() == dns.rcode.NXDOMAIN
    assert upstream.queries == [("udp", "1.2.0.192.in-addr.arpa.", "PTR")]


def test_the_next_resolver_after_a_timeout_or_servfail(tmp_path, upstream):
    with FakeUpstream({}, address="127.0.0.3", port=upstream.port, servfail=True) as failing, \
            FakeUpstream({}, address="127.0.0.4", port=upstream.port, silent=("outside.example",)) as silent:
        srv = start_server(tmp_path, upstream.port, ["127.0.0.4", "127.0.0.3", "127.0.0.2"], timeout=0.3)
        try:
            t0 = time.monotonic()
            assert addrs(udp(srv, "outside.example")) == ["192.0.2.10"]
            assert time.monotonic() - t0 < 2
            assert [q[1] for q in silent.queries + failing.queries + upstream.queries] == ["outside.example."] * 3
        finally:
            srv.stop()
        srv = start_server(tmp_path, upstream.port, ["127.0.0.4", "127.0.0.3"], timeout=0.3)
        try:
            assert udp(srv, "outside.example").rcode() == dns.rcode.SERVFAIL
        finally:
            srv.stop()


def test_no_upstream_or_only_itself_is_servfail(tmp_path, upstream):
    for nameservers in ([], ["127.0.0.1"]):         # 127.0.0.1 is the server's own address: never asked
        srv = start_server(tmp_path, upstream.port, nameservers)
        try:
            t0 = time.monotonic()
            assert udp(srv, "outside.example").rcode() == dns.rcode.SERVFAIL
            assert time.monotonic() - t0 < 1
        finally:
            srv.stop()
    srv = start_server(tmp_path, upstream.port, ["127.0.0.1", "127.0.0.2"])
    try:
        assert addrs(udp(srv, "outside.example")) == ["192.0.2.10"]
    finally:
        srv.stop()


def test_clients_outside_the_pod_network_get_nothing(tmp_path, upstream):
    srv = start_server(tmp_path, upstream.port, ["127.0.0.2"], clients="10.244.1.0/24")
    try:
        with pytest.raises(dns.exception.Timeout):
            dns.query.udp(dns.message.make_query("web.default.svc.cluster.local", "A"), srv.address,
                          port=srv.port, timeout=0.5)
        with pytest.raises((EOFError, ConnectionError, dns.exception.Timeout)):
            dns.query.tcp(dns.message.make_query("web.default.svc.cluster.local", "A"), srv.address,
                          port=srv.port, timeout=1)
        assert srv.stats["refused_clients"] == 2 and srv.stats["queries"] == 0
    finally:
        srv.stop()


def test_malformed_input(server):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        s.sendto(struct.pack("!HH", 0x1234, 0x0100) + b"\x00\x01\x00\x00\x00\x00\x00\x00\xffjunk", (server.address,
                                                                                                       server.port))
        r = dns.message.from_wire(s.recv(512))
        assert r.id == 0x1234 and r.rcode() == dns.rcode.FORMERR and r.flags & dns.flags.QR
        for junk in (b"\x12", dns.message.make_response(dns.message.make_query("x.example", "A")).to_wire()):
            s.sendto(junk, (server.address, server.port))        # too short; a response: no answer
            with pytest.raises((TimeoutError, socket.timeout)):
                s.recv(512)
    finally:
        s.close()
    assert addrs(udp(server, "web.default.svc.cluster.local")) == ["10.43.0.10"]     # still serving


def test_stop_releases_the_port(tmp_path, upstream):
    srv = start_server(tmp_path, upstream.port, ["127.0.0.2"])
    port = srv.port
    tcp(srv, "web.default.svc.cluster.local")
    srv.stop()
    again = DNSServer(make_records(), Zone.of("cluster.local"), HostResolvers(str(tmp_path / "resolv.conf")))
    again.start("127.0.0.1", port=port)
    try:
        assert addrs(udp(again, "web.default.svc.cluster.local")) == ["10.43.0.10"]
    finally:
        again.stop()


def test_host_resolvers_follow_the_file(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\n")
    now = [0.0]
    hr = HostResolvers(str(conf), recheck=2.0, clock=lambda: now[0])
    assert hr.nameservers() == ["10.0.0.2"]
    conf.write_text("nameserver 10.0.0.3\nnameserver 10.0.0.4\n")
    assert hr.nameservers() == ["10.0.0.2"]                # not looked at again yet
    now[0] = 2.5
    assert hr.nameservers() == ["10.0.0.3", "10.0.0.4"]
    hr.exclude = {"10.0.0.3"}
    assert hr.nameservers() == ["10.0.0.4"]
    conf.unlink()
    now[0] = 5.0
    assert hr.nameservers() == []


# ------------------------------------------------------------------------------ informers
def _ask(zone_records: ClusterRecords, name: str, rdtype: str = "A"):
    from shoal.agent.dnsrecords import answer
    return answer(dns.message.make_query(name, rdtype), zone_records, Zone.of("cluster.local"))


def test_records_follow_services_and_slices_through_a_node_credential(tmp_path):
    from shoal.agent.join import ensure_credentials
    srv = start_test_server(tmp_path)
    admin = srv.client()
    node = ensure_credentials(srv.url, srv.join_token, "node-1", tmp_path / "node").client()
    d = ClusterDNS(DNSOptions())
    services = Informer(node, "services", watch_timeout=5, retry_base=0.1)
    slices = Informer(node, "endpointslices", watch_timeout=5, retry_base=0.1)
    d.attach(services, slices)
    try:
        assert _ask(d.records, "web.default.svc.cluster.local").rcode() == dns.rcode.SERVFAIL    # not listed yet
        services.start()
        slices.start()
        wait_for(lambda: d.records.synced, timeout=10, what="informers listed")
        assert _ask(d.records, "web.default.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
        svc = admin.create("services", {"apiVersion": "v1", "kind": "Service",
                                        "metadata": {"name": "web", "namespace": "default"},
                                        "spec": {"selector": {"app": "web"},
                                                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        vip = svc["spec"]["clusterIP"]
        wait_for(lambda: addrs(_ask(d.records, "web.default.svc.cluster.local")) == [vip], timeout=10,
                 what=f"web -> {vip}")
        admin.create("services", {"apiVersion": "v1", "kind": "Service",
                                  "metadata": {"name": "db", "namespace": "default"},
                                  "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})
        sl = admin.create("endpointslices", {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "db-a", "namespace": "default", "labels": {"kubernetes.io/service-name": "db"}},
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": True}},
                          {"addresses": ["10.244.2.6"], "conditions": {"ready": True}}]})
        wait_for(lambda: addrs(_ask(d.records, "db.default.svc.cluster.local")) == ["10.244.1.5", "10.244.2.6"],
                 timeout=10, what="db's two endpoints")
        assert addrs(_ask(d.records, "db-0.db.default.svc.cluster.local")) == ["10.244.1.5"]
        sl["endpoints"][1]["conditions"]["ready"] = False
        admin.update("endpointslices", sl)
        wait_for(lambda: addrs(_ask(d.records, "db.default.svc.cluster.local")) == ["10.244.1.5"], timeout=10,
                 what="the unready endpoint gone")
        admin.delete("services", "web", "default")
        wait_for(lambda: _ask(d.records, "web.default.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN,
                 timeout=10, what="web gone")
    finally:
        services.stop(timeout=1)
        slices.stop(timeout=1)
        node.close()
        admin.close()
        srv.stop()


def test_the_agent_gives_clusterfirst_pods_its_bridge_address(tmp_path):
    from tests.integration.agent_harness import AgentHarness, wait
    with AgentHarness(tmp_path) as h:
        n = h.start_agent("node-1")
        h.assign_cidr("node-1", "10.244.7.0/24")
        assert n.agent.dns is None                       # a hollow node serves nothing...
        h.create_pod("p1", "node-1")
        h.create_pod("p2", "node-1", dnsPolicy="Default")
        wait("both pods' containers", lambda: len(n.runtime._procs) == 2)
        by_pod = {p.cfg.pod_name: p.cfg.dns for p in n.runtime._procs.values()}
        assert by_pod["p1"].policy == "ClusterFirst" and by_pod["p1"].cluster_nameservers == ("10.244.7.1",)
        assert by_pod["p2"].policy == "Default"          # ...but its pods point at the bridge address
        assert not [e for e in h.events("p1") if e[1] == "MissingClusterDNS"]


def test_an_agent_without_cluster_dns_warns(tmp_path):
    from tests.integration.agent_harness import AgentHarness, wait
    with AgentHarness(tmp_path) as h:
        n = h.start_agent("node-1", dns=DNSOptions(enabled=False))
        h.assign_cidr("node-1", "10.244.7.0/24")
        h.create_pod("p1", "node-1")
        wait("MissingClusterDNS", lambda: [e for e in h.events("p1") if e[1] == "MissingClusterDNS"])
        assert all(p.cfg.dns.cluster_nameservers == () for p in n.runtime._procs.values())


def test_a_serving_agent_follows_services_and_reserves_port_53(tmp_path):
    from tests.integration.agent_harness import AgentHarness, wait
    with AgentHarness(tmp_path) as h:
        # the bridge address cannot be bound here (no bridge, no root): records still follow
        n = h.start_agent("node-1", dns=DNSOptions(serve=True))
        assert n.agent.reserved_host_ports[53] == "the shoal agent's cluster DNS"
        h.admin.create("services", {"apiVersion": "v1", "kind": "Service",
                                    "metadata": {"name": "web", "namespace": "default"},
                                    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
        wait("web in the agent's DNS records",
             lambda: n.agent.dns.records.synced and n.agent.dns.records.service("default", "web"))
        assert not n.agent.dns.serving
