"""Cluster DNS on every node: the agent answers its pods' DNS queries itself.

Where it listens. Each agent serves UDP and TCP port 53 on its bridge address — the first
address of the node's pod CIDR (`10.244.N.1`), the pods' default gateway — and a
ClusterFirst pod's resolv.conf names that address (`Agent.cluster_nameservers`). So every
node's pods ask their own node, there is no DNS Service, VIP or Deployment to keep running,
and a node cut off from the others still resolves what its informers last saw (what
node-local-dns gives Kubernetes, without the DaemonSet). The sockets are bound to that
address only, never to a wildcard; as the kernel would deliver a packet for that address
arriving on any interface (the weak host model), a query is also answered only when it
comes from the node's pod CIDR: pods on the bridge, and the node itself (its source address
for the bridge address is the bridge address). Port 53 is reserved on the node: no pod may
publish a hostPort 53, whose DNAT would capture the pods' queries. The host's own resolver
configuration is read, never written.

What it answers. Names in the cluster zone (`cluster.local`, `--cluster-domain`) from the
records `agent.dnsrecords` keeps (its docstring lists them: A/AAAA, SRV, PTR, pod names,
negative answers with the SOA, TTL 5 s). The records come from two informers (the floor's
`Informer`, list + watch) on all Services and all EndpointSlices, the node credential being
allowed to read both; every change of a Service or of one of its slices recomputes that one
Service's records (`dnsrecords.service_entry`), level-based.

Everything else is forwarded to the host's resolvers: the `nameserver`s of the host's
resolv.conf (`--resolv-conf`, re-read when it changes; the agent runs in the host's network
namespace, so a loopback resolver such as systemd-resolved's 127.0.0.53 is reachable), in
order, `forward_timeout` seconds each, the next one tried on a time-out, a network error, or
a SERVFAIL/REFUSED/NOTIMP answer (glibc's rule). A query that came over UDP goes upstream
over UDP and, when the answer is truncated, again over TCP; one that came over TCP goes over
TCP. The upstream query gets an ID of its own (random), the answer the client's ID back. A
name inside the cluster zone is never forwarded, and neither is a query to the server's own
address (a resolv.conf naming it would loop). No upstream answering: SERVFAIL.

Sizes. A UDP answer is at most the client's EDNS payload size, capped at 1232 bytes (DNS flag
day 2020), or 512 without EDNS; a larger one is truncated (TC set) so that the client asks
again over TCP. TCP connections serve queries one after the other and close after 10 s idle.

Why dnspython. The wire format — parsing, name compression, EDNS, truncation — is dnspython's
(`dns.message`, `dns.rrset`, `dns.asyncquery` for the forwarding), not ours: the reference DNS
toolkit for Python (ISC licence), maintained for two decades, with typed rdata classes and
an asyncio query API; dnslib's server is threads and its maintenance is thinner. The server
loop around it is a few lines of asyncio (one event loop thread), which keeps the agent free
of another framework. Cost: ≈ 150 µs of CPU per answered query (parse 25, answer 35,
render 60 — dnspython's pure Python), ≈ 3,300 queries/s on one core of the 2-vCPU test VM
(docs/services.md, "DNS"), far above what a small node's pods ask.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode

from shoal.machinery.control.informer import Informer
from shoal.agent.dnsrecords import (DEFAULT_DOMAIN, DEFAULT_TTL, SERVICE_NAME_LABEL, UDP_PAYLOAD_MAX, ClusterRecords,
                                    Zone, answer, error_reply, service_entry)

log = logging.getLogger(__name__)

DNS_PORT = 53
TCP_IDLE_TIMEOUT = 10.0
MAX_TCP_CLIENTS = 256
MAX_FORWARDS = 1024             # upstream queries in flight; beyond, a query gets SERVFAIL at once
SLICE_INDEX = "dns-service"     # EndpointSlices by "<namespace>/<service name>"
_RETRY_NEXT = (dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NOTIMP)


@dataclass(frozen=True)
class DNSOptions:
    """The node's cluster DNS, as `shoal agent` is told (kubelet's `--cluster-domain` and
    `--cluster-dns`, CoreDNS' `forward . /etc/resolv.conf`).

    `enabled` False: no cluster DNS; ClusterFirst pods get the host's resolvers, with a
    MissingClusterDNS warning, as the kubelet without `--cluster-dns`. `nameservers`: the
    pods' nameservers when they are not this node's (a DNS server run elsewhere; the agent
    then serves nothing); empty: the node's own server at its bridge address, which this
    agent runs when `serve` is True (a hollow node, `--fake-runtime`, has no bridge and
    serves nothing). `resolv_conf`: the host's resolvers, where names outside the zone are
    forwarded (also the pods' `Default` policy, read by the runtime)."""
    enabled: bool = True
    domain: str = DEFAULT_DOMAIN
    nameservers: tuple[str, ...] = ()
    serve: bool = False
    resolv_conf: str = "/etc/resolv.conf"
    port: int = DNS_PORT
    forward_timeout: float = 2.0
    ttl: int = DEFAULT_TTL


def parse_cluster_dns(value: str) -> tuple[bool, tuple[str, ...]]:
    """`--cluster-dns`: `node` (the default: this node's own server) → (True, ()); `none` →
    (False, ()); a comma-separated list of IP addresses → (True, those). ValueError, saying
    why, for anything else."""
    v = value.strip()
    if v.lower() == "node":
        return True, ()
    if v.lower() == "none":
        return False, ()
    ips = []
    for part in v.split(","):
        try:
            ips.append(str(ipaddress.ip_address(part.strip())))
        except ValueError:
            raise ValueError(f"--cluster-dns {value!r}: expected node, none, or IP addresses separated by commas "
                             f"({part.strip()!r} is not an IP address)") from None
    if len(ips) > 3:
        raise ValueError(f"--cluster-dns {value!r}: at most 3 nameservers (a resolv.conf holds no more)")
    return True, tuple(ips)


def bridge_address(pod_cidr: str) -> str:
    """The node's address on its pod bridge: the first host address of its pod CIDR (where
    agent.network puts it)."""
    return str(ipaddress.ip_network(pod_cidr, strict=False).network_address + 1)


# ------------------------------------------------------------------------------ upstreams
def resolv_conf_nameservers(text: str) -> list[str]:
    """The IP addresses of a resolv.conf's `nameserver` lines, in order (an address with a
    `%zone` is skipped: it cannot be reached from here without its interface)."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and "%" not in fields[1]:
            try:
                out.append(str(ipaddress.ip_address(fields[1])))
            except ValueError:
                continue
    return out


class HostResolvers:
    """The host's resolvers from its resolv.conf, re-read when the file changes (looked at
    no more than every `recheck` seconds), never including `exclude` (our own addresses)."""

    def __init__(self, path: str, *, recheck: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.recheck = recheck
        self.clock = clock
        self.exclude: set[str] = set()
        self._stamp: tuple | None = None
        self._checked = float("-inf")
        self._servers: list[str] = []

    def nameservers(self) -> list[str]:
        now = self.clock()
        if now - self._checked >= self.recheck:
            self._checked = now
            try:
                st = os.stat(self.path)
                stamp: tuple | None = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                stamp = None
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    with open(self.path) as f:
                        found = resolv_conf_nameservers(f.read())
                except OSError as e:
                    log.warning("cluster DNS: cannot read the host's resolvers from %s: %s", self.path, e)
                    found = []
                if not found:
                    log.warning("cluster DNS: %s names no nameserver: names outside the cluster will fail",
                                self.path)
                self._servers = found
        return [s for s in self._servers if s not in self.exclude]


# ------------------------------------------------------------------------------ the server
def _udp_limit(query: dns.message.Message) -> int:
    return max(512, min(query.payload, UDP_PAYLOAD_MAX)) if query.edns >= 0 else 512


def formerr_for(data: bytes) -> bytes | None:
    """The reply to bytes that do not parse as a query: FORMERR with the query's ID, or None
    (nothing to answer) when there is not even a header or it is itself a response."""
    if len(data) < 12:
        return None
    qid, flags = struct.unpack("!HH", data[:4])
    if flags & dns.flags.QR:
        return None
    msg = dns.message.Message(id=qid)
    msg.flags = dns.flags.QR | (flags & dns.flags.RD) | dns.flags.RA
    msg.set_rcode(dns.rcode.FORMERR)
    return msg.to_wire()


class DNSServer:
    """UDP and TCP on one address, one asyncio loop on a thread of its own. `start()` binds
    in the caller's network namespace (and raises OSError, say EADDRINUSE, there); `stop()`
    closes everything and may be followed by another `start()`."""

    def __init__(self, records: ClusterRecords, zone: Zone, resolvers: HostResolvers, *,
                 forward_timeout: float = 2.0, upstream_port: int = DNS_PORT):
        self.records, self.zone, self.resolvers = records, zone, resolvers
        self.forward_timeout = forward_timeout
        self.upstream_port = upstream_port
        self.address: str | None = None
        self.port: int | None = None
        self._clients: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._tcp_clients = 0
        self.stats = {"queries": 0, "forwarded": 0, "forward_failures": 0, "refused_clients": 0}

    @property
    def serving(self) -> bool:
        return self._loop is not None

    def start(self, address: str, *, port: int = DNS_PORT, clients: str | None = None) -> None:
        """Serve on address:port (port 0: any free port, the same for UDP and TCP, read back
        from `self.port`), answering only clients in the `clients` network (a CIDR; None:
        any)."""
        if self.serving:
            raise RuntimeError(f"cluster DNS already serving on {self.address}:{self.port}")
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        # port 0: the UDP port the kernel picks may be taken for TCP; try a few picks
        for attempt in range(20 if port == 0 else 1):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                udp.bind((address, port))
                chosen = udp.getsockname()[1]
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # restart with connections in TIME_WAIT
                tcp.bind((address, chosen))
                tcp.listen(128)
                udp.setblocking(False)
                tcp.setblocking(False)
            except OSError as e:
                udp.close()
                tcp.close()
                if port == 0 and e.errno == errno.EADDRINUSE and attempt < 19:
                    continue
                raise
            port = chosen
            break
        self.address, self.port = address, port
        self._clients = ipaddress.ip_network(clients, strict=False) if clients else None
        self.resolvers.exclude = {address}
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(loop, ready), name=f"cluster-dns-{address}",
                                        daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop
        try:
            asyncio.run_coroutine_threadsafe(self._open(udp, tcp), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        log.info("cluster DNS: serving %s on %s:%d (UDP and TCP)", self.zone.origin, address, port)

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()
        loop.close()

    async def _open(self, udp: socket.socket, tcp: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp)
        self._tcp = await asyncio.start_server(self._tcp_client, sock=tcp)

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def close() -> None:
            if self._transport is not None:
                self._transport.close()
            if self._tcp is not None:
                self._tcp.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.sleep(0)

        try:
            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=5)
        except Exception as e:      # already closing: the loop stops below either way
            log.debug("cluster DNS: closing: %s", e)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._transport = self._tcp = None
        self._tasks.clear()
        log.info("cluster DNS: stopped serving on %s:%s", self.address, self.port)

    # -------------------------------------------------------------- one query
    def _allowed(self, host: str) -> bool:
        if self._clients is None:
            return True
        try:
            ok = ipaddress.ip_address(host.split("%")[0]) in self._clients
        except ValueError:
            ok = False
        if not ok:
            self.stats["refused_clients"] += 1
        return ok

    def handle(self, data: bytes) -> tuple[dns.message.Message | None, dns.message.Message | bytes | None]:
        """(query, its reply) when answered here; (query, None) when it must be forwarded;
        (None, FORMERR's bytes or None) when the bytes are no query."""
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return None, formerr_for(data)
        if query.flags & dns.flags.QR:
            return None, None           # a response: nothing to answer
        self.stats["queries"] += 1
        return query, answer(query, self.records, self.zone)

    def _render(self, reply: dns.message.Message, query: dns.message.Message, *, udp: bool) -> bytes:
        return reply.to_wire(max_size=_udp_limit(query) if udp else 65535, prefer_truncation=True)

    def on_udp(self, transport: asyncio.DatagramTransport, data: bytes, addr: tuple) -> None:
        if not self._allowed(addr[0]):
            return
        query, reply = self.handle(data)
        if query is None:
            if isinstance(reply, bytes):
                transport.sendto(reply, addr)
        elif isinstance(reply, dns.message.Message):
            transport.sendto(self._render(reply, query, udp=True), addr)
        elif len(self._tasks) >= MAX_FORWARDS:
            self.stats["forward_failures"] += 1
            transport.sendto(self._render(error_reply(query, dns.rcode.SERVFAIL), query, udp=True), addr)
        else:
            task = asyncio.get_running_loop().create_task(self._forward_udp(transport, query, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _forward_udp(self, transport: asyncio.DatagramTransport, query: dns.message.Message,
                           addr: tuple) -> None:
        reply = await self.forward(query, tcp=False)
        if not transport.is_closing():
            transport.sendto(self._render(reply, query, udp=True), addr)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("",)
        if not self._allowed(peer[0]) or self._tcp_clients >= MAX_TCP_CLIENTS:
            writer.close()
            return
        self._tcp_clients += 1
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]), TCP_IDLE_TIMEOUT)
                query, reply = self.handle(data)
                if query is None:
                    if not isinstance(reply, bytes):
                        break
                    wire = reply
                else:
                    if not isinstance(reply, dns.message.Message):
                        reply = await self.forward(query, tcp=True)
                    wire = self._render(reply, query, udp=False)
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self._tcp_clients -= 1
            writer.close()

    async def forward(self, query: dns.message.Message, *, tcp: bool) -> dns.message.Message:
        """The host's resolvers' answer to `query` (its ID restored), or SERVFAIL."""
        self.stats["forwarded"] += 1
        client_id = query.id
        last: dns.message.Message | None = None
        for server in self.resolvers.nameservers():
            query.id = secrets.randbits(16)
            try:
                if tcp:
                    reply = await dns.asyncquery.tcp(query, server, timeout=self.forward_timeout,
                                                     port=self.upstream_port)
                else:
                    reply = await dns.asyncquery.udp(query, server, timeout=self.forward_timeout,
                                                     port=self.upstream_port, ignore_unexpected=True)
                    if reply.flags & dns.flags.TC:
                        reply = await dns.asyncquery.tcp(query, server, timeout=self.forward_timeout,
                                                         port=self.upstream_port)
            except (dns.exception.DNSException, OSError, EOFError, ValueError) as e:
                log.debug("cluster DNS: forwarding %s to %s: %s", query.question[:1], server,
                          type(e).__name__ if isinstance(e, dns.exception.Timeout) else e)
                continue
            reply.id = client_id
            if reply.rcode() not in _RETRY_NEXT:
                query.id = client_id
                return reply
            last = reply
        query.id = client_id
        if last is not None:
            return last
        self.stats["forward_failures"] += 1
        return error_reply(query, dns.rcode.SERVFAIL)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer):
        self.server = server

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self.server.on_udp(self.transport, data, addr)
        except Exception:       # one bad query must not end the server
            log.exception("cluster DNS: query from %s", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("cluster DNS: %s", exc)


# ------------------------------------------------------------------------------ the node's DNS
def slice_service_key(sl: dict) -> list[str]:
    """The index of EndpointSlices by the Service they belong to (`<namespace>/<name>`)."""
    md = sl.get("metadata") or {}
    svc = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [f"{md.get('namespace') or 'default'}/{svc}"] if svc else []


class ClusterDNS:
    """The node's cluster DNS: the records fed by the Service and EndpointSlice informers
    (`attach`), and the server (`serve(address, clients=pod CIDR)`, idempotent; `stop`)."""

    def __init__(self, options: DNSOptions, *, clock: Callable[[], float] = time.time):
        self.options = options
        self.clock = clock
        self.records = ClusterRecords()
        self.zone = Zone.of(options.domain, ttl=options.ttl)
        self.resolvers = HostResolvers(options.resolv_conf)
        self.server: DNSServer | None = None
        self._services: Informer | None = None
        self._slices: Informer | None = None
        self._listed: set[str] = set()
        self._sync_lock = threading.Lock()
        self._serve_lock = threading.Lock()

    # -------------------------------------------------------------- records
    def attach(self, services: Informer, slices: Informer) -> None:
        """Follow these informers (all Services, all EndpointSlices); call before they start."""
        self._services, self._slices = services, slices
        if not slices.has_index(SLICE_INDEX):
            slices.add_index(SLICE_INDEX, slice_service_key)

        def on_service(obj: dict) -> None:
            md = obj.get("metadata") or {}
            self.sync(md.get("namespace") or "default", md.get("name") or "")

        def on_slice(*objs: dict) -> None:
            for key in dict.fromkeys(k for o in objs for k in slice_service_key(o)):
                self.sync(*key.split("/", 1))

        services.add_handler(on_add=on_service, on_update=lambda old, new: on_service(new), on_delete=on_service,
                             on_list=lambda: self._on_list("services"))
        slices.add_handler(on_add=on_slice, on_update=on_slice, on_delete=on_slice,
                           on_list=lambda: self._on_list("endpointslices"))

    def _on_list(self, kind: str) -> None:
        self._listed.add(kind)
        if {"services", "endpointslices"} <= self._listed and not self.records.synced:
            self.records.synced = True
            log.info("cluster DNS: %d Services known", len(self.records))

    def sync(self, namespace: str, name: str) -> None:
        """Recompute one Service's records from the informers' caches (level-based)."""
        if self._services is None or self._slices is None or not name:
            return
        key = f"{namespace}/{name}"
        with self._sync_lock:       # two informer threads: the later read must be the later write
            svc = self._services.get(key)
            entry = service_entry(svc, self._slices.by_index(SLICE_INDEX, key)) if svc else None
            self.records.set_service(namespace, name, entry, now=self.clock())

    # -------------------------------------------------------------- server
    def serve(self, address: str, *, clients: str | None = None) -> None:
        """Serve at address (the bridge address), answering `clients` (the pod CIDR); a no-op
        when already serving there, a move when serving elsewhere. OSError when it cannot bind."""
        with self._serve_lock:
            if self.server is not None and self.server.serving:
                if self.server.address == address:
                    return
                self.server.stop()
            self.zone = Zone.of(self.options.domain, ttl=self.options.ttl, ns_addresses=(address,))
            server = DNSServer(self.records, self.zone, self.resolvers, forward_timeout=self.options.forward_timeout)
            server.start(address, port=self.options.port, clients=clients)
            self.server = server

    @property
    def serving(self) -> bool:
        return self.server is not None and self.server.serving

    def stop(self) -> None:
        with self._serve_lock:
            if self.server is not None:
                self.server.stop()
