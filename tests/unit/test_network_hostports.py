"""render_ruleset: the nft transaction for hostPorts."""
import pytest

from shoal.agent.interfaces import HostPort
from shoal.agent.network.hostports import render_ruleset

pytestmark = pytest.mark.unit

IPS = {"pod-a": "10.244.1.2", "pod-b": "10.244.1.3"}


def render(ports, ips=IPS, cidr="10.244.1.0/24"):
    return render_ruleset(ports, ips, pod_cidr=cidr, bridge="shoal0")


def test_empty_set_still_replaces_the_table_atomically():
    script, problems = render([])
    lines = script.splitlines()
    assert lines[:3] == ["table ip shoal {}", "delete table ip shoal", "table ip shoal {"]
    assert "dnat to" not in script and problems == []
    assert "fib daddr type local jump hostports" in script


def test_rules_for_tcp_udp_and_host_ip():
    script, problems = render([
        HostPort("pod-a", 18080, 8080),
        HostPort("pod-b", 5353, 53, "UDP", host_ip="192.168.213.11"),
    ])
    assert problems == []
    assert '\t\ttcp dport 18080 dnat to 10.244.1.2:8080 comment "pod pod-a"' in script.splitlines()
    assert '\t\tip daddr 192.168.213.11 udp dport 5353 dnat to 10.244.1.3:53 comment "pod pod-b"' in script.splitlines()


def test_masquerade_only_for_hairpin():
    script, _ = render([HostPort("pod-a", 18080, 8080)])
    post = script.split("chain postrouting {")[1]
    assert 'ct status dnat ip saddr 10.244.1.0/24 ip daddr 10.244.1.0/24 oifname "shoal0" masquerade' in post
    assert post.count("masquerade") == 1 and "127.0.0.0/8" not in post   # no loopback source is ever DNATed


def _chain(script, name):
    return script.split(f"chain {name} {{")[1].split("}")[0].strip().splitlines()


# Issue 17 ("Host exposure"): the host's own connections to 127.0.0.1:P are the host's.
# What each hook sends to `hostports`, in order (nft stops at the first verdict).
@pytest.mark.parametrize("chain,rules", [
    # other hosts (and pods) reaching one of the node's addresses
    ("prerouting", ["type nat hook prerouting priority dstnat; policy accept;",
                    "fib daddr type local jump hostports"]),
    # the host itself: its own addresses (NODE_IP:P), loopback returned first
    ("output", ["type nat hook output priority -100; policy accept;",
                "ip daddr 127.0.0.0/8 return",
                "fib daddr type local jump hostports"]),
])
def test_hooks_never_send_loopback_destinations_to_hostports(chain, rules):
    script, _ = render([HostPort("pod-a", 6444, 8080)])
    assert [r.strip() for r in _chain(script, chain)] == rules


def test_loopback_return_precedes_every_jump_of_the_output_hook():
    out = [r.strip() for r in _chain(render([HostPort("pod-a", 18080, 8080)])[0], "output")]
    jumps = [i for i, r in enumerate(out) if "jump" in r or "goto" in r or "dnat" in r]
    assert jumps and out.index("ip daddr 127.0.0.0/8 return") < min(jumps)


@pytest.mark.parametrize("host_ip", ["127.0.0.1", "127.1.2.3"])
def test_a_loopback_host_ip_is_refused_not_published(host_ip):
    script, problems = render([HostPort("pod-a", 18080, 8080, host_ip=host_ip)])
    assert "dnat to" not in script
    assert "loopback is never published" in problems[0].message and host_ip in problems[0].message


def test_loopback_guard_on_the_bridge():
    script, _ = render([])
    guard = script.split("chain guard {")[1].split("}")[0]
    assert "hook prerouting priority -150" in guard
    assert 'iifname "shoal0" ip daddr 127.0.0.0/8 drop' in guard


def test_rendering_is_deterministic():
    a = [HostPort("pod-b", 2, 2), HostPort("pod-a", 1, 1)]
    assert render(a) == render(list(reversed(a)))


def test_pod_without_address_is_skipped_and_named():
    script, problems = render([HostPort("pod-z", 18080, 8080)])
    assert "dnat to" not in script
    assert [p.pod_uid for p in problems] == ["pod-z"] and "no address" in problems[0].message


@pytest.mark.parametrize("port,needle", [
    (HostPort("pod-a", 0, 80), "hostPort 0"),
    (HostPort("pod-a", 80, 70000), "containerPort 70000"),
    (HostPort("pod-a", 80, 80, "SCTP"), "only TCP and UDP"),
    (HostPort("pod-a", 80, 80, host_ip="::1"), "not an IPv4"),
])
def test_invalid_ports_are_rejected_with_a_message(port, needle):
    script, problems = render([port])
    assert "dnat to" not in script and needle in problems[0].message and "pod-a" in problems[0].message


def test_conflicting_claims_keep_one_and_name_both():
    script, problems = render([HostPort("pod-b", 18080, 80), HostPort("pod-a", 18080, 8080)])
    assert script.count("dport 18080") == 1 and "10.244.1.2:8080" in script
    assert "pod pod-b" in problems[0].message and "pod-a" in problems[0].message
    # TCP and UDP on the same number do not conflict
    script, problems = render([HostPort("pod-a", 53, 53, "TCP"), HostPort("pod-b", 53, 53, "UDP")])
    assert problems == [] and script.count("dport 53 ") == 2
    # a wildcard and a specific address on the same port do
    _, problems = render([HostPort("pod-a", 80, 80), HostPort("pod-b", 80, 80, host_ip="192.168.213.11")])
    assert len(problems) == 1


def test_nft_accepts_the_script_syntax():
    """`nft -c` parses without applying; skipped where nft is absent or not permitted."""
    import shutil
    import subprocess
    if not shutil.which("nft"):
        pytest.skip("nft not installed")
    script, problems = render([HostPort("pod-a", 18080, 8080), HostPort("pod-b", 53, 53, "UDP", "192.168.213.11")])
    assert problems == [] and "ip daddr 127.0.0.0/8 return" in script
    p = subprocess.run(["nft", "-c", "-f", "-"], input=script, capture_output=True, text=True)
    if p.returncode != 0 and ("Operation not permitted" in p.stderr or "EPERM" in p.stderr):
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert p.returncode == 0, p.stderr
