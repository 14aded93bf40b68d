"""The reconcile contract and the Manager that runs it.

Contract (controller-runtime's, in Python):
- A `Reconciler` has `reconcile(key) -> Result`. The key is `namespace/name` (or `name`);
  it never says what happened — the reconciler re-reads the world (informer caches) and
  drives it toward the desired state; it must be idempotent.
- `Result(requeue_after=s)` asks to be called again for the key after `s` seconds (a
  deadline to check, a pod that becomes available later); `Result()` means done.
- Raising means "retry": the key is re-queued with per-key exponential back-off; a success
  resets the back-off.
- A `Controller` is a queue + a reconciler + N worker threads. The queue guarantees that the
  same key is never reconciled by two workers at once.
- The `Manager` owns the shared informers (one per resource), the controllers and an
  apscheduler BackgroundScheduler for timed jobs (informer resync, node monitor). `start()`
  starts informers, waits for their caches to sync, then starts workers and jobs; `stop()`
  stops all of them.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from apscheduler.schedulers.background import BackgroundScheduler

from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client

from shoal.machinery.api.objects import key_of
from shoal.machinery.control.clock import Clock, RealClock
from shoal.machinery.control.informer import Informer
from shoal.machinery.control.queue import RateLimiter, WorkQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None


class Reconciler(Protocol):
    def reconcile(self, key: str) -> Result: ...


class Controller:
    def __init__(self, name: str, reconciler: Reconciler, *, workers: int = 1, clock: Clock | None = None,
                 rate_limiter: RateLimiter | None = None):
        self.name = name
        self.reconciler = reconciler
        self.workers = workers
        self.queue = WorkQueue(name, clock=clock, rate_limiter=rate_limiter)
        self._threads: list[threading.Thread] = []

    # -- enqueueing helpers, used by informer handlers -----------------------------------------
    def enqueue(self, key: str) -> None:
        self.queue.add(key)

    def enqueue_obj(self, obj: dict) -> None:
        self.queue.add(key_of(obj))

    def enqueue_after(self, key: str, delay: float) -> None:
        self.queue.add_after(key, delay)

    def watch(self, informer: Informer, mapper: Callable[[dict], list[str]] | None = None) -> None:
        """Enqueue keys for every add/update/delete of `informer` (the object's own key, or
        the keys `mapper(obj)` returns — e.g. its owner)."""
        def keys(obj: dict) -> list[str]:
            return mapper(obj) if mapper else [key_of(obj)]

        def add(obj):
            for k in keys(obj):
                self.queue.add(k)

        def update(old, new):
            for k in set(keys(old)) | set(keys(new)):
                self.queue.add(k)

        informer.add_handler(on_add=add, on_update=update, on_delete=add)

    # -- running --------------------------------------------------------------------------------
    def process_one(self, *, block: bool = True, timeout: float | None = None) -> bool:
        """Take one key and reconcile it; False when the queue had nothing (or shut down)."""
        key = self.queue.get(block=block, timeout=timeout)
        if key is None:
            return False
        try:
            result = self.reconciler.reconcile(key)
        except (errors.Conflict, errors.NotFound) as e:
            # Stale cache or a concurrent writer: normal under optimistic concurrency.
            log.debug("%s: %s: %s (retrying)", self.name, key, e)
            self.queue.add_rate_limited(key)
        except Exception as e:
            log.warning("%s: reconcile %s failed: %s (retry #%d)", self.name, key, e,
                        self.queue.rate_limiter.failures(key) + 1,
                        exc_info=not isinstance(e, errors.ApiError))
            self.queue.add_rate_limited(key)
        else:
            self.queue.forget(key)
            if result is not None and result.requeue_after is not None:
                self.queue.add_after(key, max(result.requeue_after, 0.0))
        finally:
            self.queue.done(key)
        return True

    def _work(self) -> None:
        while not self.queue.shutting_down:
            self.process_one(timeout=1.0)

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the queue down and wait up to `timeout` seconds in total for the workers (a
        worker inside an HTTP call finishes it; the threads are daemons)."""
        self.queue.shut_down()
        import time
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(deadline - time.monotonic(), 0.0))


class Manager:
    def __init__(self, client: Client, *, clock: Clock | None = None, resync_period: float = 30.0,
                 watch_timeout: float = 30.0):
        self.client = client
        self.clock = clock or RealClock()
        self.resync_period = resync_period
        self.watch_timeout = watch_timeout
        self.informers: dict[tuple[str, str | None], Informer] = {}
        self.controllers: dict[str, Controller] = {}
        self._jobs: list[tuple[str, float, Callable[[], None]]] = []
        self._on_start: list[Callable[[], None]] = []
        self._on_stop: list[Callable[[], None]] = []
        self._scheduler: BackgroundScheduler | None = None
        self._started = False

    def informer(self, kind: str, namespace: str | None = None) -> Informer:
        """The shared informer for `kind` (created on first use)."""
        k = (kind, namespace)
        if k not in self.informers:
            self.informers[k] = Informer(self.client, kind, namespace=namespace, watch_timeout=self.watch_timeout)
        return self.informers[k]

    def add_controller(self, name: str, reconciler: Reconciler, *, workers: int = 1,
                       rate_limiter: RateLimiter | None = None) -> Controller:
        c = Controller(name, reconciler, workers=workers, clock=self.clock, rate_limiter=rate_limiter)
        self.controllers[name] = c
        return c

    def every(self, seconds: float, fn: Callable[[], None], *, name: str) -> None:
        """Run `fn` every `seconds` on the apscheduler thread pool once started."""
        self._jobs.append((name, seconds, fn))

    def on_start(self, fn: Callable[[], None]) -> None:
        self._on_start.append(fn)

    def on_stop(self, fn: Callable[[], None]) -> None:
        self._on_stop.append(fn)

    def wait_for_sync(self, timeout: float) -> bool:
        deadline = self.clock.monotonic() + timeout
        for inf in self.informers.values():
            left = max(deadline - self.clock.monotonic(), 0.0)
            if not inf.wait_for_sync(left):
                return False
        return True

    def start(self, *, sync_timeout: float = 60.0) -> "Manager":
        for inf in self.informers.values():
            inf.start()
        if not self.wait_for_sync(sync_timeout):
            unsynced = [k for (k, _), i in self.informers.items() if not i.has_synced()]
            self.stop()
            raise TimeoutError(f"informer caches for {', '.join(unsynced)} did not sync within {sync_timeout}s "
                               f"(is the API server at {self.client.server} reachable?)")
        for fn in self._on_start:
            fn()
        for c in self.controllers.values():
            c.start()
        # apscheduler logs every run of every job at INFO (each second for the node monitor).
        logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
        self._scheduler = BackgroundScheduler(daemon=True)
        for (kind, ns), inf in self.informers.items():
            self._scheduler.add_job(inf.resync, "interval", seconds=self.resync_period,
                                    id=f"resync-{kind}-{ns or ''}", max_instances=1, coalesce=True)
        for name, seconds, fn in self._jobs:
            self._scheduler.add_job(fn, "interval", seconds=seconds, id=name, max_instances=1, coalesce=True)
        self._scheduler.start()
        self._started = True
        log.info("controller manager started: %s", ", ".join(self.controllers))
        return self

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        for c in self.controllers.values():
            c.queue.shut_down()
        for inf in self.informers.values():
            inf._stop.set()
        per = 5.0 / max(len(self.controllers), 1)
        for c in self.controllers.values():
            c.stop(timeout=per)
        for fn in self._on_stop:
            try:
                fn()
            except Exception:
                log.exception("controller manager: stop hook failed")
        for inf in self.informers.values():
            inf.stop(timeout=0.5)
        self._started = False

    def __enter__(self) -> "Manager":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
