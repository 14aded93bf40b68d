"""Deletion and garbage collection rules, pure: what a DELETE asks for, which finalizers it
leaves on the object, and what becomes of a dependent whose owners are going.

Both collectors decide by these functions — the API server's (`apiserver/registry.py`, which
runs cascades, orphaning and foreground deletion) and the controllers' safety net
(`controller/gc.py`, which only collects dependents whose owners are gone) — so that they can
never disagree about a dependent.

Kubernetes' model, which shoal follows:

- A DELETE carries a propagation policy (`propagationPolicy`, or the legacy boolean
  `orphanDependents`). `Background`: the owner goes at once, the collector deletes its
  dependents afterwards. `Orphan`: the owner gets the `orphan` finalizer; the collector
  removes the owner reference from every dependent, then the finalizer, and only then is the
  owner removed. `Foreground`: the owner gets the `foregroundDeletion` finalizer; the
  collector deletes the dependents and removes the finalizer once no dependent whose
  reference says `blockOwnerDeletion: true` is left (deleted means gone from storage: a pod
  still terminating on its node blocks).
- With no policy in the request, a finalizer already on the object decides (the first of
  `orphan` / `foregroundDeletion` it carries), else the kind's default (`Background` for every
  kind shoal serves: Kubernetes' default for the v1 APIs).
- A dependent is judged by all its owner references (`plan_dependent`): an owner is solid
  (exists and is not waiting for its dependents), dangling (gone, or another object now has
  the uid's name) or waiting (exists, being deleted in the foreground). Any solid owner keeps
  the dependent, which only loses its references to dangling and waiting owners. With none,
  it is deleted: in the foreground when an owner is waiting and it has dependents of its
  own (so the chain unwinds bottom-up), otherwise by its own finalizers' policy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from shoal.machinery.api.errors import BadRequest, Cause, Invalid

ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"
GC_FINALIZERS = (ORPHAN_FINALIZER, FOREGROUND_FINALIZER)

FOREGROUND, BACKGROUND, ORPHAN = "Foreground", "Background", "Orphan"
POLICIES = (FOREGROUND, BACKGROUND, ORPHAN)

# Owner states (`owner_state`).
SOLID, DANGLING, WAITING = "solid", "dangling", "waiting"

INT64_MAX = 2 ** 63 - 1


def default_propagation(kind: str) -> str:
    """The policy a DELETE without one gets when the object carries no GC finalizer.
    Kubernetes: `DeleteDependents` (Background) for every v1 API shoal serves; only the
    long-gone extensions/v1beta1, apps/v1beta1 and apps/v1beta2 defaulted to orphaning."""
    return BACKGROUND


# -- DeleteOptions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DeleteOptions:
    """A validated DeleteOptions. `propagation` is the explicit policy (the legacy
    `orphanDependents` folded in: true → Orphan, false → Background) or None when the request
    named none."""
    propagation: str | None = None
    grace_period_seconds: int | None = None
    uid: str | None = None
    resource_version: str | None = None


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(f'DeleteOptions.meta.k8s.io "" is invalid: {field}: {message}',
                   causes=[Cause(field, message, "FieldValueNotSupported" if message.startswith("Unsupported")
                                 else "FieldValueInvalid")],
                   details={"name": "", "group": "meta.k8s.io", "kind": "DeleteOptions"})


def _type_error(field: str, value: Any, want: str) -> BadRequest:
    return BadRequest(f"DeleteOptions.{field}: expected {want}, got {type(value).__name__} {value!r}",
                      causes=[Cause(field, f"expected {want}")])


def parse_delete_options(opts: Mapping[str, Any] | None) -> DeleteOptions:
    """Validate a DeleteOptions body (its JSON keys; the HTTP layer folds the query string's
    form in first). Wrong types are 400 (Kubernetes fails to decode them); a policy it does
    not know, or both `orphanDependents` and `propagationPolicy`, 422 as
    `ValidateDeleteOptions` words them. Other keys (kind, apiVersion, dryRun) are left to the
    caller."""
    opts = opts or {}
    if not isinstance(opts, Mapping):
        raise BadRequest("the request body must be a DeleteOptions object")
    policy = opts.get("propagationPolicy")
    if policy is not None and not isinstance(policy, str):
        raise _type_error("propagationPolicy", policy, "a string")
    orphan = opts.get("orphanDependents")
    if orphan is not None and not isinstance(orphan, bool):
        raise _type_error("orphanDependents", orphan, "a boolean")
    grace = opts.get("gracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)
                              or not -INT64_MAX - 1 <= grace <= INT64_MAX):
        raise _type_error("gracePeriodSeconds", grace, "a 64-bit integer")
    pre = opts.get("preconditions")
    if pre is None:
        pre = {}
    if not isinstance(pre, Mapping):
        raise _type_error("preconditions", pre, "an object")
    for k in ("uid", "resourceVersion"):
        if pre.get(k) is not None and not isinstance(pre[k], str):
            raise _type_error(f"preconditions.{k}", pre[k], "a string")
    if orphan is not None and policy is not None:
        raise _invalid("propagationPolicy", f'Invalid value: "{policy}": orphanDependents and deletionPropagation '
                                            f'cannot be both set')
    if policy is not None and policy not in POLICIES:
        raise _invalid("propagationPolicy", f'Unsupported value: "{policy}": supported values: "Foreground", '
                                            f'"Background", "Orphan", "nil"')
    if orphan is not None:
        policy = ORPHAN if orphan else BACKGROUND
    return DeleteOptions(propagation=policy, grace_period_seconds=grace, uid=pre.get("uid") or None,
                         resource_version=pre.get("resourceVersion") or None)


# -- finalizers -------------------------------------------------------------------------------
def gc_finalizers(finalizers: Sequence[str], propagation: str | None, *, default: str = BACKGROUND) -> list[str]:
    """The finalizers an object carries once a DELETE with `propagation` (None: not named) is
    accepted, as Kubernetes' deletionFinalizersForGarbageCollection computes them: the other
    finalizers as they were, plus `orphan` for Orphan or `foregroundDeletion` for Foreground.
    With no policy named, the first GC finalizer already present decides, else `default`.
    The list is returned unchanged (same order) when the set is the same."""
    policy = propagation
    if policy is None:
        for f in finalizers:
            if f == ORPHAN_FINALIZER:
                policy = ORPHAN
                break
            if f == FOREGROUND_FINALIZER:
                policy = FOREGROUND
                break
        else:
            policy = default
    out = [f for f in finalizers if f not in GC_FINALIZERS]
    if policy == ORPHAN:
        out.append(ORPHAN_FINALIZER)
    elif policy == FOREGROUND:
        out.append(FOREGROUND_FINALIZER)
    return list(finalizers) if set(out) == set(finalizers) else out


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def has_finalizer(obj: Mapping[str, Any], name: str) -> bool:
    return name in ((obj.get("metadata") or {}).get("finalizers") or [])


def pending_work(obj: Mapping[str, Any]) -> list[str]:
    """The collector's jobs an object being deleted asks for: "orphan", "foreground" (both
    only while it carries the finalizer and a deletionTimestamp)."""
    if not is_deleting(obj):
        return []
    return [job for job, fin in (("orphan", ORPHAN_FINALIZER), ("foreground", FOREGROUND_FINALIZER))
            if has_finalizer(obj, fin)]


def finished(obj: Mapping[str, Any]) -> bool:
    """A deletion with nothing left to wait for: a deletionTimestamp and no finalizers (a pod
    on a node also waits for the node, which the caller checks)."""
    return is_deleting(obj) and not (obj.get("metadata") or {}).get("finalizers")


# -- owners and dependents --------------------------------------------------------------------
def owner_state(owner: Mapping[str, Any] | None, *, dependent_namespace: str | None) -> str:
    """How an owner reference resolves: `owner` is the live object with the reference's uid,
    or None. A namespaced owner in another namespace than its dependent counts as absent
    (Kubernetes refuses such references the same way); a cluster-scoped dependent cannot
    have a namespaced owner."""
    if owner is None:
        return DANGLING
    owner_ns = (owner.get("metadata") or {}).get("namespace")
    if owner_ns and owner_ns != (dependent_namespace or None):
        return DANGLING
    if is_deleting(owner) and has_finalizer(owner, FOREGROUND_FINALIZER):
        return WAITING
    return SOLID


@dataclass(frozen=True)
class DependentAction:
    """What a collector does to one dependent: "keep", "strip" (remove the references to
    the owners in `strip`), or "delete" with `propagation` (None: the dependent's own
    finalizers, else the kind's default, decide — Kubernetes' collector does the same)."""
    verb: str
    strip: frozenset[str] = frozenset()
    propagation: str | None = None


KEEP = DependentAction("keep")


def plan_dependent(refs: Iterable[Mapping[str, Any]], states: Mapping[str, str], *, deleting: bool,
                   has_dependents: Callable[[], bool]) -> DependentAction:
    """Kubernetes' attemptToDeleteItem for one dependent with owner references `refs`, whose
    owners resolve as `states` (uid → SOLID/DANGLING/WAITING; a uid missing counts as
    solid: an owner the caller cannot judge is never presumed gone). `deleting`: the
    dependent has a deletionTimestamp already (then it is left alone unless solid owners
    make its references to the others worth removing). `has_dependents` is asked only when
    the answer matters."""
    refs = [r for r in refs if r.get("uid")]
    if not refs:
        return KEEP
    by_state: dict[str, set[str]] = {SOLID: set(), DANGLING: set(), WAITING: set()}
    for r in refs:
        by_state[states.get(str(r["uid"]), SOLID)].add(str(r["uid"]))
    if by_state[SOLID]:
        gone = by_state[DANGLING] | by_state[WAITING]
        return DependentAction("strip", frozenset(gone)) if gone else KEEP
    if deleting:
        return KEEP
    if by_state[WAITING] and has_dependents():
        return DependentAction("delete", propagation=FOREGROUND)
    return DependentAction("delete")


def blocks(dependent: Mapping[str, Any], owner_uid: str) -> bool:
    """The dependent holds up its owner's foreground deletion: its reference to the owner
    says `blockOwnerDeletion: true`."""
    return any(r.get("uid") == owner_uid and r.get("blockOwnerDeletion") is True
               for r in (dependent.get("metadata") or {}).get("ownerReferences") or [])


def without_owners(refs: Sequence[Mapping[str, Any]], uids: Iterable[str]) -> list[dict]:
    """`refs` less the references to `uids`."""
    gone = set(uids)
    return [dict(r) for r in refs if r.get("uid") not in gone]


def unblock(refs: Sequence[Mapping[str, Any]], owner_uid: str) -> list[dict]:
    """`refs` with the reference to `owner_uid` no longer blocking it: what the collector
    writes on a dependent that, through its own dependents, waits in the foreground for that
    very owner (a cycle that would otherwise wait forever)."""
    return [dict(r, blockOwnerDeletion=False) if r.get("uid") == owner_uid and r.get("blockOwnerDeletion") is True
            else dict(r) for r in refs]
