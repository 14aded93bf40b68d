"""Pod CIDR allocation: every node without `spec.podCIDR` gets the lowest free /24 (by
default) of the cluster CIDR (default 10.244.0.0/16), written with `spec.podCIDRs`.

The set of used ranges is derived from the node cache on every allocation, so a range is
free again as soon as its node is deleted, and a restarted controller needs no state of its
own. One worker: two nodes can never be handed the same range by this process.
"""
from __future__ import annotations

import ipaddress

from shoal.machinery.client.rest import Client

from shoal.machinery.control.events import WARNING, EventSink
from shoal.machinery.api.objects import thaw
from shoal.machinery.control import Controller, Informer, Manager, Result


def next_free_subnet(cluster_cidr: str, used: set[str], *, prefix: int = 24) -> str | None:
    """The lowest `/prefix` of `cluster_cidr` not overlapping any range in `used`."""
    net = ipaddress.ip_network(cluster_cidr, strict=False)
    if prefix < net.prefixlen:
        raise ValueError(f"node CIDR mask /{prefix} is larger than the cluster CIDR {cluster_cidr}")
    taken = []
    for u in used:
        try:
            taken.append(ipaddress.ip_network(u, strict=False))
        except ValueError:
            continue
    exact = {t for t in taken if t.prefixlen == prefix}
    others = [t for t in taken if t.prefixlen != prefix and t.version == net.version]
    for sub in net.subnets(new_prefix=prefix):
        if sub not in exact and not any(sub.overlaps(t) for t in others):
            return str(sub)
    return None


def node_cidrs(node: dict) -> list[str]:
    spec = node.get("spec") or {}
    out = list(spec.get("podCIDRs") or [])
    if spec.get("podCIDR") and spec["podCIDR"] not in out:
        out.append(spec["podCIDR"])
    return out


class NodeIpamController:
    def __init__(self, client: Client, *, nodes: Informer, events: EventSink, cluster_cidr: str = "10.244.0.0/16",
                 node_mask: int = 24):
        next_free_subnet(cluster_cidr, set(), prefix=node_mask)  # validate early, with a clear error
        self.client = client
        self.node_inf = nodes
        self.events = events
        self.cluster_cidr, self.node_mask = cluster_cidr, node_mask

    def register(self, manager: Manager) -> Controller:
        c = manager.add_controller("nodeipam", self, workers=1)
        c.watch(self.node_inf)
        return c

    def reconcile(self, name: str) -> Result:
        node = self.node_inf.get(name)
        if node is None or node_cidrs(node):
            return Result()
        used = {c for n in self.node_inf.list() for c in node_cidrs(n)}
        cidr = next_free_subnet(self.cluster_cidr, used, prefix=self.node_mask)
        if cidr is None:
            self.events.event(node, WARNING, "CIDRNotAvailable",
                              f"Node {name} status is now: CIDRNotAvailable (no free /{self.node_mask} "
                              f"left in cluster CIDR {self.cluster_cidr})")
            return Result(requeue_after=30.0)
        new = thaw(node)
        new.setdefault("spec", {})["podCIDR"] = cidr
        new["spec"]["podCIDRs"] = [cidr]
        self.node_inf.observe(self.client.update("nodes", new))
        return Result()
