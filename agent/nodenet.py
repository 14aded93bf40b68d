"""The node's side of the pod network: its pod CIDR, its overlay peers, its host ports.

`NodeNetworkSync` follows the Node informer (`attach(informer)`: the floor's `Informer` on all
Nodes) and keeps the `Network` seam (agent/network) level-based:

- own pod CIDR: once the node lifecycle controller has set `spec.podCIDR` on this node,
  `Network.ensure_node(cidr)` builds the bridge, then `ensure_overlay` builds the VXLAN
  device (it carries an address from the CIDR, so on a node's first start it can only be
  built now) and its MAC is published as the `shoal.io/vtep-mac` annotation. The first
  time this succeeds the network is *ready*: pod sandboxes may be built and every pod
  worker is woken (`on_ready`). A failure is retried on the next Node update or status
  post (every `node_status_interval`).
- peers: whenever the set of Ready nodes with a CIDR, an underlay IP and a VTEP MAC changes,
  `Network.sync_peers` gets the whole set (`overlay_peers`, pure), never a diff; a failed
  sync is tried again on the next change of any Node. The first sync waits for the first
  list, so a restarted agent never syncs a half-listed set (which would drop live routes).
- host ports: `sync_host_ports()` (called by a pod worker after its sandbox changed) hands
  the hostPorts of every pod that has its network (`host_ports`, pure) to
  `Network.sync_host_ports`. A port one of shoal's own components listens on here (the
  API server's, the agent's log endpoint's: `reserved`) is never among them — the
  worker refuses to start its container (`refused_host_ports`, pure; issue 17).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable, Mapping, Protocol

from shoal.machinery.control.informer import Informer
from shoal.agent.interfaces import HostPort, Peer

log = logging.getLogger(__name__)

ANN_VTEP_MAC = "shoal.io/vtep-mac"
ANN_UNDERLAY_IP = "shoal.io/underlay-ip"


# ------------------------------------------------------------------------------ pure helpers
def overlay_peers(nodes: Iterable[Mapping], own: str) -> list[Peer]:
    """The overlay peers of node `own`: every other Ready node with a pod CIDR, an underlay
    IP and a VTEP MAC, by node name."""
    peers = []
    for n in nodes:
        md = n.get("metadata") or {}
        name = md.get("name") or ""
        if name == own:
            continue
        ann = md.get("annotations") or {}
        cidr = (n.get("spec") or {}).get("podCIDR")
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (n.get("status") or {}).get("conditions") or [])
        if ready and cidr and ann.get(ANN_VTEP_MAC) and ann.get(ANN_UNDERLAY_IP):
            peers.append(Peer(node=name, underlay_ip=ann[ANN_UNDERLAY_IP], vtep_mac=ann[ANN_VTEP_MAC], pod_cidr=cidr))
    return sorted(peers, key=lambda p: p.node)


def refused_host_ports(container: Mapping, reserved: Mapping[int, str]) -> list[str]:
    """Why `container`'s hostPorts may not be published here: one message per port that a
    component of shoal on this node listens on (`reserved`: port -> who). A pod holding
    that port would receive what the host sends its own component — the API server's
    6443 carries the admin and node tokens. Any protocol and hostIP: the component binds
    the port, and a UDP twin is no use to a pod either."""
    out = []
    for p in container.get("ports") or []:
        port = p.get("hostPort")
        if port and int(port) in reserved:
            out.append(f"hostPort {int(port)} of container {container.get('name', '?')} is reserved for "
                       f"{reserved[int(port)]} on this node")
    return out


def host_ports(pods: Iterable[tuple[str, Mapping]], reserved: Mapping[int, str] | None = None) -> list[HostPort]:
    """The published ports (`containers[].ports[].hostPort`) of `(uid, pod)` pairs, never
    one in `reserved` (see `refused_host_ports`)."""
    out = []
    for uid, pod in pods:
        for c in (pod.get("spec") or {}).get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("hostPort") and int(p["hostPort"]) not in (reserved or {}):
                    out.append(HostPort(uid, int(p["hostPort"]), int(p["containerPort"]),
                                        p.get("protocol") or "TCP", p.get("hostIP") or ""))
    return out


# ------------------------------------------------------------------------------ the executor
class NodeApi(Protocol):
    def patch(self, kind: str, name: str, body: dict, *args, **kwargs) -> dict: ...


class NodeNetworkSync:
    def __init__(self, client: NodeApi, *, node_name: str, address: str, network,
                 sandboxed_pods: Callable[[], list[tuple[str, dict]]], on_ready: Callable[[], None],
                 reserved_ports: Mapping[int, str] | None = None):
        self.client = client
        # port -> shoal component; the agent's own dict, completed once its log endpoint listens
        self.reserved_ports: Mapping[int, str] = reserved_ports if reserved_ports is not None else {}
        self.node_name = node_name
        self.address = address
        self.network = network
        self._sandboxed_pods = sandboxed_pods
        self._on_ready = on_ready
        self._nodes: Callable[[], list[dict]] = list
        self._listed = False
        self._lock = threading.Lock()        # own-node handling: informer thread and status posts
        self._ready = threading.Event()
        self.pod_cidr: str | None = None
        self.vtep_mac: str | None = None
        self._peers: list[Peer] | None = None

    @property
    def ready(self) -> bool:
        """The node has its pod CIDR and bridge: sandboxes may be built."""
        return self._ready.is_set()

    def prepare(self) -> None:
        """Build the overlay device before registration, so the Node carries its MAC (after a
        restart the device exists; on a first start it waits for the CIDR, see on_own_node)."""
        try:
            self.vtep_mac = self.network.ensure_overlay(self.address)
        except Exception as e:
            log.warning("node %s: overlay device not ready (%s); pods on other nodes will be unreachable",
                        self.node_name, e)

    # ------------------------------------------------------------------ the Node informer
    def attach(self, informer: Informer) -> None:
        self._nodes = informer.list
        informer.add_handler(on_add=self._on_node, on_update=lambda old, new: self._on_node(new),
                             on_delete=lambda node: self._sync_peers(), on_list=self._on_list)

    def _on_node(self, node: dict) -> None:
        if node["metadata"]["name"] == self.node_name:
            self.on_own_node(node)
        self._sync_peers()

    def _on_list(self) -> None:
        self._listed = True
        self._sync_peers()

    def on_own_node(self, node: dict) -> None:
        """This node as the API server has it (a watch event or the answer to a status post)."""
        with self._lock:
            cidr = (node.get("spec") or {}).get("podCIDR")
            if not cidr or cidr == self.pod_cidr:
                return
            try:
                self.network.ensure_node(cidr)
            except Exception as e:
                log.error("node %s: building the pod network for %s failed: %s", self.node_name, cidr, e)
                return
            self.pod_cidr = cidr
            # The overlay device carries an address from the pod CIDR, so on a node's first
            # start it can only be built now; publish its MAC so peers add this node.
            try:
                mac = self.network.ensure_overlay(self.address)
                if mac != self.vtep_mac:
                    self.vtep_mac = mac
                    self.client.patch("nodes", self.node_name, {"metadata": {"annotations": {ANN_VTEP_MAC: mac}}})
                self._peers = None      # re-sync peers onto the (possibly new) device
            except Exception as e:
                log.warning("node %s: overlay device not ready (%s); pods on other nodes will be unreachable",
                            self.node_name, e)
            first = not self._ready.is_set()
            self._ready.set()
            log.info("node %s: pod CIDR %s", self.node_name, cidr)
        if first:
            self._on_ready()

    def _sync_peers(self) -> None:
        if not self._listed:
            return       # a half-listed set would drop the routes to nodes not listed yet
        peers = overlay_peers(self._nodes(), self.node_name)
        if peers == self._peers:
            return
        try:
            self.network.sync_peers(peers)
            self._peers = peers
        except Exception as e:
            log.warning("node %s: syncing %d overlay peers failed: %s", self.node_name, len(peers), e)

    # ------------------------------------------------------------------ host ports
    def sync_host_ports(self) -> None:
        ports = host_ports(self._sandboxed_pods(), self.reserved_ports)
        try:
            self.network.sync_host_ports(ports)
        except Exception as e:
            log.warning("node %s: publishing %d host ports failed: %s", self.node_name, len(ports), e)
