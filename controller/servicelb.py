"""ServiceLB: LoadBalancer Services on bare machines, as k3s' ServiceLB (klipper-lb) does it.

There is no cloud load balancer: every node is one. The node proxy publishes a
LoadBalancer Service's `port` on every node's addresses (and its node ports, like any
NodePort Service), and this controller tells clients where: `status.loadBalancer.ingress`
lists the addresses of the nodes that are Ready — their ExternalIP addresses when any
Ready node has one, else their InternalIP addresses (k3s' choice), sorted, each with
`ipMode: VIP`. A node that turns NotReady leaves the list; one that comes back returns.
With `externalTrafficPolicy: Local` the node proxy answers external traffic only with the
node's own endpoints, so only the Ready nodes holding a ready endpoint of the Service (from
its EndpointSlices) are listed: what a cloud load balancer learns from the health-check port.
Services of the other types are never touched (the API server clears the status of a
Service that stops being a LoadBalancer).

Contract (per Service key, level-based): read the Service and the nodes from the
informers, compute `lb_ingress` (pure), write `/status` only when it differs.

Next: `controller.manager`.
"""
from __future__ import annotations

import ipaddress
import logging

from shoal.machinery.api.objects import get_condition, is_deleting, key_of, namespace_of, thaw
from shoal.machinery.api.services import SERVICE_NAME_LABEL
from shoal.machinery.client.rest import Client
from shoal.machinery.control import Controller, Informer, Manager, Result

log = logging.getLogger("shoal.controller.servicelb")


def node_ready(node: dict) -> bool:
    cond = get_condition(node.get("status"), "Ready")
    return cond is not None and cond.get("status") == "True"


def _addresses(node: dict, kind: str) -> list[str]:
    out = []
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") == kind and a.get("address"):
            try:
                if ipaddress.ip_address(a["address"]).version == 4:
                    out.append(a["address"])
            except ValueError:
                continue
    return out


def local_endpoint_nodes(slices: list[dict]) -> set[str]:
    """The nodes holding a ready endpoint in `slices` (a Service's EndpointSlices)."""
    return {ep["nodeName"] for s in slices for ep in s.get("endpoints") or []
            if ep.get("nodeName") and (ep.get("conditions") or {}).get("ready") is not False}


def lb_ingress(nodes: list[dict], *, only: set[str] | None = None) -> list[dict]:
    """`status.loadBalancer.ingress` for the cluster's nodes (module docstring); `only`: the
    nodes that may be listed (externalTrafficPolicy Local), None for all. Pure."""
    ready = [n for n in nodes if node_ready(n) and not is_deleting(n)
             and (only is None or (n.get("metadata") or {}).get("name") in only)]
    external = sorted({ip for n in ready for ip in _addresses(n, "ExternalIP")}, key=ipaddress.ip_address)
    ips = external or sorted({ip for n in ready for ip in _addresses(n, "InternalIP")}, key=ipaddress.ip_address)
    return [{"ip": ip, "ipMode": "VIP"} for ip in ips]


class ServiceLBController:
    def __init__(self, client: Client, *, services: Informer, nodes: Informer, slices: Informer):
        self.client = client
        self.svc_inf, self.node_inf, self.slice_inf = services, nodes, slices

    def register(self, manager: Manager, *, workers: int = 1) -> Controller:
        c = manager.add_controller("servicelb", self, workers=workers)
        c.watch(self.svc_inf)
        c.watch(self.node_inf, self._load_balancers)
        c.watch(self.slice_inf, self._slice_service)
        return c

    @staticmethod
    def _slice_service(slc: dict) -> list[str]:
        name = ((slc.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        return [f"{namespace_of(slc)}/{name}"] if name else []

    def _load_balancers(self, _node: dict) -> list[str]:
        return [key_of(s) for s in self.svc_inf.list() if (s.get("spec") or {}).get("type") == "LoadBalancer"]

    def reconcile(self, key: str) -> Result:
        svc = self.svc_inf.get(key)
        if svc is None or (svc.get("spec") or {}).get("type") != "LoadBalancer" or is_deleting(svc):
            return Result()
        only = None
        if (svc.get("spec") or {}).get("externalTrafficPolicy") == "Local":
            only = local_endpoint_nodes([s for s in self.slice_inf.list() if self._slice_service(s) == [key]])
        want = lb_ingress(self.node_inf.list(), only=only)
        status = svc.get("status") or {}
        if ((status.get("loadBalancer") or {}).get("ingress") or []) == want:
            return Result()
        new = thaw(svc)
        lb = dict((new.get("status") or {}).get("loadBalancer") or {})
        if want:
            lb["ingress"] = want
        else:
            lb.pop("ingress", None)
        new["status"] = dict(new.get("status") or {}, loadBalancer=lb)
        self.svc_inf.observe(self.client.update_status("services", new))
        return Result()
