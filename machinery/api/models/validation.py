"""Semantic validation of decoded objects, with Kubernetes' rules, paths and wording.

One function per kind (`validate_deployment`, ...) appends every problem to
a `FieldErrors`; shared pieces (object metadata, labels, pod spec, container,
probe, resources, label selector) take the field path they are checking so
the same code reports `spec.containers[0].image` for a Pod and
`spec.template.spec.containers[0].image` for a Deployment. Validation runs
after defaulting (as in Kubernetes), so it sees e.g. the filled-in rolling
update bounds when it checks "not both 0".

Update rules (`old` given) are in `validate_update`: Deployment and
ReplicaSet selectors are immutable; a Pod's spec may change only in
`containers[*].image`, `initContainers[*].image`, `activeDeadlineSeconds`,
added tolerations and `nodeName` (binding belongs to the server); a Node's
`podCIDR` may only go from unset to set.
"""
from __future__ import annotations

import json
import re
import typing
from typing import Annotated, Any, Callable, Optional, Union

from pydantic import BaseModel

from shoal.machinery.api import quantity, selectors
from shoal.machinery.api.models.apps import Deployment, DeploymentStatus, ReplicaSet, ReplicaSetStatus
from shoal.machinery.api.models.coordination import Lease
from shoal.machinery.api.models.core import (Container, Event, Namespace, Node, Pod, PodDNSConfig, PodSpec, PodStatus,
                                             PodTemplateSpec, Probe, ResourceRequirements)
from shoal.machinery.api.models.base import IntRange
from shoal.machinery.api.models.config import ConfigMap, Secret, decode_base64
from shoal.machinery.api.names import DNS1123_SUBDOMAIN_MAX
from shoal.machinery.api.models.field import FieldErrors
from shoal.machinery.api.models.imageref import parse_image_reference
from shoal.machinery.api.models.meta import DeleteOptions, LabelSelector, ObjectMeta, Scale
from shoal.machinery.api.names import (is_cidr, is_dns1123_label, is_dns1123_subdomain, is_env_var_name, is_ip,
                                       is_label_value, is_percent, is_qualified_name, is_valid_port_name,
                                       mask_trailing_dash, percent_error)

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
MAX_DNS_NAMESERVERS = 3             # dnsConfig's limits, glibc's (Kubernetes' MaxDNSNameservers...)
MAX_DNS_SEARCH_PATHS = 32
MAX_DNS_SEARCH_LIST_CHARS = 2048
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PROTOCOLS = ("TCP", "UDP", "SCTP")
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice",
                   "BlockDevice")
EMPTY_DIR_MEDIA = ("", "Memory")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TOLERATION_OPERATORS = ("Exists", "Equal")
CONDITION_STATUSES = ("True", "False", "Unknown")
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
NAMESPACE_PHASES = ("Active", "Terminating")
NODE_ADDRESS_TYPES = ("Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS")
EVENT_TYPES = ("Normal", "Warning")
STRATEGY_TYPES = ("Recreate", "RollingUpdate")
LABEL_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
PROPAGATION_POLICIES = ("Orphan", "Background", "Foreground")
STANDARD_FINALIZERS = ("kubernetes", "orphan", "foregroundDeletion")
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
MAX_INT32 = 2**31 - 1
_HTTP_HEADER_NAME = re.compile(r"^[-A-Za-z0-9!#$%&'*+.^_`|~]+\Z")
# What an HTTP header value may hold (RFC 9110 field-value): visible characters, spaces and
# tabs; never CR or LF, which would end the header and start another in the probe's request.
_HTTP_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\U0010ffff]*\Z")


# --- integer ranges ------------------------------------------------------------------
# Where the ranged integers (`base.Int32`/`Int64`) of a model class are, computed once per
# class: [(attribute, wire name, spec)], a spec being ("int", IntRange), ("model", class),
# ("list", spec), ("dict", spec) or ("any", [spec, ...]) for a union (IntOrString).
_INT_PLANS: dict[type[BaseModel], list[tuple[str, str, tuple]]] = {}


def _int_spec(tp: Any) -> Optional[tuple]:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        rng = next((m for m in tp.__metadata__ if isinstance(m, IntRange)), None)
        return ("int", rng) if rng is not None else _int_spec(typing.get_args(tp)[0])
    if origin is Union:
        specs = [sp for a in typing.get_args(tp) if a is not type(None) and (sp := _int_spec(a))]
        return None if not specs else specs[0] if len(specs) == 1 else ("any", specs)
    if origin is list:
        inner = _int_spec(typing.get_args(tp)[0])
        return ("list", inner) if inner else None
    if origin is dict:
        inner = _int_spec(typing.get_args(tp)[1])
        return ("dict", inner) if inner else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return ("model", tp) if _int_plan(tp) else None
    return None


def _int_plan(cls: type[BaseModel]) -> list[tuple[str, str, tuple]]:
    plan = _INT_PLANS.get(cls)
    if plan is None:
        _INT_PLANS[cls] = []                      # a class that holds itself ends here
        hints = typing.get_type_hints(cls, include_extras=True)
        plan = [(name, f.alias or name, sp) for name, f in cls.model_fields.items()
                if (sp := _int_spec(hints[name]))]
        _INT_PLANS[cls] = plan
    return plan


def _check_int(errs: FieldErrors, spec: tuple, value: Any, path: str) -> None:
    if value is None:
        return
    kind = spec[0]
    if kind == "int":
        rng: IntRange = spec[1]
        if isinstance(value, int) and not isinstance(value, bool) and not rng.low <= value <= rng.high:
            errs.invalid(path, value, f"must be between {rng.low} and {rng.high}, inclusive (an {rng.name})")
    elif kind == "model":
        if isinstance(value, BaseModel):
            validate_int_ranges(errs, value, path)
    elif kind == "list":
        for i, v in enumerate(value if isinstance(value, list) else ()):
            _check_int(errs, spec[1], v, f"{path}[{i}]")
    elif kind == "dict":
        for k, v in (value.items() if isinstance(value, dict) else ()):
            _check_int(errs, spec[1], v, f"{path}[{k}]")
    else:
        for sp in spec[1]:
            _check_int(errs, sp, value, path)


def validate_int_ranges(errs: FieldErrors, model: Optional[BaseModel], path: str = "") -> None:
    """Every `Int32`/`Int64` field of `model` (recursively) within its Go type's range: a JSON
    number has no bound, and Kubernetes' decoder refuses what its int32/int64 cannot hold.
    Runs before the rules, which may then do arithmetic on any value."""
    if model is None:
        return
    for attr, wire, spec in _int_plan(type(model)):
        _check_int(errs, spec, getattr(model, attr), f"{path}.{wire}" if path else wire)


# --- metadata ------------------------------------------------------------------------

def validate_labels(errs: FieldErrors, labels: Optional[dict[str, str]], path: str) -> None:
    for k, v in (labels or {}).items():
        errs.invalid_all(path, k, is_qualified_name(k))
        errs.invalid_all(path, v, is_label_value(v))


def validate_annotations(errs: FieldErrors, annotations: Optional[dict[str, str]], path: str) -> None:
    total = 0
    for k, v in (annotations or {}).items():
        errs.invalid_all(path, k, is_qualified_name(k.lower()))
        total += len(k) + len(v)
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.too_long(path, f"must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes")


def validate_object_meta(errs: FieldErrors, meta: Optional[ObjectMeta], *, namespaced: bool,
                         name_check=is_dns1123_subdomain, path: str = "metadata") -> None:
    meta = meta or ObjectMeta()
    if not meta.name and not meta.generate_name:
        errs.required(f"{path}.name", "name or generateName is required")
    if meta.name:
        errs.invalid_all(f"{path}.name", meta.name, name_check(meta.name))
    if meta.generate_name:
        errs.invalid_all(f"{path}.generateName", meta.generate_name,
                         name_check(mask_trailing_dash(meta.generate_name)))
    if meta.namespace:
        if not namespaced:
            errs.forbidden(f"{path}.namespace", "not allowed on this type")
        else:
            errs.invalid_all(f"{path}.namespace", meta.namespace, is_dns1123_label(meta.namespace))
    errs.nonnegative(f"{path}.generation", meta.generation)
    errs.nonnegative(f"{path}.deletionGracePeriodSeconds", meta.deletion_grace_period_seconds)
    validate_labels(errs, meta.labels, f"{path}.labels")
    validate_annotations(errs, meta.annotations, f"{path}.annotations")
    controllers = 0
    for i, ref in enumerate(meta.owner_references or []):
        p = f"{path}.ownerReferences[{i}]"
        for attr, wire in (("api_version", "apiVersion"), ("kind", "kind"), ("name", "name")):
            if not getattr(ref, attr):
                errs.invalid(f"{p}.{wire}", getattr(ref, attr) or "", f"{wire} must not be empty")
        if not ref.uid:
            errs.invalid(f"{p}.uid", ref.uid or "", "uid must not be empty")
        if ref.controller:
            controllers += 1
    if controllers > 1:
        errs.invalid(f"{path}.ownerReferences", controllers, "Only one reference can have Controller set to true")
    seen: set[str] = set()
    for i, fin in enumerate(meta.finalizers or []):
        p = f"{path}.finalizers[{i}]"
        problems = is_qualified_name(fin)
        errs.invalid_all(p, fin, problems)
        if not problems and "/" not in fin and fin not in STANDARD_FINALIZERS:
            errs.invalid(p, fin, "name is neither a standard finalizer name nor is it fully qualified")
        if fin in seen:
            errs.duplicate(p, fin)
        seen.add(fin)
    if "orphan" in seen and "foregroundDeletion" in seen:
        errs.invalid(f"{path}.finalizers", list(meta.finalizers or []),
                     "finalizer orphan and foregroundDeletion cannot be both set")


def validate_template_meta(errs: FieldErrors, meta: Optional[ObjectMeta], path: str) -> None:
    meta = meta or ObjectMeta()
    validate_labels(errs, meta.labels, f"{path}.labels")
    validate_annotations(errs, meta.annotations, f"{path}.annotations")


def validate_label_selector(errs: FieldErrors, sel: LabelSelector, path: str) -> None:
    validate_labels(errs, sel.match_labels, f"{path}.matchLabels")
    for i, expr in enumerate(sel.match_expressions or []):
        p = f"{path}.matchExpressions[{i}]"
        if not expr.key:
            errs.required(f"{p}.key")
        else:
            errs.invalid_all(f"{p}.key", expr.key, is_qualified_name(expr.key))
        errs.one_of(f"{p}.operator", expr.operator, LABEL_SELECTOR_OPERATORS, required=True)
        if expr.operator in ("In", "NotIn") and not expr.values:
            errs.required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        if expr.operator in ("Exists", "DoesNotExist") and expr.values:
            errs.forbidden(f"{p}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        for j, v in enumerate(expr.values or []):
            errs.invalid_all(f"{p}.values[{j}]", v, is_label_value(v))


def _conditions(errs: FieldErrors, conds, path: str) -> None:
    for i, c in enumerate(conds or []):
        if not c.type:
            errs.required(f"{path}[{i}].type")
        errs.one_of(f"{path}[{i}].status", c.status, CONDITION_STATUSES, required=True)


def _quantity_problem(e: ValueError) -> str:
    """The parse error without its `invalid quantity '...': ` lead (the value is already in the message)."""
    msg = str(e)
    return msg.split(": ", 1)[1] if msg.startswith("invalid quantity") and ": " in msg else msg


# --- pods ----------------------------------------------------------------------------

def validate_resources(errs: FieldErrors, res: Optional[ResourceRequirements], path: str) -> None:
    if res is None:
        return
    parsed: dict[str, dict[str, Any]] = {"limits": {}, "requests": {}}
    for which in ("limits", "requests"):
        for name, value in (getattr(res, which) or {}).items():
            p = f"{path}.{which}[{name}]"
            if name not in STANDARD_RESOURCES and not name.startswith("hugepages-") and not (
                    "/" in name and not is_qualified_name(name)):
                errs.invalid(p, name, "must be a standard resource type or fully qualified")
                continue
            try:
                q = quantity.parse_quantity(value)
            except ValueError as e:
                errs.invalid(p, value, _quantity_problem(e))
                continue
            if q < 0:
                errs.invalid(p, value, "must be greater than or equal to 0")
                continue
            if name in ("memory", "ephemeral-storage") and q != q.to_integral_value():
                errs.invalid(p, value, f"must be a whole number of bytes (a fractional {name} quantity "
                                       f"such as '128m' means 0.128 bytes; did you mean '128Mi'?)")
                continue
            parsed[which][name] = q
    for name, req in parsed["requests"].items():
        lim = parsed["limits"].get(name)
        if lim is not None and req > lim:
            errs.invalid(f"{path}.requests[{name}]", (res.requests or {})[name],
                         f"must be less than or equal to {name} limit of {(res.limits or {})[name]}")


def _port_num_or_name(errs: FieldErrors, port, path: str) -> None:
    if port is None:
        errs.required(path)
    elif isinstance(port, int):
        if not 1 <= port <= 65535:
            errs.invalid(path, port, "must be between 1 and 65535, inclusive")
    else:
        errs.invalid_all(path, port, is_valid_port_name(port))


def validate_probe(errs: FieldErrors, probe: Optional[Probe], path: str, *, kind: str) -> None:
    if probe is None:
        return
    handlers = [(n, h) for n, h in (("exec", probe.exec), ("httpGet", probe.http_get),
                                    ("tcpSocket", probe.tcp_socket)) if h is not None]
    if not handlers:
        errs.required(path, "must specify a handler type")
    for name, _ in handlers[1:]:
        errs.forbidden(f"{path}.{name}", "may not specify more than 1 handler type")
    if probe.exec is not None and not probe.exec.command:
        errs.required(f"{path}.exec.command")
    if probe.http_get is not None:
        h = probe.http_get
        _port_num_or_name(errs, h.port, f"{path}.httpGet.port")
        errs.one_of(f"{path}.httpGet.scheme", h.scheme, ("HTTP", "HTTPS"), required=True)
        if not h.path:
            errs.required(f"{path}.httpGet.path")
        for i, hdr in enumerate(h.http_headers or []):
            if not hdr.name or not _HTTP_HEADER_NAME.match(hdr.name):
                errs.invalid(f"{path}.httpGet.httpHeaders[{i}].name", hdr.name or "",
                             "a valid HTTP header must consist of alphanumeric characters or '-'")
            if hdr.value and not _HTTP_HEADER_VALUE.match(hdr.value):
                errs.invalid(f"{path}.httpGet.httpHeaders[{i}].value", hdr.value,
                             "a valid HTTP header value must not contain control characters (CR, LF, NUL, ...)")
    if probe.tcp_socket is not None:
        _port_num_or_name(errs, probe.tcp_socket.port, f"{path}.tcpSocket.port")
    for attr, wire in (("initial_delay_seconds", "initialDelaySeconds"), ("timeout_seconds", "timeoutSeconds"),
                       ("period_seconds", "periodSeconds"), ("success_threshold", "successThreshold"),
                       ("failure_threshold", "failureThreshold")):
        errs.nonnegative(f"{path}.{wire}", getattr(probe, attr))
    if kind in ("livenessProbe", "startupProbe") and probe.success_threshold not in (None, 1):
        errs.invalid(f"{path}.successThreshold", probe.success_threshold, "must be 1")
    if probe.termination_grace_period_seconds is not None:
        if kind == "readinessProbe":
            errs.invalid(f"{path}.terminationGracePeriodSeconds", probe.termination_grace_period_seconds,
                         "must not be set for readinessProbes")
        else:
            errs.positive(f"{path}.terminationGracePeriodSeconds", probe.termination_grace_period_seconds)


def validate_container(errs: FieldErrors, c: Container, path: str, *, volumes: set[str], init: bool,
                       host_ports: set) -> None:
    if not c.name:
        errs.required(f"{path}.name")
    else:
        errs.invalid_all(f"{path}.name", c.name, is_dns1123_label(c.name))
    image_ok = False
    if not c.image:
        errs.required(f"{path}.image")
    elif c.image != c.image.strip():
        errs.invalid(f"{path}.image", c.image, "must not have leading or trailing whitespace")
    else:
        try:
            parse_image_reference(c.image)
            image_ok = True
        except ValueError as e:
            errs.invalid(f"{path}.image", c.image, str(e))
    # An unparseable image could not be given its default pull policy; one error about the image is enough.
    errs.one_of(f"{path}.imagePullPolicy", c.image_pull_policy, PULL_POLICIES, required=image_ok)
    errs.one_of(f"{path}.terminationMessagePolicy", c.termination_message_policy, TERMINATION_MESSAGE_POLICIES,
                required=True)
    for i, env in enumerate(c.env or []):
        if not env.name:
            errs.required(f"{path}.env[{i}].name")
        else:
            errs.invalid_all(f"{path}.env[{i}].name", env.name, is_env_var_name(env.name))
    port_names: set[str] = set()
    for i, port in enumerate(c.ports or []):
        p = f"{path}.ports[{i}]"
        if port.name:
            errs.invalid_all(f"{p}.name", port.name, is_valid_port_name(port.name))
            if port.name in port_names:
                errs.duplicate(f"{p}.name", port.name)
            port_names.add(port.name)
        if port.container_port is None or port.container_port == 0:
            errs.required(f"{p}.containerPort")
        elif not 1 <= port.container_port <= 65535:
            errs.invalid(f"{p}.containerPort", port.container_port, "must be between 1 and 65535, inclusive")
        if port.host_port:
            if not 1 <= port.host_port <= 65535:
                errs.invalid(f"{p}.hostPort", port.host_port, "must be between 1 and 65535, inclusive")
            else:
                key = (port.host_port, port.protocol, port.host_ip or "")
                if key in host_ports:
                    errs.duplicate(f"{p}.hostPort", f"{port.host_port}/{port.protocol}")
                host_ports.add(key)
        if port.host_ip:
            errs.invalid_all(f"{p}.hostIP", port.host_ip, is_ip(port.host_ip))
        errs.one_of(f"{p}.protocol", port.protocol, PROTOCOLS, required=True)
    validate_resources(errs, c.resources, f"{path}.resources")
    mount_paths: set[str] = set()
    for i, vm in enumerate(c.volume_mounts or []):
        p = f"{path}.volumeMounts[{i}]"
        if not vm.name:
            errs.required(f"{p}.name")
        elif vm.name not in volumes:
            errs.not_found(f"{p}.name", vm.name)
        if not vm.mount_path:
            errs.required(f"{p}.mountPath")
        elif vm.mount_path in mount_paths:
            errs.invalid(f"{p}.mountPath", vm.mount_path, "must be unique")
        else:
            mount_paths.add(vm.mount_path)
        if vm.sub_path:
            if vm.sub_path.startswith("/"):
                errs.invalid(f"{p}.subPath", vm.sub_path, "must be a relative path")
            if ".." in vm.sub_path.split("/"):
                errs.invalid(f"{p}.subPath", vm.sub_path, "must not contain '..'")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = getattr(c, {"livenessProbe": "liveness_probe", "readinessProbe": "readiness_probe",
                            "startupProbe": "startup_probe"}[kind])
        if probe is not None and init:
            errs.forbidden(f"{path}.{kind}", "may not be set for init containers")
            continue
        validate_probe(errs, probe, f"{path}.{kind}", kind=kind)
    sc = c.security_context
    if sc is not None:
        for attr, wire in (("run_as_user", "runAsUser"), ("run_as_group", "runAsGroup")):
            v = getattr(sc, attr)
            if v is not None and not 0 <= v <= MAX_INT32:
                errs.invalid(f"{path}.securityContext.{wire}", v, f"must be between 0 and {MAX_INT32}, inclusive")
        if sc.privileged and sc.allow_privilege_escalation is False:
            errs.invalid(f"{path}.securityContext", sc.allow_privilege_escalation,
                         "cannot set `allowPrivilegeEscalation` to false and `privileged` to true")
        if sc.run_as_non_root and sc.run_as_user == 0:
            errs.invalid(f"{path}.securityContext.runAsNonRoot", True,
                         "must be false when `runAsUser` is 0 (root)")
        validate_seccomp_profile(errs, sc.seccomp_profile, f"{path}.securityContext.seccompProfile")


SECCOMP_TYPES = ("RuntimeDefault", "Unconfined", "Localhost")


def validate_seccomp_profile(errs: FieldErrors, sp: Any, path: str) -> None:
    """Kubernetes' rules: a type is required; `localhostProfile` only, and always, with
    `Localhost`, as a relative path inside the node's seccomp directory."""
    if sp is None:
        return
    if not sp.type:
        errs.required(f"{path}.type")
    elif sp.type not in SECCOMP_TYPES:
        errs.not_supported(f"{path}.type", sp.type, SECCOMP_TYPES)
    if sp.type == "Localhost":
        if not sp.localhost_profile:
            errs.required(f"{path}.localhostProfile", "must be set when seccomp type is Localhost")
        elif sp.localhost_profile.startswith("/") or ".." in sp.localhost_profile.split("/"):
            errs.invalid(f"{path}.localhostProfile", sp.localhost_profile,
                         "must be a relative path without '..' (inside the node's seccomp profile directory)")
    elif sp.localhost_profile is not None:
        errs.invalid(f"{path}.localhostProfile", sp.localhost_profile,
                     "can only be set when seccomp type is Localhost")


def validate_pod_spec(errs: FieldErrors, spec: Optional[PodSpec], path: str) -> None:
    spec = spec or PodSpec()
    volumes: set[str] = set()
    for i, vol in enumerate(spec.volumes or []):
        p = f"{path}.volumes[{i}]"
        if not vol.name:
            errs.required(f"{p}.name")
        else:
            errs.invalid_all(f"{p}.name", vol.name, is_dns1123_label(vol.name))
            if vol.name in volumes:
                errs.duplicate(f"{p}.name", vol.name)
            volumes.add(vol.name)
        sources = [n for n, s in (("emptyDir", vol.empty_dir), ("hostPath", vol.host_path)) if s is not None]
        if not sources:
            errs.required(p, "must specify a volume type")
        for extra in sources[1:]:
            errs.forbidden(f"{p}.{extra}", "may not specify more than 1 volume type")
        if vol.host_path is not None:
            if not vol.host_path.path:
                errs.required(f"{p}.hostPath.path")
            elif not vol.host_path.path.startswith("/"):
                errs.invalid(f"{p}.hostPath.path", vol.host_path.path, "must be an absolute path")
            elif ".." in vol.host_path.path.split("/"):
                errs.invalid(f"{p}.hostPath.path", vol.host_path.path, "must not contain '..'")
            if vol.host_path.type:
                errs.one_of(f"{p}.hostPath.type", vol.host_path.type, HOST_PATH_TYPES)
        if vol.empty_dir is not None:
            if vol.empty_dir.medium:
                errs.one_of(f"{p}.emptyDir.medium", vol.empty_dir.medium, EMPTY_DIR_MEDIA)
            if vol.empty_dir.size_limit is not None:
                try:
                    if quantity.parse_quantity(vol.empty_dir.size_limit) < 0:
                        errs.invalid(f"{p}.emptyDir.sizeLimit", vol.empty_dir.size_limit,
                                     "must be greater than or equal to 0")
                except ValueError as e:
                    errs.invalid(f"{p}.emptyDir.sizeLimit", vol.empty_dir.size_limit, _quantity_problem(e))
    names: set[str] = set()
    host_ports: set = set()
    if not spec.containers:
        errs.required(f"{path}.containers")
    for field, containers, init in (("initContainers", spec.init_containers, True),
                                    ("containers", spec.containers, False)):
        for i, c in enumerate(containers or []):
            p = f"{path}.{field}[{i}]"
            validate_container(errs, c, p, volumes=volumes, init=init, host_ports=host_ports)
            if c.name:
                if c.name in names:
                    errs.duplicate(f"{p}.name", c.name)
                names.add(c.name)
    errs.one_of(f"{path}.restartPolicy", spec.restart_policy, RESTART_POLICIES, required=True)
    errs.one_of(f"{path}.dnsPolicy", spec.dns_policy, DNS_POLICIES, required=True)
    validate_pod_dns_config(errs, spec.dns_config, spec.dns_policy, f"{path}.dnsConfig")
    errs.nonnegative(f"{path}.terminationGracePeriodSeconds", spec.termination_grace_period_seconds)
    ads = spec.active_deadline_seconds
    if ads is not None and not 1 <= ads <= MAX_INT32:
        errs.invalid(f"{path}.activeDeadlineSeconds", ads, f"must be between 1 and {MAX_INT32}, inclusive")
    validate_labels(errs, spec.node_selector, f"{path}.nodeSelector")
    if spec.node_name:
        errs.invalid_all(f"{path}.nodeName", spec.node_name, is_dns1123_subdomain(spec.node_name))
    if spec.hostname:
        errs.invalid_all(f"{path}.hostname", spec.hostname, is_dns1123_label(spec.hostname))
    if spec.scheduler_name:
        errs.invalid_all(f"{path}.schedulerName", spec.scheduler_name, is_dns1123_subdomain(spec.scheduler_name))
    for i, ref in enumerate(spec.image_pull_secrets or []):
        # Kubernetes only warns about an empty name; a name no Secret can have is refused here
        if not ref.name:
            errs.required(f"{path}.imagePullSecrets[{i}].name")
        else:
            errs.invalid_all(f"{path}.imagePullSecrets[{i}].name", ref.name, is_dns1123_subdomain(ref.name))
    psc = spec.security_context
    if psc is not None:
        for attr, wire in (("run_as_user", "runAsUser"), ("run_as_group", "runAsGroup"), ("fs_group", "fsGroup")):
            v = getattr(psc, attr)
            if v is not None and not 0 <= v <= MAX_INT32:
                errs.invalid(f"{path}.securityContext.{wire}", v, f"must be between 0 and {MAX_INT32}, inclusive")
        for i, g in enumerate(psc.supplemental_groups or []):
            if not 0 <= g <= MAX_INT32:
                errs.invalid(f"{path}.securityContext.supplementalGroups[{i}]", g,
                             f"must be between 0 and {MAX_INT32}, inclusive")
        validate_seccomp_profile(errs, psc.seccomp_profile, f"{path}.securityContext.seccompProfile")
    for i, t in enumerate(spec.tolerations or []):
        p = f"{path}.tolerations[{i}]"
        if t.key:
            errs.invalid_all(f"{p}.key", t.key, is_qualified_name(t.key))
        elif t.operator != "Exists":
            errs.invalid(f"{p}.operator", t.operator or "",
                         "operator must be Exists when `key` is empty, which means \"match all values and all keys\"")
        if t.operator:
            errs.one_of(f"{p}.operator", t.operator, TOLERATION_OPERATORS)
        if t.operator == "Exists" and t.value:
            errs.invalid(f"{p}.operator", t.value, "value must be empty when `operator` is 'Exists'")
        elif t.value:
            errs.invalid_all(f"{p}.value", t.value, is_label_value(t.value))
        if t.effect:
            errs.one_of(f"{p}.effect", t.effect, TAINT_EFFECTS)
        if t.toleration_seconds is not None and t.effect != "NoExecute":
            errs.invalid(f"{p}.effect", t.effect or "", "effect must be 'NoExecute' when `tolerationSeconds` is set")


def validate_pod_dns_config(errs: FieldErrors, cfg: Optional[PodDNSConfig], policy: Optional[str], path: str) -> None:
    """Kubernetes' validatePodDNSConfig: `dnsPolicy: None` needs a dnsConfig with a nameserver;
    at most 3 nameservers, each an IP address; at most 32 search domains, 2048 characters in
    all, each a DNS subdomain (a trailing dot allowed); every option named."""
    if policy == "None":
        if cfg is None:
            errs.required(path, "must provide `dnsConfig` when `dnsPolicy` is None")
            return
        if not cfg.nameservers:
            errs.required(f"{path}.nameservers", "must provide at least one DNS nameserver when `dnsPolicy` is None")
            return
    if cfg is None:
        return
    nameservers, searches = cfg.nameservers or [], cfg.searches or []
    if len(nameservers) > MAX_DNS_NAMESERVERS:
        errs.invalid(f"{path}.nameservers", nameservers, f"must not have more than {MAX_DNS_NAMESERVERS} nameservers")
    for i, ns in enumerate(nameservers):
        errs.invalid_all(f"{path}.nameservers[{i}]", ns, is_ip(ns))
    if len(searches) > MAX_DNS_SEARCH_PATHS:
        errs.invalid(f"{path}.searches", searches, f"must not have more than {MAX_DNS_SEARCH_PATHS} search paths")
    if len(" ".join(searches)) > MAX_DNS_SEARCH_LIST_CHARS:
        errs.invalid(f"{path}.searches", searches, f"must not have more than {MAX_DNS_SEARCH_LIST_CHARS} characters "
                                                   "(including spaces) in the search list")
    for i, search in enumerate(searches):
        trimmed = search[:-1] if search.endswith(".") else search
        errs.invalid_all(f"{path}.searches[{i}]", trimmed, is_dns1123_subdomain(trimmed))
    for i, opt in enumerate(cfg.options or []):
        if not opt.name:
            errs.required(f"{path}.options[{i}]", "must not be empty")


def validate_pod_template(errs: FieldErrors, tmpl: Optional[PodTemplateSpec], path: str,
                          selector: Optional[LabelSelector], *, selector_ok: bool) -> None:
    if tmpl is None:
        errs.required(path)
        return
    validate_template_meta(errs, tmpl.metadata, f"{path}.metadata")
    labels = (tmpl.metadata.labels if tmpl.metadata else None) or {}
    if selector is not None and selector_ok:
        try:
            sel = selectors.selector_from_label_selector(selector.wire())
        except ValueError:
            sel = None
        if sel is not None and not sel.empty and not sel.matches(labels):
            errs.invalid(f"{path}.metadata.labels", labels, "`selector` does not match template `labels`")
    validate_pod_spec(errs, tmpl.spec, f"{path}.spec")
    spec = tmpl.spec or PodSpec()
    if spec.restart_policy and spec.restart_policy != "Always":
        errs.not_supported(f"{path}.spec.restartPolicy", spec.restart_policy, ["Always"])
    if spec.active_deadline_seconds is not None:
        errs.forbidden(f"{path}.spec.activeDeadlineSeconds", "activeDeadlineSeconds in ReplicaSet is not Supported")


def validate_pod_status(errs: FieldErrors, st: Optional[PodStatus], path: str = "status") -> None:
    if st is None:
        return
    errs.one_of(f"{path}.phase", st.phase, POD_PHASES)
    _conditions(errs, st.conditions, f"{path}.conditions")
    for attr, wire in (("host_ip", "hostIP"), ("pod_ip", "podIP")):
        v = getattr(st, attr)
        if v:
            errs.invalid_all(f"{path}.{wire}", v, is_ip(v))
    for attr, wire in (("host_ips", "hostIPs"), ("pod_ips", "podIPs")):
        for i, ip in enumerate(getattr(st, attr) or []):
            errs.invalid_all(f"{path}.{wire}[{i}].ip", ip.ip or "", is_ip(ip.ip or ""))
    if st.pod_ip and st.pod_ips and st.pod_ips[0].ip != st.pod_ip:
        errs.invalid(f"{path}.podIPs[0].ip", st.pod_ips[0].ip, "must match status.podIP")
    for field in ("init_container_statuses", "container_statuses"):
        wire = "initContainerStatuses" if field.startswith("init") else "containerStatuses"
        for i, cs in enumerate(getattr(st, field) or []):
            if not cs.name:
                errs.required(f"{path}.{wire}[{i}].name")
            errs.nonnegative(f"{path}.{wire}[{i}].restartCount", cs.restart_count)


def validate_pod(errs: FieldErrors, pod: Pod) -> None:
    validate_object_meta(errs, pod.metadata, namespaced=True)
    validate_pod_spec(errs, pod.spec, "spec")
    validate_pod_status(errs, pod.status)


# --- apps ------------------------------------------------------------------------------

def _selector(errs: FieldErrors, sel: Optional[LabelSelector], path: str, kind: str) -> bool:
    """Validate a workload selector; True when it is usable for the template check."""
    if sel is None:
        errs.required(path)
        return False
    before = len(errs)
    if not sel.match_labels and not sel.match_expressions:
        errs.invalid(path, sel.wire(), f"empty selector is invalid for {kind}")
        return False
    validate_label_selector(errs, sel, path)
    return len(errs) == before


def _int_or_percent(errs: FieldErrors, value, path: str, *, max_100: bool) -> Optional[int]:
    """Validate an int-or-percent; return its number (for percents, the percentage) or None if invalid."""
    if value is None:
        return None
    if isinstance(value, str):
        if not is_percent(value):
            errs.invalid(path, value, percent_error())
            return None
        n = int(value[:-1])
        if max_100 and n > 100:
            errs.invalid(path, value, "must not be greater than 100%")
        return n
    if value < 0:
        errs.invalid(path, value, "must be greater than or equal to 0")
        return None
    return value


def _replica_status(errs: FieldErrors, st, path: str, counters: tuple[tuple[str, str], ...],
                    at_most_replicas: tuple[tuple[str, str], ...]) -> None:
    """Status of a replica controller: every counter ≥ 0, the named ones ≤ replicas,
    availableReplicas ≤ readyReplicas, then its conditions."""
    for attr, wire in counters:
        errs.nonnegative(f"{path}.{wire}", getattr(st, attr))
    r = st.replicas or 0
    for attr, wire in at_most_replicas:
        if (getattr(st, attr) or 0) > r:
            errs.invalid(f"{path}.{wire}", getattr(st, attr), "cannot be greater than status.replicas")
    if (st.available_replicas or 0) > (st.ready_replicas or 0):
        errs.invalid(f"{path}.availableReplicas", st.available_replicas, "cannot be greater than readyReplicas")
    _conditions(errs, st.conditions, f"{path}.conditions")


def validate_deployment_status(errs: FieldErrors, st: Optional[DeploymentStatus], path: str = "status") -> None:
    if st is None:
        return
    _replica_status(errs, st, path,
                    (("observed_generation", "observedGeneration"), ("replicas", "replicas"),
                     ("updated_replicas", "updatedReplicas"), ("ready_replicas", "readyReplicas"),
                     ("available_replicas", "availableReplicas"), ("unavailable_replicas", "unavailableReplicas"),
                     ("collision_count", "collisionCount")),
                    (("updated_replicas", "updatedReplicas"), ("ready_replicas", "readyReplicas"),
                     ("available_replicas", "availableReplicas")))


def validate_deployment(errs: FieldErrors, d: Deployment) -> None:
    validate_object_meta(errs, d.metadata, namespaced=True)
    spec = d.spec
    if spec is None:
        errs.required("spec")
        return
    errs.nonnegative("spec.replicas", spec.replicas)
    ok = _selector(errs, spec.selector, "spec.selector", "deployment")
    validate_pod_template(errs, spec.template, "spec.template", spec.selector, selector_ok=ok)
    strategy = spec.strategy
    if strategy is not None:
        errs.one_of("spec.strategy.type", strategy.type, STRATEGY_TYPES, required=True)
        ru = strategy.rolling_update
        if strategy.type == "Recreate" and ru is not None:
            errs.forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
        elif strategy.type == "RollingUpdate" and ru is not None:
            surge = _int_or_percent(errs, ru.max_surge, "spec.strategy.rollingUpdate.maxSurge", max_100=False)
            unavail = _int_or_percent(errs, ru.max_unavailable, "spec.strategy.rollingUpdate.maxUnavailable",
                                      max_100=True)
            if surge == 0 and unavail == 0:
                errs.invalid("spec.strategy.rollingUpdate.maxUnavailable", ru.max_unavailable,
                             "may not be 0 when `maxSurge` is 0")
    errs.nonnegative("spec.minReadySeconds", spec.min_ready_seconds)
    errs.nonnegative("spec.revisionHistoryLimit", spec.revision_history_limit)
    pds = spec.progress_deadline_seconds
    if pds is not None:
        errs.nonnegative("spec.progressDeadlineSeconds", pds)
        if pds >= 0 and pds <= (spec.min_ready_seconds or 0):
            errs.invalid("spec.progressDeadlineSeconds", pds, "must be greater than minReadySeconds")
    validate_deployment_status(errs, d.status)


def validate_replicaset_status(errs: FieldErrors, st: Optional[ReplicaSetStatus], path: str = "status") -> None:
    if st is None:
        return
    _replica_status(errs, st, path,
                    (("replicas", "replicas"), ("fully_labeled_replicas", "fullyLabeledReplicas"),
                     ("ready_replicas", "readyReplicas"), ("available_replicas", "availableReplicas"),
                     ("observed_generation", "observedGeneration")),
                    (("fully_labeled_replicas", "fullyLabeledReplicas"), ("ready_replicas", "readyReplicas"),
                     ("available_replicas", "availableReplicas")))


def validate_replicaset(errs: FieldErrors, rs: ReplicaSet) -> None:
    validate_object_meta(errs, rs.metadata, namespaced=True)
    spec = rs.spec
    if spec is None:
        errs.required("spec")
        return
    errs.nonnegative("spec.replicas", spec.replicas)
    errs.nonnegative("spec.minReadySeconds", spec.min_ready_seconds)
    ok = _selector(errs, spec.selector, "spec.selector", "replicaset")
    validate_pod_template(errs, spec.template, "spec.template", spec.selector, selector_ok=ok)
    validate_replicaset_status(errs, rs.status)


# --- cluster objects ---------------------------------------------------------------------

def validate_namespace(errs: FieldErrors, ns: Namespace) -> None:
    validate_object_meta(errs, ns.metadata, namespaced=False, name_check=is_dns1123_label)
    for i, fin in enumerate((ns.spec.finalizers if ns.spec else None) or []):
        problems = is_qualified_name(fin)
        errs.invalid_all(f"spec.finalizers[{i}]", fin, problems)
        if not problems and "/" not in fin and fin not in STANDARD_FINALIZERS:
            errs.invalid(f"spec.finalizers[{i}]", fin,
                         "name is neither a standard finalizer name nor is it fully qualified")
    if ns.status is not None:
        errs.one_of("status.phase", ns.status.phase, NAMESPACE_PHASES)
        _conditions(errs, ns.status.conditions, "status.conditions")


def _quantities(errs: FieldErrors, rl: Optional[dict[str, str]], path: str) -> None:
    for name, value in (rl or {}).items():
        try:
            if quantity.parse_quantity(value) < 0:
                errs.invalid(f"{path}[{name}]", value, "must be greater than or equal to 0")
        except ValueError as e:
            errs.invalid(f"{path}[{name}]", value, _quantity_problem(e))


def validate_node(errs: FieldErrors, node: Node) -> None:
    validate_object_meta(errs, node.metadata, namespaced=False)
    spec = node.spec
    if spec is not None:
        if spec.pod_cidr:
            errs.invalid_all("spec.podCIDR", spec.pod_cidr, is_cidr(spec.pod_cidr))
        for i, cidr in enumerate(spec.pod_cidrs or []):
            errs.invalid_all(f"spec.podCIDRs[{i}]", cidr, is_cidr(cidr))
        if spec.pod_cidr and spec.pod_cidrs and spec.pod_cidrs[0] != spec.pod_cidr:
            errs.invalid("spec.podCIDRs[0]", spec.pod_cidrs[0], "must match spec.podCIDR")
        seen = set()
        for i, t in enumerate(spec.taints or []):
            p = f"spec.taints[{i}]"
            if not t.key:
                errs.required(f"{p}.key")
            else:
                errs.invalid_all(f"{p}.key", t.key, is_qualified_name(t.key))
            if t.value:
                errs.invalid_all(f"{p}.value", t.value, is_label_value(t.value))
            errs.one_of(f"{p}.effect", t.effect, TAINT_EFFECTS, required=True)
            if (t.key, t.effect) in seen:
                errs.duplicate(p, f"{t.key}:{t.effect}")
            seen.add((t.key, t.effect))
    st = node.status
    if st is not None:
        _quantities(errs, st.capacity, "status.capacity")
        _quantities(errs, st.allocatable, "status.allocatable")
        _conditions(errs, st.conditions, "status.conditions")
        for i, a in enumerate(st.addresses or []):
            errs.one_of(f"status.addresses[{i}].type", a.type, NODE_ADDRESS_TYPES, required=True)
            if not a.address:
                errs.required(f"status.addresses[{i}].address")
            elif a.type in ("InternalIP", "ExternalIP"):
                errs.invalid_all(f"status.addresses[{i}].address", a.address, is_ip(a.address))
        ep = st.daemon_endpoints.kubelet_endpoint if st.daemon_endpoints else None
        if ep is not None and ep.port is not None and not 0 <= ep.port <= 65535:
            errs.invalid("status.daemonEndpoints.kubeletEndpoint.Port", ep.port,
                         "must be between 0 and 65535, inclusive")


def validate_event(errs: FieldErrors, ev: Event) -> None:
    validate_object_meta(errs, ev.metadata, namespaced=True)
    io = ev.involved_object
    ns = ev.metadata.namespace if ev.metadata else None
    if io is None:
        errs.required("involvedObject")
    elif io.namespace and ns and io.namespace != ns:
        errs.invalid("involvedObject.namespace", io.namespace, "does not match event.namespace")
    errs.one_of("type", ev.type, EVENT_TYPES)
    errs.nonnegative("count", ev.count)
    if ev.series is not None:
        errs.nonnegative("series.count", ev.series.count)
    if ev.reason and len(ev.reason) > 128:
        errs.invalid("reason", ev.reason[:40] + "...", "can have at most 128 characters")


def validate_lease(errs: FieldErrors, lease: Lease) -> None:
    validate_object_meta(errs, lease.metadata, namespaced=True)
    spec = lease.spec
    if spec is not None:
        errs.positive("spec.leaseDurationSeconds", spec.lease_duration_seconds)
        errs.nonnegative("spec.leaseTransitions", spec.lease_transitions)


def validate_scale(errs: FieldErrors, scale: Scale) -> None:
    validate_object_meta(errs, scale.metadata, namespaced=True)
    errs.nonnegative("spec.replicas", scale.spec.replicas if scale.spec else None)


def validate_delete_options(errs: FieldErrors, opts: DeleteOptions) -> None:
    if opts.grace_period_seconds is not None:
        errs.nonnegative("gracePeriodSeconds", opts.grace_period_seconds)
    errs.one_of("propagationPolicy", opts.propagation_policy, PROPAGATION_POLICIES)
    if opts.orphan_dependents is not None and opts.propagation_policy:
        errs.invalid("propagationPolicy", opts.propagation_policy,
                     "orphanDependents and deletionPropagation cannot be both set")
    validate_dry_run(errs, opts.dry_run)


DRY_RUN_VALUES = ("All",)


def validate_dry_run(errs: FieldErrors, values: Optional[list[str]], path: str = "dryRun") -> None:
    """`dryRun` of any write's options (Kubernetes' ValidateDryRun): only "All" is known."""
    if values and any(v not in DRY_RUN_VALUES for v in values):
        errs.not_supported(path, values, DRY_RUN_VALUES)


# --- configuration: ConfigMap, Secret ------------------------------------------------------

MAX_CONFIG_SIZE = 1024 * 1024       # Kubernetes' MaxSecretSize, the bound of a ConfigMap's data too
CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"
_CONFIG_KEY = re.compile(f"^{CONFIG_KEY_FMT}\\Z")
_CONFIG_KEY_MESSAGE = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
                       "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
                       f"'{CONFIG_KEY_FMT}')")
IMMUTABLE_WHEN_SET = "field is immutable when `immutable` is set"
REDACTED = "<secret contents redacted>"
# Secret types whose data Kubernetes checks, and the keys they need.
SECRET_TYPE_OPAQUE = "Opaque"
SECRET_TYPE_SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"
SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"
SECRET_TYPE_DOCKERCFG, DOCKERCFG_KEY = "kubernetes.io/dockercfg", ".dockercfg"
SECRET_TYPE_DOCKER_CONFIG_JSON, DOCKER_CONFIG_JSON_KEY = "kubernetes.io/dockerconfigjson", ".dockerconfigjson"
SECRET_TYPE_BASIC_AUTH, BASIC_AUTH_KEYS = "kubernetes.io/basic-auth", ("username", "password")
SECRET_TYPE_SSH_AUTH, SSH_AUTH_KEY = "kubernetes.io/ssh-auth", "ssh-privatekey"
SECRET_TYPE_TLS, TLS_KEYS = "kubernetes.io/tls", ("tls.crt", "tls.key")


def is_config_key(key: str) -> list[str]:
    """Kubernetes' IsConfigMapKey: the key of a ConfigMap or Secret (it becomes a file name)."""
    problems = []
    if len(key.encode()) > DNS1123_SUBDOMAIN_MAX:
        problems.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not _CONFIG_KEY.match(key):
        problems.append(_CONFIG_KEY_MESSAGE)
    if key == ".":
        problems.append("must not be '.'")
    elif key == "..":
        problems.append("must not be '..'")
    elif key.startswith(".."):
        problems.append("must not start with '..'")
    return problems


def _decoded_size(values: Optional[dict[str, str]]) -> int:
    # values were checked (and made canonical) by the decoder; a stored object is re-decoded
    return sum(len(decode_base64(v)) for v in (values or {}).values())


def validate_configmap(errs: FieldErrors, cm: ConfigMap) -> None:
    validate_object_meta(errs, cm.metadata, namespaced=True)
    data, binary = cm.data or {}, cm.binary_data or {}
    for key in data:
        errs.invalid_all(f"data[{key}]", key, is_config_key(key))
        if key in binary:
            errs.invalid(f"data[{key}]", key, "duplicate of key present in binaryData")
    for key in binary:
        errs.invalid_all(f"binaryData[{key}]", key, is_config_key(key))
    total = sum(len(v.encode()) for v in data.values()) + _decoded_size(binary)
    if total > MAX_CONFIG_SIZE:
        errs.too_long("", f"may not be more than {MAX_CONFIG_SIZE} bytes (data and binaryData hold {total})")


def _secret_json(errs: FieldErrors, data: dict[str, str], key: str) -> None:
    """The content of data[key] must be a JSON object (a docker config)."""
    try:
        value = json.loads(decode_base64(data[key]))
    except ValueError as e:
        errs.invalid(f"data[{key}]", REDACTED, f"not valid JSON: {e}")
        return
    if not isinstance(value, dict):
        errs.invalid(f"data[{key}]", REDACTED, f"must be a JSON object, not {type(value).__name__}")


def validate_secret(errs: FieldErrors, s: Secret) -> None:
    validate_object_meta(errs, s.metadata, namespaced=True)
    data = s.data or {}
    for key in data:
        errs.invalid_all(f"data[{key}]", key, is_config_key(key))
    total = _decoded_size(data)
    if total > MAX_CONFIG_SIZE:
        errs.too_long("data", f"may not be more than {MAX_CONFIG_SIZE} bytes (the data holds {total})")
    annotations = (s.metadata.annotations if s.metadata else None) or {}
    if s.type == SECRET_TYPE_SERVICE_ACCOUNT_TOKEN:
        if not annotations.get(SERVICE_ACCOUNT_NAME_ANNOTATION):
            errs.required(f"metadata.annotations[{SERVICE_ACCOUNT_NAME_ANNOTATION}]")
    elif s.type in (SECRET_TYPE_DOCKERCFG, SECRET_TYPE_DOCKER_CONFIG_JSON):
        key = DOCKERCFG_KEY if s.type == SECRET_TYPE_DOCKERCFG else DOCKER_CONFIG_JSON_KEY
        if key not in data:
            errs.required(f"data[{key}]", f"a {s.type} secret holds its config under {key}")
        else:
            _secret_json(errs, data, key)
    elif s.type == SECRET_TYPE_BASIC_AUTH:
        # either may be empty, but one of them must be there
        if not any(k in data for k in BASIC_AUTH_KEYS):
            for k in BASIC_AUTH_KEYS:
                errs.required(f"data[{k}]")
    elif s.type == SECRET_TYPE_SSH_AUTH:
        if not data.get(SSH_AUTH_KEY):
            errs.required(f"data[{SSH_AUTH_KEY}]")
    elif s.type == SECRET_TYPE_TLS:
        for k in TLS_KEYS:
            if k not in data:
                errs.required(f"data[{k}]")


def validate_config_update(errs: FieldErrors, kind: str, new: Any, old: Any) -> None:
    """ConfigMap and Secret updates: a Secret's type never changes; once `immutable: true`
    is stored, the flag stays and the data (data, binaryData) may not change."""
    if kind == "Secret" and new.type != old.type:
        errs.invalid("type", new.type, "field is immutable")
    if old.immutable:
        if not new.immutable:
            errs.forbidden("immutable", IMMUTABLE_WHEN_SET)
        if (new.data or {}) != (old.data or {}):
            errs.forbidden("data", IMMUTABLE_WHEN_SET)
        if kind == "ConfigMap" and (new.binary_data or {}) != (old.binary_data or {}):
            errs.forbidden("binaryData", IMMUTABLE_WHEN_SET)


VALIDATORS: dict[str, Callable[[FieldErrors, Any], None]] = {
    "Namespace": validate_namespace, "Pod": validate_pod, "Node": validate_node, "Event": validate_event,
    "Deployment": validate_deployment, "ReplicaSet": validate_replicaset, "Lease": validate_lease,
    "Scale": validate_scale, "DeleteOptions": validate_delete_options,
    "ConfigMap": validate_configmap, "Secret": validate_secret,
}


# --- updates ----------------------------------------------------------------------------

POD_MUTABLE_MESSAGE = ("pod updates may not change fields other than `spec.containers[*].image`, "
                       "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.nodeName` "
                       "or `spec.tolerations` (only additions to existing tolerations)")


def _first_difference(a: Any, b: Any, path: str) -> Optional[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return path
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else path


def _mask_pod_spec(spec: dict, old_spec: dict) -> dict:
    """The new spec with the mutable fields set to the old values, for comparison."""
    out = dict(spec)
    for field in ("containers", "initContainers"):
        new_cs, old_cs = out.get(field) or [], old_spec.get(field) or []
        if field in out and len(new_cs) == len(old_cs):
            out[field] = [{**n, "image": o.get("image")} for n, o in zip(new_cs, old_cs)]
    for field in ("activeDeadlineSeconds", "nodeName"):
        out.pop(field, None)
        if field in old_spec:
            out[field] = old_spec[field]
    new_tol, old_tol = out.get("tolerations") or [], old_spec.get("tolerations") or []
    if new_tol[:len(old_tol)] == old_tol:
        if "tolerations" in old_spec:
            # Additions are allowed; `[]` stored and absent sent (or the reverse) is no change.
            out["tolerations"] = old_spec["tolerations"]
        else:
            out.pop("tolerations", None)
    return out


def validate_update(errs: FieldErrors, kind: str, new: Any, old: Any, *, subresource: Optional[str]) -> None:
    """Checks that need the stored object: immutable fields."""
    nm, om = getattr(new, "metadata", None), getattr(old, "metadata", None)
    if nm is not None and om is not None:
        for attr, wire in (("name", "name"), ("namespace", "namespace")):
            nv, ov = getattr(nm, attr), getattr(om, attr)
            if nv and ov and nv != ov:
                errs.invalid(f"metadata.{wire}", nv, "field is immutable")
        if om.deletion_timestamp:
            # Kubernetes: a deletion in progress may lose finalizers, never gain one (the
            # collector's jobs are handed out when the deletion starts).
            extra = sorted(set(nm.finalizers or []) - set(om.finalizers or []))
            if extra:
                errs.forbidden("metadata.finalizers", "no new finalizers can be added if the object is being "
                               "deleted, found new finalizers []string{" + ", ".join(f'"{f}"' for f in extra) + "}")
    if subresource is not None:
        return
    if kind in ("Deployment", "ReplicaSet") and new.spec is not None and old.spec is not None:
        ns = new.spec.selector.wire() if new.spec.selector else None
        os_ = old.spec.selector.wire() if old.spec.selector else None
        if os_ is not None and ns != os_:
            errs.invalid("spec.selector", ns, "field is immutable")
    elif kind == "Pod":
        new_spec = new.spec.wire() if new.spec else {}
        old_spec = old.spec.wire() if old.spec else {}
        masked = _mask_pod_spec(new_spec, old_spec)
        diff = _first_difference(masked, old_spec, "spec")
        if diff:
            errs.forbidden("spec", f"{POD_MUTABLE_MESSAGE}; {diff} changed")
    elif kind == "Node":
        ncidr = new.spec.pod_cidr if new.spec else None
        ocidr = old.spec.pod_cidr if old.spec else None
        if ocidr and ncidr != ocidr:
            errs.forbidden("spec.podCIDR", 'node updates may not change podCIDR except from "" to valid')
    elif kind in ("ConfigMap", "Secret"):
        validate_config_update(errs, kind, new, old)
