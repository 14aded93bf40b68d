"""Entry point of the controllers: `run_controllers(client, options=...)` for `shoal server`
(in-process, over HTTP to itself) and `main(argv)` for `shoal controller --kubeconfig PATH`
(also `python -m shoal.controller.manager`).

One Manager runs: deployment, replicaset, scheduler, nodelifecycle, nodeipam,
garbagecollector, endpointslice (EndpointSlices and Endpoints of Services) and servicelb
(LoadBalancer addresses) controllers over shared informers (pods, nodes, replicasets,
deployments, leases in kube-node-lease, services, endpointslices, endpoints), plus an
EventRecorder writing Events in the background.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from dataclasses import dataclass, field

from shoal.machinery.client.rest import Client

from shoal.controller.deployment import DeploymentController
from shoal.controller.endpointslice import EndpointSliceController
from shoal.machinery.control.events import EventRecorder
from shoal.controller.gc import GarbageCollector
from shoal.controller.nodeipam import NodeIpamController
from shoal.controller.nodelifecycle import LEASE_NAMESPACE, NodeLifecycleController
from shoal.controller.replicaset import ReplicaSetController
from shoal.machinery.control import Clock, Manager, RealClock
from shoal.controller.scheduler import Scheduler
from shoal.controller.servicelb import ServiceLBController

ALL_CONTROLLERS = ("deployment", "replicaset", "scheduler", "nodelifecycle", "nodeipam", "garbagecollector",
                   "endpointslice", "servicelb")


@dataclass
class Options:
    node_grace_period: float = 8.0         # lease older than this -> Ready=Unknown + unreachable taints
    eviction_delay: float = 5.0            # then pods are evicted after this (per pod overridable)
    cluster_cidr: str = "10.244.0.0/16"
    node_cidr_mask: int = 24
    resync_period: float = 30.0
    workers: int = 4                       # deployment and replicaset workers each
    scheduler_workers: int = 4
    monitor_period: float = 1.0
    watch_timeout: float = 30.0
    replicaset_status_batch: float = 0.2   # least seconds between two count-only status writes of one ReplicaSet
    controllers: tuple[str, ...] = field(default=ALL_CONTROLLERS)


ControllerOptions = Options  # the name `shoal server` / `shoal controller` import


def build_manager(client: Client, *, options: Options | None = None, clock: Clock | None = None) -> Manager:
    """Wire every enabled controller into a Manager (not started)."""
    o = options or Options()
    unknown = set(o.controllers) - set(ALL_CONTROLLERS)
    if unknown:
        raise ValueError(f"unknown controller(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_CONTROLLERS)}")
    clock = clock or RealClock()
    m = Manager(client, clock=clock, resync_period=o.resync_period, watch_timeout=o.watch_timeout)
    events = EventRecorder(client, "controller-manager", clock=clock)
    pods, nodes = m.informer("pods"), m.informer("nodes")
    rss, deps = m.informer("replicasets"), m.informer("deployments")
    on = set(o.controllers)
    if "deployment" in on:
        DeploymentController(client, deployments=deps, replicasets=rss, pods=pods, events=events,
                             clock=clock).register(m, workers=o.workers)
    if "replicaset" in on:
        ReplicaSetController(client, replicasets=rss, pods=pods, events=events, clock=clock,
                             status_batch=o.replicaset_status_batch).register(
            m, workers=o.workers)
    recorders = [events]
    if "scheduler" in on:
        sched_events = EventRecorder(client, "default-scheduler", clock=clock)
        recorders.append(sched_events)
        Scheduler(client, pods=pods, nodes=nodes, events=sched_events, clock=clock).register(
            m, workers=o.scheduler_workers)
        m.on_start(sched_events.start)
        m.on_stop(sched_events.stop)
    if "nodelifecycle" in on:
        NodeLifecycleController(client, nodes=nodes, leases=m.informer("leases", LEASE_NAMESPACE), pods=pods,
                                events=events, clock=clock, grace=o.node_grace_period,
                                eviction_delay=o.eviction_delay).register(
            m, monitor_period=o.monitor_period)
    if "nodeipam" in on:
        NodeIpamController(client, nodes=nodes, events=events, cluster_cidr=o.cluster_cidr,
                           node_mask=o.node_cidr_mask).register(m)
    if "garbagecollector" in on:
        GarbageCollector(client, dependents={"Pod": pods, "ReplicaSet": rss},
                         owners={"ReplicaSet": rss, "Deployment": deps, "Node": nodes}, events=events).register(m)
    if "endpointslice" in on:
        EndpointSliceController(client, services=m.informer("services"), pods=pods,
                                slices=m.informer("endpointslices"), endpoints=m.informer("endpoints")).register(
            m, workers=o.workers)
    if "servicelb" in on:
        ServiceLBController(client, services=m.informer("services"), nodes=nodes,
                            slices=m.informer("endpointslices")).register(m)
    m.on_start(events.start)
    m.on_stop(events.stop)

    def busy(*_objs: dict) -> None:     # a watch event: the cluster is moving, events wait
        for r in recorders:
            r.touch()
    for inf in (pods, nodes, rss, deps):
        inf.add_handler(on_add=busy, on_update=busy, on_delete=busy)
    return m


def run_controllers(client: Client, *, options: Options | None = None, clock: Clock | None = None,
                    sync_timeout: float = 60.0) -> Manager:
    """Build and start the controllers; returns the running Manager (call `.stop()`)."""
    return build_manager(client, options=options, clock=clock).start(sync_timeout=sync_timeout)


def _parser() -> argparse.ArgumentParser:
    d = Options()
    p = argparse.ArgumentParser(prog="shoal controller", description="Run shoal's controllers against an API server.")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.shoal/kubeconfig)")
    p.add_argument("--node-grace-period", "--node-grace", dest="node_grace", type=float, default=d.node_grace_period, metavar="SECONDS",
                   help="lease age after which a node is Ready=Unknown and tainted (default %(default)s)")
    p.add_argument("--eviction-delay", type=float, default=d.eviction_delay, metavar="SECONDS",
                   help="delay after the unreachable taint before pods are evicted (default %(default)s)")
    p.add_argument("--cluster-cidr", default=d.cluster_cidr, help="pod network (default %(default)s)")
    p.add_argument("--node-cidr-mask", type=int, default=d.node_cidr_mask, help="per-node prefix (default %(default)s)")
    p.add_argument("--resync-period", type=float, default=d.resync_period, metavar="SECONDS")
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--controllers", default=",".join(ALL_CONTROLLERS),
                   help="comma-separated controllers to run (default: all)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def options_from_args(a: argparse.Namespace) -> Options:
    return Options(node_grace_period=a.node_grace, eviction_delay=a.eviction_delay,
                   cluster_cidr=a.cluster_cidr, node_cidr_mask=a.node_cidr_mask,
                   resync_period=a.resync_period, workers=a.workers,
                   controllers=tuple(c.strip() for c in a.controllers.split(",") if c.strip()))


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        client = Client.from_kubeconfig(a.kubeconfig, user_agent="shoal-controller")
        opts = options_from_args(a)
        manager = run_controllers(client, options=opts)
    except (FileNotFoundError, ValueError, TimeoutError) as e:
        print(f"shoal controller: {e}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    manager.stop()
    client.close()
    return 0


__all__ = ["Options", "ControllerOptions", "build_manager", "run_controllers", "main", "ALL_CONTROLLERS"]

if __name__ == "__main__":
    sys.exit(main())
