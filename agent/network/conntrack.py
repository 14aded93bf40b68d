"""Connection-tracking entries that outlive a Service endpoint: the service proxy's clean-up seam.

Why: NAT is decided on a connection's first packet, and its conntrack entry keeps that
decision for every later packet of the same 5-tuple. A TCP SYN (or a UDP datagram) sent to an
endpoint that never answers — a pod on a host that died — leaves an entry that never saw a
reply (TCP SYN_SENT lives 120 s by default, UDP unreplied 30 s). A client that later opens a
connection from the same source port to the same Service address matches that entry, not the
rules: its SYN is sent to the dead address again, long after every node's rules dropped it
(the lab's rollout test found clients reusing a port within seconds). kube-proxy deletes the
UDP entries of removed endpoints and leaves TCP ones, so Kubernetes has that blackhole too.

What is deleted: entries that were destination-NATed to one of the given addresses and never
saw a reply. The proxy calls it only for addresses that left the EndpointSlices altogether
(their pod is gone: no answer can still be on its way), after the rules without them are in
the kernel. Connections that got an answer — established ones, a terminating pod's last
requests — are never touched.

`NetlinkConntrack().forget_unreplied(addresses)` works in the calling thread's network
namespace (the agent's: the node's) through pyroute2, one dump per address filtered by the
kernel on the reply source (Linux ≥ 5.8; checked again here); returns how many it deleted.
`RecordingConntrack` records the calls for tests.
"""
from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field
from typing import Collection, Protocol

log = logging.getLogger(__name__)

IPS_SEEN_REPLY = 1 << 1     # linux/netfilter/nf_conntrack_common.h
IPS_DST_NAT = 1 << 5


class ConntrackTable(Protocol):
    def forget_unreplied(self, addresses: Collection[str]) -> int:
        """Delete the entries DNATed to `addresses` that never saw a reply; how many."""


class NetlinkConntrack:
    def forget_unreplied(self, addresses: Collection[str]) -> int:
        if not addresses:
            return 0
        from pyroute2 import Conntrack
        from pyroute2.netlink.exceptions import NetlinkError
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
        deleted = 0
        ct = Conntrack()
        try:
            for ip in sorted(set(addresses)):
                for e in list(ct.dump_entries(tuple_reply=NFCTAttrTuple(saddr=ip))):
                    if str(e.tuple_reply.saddr) != ip or e.status & IPS_SEEN_REPLY or not e.status & IPS_DST_NAT:
                        continue
                    try:
                        ct.entry("del", tuple_orig=e.tuple_orig)
                        deleted += 1
                    except NetlinkError as err:
                        if err.code != errno.ENOENT:        # gone meanwhile: what we wanted
                            raise
        finally:
            ct.close()
        if deleted:
            log.debug("conntrack: deleted %d unreplied entries to %s", deleted, ", ".join(sorted(addresses)))
        return deleted


@dataclass
class RecordingConntrack:
    calls: list[frozenset[str]] = field(default_factory=list)

    def forget_unreplied(self, addresses: Collection[str]) -> int:
        self.calls.append(frozenset(addresses))
        return 0


__all__ = ["ConntrackTable", "NetlinkConntrack", "RecordingConntrack"]
