"""The pod network of a node, and the VXLAN overlay between nodes.

A tour, in the order the agent uses it:

* `node.NodeNetwork` — the real `agent.interfaces.Network`. `ensure_node`
  builds the bridge `shoal0` holding the first address of the node's pod CIDR;
  `setup_pod`/`teardown_pod` give each pod a network namespace, a veth pair on
  the bridge and an address that survives agent restarts; `sync_host_ports`
  publishes `hostPort`s with nftables DNAT; `ensure_overlay`/`sync_peers` build
  the VXLAN overlay to the other nodes.
* `ipam.NodeState` — the on-disk record (pod CIDR, uid → IP/netns/veth) with
  round-robin allocation under a file lock and atomic writes.
* `overlay` — design notes of the overlay (read these first) and the pure
  planner `plan_peer_sync(desired peers, observed entries) -> [Action]`.
* `hostports.render_ruleset` — the pure renderer of the `ip shoal` nft table.
* `svcrules.plan_ruleset` — the pure planner of the service proxy's `ip shoal-svc` table
  (kube-proxy's nftables mode: verdict maps, a chain per service port and endpoint);
  `agent.serviceproxy` applies it through the same `Runner`.
* `netlink.Netlink` — the kernel seam (~25 verbs), its value types and
  `NetlinkOpError`; `pyroute.PyrouteNetlink` is the real one (pyroute2, with
  `nsworker`'s thread per namespace and `rtnl`'s plain rtnetlink socket for
  the pod-setup requests), `fakenetlink.RecordingNetlink` the in-memory one
  for unit tests; `runner.Runner` — the same for the `nft` and `ethtool` commands.
* `labnet` — N "hosts" as network namespaces joined by a bridge in a lab
  namespace: the substrate of the e2e tests and of `shoal lab`.

Everything is level-based: each verb converges to a desired state read from
its arguments and the kernel, so calling it again repairs rather than fails.
docs/networking.md has the packet path, MTU and troubleshooting commands.
"""
from shoal.agent.network.fakenetlink import RecordingNetlink
from shoal.agent.network.netlink import FdbEntry, Link, Neighbour, Netlink, NetlinkOpError, Route, VxlanInfo
from shoal.agent.network.node import NodeNetwork, veth_name
from shoal.agent.network.overlay import Action, Observed, plan_peer_sync
from shoal.agent.network.pyroute import PyrouteNetlink
from shoal.agent.network.runner import CommandError, RecordingRunner, Runner, SubprocessRunner

__all__ = [
    "Action", "CommandError", "FdbEntry", "Link", "Neighbour", "Netlink", "NetlinkOpError", "NodeNetwork",
    "Observed", "PyrouteNetlink", "RecordingNetlink", "RecordingRunner", "Route", "Runner",
    "SubprocessRunner", "VxlanInfo", "plan_peer_sync", "veth_name",
]


def real_node_network(state_dir: str, *, netns: str | None = None, **kwargs) -> NodeNetwork:
    """A `NodeNetwork` on the real kernel, in the current namespace or `netns`."""
    return NodeNetwork(state_dir, netlink=PyrouteNetlink(netns=netns), runner=SubprocessRunner(netns=netns), **kwargs)
