"""The node agent: one per host, the kubelet of shoal.

`Agent(client, node_name=..., address=..., data_dir=..., images=..., runtime=...,
network=..., options=AgentOptions(...))`, then `start()` / `stop()`.

What it does, in start order:
1. Serves container logs (`agent.logserver`) on `address:kubelet_port` and
   registers its Node: capacity from the host (cpu count, /proc/meminfo, max
   pods), addresses InternalIP + Hostname, the usual `kubernetes.io/*` labels,
   nodeInfo, `daemonEndpoints.kubeletEndpoint.Port`, the Ready condition, and
   the overlay annotations `shoal.io/underlay-ip` / `shoal.io/vtep-mac`.
2. Renews `kube-node-lease/<node>` every `lease_renew_interval` and posts node
   status every `node_status_interval` (timers on the scheduler).
3. Watches its Node (and all Nodes): once `spec.podCIDR` is assigned it calls
   `network.ensure_node` and lets pod sandboxes be built; whenever the set of
   Ready peers (with CIDR, underlay IP and VTEP MAC) changes it calls
   `network.sync_peers` with the full set.
4. Lists then watches the pods with `spec.nodeName=<node>` (relist on 410 Gone
   or on any broken connection) and hands each pod to its `PodWorker`
   (`agent.worker`), one serialized sync per pod uid.
5. Relists the runtime every `relist_interval` (kubelet's PLEG): a container
   whose state changed wakes its pod's worker. Containers labelled with a pod
   uid the API server no longer binds here — after the first successful pod
   list, never before — get an orphan worker that stops and removes them; so
   does network state or a pod directory without a pod. This is both the
   adoption after an agent restart (containers of live pods are observed, not
   restarted: their attempt and restart count are in their labels) and the
   clean-up of stale copies after a partition heals.
6. Collects unused images every `image_gc_interval`.

`stop()` leaves every container running: they outlive the agent.
"""
from __future__ import annotations

import logging
import os
import platform
import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from shoal.machinery.api import errors

from shoal.machinery.control.clock import Clock, RealClock
from shoal.machinery.control.timers import ThreadScheduler
from shoal.agent.events import EventRecorder
from shoal.agent.interfaces import HostPort, Peer
from shoal.agent.logserver import LogNotFound, LogRequestInvalid, LogServer
from shoal.agent.plan import LABEL_IMAGE_ID, LABEL_POD_UID
from shoal.agent.probes import ProbeManager, RealProbeExecutor
from shoal.agent.restarts import BackoffPolicy, RestartTracker
from shoal.agent.status import rfc3339, rfc3339_micro
from shoal.agent.worker import PodDispatcher, PodWorker, WorkerContext

log = logging.getLogger(__name__)

ANN_VTEP_MAC = "shoal.io/vtep-mac"
ANN_UNDERLAY_IP = "shoal.io/underlay-ip"
LEASE_NAMESPACE = "kube-node-lease"
VERSION = "0.1.0"


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
    kubelet_token: str | None = None        # the API server's token, accepted on the log endpoint
    sync_threads: int = 8
    timer_threads: int = 8
    max_pods: int = 110
    cpu: str | None = None                  # capacity overrides (hollow nodes)
    memory: str | None = None
    watch_timeout: float = 60.0
    runtime_version: str = "runc://1"
    version: str = VERSION
    kill_wait_inline: float = 2.0
    sandbox_retry: float = 5.0              # seconds between attempts at a pod network that failed
    probe_executor: Any = None              # default: RealProbeExecutor(runtime)
    clock: Clock | None = None
    labels: dict[str, str] = field(default_factory=dict)


def host_memory_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class _ClientPodApi:
    def __init__(self, client):
        self.client = client

    def write_status(self, pod: dict, status: dict) -> dict | None:
        md = pod["metadata"]
        body = dict(pod, status=status)
        for _ in range(5):
            try:
                return self.client.update_status("pods", body)
            except errors.Conflict:
                try:
                    fresh = self.client.get("pods", md["name"], md.get("namespace"))
                except errors.NotFound:
                    return None
                if fresh["metadata"].get("uid") != md.get("uid"):
                    return None
                body = dict(fresh, status=status)
            except errors.NotFound:
                return None
        raise errors.Conflict(f"status of pod {md.get('namespace')}/{md['name']} kept conflicting after 5 attempts")

    def confirm_deletion(self, pod: dict) -> None:
        md = pod["metadata"]
        try:
            self.client.delete("pods", md["name"], md.get("namespace"), grace_period_seconds=0,
                               preconditions_uid=md.get("uid"))
        except (errors.NotFound, errors.Conflict):
            pass      # already gone, or the name now belongs to a newer pod


class Agent:
    def __init__(self, client, *, node_name: str, address: str, data_dir: str | os.PathLike, images, runtime,
                 network, options: AgentOptions | None = None, scheduler=None):
        self.client = client
        self.node_name = node_name
        self.address = address
        self.data_dir = Path(data_dir)
        self.images, self.runtime, self.network = images, runtime, network
        self.opts = options or AgentOptions()
        self.clock: Clock = self.opts.clock or RealClock()
        self._own_scheduler = scheduler is None
        self.scheduler = scheduler
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._relist_lock = threading.Lock()
        self._workers: dict[str, PodWorker] = {}
        self._finished: set[str] = set()      # uids torn down and confirmed: late watch echoes must not revive them
        self._nodes: dict[str, dict] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self._fingerprints: dict[str, frozenset] = {}
        self._pods_synced = threading.Event()
        self._pod_cidr: str | None = None
        self._network_ready = threading.Event()
        self._peers: frozenset | None = None
        self._lease: dict | None = None
        self._ready_since: str | None = None
        self._threads: list[threading.Thread] = []
        self._timers: list = []
        self.vtep_mac: str | None = None
        self.logserver: LogServer | None = None
        self.started = False

    # ------------------------------------------------------------------------ lifecycle
    def start(self) -> "Agent":
        o = self.opts
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "pods").mkdir(exist_ok=True)
        if self.scheduler is None:
            self.scheduler = ThreadScheduler(clock=self.clock, workers=o.timer_threads, name=f"shoal-{self.node_name}")
        self.events = EventRecorder(self.client, node_name=self.node_name, clock=self.clock)
        self.tracker = RestartTracker(BackoffPolicy(o.backoff_initial, o.backoff_max, o.backoff_reset))
        self.dispatcher = PodDispatcher(self._sync_pod, scheduler=self.scheduler, threads=o.sync_threads,
                                        name=f"shoal-pod-{self.node_name}")
        # pod networks made beside their first container's create (one per sync thread at most)
        self._sandbox_pool = ThreadPoolExecutor(max_workers=o.sync_threads, thread_name_prefix=f"shoal-net-{self.node_name}")
        self.probes = ProbeManager(executor=o.probe_executor or RealProbeExecutor(self.runtime),
                                   scheduler=self.scheduler, clock=self.clock, on_change=self.dispatcher.wake,
                                   on_event=self.events.emit)
        self.ctx = WorkerContext(node_name=self.node_name, host_ip=self.address, data_dir=self.data_dir,
                                 images=self.images, runtime=self.runtime, network=self.network, probes=self.probes,
                                 tracker=self.tracker, api=_ClientPodApi(self.client), events=self.events,
                                 clock=self.clock, network_ready=self._network_ready.is_set,
                                 on_sandbox_change=self._sync_host_ports, kill_wait_inline=o.kill_wait_inline,
                                 sandbox_retry=o.sandbox_retry, background=self._sandbox_pool.submit)
        if o.kubelet_port is not None:
            self.logserver = LogServer(host=self.address, port=o.kubelet_port, token=o.kubelet_token,
                                       resolve=self._resolve_log).start()
        try:
            self.vtep_mac = self.network.ensure_overlay(self.address)
        except Exception as e:
            log.warning("node %s: overlay device not ready (%s); pods on other nodes will be unreachable", self.node_name, e)
        self._register_node()
        self._renew_lease()
        self.events.emit({"kind": "Node", "metadata": {"name": self.node_name, "uid": self.node_name}},
                         "Normal", "Starting", f"Started shoal agent {o.version} on {self.address}")
        for target, name in ((self._pod_loop, "pods"), (self._node_loop, "nodes")):
            t = threading.Thread(target=target, name=f"shoal-{name}-{self.node_name}", daemon=True)
            t.start()
            self._threads.append(t)
        now = self.clock.now()
        self._every(o.lease_renew_interval, self._renew_lease, now)
        self._every(o.node_status_interval, self._post_node_status, now)
        self._every(o.relist_interval, self._relist, now)
        if callable(getattr(self.runtime, "wait_exit", None)):
            # Event-driven relist on top of the periodic one: a crash is seen in milliseconds.
            t = threading.Thread(target=self._exit_loop, name=f"exits-{self.node_name}", daemon=True)
            t.start()
            self._threads.append(t)
        self._every(o.image_gc_interval, self._image_gc, now)
        self._every(o.housekeeping_interval, self._housekeeping, now)
        self.started = True
        return self

    def stop(self) -> None:
        """Stop watching and syncing; containers keep running."""
        self._stop.set()
        for t in self._timers:
            t.cancel()
        if hasattr(self, "dispatcher"):
            self.dispatcher.stop()
        if hasattr(self, "_sandbox_pool"):
            self._sandbox_pool.shutdown(wait=False)
        if self.logserver:
            self.logserver.stop()
        if hasattr(self, "events"):
            self.events.stop(timeout=2)
        if self._own_scheduler and self.scheduler is not None:
            self.scheduler.stop(wait=False)
        for t in self._threads:
            t.join(timeout=0.5)   # watches end at their server timeout; they are daemon threads

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

    # ------------------------------------------------------------------------ node
    def node_status(self) -> dict:
        o = self.opts
        cpu = o.cpu or str(os.cpu_count() or 1)
        mem = o.memory or f"{host_memory_kib()}Ki"
        cap = {"cpu": cpu, "memory": mem, "pods": str(o.max_pods)}
        now = rfc3339(self.clock.now())
        if self._ready_since is None:
            self._ready_since = now
        uname = platform.uname()
        st = {"capacity": cap, "allocatable": dict(cap),
              "addresses": [{"type": "InternalIP", "address": self.address},
                            {"type": "Hostname", "address": self.node_name}],
              "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                              "message": "shoal agent is posting ready status",
                              "lastHeartbeatTime": now, "lastTransitionTime": self._ready_since}],
              "nodeInfo": {"kubeletVersion": f"shoal-{o.version}", "containerRuntimeVersion": o.runtime_version,
                           "operatingSystem": "linux", "architecture": "amd64",
                           "kernelVersion": uname.release, "osImage": _os_image(),
                           "machineID": _read("/etc/machine-id"),
                           "bootID": _read("/proc/sys/kernel/random/boot_id")},
              "daemonEndpoints": {"kubeletEndpoint": {"Port": self.logserver.port if self.logserver else 0}}}
        return st

    def _node_meta(self) -> dict:
        labels = {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", **self.opts.labels}
        ann = {ANN_UNDERLAY_IP: self.address}
        if self.vtep_mac:
            ann[ANN_VTEP_MAC] = self.vtep_mac
        return {"labels": labels, "annotations": ann}

    def _register_node(self) -> None:
        meta = self._node_meta()
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name, **meta}, "spec": {},
                "status": self.node_status()}
        try:
            self.client.create("nodes", node)
            log.info("node %s registered", self.node_name)
        except errors.AlreadyExists:
            self.client.patch("nodes", self.node_name, {"metadata": meta})
        self._post_node_status()

    def _post_node_status(self) -> None:
        try:
            node = self.client.patch("nodes", self.node_name, {"status": self.node_status()}, subresource="status")
        except errors.NotFound:       # deleted by an admin: register again
            self._register_node()
            return
        self._on_own_node(node)

    def _renew_lease(self) -> None:
        now = self.clock.now()
        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": self.opts.lease_duration_seconds,
                "renewTime": rfc3339_micro(now)}
        for _ in range(3):
            try:
                if self._lease is None:
                    try:
                        self._lease = self.client.get("leases", self.node_name, LEASE_NAMESPACE)
                    except errors.NotFound:
                        self._lease = self.client.create("leases", {
                            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": {"name": self.node_name, "namespace": LEASE_NAMESPACE},
                            "spec": {**spec, "acquireTime": rfc3339_micro(now)}}, LEASE_NAMESPACE)
                        return
                body = dict(self._lease, spec={**(self._lease.get("spec") or {}), **spec})
                self._lease = self.client.update("leases", body)
                return
            except (errors.Conflict, errors.NotFound):
                self._lease = None

    # ------------------------------------------------------------------------ informers
    def _informer(self, kind: str, *, field_selector: str | None, on_list, on_event) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                lst = self.client.list(kind, all_namespaces=True, field_selector=field_selector)
                rv = lst["metadata"]["resourceVersion"]
                on_list(lst.get("items") or [])
                delay = 0.2
                while not self._stop.is_set():
                    for ev in self.client.watch(kind, all_namespaces=True, resource_version=rv,
                                                field_selector=field_selector, bookmarks=True,
                                                timeout_seconds=self.opts.watch_timeout):
                        if self._stop.is_set():
                            return
                        rv = ev["object"]["metadata"].get("resourceVersion") or rv
                        if ev["type"] != "BOOKMARK":
                            on_event(ev["type"], ev["object"])
            except errors.Gone:
                continue
            except Exception as e:
                if self._stop.is_set():
                    return
                log.warning("node %s: %s watch broke (%s); relisting in %.1fs", self.node_name, kind, e, delay)
                self._stop.wait(delay * (1 + random.random() / 2))
                delay = min(delay * 2, 5.0)

    def _pod_loop(self) -> None:
        self._informer("pods", field_selector=f"spec.nodeName={self.node_name}", on_list=self._on_pod_list,
                       on_event=self._on_pod_event)

    def _node_loop(self) -> None:
        self._informer("nodes", field_selector=None, on_list=self._on_node_list, on_event=self._on_node_event)

    def _on_pod_list(self, pods: list[dict]) -> None:
        first = not self._pods_synced.is_set()
        seen = set()
        for p in pods:
            seen.add(p["metadata"]["uid"])
            self._upsert_pod(p, wake=not first)
        with self._lock:
            gone = [uid for uid, w in self._workers.items() if uid not in seen and w.pod is not None]
        for uid in gone:
            self._pod_gone(uid)
        if first:
            # Adoption: a worker must know the containers its pod already has before its
            # first sync, or it plans attempt 0 again and replaces a live container (and
            # loses an exit that happened while the agent was down). So the runtime is
            # relisted — seeding every worker's container ids — before any worker runs.
            self._pods_synced.set()
            try:
                self._relist()
            except Exception:
                self._pods_synced.clear()    # the informer lists again; nothing was woken
                raise
            self._housekeeping()
            for uid in seen:
                self.dispatcher.wake(uid)

    def _on_pod_event(self, typ: str, pod: dict) -> None:
        if typ == "DELETED" or (pod.get("spec") or {}).get("nodeName") != self.node_name:
            self._pod_gone(pod["metadata"]["uid"])
        else:
            self._upsert_pod(pod)

    def _upsert_pod(self, pod: dict, *, wake: bool = True) -> None:
        md = pod["metadata"]
        uid = md["uid"]
        with self._lock:
            w = self._workers.get(uid)
            if w is None:
                if self._worker_finished(uid):
                    return
                w = self._workers[uid] = PodWorker(uid, self.ctx)
            echo = w.is_own_status_echo(pod)
            w.set_pod(pod)
            self._by_name[(md.get("namespace", "default"), md["name"])] = uid
        if wake and not echo:
            self.dispatcher.wake(uid)

    def _worker_finished(self, uid: str) -> bool:
        return uid in self._finished

    def _pod_gone(self, uid: str) -> None:
        with self._lock:
            w = self._workers.get(uid)
            if w is None:
                return
            w.set_pod(None)
        self.dispatcher.wake(uid)

    def _sync_pod(self, uid: str) -> float | None:
        with self._lock:
            w = self._workers.get(uid)
        if w is None:
            return None
        nxt = w.sync()
        self.events.touch()         # busy: the events wait (agent/events.py)
        if w.done:
            with self._lock:
                if self._workers.get(uid) is w:
                    del self._workers[uid]
                    p = w.last_pod
                    if p is not None:
                        key = (p["metadata"].get("namespace", "default"), p["metadata"]["name"])
                        if self._by_name.get(key) == uid:
                            del self._by_name[key]
                    self._finished.add(uid)
                    if len(self._finished) > 10000:
                        self._finished.clear()
            return None
        return nxt

    # ------------------------------------------------------------------------ nodes, CIDR, peers
    def _on_node_list(self, nodes: list[dict]) -> None:
        self._nodes = {n["metadata"]["name"]: n for n in nodes}
        own = self._nodes.get(self.node_name)
        if own:
            self._on_own_node(own)
        self._sync_peers()

    def _on_node_event(self, typ: str, node: dict) -> None:
        nodes = self._nodes
        name = node["metadata"]["name"]
        if typ == "DELETED":
            nodes.pop(name, None)
        else:
            nodes[name] = node
        self._nodes = nodes
        if name == self.node_name and typ != "DELETED":
            self._on_own_node(node)
        self._sync_peers()

    def _on_own_node(self, node: dict) -> None:
        cidr = (node.get("spec") or {}).get("podCIDR")
        if not cidr or cidr == self._pod_cidr:
            return
        try:
            self.network.ensure_node(cidr)
        except Exception as e:
            log.error("node %s: building the pod network for %s failed: %s", self.node_name, cidr, e)
            return
        self._pod_cidr = cidr
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
        first = not self._network_ready.is_set()
        self._network_ready.set()
        log.info("node %s: pod CIDR %s", self.node_name, cidr)
        if first:
            with self._lock:
                uids = list(self._workers)
            for uid in uids:
                self.dispatcher.wake(uid)

    def _sync_peers(self) -> None:
        peers = set()
        for name, n in self._nodes.items():
            if name == self.node_name:
                continue
            ann = (n.get("metadata") or {}).get("annotations") or {}
            cidr = (n.get("spec") or {}).get("podCIDR")
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (n.get("status") or {}).get("conditions") or [])
            if ready and cidr and ann.get(ANN_VTEP_MAC) and ann.get(ANN_UNDERLAY_IP):
                peers.add(Peer(node=name, underlay_ip=ann[ANN_UNDERLAY_IP], vtep_mac=ann[ANN_VTEP_MAC], pod_cidr=cidr))
        fz = frozenset(peers)
        if fz == self._peers:
            return
        try:
            self.network.sync_peers(sorted(peers, key=lambda p: p.node))
            self._peers = fz
        except Exception as e:
            log.warning("node %s: syncing %d overlay peers failed: %s", self.node_name, len(peers), e)

    def _sync_host_ports(self) -> None:
        ports = []
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            if w.pod is None or w.mem.pod_net is None:
                continue
            for c in (w.pod.get("spec") or {}).get("containers") or []:
                for p in c.get("ports") or []:
                    if p.get("hostPort"):
                        ports.append(HostPort(w.uid, int(p["hostPort"]), int(p["containerPort"]),
                                              p.get("protocol") or "TCP", p.get("hostIP") or ""))
        try:
            self.network.sync_host_ports(ports)
        except Exception as e:
            log.warning("node %s: publishing %d host ports failed: %s", self.node_name, len(ports), e)

    # ------------------------------------------------------------------------ runtime relist (PLEG)
    def _exit_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.runtime.wait_exit(1.0) and not self._stop.is_set():
                    self._relist()
            except Exception as e:  # noqa: BLE001 — the periodic relist still covers exits
                log.warning("node %s: exit-triggered relist failed: %s", self.node_name, e)
                self._stop.wait(1.0)

    def _relist(self) -> None:
        # Called by the periodic timer and by the exit watcher: one at a time.
        with self._relist_lock:
            self._relist_locked()

    def _relist_locked(self) -> None:
        if not self._pods_synced.is_set():
            return       # before the first pod list we cannot tell live pods from orphans
        by_uid: dict[str, list] = defaultdict(list)
        for s in self.runtime.list():
            uid = (s.labels or {}).get(LABEL_POD_UID)
            if uid:
                by_uid[uid].append(s)
        wake = []
        with self._lock:
            for uid, states in by_uid.items():
                fp = frozenset((s.id, s.status, s.exit_code) for s in states)
                w = self._workers.get(uid)
                if self._fingerprints.get(uid) == fp and w is not None:
                    continue
                self._fingerprints[uid] = fp
                if w is None:
                    w = self._workers[uid] = PodWorker(uid, self.ctx)   # orphan: pod is not bound here
                    self._finished.discard(uid)
                w.add_container_ids(s.id for s in states)
                wake.append(uid)
            for uid in [u for u in self._fingerprints if u not in by_uid]:
                del self._fingerprints[uid]
                if uid in self._workers:
                    wake.append(uid)
        for uid in wake:
            self.dispatcher.wake(uid)

    def _housekeeping(self) -> None:
        """Network state and pod directories without a pod: give them an orphan worker to tear down."""
        if not self._pods_synced.is_set():
            return
        uids = set()
        try:
            uids |= set(self.network.pods())
        except Exception as e:
            log.warning("node %s: listing pod networks failed: %s", self.node_name, e)
        pods_dir = self.data_dir / "pods"
        if pods_dir.is_dir():
            uids |= {p.name for p in pods_dir.iterdir() if p.is_dir()}
        wake = []
        with self._lock:
            for uid in uids:
                if uid not in self._workers:
                    self._workers[uid] = PodWorker(uid, self.ctx)
                    wake.append(uid)
        for uid in wake:
            self.dispatcher.wake(uid)

    def _image_gc(self) -> None:
        in_use = set()
        for s in self.runtime.list():
            iid = (s.labels or {}).get(LABEL_IMAGE_ID, "")
            if "@" in iid:
                in_use.add(iid.split("@", 1)[1])
        removed = self.images.gc(in_use)
        if removed:
            log.info("node %s: image GC removed %d images/layers", self.node_name, len(removed))

    # ------------------------------------------------------------------------ logs
    def _resolve_log(self, ns: str, pod: str, container: str, previous: bool):
        with self._lock:
            uid = self._by_name.get((ns, pod))
            w = self._workers.get(uid) if uid else None
        if w is None:
            raise LogNotFound(f'pod "{pod}" in namespace "{ns}" is not running on node {self.node_name}')
        p = w.pod or w.last_pod
        names = [c["name"] for c in (p.get("spec") or {}).get("containers") or []] if p else []
        if container not in names:
            raise LogNotFound(f'container "{container}" is not valid for pod "{pod}"')
        d = self.data_dir / "pods" / uid / "logs" / container
        attempts = sorted(int(f.stem) for f in d.glob("*.log") if f.stem.isdigit()) if d.is_dir() else []
        if not attempts:
            raise LogNotFound(f'container "{container}" in pod "{pod}" has no log yet (waiting to start)')
        if previous:
            if len(attempts) < 2:
                raise LogRequestInvalid(f'previous terminated container "{container}" in pod "{pod}" not found')
            return d / f"{attempts[-2]}.log", lambda: False
        current = attempts[-1]

        def writing() -> bool:
            if self._stop.is_set() or (d / f"{current + 1}.log").exists():
                return False
            from shoal.agent.worker import container_id_for
            st = self.runtime.state(container_id_for(uid, container, current))
            return st is not None and st.status == "running"
        return d / f"{current}.log", writing

    # ------------------------------------------------------------------------ introspection (tests, CLI)
    def worker(self, uid: str) -> PodWorker | None:
        with self._lock:
            return self._workers.get(uid)

    def pod_uids(self) -> list[str]:
        with self._lock:
            return list(self._workers)

    @property
    def network_ready(self) -> bool:
        return self._network_ready.is_set()


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

