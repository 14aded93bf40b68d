"""The service proxy's rules on real nftables: a 3-host lab, pods on the VXLAN overlay, and each
host's `ServiceProxy` applying its table through `nft -f` in that host's namespace.

What it shows (issue 18): a ClusterIP balances from a pod on host A over endpoints on hosts B
and C (TCP and UDP) and skips a not-ready one; the hosts themselves reach it; a NodePort
answers on every host's address from the lab's outside namespace but never on 127.0.0.1; a
ServiceLB port is published on the nodes; hairpin (a pod through its own Service); ClientIP
affinity holds, across an agent restart too; no endpoints (or a port the Service lacks) is
refused at once; an endpoint removed leaves the balancing; deleting the Services leaves no
rule of theirs on any host (`nft list ruleset`), and `cleanup_on_stop` removes the table.

The Services and EndpointSlices are Kubernetes' JSON, handed to the proxies as informer
caches; no API server is involved. Every namespace the test makes carries the lab's name, so
the finalizer's `destroy_lab_network` removes them all (their tables with them); processes are
killed by PID.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

import pytest

from shoal.agent.interfaces import Peer
from shoal.agent.network import NodeNetwork, PyrouteNetlink, SubprocessRunner, veth_name
from shoal.agent.network.netlink import NETNS_RUN_DIR
from shoal.agent.serviceproxy import ServiceProxy
from shoal.testkit.labnet import create_lab_network, destroy_lab_network

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and nftables"),
]

# TCP: an HTTP/1.0 answer naming the pod; UDP: the pod's name for any datagram.
SERVER = r"""
import http.server, socket, socketserver, sys, threading
name = sys.argv[3].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(name))); self.end_headers()
        self.wfile.write(name)
    def log_message(self, *a): pass
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[2])))
    while True:
        _, peer = s.recvfrom(2048); s.sendto(name, peer)
threading.Thread(target=udp, daemon=True).start()
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""

# N requests, each on a new connection (a new balancing decision); prints what each got.
CLIENT = r"""
import json, socket, sys, time
mode, host, port, n, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
out = []
for _ in range(n):
    t = time.monotonic()
    try:
        if mode == "tcp":
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            got = data.split(b"\r\n\r\n", 1)[1].decode()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(timeout)
            s.connect((host, port)); s.send(b"ping"); got = s.recv(2048).decode(); s.close()
    except ConnectionRefusedError:
        got = "refused"
    except (socket.timeout, TimeoutError):
        got = "timeout"
    except OSError as e:
        got = f"error {e.errno}"
    out.append([got, round(time.monotonic() - t, 3)])
print(json.dumps(out))
"""

VIP, SELF_VIP, STICKY_VIP, EMPTY_VIP, LB_VIP = "10.43.0.10", "10.43.0.11", "10.43.0.12", "10.43.0.13", "10.43.0.14"


class Cache:
    """A listed informer cache holding fixed objects (the proxy only reads it)."""

    def __init__(self, items=()):
        self.items = list(items)

    def list(self):
        return list(self.items)

    def has_synced(self):
        return True

    def add_handler(self, **_):
        pass


def service(name, vip, ports, typ="ClusterIP", status=None, **spec):
    obj = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"namespace": "default", "name": name, "creationTimestamp": "2024-01-01T00:00:00Z"},
           "spec": {"type": typ, "clusterIP": vip, "clusterIPs": [vip], "ports": ports, **spec}}
    if status:
        obj["status"] = status
    return obj


def endpointslice(svc, pods, ports, rv="1"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": "default", "name": f"{svc}-x", "resourceVersion": rv,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": ports,
            "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}}
                          for ip, node, ready in pods]}


class Lab:
    def __init__(self, tmp_path):
        self.name = "sp" + secrets.token_hex(3)
        self.tmp = tmp_path
        self.procs: list[subprocess.Popen] = []
        self.netlinks: list[PyrouteNetlink] = []

    def run(self, ns, *argv, check=False, timeout=60):
        p = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} in {ns} exited {p.returncode}: {p.stdout}{p.stderr}")
        return p

    def spawn(self, ns, *argv):
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)

    def client(self, ns, mode, host, port, n=1, timeout=3.0) -> list[str]:
        out = self.run(ns, sys.executable, "-c", CLIENT, mode, host, str(port), str(n), str(timeout), check=True)
        return [got for got, _ in json.loads(out.stdout)]

    def timed(self, ns, mode, host, port, timeout=3.0) -> tuple[str, float]:
        out = self.run(ns, sys.executable, "-c", CLIENT, mode, host, str(port), "1", str(timeout), check=True)
        return tuple(json.loads(out.stdout)[0])

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        for nl in self.netlinks:
            nl.close()
        destroy_lab_network(self.name)


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()
        left = [n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(lab.name + "-")] \
            if os.path.isdir(NETNS_RUN_DIR) else []
        assert left == [], f"lab {lab.name} left namespaces behind"


def _wait(pred, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_service_rules_on_three_hosts(lab):
    started = time.monotonic()
    net = create_lab_network(lab.name, 3)
    hosts = net.hosts
    nodes = []
    for i, h in enumerate(hosts, start=1):
        nl = PyrouteNetlink(netns=h.netns)
        lab.netlinks.append(nl)
        n = NodeNetwork(str(lab.tmp / h.name), netlink=nl, runner=SubprocessRunner(netns=h.netns),
                        netns_prefix=f"{h.netns}-")
        n.ensure_node(f"10.244.{i}.0/24")
        nodes.append(n)
    macs = [n.ensure_overlay(h.ip) for n, h in zip(nodes, hosts)]
    peers = [Peer(node=f"n{i}", underlay_ip=h.ip, vtep_mac=m, pod_cidr=f"10.244.{i}.0/24")
             for i, (h, m) in enumerate(zip(hosts, macs), start=1)]
    for n in nodes:
        n.sync_peers(peers)
    # a client and a web pod on host A, a web pod on B and on C
    client = nodes[0].setup_pod("c1c1c1c1-0000-0000-0000-000000000001", "client")
    webs = [n.setup_pod(f"{i}{i}{i}{i}{i}{i}{i}{i}-0000-0000-0000-00000000000{i}", f"w{i}")
            for i, n in enumerate(nodes, start=1)]
    cl = os.path.basename(client.netns_path)
    wns = [os.path.basename(w.netns_path) for w in webs]
    for i, (ns, w) in enumerate(zip(wns, webs), start=1):
        lab.spawn(ns, sys.executable, "-c", SERVER, "8080", "5353", f"w{i}")
    for w in webs:
        _wait(lambda: lab.client(cl, "tcp", w.ip, 8080, timeout=1) == [f"w{webs.index(w) + 1}"],
              f"the server of {w.ip}")

    http = [{"name": "http", "port": 8080, "protocol": "TCP"}]
    eps = [(w.ip, f"n{i}", True) for i, w in enumerate(webs, start=1)]
    services = [
        service("web", VIP, [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                             {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}], typ="NodePort"),
        service("self", SELF_VIP, [{"name": "http", "port": 80, "targetPort": 8080}]),
        service("sticky", STICKY_VIP, [{"name": "http", "port": 80, "targetPort": 8080}], sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}}),
        service("empty", EMPTY_VIP, [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30013}],
                typ="NodePort"),
        service("lb", LB_VIP, [{"name": "http", "port": 8000, "targetPort": 8080, "nodePort": 30014}],
                typ="LoadBalancer", status={"loadBalancer": {"ingress": [{"ip": hosts[0].ip}]}}),
    ]
    slices = [
        # a not-ready endpoint that would never answer: it must never be chosen
        endpointslice("web", eps + [("10.244.3.99", "n3", False)],
                      http + [{"name": "dns", "port": 5353, "protocol": "UDP"}]),
        endpointslice("self", eps[:1], http),
        endpointslice("sticky", eps[1:], http),
        endpointslice("lb", eps[1:], http),
    ]
    node_objs = [{"metadata": {"name": f"n{i}"}, "spec": {"podCIDR": f"10.244.{i}.0/24"}} for i in (1, 2, 3)]
    svc_cache, slice_cache = Cache(services), Cache(slices)
    proxies = []
    for i, h in enumerate(hosts, start=1):
        p = ServiceProxy(node_name=f"n{i}", runner=SubprocessRunner(netns=h.netns))
        p.attach(services=svc_cache, endpointslices=slice_cache, nodes=Cache(node_objs))
        assert p.sync().mode == "converge"           # observed absent, built in one transaction
        proxies.append(p)

    # ClusterIP from a pod on A: balanced over A, B and C, never the not-ready endpoint
    got = lab.client(cl, "tcp", VIP, 80, n=40)
    assert set(got) <= {"w1", "w2", "w3"} and {"w2", "w3"} <= set(got), got
    got = lab.client(cl, "udp", VIP, 53, n=12)
    assert set(got) <= {"w1", "w2", "w3"} and len(set(got)) >= 2, got
    # the hosts themselves reach it (output hook, masqueraded)
    for h in hosts:
        assert set(lab.client(h.netns, "tcp", VIP, 80, n=6)) <= {"w1", "w2", "w3"}
    # NodePort from outside on every host's address; never on the host's loopback
    for h in hosts:
        got = lab.client(net.lab_netns, "tcp", h.ip, 30080, n=6)
        assert set(got) <= {"w1", "w2", "w3"}, (h.ip, got)
    assert lab.client(hosts[0].netns, "tcp", "127.0.0.1", 30080) == ["refused"]
    # ServiceLB: the port on the nodes' addresses, and the ingress IP from a pod
    for h in hosts[1:]:
        assert set(lab.client(net.lab_netns, "tcp", h.ip, 8000, n=4)) <= {"w2", "w3"}
    assert set(lab.client(cl, "tcp", hosts[0].ip, 8000, n=4)) <= {"w2", "w3"}
    # hairpin: w1 through a Service whose only endpoint is itself, and through the shared one
    # (its veth is a hairpin port: this host may have br_netfilter loaded)
    assert nodes[0].netlink.link_get(veth_name(webs[0].pod_uid)).hairpin is True
    assert lab.client(wns[0], "tcp", SELF_VIP, 80, n=4) == ["w1"] * 4
    assert set(lab.client(wns[0], "tcp", VIP, 80, n=10)) <= {"w1", "w2", "w3"}
    # ClientIP affinity: one endpoint for this client, also after an agent restart (converged, kept)
    sticky = lab.client(cl, "tcp", STICKY_VIP, 80, n=10)
    assert len(set(sticky)) == 1 and sticky[0] in ("w2", "w3"), sticky
    restarted = ServiceProxy(node_name="n1", runner=SubprocessRunner(netns=hosts[0].netns))
    restarted.attach(services=svc_cache, endpointslices=slice_cache, nodes=Cache(node_objs))
    assert restarted.sync().mode == "converge"
    proxies[0] = restarted
    assert lab.client(cl, "tcp", STICKY_VIP, 80, n=5) == sticky[:1] * 5
    # no endpoints, or a port the Service does not have: refused at once, not a time-out
    for target in ((cl, EMPTY_VIP, 80), (cl, VIP, 81), (net.lab_netns, hosts[1].ip, 30013)):
        got, secs = lab.timed(target[0], "tcp", target[1], target[2])
        assert got == "refused" and secs < 1.0, (target, got, secs)
    assert lab.client(cl, "udp", EMPTY_VIP, 80, timeout=2) == ["refused"]

    # an endpoint leaves: every host converges, and nobody is sent there any more
    slice_cache.items[0] = endpointslice("web", eps[1:], http + [{"name": "dns", "port": 5353, "protocol": "UDP"}],
                                         rv="2")
    for p in proxies:
        assert p.sync().mode == "converge"
        assert p.applied_slice("default", "web-x").resource_version == "2"
    got = lab.client(cl, "tcp", VIP, 80, n=20)
    assert set(got) <= {"w2", "w3"}, got

    # the Services go: no rule of theirs is left on any host
    svc_cache.items, slice_cache.items = [], []
    for p, h in zip(proxies, hosts):
        assert p.sync().mode == "converge"
        ruleset = lab.run(h.netns, "nft", "list", "ruleset", check=True).stdout
        for trace in ("10.43.0.", "chain service-", "chain local-", "chain external-", "chain endpoint-",
                      "set affinity-", "dnat to", "goto ", "30080", "30013"):
            assert trace not in ruleset, (h.name, trace)
        assert ruleset.count("elements = ") == 1 and "elements = { 10.244.1.0/24" in ruleset   # only pod-cidrs
        assert "table ip shoal-svc" in ruleset           # the frame stays for the next Service
    assert lab.client(cl, "tcp", VIP, 80, timeout=0.5) != ["w1"] and lab.client(cl, "tcp", VIP, 80, timeout=0.5)[0] \
        not in ("w1", "w2", "w3")
    # an agent configured to clean up removes the table on stop
    for p in proxies:
        p.cleanup_on_stop = True
        p.stop()
    for h in hosts:
        assert "shoal-svc" not in lab.run(h.netns, "nft", "list", "tables", check=True).stdout
    for n, pod in zip([nodes[0]] + nodes, [client] + webs):
        n.teardown_pod(pod.pod_uid)
    assert time.monotonic() - started < 120
