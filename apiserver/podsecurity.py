"""Pod Security admission: the Pod Security Standards, per namespace label, as Kubernetes does.

A namespace chooses a level per mode with labels:

    pod-security.kubernetes.io/enforce: privileged | baseline | restricted
    pod-security.kubernetes.io/warn:    ...
    pod-security.kubernetes.io/audit:   ...

(`-version` labels are accepted; shoal has one version of the standards, `latest`). A pod
created or updated in a namespace whose `enforce` level it violates is refused (403
Forbidden naming every violation); `warn` adds a `Warning` header to the reply; `audit`
logs. Workload objects (Deployments, ReplicaSets) are checked against their pod template
for `warn` and `audit` only, as in Kubernetes: the pods they create are what enforcement
refuses, and the ReplicaSet controller reports that as its FailedCreate event.

shoal's default when a namespace has no label is `privileged` (Kubernetes' default too), so
nothing changes for clusters that do not opt in; `shoal server --pod-security LEVEL` sets
the cluster-wide default enforce level (docs/security.md).

The checks cover every field shoal's pods can carry (shoal has no hostNetwork, hostPID,
hostIPC, sysctls, AppArmor or SELinux options, which the standards also govern: those
fields are refused by validation on every level):

baseline — no privileged containers; capabilities added only from the baseline set; no
hostPath volumes; no hostPort; no `Unconfined` seccomp profile.
restricted — baseline, plus: volumes only of the kinds the standard allows;
`allowPrivilegeEscalation: false` on every container; `runAsNonRoot: true` (pod or every
container) and no `runAsUser: 0`; a `RuntimeDefault` or `Localhost` seccomp profile (pod or
every container); capabilities: drop `ALL`, add at most `NET_BIND_SERVICE`.

Contract: `violations(level, pod_spec)` is pure and returns Kubernetes-style messages
(`"<check> (<what to change>)"`); `levels(namespace_labels, default)` reads the labels.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.machinery.api import errors

LEVELS = ("privileged", "baseline", "restricted")
LABEL_PREFIX = "pod-security.kubernetes.io/"
MODES = ("enforce", "warn", "audit")

BASELINE_CAPS = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                           "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
RESTRICTED_VOLUMES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret")


@dataclass(frozen=True)
class Levels:
    enforce: str = "privileged"
    warn: str = "privileged"
    audit: str = "privileged"


class LabelError(ValueError):
    """A pod-security label with a value that is not a level (or a bad version)."""


def check_labels(labels: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """(label, problem) for every pod-security label a Namespace may not carry."""
    bad = []
    for k, v in (labels or {}).items():
        if not k.startswith(LABEL_PREFIX):
            continue
        mode = k[len(LABEL_PREFIX):]
        if mode in MODES:
            if v not in LEVELS:
                bad.append((k, f'must be one of "privileged", "baseline", "restricted", not {v!r}'))
        elif mode.endswith("-version") and mode[:-len("-version")] in MODES:
            if v != "latest" and not _is_version(v):
                bad.append((k, f'must be "latest" or a Kubernetes minor version like "v1.32", not {v!r}'))
    return bad


def _is_version(v: str) -> bool:
    parts = v[1:].split(".") if v.startswith("v") else []
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def levels(labels: Mapping[str, str] | None, default_enforce: str = "privileged") -> Levels:
    """The namespace's levels; an unknown value counts as `restricted` (fail closed), which
    `check_labels` keeps from being stored in the first place."""
    labels = labels or {}

    def level(mode: str, default: str) -> str:
        v = labels.get(LABEL_PREFIX + mode)
        if v is None:
            return default
        return v if v in LEVELS else "restricted"
    enforce = level("enforce", default_enforce)
    return Levels(enforce=enforce, warn=level("warn", enforce if LABEL_PREFIX + "enforce" in labels else "privileged"),
                  audit=level("audit", "privileged"))


def _containers(spec: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(c.get("name") or "", c) for key in ("initContainers", "containers") for c in spec.get(key) or []]


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _which(kind: str, names: Sequence[str]) -> str:
    return f'{kind}{"s" if len(names) != 1 else ""} {_quoted(names)}'


def _cap(name: str) -> str:
    n = str(name).upper()
    return n[4:] if n.startswith("CAP_") else n


def violations(level: str, spec: Mapping[str, Any] | None) -> list[str]:
    """What `spec` (a PodSpec as a wire dict) violates at `level`; [] when it complies."""
    if level == "privileged" or not spec:
        return []
    out: list[str] = []
    containers = _containers(spec)
    psc = spec.get("securityContext") or {}

    def sc(c: Mapping[str, Any]) -> Mapping[str, Any]:
        return c.get("securityContext") or {}

    # ---- baseline
    priv = [n for n, c in containers if sc(c).get("privileged") is True]
    if priv:
        out.append(f"privileged ({_which('container', priv)} must not set securityContext.privileged=true)")
    added: dict[str, list[str]] = {}
    for n, c in containers:
        for cap in (sc(c).get("capabilities") or {}).get("add") or []:
            if _cap(cap) not in BASELINE_CAPS:
                added.setdefault(n, []).append(str(cap))
    if added:
        detail = "; ".join(f'container "{n}" must not include {_quoted(caps)} in securityContext.capabilities.add'
                           for n, caps in added.items())
        out.append(f"non-default capabilities ({detail})")
    host_paths = [v.get("name") or "" for v in spec.get("volumes") or [] if v.get("hostPath") is not None]
    if host_paths:
        out.append(f"hostPath volumes ({_which('volume', host_paths)})")
    host_ports: dict[str, list[str]] = {}
    for n, c in containers:
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                host_ports.setdefault(n, []).append(str(p["hostPort"]))
    if host_ports:
        detail = ", ".join(f'{_which("container", [n])} uses hostPort{"s" if len(ps) > 1 else ""} {", ".join(ps)}'
                           for n, ps in host_ports.items())
        out.append(f"hostPort ({detail})")
    unconfined = []
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        unconfined.append("pod")
    unconfined += [f'container "{n}"' for n, c in containers
                   if (sc(c).get("seccompProfile") or {}).get("type") == "Unconfined"]
    if unconfined:
        out.append(f"seccompProfile ({' and '.join(unconfined)} must not set securityContext.seccompProfile.type "
                   f'to "Unconfined")')
    if level == "baseline":
        return out

    # ---- restricted
    bad_volumes: dict[str, list[str]] = {}
    for v in spec.get("volumes") or []:
        kinds = [k for k in v if k != "name"]
        for k in kinds:
            if k not in RESTRICTED_VOLUMES and k != "hostPath":       # hostPath: said above
                bad_volumes.setdefault(k, []).append(v.get("name") or "")
    if bad_volumes:
        detail = ", ".join(f'{_which("volume", names)} use{"s" if len(names) == 1 else ""} restricted volume '
                           f'type "{k}"' for k, names in bad_volumes.items())
        out.append(f"restricted volume types ({detail})")
    escalate = [n for n, c in containers if sc(c).get("allowPrivilegeEscalation") is not False]
    if escalate:
        out.append(f"allowPrivilegeEscalation != false ({_which('container', escalate)} must set "
                   "securityContext.allowPrivilegeEscalation=false)")
    pod_non_root = psc.get("runAsNonRoot")
    if pod_non_root is False:
        out.append("runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)")
    explicit_false = [n for n, c in containers if sc(c).get("runAsNonRoot") is False]
    unset = [n for n, c in containers if sc(c).get("runAsNonRoot") is None]
    if explicit_false:
        out.append(f"runAsNonRoot != true ({_which('container', explicit_false)} must not set "
                   "securityContext.runAsNonRoot=false)")
    elif pod_non_root is not True and unset:
        out.append(f"runAsNonRoot != true (pod or {_which('container', unset)} must set "
                   "securityContext.runAsNonRoot=true)")
    root = (["pod"] if psc.get("runAsUser") == 0 else []) + \
        [f'container "{n}"' for n, c in containers if sc(c).get("runAsUser") == 0]
    if root:
        out.append(f"runAsUser=0 ({' and '.join(root)} must not set runAsUser=0)")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    no_profile = []
    for n, c in containers:
        own = (sc(c).get("seccompProfile") or {}).get("type")
        effective = own if own is not None else pod_seccomp
        if effective not in ("RuntimeDefault", "Localhost", "Unconfined"):    # Unconfined: said by baseline
            no_profile.append(n)
    if no_profile:
        out.append(f'seccompProfile (pod or {_which("container", no_profile)} must set '
                   f'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
    no_drop = [n for n, c in containers
               if "ALL" not in [_cap(x) for x in (sc(c).get("capabilities") or {}).get("drop") or []]]
    more = {n: [str(x) for x in (sc(c).get("capabilities") or {}).get("add") or [] if _cap(x) != "NET_BIND_SERVICE"]
            for n, c in containers}
    more = {n: caps for n, caps in more.items() if caps and n not in added}
    if no_drop or more:
        parts = []
        if no_drop:
            parts.append(f'{_which("container", no_drop)} must set securityContext.capabilities.drop=["ALL"]')
        for n, caps in more.items():
            parts.append(f'container "{n}" must not include {_quoted(caps)} in securityContext.capabilities.add')
        out.append(f"unrestricted capabilities ({'; '.join(parts)})")
    return out


def message(level: str, problems: Sequence[str], *, would: bool = False) -> str:
    return f'{"would violate" if would else "violates"} PodSecurity "{level}:latest": ' + ", ".join(problems)


WORKLOADS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController")


def _pod_spec_of(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
    if spec is None:
        return None
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec") or {})
    tmpl = spec.get("template") if isinstance(spec.get("template"), dict) else None
    return (tmpl or {}).get("spec") if isinstance((tmpl or {}).get("spec"), dict) else None


def admit(kind: str, namespace: str | None, obj: Mapping[str, Any] | None, old: Mapping[str, Any] | None, *,
          namespace_labels: Callable[[str], Mapping[str, str] | None], default_enforce: str = "privileged",
          audit: Callable[[str], None] | None = None) -> list[str]:
    """Pod Security admission of one write: raises Forbidden when a Pod violates its
    namespace's `enforce` level (a Namespace with a bad pod-security label: Invalid);
    returns the `Warning` texts for `warn` (pods and workload templates alike). `old` is the
    stored object on update: a pod whose spec did not change is not evaluated again, as in
    Kubernetes (labels, annotations and status may always change)."""
    if not isinstance(obj, dict):
        return []
    md: Mapping[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    if kind == "Namespace":
        bad = check_labels(md.get("labels") if isinstance(md.get("labels"), dict) else None)
        if bad:
            raise errors.Invalid(
                f'Namespace "{md.get("name", "")}" is invalid: ' + ", ".join(
                    f"metadata.labels[{k}]: Invalid value: {why}" for k, why in bad),
                causes=[errors.Cause(f"metadata.labels[{k}]", why, "FieldValueInvalid") for k, why in bad])
        return []
    if kind != "Pod" and kind not in WORKLOADS and kind != "CronJob":
        return []
    spec = _pod_spec_of(kind, obj)
    if spec is None or not namespace:
        return []
    if old is not None and _pod_spec_of(kind, old) == spec:
        return []
    lv = levels(namespace_labels(namespace), default_enforce)
    if lv.enforce == lv.warn == lv.audit == "privileged":
        return []
    name = md.get("name") or md.get("generateName") or ""
    if kind == "Pod" and lv.enforce != "privileged":
        problems = violations(lv.enforce, spec)
        if problems:
            raise errors.Forbidden(f'pods "{name}" is forbidden: {message(lv.enforce, problems)}',
                                   details={"name": name, "kind": "pods"})
    if audit is not None and lv.audit != "privileged":
        problems = violations(lv.audit, spec)
        if problems:
            audit(f"{kind} {namespace}/{name} {message(lv.audit, problems)}")
    if lv.warn != "privileged":
        problems = violations(lv.warn, spec)
        if problems:
            return [message(lv.warn, problems, would=True)]
    return []
