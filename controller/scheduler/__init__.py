"""Scheduler: `framework` (pure filters, scores, messages) → `scheduler` (ClusterState fed
by informers, assume + CAS bind, unschedulable status and events)."""
from shoal.controller.scheduler.scheduler import ClusterState, Scheduler

__all__ = ["ClusterState", "Scheduler"]
