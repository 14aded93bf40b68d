"""The pod network on real namespaces: one node, a 3-host VXLAN overlay, hostPorts.

Every test builds its own lab (`agent.network.labnet`) under a random name;
NodeNetwork instances target a lab host's namespace (as `shoal lab` agents
will), and pod namespaces carry the lab prefix, so the finalizer's
`destroy_lab_network` removes everything, and then checks that nothing with
the prefix is left. Processes started in namespaces are killed by PID. All
traffic stays inside the lab's namespaces (192.168.213.0/24, 10.244.0.0/16).
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from shoal.agent.interfaces import HostPort, Peer
from shoal.agent.network import NodeNetwork, PyrouteNetlink, SubprocessRunner, veth_name
from shoal.testkit.labnet import LabNetwork, create_lab_network, destroy_lab_network
from shoal.agent.network.netlink import NETNS_RUN_DIR

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

# socketserver.TCPServer, not http.server.HTTPServer: the latter's server_bind
# calls getfqdn(), a DNS lookup that hangs for seconds inside a lab namespace.
HTTP_SERVE = (
    "import functools, http.server, socketserver, sys\n"
    "socketserver.TCPServer.allow_reuse_address = True\n"
    "h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[3])\n"
    "socketserver.ThreadingTCPServer((sys.argv[1], int(sys.argv[2])), h).serve_forever()\n"
)
HTTP_GET = (
    "import sys, urllib.request\n"
    "r = urllib.request.urlopen(sys.argv[1], timeout=3)\n"
    "sys.stdout.buffer.write(r.read())\n"
)


class Lab:
    """Everything one test creates; `close()` removes all of it."""

    def __init__(self, tmp_path):
        self.name = "t" + secrets.token_hex(4)
        self.tmp = tmp_path
        self.procs: list[subprocess.Popen] = []
        self.netlinks: list[PyrouteNetlink] = []
        self.net: LabNetwork | None = None
        self.last_error: list[str] = []

    def build(self, n_hosts: int) -> LabNetwork:
        self.net = create_lab_network(self.name, n_hosts)
        return self.net

    def node(self, i: int, pod_cidr: str, **kw) -> NodeNetwork:
        """NodeNetwork of lab host i (1-based), bound to that host's namespace."""
        host = self.net.hosts[i - 1]
        nl = PyrouteNetlink(netns=host.netns)
        self.netlinks.append(nl)
        n = NodeNetwork(str(self.tmp / host.name), netlink=nl, runner=SubprocessRunner(netns=host.netns),
                        netns_prefix=f"{host.netns}-", **kw)
        n.ensure_node(pod_cidr)
        return n

    def run(self, ns: str, *argv: str, check: bool = False, timeout: float = 20) -> subprocess.CompletedProcess:
        p = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} in {ns} exited {p.returncode}: {p.stdout}{p.stderr}")
        return p

    def spawn(self, ns: str, *argv: str, cwd: str | None = None) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=cwd,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def ping(self, ns: str, ip: str, *, attempts: int = 5) -> bool:
        # bounded retries instead of a timing assertion: the first packet may
        # wait on ARP through a freshly attached bridge port
        for _ in range(attempts):
            if self.run(ns, "busybox", "ping", "-c", "1", "-W", "1", ip).returncode == 0:
                return True
        return False

    def http_get(self, ns: str, url: str, *, attempts: int = 20) -> bytes | None:
        for _ in range(attempts):
            p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", HTTP_GET, url],
                               capture_output=True, timeout=20)
            if p.returncode == 0:
                return p.stdout
            self.last_error = p.stderr.decode(errors="replace").strip().splitlines()[-1:]
            subprocess.run(["sleep", "0.2"])
        return None

    def serve(self, ns: str, ip: str, port: int, content: bytes) -> None:
        d = self.tmp / f"www-{ns}-{port}"
        d.mkdir()
        (d / "index.html").write_bytes(content)
        self.spawn(ns, sys.executable, "-c", HTTP_SERVE, ip, str(port), str(d))

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        for nl in self.netlinks:
            nl.close()
        destroy_lab_network(self.name)


def _leftovers(name: str) -> list[str]:
    try:
        return [n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(name + "-")]
    except FileNotFoundError:
        return []


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()
        assert _leftovers(lab.name) == [], f"lab {lab.name} left namespaces behind"


def _links(lab: Lab, ns: str) -> set[str]:
    out = lab.run(ns, "ip", "-o", "link", "show", check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _host_with_one_pod(lab: Lab, uid: str, name: str):
    """A one-host lab with a node network and one pod: (host netns, node, PodNet, pod netns)."""
    net = lab.build(1)
    node = lab.node(1, "10.244.1.0/24")
    a = node.setup_pod(uid, name)
    return net.hosts[0].netns, node, a, os.path.basename(a.netns_path)


# ---------------------------------------------------------------------------- (a) one node
def test_one_node_pods_reach_each_other_and_the_host_reaches_them(lab):
    net = lab.build(1)
    h1 = net.hosts[0].netns
    node = lab.node(1, "10.244.1.0/24")
    a = node.setup_pod("a" * 8 + "-0000-0000-0000-000000000001", "web-a")
    b = node.setup_pod("b" * 8 + "-0000-0000-0000-000000000002", "web-b")
    assert a.ip == "10.244.1.2" and b.ip == "10.244.1.3"
    assert os.path.ismount(a.netns_path)
    assert lab.run(h1, "sysctl", "-n", "net.ipv4.ip_forward", check=True).stdout.strip() == "1"
    pod_a = os.path.basename(a.netns_path)
    pod_b = os.path.basename(b.netns_path)
    mtu = lab.run(pod_a, "cat", "/sys/class/net/eth0/mtu", check=True).stdout.strip()
    assert mtu == "1450"
    assert lab.run(pod_a, "cat", "/sys/class/net/eth0/address", check=True).stdout.strip() == "0a:58:0a:f4:01:02"
    assert lab.ping(pod_a, b.ip) and lab.ping(pod_b, a.ip)
    assert lab.ping(h1, a.ip) and lab.ping(h1, b.ip)
    # idempotent: same answer, still working
    assert node.setup_pod(a.pod_uid, "web-a") == a
    # repair: the host side veth vanishes, setup_pod rebuilds it with the same IP
    lab.run(h1, "ip", "link", "del", veth_name(a.pod_uid), check=True)
    assert not lab.ping(h1, a.ip, attempts=1)
    assert node.setup_pod(a.pod_uid, "web-a") == a and lab.ping(h1, a.ip)
    # teardown leaves nothing of the pods
    node.teardown_pod(a.pod_uid)
    node.teardown_pod(b.pod_uid)
    node.teardown_pod(b.pod_uid)
    assert node.pods() == []
    assert not os.path.exists(a.netns_path) and not os.path.exists(b.netns_path)
    assert not [l for l in _links(lab, h1) if l.startswith("veth")]


def test_pod_setup_requests_keep_the_kernel_semantics_callers_rely_on(lab):
    """The pod-setup requests go over a plain rtnetlink socket (not IPRoute): what they
    make, and the errors they give, are those the RecordingNetlink fake models."""
    import errno
    from shoal.agent.network.netlink import NetlinkOpError, Route
    from shoal.agent.network.node import mac_for_ip
    h1, node, a, pod = _host_with_one_pod(lab, "c" * 8 + "-0000-0000-0000-000000000003", "web-c")
    nl = node.netlink
    # what `ip` sees: the host veth up on the bridge, the pod side up with its address and route
    veth = veth_name(a.pod_uid)
    host_side = lab.run(h1, "ip", "-o", "link", "show", veth, check=True).stdout
    assert "master shoal0" in host_side and "UP" in host_side.split(">")[0]
    assert f"inet {a.ip}/24" in lab.run(pod, "ip", "-o", "-4", "addr", "show", "eth0", check=True).stdout
    assert "default via 10.244.1.1 dev eth0 proto 83" in lab.run(pod, "ip", "route", check=True).stdout
    assert "UP" in lab.run(pod, "ip", "-o", "link", "show", "lo", check=True).stdout.split(">")[0]
    # a link that is not there: None from link_get, ENODEV from the verbs that need it
    assert nl.link_get("nope0", ns=pod) is None
    assert nl.link_get("eth0", ns=pod).mac == mac_for_ip(a.ip)
    with pytest.raises(NetlinkOpError) as e:
        nl.link_set("nope0", ns=pod, up=True)
    assert e.value.errno == errno.ENODEV and "nope0" in str(e.value)
    # an address twice: EEXIST, named; a route replaced: no error, one default route
    with pytest.raises(NetlinkOpError) as e:
        nl.addr_add("eth0", f"{a.ip}/24", ns=pod)
    assert e.value.errno == errno.EEXIST and f"{a.ip}/24" in str(e.value)
    nl.route_replace(Route(dst="0.0.0.0/0", dev="eth0", gateway="10.244.1.1"), ns=pod)
    assert [r.dst for r in nl.route_dump(ns=pod)].count("0.0.0.0/0") == 1
    # a veth whose name is taken: EEXIST, and the first one untouched
    with pytest.raises(NetlinkOpError) as e:
        nl.link_add(veth, "veth", peer="eth9", master="shoal0", up=True)
    assert e.value.errno == errno.EEXIST
    assert lab.ping(h1, a.ip)
    node.teardown_pod(a.pod_uid)


def test_pod_namespace_requests_run_on_the_callers_threads_which_stay_where_they_are(lab):
    """A pod namespace's socket is made inside it, then used from the calling threads: the
    requests act in the pod's namespace, no caller is moved into it, and callers on many
    threads at once each get their own answer."""
    from concurrent.futures import ThreadPoolExecutor
    from shoal.agent.network.netlink import Route
    from shoal.agent.network.node import mac_for_ip
    h1, node, a, pod = _host_with_one_pod(lab, "d" * 8 + "-0000-0000-0000-000000000004", "web-d")
    nl = node.netlink
    mine = os.readlink("/proc/thread-self/ns/net")

    def probe(i: int):
        before = os.readlink("/proc/thread-self/ns/net")
        got = [nl.link_get("eth0", ns=pod), nl.link_get("nope%d" % i, ns=pod)]
        nl.route_replace(Route(dst=f"192.0.2.{i}/32", dev="eth0", gateway="10.244.1.1"), ns=pod)
        return before, os.readlink("/proc/thread-self/ns/net"), got

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(probe, range(1, 25)))
    assert os.readlink("/proc/thread-self/ns/net") == mine
    assert all(before == after for before, after, _ in results)
    assert all(got[0] is not None and got[0].mac == mac_for_ip(a.ip) and got[1] is None for *_, got in results)
    routes = lab.run(pod, "ip", "route", check=True).stdout
    assert all(f"192.0.2.{i} via 10.244.1.1 dev eth0" in routes for i in range(1, 25)), routes
    assert "192.0.2." not in lab.run(h1, "ip", "route", check=True).stdout
    node.teardown_pod(a.pod_uid)


def test_a_first_request_that_looks_a_link_up_from_the_namespaces_own_thread(lab):
    """An IPRoute call whose function looks a link up by name (a VXLAN device added with a
    master) runs on the namespace's thread; when that is the namespace's first request, the
    socket for the lookup is made right there — not waited for from that same thread."""
    import threading
    from shoal.agent.network.netlink import VxlanInfo
    net = lab.build(1)
    h1 = net.hosts[0].netns
    lab.node(1, "10.244.1.0/24")                      # the host's bridge, shoal0
    fresh = PyrouteNetlink(netns=h1)                  # no socket made yet
    lab.netlinks.append(fresh)
    t = threading.Thread(target=fresh.link_add, args=("shtest0", "vxlan"), daemon=True,
                         kwargs={"master": "shoal0", "vxlan": VxlanInfo(vni=4242, port=24789, local=None,
                                                                          learning=False)})
    t.start()
    t.join(15)
    assert not t.is_alive(), "link_add with a master hung on its first request"
    assert "master shoal0" in lab.run(h1, "ip", "-o", "link", "show", "shtest0", check=True).stdout
    fresh.link_del("shtest0")


# ---------------------------------------------------------------------------- (b) overlay
def test_overlay_three_hosts_pod_to_pod_and_host_to_pod_then_peer_removal(lab):
    net = lab.build(3)
    nodes = [lab.node(i, f"10.244.{i}.0/24") for i in (1, 2, 3)]
    hosts = net.hosts
    # a stale, incompatible device on host 3 must be replaced
    lab.run(hosts[2].netns, "ip", "link", "add", "shoal.1", "type", "vxlan", "id", "7", "dstport", "4789",
            "local", hosts[2].ip, check=True)
    macs = [n.ensure_overlay(h.ip) for n, h in zip(nodes, hosts)]
    assert len(set(macs)) == 3
    assert nodes[0].ensure_overlay(hosts[0].ip) == macs[0]          # reuse keeps the MAC
    detail = lab.run(hosts[2].netns, "ip", "-d", "link", "show", "shoal.1", check=True).stdout
    assert "vxlan id 1 " in detail and "dstport 8472" in detail and "nolearning" in detail and "mtu 1450" in detail
    feat = lab.run(hosts[0].netns, "ethtool", "-k", "shoal.1", check=True).stdout
    assert "tx-checksumming: off" in feat

    peers = [Peer(node=h.name, underlay_ip=h.ip, vtep_mac=m, pod_cidr=f"10.244.{i}.0/24")
             for i, (h, m) in enumerate(zip(hosts, macs), start=1)]
    for n in nodes:
        n.sync_peers(peers)                       # includes itself: skipped
    pods = [n.setup_pod(f"{i}{i}{i}{i}{i}{i}{i}{i}-1111-2222-3333-444455556666", f"web-{i}")
            for i, n in enumerate(nodes, start=1)]
    pa, pb, pc = (os.path.basename(p.netns_path) for p in pods)

    route = lab.run(hosts[0].netns, "ip", "route", "show", "10.244.2.0/24", check=True).stdout
    assert "via 10.244.2.0 dev shoal.1" in route and "onlink" in route
    assert macs[1] in lab.run(hosts[0].netns, "ip", "neigh", "show", "dev", "shoal.1", check=True).stdout
    fdb = lab.run(hosts[0].netns, "bridge", "fdb", "show", "dev", "shoal.1", check=True).stdout
    assert f"{macs[1]} dst {hosts[1].ip}" in fdb and f"{macs[2]} dst {hosts[2].ip}" in fdb

    assert lab.ping(pa, pods[1].ip) and lab.ping(pa, pods[2].ip)
    assert lab.ping(pc, pods[0].ip)
    assert lab.ping(hosts[1].netns, pods[0].ip)          # B's host reaches A's pod
    # HTTP with a body far larger than one MTU: fragmentation/checksum trouble shows here
    body = secrets.token_hex(60_000).encode()
    lab.serve(pb, pods[1].ip, 8080, body)
    assert lab.http_get(pa, f"http://{pods[1].ip}:8080/index.html") == body
    assert lab.http_get(hosts[2].netns, f"http://{pods[1].ip}:8080/index.html") == body

    # host C leaves: A converges to {B} and drops exactly C's three entries
    nodes[0].sync_peers(peers[:2])
    assert lab.run(hosts[0].netns, "ip", "route", "show", "10.244.3.0/24", check=True).stdout.strip() == ""
    neigh = lab.run(hosts[0].netns, "ip", "neigh", "show", "dev", "shoal.1", check=True).stdout
    assert "10.244.3.0" not in neigh and "10.244.2.0" in neigh
    fdb = lab.run(hosts[0].netns, "bridge", "fdb", "show", "dev", "shoal.1", check=True).stdout
    assert macs[2] not in fdb and macs[1] in fdb
    assert not lab.ping(pa, pods[2].ip, attempts=1)
    assert lab.ping(pa, pods[1].ip)
    # a second sync with the same set changes nothing
    before = nodes[0].observe_overlay()
    nodes[0].sync_peers(peers[:2])
    assert nodes[0].observe_overlay() == before

    for n, p in zip(nodes, pods):
        n.teardown_pod(p.pod_uid)


# ---------------------------------------------------------------------------- (c) hostPort
def test_host_port_reachable_from_another_host_the_host_itself_and_a_pod_never_via_loopback(lab):
    net = lab.build(2)
    h1, h2 = net.hosts
    node = lab.node(1, "10.244.1.0/24")
    web = node.setup_pod("c0ffee01-0000-0000-0000-000000000001", "web")
    client = node.setup_pod("c0ffee02-0000-0000-0000-000000000002", "client")
    web_ns = os.path.basename(web.netns_path)
    body = b"hello from the pod\n"
    lab.serve(web_ns, "0.0.0.0", 8080, body)
    assert lab.http_get(h1.netns, f"http://{web.ip}:8080/") == body, lab.last_error   # the server is up

    node.sync_host_ports([HostPort(web.pod_uid, 18080, 8080)])
    url = f"http://{h1.ip}:18080/"
    assert lab.http_get(h2.netns, url) == body                  # from another host
    assert lab.http_get(h1.netns, url) == body                  # the node to its own address
    assert lab.http_get(h1.netns, "http://127.0.0.1:18080/", attempts=1) is None   # never its loopback (issue 17)
    assert lab.http_get(os.path.basename(client.netns_path), url) == body   # hairpin from a pod
    table = lab.run(h1.netns, "nft", "list", "table", "ip", "shoal", check=True).stdout
    assert f"dnat to {web.ip}:8080" in table

    node.sync_host_ports([])
    assert lab.http_get(h2.netns, url, attempts=1) is None
    node.sync_host_ports([HostPort(web.pod_uid, 18080, 8080)])
    assert lab.http_get(h2.netns, url) == body
    node.teardown_pod(web.pod_uid)                              # takes its ports along
    table = lab.run(h1.netns, "nft", "list", "table", "ip", "shoal", check=True).stdout
    assert "dnat" not in table.split("chain postrouting")[0]
    node.teardown_pod(client.pod_uid)
