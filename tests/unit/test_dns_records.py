"""Cluster DNS answers (agent.dnsrecords): queries built with dnspython, the replies rendered to
wire and parsed back, compared as text."""
from __future__ import annotations

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import pytest

from shoal.agent.dnsrecords import (ClusterRecords, ServiceEntry, Zone, answer, dashed, service_entry, undashed)

pytestmark = pytest.mark.unit

Z = "cluster.local"


def svc(name, ns="default", *, ip="10.43.0.10", ips=None, ports=(), type_=None):
    spec = {"clusterIP": ip, "ports": [dict(p) for p in ports]}
    if ips is not None:
        spec["clusterIPs"] = ips
    if type_:
        spec["type"] = type_
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def ep(ip, *, ready=True, hostname=None):
    e = {"addresses": [ip]}
    if ready is not None:
        e["conditions"] = {"ready": ready}
    if hostname:
        e["hostname"] = hostname
    return e


def eps(name, service, endpoints, *, ns="default", ports=({"name": "pg", "port": 5432, "protocol": "TCP"},),
        address_type="IPv4"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": address_type,
            "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
            "endpoints": endpoints, "ports": [dict(p) for p in ports]}


WEB = svc("web", ports=[{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}])
DB = svc("db", ip="None", ports=[{"name": "pg", "port": 5432}])
DB_SLICES = [eps("db-abc", "db", [ep("10.244.1.5", hostname="db-0"), ep("10.244.2.6"), ep("10.244.1.7", ready=False),
                                  ep("10.244.3.8", ready=None)])]
EMPTY = svc("empty", ip="None")
EMPTY_SLICES = [eps("empty-x", "empty", [ep("10.244.1.9", ready=False)])]
API = svc("api", "other", ip="10.43.0.20", ips=["10.43.0.20", "fd00::20"], ports=[{"port": 443}])


def records(*pairs, synced=True) -> ClusterRecords:
    r = ClusterRecords()
    for s, slices in pairs:
        md = s["metadata"]
        r.set_service(md["namespace"], md["name"], service_entry(s, slices), now=1_700_000_000)
    r.synced = synced
    return r


RECORDS = records((WEB, []), (DB, DB_SLICES), (EMPTY, EMPTY_SLICES), (API, []))
ZONE = Zone.of(Z, ns_addresses=("10.244.0.1",))


def ask(name, rdtype="A", *, recs=RECORDS, zone=ZONE, rdclass="IN", **kw):
    q = dns.message.make_query(name, rdtype, rdclass, **kw)
    reply = answer(q, recs, zone)
    if reply is None:
        return None
    out = dns.message.from_wire(reply.to_wire())
    assert out.id == q.id and out.flags & dns.flags.QR
    return out


def lines(section) -> list[str]:
    """The records, sorted: a set's order on the wire is random (dnspython shuffles it)."""
    return sorted(f"{rr.name} {rr.ttl} {dns.rdatatype.to_text(rr.rdtype)} {rd}" for rr in section for rd in rr)


def summary(reply):
    return (dns.rcode.to_text(reply.rcode()), lines(reply.answer),
            [dns.rdatatype.to_text(rr.rdtype) for rr in reply.authority])


# ------------------------------------------------------------------------------ the table
S = "svc.cluster.local."
CASES = [
    # a ClusterIP Service
    ("web.default.svc.cluster.local", "A", ("NOERROR", [f"web.default.{S} 5 A 10.43.0.10"], [])),
    ("WEB.Default.svc.CLUSTER.local", "A", ("NOERROR", ["WEB.Default.svc.CLUSTER.local. 5 A 10.43.0.10"], [])),
    ("web.default.svc.cluster.local", "AAAA", ("NOERROR", [], ["SOA"])),
    ("web.default.svc.cluster.local", "MX", ("NOERROR", [], ["SOA"])),
    ("nope.default.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("web.nons.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("db-0.web.default.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),      # endpoint names: headless only
    ("a.b.web.default.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    # dual stack
    ("api.other.svc.cluster.local", "AAAA", ("NOERROR", [f"api.other.{S} 5 AAAA fd00::20"], [])),
    ("api.other.svc.cluster.local", "ANY", ("NOERROR", [f"api.other.{S} 5 A 10.43.0.20",
                                                        f"api.other.{S} 5 AAAA fd00::20"], [])),
    # a headless Service: ready endpoints only (ready unset counts as ready)
    ("db.default.svc.cluster.local", "A", ("NOERROR", [f"db.default.{S} 5 A 10.244.1.5", f"db.default.{S} 5 A 10.244.2.6",
                                                       f"db.default.{S} 5 A 10.244.3.8"], [])),
    ("db.default.svc.cluster.local", "AAAA", ("NOERROR", [], ["SOA"])),
    ("db-0.db.default.svc.cluster.local", "A", ("NOERROR", [f"db-0.db.default.{S} 5 A 10.244.1.5"], [])),
    ("10-244-2-6.db.default.svc.cluster.local", "A", ("NOERROR", [f"10-244-2-6.db.default.{S} 5 A 10.244.2.6"], [])),
    ("10-244-1-7.db.default.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),  # not ready
    ("db-1.db.default.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("empty.default.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),          # no ready endpoint: no record
    # SRV
    ("_http._tcp.web.default.svc.cluster.local", "SRV",
     ("NOERROR", [f"_http._tcp.web.default.{S} 5 SRV 0 100 80 web.default.{S}"], [])),
    ("_dns._udp.web.default.svc.cluster.local", "SRV",
     ("NOERROR", [f"_dns._udp.web.default.{S} 5 SRV 0 100 53 web.default.{S}"], [])),
    ("_http._udp.web.default.svc.cluster.local", "SRV", ("NXDOMAIN", [], ["SOA"])),
    ("_nope._tcp.web.default.svc.cluster.local", "SRV", ("NXDOMAIN", [], ["SOA"])),
    ("http.tcp.web.default.svc.cluster.local", "SRV", ("NXDOMAIN", [], ["SOA"])),
    ("_http._tcp.web.default.svc.cluster.local", "A", ("NOERROR", [], ["SOA"])),   # the name exists
    ("_tcp.web.default.svc.cluster.local", "A", ("NOERROR", [], ["SOA"])),         # above a SRV name
    ("_sctp.web.default.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("web.default.svc.cluster.local", "SRV", ("NOERROR", [f"web.default.{S} 5 SRV 0 50 80 web.default.{S}",
                                                          f"web.default.{S} 5 SRV 0 50 53 web.default.{S}"], [])),
    ("api.other.svc.cluster.local", "SRV", ("NOERROR", [f"api.other.{S} 5 SRV 0 100 443 api.other.{S}"], [])),
    ("_pg._tcp.db.default.svc.cluster.local", "SRV",
     ("NOERROR", [f"_pg._tcp.db.default.{S} 5 SRV 0 33 5432 db-0.db.default.{S}",
                  f"_pg._tcp.db.default.{S} 5 SRV 0 33 5432 10-244-2-6.db.default.{S}",
                  f"_pg._tcp.db.default.{S} 5 SRV 0 33 5432 10-244-3-8.db.default.{S}"], [])),
    # the tree above the Services
    ("default.svc.cluster.local", "A", ("NOERROR", [], ["SOA"])),
    ("other.svc.cluster.local", "A", ("NOERROR", [], ["SOA"])),
    ("nons.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("svc.cluster.local", "A", ("NOERROR", [], ["SOA"])),
    ("cluster.local", "A", ("NOERROR", [], ["SOA"])),
    ("cluster.local", "NS", ("NOERROR", ["cluster.local. 5 NS ns.dns.cluster.local."], [])),
    ("ns.dns.cluster.local", "A", ("NOERROR", ["ns.dns.cluster.local. 5 A 10.244.0.1"], [])),
    ("dns.cluster.local", "A", ("NOERROR", [], ["SOA"])),
    ("dns-version.cluster.local", "TXT", ("NOERROR", ['dns-version.cluster.local. 5 TXT "1.1.0"'], [])),
    ("dns-version.cluster.local", "A", ("NOERROR", [], ["SOA"])),
    ("nothing.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("web.default.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),  # a search-path expansion of a wrong name
    # pods (`pods insecure`)
    ("10-244-1-9.default.pod.cluster.local", "A", ("NOERROR", ["10-244-1-9.default.pod.cluster.local. 5 A 10.244.1.9"], [])),
    ("10-244-1-9.any.pod.cluster.local", "AAAA", ("NOERROR", [], ["SOA"])),
    ("fd00--9.default.pod.cluster.local", "AAAA", ("NOERROR", ["fd00--9.default.pod.cluster.local. 5 AAAA fd00::9"], [])),
    ("10-244-1.default.pod.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("web.default.pod.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("x.10-244-1-9.default.pod.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("default.pod.cluster.local", "A", ("NOERROR", [], ["SOA"])),
    ("pod.cluster.local", "A", ("NOERROR", [], ["SOA"])),
]


@pytest.mark.parametrize("name, rdtype, expected", CASES, ids=[f"{n}/{t}" for n, t, _ in CASES])
def test_answers(name, rdtype, expected):
    reply = ask(name, rdtype)
    rcode, answers, authority = expected
    assert summary(reply) == (rcode, sorted(answers), authority)
    assert reply.flags & dns.flags.AA and reply.flags & dns.flags.RA


def test_negative_answers_carry_the_zone_soa_with_the_record_ttl():
    reply = ask("nope.default.svc.cluster.local")
    (soa,) = reply.authority
    assert soa.name.to_text() == "cluster.local." and soa.ttl == 5
    rd = soa[0]
    assert (rd.mname.to_text(), rd.rname.to_text(), rd.minimum) == ("ns.dns.cluster.local.",
                                                                   "hostmaster.cluster.local.", 5)
    assert rd.serial >= 1_700_000_000


def test_srv_targets_addresses_in_the_additional_section():
    reply = ask("_pg._tcp.db.default.svc.cluster.local", "SRV")
    assert sorted(lines(reply.additional)) == [f"10-244-2-6.db.default.{S} 5 A 10.244.2.6",
                                               f"10-244-3-8.db.default.{S} 5 A 10.244.3.8",
                                               f"db-0.db.default.{S} 5 A 10.244.1.5"]
    reply = ask("_http._tcp.web.default.svc.cluster.local", "SRV")
    assert lines(reply.additional) == [f"web.default.{S} 5 A 10.43.0.10"]


def test_outside_the_zone_is_forwarded_inside_never():
    assert ask("example.com") is None
    assert ask("cluster.local.example.com") is None
    assert ask("localcluster.local") is None
    other = Zone.of("shoal.test")
    assert ask("web.default.svc.cluster.local", zone=other) is None
    assert summary(ask("web.default.svc.shoal.test", zone=other))[1] == ["web.default.svc.shoal.test. 5 A 10.43.0.10"]


def test_before_the_informers_listed_the_zone_answers_servfail():
    unsynced = records((WEB, []), synced=False)
    assert ask("web.default.svc.cluster.local", recs=unsynced).rcode() == dns.rcode.SERVFAIL
    assert ask("example.com", recs=unsynced) is None


@pytest.mark.parametrize("ip, name", [
    ("10.43.0.10", f"web.default.{S}"),
    ("10.244.1.5", f"db-0.db.default.{S}"),
    ("10.244.2.6", f"10-244-2-6.db.default.{S}"),
    ("fd00::20", f"api.other.{S}"),
])
def test_ptr(ip, name):
    reply = ask(dns.reversename.from_address(ip).to_text(), "PTR")
    assert [str(rd) for rr in reply.answer for rd in rr] == [name]
    assert reply.flags & dns.flags.AA


def test_ptr_of_other_addresses_is_forwarded():
    assert ask(dns.reversename.from_address("10.244.1.7").to_text(), "PTR") is None    # not ready
    assert ask(dns.reversename.from_address("192.0.2.1").to_text(), "PTR") is None
    assert ask("244.10.in-addr.arpa", "PTR") is None
    assert ask(dns.reversename.from_address("10.43.0.10").to_text(), "A") is None


@pytest.mark.parametrize("mutate, rcode", [
    (lambda q: q.set_opcode(dns.opcode.NOTIFY), dns.rcode.NOTIMP),
    (lambda q: q.question.clear(), dns.rcode.FORMERR),
    (lambda q: q.use_edns(1), dns.rcode.BADVERS),
])
def test_malformed_queries(mutate, rcode):
    q = dns.message.make_query("web.default.svc.cluster.local", "A")
    mutate(q)
    reply = answer(q, RECORDS, ZONE)
    assert reply.rcode() == rcode


def test_other_classes_and_zone_transfers_are_refused():
    assert ask("web.default.svc.cluster.local", "A", rdclass="CH").rcode() == dns.rcode.REFUSED
    assert ask("cluster.local", "AXFR").rcode() == dns.rcode.REFUSED


def test_edns_is_answered_with_edns():
    reply = ask("web.default.svc.cluster.local", use_edns=0, payload=4096)
    assert reply.edns == 0 and reply.payload == 1232


def test_address_order_varies_between_answers():
    orders = {tuple(str(rd) for rr in ask("db.default.svc.cluster.local").answer for rd in rr) for _ in range(60)}
    assert len(orders) > 1       # 3 addresses: all 60 answers alike by chance has odds 6^-59


# ------------------------------------------------------------------------------ entries
def test_service_entry_of_a_clusterip_service():
    e = service_entry(WEB)
    assert e == ServiceEntry("default", "web", False, ("10.43.0.10",), {},
                             {("http", "tcp"): ((80, ""),), ("dns", "udp"): ((53, ""),)})


def test_service_entry_of_a_headless_service_reads_ready_ipv4_and_ipv6_slices_only():
    slices = DB_SLICES + [eps("db-v6", "db", [ep("fd00::5", hostname="db-0")], address_type="IPv6"),
                          eps("db-fqdn", "db", [ep("db.example.com")], address_type="FQDN"),
                          # the same endpoint in two slices (a controller mid-move): once
                          eps("db-dup", "db", [ep("10.244.1.5", hostname="db-0")])]
    e = service_entry(DB, slices)
    assert e.headless and e.addresses == ("10.244.1.5", "10.244.2.6", "10.244.3.8", "fd00::5")
    assert e.endpoints["db-0"] == ("10.244.1.5", "fd00::5")
    assert e.ports[("pg", "tcp")] == ((5432, "db-0"), (5432, "10-244-2-6"), (5432, "10-244-3-8"))


def test_service_entry_skips_external_name_and_bad_addresses():
    assert service_entry(svc("ext", type_="ExternalName", ip="")) is None
    assert service_entry(svc("noip", ip="")).addresses == ()
    assert service_entry(DB, [eps("x", "db", [ep("not-an-ip")])]).addresses == ()


def test_a_service_without_its_cluster_ip_yet_holds_its_name():
    recs = records((svc("noip", ip=""), []))
    assert summary(ask("noip.default.svc.cluster.local", recs=recs)) == ("NOERROR", [], ["SOA"])


def test_records_follow_changes_and_deletions():
    recs = records((WEB, []), (DB, DB_SLICES))
    serial = recs.serial
    assert recs.set_service("default", "web", service_entry(svc("web", ip="10.43.0.11")), now=0)
    assert recs.serial > serial
    assert not recs.set_service("default", "web", service_entry(svc("web", ip="10.43.0.11")), now=0)
    assert recs.reverse("10.43.0.10") == [] and recs.reverse("10.43.0.11") == [("web", "default", "svc")]
    recs.set_service("default", "web", None, now=0)
    recs.set_service("default", "db", None, now=0)
    assert len(recs) == 0 and not recs.has_namespace("default") and recs.reverse("10.244.1.5") == []
    assert summary(ask("web.default.svc.cluster.local", recs=recs))[0] == "NXDOMAIN"


@pytest.mark.parametrize("ip", ["10.244.1.5", "fd00::5", "fd00:1:2::3:4"])
def test_dashed_names_round_trip(ip):
    assert undashed(dashed(ip)) == ip


def test_undashed_refuses_what_is_no_address():
    assert undashed("10-244-1") is None and undashed("web") is None and undashed("") is None
