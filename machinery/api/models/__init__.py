"""shoal's object model: decode, default and validate Kubernetes-shaped objects.

Tour (in the order a write goes through them):
- `base`: the `WireModel` every shape derives from — camelCase wire names,
  unknown fields forbidden, strict JSON types, every field optional; the
  `Time`, `MicroTime`, `Quantity` and `IntOrString` scalars.
- `meta`, `core`, `config` (ConfigMap, Secret), `apps`, `coordination`, `network` (Service,
  Endpoints, EndpointSlice): the shapes of each kind.
- `codec`: wire dict -> model; decoding problems become `errors.BadRequest`.
- `defaults`: Kubernetes' defaults, filled into the model.
- `validation`: Kubernetes' rules, every problem a `Cause` with its field path,
  raised together as `errors.Invalid`; update rules when `old` is given.
- `network_rules`: the service kinds' defaults, rules and the preparation a Service write
  gets before validation (`PREPARERS`: Kubernetes' service strategy steps that read the
  stored object), registered into the tables here.
- `names`, `imageref`, `field`: the syntax checks and error wording they share.

The one entry point the API server calls is `validate(kind, obj, ...)`; it
returns the normalized wire dict to store. `validate_status(kind, status)` is
its short form for `/status` writes of the kinds whose status rules stand alone. Everything else in the system
passes plain dicts; models never leave this package's callers' hands.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from pydantic import BaseModel

from shoal.machinery.api import errors
from shoal.machinery.api.models.apps import Deployment, ReplicaSet
from shoal.machinery.api.models.codec import decode
from shoal.machinery.api.models.coordination import Lease
from shoal.machinery.api.models.config import ConfigMap, Secret
from shoal.machinery.api.models.core import Event, Namespace, Node, Pod
from shoal.machinery.api.models.defaults import DEFAULTERS, default_image_pull_policy
from shoal.machinery.api.models.field import FieldErrors
from shoal.machinery.api.models.imageref import ImageRef, parse_image_reference
from shoal.machinery.api.models.meta import DeleteOptions, Scale
from shoal.machinery.api.models import network_rules
from shoal.machinery.api.models.network import EndpointSlice, Endpoints, Service
from shoal.machinery.api.models.validation import (VALIDATORS, validate_deployment_status, validate_int_ranges,
                                                   validate_pod_status, validate_replicaset_status, validate_update)

__all__ = ["validate", "validate_status", "KINDS", "KindInfo", "parse_image_reference", "ImageRef", "default_image_pull_policy",
           "Namespace", "Pod", "Node", "Event", "Deployment", "ReplicaSet", "Lease", "Scale", "DeleteOptions",
           "ConfigMap", "Secret", "Service", "Endpoints", "EndpointSlice"]


@dataclass(frozen=True)
class KindInfo:
    kind: str
    model: type[BaseModel]
    api_version: str
    accepted_versions: tuple[str, ...]
    group: str

    @property
    def qualified(self) -> str:
        """`Deployment.apps`, `Pod` — how Kubernetes names a kind in error messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


def _info(kind: str, model: type[BaseModel], api_version: str, *extra_versions: str) -> KindInfo:
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    return KindInfo(kind, model, api_version, (api_version, *extra_versions), group)


KINDS: dict[str, KindInfo] = {i.kind: i for i in (
    _info("Namespace", Namespace, "v1"),
    _info("Pod", Pod, "v1"),
    _info("Node", Node, "v1"),
    _info("Event", Event, "v1"),
    _info("ConfigMap", ConfigMap, "v1"),
    _info("Secret", Secret, "v1"),
    _info("Service", Service, "v1"),
    _info("Endpoints", Endpoints, "v1"),
    _info("EndpointSlice", EndpointSlice, "discovery.k8s.io/v1"),
    _info("Deployment", Deployment, "apps/v1"),
    _info("ReplicaSet", ReplicaSet, "apps/v1"),
    _info("Lease", Lease, "coordination.k8s.io/v1"),
    _info("Scale", Scale, "autoscaling/v1"),
    # meta.k8s.io: how Kubernetes names the options in errors (DeleteOptions.meta.k8s.io "" is invalid)
    _info("DeleteOptions", DeleteOptions, "meta.k8s.io/v1", "v1"),
)}
SUBRESOURCES = (None, "status", "scale")
DEFAULTERS.update(network_rules.DEFAULTERS)
VALIDATORS.update(network_rules.VALIDATORS)


def _check_type_meta(info: KindInfo, obj: dict) -> None:
    got_version, got_kind = obj.get("apiVersion"), obj.get("kind")
    if got_version not in (None, "") and got_version not in info.accepted_versions:
        raise errors.BadRequest(f"the API version in the data ({got_version}) does not match the expected API "
                                f"version ({info.api_version})",
                                causes=[errors.Cause("apiVersion", f"expected {info.api_version!r}, "
                                                                   f"got {got_version!r}", "FieldValueInvalid")])
    if got_kind not in (None, "") and got_kind != info.kind:
        raise errors.BadRequest(f"the kind in the data ({got_kind}) does not match the expected kind ({info.kind})",
                                causes=[errors.Cause("kind", f"expected {info.kind!r}, got {got_kind!r}",
                                                     "FieldValueInvalid")])


def validate(kind: str, obj: dict, *, old: dict | None = None, subresource: str | None = None,
             field_validation: str = "Strict", warnings: Optional[list[str]] = None) -> dict:
    """Decode, default and validate a wire object of `kind`; return the normalized wire dict.

    - `kind`: "Deployment", "Pod", ... (also "Scale", "DeleteOptions").
    - `subresource="scale"`: `obj` (and `old`) are autoscaling/v1 Scale objects
      of a `kind` workload. `subresource="status"`: the full object, as sent to
      `/status`; spec immutability is not checked (the server keeps the stored
      spec). Status is always checked for shape and ranges; the server decides
      whether a write may change it (call validate after resetting it).
    - `old`: the stored object on update; enables immutability rules.
    - `field_validation`: "Strict" (default) rejects unknown fields; "Ignore"
      drops them; "Warn" drops them and appends a message to `warnings`.

    Raises `errors.BadRequest` for decoding problems (unknown fields, wrong JSON
    types, apiVersion/kind mismatch) and `errors.Invalid` for rule violations,
    each with one `Cause` per problem. The result has apiVersion and kind set,
    defaults applied and None-valued fields dropped; `obj` is not modified.
    """
    if subresource not in SUBRESOURCES:
        raise errors.BadRequest(f"unknown subresource {subresource!r} for {kind} (expected status or scale)")
    base = KINDS.get(kind)
    if base is None:
        raise errors.BadRequest(f'no kind "{kind}" is registered (known kinds: {", ".join(sorted(KINDS))})')
    info = KINDS["Scale"] if subresource == "scale" else base
    if not isinstance(obj, dict):
        raise errors.BadRequest(f"{info.kind} body must be a JSON object, got {type(obj).__name__}")
    _check_type_meta(info, obj)
    version = info.api_version.rsplit("/", 1)[-1]
    model = decode(info.model, obj, kind=info.kind, version=version, field_validation=field_validation,
                   warnings=warnings)
    DEFAULTERS[info.kind](model)
    old_model = _decode_old(info, old, version) if old is not None else None
    prepare = network_rules.PREPARERS.get(info.kind)
    if prepare is not None and subresource is None:
        prepare(model, old_model)
    errs = FieldErrors()
    name = getattr(getattr(model, "metadata", None), "name", None)
    # An integer its Go type cannot hold is refused on its own, as Kubernetes' decoder would
    # (but as a field error, 422): the rules below need not reason about such values.
    validate_int_ranges(errs, model)
    errs.raise_if_any(info.qualified, name)
    VALIDATORS[info.kind](errs, model)
    if old_model is not None:
        validate_update(errs, info.kind, model, old_model, subresource=subresource)
        check_update = network_rules.UPDATE_VALIDATORS.get(info.kind)
        if check_update is not None and subresource is None:
            check_update(errs, model, old_model)
    errs.raise_if_any(info.qualified, name)
    body = model.model_dump(by_alias=True, exclude_none=True)
    if info.kind == "DeleteOptions":
        return body
    body.pop("apiVersion", None)
    body.pop("kind", None)
    return {"apiVersion": info.api_version, "kind": info.kind, **body}


def _decode_old(info: KindInfo, old: dict, version: str) -> Any:
    """The stored object as a defaulted model (what the update rules compare with)."""
    try:
        old_model = decode(info.model, old, kind=info.kind, version=version, field_validation="Ignore")
    except errors.ApiError as e:
        raise errors.ApiError(f"stored {info.qualified} cannot be decoded: {e.message}") from e
    DEFAULTERS[info.kind](old_model)
    return old_model


# Kinds whose status rules read nothing but the status (no spec, no defaulting of status).
_STATUS_VALIDATORS: dict[str, Callable[[FieldErrors, Any], None]] = {
    "Pod": validate_pod_status, "Deployment": validate_deployment_status,
                      "ReplicaSet": validate_replicaset_status}


def validate_status(kind: str, status: object, *, name: str | None = None) -> dict | None:
    """Decode and validate the status of a `/status` write on its own; return the normalized
    status dict — or None when `kind`'s status has no stand-alone rules (Node, Namespace:
    call `validate` on the whole object).

    The same outcome as `validate(kind, stored-with-this-status, old=stored,
    subresource="status")` — the same errors, with the same `status.…` paths — without
    decoding the stored metadata and spec twice more: they were validated when stored and a
    status write keeps them. The agents' pod status and the controllers' ReplicaSet and
    Deployment status are most of a busy cluster's writes.
    """
    check = _STATUS_VALIDATORS.get(kind)
    if check is None:
        return None
    info = KINDS[kind]
    model: Any = decode(info.model, {"status": status}, kind=info.kind, version=info.api_version.rsplit("/", 1)[-1])
    errs = FieldErrors()
    validate_int_ranges(errs, model.status, "status")
    errs.raise_if_any(info.qualified, name)
    check(errs, model.status)
    errs.raise_if_any(info.qualified, name)
    return model.status.model_dump(by_alias=True, exclude_none=True) if model.status is not None else {}
