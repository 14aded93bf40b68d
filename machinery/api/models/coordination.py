"""coordination.k8s.io/v1 shapes: Lease (node heartbeats, leader election)."""
from __future__ import annotations

from typing import Optional

from shoal.machinery.api.models.base import Int32, MicroTime, WireModel
from shoal.machinery.api.models.meta import ObjectMeta


class LeaseSpec(WireModel):
    holder_identity: Optional[str] = None
    lease_duration_seconds: Optional[Int32] = None
    acquire_time: Optional[MicroTime] = None
    renew_time: Optional[MicroTime] = None
    lease_transitions: Optional[Int32] = None


class Lease(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    spec: Optional[LeaseSpec] = None
