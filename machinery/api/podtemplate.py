"""Pod templates of Deployments and ReplicaSets: when two are the same, and the names the
Deployment controller and the CLI both read on them.

The rule is Kubernetes' (deployment util `EqualIgnoreHash`): two pod templates are equal when
they are semantically equal ignoring the `pod-template-hash` label. For wire dicts that means
(`normalize_template`):
- the `pod-template-hash` label is not compared (the controller adds it to its ReplicaSets'
  templates, never to the Deployment's);
- unset, null, `{}` and `[]` are the same (apimachinery's semantic DeepEqual: nil == empty);
- a field at its Kubernetes default equals the field left out. The API server stores templates
  defaulted, so two stored templates mostly agree on them anyway; but not on a default it does
  not fill in (a probe's `initialDelaySeconds: 0`), nor with a template stored before a default
  existed or written by hand in a test. The values come from `defaults` (one place);
- `metadata.creationTimestamp` is not part of a template (kubectl writes it as null).

Who must agree: the controller picks the new ReplicaSet as the oldest whose template is equal
to the Deployment's (`find_new_replicaset`, Kubernetes' FindNewReplicaSet) and checks hash
collisions with `templates_equal`; `shoal rollout undo` skips a rollback when the Deployment's
template already equals the revision's, and `shoal describe deployment` names the same new
ReplicaSet the controller scales. The CLI used to compare without the defaults and with
creationTimestamp — the bug: a Deployment whose template spells `initialDelaySeconds: 0` where
its ReplicaSet's leaves it out stays on that ReplicaSet (the controller finds them equal), yet
`describe` showed no NewReplicaSet and `rollout undo` to that revision wrote the template and
said "rolled back" where nothing rolled back (kubectl says "skipped rollback").
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

from shoal.machinery.api.defaults import (DEFAULT_DNS_POLICY, DEFAULT_HTTP_GET_SCHEME, DEFAULT_PROBE_FAILURE_THRESHOLD,
                                          DEFAULT_PROBE_PERIOD_SECONDS, DEFAULT_PROBE_SUCCESS_THRESHOLD,
                                          DEFAULT_PROBE_TIMEOUT_SECONDS, DEFAULT_PROTOCOL, DEFAULT_RESTART_POLICY,
                                          DEFAULT_SCHEDULER_NAME, DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS,
                                          DEFAULT_TERMINATION_MESSAGE_PATH, DEFAULT_TERMINATION_MESSAGE_POLICY,
                                          default_pull_policy)
from shoal.machinery.api.objects import annotations_of, creation_time, name_of

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"

# Fields at these values are dropped before comparing (see the module docstring). One is not
# filled in by the API server: a probe's initialDelaySeconds, whose default is the zero value.
_POD_SPEC_DEFAULTS = {"restartPolicy": DEFAULT_RESTART_POLICY, "dnsPolicy": DEFAULT_DNS_POLICY,
                      "terminationGracePeriodSeconds": DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS,
                      "schedulerName": DEFAULT_SCHEDULER_NAME}
_CONTAINER_DEFAULTS = {"terminationMessagePath": DEFAULT_TERMINATION_MESSAGE_PATH,
                       "terminationMessagePolicy": DEFAULT_TERMINATION_MESSAGE_POLICY}
_PROBE_DEFAULTS = {"timeoutSeconds": DEFAULT_PROBE_TIMEOUT_SECONDS, "periodSeconds": DEFAULT_PROBE_PERIOD_SECONDS,
                   "successThreshold": DEFAULT_PROBE_SUCCESS_THRESHOLD,
                   "failureThreshold": DEFAULT_PROBE_FAILURE_THRESHOLD, "initialDelaySeconds": 0}
_PORT_DEFAULTS = {"protocol": DEFAULT_PROTOCOL}
_HTTP_GET_DEFAULTS = {"scheme": DEFAULT_HTTP_GET_SCHEME}


def _prune(value: Any) -> Any:
    """Drop None, empty dicts and empty lists, recursively (they mean 'unset')."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = _prune(v)
            if v is None or v == {} or v == []:
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _drop_defaults(d: dict, defaults: dict) -> None:
    for k, v in defaults.items():
        if k in d and d[k] == v:
            del d[k]


def normalize_template(template: dict | None) -> dict:
    """The canonical form of a pod template: no pod-template-hash label, no creationTimestamp,
    no empty or None values, no fields equal to their Kubernetes default."""
    t = copy.deepcopy(template or {})
    md = t.get("metadata") or {}
    md.pop("creationTimestamp", None)
    (md.get("labels") or {}).pop(POD_TEMPLATE_HASH_LABEL, None)
    spec = t.get("spec") or {}
    _drop_defaults(spec, _POD_SPEC_DEFAULTS)
    for group in ("containers", "initContainers"):
        for c in spec.get(group) or []:
            _drop_defaults(c, _CONTAINER_DEFAULTS)
            if c.get("imagePullPolicy") and c.get("image") and c["imagePullPolicy"] == default_pull_policy(c["image"]):
                del c["imagePullPolicy"]
            for p in c.get("ports") or []:
                _drop_defaults(p, _PORT_DEFAULTS)
            for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(probe_name)
                if isinstance(probe, dict):
                    _drop_defaults(probe, _PROBE_DEFAULTS)
                    if isinstance(probe.get("httpGet"), dict):
                        _drop_defaults(probe["httpGet"], _HTTP_GET_DEFAULTS)
    return _prune(t)


def templates_equal(a: dict | None, b: dict | None) -> bool:
    """EqualIgnoreHash (see the module docstring)."""
    return normalize_template(a) == normalize_template(b)


def without_hash_label(template: dict | None) -> dict:
    """A ReplicaSet's pod template as it goes back into its Deployment on a rollback: a copy
    without the pod-template-hash label (Kubernetes' SetFromReplicaSetTemplate)."""
    t = copy.deepcopy(template or {})
    labels = (t.get("metadata") or {}).get("labels")
    if labels and POD_TEMPLATE_HASH_LABEL in labels:
        del labels[POD_TEMPLATE_HASH_LABEL]
    return t


def revision_of(obj: dict) -> int | None:
    """The `deployment.kubernetes.io/revision` annotation; None when absent or not a number."""
    v = annotations_of(obj).get(REVISION_ANNOTATION)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def find_new_replicaset(template: dict | None, replicasets: Iterable[dict]) -> dict | None:
    """The oldest ReplicaSet (name as tie-break) whose template equals `template`
    (FindNewReplicaSet: with equal templates, the oldest is the one being used)."""
    want = normalize_template(template)
    for rs in sorted(replicasets, key=lambda r: (creation_time(r), name_of(r))):
        if normalize_template((rs.get("spec") or {}).get("template")) == want:
            return rs
    return None
