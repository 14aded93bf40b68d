"""The node agent: one per host, the kubelet of shoal.

`Agent(client, node_name=..., address=..., data_dir=..., images=..., runtime=...,
network=..., options=AgentOptions(...))`, then `start()` / `stop()`.

This module only composes the agent's parts and starts them; each part is its own module.
What it does, in start order:
1. Serves container logs (`agent.logserver`, files picked by `agent.logs`) over mutual
   TLS on `kubelet_port` of the address the API server verified at the join
   (`kubelet_tls`, from `agent.join.serving_tls`; no log endpoint without it), builds the
   overlay device when it can (`agent.nodenet`), and
   registers its Node (`agent.registration`): capacity from the host, addresses, the
   usual `kubernetes.io/*` labels, nodeInfo, the log endpoint's port, the Ready
   condition, and the overlay annotations `shoal.io/underlay-ip` / `shoal.io/vtep-mac`.
2. Renews `kube-node-lease/<node>` every `lease_renew_interval` and posts node
   status every `node_status_interval` (timers on the scheduler).
3. Watches all Nodes (the floor's `Informer`, `agent.nodenet`): once its own
   `spec.podCIDR` is assigned it calls `network.ensure_node` and lets pod sandboxes be
   built; whenever the set of Ready peers (with CIDR, underlay IP and VTEP MAC) changes
   it calls `network.sync_peers` with the full set. Then it serves the cluster DNS
   (`agent.dns`, `options.dns`) on its bridge address, port 53, from informers on all
   Services and EndpointSlices (`shared_informer`: one per kind, for every reader); its
   ClusterFirst pods get that address as nameserver (`cluster_nameservers`).
4. Lists then watches the pods with `spec.nodeName=<node>` (the floor's `Informer`:
   relist on 410 Gone, watch again from the last revision on a broken connection) and
   hands each pod to its `PodWorker` (`agent.worker`) through `agent.dispatch`: one
   serialized sync per pod uid on the floor's `WorkQueue`.
5. Relists the runtime every `relist_interval` (kubelet's PLEG), and at once on an exit
   the runtime reports: a container whose state changed wakes its pod's worker.
   Containers labelled with a pod uid the API server no longer binds here — after the
   first successful pod list, never before — get an orphan worker that stops and removes
   them; so does network state or a pod directory without a pod (housekeeping, every
   `housekeeping_interval`). This is both the adoption after an agent restart
   (containers of live pods are observed, not restarted: their attempt and restart count
   are in their labels) and the clean-up of stale copies after a partition heals.
6. Collects unused images every `image_gc_interval` (`agent.imagegc`).
7. Given an nft runner (`service_proxy_runner`), keeps the node's Service rules
   (`agent.serviceproxy`): one nftables table planned from all Services, EndpointSlices
   (the shared informers) and the Nodes' pod CIDRs, replaced in one transaction at
   start-up and on every change (with `service_proxy_conntrack`, the unanswered connections
   to endpoints that are gone are deleted); after each sync it publishes how far its rules go on its
   Node (`agent.drain.AppliedPublisher`, annotation `shoal.io/service-proxy-applied`; a node
   without a proxy removes it).
8. Holds a deleted pod's SIGTERM until every Ready node's proxy has dropped its endpoint
   (`agent.drain.DrainGate`, asked by the pod workers; bounded by the grace period and
   `drain_cap`).

`stop()` leaves every container running: they outlive the agent. The Service rules stay in
the kernel too (traffic keeps flowing while the agent restarts) unless
`service_proxy_cleanup`.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from shoal.machinery.control.clock import Clock, RealClock
from shoal.machinery.control.informer import Informer
from shoal.machinery.client.rest import Client
from shoal.machinery.control.timers import Scheduler, ThreadScheduler
from shoal.machinery.control.events import EventRecorder
from shoal.agent.dispatch import PodDispatcher, PodWorkers
from shoal.agent.dns import ClusterDNS, DNSOptions, bridge_address
from shoal.agent.drain import AppliedPublisher, DrainGate
from shoal.agent.drainplan import DEFAULT_CAP
from shoal.agent.hostfiles import private_dir
from shoal.agent.imagegc import collect_images
from shoal.agent.interfaces import ExitWatcher, ImageStore, Network, Runtime
from shoal.agent.logs import PodLogs
from shoal.agent.logserver import LogServer, ServingTLS
from shoal.agent.network.conntrack import ConntrackTable
from shoal.agent.network.runner import Runner
from shoal.agent.nodenet import ANN_UNDERLAY_IP, ANN_VTEP_MAC, NodeNetworkSync
from shoal.agent.podapi import ClientPodApi
from shoal.agent.probes import ProbeManager, RealProbeExecutor
from shoal.agent.registration import (LEASE_NAMESPACE, VERSION, NodeRegistration, host_capacity,
                                      host_memory_kib)
from shoal.agent.restarts import BackoffPolicy, RestartTracker
from shoal.agent.serviceproxy import ServiceProxy
from shoal.agent.worker import PodWorker, WorkerContext

log = logging.getLogger(__name__)

__all__ = ["Agent", "AgentOptions", "ANN_UNDERLAY_IP", "ANN_VTEP_MAC", "LEASE_NAMESPACE", "VERSION",
           "host_memory_kib"]


def reserved_host_ports(server: str, kubelet_port: int | None) -> dict[int, str]:
    """The hostPorts no pod may publish on this node (port -> who listens there): the API
    server's port (its URL's, 6443 by default — on the server's own node a pod holding it
    would receive the node's and the controllers' tokens), and the log endpoint's."""
    out: dict[int, str] = {}
    if server:
        u = urlsplit(server)
        out[u.port or (443 if u.scheme == "https" else 80)] = "the shoal API server"
    if kubelet_port:
        out[kubelet_port] = "the shoal agent's log endpoint"
    return out


@dataclass
class AgentOptions:
    lease_duration_seconds: int = 40
    lease_renew_interval: float = 2.0
    node_status_interval: float = 10.0
    relist_interval: float = 0.5
    image_gc_interval: float = 300.0
    housekeeping_interval: float = 60.0
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    backoff_reset: float = 600.0
    kubelet_port: int | None = 10250        # 0 = any free port, None = no log endpoint
    kubelet_tls: ServingTLS | None = None   # the log endpoint's certificate (agent.join.serving_tls)
    sync_threads: int = 8
    timer_threads: int = 8
    max_pods: int = 110
    cpu: str | None = None                  # capacity overrides (hollow nodes)
    memory: str | None = None
    watch_timeout: float = 60.0
    runtime_version: str = "runc://1"
    # the service proxy (agent.serviceproxy), run when the Agent is given an nft runner
    service_table: str = "shoal-svc"        # agent.network.svcrules.svc_table_for(bridge)
    service_proxy_cleanup: bool = False     # remove the table on stop (default: the rules stay)
    version: str = VERSION
    kill_wait_inline: float = 2.0
    sandbox_retry: float = 5.0              # seconds between attempts at a pod network that failed
    probe_executor: Any = None              # default: RealProbeExecutor(runtime)
    clock: Clock | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # cluster DNS (agent.dns): the zone, the pods' nameservers, whether this agent serves them
    dns: DNSOptions = field(default_factory=DNSOptions)
    # the longest a deleted pod's SIGTERM waits for every node's Service rules to drop it
    # (agent.drain; bounded by its grace period too); 0: no wait
    drain_cap: float = DEFAULT_CAP


class Agent:
    def __init__(self, client: Client, *, node_name: str, address: str, data_dir: str | os.PathLike,
                 images: ImageStore, runtime: Runtime, network: Network, options: AgentOptions | None = None,
                 scheduler: Scheduler | None = None, service_proxy_runner: Runner | None = None,
                 service_proxy_conntrack: ConntrackTable | None = None):
        self.client = client
        self.node_name = node_name
        self.address = address
        self.data_dir = Path(data_dir)
        self.images, self.runtime, self.network = images, runtime, network
        self.opts = options or AgentOptions()
        self.clock: Clock = self.opts.clock or RealClock()
        self._given_scheduler = scheduler
        self._proxy_runner = service_proxy_runner      # None: no service proxy on this node
        self._proxy_conntrack = service_proxy_conntrack  # the proxy's conntrack clean-up (None: none)
        self.service_proxy: ServiceProxy | None = None
        self.drain: DrainGate | None = None
        self.publisher: AppliedPublisher | None = None
        self._own_scheduler: ThreadScheduler | None = None     # made by start() when none was given
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._timers: list = []
        self._informers: list[Informer] = []
        self._shared: dict[str, Informer] = {}       # shared_informer()
        self.logserver: LogServer | None = None
        self.started = False

    # ------------------------------------------------------------------------ lifecycle
    def start(self) -> "Agent":
        o, node = self.opts, self.node_name
        private_dir(self.data_dir, tighten=False)   # 0700: pod dirs, logs and volumes are root's (agent/hostfiles.py)
        private_dir(self.data_dir / "pods")
        sched = self._given_scheduler
        if sched is None:
            sched = self._own_scheduler = ThreadScheduler(clock=self.clock, workers=o.timer_threads,
                                                          name=f"shoal-{self.node_name}")
        self.scheduler: Scheduler = sched
        # kubelet-style: the node as source host, eventTime, no spam filter, a short hold (quiet 0.1 s)
        self.events = EventRecorder(self.client, "shoal-agent", host=self.node_name, event_time=True, clock=self.clock,
                                    quiet=0.1, burst=None, aggregate_window=600.0).start()
        self.tracker = RestartTracker(BackoffPolicy(o.backoff_initial, o.backoff_max, o.backoff_reset))
        # the worker map; its workers are made with self.ctx, built below before any pod arrives
        self.pods = PodWorkers(node_name=node, make_worker=lambda uid: PodWorker(uid, self.ctx), runtime=self.runtime,
                               network=self.network, data_dir=self.data_dir, clock=self.clock,
                               threads=o.sync_threads,
                               on_synced=self.events.touch)   # busy: the events wait (machinery/control/events.py)
        self.dispatcher: PodDispatcher = self.pods.dispatcher
        # hostPorts no pod may take here: the ports of shoal's own components (issue 17)
        self.reserved_host_ports = reserved_host_ports(getattr(self.client, "server", ""), o.kubelet_port)
        # the node's cluster DNS, served on its bridge address once the pod CIDR is known
        self.dns: ClusterDNS | None = None
        if o.dns.enabled and o.dns.serve and not o.dns.nameservers:
            self.dns = ClusterDNS(o.dns)
            # a hostPort 53 would DNAT the pods' queries to the bridge address away from it
            self.reserved_host_ports[o.dns.port] = "the shoal agent's cluster DNS"
        self.nodenet = NodeNetworkSync(self.client, node_name=node, address=self.address, network=self.network,
                                   sandboxed_pods=self.pods.sandboxed, on_ready=self._network_ready,
                                   reserved_ports=self.reserved_host_ports)
        # pod networks made beside their first container's create (one per sync thread at most)
        self._sandbox_pool = ThreadPoolExecutor(max_workers=o.sync_threads, thread_name_prefix=f"shoal-net-{node}")
        self.probes = ProbeManager(executor=o.probe_executor or RealProbeExecutor(self.runtime),
                                   scheduler=self.scheduler, clock=self.clock, on_change=self.dispatcher.wake,
                                   on_event=self.events.event)
        self.ctx = WorkerContext(node_name=node, host_ip=self.address, data_dir=self.data_dir,
                                 images=self.images, runtime=self.runtime, network=self.network, probes=self.probes,
                                 tracker=self.tracker, api=ClientPodApi(self.client), events=self.events,
                                 clock=self.clock, network_ready=lambda: self.nodenet.ready,
                                 on_sandbox_change=self.nodenet.sync_host_ports, kill_wait_inline=o.kill_wait_inline,
                                 sandbox_retry=o.sandbox_retry, background=self._sandbox_pool.submit,
                                 reserved_host_ports=self.reserved_host_ports,
                                 cluster_dns=self.cluster_nameservers, cluster_domain=o.dns.domain)
        if o.kubelet_port is not None and o.kubelet_tls is None:
            log.warning("node %s: no serving certificate (kubelet_tls): no log endpoint, so its pods' logs "
                        "cannot be read", node)
        elif o.kubelet_port is not None and o.kubelet_tls is not None:
            logs = PodLogs(node_name=node, data_dir=self.data_dir, runtime=self.runtime, find=self.pods.find,
                           stopped=self._stop.is_set)
            self.logserver = LogServer(host=o.kubelet_tls.listen_host(self.address), port=o.kubelet_port,
                                       tls=o.kubelet_tls, resolve=logs.resolve).start()
            self.reserved_host_ports[self.logserver.port] = "the shoal agent's log endpoint"   # 0: known now
        self.nodenet.prepare()
        self.registration = NodeRegistration(
            self.client, node_name=node, address=self.address, clock=self.clock,
            capacity=host_capacity(cpu=o.cpu, memory=o.memory, max_pods=o.max_pods), labels=o.labels,
            version=o.version, runtime_version=o.runtime_version, lease_duration_seconds=o.lease_duration_seconds,
            vtep_mac=lambda: self.nodenet.vtep_mac,
            kubelet_port=lambda: self.logserver.port if self.logserver else 0,
            on_node=self.nodenet.on_own_node)
        self.registration.register()
        self.registration.renew_lease()
        self.events.event({"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name, "uid": self.node_name}},
                          "Normal", "Starting", f"Started shoal agent {o.version} on {self.address}")
        # retries after a broken watch: 0.2 s doubling to 5 s, as the agent always had
        pods = Informer(self.client, "pods", field_selector=f"spec.nodeName={node}", watch_timeout=o.watch_timeout,
                        retry_base=0.1, name=f"shoal-pods-{node}")
        self.pods.attach(pods)
        nodes = Informer(self.client, "nodes", watch_timeout=o.watch_timeout, retry_base=0.1,
                         name=f"shoal-nodes-{node}")
        self.nodenet.attach(nodes)
        if self.dns is not None:
            self.dns.attach(self.shared_informer("services"), self.shared_informer("endpointslices"))
        if self._proxy_runner is not None:
            self.service_proxy = ServiceProxy(node_name=node, runner=self._proxy_runner, table=o.service_table,
                                              reserved_ports=self.reserved_host_ports, clock=self.clock,
                                              cleanup_on_stop=o.service_proxy_cleanup,
                                              conntrack=self._proxy_conntrack)
            self.service_proxy.attach(services=self.shared_informer("services"),
                                      endpointslices=self.shared_informer("endpointslices"), nodes=nodes)
        # draining before SIGTERM (agent.drain): this node's proxy position on its Node, and
        # the gate its pod workers ask before stopping a deleted pod
        self.publisher = AppliedPublisher(self.client, node_name=node, nodes=nodes, clock=self.clock)
        proxy = self.service_proxy
        if o.drain_cap > 0:
            self.drain = DrainGate(node_name=node, services=self.shared_informer("services"),
                                   slices=self.shared_informer("endpointslices"), nodes=nodes, clock=self.clock,
                                   wake=self.dispatcher.wake, cap=o.drain_cap,
                                   own_applied=(lambda: proxy.applied_revision) if proxy is not None else None)
            self.ctx.drain = self.drain
        if proxy is not None:
            proxy.on_applied.append(self.publisher.applied)
            gate = self.drain
            if gate is not None:
                proxy.on_applied.append(lambda _rev: gate.wake_waiting())
        else:
            self.publisher.absent()
        for inf in (pods, nodes, *self._shared.values()):
            inf.start()
            self._informers.append(inf)
        if self.service_proxy is not None:
            self.service_proxy.start()
        self.publisher.start()
        now = self.clock.now()
        self._every(o.lease_renew_interval, self.registration.renew_lease, now)
        self._every(o.node_status_interval, self.registration.post_status, now)
        self._every(o.relist_interval, self.pods.relist, now)
        if isinstance(self.runtime, ExitWatcher):
            # Event-driven relist on top of the periodic one: a crash is seen in milliseconds.
            t = threading.Thread(target=self.pods.watch_exits, args=(self._stop,), name=f"exits-{node}", daemon=True)
            t.start()
            self._threads.append(t)
        self._every(o.image_gc_interval, self._image_gc, now)
        self._every(o.housekeeping_interval, self.pods.housekeeping, now)
        if self.dns is not None:
            self._every(o.node_status_interval, self._serve_dns, now)     # again after a failed bind
        self.started = True
        return self

    def stop(self) -> None:
        """Stop watching and syncing; containers keep running."""
        self._stop.set()
        for t in self._timers:
            t.cancel()
        for inf in self._informers:
            inf.stop(timeout=0)
        if hasattr(self, "pods"):
            self.pods.stop()
        if hasattr(self, "_sandbox_pool"):
            self._sandbox_pool.shutdown(wait=False)
        if self.logserver:
            self.logserver.stop()
        if self.service_proxy is not None:
            self.service_proxy.stop()
        if self.publisher is not None:
            self.publisher.stop(timeout=0.5)
        dns_server: ClusterDNS | None = getattr(self, "dns", None)     # None too when start() never ran
        if dns_server is not None:
            dns_server.stop()
        if hasattr(self, "events"):
            self.events.stop(timeout=2)
        if self._own_scheduler is not None:
            self._own_scheduler.stop(wait=False)
        for inf in self._informers:
            inf.stop(timeout=0.5)    # watches end at their server timeout; they are daemon threads
        for t in self._threads:
            t.join(timeout=0.5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _every(self, interval: float, fn: Callable[[], None], now: float) -> None:
        holder: list = []

        def run():
            if self._stop.is_set():
                return
            try:
                fn()
            except Exception as e:
                log.warning("node %s: %s failed: %s", self.node_name, getattr(fn, "__name__", fn), e)
            if not self._stop.is_set():
                t = self.scheduler.call_at(self.clock.now() + interval, run)
                holder[0] = t
                self._timers.append(t)
                if len(self._timers) > 64:
                    self._timers = [x for x in self._timers if not x.cancelled][-16:]

        t = self.scheduler.call_at(now + interval, run)
        holder.append(t)
        self._timers.append(t)

    def shared_informer(self, kind: str) -> Informer:
        """The agent's one informer on all objects of `kind` (services, endpointslices), for
        every part that follows them (the cluster DNS, the service proxy): one list and one
        watch per kind whatever the number of readers. Ask before `start()` runs them."""
        inf = self._shared.get(kind)
        if inf is None:
            inf = self._shared[kind] = Informer(self.client, kind, watch_timeout=self.opts.watch_timeout,
                                                retry_base=0.1, name=f"shoal-{kind}-{self.node_name}")
        return inf

    def cluster_nameservers(self) -> tuple[str, ...]:
        """The nameservers of this node's ClusterFirst pods: `--cluster-dns` IPs, else the
        node's bridge address (its own DNS server); () without cluster DNS or pod CIDR."""
        d = self.opts.dns
        if not d.enabled:
            return ()
        if d.nameservers:
            return d.nameservers
        cidr = self.nodenet.pod_cidr if hasattr(self, "nodenet") else None
        return (bridge_address(cidr),) if cidr else ()

    def _network_ready(self) -> None:
        self._serve_dns()
        self.pods.wake_all()

    def _serve_dns(self) -> None:
        """Serve the cluster DNS on the bridge address, to the pod CIDR (idempotent)."""
        cidr = self.nodenet.pod_cidr
        if self.dns is None or not cidr:
            return
        try:
            self.dns.serve(bridge_address(cidr), clients=cidr)
        except OSError as e:
            log.error("node %s: cluster DNS cannot listen on %s port %d: %s; its pods cannot resolve names "
                      "until it can (retried every %.0f s)", self.node_name, bridge_address(cidr), self.opts.dns.port,
                      e, self.opts.node_status_interval)

    def _image_gc(self) -> None:
        collect_images(self.runtime, self.images, node_name=self.node_name)

    # ------------------------------------------------------------------------ introspection (tests, CLI)
    def node_status(self) -> dict:
        return self.registration.node_status()

    def worker(self, uid: str) -> PodWorker | None:
        return self.pods.worker(uid) if hasattr(self, "pods") else None

    def pod_uids(self) -> list[str]:
        return self.pods.uids() if hasattr(self, "pods") else []

    @property
    def network_ready(self) -> bool:
        return hasattr(self, "nodenet") and self.nodenet.ready
