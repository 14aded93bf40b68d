"""Scheduler: `framework` (pure filters, scores, messages) → `scheduler` (ClusterState fed
by informers, assume + CAS bind, unschedulable status and events)."""
from .scheduler import ClusterState, Scheduler

__all__ = ["ClusterState", "Scheduler"]
