"""apps/v1 shapes: Deployment and ReplicaSet."""
from __future__ import annotations

from typing import Optional

from shoal.machinery.api.models.base import Int32, Int64, IntOrString, Time, WireModel
from shoal.machinery.api.models.core import PodTemplateSpec
from shoal.machinery.api.models.meta import LabelSelector, ObjectMeta


class RollingUpdateDeployment(WireModel):
    max_unavailable: Optional[IntOrString] = None
    max_surge: Optional[IntOrString] = None


class DeploymentStrategy(WireModel):
    type: Optional[str] = None
    rolling_update: Optional[RollingUpdateDeployment] = None


class DeploymentSpec(WireModel):
    replicas: Optional[Int32] = None
    selector: Optional[LabelSelector] = None
    template: Optional[PodTemplateSpec] = None
    strategy: Optional[DeploymentStrategy] = None
    min_ready_seconds: Optional[Int32] = None
    revision_history_limit: Optional[Int32] = None
    paused: Optional[bool] = None
    progress_deadline_seconds: Optional[Int32] = None


class DeploymentCondition(WireModel):
    type: Optional[str] = None
    status: Optional[str] = None
    last_update_time: Optional[Time] = None
    last_transition_time: Optional[Time] = None
    reason: Optional[str] = None
    message: Optional[str] = None


class DeploymentStatus(WireModel):
    observed_generation: Optional[Int64] = None
    replicas: Optional[Int32] = None
    updated_replicas: Optional[Int32] = None
    ready_replicas: Optional[Int32] = None
    available_replicas: Optional[Int32] = None
    unavailable_replicas: Optional[Int32] = None
    conditions: Optional[list[DeploymentCondition]] = None
    collision_count: Optional[Int32] = None


class Deployment(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    spec: Optional[DeploymentSpec] = None
    status: Optional[DeploymentStatus] = None


class ReplicaSetSpec(WireModel):
    replicas: Optional[Int32] = None
    min_ready_seconds: Optional[Int32] = None
    selector: Optional[LabelSelector] = None
    template: Optional[PodTemplateSpec] = None


class ReplicaSetCondition(WireModel):
    type: Optional[str] = None
    status: Optional[str] = None
    last_transition_time: Optional[Time] = None
    reason: Optional[str] = None
    message: Optional[str] = None


class ReplicaSetStatus(WireModel):
    replicas: Optional[Int32] = None
    fully_labeled_replicas: Optional[Int32] = None
    ready_replicas: Optional[Int32] = None
    available_replicas: Optional[Int32] = None
    observed_generation: Optional[Int64] = None
    conditions: Optional[list[ReplicaSetCondition]] = None


class ReplicaSet(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    spec: Optional[ReplicaSetSpec] = None
    status: Optional[ReplicaSetStatus] = None
