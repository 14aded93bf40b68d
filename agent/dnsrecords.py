"""Cluster DNS, pure: Services and EndpointSlices in, DNS answers out.

`service_entry(service, slices)` folds one Service and its EndpointSlices (Kubernetes' JSON,
plain dicts) into the records DNS serves for it; `ClusterRecords` holds those entries for
the whole cluster, with a reverse index for PTR; `answer(query, records, zone)` turns one
parsed query (a `dns.message.Message`) into the reply, or into None when the name is not
the cluster's (the server, `agent.dns`, forwards it to the host's resolvers). Nothing here
reads a socket, a clock or a file, so every rule below is a table test
(tests/unit/test_dns_records.py).

What is answered — Kubernetes' DNS specification as CoreDNS' `kubernetes` plugin serves it
(k3s' Corefile: `pods insecure`, `ttl 5`, reverse zones falling through):

- `<svc>.<ns>.svc.<zone>`: A/AAAA of the Service's cluster IPs; for a headless Service
  (`clusterIP: None`) the addresses of its ready endpoints (`conditions.ready` true or
  unset, as CoreDNS reads it), from every IPv4/IPv6 slice labelled
  `kubernetes.io/service-name=<svc>`. A headless Service without a ready endpoint has no
  record at all, so it is NXDOMAIN (as CoreDNS).
- `<ep>.<svc>.<ns>.svc.<zone>` (headless only): the endpoint's addresses; `<ep>` is the
  endpoint's `hostname`, else its address with dashes (`10-244-1-5`, `fd00--5`), as CoreDNS
  names it.
- `_<port>._<proto>.<svc>.<ns>.svc.<zone>` SRV, for every named port: priority 0, weight
  100 shared out evenly (CoreDNS' split), the Service's port and the Service's name as
  target; for a headless Service one record per ready endpoint and port of its slice,
  targetting the endpoint's name. The targets' addresses go in the additional section. A
  SRV query of the Service's own name lists all its ports (CoreDNS does).
- `<a-b-c-d>.<ns>.pod.<zone>`: the address written in the name, whatever it is (CoreDNS'
  `pods insecure`, the mode k3s and kubeadm configure: nodes may not list every pod, so
  `pods verified` is not offered). Anything but a dashed IPv4 or IPv6 address is NXDOMAIN.
- `dns-version.<zone>` TXT "1.1.0" (the specification's schema version); the apex's SOA
  and NS (`ns.dns.<zone>`, whose A records are the addresses the server listens on).
- PTR of a cluster IP (→ the Service's name) or of a headless endpoint's address (→ the
  endpoint's name). Any other reverse name is forwarded, as k3s' `fallthrough in-addr.arpa
  ip6.arpa` does.
- Every other name in the zone: NXDOMAIN. A name that exists with no record of the asked
  type (AAAA of an IPv4-only Service, A of a SRV name, `svc.<zone>`, `<ns>.svc.<zone>` while
  that namespace has a Service, `pod.<zone>`...): NOERROR with no answer (NODATA), never
  NXDOMAIN — an NXDOMAIN tells a resolver that nothing exists below the name either
  (RFC 8020). Negative answers carry the zone's SOA in the authority section; its TTL and
  minimum are the record TTL, so a resolver caches them as long as a positive answer
  (CoreDNS' SOA: `ns.dns.<zone>. hostmaster.<zone>. <serial> 7200 1800 86400 <ttl>`, the
  serial being the time of the last change).
- Names are matched without regard to case and answered with the case they were asked in;
  answers are authoritative (AA); TTL 5 s. Until the Service and EndpointSlice informers have
  listed once, names in the zone answer SERVFAIL (not cached, retried) rather than an
  NXDOMAIN a client would cache — CoreDNS does the same before it has synced.
- Not ours: another opcode (NOTIMP), not one question (FORMERR), EDNS version above 0
  (BADVERS), zone transfers (REFUSED), another class than IN inside the zone (REFUSED).
  Names outside the zone return None: the caller forwards them, never a name inside it.
- The records of a set go out in a random order (dnspython shuffles them when it renders a
  message, as CoreDNS' `loadbalance` does), so that clients taking the first address spread
  over a headless Service's endpoints.
"""
from __future__ import annotations

import ipaddress
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

DEFAULT_DOMAIN = "cluster.local"
DEFAULT_TTL = 5                     # CoreDNS' kubernetes plugin default (k3s keeps it)
SCHEMA_VERSION = "1.1.0"            # dns-version.<zone>: the specification's version
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
UDP_PAYLOAD_MAX = 1232              # what we send over UDP at most (DNS flag day 2020)

IN = dns.rdataclass.IN
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)
_ZONE_TRANSFERS = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)

Labels = tuple[str, ...]            # a name relative to the zone, lower case, leftmost first


# ------------------------------------------------------------------------------ one Service
@dataclass(frozen=True)
class ServiceEntry:
    """What DNS serves for one Service.

    `addresses`: the cluster IPs, or (headless) the ready endpoints' addresses, in order,
    without duplicates. `endpoints` (headless only): endpoint name → its addresses.
    `ports`: (port name, protocol in lower case) → SRV targets as (port, endpoint name),
    the endpoint name "" standing for the Service's own name."""
    namespace: str
    name: str
    headless: bool
    addresses: tuple[str, ...] = ()
    endpoints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ports: Mapping[tuple[str, str], tuple[tuple[int, str], ...]] = field(default_factory=dict)

    def reverse(self) -> list[tuple[str, Labels]]:
        """(address, name relative to the zone) pairs for PTR answers."""
        svc: Labels = (self.name, self.namespace, "svc")
        if not self.headless:
            return [(ip, svc) for ip in self.addresses]
        return [(ip, (ep,) + svc) for ep, ips in self.endpoints.items() for ip in ips]


def _ip(text: object) -> str | None:
    """The canonical text of an IP address, or None for anything else."""
    try:
        return str(ipaddress.ip_address(str(text)))
    except ValueError:
        return None


def dashed(ip: str) -> str:
    """An address as one DNS label, as CoreDNS writes it: 10.244.1.5 → 10-244-1-5,
    fd00::5 → fd00--5."""
    return ip.replace(".", "-").replace(":", "-")


def undashed(label: str) -> str | None:
    """The address a dashed label stands for (`dashed` backwards), or None."""
    for guess in (label.replace("-", "."), label.replace("-", ":")):
        ip = _ip(guess)
        if ip is not None:
            return ip
    return None


def _append(d: dict, key, value) -> None:
    have = d.setdefault(key, [])
    if value not in have:
        have.append(value)


def service_entry(service: Mapping, slices: Iterable[Mapping] = ()) -> ServiceEntry | None:
    """The DNS records of `service` (a Service as the API serves it) given the EndpointSlices
    of that Service (those labelled `kubernetes.io/service-name=<name>` in its namespace; only
    a headless Service's are read). None when DNS serves nothing for it (an ExternalName
    Service: shoal serves no CNAME)."""
    md = service.get("metadata") or {}
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName" or not md.get("name"):
        return None
    namespace, name = md.get("namespace") or "default", md["name"]
    if spec.get("clusterIP") != "None":
        ips = [ip for ip in (_ip(x) for x in spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip]
        ports: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for p in spec.get("ports") or []:
            if isinstance(p.get("port"), int):
                _append(ports, (p.get("name") or "", (p.get("protocol") or "TCP").lower()), (p["port"], ""))
        return ServiceEntry(namespace, name, False, tuple(dict.fromkeys(ips)),
                            ports={k: tuple(v) for k, v in ports.items()})
    addresses: list[str] = []
    endpoints: dict[str, list[str]] = {}
    ports = {}
    for sl in sorted(slices, key=lambda s: (s.get("metadata") or {}).get("name") or ""):
        if sl.get("addressType") not in ("IPv4", "IPv6"):
            continue            # FQDN slices: CoreDNS skips them too
        slice_ports = [(p.get("name") or "", (p.get("protocol") or "TCP").lower(), p["port"])
                       for p in sl.get("ports") or [] if isinstance(p.get("port"), int)]
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue        # unset means ready (the API's documented reading)
            for a in ep.get("addresses") or []:
                ip = _ip(a)
                if ip is None:
                    continue
                label = (ep.get("hostname") or dashed(ip)).lower()
                if ip not in addresses:
                    addresses.append(ip)
                _append(endpoints, label, ip)
                for pname, proto, port in slice_ports:
                    _append(ports, (pname, proto), (port, label))
    return ServiceEntry(namespace, name, True, tuple(addresses), {k: tuple(v) for k, v in endpoints.items()},
                        {k: tuple(v) for k, v in ports.items()})


# ------------------------------------------------------------------------------ the cluster
class ClusterRecords:
    """Every Service's entry, by namespace and name, with the reverse index; `set_service`
    replaces one Service's entry (None removes it). Thread-safe: the informers write while
    the server reads. `synced` says the informers have listed (before that, names in the
    zone answer SERVFAIL); `serial` is the SOA serial, the time of the last change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: dict[tuple[str, str], ServiceEntry] = {}
        self._namespaces: Counter[str] = Counter()
        self._reverse: dict[str, dict[Labels, None]] = {}
        self.synced = False
        self.serial = 0

    def set_service(self, namespace: str, name: str, entry: ServiceEntry | None, *, now: float) -> bool:
        """Store (or with None drop) one Service's entry; True when something changed."""
        key = (namespace, name)
        with self._lock:
            old = self._services.get(key)
            if old == entry:
                return False
            if old is not None:
                self._namespaces[namespace] -= 1
                if self._namespaces[namespace] <= 0:
                    del self._namespaces[namespace]
                for ip, labels in old.reverse():
                    names = self._reverse.get(ip, {})
                    names.pop(labels, None)
                    if not names:
                        self._reverse.pop(ip, None)
            if entry is None:
                del self._services[key]
            else:
                self._services[key] = entry
                self._namespaces[namespace] += 1
                for ip, labels in entry.reverse():
                    self._reverse.setdefault(ip, {})[labels] = None
            self.serial = max(self.serial + 1, int(now)) & 0xFFFFFFFF
            return True

    def service(self, namespace: str, name: str) -> ServiceEntry | None:
        with self._lock:
            return self._services.get((namespace, name))

    def has_namespace(self, namespace: str) -> bool:
        with self._lock:
            return namespace in self._namespaces

    def reverse(self, ip: str) -> list[Labels]:
        with self._lock:
            return list(self._reverse.get(ip, {}))

    def __len__(self) -> int:
        with self._lock:
            return len(self._services)


# ------------------------------------------------------------------------------ answers
@dataclass(frozen=True)
class Zone:
    """The cluster zone as the server serves it: its name, the TTL of every record (and of
    negative answers), and the addresses of `ns.dns.<zone>` (where this server listens)."""
    origin: dns.name.Name
    ttl: int = DEFAULT_TTL
    ns_addresses: tuple[str, ...] = ()

    @classmethod
    def of(cls, domain: str = DEFAULT_DOMAIN, *, ttl: int = DEFAULT_TTL, ns_addresses: Iterable[str] = ()) -> "Zone":
        return cls(dns.name.from_text(domain.strip(".") + "."), ttl, tuple(ns_addresses))

    def name(self, labels: Labels) -> dns.name.Name:
        return dns.name.Name(tuple(lb.encode() for lb in labels) + self.origin.labels)

    def soa(self, serial: int) -> dns.rrset.RRset:
        rd = SOA(IN, dns.rdatatype.SOA, self.name(("ns", "dns")), self.name(("hostmaster",)), serial,
                 7200, 1800, 86400, self.ttl)
        return dns.rrset.from_rdata_list(self.origin, self.ttl, [rd])


def _address_rdata(ip: str) -> dns.rdata.Rdata:
    return AAAA(IN, dns.rdatatype.AAAA, ip) if ":" in ip else A(IN, dns.rdatatype.A, ip)


def _rdtype_of(ip: str) -> int:
    return dns.rdatatype.AAAA if ":" in ip else dns.rdatatype.A


class _Reply:
    """One reply being built: the response message plus what the answer found."""

    def __init__(self, query: dns.message.Message, zone: Zone, records: ClusterRecords):
        self.msg = dns.message.make_response(query, recursion_available=True, our_payload=UDP_PAYLOAD_MAX)
        self.zone, self.records = zone, records
        self.qname = query.question[0].name
        self.qtype = query.question[0].rdtype

    def authoritative(self) -> "_Reply":
        self.msg.flags |= dns.flags.AA
        return self

    def add(self, section: list, name: dns.name.Name, rdatas: Sequence[dns.rdata.Rdata]) -> None:
        if rdatas:
            section.append(dns.rrset.from_rdata_list(name, self.zone.ttl, rdatas))

    def addresses(self, name: dns.name.Name, ips: Iterable[str], *, section: list | None = None,
                  qtype: int | None = None) -> bool:
        """Add the address records of `ips` of the type asked (A, AAAA, or both for ANY);
        True when there were any."""
        want = self.qtype if qtype is None else qtype
        found = False
        for rdtype in _ADDRESS_TYPES:
            if want not in (rdtype, dns.rdatatype.ANY):
                continue
            rds = [_address_rdata(ip) for ip in ips if _rdtype_of(ip) == rdtype]
            self.add(self.msg.answer if section is None else section, name, rds)
            found = found or bool(rds)
        return found

    def negative(self, rcode: dns.rcode.Rcode = dns.rcode.NOERROR) -> dns.message.Message:
        """NODATA (NOERROR, nothing answered) or NXDOMAIN, with the zone's SOA."""
        self.msg.answer.clear()
        self.msg.additional.clear()
        self.msg.set_rcode(rcode)
        self.msg.authority.append(self.zone.soa(self.records.serial))
        return self.msg

    def done(self) -> dns.message.Message:
        """The answer if there is one, else NODATA."""
        return self.msg if self.msg.answer else self.negative()


def error_reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    msg = dns.message.make_response(query, recursion_available=True, our_payload=UDP_PAYLOAD_MAX)
    msg.set_rcode(rcode)
    return msg


def answer(query: dns.message.Message, records: ClusterRecords, zone: Zone) -> dns.message.Message | None:
    """The reply to one parsed query, or None when it is not the cluster's to answer (a name
    outside the zone, or a reverse name of no Service or endpoint): the caller forwards
    those. Never None for a name inside the zone."""
    if query.opcode() != dns.opcode.QUERY:
        return error_reply(query, dns.rcode.NOTIMP)
    if len(query.question) != 1:
        return error_reply(query, dns.rcode.FORMERR)
    if query.edns > 0:
        return error_reply(query, dns.rcode.BADVERS)
    q = query.question[0]
    if q.name.is_subdomain(zone.origin):
        if q.rdclass != IN or q.rdtype in _ZONE_TRANSFERS:
            return error_reply(query, dns.rcode.REFUSED)
        if not records.synced:
            return error_reply(query, dns.rcode.SERVFAIL)
        return _in_zone(_Reply(query, zone, records).authoritative())
    if q.rdtype == dns.rdatatype.PTR and q.rdclass == IN:
        return _reverse(_Reply(query, zone, records))
    return None


def _labels(name: dns.name.Name, origin: dns.name.Name) -> Labels | None:
    try:
        return tuple(lb.decode("ascii").lower() for lb in name.relativize(origin).labels)
    except UnicodeDecodeError:
        return None             # not a name anything here could carry


def _in_zone(r: _Reply) -> dns.message.Message:
    labels = _labels(r.qname, r.zone.origin)
    nx = dns.rcode.NXDOMAIN
    if labels is None:
        return r.negative(nx)
    n, qt = len(labels), r.qtype
    if n == 0:                                          # the apex
        if qt in (dns.rdatatype.SOA, dns.rdatatype.ANY):
            r.msg.answer.append(r.zone.soa(r.records.serial))
        if qt in (dns.rdatatype.NS, dns.rdatatype.ANY):
            ns = r.zone.name(("ns", "dns"))
            r.add(r.msg.answer, r.qname, [NS(IN, dns.rdatatype.NS, ns)])
            r.addresses(ns, r.zone.ns_addresses, section=r.msg.additional, qtype=dns.rdatatype.ANY)
        return r.done()
    if labels == ("dns-version",):
        if qt in (dns.rdatatype.TXT, dns.rdatatype.ANY):
            r.add(r.msg.answer, r.qname, [TXT(IN, dns.rdatatype.TXT, [SCHEMA_VERSION.encode()])])
        return r.done()
    if labels == ("dns",):
        return r.done()                                 # above ns.dns: no records of its own
    if labels == ("ns", "dns"):                         # the SOA's and NS's server: this one
        r.addresses(r.qname, r.zone.ns_addresses)
        return r.done()
    kind = labels[-1]
    if kind == "svc":
        return _service_name(r, labels[:-1])
    if kind == "pod":
        if n <= 2:
            return r.done()                             # pod.<zone>, <ns>.pod.<zone>: NODATA
        ip = undashed(labels[0]) if n == 3 else None
        if ip is None:
            return r.negative(nx)
        r.addresses(r.qname, [ip])
        return r.done()
    return r.negative(nx)


def _service_name(r: _Reply, labels: Labels) -> dns.message.Message:
    """`labels` is what stands before `svc.<zone>`."""
    nx = dns.rcode.NXDOMAIN
    n = len(labels)
    if n == 0:
        return r.done()                                 # svc.<zone>
    if n == 1:                                          # <ns>.svc.<zone>
        return r.done() if r.records.has_namespace(labels[0]) else r.negative(nx)
    if n > 4:
        return r.negative(nx)
    entry = r.records.service(labels[-1], labels[-2])
    if entry is None:
        return r.negative(nx)
    if n == 2:                                          # <svc>.<ns>
        if not entry.addresses:
            # a headless Service without ready endpoints has no record (CoreDNS: NXDOMAIN);
            # a Service waiting for its cluster IP holds its name (NODATA)
            return r.negative(nx) if entry.headless else r.done()
        if r.qtype == dns.rdatatype.SRV:
            return _srv(r, entry, list(entry.ports))
        r.addresses(r.qname, entry.addresses)
        return r.done()
    if n == 3:
        first = labels[0]
        if first.startswith("_"):                       # _<proto>.<svc>.<ns>: between SRV names
            has = any(proto == first[1:] and pname for pname, proto in entry.ports)
            return r.done() if has else r.negative(nx)
        ips = entry.endpoints.get(first) if entry.headless else None
        if not ips:
            return r.negative(nx)
        r.addresses(r.qname, ips)
        return r.done()
    port, proto = labels[0], labels[1]                  # _<port>._<proto>.<svc>.<ns>
    key = (port[1:], proto[1:])
    if not (port.startswith("_") and proto.startswith("_")) or not key[0] or key not in entry.ports:
        return r.negative(nx)
    if r.qtype not in (dns.rdatatype.SRV, dns.rdatatype.ANY):
        return r.done()
    return _srv(r, entry, [key])


def _srv(r: _Reply, entry: ServiceEntry, keys: list[tuple[str, str]]) -> dns.message.Message:
    """SRV records of `keys` (port name, protocol), the targets' addresses in the additional
    section. CoreDNS' weights: 100 shared evenly between the records (all of priority 0)."""
    targets = [(port, ep) for k in keys for port, ep in entry.ports[k]]
    if not targets:
        return r.done()
    weight = 100 // len(targets)
    svc: Labels = (entry.name, entry.namespace, "svc")
    rds, extra = [], {}
    for port, ep in targets:
        target = r.zone.name(((ep,) if ep else ()) + svc)
        rds.append(SRV(IN, dns.rdatatype.SRV, 0, weight, port, target))
        extra[target] = entry.endpoints.get(ep, ()) if ep else entry.addresses
    r.add(r.msg.answer, r.qname, rds)
    for target, ips in extra.items():
        r.addresses(target, ips, section=r.msg.additional, qtype=dns.rdatatype.ANY)
    return r.done()


def _reverse(r: _Reply) -> dns.message.Message | None:
    try:
        ip = _ip(dns.reversename.to_address(r.qname))
    except Exception:       # a partial or malformed reverse name: not ours
        return None
    names = r.records.reverse(ip) if ip else []
    if not names:
        return None
    r.authoritative().add(r.msg.answer, r.qname, [PTR(IN, dns.rdatatype.PTR, r.zone.name(n)) for n in names])
    return r.msg
