"""Pure helpers of the Deployment controller: rolling-update arithmetic, template hashing,
revisions, ReplicaSet ordering, proportional scaling and the rolling step planner.

Everything here is a function of plain wire dicts and numbers, with table tests in
tests/unit/test_controller_deployment_util.py. The executors (rolling.py, recreate.py,
sync.py) call these and only perform the writes they return.

Rules, as Kubernetes' pkg/controller/deployment/util:
- maxSurge resolves rounding *up*, maxUnavailable rounding *down*; if both resolve to 0,
  maxUnavailable becomes 1 (validation forbids explicit 0/0, rounding can still reach it).
- Availability is the ReplicaSet's `status.availableReplicas`, which the ReplicaSet
  controller computes as pods Ready for at least `minReadySeconds`.
- A ReplicaSet is "new" when its pod template equals the Deployment's, ignoring the
  `pod-template-hash` label and defaulted/empty fields (see `normalize_template`).
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable

from shoal.machinery.api import podtemplate
from shoal.machinery.api.defaults import (DEFAULT_DEPLOYMENT_STRATEGY, DEFAULT_MAX_SURGE, DEFAULT_MAX_UNAVAILABLE,
                                          DEFAULT_MIN_READY_SECONDS, DEFAULT_PROGRESS_DEADLINE_SECONDS,
                                          DEFAULT_REPLICAS, DEFAULT_REVISION_HISTORY_LIMIT)
from shoal.machinery.api.objects import annotations_of, creation_time, meta, name_of
# The template rule and the names the CLI reads too live in the floor (machinery/api/podtemplate.py).
from shoal.machinery.api.podtemplate import (POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, REVISION_HISTORY_ANNOTATION,
                                             normalize_template, templates_equal)

DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
# Annotations of the Deployment that are not copied onto its ReplicaSets.
_NOT_COPIED = {"kubectl.kubernetes.io/last-applied-configuration", REVISION_ANNOTATION,
               REVISION_HISTORY_ANNOTATION, DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION,
               "deprecated.deployment.rollback.to"}

# Condition types and reasons, spelled as Kubernetes spells them (kubectl rollout status reads them).
PROGRESSING, AVAILABLE, REPLICA_FAILURE = "Progressing", "Available", "ReplicaFailure"
NEW_RS_REASON = "NewReplicaSetCreated"
FOUND_NEW_RS_REASON = "FoundNewReplicaSet"
RS_UPDATED_REASON = "ReplicaSetUpdated"
NEW_RS_AVAILABLE_REASON = "NewReplicaSetAvailable"
TIMED_OUT_REASON = "ProgressDeadlineExceeded"
PAUSED_REASON = "DeploymentPaused"
RESUMED_REASON = "DeploymentResumed"
MIN_AVAILABLE_REASON = "MinimumReplicasAvailable"
MIN_UNAVAILABLE_REASON = "MinimumReplicasUnavailable"


# -- spec accessors with Kubernetes' defaults (machinery/api/defaults.py) ------------------------
# The API server stores these fields defaulted; the accessors still read an unset one as its
# default (test fixtures, objects stored before a default existed).
def replicas_of(obj: dict | None) -> int:
    """spec.replicas (default 1) of a Deployment or ReplicaSet; 0 for None."""
    if obj is None:
        return 0
    r = (obj.get("spec") or {}).get("replicas")
    return DEFAULT_REPLICAS if r is None else int(r)


def status_int(obj: dict | None, field: str) -> int:
    if obj is None:
        return 0
    return int((obj.get("status") or {}).get(field) or 0)


def strategy_type(d: dict) -> str:
    return ((d.get("spec") or {}).get("strategy") or {}).get("type") or DEFAULT_DEPLOYMENT_STRATEGY


def is_rolling_update(d: dict) -> bool:
    return strategy_type(d) == "RollingUpdate"


def min_ready_seconds(obj: dict) -> int:
    return int((obj.get("spec") or {}).get("minReadySeconds") or DEFAULT_MIN_READY_SECONDS)


def progress_deadline(d: dict) -> int | None:
    """progressDeadlineSeconds (default 600); None when it is unset to 'max int' (no deadline)."""
    v = (d.get("spec") or {}).get("progressDeadlineSeconds")
    if v is None:
        v = DEFAULT_PROGRESS_DEADLINE_SECONDS
    return None if int(v) >= 2**31 - 1 else int(v)


def revision_history_limit(d: dict) -> int:
    v = (d.get("spec") or {}).get("revisionHistoryLimit")
    return DEFAULT_REVISION_HISTORY_LIMIT if v is None else int(v)


# -- surge / unavailable arithmetic ------------------------------------------------------------
def scaled_value(value: int | str, total: int, *, round_up: bool, field: str = "value") -> int:
    """Resolve an IntOrString (`3`, `"25%"`) against `total` (intstr.GetScaledValueFromIntOrPercent)."""
    if value is None or isinstance(value, bool):
        raise ValueError(f"{field}: {value!r} is neither an integer nor a percentage")
    if isinstance(value, int):
        return value
    s = str(value).strip()
    if not s.endswith("%"):
        raise ValueError(f"{field}: {value!r} must be an integer or a percentage such as '25%'")
    try:
        pct = int(s[:-1])
    except ValueError:
        raise ValueError(f"{field}: {value!r} must be an integer or a percentage such as '25%'") from None
    # Integer arithmetic as Kubernetes does, so 25% of 10 is exactly 2.5 before rounding.
    return -(-pct * total // 100) if round_up else pct * total // 100


def resolve_fenceposts(max_surge: int | str | None, max_unavailable: int | str | None,
                       desired: int) -> tuple[int, int]:
    """(surge, unavailable) for `desired` replicas (None: the default, 25%); both 0 resolves to (0, 1)."""
    max_surge = DEFAULT_MAX_SURGE if max_surge is None else max_surge
    max_unavailable = DEFAULT_MAX_UNAVAILABLE if max_unavailable is None else max_unavailable
    surge = scaled_value(max_surge, desired, round_up=True, field="spec.strategy.rollingUpdate.maxSurge")
    unavailable = scaled_value(max_unavailable, desired, round_up=False,
                               field="spec.strategy.rollingUpdate.maxUnavailable")
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _rolling_params(d: dict) -> tuple[Any, Any]:
    ru = ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    return ru.get("maxSurge"), ru.get("maxUnavailable")      # None: resolve_fenceposts defaults them


def max_surge(d: dict) -> int:
    if not is_rolling_update(d):
        return 0
    s, u = _rolling_params(d)
    return resolve_fenceposts(s, u, replicas_of(d))[0]


def max_unavailable(d: dict) -> int:
    if not is_rolling_update(d) or replicas_of(d) == 0:
        return 0
    s, u = _rolling_params(d)
    return min(resolve_fenceposts(s, u, replicas_of(d))[1], replicas_of(d))


# -- template hashing --------------------------------------------------------------------------
_SAFE_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def _safe_encode(s: str) -> str:
    """k8s.io/apimachinery rand.SafeEncodeString: no vowels, no confusable characters."""
    return "".join(_SAFE_ALPHANUMS[ord(ch) % len(_SAFE_ALPHANUMS)] for ch in s)


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def compute_hash(template: dict | None, collision_count: int | None = None) -> str:
    """pod-template-hash: FNV-32a over canonical JSON of the normalized template (plus the
    collision count when set), rendered as Kubernetes renders it (e.g. `5d8f7c6b9`)."""
    data = json.dumps(normalize_template(template), sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(int(collision_count)).encode()
    return _safe_encode(str(_fnv32a(data)))


# -- revisions ---------------------------------------------------------------------------------
def revision_of(obj: dict) -> int:
    """The revision annotation; 0 when absent or not a number."""
    return podtemplate.revision_of(obj) or 0


def max_revision(rss: Iterable[dict]) -> int:
    return max((revision_of(rs) for rs in rss), default=0)


def set_new_rs_annotations(d: dict, rs: dict, new_revision: int, *, exists: bool) -> bool:
    """Copy the Deployment's annotations onto (mutable) `rs`, raise its revision to
    `new_revision` keeping the old number in revision-history (a rollback), and for a
    ReplicaSet about to be created add the replica annotations. True when rs changed."""
    md = rs.setdefault("metadata", {})
    ann = md.setdefault("annotations", {})
    changed = False
    for k, v in annotations_of(d).items():
        if k in _NOT_COPIED:
            continue
        if ann.get(k) != v:
            ann[k] = v
            changed = True
    old_text = ann.get(REVISION_ANNOTATION)
    try:
        old = int(old_text or 0)
    except ValueError:
        return changed
    if old < new_revision:
        ann[REVISION_ANNOTATION] = str(new_revision)
        changed = True
        if old_text:
            hist = ann.get(REVISION_HISTORY_ANNOTATION)
            ann[REVISION_HISTORY_ANNOTATION] = f"{hist},{old_text}" if hist else old_text
    if not exists:
        changed |= set_replicas_annotations(rs, replicas_of(d), replicas_of(d) + max_surge(d))
    return changed


def set_replicas_annotations(rs: dict, desired: int, max_replicas: int) -> bool:
    ann = rs.setdefault("metadata", {}).setdefault("annotations", {})
    changed = False
    for k, v in ((DESIRED_REPLICAS_ANNOTATION, str(desired)), (MAX_REPLICAS_ANNOTATION, str(max_replicas))):
        if ann.get(k) != v:
            ann[k] = v
            changed = True
    return changed


def _int_annotation(obj: dict, key: str) -> int | None:
    try:
        v = annotations_of(obj).get(key)
        return None if v is None else int(v)
    except ValueError:
        return None


# -- ReplicaSet sets and orderings -------------------------------------------------------------
def active(rss: Iterable[dict | None]) -> list[dict]:
    """ReplicaSets with spec.replicas > 0 (FilterActiveReplicaSets)."""
    return [rs for rs in rss if rs is not None and replicas_of(rs) > 0]


def by_creation(rss: Iterable[dict]) -> list[dict]:
    """Oldest first, name as tie-break (ReplicaSetsByCreationTimestamp)."""
    return sorted(rss, key=lambda r: (creation_time(r), name_of(r)))


def by_revision(rss: Iterable[dict]) -> list[dict]:
    """Lowest revision first, then oldest (ReplicaSetsByRevision)."""
    return sorted(rss, key=lambda r: (revision_of(r), creation_time(r), name_of(r)))


def spec_replicas_sum(rss: Iterable[dict | None]) -> int:
    return sum(replicas_of(rs) for rs in rss if rs is not None)


def status_sum(rss: Iterable[dict | None], field: str) -> int:
    return sum(status_int(rs, field) for rs in rss if rs is not None)


def find_new_rs(d: dict, rss: Iterable[dict]) -> dict | None:
    """The oldest ReplicaSet whose template equals the Deployment's (FindNewReplicaSet)."""
    return podtemplate.find_new_replicaset((d.get("spec") or {}).get("template"), rss)


# -- the numbers of a rollout ------------------------------------------------------------------
def pods_upper_bound(rs: dict | None) -> int:
    """Pods a ReplicaSet may have right now: its spec, or more while a scale-down is not yet
    carried out (status.replicas counts active pods)."""
    return max(replicas_of(rs), status_int(rs, "replicas")) if rs is not None else 0


def effective_available(rs: dict | None) -> int:
    """Available pods a ReplicaSet keeps once it reaches spec.replicas. The ReplicaSet
    controller deletes unavailable pods first, so that is min(available, spec) — lower than a
    status written before a scale-down took effect."""
    return min(status_int(rs, "availableReplicas"), replicas_of(rs)) if rs is not None else 0


def new_rs_new_replicas(d: dict, all_rss: list[dict], new_rs: dict | None) -> int:
    """How many replicas the new ReplicaSet may have right now (NewRSNewReplicas).

    Unlike Kubernetes, the current pod count takes each ReplicaSet's status.replicas when it
    exceeds spec (a scale-down the ReplicaSet controller has not carried out yet), so the
    surge bound holds for pods, not only for ReplicaSet specs."""
    if not is_rolling_update(d):
        return replicas_of(d)
    new_replicas = replicas_of(new_rs)
    current = sum(pods_upper_bound(rs) for rs in all_rss if rs is not None and rs is not new_rs) + replicas_of(new_rs)
    max_total = replicas_of(d) + max_surge(d)
    if current >= max_total:
        return new_replicas
    scale_up = min(max_total - current, replicas_of(d) - new_replicas)
    return new_replicas + max(scale_up, 0)


@dataclass(frozen=True)
class Scale:
    """One planned write: set ReplicaSet `name` to `replicas`."""
    name: str
    replicas: int


def plan_rolling_step(d: dict, new_rs: dict | None, old_rss: list[dict]) -> list[Scale]:
    """One step of a rolling update, exactly as Kubernetes takes it: first scale the new
    ReplicaSet (up to the surge bound, or down to the desired count); only if it needs no
    change, scale old ReplicaSets down — unhealthy replicas first, then healthy ones as far as
    maxUnavailable allows. Returns the writes in order; [] when nothing may move now."""
    all_rss = [rs for rs in [*old_rss, new_rs] if rs is not None]
    want = replicas_of(d)
    if new_rs is not None:
        cur = replicas_of(new_rs)
        if cur != want:
            target = want if cur > want else new_rs_new_replicas(d, all_rss, new_rs)
            if target != cur:
                return [Scale(name_of(new_rs), target)]
    return plan_scale_down_old(d, new_rs, old_rss)


def plan_scale_down_old(d: dict, new_rs: dict | None, old_rss: list[dict]) -> list[Scale]:
    """reconcileOldReplicaSets: cleanupUnhealthyReplicas, then scaleDownOldReplicaSetsForRollingUpdate."""
    olds = [copy.deepcopy(rs) for rs in active(old_rss)]
    if spec_replicas_sum(olds) == 0:
        return []
    all_count = spec_replicas_sum([*olds, new_rs])
    min_available = replicas_of(d) - max_unavailable(d)
    new_unavailable = replicas_of(new_rs) - effective_available(new_rs)
    max_scaled_down = all_count - min_available - new_unavailable
    if max_scaled_down <= 0:
        return []
    planned: dict[str, int] = {}
    # 1. Unhealthy replicas of old ReplicaSets cost no availability: remove them first.
    cleaned = 0
    for rs in by_creation(olds):
        if cleaned >= max_scaled_down:
            break
        spec, avail = replicas_of(rs), effective_available(rs)
        if spec == 0 or spec == avail:
            continue
        n = min(max_scaled_down - cleaned, spec - avail)
        rs["spec"]["replicas"] = spec - n
        planned[name_of(rs)] = spec - n
        cleaned += n
    # 2. Healthy replicas, as far as availability allows. (Kubernetes sums status.availableReplicas;
    # effective_available is never higher, so a status written before an earlier scale-down
    # took effect cannot let availability drop below the bound.)
    available = sum(effective_available(rs) for rs in [*olds, new_rs] if rs is not None)
    if available > min_available:
        budget = available - min_available
        done = 0
        for rs in by_creation(olds):
            if done >= budget:
                break
            spec = replicas_of(rs)
            if spec == 0:
                continue
            n = min(spec, budget - done)
            rs["spec"]["replicas"] = spec - n
            planned[name_of(rs)] = spec - n
            done += n
    return [Scale(name_of(rs), planned[name_of(rs)]) for rs in by_creation(olds) if name_of(rs) in planned]


# -- proportional scaling ----------------------------------------------------------------------
def is_saturated(d: dict, rs: dict | None) -> bool:
    if rs is None:
        return False
    return (_int_annotation(rs, DESIRED_REPLICAS_ANNOTATION) == replicas_of(d)
            and replicas_of(rs) == replicas_of(d) and status_int(rs, "availableReplicas") == replicas_of(d))


def find_active_or_latest(new_rs: dict | None, old_rss: list[dict]) -> dict | None:
    if new_rs is None and not old_rss:
        return None
    olds = sorted(old_rss, key=lambda r: (creation_time(r), name_of(r)), reverse=True)
    act = active([*olds, new_rs])
    if not act:
        return new_rs if new_rs is not None else olds[0]
    if len(act) == 1:
        return act[0]
    return None


def _round_half_away(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def _rs_fraction(rs: dict, d: dict) -> int:
    if replicas_of(d) == 0:
        return -replicas_of(rs)
    d_max = replicas_of(d) + max_surge(d)
    before = _int_annotation(rs, MAX_REPLICAS_ANNOTATION)
    if not before:
        before = status_int(d, "replicas")
        if before == 0:
            return 0
    return _round_half_away(replicas_of(rs) * d_max / before) - replicas_of(rs)


def rs_proportion(rs: dict, d: dict, to_add: int, added: int) -> int:
    """GetReplicaSetProportion: this ReplicaSet's share of `to_add`, bounded by what is left."""
    if replicas_of(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _rs_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def plan_proportional_scale(d: dict, new_rs: dict | None, old_rss: list[dict]) -> list[Scale]:
    """The Deployment's size changed (a scaling event): where do replicas go? (dc.scale)
    One active ReplicaSet takes the full count; a saturated new ReplicaSet zeroes the old ones;
    during a rolling update the difference is spread in proportion to the ReplicaSets' sizes,
    leftovers to the largest. Returns changes only (sizes that differ from spec.replicas)."""
    one = find_active_or_latest(new_rs, old_rss)
    if one is not None:
        return [] if replicas_of(one) == replicas_of(d) else [Scale(name_of(one), replicas_of(d))]
    if is_saturated(d, new_rs):
        return [Scale(name_of(rs), 0) for rs in active(old_rss)]
    if not is_rolling_update(d):
        return []
    rss = active([*old_rss, new_rs])
    allowed = replicas_of(d) + max_surge(d) if replicas_of(d) > 0 else 0
    to_add = allowed - spec_replicas_sum(rss)
    if to_add > 0:   # bigger first; among equals the newer one grows first
        rss.sort(key=lambda r: (-replicas_of(r), -creation_time(r), name_of(r)))
    elif to_add < 0:  # bigger first; among equals the older one shrinks first
        rss.sort(key=lambda r: (-replicas_of(r), creation_time(r), name_of(r)))
    sizes: dict[str, int] = {}
    added = 0
    for rs in rss:
        if to_add != 0:
            p = rs_proportion(rs, d, to_add, added)
            sizes[name_of(rs)] = replicas_of(rs) + p
            added += p
        else:
            sizes[name_of(rs)] = replicas_of(rs)
    if rss and to_add != 0:
        first_name = name_of(rss[0])
        sizes[first_name] = max(sizes[first_name] + to_add - added, 0)
    return [Scale(name_of(rs), sizes[name_of(rs)]) for rs in rss if sizes[name_of(rs)] != replicas_of(rs)]


def is_scaling_event(d: dict, new_rs: dict | None, old_rss: list[dict]) -> bool:
    """An active ReplicaSet's desired-replicas annotation disagrees with spec.replicas."""
    for rs in active([*old_rss, new_rs]):
        desired = _int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)
        if desired is not None and desired != replicas_of(d):
            return True
    return False


# -- status ------------------------------------------------------------------------------------
def deployment_complete(d: dict, status: dict) -> bool:
    want = replicas_of(d)
    return (int(status.get("updatedReplicas") or 0) == want and int(status.get("replicas") or 0) == want
            and int(status.get("availableReplicas") or 0) == want
            and int(status.get("observedGeneration") or 0) >= int(meta(d).get("generation") or 0))


def deployment_progressing(d: dict, new_status: dict) -> bool:
    old = d.get("status") or {}
    g = lambda s, f: int(s.get(f) or 0)  # noqa: E731
    old_old = g(old, "replicas") - g(old, "updatedReplicas")
    new_old = g(new_status, "replicas") - g(new_status, "updatedReplicas")
    return (g(new_status, "updatedReplicas") > g(old, "updatedReplicas") or new_old < old_old
            or g(new_status, "readyReplicas") > g(old, "readyReplicas")
            or g(new_status, "availableReplicas") > g(old, "availableReplicas"))
