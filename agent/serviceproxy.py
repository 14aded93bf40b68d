"""The service proxy: every agent keeps its node's Service rules in nftables, level-based.

`ServiceProxy(node_name=..., runner=...)` follows three informers (`attach`): Services and
EndpointSlices of every namespace, and the Nodes (their pod CIDRs). Whatever changed, it
never applies a diff: each sync plans the *whole* table from the informers' caches
(`agent.network.svcrules.plan_ruleset`, pure) and applies it with one `nft -f -`, a single
netlink transaction — the node has either the old rules or the new ones, never a mix, and
a rule lost or edited by hand is put back by the next sync. How it works on the wire is in
svcrules' docstring and docs/services.md ("Data path").

When it syncs:
- at start-up, once all three informers have listed (a half-listed world would drop the
  rules of live Services while the agent restarts), observing the table already there
  (`nft -t -j list table`) so the first transaction converges it instead of recreating it
  (the clients' session affinity survives an agent restart);
- on every change of a Service or an EndpointSlice, and of a Node's pod CIDRs, after a short
  `debounce` (a rollout's burst of slice updates becomes one transaction);
- every `resync_interval` even without a change, observing the table again: the repair of
  hand edits, and the safety net of level-based code;
- after a failure, again with a back-off (`retry_base` doubling to `retry_cap`). A
  transaction the kernel refuses while converging is retried at once as delete-and-recreate
  of the table (still one transaction), which fixes any shape the table was left in.
A plan whose script equals the last one applied is not sent again.

After a successful sync, the addresses that left the EndpointSlices altogether since the last
one (their pods are gone) get their unanswered conntrack entries deleted (`conntrack`,
`agent.network.conntrack`): a SYN that was sent to a pod on a dead host would otherwise keep
catching any new connection from the same client port for two minutes, past the rules.

Each applied sync bumps `generation`, logs one line with its duration (and `last_sync`
keeps it), and records, per EndpointSlice, the resourceVersion that is now in the kernel
and when (`applied_slice`, `wait_applied`). A deleted slice is recorded as applied-deleted
once a sync without it is in. `applied_revision` is the position of the rules as a whole:
the highest resourceVersion among the slices the last successful sync planned from — the
slice informer delivers events in revision order, so every EndpointSlice write up to it
(deletions included) is in the kernel. Each successful sync, changed or not, hands it to
the `on_applied` callbacks (the agent publishes it on its Node for the drain before SIGTERM,
`agent.drain`; docs/services.md "Draining before SIGTERM").

`stop()` leaves the table in place by default: the rules keep steering traffic to the same
endpoints while the agent restarts, and the next start converges them (kube-proxy does the
same). `cleanup_on_stop=True` removes it. `remove_table(runner)` is for an agent whose
proxy is disabled (`--no-service-proxy`): stale rules of an earlier run would otherwise
keep sending Service traffic to pods that may be gone.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Protocol

from shoal.machinery.control.clock import Clock, RealClock
from shoal.agent.network.conntrack import ConntrackTable
from shoal.agent.network.runner import CommandError, Runner
from shoal.agent.network.svcrules import (TABLE, Existing, Plan, delete_script, parse_existing, plan_ruleset,
                                          render)

log = logging.getLogger(__name__)


class Source(Protocol):
    """What the proxy needs of an informer (`machinery.control.informer.Informer`)."""

    def list(self) -> list[dict]: ...

    def has_synced(self) -> bool: ...

    def add_handler(self, *, on_add=None, on_update=None, on_delete=None, on_list=None) -> None: ...


@dataclass(frozen=True)
class AppliedSlice:
    """An EndpointSlice as the kernel's rules have it: its resourceVersion when the sync that
    applied it read the cache, when that sync's transaction was committed (clock time), and
    in which generation; `deleted` once a sync without the slice is in."""
    resource_version: str
    applied_at: float
    generation: int
    deleted: bool = False


@dataclass(frozen=True)
class SyncStats:
    generation: int
    mode: str               # "converge", "recreate" or "unchanged"
    duration: float         # seconds, planning and the nft transaction
    service_ports: int
    endpoints: int
    problems: int


def node_pod_cidrs(nodes: Iterable[Mapping], node_name: str) -> tuple[str | None, list[str]]:
    """(this node's pod CIDR, every node's pod CIDRs) from Node objects."""
    own, every = None, []
    for n in nodes:
        spec = n.get("spec") or {}
        cidrs = list(spec.get("podCIDRs") or []) or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        every.extend(cidrs)
        if (n.get("metadata") or {}).get("name") == node_name and cidrs:
            own = spec.get("podCIDR") or cidrs[0]
    return own, sorted(set(every))


def _cidrs_of(node: Mapping) -> tuple:
    spec = node.get("spec") or {}
    return spec.get("podCIDR"), tuple(spec.get("podCIDRs") or ())


def _key(obj: Mapping) -> str:
    md = obj.get("metadata") or {}
    return f"{md.get('namespace') or ''}/{md.get('name') or ''}"


def slice_addresses(slices: Iterable[Mapping]) -> set[str]:
    """Every endpoint address the EndpointSlices list, whatever its conditions."""
    return {a for s in slices for ep in s.get("endpoints") or [] for a in ep.get("addresses") or []}


def _rv_int(obj: Mapping) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _rv_at_least(have: str, want: str) -> bool:
    try:
        return int(have) >= int(want)
    except ValueError:
        return have == want


class ServiceProxy:
    def __init__(self, *, node_name: str, runner: Runner, table: str = TABLE,
                 reserved_ports: Mapping[int, str] | None = None, clock: Clock | None = None,
                 debounce: float = 0.05, resync_interval: float = 300.0, retry_base: float = 0.5,
                 retry_cap: float = 10.0, cleanup_on_stop: bool = False, conntrack: ConntrackTable | None = None):
        self.node_name = node_name
        self.conntrack = conntrack                    # None: no conntrack clean-up (tests, no netfilter access)
        self._addresses: set[str] | None = None       # the slices' endpoint addresses at the last sync
        self.runner = runner
        self.table = table
        # port -> shoal component on this node; the agent's own dict (its log port is added late)
        self.reserved_ports: Mapping[int, str] = reserved_ports if reserved_ports is not None else {}
        self.clock: Clock = clock or RealClock()
        self.debounce = debounce
        self.resync_interval = resync_interval
        self.retry_base, self.retry_cap = retry_base, retry_cap
        self.cleanup_on_stop = cleanup_on_stop
        self._services: Source | None = None
        self._slices: Source | None = None
        self._nodes: Source | None = None
        self._sync_lock = threading.Lock()            # one sync at a time (loop, tests, stop)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._existing: Existing | None = None        # the table's names; None: observe first
        self._observed = False
        self._applied_script: str | None = None
        self._logged_problems: frozenset[str] = frozenset()
        self._applied: dict[str, AppliedSlice] = {}
        self._applied_cond = threading.Condition()
        self.generation = 0
        self.last_sync: SyncStats | None = None
        self.applied_revision: int | None = None      # None until the first successful sync
        self.on_applied: list[Callable[[int], None]] = []

    # ------------------------------------------------------------------ wiring
    def attach(self, *, services: Source, endpointslices: Source, nodes: Source) -> None:
        self._services, self._slices, self._nodes = services, endpointslices, nodes
        for src in (services, endpointslices):
            src.add_handler(on_add=lambda _o: self.request_sync(), on_update=lambda _a, _b: self.request_sync(),
                            on_delete=lambda _o: self.request_sync(), on_list=self.request_sync)
        # Node status is posted every few seconds; only a pod CIDR matters here
        nodes.add_handler(on_add=lambda _o: self.request_sync(), on_delete=lambda _o: self.request_sync(),
                          on_update=lambda old, new: self.request_sync() if _cidrs_of(old) != _cidrs_of(new) else None,
                          on_list=self.request_sync)

    def request_sync(self) -> None:
        """Ask for a full sync soon (cheap; called from informer handlers)."""
        self._wake.set()

    def start(self) -> "ServiceProxy":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"shoal-svcproxy-{self.node_name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop syncing; the rules stay in the kernel unless `cleanup_on_stop`."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.cleanup_on_stop:
            with self._sync_lock:
                try:
                    self.runner.run(["nft", "-f", "-"], input=delete_script(self.table))
                    log.info("service proxy: removed table ip %s", self.table)
                except Exception as e:
                    log.warning("service proxy: removing table ip %s failed: %s", self.table, e)

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        failures = 0
        next_resync = self.clock.monotonic() + self.resync_interval
        while not self._stop.is_set():
            woken = self._wake.wait(timeout=max(0.0, next_resync - self.clock.monotonic()))
            if self._stop.is_set():
                return
            if woken and self.debounce:
                self._stop.wait(self.debounce)          # gather the rest of a burst
            self._wake.clear()
            periodic = self.clock.monotonic() >= next_resync
            try:
                stats = self.sync(force=periodic)
                failures = 0
                if periodic or stats is not None:
                    next_resync = self.clock.monotonic() + self.resync_interval
            except Exception as e:
                failures += 1
                delay = min(self.retry_base * 2 ** (failures - 1), self.retry_cap)
                log.error("service proxy: sync of table ip %s failed (%s); retrying in %.1fs", self.table, e, delay)
                if self._stop.wait(delay):
                    return
                self._wake.set()

    # ------------------------------------------------------------------ one sync
    def ready(self) -> bool:
        """All three informers have listed: the caches are a whole picture."""
        srcs = (self._services, self._slices, self._nodes)
        return all(s is not None and s.has_synced() for s in srcs)

    def sync(self, *, force: bool = False) -> SyncStats | None:
        """Plan the whole table from the caches and apply it in one transaction. Returns None
        while the informers have not all listed; raises when nft refuses even a recreate.
        `force` observes the table again and applies even an unchanged plan (repair)."""
        stats = self._sync(force)
        if stats is not None and self.applied_revision is not None:
            for fn in list(self.on_applied):
                try:
                    fn(self.applied_revision)
                except Exception:       # a broken listener must not fail the sync
                    log.exception("service proxy: on_applied listener %r failed", fn)
        return stats

    def _sync(self, force: bool) -> SyncStats | None:
        with self._sync_lock:
            if not self.ready():
                return None
            assert self._services is not None and self._slices is not None and self._nodes is not None
            started = time.perf_counter()
            services = self._services.list()
            slices = self._slices.list()
            own_cidr, cidrs = node_pod_cidrs(self._nodes.list(), self.node_name)
            if force or not self._observed:
                self._existing = self._observe()
                self._observed = True
                self._applied_script = None
            plan = self._plan(services, slices, own_cidr, cidrs)
            self._log_problems(plan)
            if plan.script == self._applied_script:
                mode = "unchanged"
            else:
                try:
                    mode = self._apply(plan)
                except Exception:
                    self._observed = False          # look at the table again before the next try
                    raise
            duration = time.perf_counter() - started
            if mode != "unchanged":
                self.generation += 1
            stats = SyncStats(generation=self.generation, mode=mode, duration=duration,
                              service_ports=plan.service_ports, endpoints=plan.endpoints, problems=len(plan.problems))
            self.last_sync = stats
            self._record(slices)
            self._forget_gone(slices)
            self.applied_revision = max((_rv_int(sl) for sl in slices), default=0)
            if mode == "unchanged":
                log.debug("service proxy: table ip %s unchanged (%d service ports)", self.table, plan.service_ports)
            else:
                log.info("service proxy: applied generation %d to table ip %s (%s): %d service ports, %d endpoints "
                         "in %.1f ms", self.generation, self.table, mode, plan.service_ports, plan.endpoints,
                         duration * 1000)
            return stats

    def _forget_gone(self, slices: list[dict]) -> None:
        """Delete the unanswered conntrack entries to addresses no slice lists any more (the
        rules without them are in the kernel already). A failure is logged, not retried: the
        entries then time out as they would without this."""
        now = slice_addresses(slices)
        gone = (self._addresses - now) if self._addresses is not None else set()
        self._addresses = now
        if gone and self.conntrack is not None:
            try:
                n = self.conntrack.forget_unreplied(gone)
                if n:
                    log.info("service proxy: deleted %d unanswered connection(s) to gone endpoint(s) %s", n,
                             ", ".join(sorted(gone)))
            except Exception as e:
                log.warning("service proxy: deleting the conntrack entries of gone endpoints %s failed: %s",
                            ", ".join(sorted(gone)), e)

    def _plan(self, services, slices, own_cidr, cidrs) -> Plan:
        return plan_ruleset(services, slices, node_name=self.node_name, node_pod_cidr=own_cidr, pod_cidrs=cidrs,
                            existing=self._existing, reserved_ports=dict(self.reserved_ports), table=self.table)

    def _apply(self, plan: Plan) -> str:
        mode = "converge" if self._existing is not None else "recreate"
        script = plan.script
        try:
            self.runner.run(["nft", "-f", "-"], input=script)
        except CommandError as e:
            if self._existing is None:
                raise
            # the table is not what we believed: start it over, still in one transaction
            log.warning("service proxy: converging table ip %s failed (%s); recreating it", self.table, e)
            mode, script = "recreate", render(plan.ruleset, None)
            self.runner.run(["nft", "-f", "-"], input=script)
        self._existing = plan.ruleset.names()
        # what the same world renders next time: equal means nothing to do
        self._applied_script = render(plan.ruleset, self._existing)
        return mode

    def _observe(self) -> Existing | None:
        """The table's chains and sets now; Existing() when it is absent, None when unknown."""
        try:
            out = self.runner.run(["nft", "-t", "-j", "list", "table", "ip", self.table])
        except CommandError as e:
            if "No such file or directory" in e.stderr:
                return Existing()
            log.warning("service proxy: reading table ip %s failed (%s); it will be recreated", self.table, e)
            return None
        try:
            return parse_existing(out, self.table)
        except ValueError as e:
            log.warning("service proxy: unreadable listing of table ip %s (%s); it will be recreated", self.table, e)
            return None

    def _log_problems(self, plan: Plan) -> None:
        msgs = frozenset(f"{p.subject}: {p.message}" for p in plan.problems)
        for m in sorted(msgs - self._logged_problems):
            log.warning("service proxy: %s", m)
        self._logged_problems = msgs

    # ------------------------------------------------------------------ what is applied
    def _record(self, slices: list[dict]) -> None:
        now = self.clock.now()
        with self._applied_cond:
            seen = set()
            for s in slices:
                k = _key(s)
                seen.add(k)
                rv = str((s.get("metadata") or {}).get("resourceVersion") or "")
                have = self._applied.get(k)
                if have is None or have.deleted or have.resource_version != rv:
                    self._applied[k] = AppliedSlice(rv, now, self.generation)
            for k, have in list(self._applied.items()):
                if k not in seen and not have.deleted:
                    self._applied[k] = AppliedSlice(have.resource_version, now, self.generation, deleted=True)
            # forget deletions after a while: the map must not grow with every slice ever seen
            horizon = now - max(self.resync_interval, 600.0)
            for k in [k for k, v in self._applied.items() if v.deleted and v.applied_at < horizon]:
                del self._applied[k]
            self._applied_cond.notify_all()

    def applied_slice(self, namespace: str, name: str) -> AppliedSlice | None:
        with self._applied_cond:
            return self._applied.get(f"{namespace}/{name}")

    def wait_applied(self, namespace: str, name: str, resource_version: str, timeout: float) -> bool:
        """Block until the slice at `resource_version` (or later), or its deletion, is in the
        kernel's rules on this node; False after `timeout` seconds."""
        def done() -> bool:
            a = self._applied.get(f"{namespace}/{name}")
            return a is not None and (a.deleted or _rv_at_least(a.resource_version, resource_version))
        with self._applied_cond:
            return self._applied_cond.wait_for(done, timeout)


def remove_table(runner: Runner, table: str = TABLE) -> bool:
    """Delete the service table if it is there (the proxy is disabled on this node); True if
    it was."""
    try:
        runner.run(["nft", "-t", "-j", "list", "table", "ip", table])
    except CommandError:
        return False
    runner.run(["nft", "-f", "-"], input=delete_script(table))
    log.info("service proxy disabled: removed the service rules (table ip %s) of an earlier run", table)
    return True


__all__ = ["AppliedSlice", "ServiceProxy", "Source", "SyncStats", "node_pod_cidrs", "remove_table",
           "slice_addresses"]
