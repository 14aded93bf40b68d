"""Pure helpers of the Deployment controller: rolling-update arithmetic, template hashing,
revisions, ReplicaSet ordering, proportional scaling, the rolling step planner, and the
objects a sync writes (`new_replicaset`, `synced_new_replicaset`, `scaled_replicaset`).

Everything here is a function of plain wire dicts and numbers, with table tests in
tests/unit/test_controller_deployment_util.py. The strategy planners (rolling.py,
recreate.py) and `plan.plan_sync` compose these into a `SyncPlan`; the executor (sync.py)
only performs the writes they return.

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
from dataclasses import dataclass
from typing import Any, Iterable

from shoal.machinery.api import podtemplate
from shoal.machinery.api.defaults import (DEFAULT_DEPLOYMENT_STRATEGY, DEFAULT_MAX_SURGE, DEFAULT_MAX_UNAVAILABLE,
                                          DEFAULT_MIN_READY_SECONDS, DEFAULT_PROGRESS_DEADLINE_SECONDS,
                                          DEFAULT_REPLICAS, DEFAULT_REVISION_HISTORY_LIMIT)
from shoal.machinery.api.objects import annotations_of, creation_time, meta, name_of, owner_ref_to
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


# Kubernetes' MaxRevisionHistoryLengthInChars: revision-history keeps the newest numbers that fit.
REVISION_HISTORY_MAX_CHARS = 2000


def _appended_history(history: str | None, old: str) -> str | None:
    """revision-history with `old` appended, oldest entries dropped to stay within
    REVISION_HISTORY_MAX_CHARS; None when `old` alone does not fit."""
    entries = [e for e in (history or "").split(",") if e]
    total = len(",".join([*entries, old]))
    while entries and total > REVISION_HISTORY_MAX_CHARS:
        total -= len(entries.pop(0)) + 1
    return ",".join([*entries, old]) if total <= REVISION_HISTORY_MAX_CHARS else None


def set_new_rs_annotations(d: dict, rs: dict, new_revision: int, *, exists: bool) -> bool:
    """Copy the Deployment's annotations onto (mutable) `rs`, raise its revision to
    `new_revision` keeping the old number in revision-history (a rollback: the newest numbers
    within 2000 characters), and for a ReplicaSet about to be created add the replica
    annotations. Never lowers a revision. True when rs changed."""
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
            hist = _appended_history(ann.get(REVISION_HISTORY_ANNOTATION), old_text)
            if hist is not None:
                ann[REVISION_HISTORY_ANNOTATION] = hist
    if not exists:
        changed |= set_replicas_annotations(rs, replicas_of(d), replicas_of(d) + max_surge(d))
    return changed


def set_replicas_annotations(rs: dict, desired: int, max_replicas: int) -> bool:
    """Set desired-replicas / max-replicas on (mutable) `rs`; True when either changed."""
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
def replicas_annotations_stale(rs: dict, d: dict) -> bool:
    """desired-replicas / max-replicas of `rs` differ from the Deployment's current
    replicas / replicas + maxSurge (ReplicasAnnotationsNeedUpdate)."""
    ann = annotations_of(rs)
    return (ann.get(DESIRED_REPLICAS_ANNOTATION) != str(replicas_of(d))
            or ann.get(MAX_REPLICAS_ANNOTATION) != str(replicas_of(d) + max_surge(d)))


def is_saturated(d: dict, rs: dict | None) -> bool:
    """The new ReplicaSet runs the Deployment's full size, was sized for it, and all of it
    is available (IsSaturated)."""
    if rs is None:
        return False
    return (_int_annotation(rs, DESIRED_REPLICAS_ANNOTATION) == replicas_of(d)
            and replicas_of(rs) == replicas_of(d) and status_int(rs, "availableReplicas") == replicas_of(d))


def find_active_or_latest(new_rs: dict | None, old_rss: list[dict]) -> dict | None:
    """The one active ReplicaSet; with none active the new one, else the newest old one;
    None when several are active (FindActiveOrLatest)."""
    if new_rs is None and not old_rss:
        return None
    olds = sorted(old_rss, key=lambda r: (creation_time(r), name_of(r)), reverse=True)
    act = active([*olds, new_rs])
    if not act:
        return new_rs if new_rs is not None else olds[0]
    if len(act) == 1:
        return act[0]
    return None


def _div_round_half_away(num: int, den: int) -> int:
    """num / den rounded half away from zero, exactly (integer.RoundToInt32 of the quotient)."""
    q, r = divmod(abs(num), den)
    if 2 * r >= den:
        q += 1
    return q if num >= 0 else -q


def _rs_fraction(rs: dict, d: dict) -> int:
    """getReplicaSetFraction: how many replicas `rs` gains (or loses) if it keeps its share of
    the Deployment's maximum size, measured against the maximum it was last sized for (its
    max-replicas annotation; status.replicas of the Deployment when that is missing)."""
    if replicas_of(d) == 0:
        return -replicas_of(rs)
    d_max = replicas_of(d) + max_surge(d)
    before = _int_annotation(rs, MAX_REPLICAS_ANNOTATION)
    if not before or before < 0:
        before = status_int(d, "replicas")
        if before <= 0:
            return 0
    return _div_round_half_away(replicas_of(rs) * d_max, before) - replicas_of(rs)


def rs_proportion(rs: dict, d: dict, to_add: int, added: int) -> int:
    """GetReplicaSetProportion: this ReplicaSet's share of `to_add`, bounded by what is left."""
    if replicas_of(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _rs_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def by_size_newer(rss: Iterable[dict]) -> list[dict]:
    """Largest first; among equals the newest first (ReplicaSetsBySizeNewer)."""
    out = sorted(rss, key=lambda r: (creation_time(r), name_of(r)), reverse=True)
    out.sort(key=lambda r: -replicas_of(r))        # stable: keeps newest-first among equals
    return out


def by_size_older(rss: Iterable[dict]) -> list[dict]:
    """Largest first; among equals the oldest first (ReplicaSetsBySizeOlder)."""
    return sorted(rss, key=lambda r: (-replicas_of(r), creation_time(r), name_of(r)))


def plan_proportional_scale(d: dict, new_rs: dict | None, old_rss: list[dict]) -> list[Scale]:
    """The writes of a scaling event or a paused sync (dc.scale).

    - One active ReplicaSet (or none: the new one, else the newest) takes spec.replicas.
    - A saturated new ReplicaSet scales every old one to 0.
    - During a rolling update the difference between replicas + maxSurge and the active
      ReplicaSets' sum is spread in proportion to their sizes (each scaled by the ratio of the
      new maximum to the one in its max-replicas annotation, rounded half away from zero, never
      past what is left to spread); the remainder goes to the largest — among equals the newest
      when growing, the oldest when shrinking. A remainder the largest cannot absorb (it would go
      below 0) goes on to the next, so the sum is then exactly replicas + maxSurge (Kubernetes
      clamps the largest at 0 and drops the rest, which can leave the sum above the bound).
    - Recreate keeps the sizes (only one ReplicaSet is active outside adoption).

    Every active ReplicaSet whose size *or* desired/max-replicas annotations change gets a
    write — Kubernetes rewrites each active one in the proportional case. A ReplicaSet left
    with a stale desired-replicas annotation would make every later sync a scaling event and
    jam the rollout for good. Inactive ReplicaSets are never written: their annotations are
    not read until they are scaled, which refreshes them. Writes are in the order to perform."""
    one = find_active_or_latest(new_rs, old_rss)
    if one is not None:
        want = replicas_of(d)
        if replicas_of(one) != want or (want > 0 and replicas_annotations_stale(one, d)):
            return [Scale(name_of(one), want)]
        return []
    if is_saturated(d, new_rs):
        return [Scale(name_of(rs), 0) for rs in active(old_rss)]
    rss = active([*old_rss, new_rs])
    if not is_rolling_update(d):
        return [Scale(name_of(rs), replicas_of(rs)) for rs in rss if replicas_annotations_stale(rs, d)]
    allowed = replicas_of(d) + max_surge(d) if replicas_of(d) > 0 else 0
    to_add = allowed - spec_replicas_sum(rss)
    if to_add > 0:
        rss = by_size_newer(rss)
    elif to_add < 0:
        rss = by_size_older(rss)
    sizes = {name_of(rs): replicas_of(rs) for rs in rss}
    added = 0
    if to_add != 0:
        for rs in rss:
            p = rs_proportion(rs, d, to_add, added)
            sizes[name_of(rs)] += p
            added += p
    leftover = to_add - added
    for rs in rss:                       # largest first
        if leftover == 0:
            break
        n = name_of(rs)
        size = max(sizes[n] + leftover, 0)
        leftover -= size - sizes[n]
        sizes[n] = size
    return [Scale(name_of(rs), sizes[name_of(rs)]) for rs in rss
            if sizes[name_of(rs)] != replicas_of(rs) or replicas_annotations_stale(rs, d)]


def is_scaling_event(d: dict, new_rs: dict | None, old_rss: list[dict]) -> bool:
    """An active ReplicaSet's desired-replicas annotation disagrees with spec.replicas."""
    for rs in active([*old_rss, new_rs]):
        desired = _int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)
        if desired is not None and desired != replicas_of(d):
            return True
    return False


# -- the objects a sync writes -----------------------------------------------------------------
def scaled_replicaset(rs: dict, replicas: int, d: dict) -> dict | None:
    """`rs` as dc.scaleReplicaSet writes it: spec.replicas = `replicas`, desired-replicas /
    max-replicas = the Deployment's replicas / replicas + maxSurge. None when neither the size
    nor an annotation changes (nothing to write). `rs` is not modified."""
    new = copy.deepcopy(rs)
    ann_changed = set_replicas_annotations(new, replicas_of(d), replicas_of(d) + max_surge(d))
    if replicas_of(rs) == replicas and not ann_changed:
        return None
    new.setdefault("spec", {})["replicas"] = replicas
    return new


def template_hash(d: dict) -> str:
    """pod-template-hash of the Deployment's current template (with its collisionCount)."""
    return compute_hash((d.get("spec") or {}).get("template"), int((d.get("status") or {}).get("collisionCount") or 0))


def new_replicaset_name(d: dict) -> str:
    """`<deployment>-<pod-template-hash>` of the Deployment's current template."""
    return f"{name_of(d)}-{template_hash(d)}"


def new_replicaset(d: dict, old_rss: list[dict], replicas: int) -> dict:
    """The ReplicaSet to create for the Deployment's current template: named
    `<deployment>-<hash>`, the hash label on itself, its selector and template, owned by the
    Deployment, revision max(old revisions) + 1, the Deployment's annotations and the replica
    annotations, `replicas` replicas."""
    md = meta(d)
    template = copy.deepcopy((d.get("spec") or {}).get("template") or {})
    h = template_hash(d)
    template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH_LABEL] = h
    selector = copy.deepcopy((d.get("spec") or {}).get("selector") or {})
    selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH_LABEL] = h
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": new_replicaset_name(d), "namespace": md.get("namespace"),
                       "labels": dict(template["metadata"]["labels"]), "ownerReferences": [owner_ref_to(d)]},
          "spec": {"replicas": replicas, "minReadySeconds": min_ready_seconds(d), "selector": selector,
                   "template": template}}
    set_new_rs_annotations(d, rs, max_revision(old_rss) + 1, exists=False)
    return rs


def synced_new_replicaset(d: dict, rs: dict, old_rss: list[dict]) -> dict | None:
    """The existing new ReplicaSet with the Deployment's annotations copied on, its revision
    raised to max(old revisions) + 1 (a rollback keeps the old number in revision-history) and
    minReadySeconds from the Deployment; None when nothing changes. `rs` is not modified."""
    new = copy.deepcopy(rs)
    changed = set_new_rs_annotations(d, new, max_revision(old_rss) + 1, exists=True)
    mrs = min_ready_seconds(d)
    if int((new.get("spec") or {}).get("minReadySeconds") or 0) != mrs:
        new.setdefault("spec", {})["minReadySeconds"] = mrs
        changed = True
    return new if changed else None


def plan_cleanup(d: dict, old_rss: list[dict]) -> list[dict]:
    """Old ReplicaSets to delete beyond revisionHistoryLimit (cleanupDeployment): the lowest
    revisions first, only those scaled to 0 with no pods left and their spec observed."""
    alive = [rs for rs in old_rss if not meta(rs).get("deletionTimestamp")]
    diff = len(alive) - revision_history_limit(d)
    if diff <= 0:
        return []
    out = []
    for rs in by_revision(alive)[:diff]:
        st = rs.get("status") or {}
        if (int(st.get("replicas") or 0) != 0 or replicas_of(rs) != 0
                or int(meta(rs).get("generation") or 0) > int(st.get("observedGeneration") or 0)):
            continue
        out.append(rs)
    return out


@dataclass(frozen=True)
class SyncPlan:
    """What one sync of a Deployment writes, in this order: create the new ReplicaSet with
    `create` replicas (None: nothing to create), then `scales`, then delete the old revisions
    `plan_cleanup` names (`cleanup`). `path` is the branch of syncDeployment taken: "paused"
    and "scaling" write a status with counts only, "rolling" and "recreate" a status with the
    progress conditions."""
    path: str
    create: int | None = None
    scales: tuple[Scale, ...] = ()
    cleanup: bool = False

    @property
    def rollout(self) -> bool:
        return self.path in ("rolling", "recreate")


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
