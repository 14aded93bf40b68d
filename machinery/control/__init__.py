"""The reconcile runtime: `clock` (injected time) → `queue` (de-duplicated, one key one
worker, back-off) → `informer` (list+watch cache, handlers, write-through) → `manager`
(`Reconciler` protocol, `Result`, `Controller`, `Manager` with apscheduler jobs)."""
from shoal.machinery.control.clock import Clock, FakeClock, RealClock
from shoal.machinery.control.informer import Informer
from shoal.machinery.control.manager import Controller, Manager, Reconciler, Result
from shoal.machinery.control.queue import RateLimiter, WorkQueue

__all__ = ["Clock", "FakeClock", "RealClock", "Informer", "Controller", "Manager", "Reconciler", "Result",
           "RateLimiter", "WorkQueue"]
