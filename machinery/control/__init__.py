"""The control loop's machinery, shaped as controller-runtime shapes it: level-based
reconcilers on injected time. The controllers are built from all of it; the agents use its
clock, its timers and its Events writer. Imports `machinery.api` and `machinery.client`,
nothing above the floor.

A tour, in the order the pieces depend on each other:

1. `clock` — the one `Clock` protocol (`now()` wall-clock epoch seconds, `monotonic()`
   for durations), `RealClock` and `FakeClock`: every timeout, back-off and grace period
   of shoal reads one, so tests move time instead of sleeping.
2. `timers` — be called back at a time of that clock: `ThreadScheduler` (one timer thread
   feeding a small pool) in production, `ManualScheduler` (`advance()` runs what is due on
   the caller's thread) in tests. The agent's probes, back-off wake-ups and lease renewal.
3. `queue` — `WorkQueue` of object keys: de-duplicated, one key one worker (a key added
   while it is being reconciled runs again after `done()`), `add_after`, per-key
   exponential back-off from `RateLimiter`.
4. `informer` — `Informer`: list + watch one resource into a read-only cache (relist on
   410 Gone, resync), handlers on its thread, indexes, and read-your-writes through
   `observe(obj)` / `observe_deleted(key, uid)`.
5. `manager` — the contract: `Reconciler.reconcile(key) -> Result(requeue_after)`, an
   exception means retry with back-off; `Controller` = queue + reconciler + workers;
   `Manager` owns the shared informers, the controllers and apscheduler's timed jobs.
6. `holdback` → `events` — `HoldBack`, a queue taken in batches held while its producer is
   busy, and on it the one `EventRecorder` of the controllers and the agents (never
   blocks, aggregates repeats, a spam filter; options say who records and how);
   `EventSink` is the seam reconcilers and pod workers record through, `RecordingEvents`
   its fake.

The package re-exports the names a controller needs: `Clock`, `RealClock`, `FakeClock`,
`WorkQueue`, `RateLimiter`, `Informer`, `Reconciler`, `Result`, `Controller`, `Manager`.
"""
from shoal.machinery.control.clock import Clock, FakeClock, RealClock
from shoal.machinery.control.informer import Informer
from shoal.machinery.control.manager import Controller, Manager, Reconciler, Result
from shoal.machinery.control.queue import RateLimiter, WorkQueue

__all__ = ["Clock", "FakeClock", "RealClock", "Informer", "Controller", "Manager", "Reconciler", "Result",
           "RateLimiter", "WorkQueue"]
