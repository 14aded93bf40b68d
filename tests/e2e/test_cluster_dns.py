"""Cluster DNS on real network namespaces and in a real one-node cluster.

`test_dns_between_namespaces`: a "node" namespace with a bridge at 10.251.0.1/24 runs the
agent's DNS server (agent.dns.ClusterDNS, started from a thread inside that namespace, as
the agent runs inside its host's) and, on its loopback, a fake upstream (the host's resolver:
`nameserver 127.0.0.1`, shoal.testkit.dnsupstream). A "pod" namespace on the bridge asks: with
busybox's nslookup; with glibc (`getent hosts`) through a resolv.conf rendered by the agent's
rules (search path, ndots:5) — `web`, `web.default`, `web.default.svc.cluster.local`; with
dnspython for the exact answers (NXDOMAIN/NODATA with the SOA, SRV, TCP). Names outside the
zone reach the upstream, those inside never do; an "outside" namespace routed to the node
reaches the bridge address but gets no answer (the client filter).

`test_pods_resolve_services_by_name` (the full cluster, with the Service API and the
EndpointSlice controller): a real agent serving DNS on its bridge, a Service over two web
pods, a headless one, and a busybox pod that resolves them through its resolv.conf.

Everything is removed even on failure: namespaces, /etc/netns/<ns>, threads, processes.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from shoal.agent.dns import ClusterDNS, DNSOptions
from shoal.agent.dnsrecords import service_entry
from shoal.agent.interfaces import PodDNS
from shoal.agent.network.nsworker import NsWorker, load_libc
from shoal.agent.runtime.spec import render_resolv_conf
from shoal.testkit.dnsupstream import FakeUpstream

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

PY = sys.executable
QUERY = """
import sys, dns.message, dns.query, dns.rcode, dns.flags
name, rdtype, proto = sys.argv[1], sys.argv[2], sys.argv[3]
q = dns.message.make_query(name, rdtype)
try:
    r = (dns.query.tcp if proto == "tcp" else dns.query.udp)(q, "10.251.0.1", timeout=2)
except Exception as e:
    print("ERROR", type(e).__name__); sys.exit(0)
print(dns.rcode.to_text(r.rcode()), "AA" if r.flags & dns.flags.AA else "-",
      "|".join(sorted(f"{rr.name} {rr.ttl} {rd}" for rr in r.answer for rd in rr)),
      "|".join(sorted(str(rr.name) + " SOA" for rr in r.authority)), sep=";")
"""


def sh(*argv: str, ns: str | None = None, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


class Namespaces:
    """node (bridge 10.251.0.1/24), pod (10.251.0.2 on the bridge), out (192.168.251.2/30, routed
    to the node): created, and all removed by close()."""

    def __init__(self, tmp: Path):
        tag = secrets.token_hex(3)
        self.node, self.pod, self.out = f"sdns{tag}-node", f"sdns{tag}-pod", f"sdns{tag}-out"
        self.tmp = tmp
        self.workers: list[NsWorker] = []

    def create(self) -> "Namespaces":
        for ns in (self.node, self.pod, self.out):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        n, p, o = self.node, self.pod, self.out
        sh("ip", "link", "add", "br0", "type", "bridge", ns=n)
        sh("ip", "addr", "add", "10.251.0.1/24", "dev", "br0", ns=n)
        sh("ip", "link", "set", "br0", "up", ns=n)
        sh("ip", "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", p, ns=n)
        sh("ip", "link", "set", "vpod", "master", "br0", "up", ns=n)
        sh("ip", "addr", "add", "10.251.0.2/24", "dev", "eth0", ns=p)
        sh("ip", "link", "set", "eth0", "up", ns=p)
        sh("ip", "route", "add", "default", "via", "10.251.0.1", ns=p)
        sh("ip", "link", "add", "vout", "type", "veth", "peer", "name", "eth0", "netns", o, ns=n)
        sh("ip", "addr", "add", "192.168.251.1/30", "dev", "vout", ns=n)
        sh("ip", "link", "set", "vout", "up", ns=n)
        sh("ip", "addr", "add", "192.168.251.2/30", "dev", "eth0", ns=o)
        sh("ip", "link", "set", "eth0", "up", ns=o)
        sh("ip", "route", "add", "10.251.0.0/24", "via", "192.168.251.1", ns=o)
        return self

    def in_node(self):
        """A thread parked in the node namespace; what it starts (sockets, threads) lives there."""
        w = NsWorker(f"/run/netns/{self.node}", load_libc())
        self.workers.append(w)
        return w

    def close(self) -> list[str]:
        for w in self.workers:
            w.close()
        for ns in (self.node, self.pod, self.out):
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        listed = sh("ip", "netns", "list").stdout
        return [ns for ns in (self.node, self.pod, self.out) if ns in listed]


SERVICES = [
    ({"metadata": {"name": "web", "namespace": "default"},
      "spec": {"clusterIP": "10.43.0.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}, []),
    ({"metadata": {"name": "db", "namespace": "default"}, "spec": {"clusterIP": "None"}},
     [{"addressType": "IPv4", "metadata": {"name": "db-1", "namespace": "default"},
       "endpoints": [{"addresses": ["10.251.0.7"], "hostname": "db-0", "conditions": {"ready": True}},
                     {"addresses": ["10.251.0.8"], "conditions": {"ready": False}}],
       "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]),
]


@pytest.fixture
def lab(tmp_path):
    nss = Namespaces(tmp_path)
    try:
        yield nss.create()
    finally:
        assert nss.close() == []


def test_dns_between_namespaces(lab, tmp_path):
    t0 = time.monotonic()
    conf = tmp_path / "host-resolv.conf"
    conf.write_text("nameserver 127.0.0.1\nsearch corp.example\n")     # the node's own loopback resolver
    up = FakeUpstream({"outside.example": ["A 192.0.2.10"]}, address="127.0.0.1", port=53)
    dnsd = ClusterDNS(DNSOptions(serve=True, resolv_conf=str(conf)))
    for svc, slices in SERVICES:
        dnsd.records.set_service("default", svc["metadata"]["name"], service_entry(svc, slices), now=time.time())
    dnsd.records.synced = True
    node = lab.in_node()
    node.run(up.start)
    try:
        node.run(lambda: dnsd.serve("10.251.0.1", clients="10.251.0.0/24"))
        # nothing listens anywhere but on the bridge address
        listening = sh("ss", "-Hlun", ns=lab.node).stdout + sh("ss", "-Hltn", ns=lab.node).stdout
        assert "10.251.0.1:53" in listening and "0.0.0.0:53" not in listening and "*:53" not in listening

        # busybox's own resolver
        out = sh("busybox", "nslookup", "web.default.svc.cluster.local", "10.251.0.1", ns=lab.pod).stdout
        assert "10.43.0.10" in out, out

        # glibc through the pod's resolv.conf (ip netns exec binds /etc/netns/<ns>/resolv.conf)
        pod_conf = render_resolv_conf(conf.read_text(), PodDNS(namespace="default",
                                                               cluster_nameservers=("10.251.0.1",)))
        assert pod_conf == ("nameserver 10.251.0.1\n"
                            "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
                            "options ndots:5\n")
        Path(f"/etc/netns/{lab.pod}").mkdir(parents=True)
        Path(f"/etc/netns/{lab.pod}/resolv.conf").write_text(pod_conf)
        for name in ("web", "web.default", "web.default.svc", "web.default.svc.cluster.local",
                     "db-0.db", "db"):
            r = sh("getent", "ahostsv4", name, ns=lab.pod, check=False)
            want = "10.251.0.7" if name.startswith("db") else "10.43.0.10"
            assert r.returncode == 0 and want in r.stdout, (name, r.stdout, r.stderr)
        assert "10.251.0.8" not in sh("getent", "ahostsv4", "db", ns=lab.pod).stdout       # not ready
        assert "192.0.2.10" in sh("getent", "ahostsv4", "outside.example", ns=lab.pod).stdout
        assert sh("getent", "ahostsv4", "nope", ns=lab.pod, check=False).returncode == 2

        # exact answers
        def ask(name, rdtype="A", proto="udp"):
            return sh(PY, "-c", QUERY, name, rdtype, proto, ns=lab.pod).stdout.strip()
        assert ask("web.default.svc.cluster.local") == "NOERROR;AA;web.default.svc.cluster.local. 5 10.43.0.10;"
        assert ask("web.default.svc.cluster.local", proto="tcp") == ask("web.default.svc.cluster.local")
        assert ask("web.default.svc.cluster.local", "AAAA") == "NOERROR;AA;;cluster.local. SOA"
        assert ask("nope.default.svc.cluster.local") == "NXDOMAIN;AA;;cluster.local. SOA"
        assert ask("_http._tcp.web.default.svc.cluster.local", "SRV") == (
            "NOERROR;AA;_http._tcp.web.default.svc.cluster.local. 5 0 100 80 web.default.svc.cluster.local.;")
        assert ask("outside.example") == "NOERROR;-;outside.example. 60 192.0.2.10;"
        assert ask("outside.example", proto="tcp") == ask("outside.example")
        assert ask("missing.example") == "NXDOMAIN;-;;"
        asked = {q[1] for q in up.queries}
        assert "outside.example." in asked and not [n for n in asked if n.endswith("cluster.local.")], asked

        # the node itself may ask (its source address for the bridge address is the bridge address)
        r = subprocess.run(["ip", "netns", "exec", lab.node, PY, "-c", QUERY, "web.default.svc.cluster.local", "A",
                            "udp"], capture_output=True, text=True, timeout=20)
        assert r.stdout.strip() == "NOERROR;AA;web.default.svc.cluster.local. 5 10.43.0.10;", r.stdout + r.stderr

        # from outside the pod network: routed to the bridge address, never answered
        r = subprocess.run(["ip", "netns", "exec", lab.out, PY, "-c", QUERY,
                            "web.default.svc.cluster.local", "A", "udp"], capture_output=True, text=True, timeout=20)
        assert r.stdout.strip() == "ERROR Timeout", r.stdout + r.stderr
        assert sh("busybox", "ping", "-c1", "-W2", "10.251.0.1", ns=lab.out).returncode == 0       # the route is there
        assert dnsd.server.stats["refused_clients"] >= 1
    finally:
        node.run(dnsd.stop)
        node.run(up.stop)
    assert time.monotonic() - t0 < 60


# ------------------------------------------------------------------------------ the whole cluster
E2E = Path(__file__).resolve().parent
if str(E2E) not in sys.path:
    sys.path.insert(0, str(E2E))


def test_pods_resolve_services_by_name(tmp_path):
    """Needs the Service kind and the EndpointSlice controller (issue 18's API part) running in
    the test server's controllers: a real agent, its DNS on the bridge, real busybox pods."""
    from agent_fixtures import E2ECluster, container, is_ready, pod_manifest, wait_for

    upstream_ip = f"127.53.{secrets.randbelow(200) + 20}.{secrets.randbelow(200) + 20}"
    host_conf = tmp_path / "host-resolv.conf"
    host_conf.write_text(f"nameserver {upstream_ip}\n")

    class Cluster(E2ECluster):
        def agent_argv(self):
            return super().agent_argv() + ["--resolv-conf", str(host_conf)]

    t0 = time.monotonic()
    with FakeUpstream({"outside.example": ["A 192.0.2.10"]}, address=upstream_ip, port=53) as up, \
            Cluster(tmp_path) as c:
        web = c.refs["web:v1"]
        for i in range(2):
            m = pod_manifest(f"web-{i}", [container("web", web)], hostname=f"web-{i}")
            m["metadata"]["labels"]["app"] = "web"
            c.create_pod(m)
        c.create_pod(pod_manifest("client", [container("sh", c.refs["sleeper:v1"])]))
        svc = c.client.create("services", {"apiVersion": "v1", "kind": "Service",
                                           "metadata": {"name": "web", "namespace": "default"},
                                           "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80,
                                                                                        "targetPort": 8080}]}})
        c.client.create("services", {"apiVersion": "v1", "kind": "Service",
                                     "metadata": {"name": "web-hl", "namespace": "default"},
                                     "spec": {"clusterIP": "None", "selector": {"app": "web"},
                                              "ports": [{"name": "http", "port": 8080}]}})
        pods = [c.wait_pod(n, is_ready, timeout=60, what="Ready") for n in ("web-0", "web-1", "client")]
        client = c.running_container(pods[2], "sh")
        vip = svc["spec"]["clusterIP"]
        web_ips = sorted(p["status"]["podIP"] for p in pods[:2])

        def run(*argv):
            code, out = c.runtime.exec(client.id, list(argv), 10)
            return code, out.decode(errors="replace")

        code, conf = run("cat", "/etc/resolv.conf")
        gateway = str(__import__("ipaddress").ip_network(c.client.get("nodes", c.node)["spec"]["podCIDR"])[1])
        assert conf.splitlines()[0] == f"nameserver {gateway}", conf
        assert "search default.svc.cluster.local svc.cluster.local cluster.local" in conf and "ndots:5" in conf

        # the pod's libc (busybox-static's getaddrinfo) through the search path: ping prints the address
        for name in ("web", "web.default", "web.default.svc.cluster.local"):
            wait_for(lambda: f"({vip})" in run("ping", "-c1", "-W1", name)[1], timeout=15,
                     what=f"{name} -> {vip} from the pod")
        hl = wait_for(lambda: (lambda out: sorted(set(ip for ip in web_ips if ip in out)) == web_ips and out)(
            run("nslookup", "web-hl.default.svc.cluster.local")[1]), timeout=30,
            what=f"web-hl -> {web_ips} (the EndpointSlice controller's slices)")
        assert vip not in hl
        assert "192.0.2.10" in run("nslookup", "outside.example")[1]
        assert any(q[1] == "outside.example." for q in up.queries)
        assert not [q for q in up.queries if q[1].endswith("cluster.local.")]
    assert time.monotonic() - t0 < 120
