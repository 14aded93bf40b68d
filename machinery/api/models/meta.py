"""meta/v1 shapes shared by every kind: ObjectMeta, OwnerReference, LabelSelector,
DeleteOptions, and the autoscaling/v1 Scale served by `/scale`.

Server-set metadata (uid, resourceVersion, generation, timestamps,
managedFields, selfLink) is accepted on input because clients send the object
they read back on update; the API server, not the model, decides what to keep.
`managedFields` is accepted here as an opaque list: the API server computes and
checks it (`apiserver.managedfields`, server-side apply's field ownership).
"""
from __future__ import annotations

from typing import Any, Optional


from shoal.machinery.api.models.base import Int32, Int64, Time, WireModel


class OwnerReference(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    name: Optional[str] = None
    uid: Optional[str] = None
    controller: Optional[bool] = None
    block_owner_deletion: Optional[bool] = None


class ObjectMeta(WireModel):
    name: Optional[str] = None
    generate_name: Optional[str] = None
    namespace: Optional[str] = None
    self_link: Optional[str] = None
    uid: Optional[str] = None
    resource_version: Optional[str] = None
    generation: Optional[Int64] = None
    creation_timestamp: Optional[Time] = None
    deletion_timestamp: Optional[Time] = None
    deletion_grace_period_seconds: Optional[Int64] = None
    labels: Optional[dict[str, str]] = None
    annotations: Optional[dict[str, str]] = None
    owner_references: Optional[list[OwnerReference]] = None
    finalizers: Optional[list[str]] = None
    managed_fields: Optional[list[Any]] = None


class LabelSelectorRequirement(WireModel):
    key: Optional[str] = None
    operator: Optional[str] = None
    values: Optional[list[str]] = None


class LabelSelector(WireModel):
    match_labels: Optional[dict[str, str]] = None
    match_expressions: Optional[list[LabelSelectorRequirement]] = None


class Preconditions(WireModel):
    uid: Optional[str] = None
    resource_version: Optional[str] = None


class DeleteOptions(WireModel):
    kind: Optional[str] = None
    api_version: Optional[str] = None
    grace_period_seconds: Optional[Int64] = None
    preconditions: Optional[Preconditions] = None
    orphan_dependents: Optional[bool] = None
    propagation_policy: Optional[str] = None
    dry_run: Optional[list[str]] = None


class ScaleSpec(WireModel):
    replicas: Optional[Int32] = None


class ScaleStatus(WireModel):
    replicas: Optional[Int32] = None
    selector: Optional[str] = None


class Scale(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    spec: Optional[ScaleSpec] = None
    status: Optional[ScaleStatus] = None
