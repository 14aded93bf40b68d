"""The reconcile runtime: `clock` (injected time) → `queue` (de-duplicated, one key one
worker, back-off) → `informer` (list+watch cache, handlers, write-through) → `manager`
(`Reconciler` protocol, `Result`, `Controller`, `Manager` with apscheduler jobs)."""
from .clock import Clock, FakeClock, RealClock
from .informer import Informer
from .manager import Controller, Manager, Reconciler, Result
from .queue import RateLimiter, WorkQueue

__all__ = ["Clock", "FakeClock", "RealClock", "Informer", "Controller", "Manager", "Reconciler", "Result",
           "RateLimiter", "WorkQueue"]
