"""hostPort publishing: a pure renderer of one nftables transaction.

Contract: `render_ruleset(ports, pod_ips, ...)` returns the complete `nft -f`
script for table `ip shoal` and the problems it skipped (a pod without an
address yet, a port claimed twice, an unsupported protocol). Applying the
script replaces the whole table atomically — nftables runs a file as one
transaction — so the node converges to exactly the given set, with no window
where a port is unpublished.

The footprint is deliberately minimal (one table, nothing in anyone else's):

* `hostports`: one DNAT rule per port, `[ip daddr HOST_IP] tcp|udp dport P
  dnat to POD_IP:CPORT`.
* `prerouting` (hook prerouting, dstnat) jumps to it for packets addressed to
  one of this node's own addresses (`fib daddr type local`): traffic from other
  hosts to NODE_IP:P.
* `output` (hook output, dstnat) does the same for connections the node makes
  to one of its own addresses (NODE_IP:P from the host), but never to
  127.0.0.0/8: the host's loopback traffic is its own (issue 17, "Host
  exposure": with 127.0.0.1:P captured, a pod asking for hostPort 6443 got the
  controllers' admin token). This is kube-proxy's nftables-mode choice for
  NodePorts; portmap's loopback DNAT needs `route_localnet=1` on the bridge,
  which shoal no longer sets. (Matching `oifname "lo"` would not do: every
  packet to a local address, NODE_IP included, is routed via lo.)
* `postrouting` (srcnat) masquerades only DNATed connections to pods that
  would otherwise break: pod-to-own-node hairpin (a pod reaching NODE_IP:P
  that lands on a pod of the same bridge would get the reply straight over L2,
  un-NATed, unless br_netfilter happened to be loaded; masquerading makes it
  independent of br_netfilter).

* `guard` (filter, prerouting, before DNAT) drops packets that arrive on the
  bridge addressed to 127.0.0.0/8: should `route_localnet=1` be set on the
  bridge (older shoal did, and so may an admin), a pod could otherwise reach
  services the node binds to localhost (the hole kube-proxy had to close as
  CVE-2020-8558).

Ports of shoal's own components (API server, the agent's log endpoint) are
refused before they get here (`agent.nodenet.refused_host_ports`).

There is no outbound masquerade for pods and no filter chain: pods reach the
cluster CIDR by routing, not the outside world. An nftables `accept` cannot
override another table's `drop`, so a host firewall with a forward policy of
drop must allow the pod CIDRs itself (docs/networking.md).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from shoal.agent.interfaces import HostPort

TABLE = "shoal"


@dataclass(frozen=True)
class Problem:
    pod_uid: str
    message: str


def _validate(p: HostPort) -> str | None:
    proto = p.protocol.upper()
    if proto not in ("TCP", "UDP"):
        return f"hostPort {p.host_port}/{p.protocol} of pod {p.pod_uid}: only TCP and UDP are supported"
    for label, port in (("hostPort", p.host_port), ("containerPort", p.container_port)):
        if not isinstance(port, int) or not 1 <= port <= 65535:
            return f"{label} {port!r} of pod {p.pod_uid} is outside 1-65535"
    if p.host_ip:
        try:
            ipaddress.IPv4Address(p.host_ip)
        except ValueError:
            return f"hostIP {p.host_ip!r} of pod {p.pod_uid} is not an IPv4 address"
        if ipaddress.IPv4Address(p.host_ip).is_loopback:
            # never reachable (see `output`): say so instead of publishing a dead rule
            return f"hostIP {p.host_ip} of pod {p.pod_uid}: the host's loopback is never published"
    return None


def render_ruleset(ports: list[HostPort], pod_ips: dict[str, str], *, pod_cidr: str | None,
                   bridge: str = "shoal0", table: str = TABLE) -> tuple[str, list[Problem]]:
    problems: list[Problem] = []
    rules: list[str] = []
    claimed: dict[tuple[str, int, str], str] = {}
    # Sorted so the same set always renders the same text (and the same winner
    # when two pods claim one port).
    for p in sorted(ports, key=lambda p: (p.pod_uid, p.host_port, p.protocol, p.host_ip, p.container_port)):
        err = _validate(p)
        if err:
            problems.append(Problem(p.pod_uid, err))
            continue
        ip = pod_ips.get(p.pod_uid)
        if not ip:
            problems.append(Problem(p.pod_uid, f"hostPort {p.host_port}/{p.protocol} of pod {p.pod_uid}: the pod has no address on this node yet"))
            continue
        proto = p.protocol.lower()
        # a wildcard claim conflicts with every specific one and vice versa
        keys = [(p.host_ip, p.host_port, proto)] + ([("", p.host_port, proto)] if p.host_ip else [])
        owner = next((claimed[k] for k in keys if k in claimed and claimed[k] != p.pod_uid), None)
        if owner is None and not p.host_ip:
            owner = next((u for (hip, port, pr), u in claimed.items()
                          if port == p.host_port and pr == proto and u != p.pod_uid), None)
        if owner is not None:
            problems.append(Problem(p.pod_uid, f"hostPort {p.host_port}/{p.protocol.upper()} of pod {p.pod_uid} is already published for pod {owner}"))
            continue
        claimed[(p.host_ip, p.host_port, proto)] = p.pod_uid
        match = (f"ip daddr {p.host_ip} " if p.host_ip else "") + f"{proto} dport {p.host_port}"
        rules.append(f'\t\t{match} dnat to {ip}:{p.container_port} comment "pod {p.pod_uid}"')

    post: list[str] = []
    if pod_cidr:
        net = str(ipaddress.ip_network(pod_cidr, strict=True))
        post = [f'\t\tct status dnat ip saddr {net} ip daddr {net} oifname "{bridge}" masquerade']
    lines = [
        # "create if missing, then delete" makes the delete legal on a fresh node;
        # all of it is one transaction.
        f"table ip {table} {{}}",
        f"delete table ip {table}",
        f"table ip {table} {{",
        "\tchain hostports {",
        *rules,
        "\t}",
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        "\t\tfib daddr type local jump hostports",
        "\t}",
        "\tchain output {",
        # -100 is dstnat's value; nft 1.0.6 rejects the name on the output hook
        "\t\ttype nat hook output priority -100; policy accept;",
        # the host's loopback is never a hostPort (docstring: issue 17)
        "\t\tip daddr 127.0.0.0/8 return",
        "\t\tfib daddr type local jump hostports",
        "\t}",
        "\tchain guard {",
        "\t\ttype filter hook prerouting priority -150; policy accept;",
        f'\t\tiifname "{bridge}" ip daddr 127.0.0.0/8 drop',
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        *post,
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n", problems
