"""agent.network.conntrack against the kernel: in a throwaway namespace whose output path DNATs
a "Service" address to an endpoint that never answers (a peer namespace dropping everything),
each connection attempt leaves an unanswered SYN_SENT entry; a new connection from the same
source port would follow it to the dead endpoint. `forget_unreplied` deletes exactly those
entries — not a connection that got its answer, not an entry DNATed elsewhere."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, nftables, conntrack)"),
]

SCRIPT = textwrap.dedent("""
    import json, socket, sys
    from pyroute2 import Conntrack
    from shoal.agent.network.conntrack import NetlinkConntrack

    def attempt(addr):
        s = socket.socket(); s.settimeout(0.2)
        try:
            s.connect(addr)
        except OSError:
            pass
        port = s.getsockname()[1]
        s.close()
        return port

    dead = [attempt(("10.99.0.1", 80)) for _ in range(3)]     # DNATed to 10.250.0.5: no answer
    other = attempt(("10.99.0.2", 80))                           # DNATed to 10.250.0.6: no answer either
    ls = socket.socket(); ls.bind(("10.250.0.1", 8080)); ls.listen()
    live = socket.create_connection(("10.99.0.3", 80))          # DNATed to ourselves: answered

    def entries():
        ct = Conntrack()
        try:
            return sorted((str(e.tuple_reply.saddr), e.tuple_orig.sport) for e in ct.dump_entries()
                          if str(e.tuple_orig.daddr).startswith("10.99."))
        finally:
            ct.close()
    before = entries()
    n = NetlinkConntrack().forget_unreplied({"10.250.0.5", "10.250.0.1"})
    print(json.dumps({"dead": dead, "other": other, "live": live.getsockname()[1], "before": before,
                      "deleted": n, "after": entries()}))
""")


def sh(*argv, **kw):
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kw)


def test_forget_unreplied_deletes_only_unanswered_entries_to_the_given_addresses():
    tag = secrets.token_hex(3)
    ns, sink = f"ct-{tag}", f"ctsink-{tag}"
    sh("ip", "netns", "add", ns)
    sh("ip", "netns", "add", sink)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "v0", "netns", ns, "type", "veth", "peer", "name", "v1", "netns", sink)
        sh("ip", "-n", ns, "addr", "add", "10.250.0.1/24", "dev", "v0")
        sh("ip", "-n", sink, "addr", "add", "10.250.0.5/24", "dev", "v1")
        sh("ip", "-n", sink, "addr", "add", "10.250.0.6/24", "dev", "v1")
        sh("ip", "-n", ns, "link", "set", "v0", "up")
        sh("ip", "-n", sink, "link", "set", "v1", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", "10.250.0.5")
        sh("ip", "netns", "exec", sink, "nft", "-f", "-",
           input="table ip f { chain drop_all { type filter hook input priority 0; policy drop; }; }\n")
        sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=textwrap.dedent("""
            table ip t {
              chain out {
                type nat hook output priority -100;
                ip daddr 10.99.0.1 tcp dport 80 dnat to 10.250.0.5:8080
                ip daddr 10.99.0.2 tcp dport 80 dnat to 10.250.0.6:8080
                ip daddr 10.99.0.3 tcp dport 80 dnat to 10.250.0.1:8080
              }
            }
            """))
        p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        import json
        r = json.loads(p.stdout.strip().splitlines()[-1])
        assert sorted(r["before"]) == sorted([["10.250.0.5", port] for port in r["dead"]]
                                             + [["10.250.0.6", r["other"]], ["10.250.0.1", r["live"]]])
        assert r["deleted"] == 3
        # the answered connection stays even though its address was named; the other endpoint's too
        assert sorted(r["after"]) == sorted([["10.250.0.6", r["other"]], ["10.250.0.1", r["live"]]])
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "netns", "del", sink], capture_output=True)
