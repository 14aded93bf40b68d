"""The node's record on the API server: its Node object, its status and its Lease.

- `register()` creates the Node (or, when it exists, patches its labels and annotations):
  capacity from the host (`host_capacity`: cpu count, /proc/meminfo, max pods — or the
  options' overrides, as hollow nodes use), addresses InternalIP + Hostname, the usual
  `kubernetes.io/*` labels, nodeInfo, `daemonEndpoints.kubeletEndpoint.Port` (the log
  endpoint), the Ready condition, and the overlay annotations `shoal.io/underlay-ip` /
  `shoal.io/vtep-mac`; then posts the status.
- `post_status()` (every `node_status_interval`) patches `nodes/<node>/status` and hands the
  answer to `on_node` (the node network reads its pod CIDR from it); a Node deleted by an
  admin is registered again.
- `renew_lease()` (every `lease_renew_interval`) renews `kube-node-lease/<node>` — the
  heartbeat the node lifecycle controller reads — creating it when missing, re-reading it
  on a conflict.

What goes into the objects is pure (`node_meta`, `build_node_status`, with the host facts
read once into `HostInfo`); `NodeRegistration` only writes them.
"""
from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from shoal.machinery.api import errors
from shoal.machinery.control.clock import Clock
from shoal.agent.nodenet import ANN_UNDERLAY_IP, ANN_VTEP_MAC
from shoal.machinery.api.times import format_micro_time, format_time

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
VERSION = "0.1.0"


# ------------------------------------------------------------------------------ the host
def host_memory_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def host_capacity(*, cpu: str | None = None, memory: str | None = None, max_pods: int = 110) -> dict[str, str]:
    """cpu, memory and pods of this host; `cpu`/`memory` override what the host has."""
    return {"cpu": cpu or str(os.cpu_count() or 1), "memory": memory or f"{host_memory_kib()}Ki",
            "pods": str(max_pods)}


@dataclass(frozen=True)
class HostInfo:
    kernel_version: str = ""
    os_image: str = "Linux"
    machine_id: str = ""
    boot_id: str = ""
    system_uuid: str = ""

    @classmethod
    def read(cls) -> "HostInfo":
        machine_id = _read("/etc/machine-id")
        # the firmware's UUID, as the kubelet reports it; a VM without DMI gets the machine id's
        return cls(kernel_version=platform.uname().release, os_image=_os_image(), machine_id=machine_id,
                   boot_id=_read("/proc/sys/kernel/random/boot_id"),
                   system_uuid=_read("/sys/class/dmi/id/product_uuid").lower() or _uuid_of(machine_id))


def _uuid_of(machine_id: str) -> str:
    h = machine_id.strip().lower()
    if len(h) != 32:
        return ""
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "Linux"


# ------------------------------------------------------------------------------ pure: the objects
def node_meta(*, node_name: str, address: str, vtep_mac: str | None, labels: Mapping[str, str]) -> dict:
    """The Node's labels and annotations (`labels` are added to the `kubernetes.io/*` ones)."""
    ann = {ANN_UNDERLAY_IP: address}
    if vtep_mac:
        ann[ANN_VTEP_MAC] = vtep_mac
    return {"labels": {"kubernetes.io/hostname": node_name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", **labels},
            "annotations": ann}


def build_node_status(*, node_name: str, address: str, capacity: Mapping[str, str], now: str, ready_since: str,
                      version: str, runtime_version: str, kubelet_port: int, host: HostInfo) -> dict:
    """The Node's status: always Ready (the agent posting it is the heartbeat's other half)."""
    return {"capacity": dict(capacity), "allocatable": dict(capacity),
            "addresses": [{"type": "InternalIP", "address": address},
                          {"type": "Hostname", "address": node_name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "shoal agent is posting ready status",
                            "lastHeartbeatTime": now, "lastTransitionTime": ready_since}],
            "nodeInfo": {"kubeletVersion": f"shoal-{version}", "containerRuntimeVersion": runtime_version,
                         "operatingSystem": "linux", "architecture": "amd64",
                         "kernelVersion": host.kernel_version, "osImage": host.os_image,
                         "machineID": host.machine_id, "bootID": host.boot_id, "systemUUID": host.system_uuid,
                         # deprecated in Kubernetes 1.31 (kubelets send it empty); clients still
                         # require the field (the Python client's V1NodeSystemInfo)
                         "kubeProxyVersion": ""},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}}}


# ------------------------------------------------------------------------------ the writer
class NodeRegistration:
    def __init__(self, client, *, node_name: str, address: str, clock: Clock, capacity: Mapping[str, str],
                 labels: Mapping[str, str], version: str, runtime_version: str, lease_duration_seconds: int,
                 vtep_mac: Callable[[], str | None], kubelet_port: Callable[[], int],
                 on_node: Callable[[dict], None], host: HostInfo | None = None):
        self.client = client
        self.node_name = node_name
        self.address = address
        self.clock = clock
        self.capacity = dict(capacity)
        self.labels = dict(labels)
        self.version, self.runtime_version = version, runtime_version
        self.lease_duration_seconds = lease_duration_seconds
        self._vtep_mac, self._kubelet_port, self._on_node = vtep_mac, kubelet_port, on_node
        self.host = host or HostInfo.read()
        self._ready_since: str | None = None
        self._lease: dict | None = None

    def node_status(self) -> dict:
        now = format_time(self.clock.now())
        if self._ready_since is None:
            self._ready_since = now
        return build_node_status(node_name=self.node_name, address=self.address, capacity=self.capacity, now=now,
                                 ready_since=self._ready_since, version=self.version,
                                 runtime_version=self.runtime_version, kubelet_port=self._kubelet_port(),
                                 host=self.host)

    def register(self) -> None:
        meta = node_meta(node_name=self.node_name, address=self.address, vtep_mac=self._vtep_mac(),
                         labels=self.labels)
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name, **meta}, "spec": {},
                "status": self.node_status()}
        try:
            self.client.create("nodes", node)
            log.info("node %s registered", self.node_name)
        except errors.AlreadyExists:
            self.client.patch("nodes", self.node_name, {"metadata": meta})
        self.post_status()

    def post_status(self) -> None:
        try:
            node = self.client.patch("nodes", self.node_name, {"status": self.node_status()}, subresource="status")
        except errors.NotFound:       # deleted by an admin: register again
            self.register()
            return
        self._on_node(node)

    def renew_lease(self) -> None:
        now = self.clock.now()
        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": self.lease_duration_seconds,
                "renewTime": format_micro_time(now)}
        for _ in range(3):
            try:
                if self._lease is None:
                    try:
                        self._lease = self.client.get("leases", self.node_name, LEASE_NAMESPACE)
                    except errors.NotFound:
                        self._lease = self.client.create("leases", {
                            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": {"name": self.node_name, "namespace": LEASE_NAMESPACE},
                            "spec": {**spec, "acquireTime": format_micro_time(now)}}, LEASE_NAMESPACE)
                        return
                body = dict(self._lease, spec={**(self._lease.get("spec") or {}), **spec})
                self._lease = self.client.update("leases", body)
                return
            except (errors.Conflict, errors.NotFound):
                self._lease = None
