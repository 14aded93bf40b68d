"""Pod dispatch: which pod uids have a worker here, and what wakes them.

`PodWorkers` keeps one `PodWorker` per pod uid and is fed from three sides:

- the pod informer (`attach(informer)`: the floor's `Informer` on `spec.nodeName=<node>`):
  a pod added or changed by someone else wakes its worker; a pod deleted (or bound
  elsewhere) is handed to its worker as gone, which then stops and tears it down. The
  worker's own status write coming back through the watch is no reason to sync
  (`PodWorker.is_own_status_echo`).
- the runtime relist (`relist()`, kubelet's PLEG, every `relist_interval` and at once on
  an exit reported by `ExitWatcher.wait_exit`, where the runtime has it): a pod whose containers' ids, states or exit
  codes changed is woken. Containers labelled with a uid that has no pod here get an
  *orphan* worker that stops and removes them.
- housekeeping (`housekeeping()`): network state and pod directories without a pod get
  an orphan worker too.

Adoption (after an agent restart): nothing is woken before the first pod list has been
applied *and* the runtime has been relisted once, which seeds every worker with the
container ids its pod already has. A worker that synced before that would plan attempt 0
again, replace a live container and lose an exit that happened while the agent was down
(tests/integration/test_agent_adoption_order.py). So pods from the first list are stored
but not woken; `on_list` relists the runtime, runs housekeeping and then wakes every
worker. If that relist fails, the periodic `relist()` tries the adoption again. Orphans
are only decided after the first list: before it, live pods cannot be told from orphans.

A worker that finished (torn down, deletion confirmed) is dropped; its uid is remembered
(bounded) so a late watch echo of its pod cannot bring it back.

`PodDispatcher` runs `sync(uid)` for woken uids on a few threads through the floor's
`WorkQueue` (the controllers' queue): a uid is never synced twice at once, a uid woken while
it syncs is synced again right after, and the time a sync asks to be run again at
(back-off expiry, SIGKILL deadline) is `wake_at` → `WorkQueue.add_after`.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from pathlib import Path
from typing import Callable

from shoal.machinery.control.clock import Clock
from shoal.machinery.control.informer import Informer
from shoal.machinery.control.queue import WorkQueue
from shoal.agent.interfaces import ExitWatcher, Network, Runtime
from shoal.agent.plan import LABEL_POD_UID
from shoal.agent.worker import PodWorker

log = logging.getLogger(__name__)

FINISHED_MAX = 10_000     # uids of finished workers remembered (late echoes of their pods)


class PodDispatcher:
    """One `sync(uid)` per pod uid at a time on `threads` threads.

    `sync` returns the clock time (`Clock.now()`) it wants to run again at, or None.
    A failed sync is retried after a second."""

    def __init__(self, sync: Callable[[str], float | None], *, clock: Clock, threads: int = 8,
                 name: str = "shoal-pod"):
        self._sync = sync
        self._clock = clock
        self._queue = WorkQueue(name, clock=clock)
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def wake(self, uid: str) -> None:
        self._queue.add(uid)

    def wake_at(self, uid: str, at: float) -> None:
        """Sync `uid` at clock time `at` (an earlier pending wake-up wins)."""
        self._queue.add_after(uid, at - self._clock.now())

    def _loop(self) -> None:
        while True:
            uid = self._queue.get()
            if uid is None:
                return
            nxt = None
            try:
                nxt = self._sync(uid)
            except Exception:
                log.exception("sync of pod %s failed; retrying in 1s", uid)
                nxt = self._clock.now() + 1.0
            finally:
                self._queue.done(uid)
            if nxt is not None:
                self.wake_at(uid, nxt)

    def stop(self) -> None:
        """No more syncs; waits (up to 10 s a thread) for the ones running."""
        self._queue.shut_down()
        for t in self._threads:
            t.join(timeout=10)


class PodWorkers:
    """The worker map of one node (see the module docstring)."""

    def __init__(self, *, node_name: str, make_worker: Callable[[str], PodWorker], runtime: Runtime,
                 network: Network, data_dir: Path, clock: Clock, threads: int = 8,
                 on_synced: Callable[[], None] = lambda: None):
        self.node_name = node_name
        self._make_worker = make_worker
        self._runtime = runtime
        self._network = network
        self._data_dir = Path(data_dir)
        self._on_synced = on_synced
        self._lock = threading.RLock()
        self._relist_lock = threading.Lock()
        self._workers: dict[str, PodWorker] = {}
        self._finished: set[str] = set()      # uids torn down and confirmed: late watch echoes must not revive them
        self._by_name: dict[tuple[str, str], str] = {}
        self._fingerprints: dict[str, frozenset] = {}
        self._listed = threading.Event()      # the pod informer applied its first list
        self._adopted = threading.Event()     # ... and the runtime was relisted after it
        self.dispatcher = PodDispatcher(self.sync, clock=clock, threads=threads, name=f"shoal-pod-{node_name}")

    # ------------------------------------------------------------------ the pod informer
    def attach(self, informer: Informer) -> None:
        informer.add_handler(on_add=self.on_add, on_update=self.on_update, on_delete=self.on_delete,
                             on_list=self.on_list)

    def on_add(self, pod: dict) -> None:
        if (pod.get("spec") or {}).get("nodeName") != self.node_name:
            self._gone(pod["metadata"]["uid"])
        else:
            self._upsert(pod)

    def on_update(self, old: dict, new: dict) -> None:
        if old["metadata"].get("uid") != new["metadata"].get("uid"):
            self._gone(old["metadata"]["uid"])      # the name now belongs to a new pod (seen by a relist)
        self.on_add(new)

    def on_delete(self, pod: dict) -> None:
        self._gone(pod["metadata"]["uid"])

    def on_list(self) -> None:
        self._listed.set()
        if not self._adopted.is_set():
            self._adopt()

    def _upsert(self, pod: dict) -> None:
        md = pod["metadata"]
        uid = md["uid"]
        with self._lock:
            w = self._workers.get(uid)
            if w is None:
                if uid in self._finished:
                    return
                w = self._workers[uid] = self._make_worker(uid)
            echo = w.is_own_status_echo(pod)
            w.set_pod(pod)
            self._by_name[(md.get("namespace", "default"), md["name"])] = uid
        if not echo and self._adopted.is_set():
            self.dispatcher.wake(uid)

    def _gone(self, uid: str) -> None:
        with self._lock:
            w = self._workers.get(uid)
            if w is None:
                return
            w.set_pod(None)
        if self._adopted.is_set():
            self.dispatcher.wake(uid)

    def _adopt(self) -> None:
        with self._relist_lock:
            if self._adopted.is_set():
                return
            try:
                self._relist_locked()
            except Exception as e:       # noqa: BLE001 — the periodic relist() adopts again
                log.warning("node %s: relisting the runtime for adoption failed (%s); retrying with the next relist",
                            self.node_name, e)
                return
            self._adopted.set()
        try:
            self.housekeeping()
        except Exception as e:           # noqa: BLE001 — the periodic housekeeping tries again
            log.warning("node %s: housekeeping failed: %s", self.node_name, e)
        self.wake_all()

    # ------------------------------------------------------------------ syncing
    def sync(self, uid: str) -> float | None:
        with self._lock:
            w = self._workers.get(uid)
        if w is None:
            return None
        nxt = w.sync()
        self._on_synced()
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
                    if len(self._finished) > FINISHED_MAX:
                        self._finished.clear()
            return None
        return nxt

    def wake_all(self) -> None:
        with self._lock:
            uids = list(self._workers)
        for uid in uids:
            self.dispatcher.wake(uid)

    def stop(self) -> None:
        self.dispatcher.stop()

    # ------------------------------------------------------------------ runtime relist (PLEG)
    def relist(self) -> None:
        """Called by the periodic timer and by the exit watcher: one at a time."""
        if not self._listed.is_set():
            return       # before the first pod list we cannot tell live pods from orphans
        if not self._adopted.is_set():
            self._adopt()
            return
        with self._relist_lock:
            self._relist_locked()

    def watch_exits(self, stop: threading.Event) -> None:
        """Event-driven relist on top of the periodic one (a crash is seen in milliseconds);
        runs until `stop` is set, on a thread of its own."""
        runtime = self._runtime
        if not isinstance(runtime, ExitWatcher):
            return
        while not stop.is_set():
            try:
                if runtime.wait_exit(1.0) and not stop.is_set():
                    self.relist()
            except Exception as e:  # noqa: BLE001 — the periodic relist still covers exits
                log.warning("node %s: exit-triggered relist failed: %s", self.node_name, e)
                stop.wait(1.0)

    def _relist_locked(self) -> None:
        by_uid: dict[str, list] = defaultdict(list)
        for s in self._runtime.list():
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
                    w = self._workers[uid] = self._make_worker(uid)   # orphan: pod is not bound here
                    self._finished.discard(uid)
                w.add_container_ids(s.id for s in states)
                wake.append(uid)
            for uid in [u for u in self._fingerprints if u not in by_uid]:
                del self._fingerprints[uid]
                if uid in self._workers:
                    wake.append(uid)
        for uid in wake:
            self.dispatcher.wake(uid)

    def housekeeping(self) -> None:
        """Network state and pod directories without a pod: give them an orphan worker to tear down."""
        if not self._adopted.is_set():
            return
        uids = set()
        try:
            uids |= set(self._network.pods())
        except Exception as e:
            log.warning("node %s: listing pod networks failed: %s", self.node_name, e)
        pods_dir = self._data_dir / "pods"
        if pods_dir.is_dir():
            uids |= {p.name for p in pods_dir.iterdir() if p.is_dir()}
        wake = []
        with self._lock:
            for uid in uids:
                if uid not in self._workers:
                    self._workers[uid] = self._make_worker(uid)
                    wake.append(uid)
        for uid in wake:
            self.dispatcher.wake(uid)

    # ------------------------------------------------------------------ reading (logs, host ports, tests)
    def worker(self, uid: str) -> PodWorker | None:
        with self._lock:
            return self._workers.get(uid)

    def uids(self) -> list[str]:
        with self._lock:
            return list(self._workers)

    def find(self, namespace: str, name: str) -> tuple[str, dict | None] | None:
        """(uid, pod) of the worker of pod `namespace/name` — the pod as last seen, also once it
        is gone from the API server — or None when no worker has it."""
        with self._lock:
            uid = self._by_name.get((namespace, name))
            w = self._workers.get(uid) if uid else None
            if uid is None or w is None:
                return None
            return uid, w.pod or w.last_pod

    def sandboxed(self) -> list[tuple[str, dict]]:
        """(uid, pod) of the pods that are still wanted and have their network."""
        with self._lock:
            workers = list(self._workers.values())
        out = []
        for w in workers:
            pod = w.pod
            if pod is not None and w.mem.pod_net is not None:
                out.append((w.uid, pod))
        return out
