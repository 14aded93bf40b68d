"""Hollow agents for controller tests and benchmarks: nodes without containers.

`HollowCluster(client, nodes=["node-a", ...])` plays the agent of every listed node:
- registers each Node with capacity/allocatable and a Ready=True condition;
- renews each node's Lease in `kube-node-lease` every `lease_period` seconds;
- marks pods bound to its nodes Running and Ready (status via /status, like an agent),
  except pods annotated `hollow.shoal.io/never-ready: "true"`, which run but stay NotReady;
- confirms graceful deletions of its pods with gracePeriodSeconds=0, as the agent does;
- `stop_heartbeat(node)` freezes a node (no lease renewals, no pod handling) — the node
  looks dead to the control plane; `resume_heartbeat(node)` brings it back Ready.
Use it as a context manager, or call `start()` / `stop()`; `stop()` joins every thread.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from shoal.machinery.api import errors
from shoal.testkit import apiserver as testing
from shoal.machinery.client.rest import Client
from shoal.machinery.api.objects import key_of, name_of, namespace_of, node_name_of, thaw
from shoal.machinery.api.times import format_micro_time, format_time
from shoal.machinery.control import Informer, WorkQueue

log = logging.getLogger("hollow")

NEVER_READY = "hollow.shoal.io/never-ready"
LEASE_NS = "kube-node-lease"


class HollowCluster:
    def __init__(self, client: Client, *, nodes: list[str] | int = 3, cpu: str = "4", memory: str = "8Gi",
                 max_pods: int = 110, lease_period: float = 1.0, workers: int = 4):
        self.client = client
        self.nodes = [f"hollow-{i}" for i in range(nodes)] if isinstance(nodes, int) else list(nodes)
        self.cpu, self.memory, self.max_pods = cpu, memory, max_pods
        self.lease_period = lease_period
        self.workers = workers
        self.stopped: set[str] = set()
        self._leases: dict[str, dict] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.pods = Informer(client, "pods", watch_timeout=5.0)
        # Like a real agent, a hollow node that finds itself marked not Ready (e.g. the control
        # plane saw its lease late) posts Ready again while it is alive.
        self.node_inf = Informer(client, "nodes", watch_timeout=5.0)
        self._repost: set[str] = set()
        self._repost_lock = threading.Lock()
        self.queue = WorkQueue("hollow")
        self.marked_ready = 0

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "HollowCluster":
        # Heartbeats start before registration finishes: registering 100 nodes against a busy
        # server takes longer than a node's grace period.
        self._registered: list[str] = []
        self._spawn(self._lease_loop, "hollow-leases")
        with ThreadPoolExecutor(8) as pool:
            for n in pool.map(lambda n: (self.register(n), n)[1], self.nodes):
                self._registered.append(n)
        mine = set(self.nodes)

        def node_seen(*args):
            node = args[-1]
            n = name_of(node)
            ready = next((c.get("status") for c in (node.get("status") or {}).get("conditions") or []
                          if c.get("type") == "Ready"), None)
            if n in mine and n not in self.stopped and ready != "True":
                with self._repost_lock:
                    self._repost.add(n)
        self.node_inf.add_handler(on_add=node_seen, on_update=node_seen)
        self.node_inf.start()

        def enqueue(*args):
            pod = args[-1]
            if node_name_of(pod) in mine:
                self.queue.add(key_of(pod))
        self.pods.add_handler(on_add=enqueue, on_update=enqueue)
        self.pods.start()
        self.pods.wait_for_sync(30)
        for i in range(self.workers):
            self._spawn(self._pod_worker, f"hollow-pods-{i}")
        return self

    def _spawn(self, fn, name: str) -> None:
        t = threading.Thread(target=fn, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self.queue.shut_down()
        self.pods.stop(timeout=1.0)
        self.node_inf.stop(timeout=1.0)
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> "HollowCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- nodes and leases -------------------------------------------------------------------------
    def _node_status(self, *, ready: bool = True) -> dict:
        now = format_time(time.time())
        alloc = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.max_pods)}
        return {"capacity": dict(alloc), "allocatable": dict(alloc),
                "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady",
                                "message": "hollow agent is posting ready status", "lastHeartbeatTime": now,
                                "lastTransitionTime": now}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "nodeInfo": {"kubeletVersion": "hollow", "operatingSystem": "linux", "architecture": "amd64"}}

    def register(self, name: str) -> None:
        try:
            node = self.client.create("nodes", {"apiVersion": "v1", "kind": "Node",
                                                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                                                "spec": {}})
        except errors.AlreadyExists:
            node = self.client.get("nodes", name)
        self.post_ready(name, node)
        self.renew(name)

    def post_ready(self, name: str, node: dict | None = None) -> None:
        for _ in range(10):
            node = node or self.client.get("nodes", name)
            new = thaw(node)
            new["status"] = self._node_status()
            try:
                self.client.update_status("nodes", new)
                return
            except errors.Conflict:
                node = None

    def renew(self, name: str) -> None:
        now = format_micro_time(time.time())
        lease = self._leases.get(name)
        try:
            if lease is None:
                try:
                    lease = self.client.create("leases", {
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": name, "namespace": LEASE_NS},
                        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}},
                        namespace=LEASE_NS)
                except errors.AlreadyExists:
                    lease = self.client.get("leases", name, LEASE_NS)
            new = thaw(lease)
            new["spec"]["renewTime"] = now
            self._leases[name] = self.client.update("leases", new)
        except errors.Conflict:
            self._leases.pop(name, None)

    def _lease_loop(self) -> None:
        def one(n: str) -> None:
            if n in self.stopped or self._stop.is_set():
                return
            try:
                self.renew(n)
            except Exception as e:
                log.warning("hollow %s: lease renewal failed: %s", n, e)
        with ThreadPoolExecutor(8, thread_name_prefix="hollow-lease") as pool:
            while not self._stop.wait(self.lease_period):
                list(pool.map(one, list(self._registered)))
                with self._repost_lock:
                    repost, self._repost = self._repost - self.stopped, set()
                for n in repost:
                    try:
                        self.post_ready(n)
                    except Exception as e:
                        log.warning("hollow %s: posting Ready failed: %s", n, e)

    def stop_heartbeat(self, name: str) -> None:
        self.stopped.add(name)

    def resume_heartbeat(self, name: str) -> None:
        self.stopped.discard(name)
        self.renew(name)
        self.post_ready(name)
        for p in self.pods.by_index("node", name) if self.pods.has_index("node") else self.pods.list():
            if node_name_of(p) == name:
                self.queue.add(key_of(p))

    # -- pods -------------------------------------------------------------------------------------
    def _pod_worker(self) -> None:
        while not self._stop.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            try:
                self._sync_pod(key)
            except (errors.Conflict, errors.NotFound):
                self.queue.add_after(key, 0.05)
            except Exception as e:
                if not self._stop.is_set():
                    log.warning("hollow: pod %s: %s", key, e)
                    self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    def _sync_pod(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or node_name_of(pod) in self.stopped or node_name_of(pod) not in self.nodes:
            return
        md = pod["metadata"]
        if md.get("deletionTimestamp"):
            self.client.delete("pods", name_of(pod), namespace_of(pod), grace_period_seconds=0,
                               preconditions_uid=md.get("uid"))
            return
        ready = (md.get("annotations") or {}).get(NEVER_READY) != "true"
        status = pod.get("status") or {}
        cur_ready = next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if status.get("phase") == "Running" and cur_ready == ("True" if ready else "False"):
            return
        now = format_time(time.time())
        new = thaw(pod)
        containers = (pod.get("spec") or {}).get("containers") or []
        new["status"] = {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "10.244.0.1", "startTime": now,
            "conditions": [{"type": t, "status": "True" if (t in ("PodScheduled", "Initialized") or ready) else "False",
                            "lastTransitionTime": now}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": ready,
                                   "restartCount": 0, "started": True,
                                   "state": {"running": {"startedAt": now}}} for c in containers],
        }
        self.pods.observe(self.client.update_status("pods", new))
        self.marked_ready += 1


# -- fixtures shared by the controller integration tests and bench/controller.py ----------------
def wait_for(cond, timeout: float, *, interval: float = 0.1, what: str = "condition"):
    """Poll `cond()` until it returns a truthy value (returned) or `timeout` passes (AssertionError
    with the last value seen). Only generous timeouts: they bound a hang, they don't measure speed."""
    return testing.wait_for(cond, timeout=timeout, interval=interval, what=what)


def deployment(name: str = "web", *, replicas: int = 6, image: str = "registry.local/httpd:1", surge=1,
               unavailable=1, strategy: str = "RollingUpdate", never_ready: bool = False,
               progress_deadline: int | None = None, min_ready: int | None = None, namespace: str = "default") -> dict:
    ann = {NEVER_READY: "true"} if never_ready else {}
    spec: dict = {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                  "strategy": {"type": strategy},
                  "template": {"metadata": {"labels": {"app": name}, **({"annotations": ann} if ann else {})},
                               "spec": {"containers": [{"name": "main", "image": image,
                                                        "resources": {"requests": {"cpu": "10m",
                                                                                   "memory": "16Mi"}}}]}}}
    if strategy == "RollingUpdate":
        spec["strategy"]["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    if progress_deadline is not None:
        spec["progressDeadlineSeconds"] = progress_deadline
    if min_ready is not None:
        spec["minReadySeconds"] = min_ready
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def pod_ready(p: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (p.get("status") or {}).get("conditions") or [])


class RolloutChecker:
    """Watches the pods of one app and checks, after every single pod event, that
    active pods <= replicas + maxSurge and Ready active pods >= replicas - maxUnavailable
    (the second only once `arm()` is called, i.e. after the initial rollout is available).
    Violations are collected, with the state that broke the rule."""

    def __init__(self, client: Client, *, app: str, replicas: int, max_surge: int, max_unavailable: int,
                 namespace: str = "default"):
        self.app, self.ns = app, namespace
        self.max_pods = replicas + max_surge
        self.min_ready = replicas - max_unavailable
        self.informer = Informer(client, "pods", namespace=namespace, watch_timeout=5.0)
        self.violations: list[str] = []
        self.max_seen = 0
        self.min_ready_seen: int | None = None
        self.images_seen: list[set[str]] = []
        self._armed = False
        self.informer.add_handler(on_add=self._check, on_update=lambda o, n: self._check(n),
                                  on_delete=self._check)

    def arm(self) -> None:
        self._armed = True
        self._check(None)

    def active(self) -> list[dict]:
        return [p for p in self.informer.list()
                if (p["metadata"].get("labels") or {}).get("app") == self.app and not p["metadata"].get("deletionTimestamp")]

    def _check(self, _obj) -> None:
        pods = self.active()
        ready = sum(1 for p in pods if pod_ready(p))
        self.max_seen = max(self.max_seen, len(pods))
        self.images_seen.append({p["spec"]["containers"][0]["image"] for p in pods})
        if len(pods) > self.max_pods:
            self.violations.append(f"{len(pods)} active pods > {self.max_pods}: {sorted(name_of(p) for p in pods)}")
        if self._armed:
            self.min_ready_seen = ready if self.min_ready_seen is None else min(self.min_ready_seen, ready)
            if ready < self.min_ready:
                self.violations.append(f"{ready} ready pods < {self.min_ready}: "
                                       f"{sorted((name_of(p), pod_ready(p)) for p in pods)}")

    def __enter__(self) -> "RolloutChecker":
        self.informer.start()
        self.informer.wait_for_sync(30)
        return self

    def __exit__(self, *exc) -> None:
        self.informer.stop(timeout=1.0)


def deployment_done(client: Client, name: str, namespace: str = "default"):
    """The Deployment when its rollout is complete (kubectl's rule), else None."""
    d = client.get("deployments", name, namespace)
    st, want = d.get("status") or {}, (d.get("spec") or {}).get("replicas", 1)
    if (st.get("observedGeneration", 0) >= d["metadata"].get("generation", 0) and st.get("updatedReplicas") == want
            and st.get("replicas") == want and st.get("availableReplicas") == want):
        return d
    return None
