"""A small upstream DNS server for tests: what the cluster DNS forwards to, with no internet.

`FakeUpstream(records, address=..., port=0).start()` answers UDP and TCP on one address from a
table `{name: ["A 192.0.2.10", "TXT \"x\"", ...]}` (rdata in zone-file syntax; TTL 60) —
NXDOMAIN for names not in it, SERVFAIL for every name with `servfail=True`, and no answer at
all for the names in `silent` (a resolver that times out). Over UDP an answer bigger than the
query's payload (512 without EDNS) goes out truncated with TC set, as a real server does.
`queries` records (protocol, name, type) of each query, so a test can tell what was forwarded
and how. The wire format is dnspython's.

`python -m shoal.testkit.dnsupstream --address A --port P --records JSON` runs one in the
foreground (e2e tests start it inside a network namespace) and prints `ready` once it listens.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import threading

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class FakeUpstream:
    def __init__(self, records: dict[str, list[str]], *, address: str = "127.0.0.1", port: int = 0,
                 servfail: bool = False, silent: tuple[str, ...] = ()):
        self.records = {k.rstrip(".").lower() + ".": v for k, v in records.items()}
        self.address, self.port = address, port
        self.servfail = servfail
        self.silent = {n.rstrip(".").lower() + "." for n in silent}
        self.queries: list[tuple[str, str, str]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []

    def start(self) -> "FakeUpstream":
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((self.address, self.port))
        self.port = udp.getsockname()[1]
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((self.address, self.port))
        tcp.listen(16)
        for s in (udp, tcp):
            s.settimeout(0.2)
        self._socks = [udp, tcp]
        for target, sock in ((self._serve_udp, udp), (self._serve_tcp, tcp)):
            t = threading.Thread(target=target, args=(sock,), daemon=True, name=f"fake-dns-{self.address}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        for s in self._socks:
            s.close()

    def __enter__(self) -> "FakeUpstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reply(self, data: bytes, proto: str) -> bytes | None:
        q = dns.message.from_wire(data)
        qname = q.question[0].name.to_text().lower()
        self.queries.append((proto, qname, dns.rdatatype.to_text(q.question[0].rdtype)))
        if qname in self.silent:
            return None
        r = dns.message.make_response(q, recursion_available=True)
        if self.servfail:
            r.set_rcode(dns.rcode.SERVFAIL)
        elif qname not in self.records:
            r.set_rcode(dns.rcode.NXDOMAIN)
        else:
            for rdtype in dict.fromkeys(x.split(None, 1)[0] for x in self.records[qname]):
                if q.question[0].rdtype in (dns.rdatatype.from_text(rdtype), dns.rdatatype.ANY):
                    rds = [x.split(None, 1)[1] for x in self.records[qname] if x.split(None, 1)[0] == rdtype]
                    r.answer.append(dns.rrset.from_text_list(qname, 60, dns.rdataclass.IN, rdtype, rds))
        limit = (q.payload if q.edns >= 0 else 512) if proto == "udp" else 65535
        return r.to_wire(max_size=limit, prefer_truncation=True)

    def _serve_udp(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            wire = self.reply(data, "udp")
            if wire is not None:
                sock.sendto(wire, addr)

    def _serve_tcp(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    while True:
                        head = _recv_exactly(conn, 2)
                        wire = self.reply(_recv_exactly(conn, struct.unpack("!H", head)[0]), "tcp")
                        if wire is None:
                            break
                        conn.sendall(struct.pack("!H", len(wire)) + wire)
                except (OSError, EOFError):
                    pass


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shoal.testkit.dnsupstream")
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--records", default="{}", help='JSON: {"name": ["A 192.0.2.10", ...]}')
    args = p.parse_args(argv)
    up = FakeUpstream(json.loads(args.records), address=args.address, port=args.port).start()
    print("ready", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        up.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
