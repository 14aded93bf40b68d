"""`shoal rollout status|history|undo|pause|resume|restart`: pure rules plus a thin watch loop.

Pure parts (table-tested):
- `rollout_status_message(deploy)`: kubectl's DeploymentStatusViewer, field
  for field and message for message (see kubectl-wire.md §d): spec update
  not observed → progress deadline exceeded → new replicas updated → old
  replicas pending termination → updated replicas available → done.
- `history(deploy, replicasets)`: the revisions of the ReplicaSets the
  Deployment controls (ownerReference with controller=true and its uid),
  with `kubernetes.io/change-cause`.
- `rollback_target(deploy, replicasets, to_revision)`: which ReplicaSet's
  template undo restores (the previous revision when to_revision is 0);
  `machinery.api.podtemplate` strips its pod-template-hash label and says
  whether it already is the Deployment's template, by the controller's rule.

The executor `watch_rollout` lists the Deployment, evaluates the rule, then
watches from the list's resourceVersion and prints a line only when the
message changes; the deadline comes from an injected monotonic clock.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

from shoal.machinery.api import errors
from shoal.machinery.api.defaults import DEFAULT_REPLICAS
from shoal.machinery.api.objects import annotations_of, controller_ref, uid_of
# The rule for "same template" and the names on ReplicaSets are the controller's, in the floor.
from shoal.machinery.api.podtemplate import CHANGE_CAUSE_ANNOTATION, revision_of

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


@dataclass(frozen=True)
class RolloutStatus:
    message: str
    done: bool
    error: str | None = None

    def __iter__(self):  # allows `message, done, error = rollout_status_message(d)`
        return iter((self.message, self.done, self.error))


def rollout_status_message(deploy: dict) -> RolloutStatus:
    md, spec, st = deploy.get("metadata") or {}, deploy.get("spec") or {}, deploy.get("status") or {}
    name = md.get("name", "")
    if int(md.get("generation") or 0) > int(st.get("observedGeneration") or 0):
        return RolloutStatus("Waiting for deployment spec update to be observed...", False)
    for cond in st.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return RolloutStatus("", False, f'deployment "{name}" exceeded its progress deadline')
    replicas = spec.get("replicas")
    replicas = DEFAULT_REPLICAS if replicas is None else int(replicas)
    updated = int(st.get("updatedReplicas") or 0)
    total = int(st.get("replicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    prefix = f'Waiting for deployment "{name}" rollout to finish: '
    if updated < replicas:
        return RolloutStatus(f"{prefix}{updated} out of {replicas} new replicas have been updated...", False)
    if total > updated:
        return RolloutStatus(f"{prefix}{total - updated} old replicas are pending termination...", False)
    if available < updated:
        return RolloutStatus(f"{prefix}{available} of {updated} updated replicas are available...", False)
    return RolloutStatus(f'deployment "{name}" successfully rolled out', True)


# --- history and undo --------------------------------------------------------------------

def controlled_by(obj: dict, owner: dict) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == uid_of(owner)


@dataclass(frozen=True)
class Revision:
    number: int
    change_cause: str
    replicaset: dict


def history(deploy: dict, replicasets: list[dict]) -> list[Revision]:
    """Revisions (ascending) of the ReplicaSets this Deployment controls."""
    out: dict[int, Revision] = {}
    for rs in replicasets:
        if not controlled_by(rs, deploy):
            continue
        n = revision_of(rs)
        if n is None:
            continue
        cause = annotations_of(rs).get(CHANGE_CAUSE_ANNOTATION) or ""
        out[n] = Revision(n, cause, rs)
    return [out[k] for k in sorted(out)]


class RollbackError(Exception):
    pass


def rollback_target(deploy: dict, replicasets: list[dict], to_revision: int = 0) -> Revision:
    """The revision undo restores: `to_revision`, or the one before the latest when 0."""
    name = (deploy.get("metadata") or {}).get("name", "")
    revs = history(deploy, replicasets)
    if not revs:
        raise RollbackError(f'no rollout history found for deployment "{name}"')
    if to_revision:
        for r in revs:
            if r.number == to_revision:
                return r
        raise RollbackError(f"unable to find specified revision {to_revision} in history")
    if len(revs) < 2:
        raise RollbackError(f'no previous revision to roll back to for deployment "{name}"')
    return revs[-2]


# --- the watch loop ------------------------------------------------------------------------

class RolloutClient(Protocol):
    def list(self, kind: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None, all_namespaces: bool = False) -> dict: ...

    def watch(self, kind: str, namespace: str | None = None, *, resource_version: str | None = None,
              label_selector: str | None = None, field_selector: str | None = None,
              timeout_seconds: float | None = None, bookmarks: bool = False,
              all_namespaces: bool = False) -> Iterator[dict]: ...


class RolloutTimeout(Exception):
    pass


def watch_rollout(client: RolloutClient, name: str, namespace: str, *, timeout: float | None,
                  emit: Callable[[str], None], watch: bool = True,
                  monotonic: Callable[[], float] = time.monotonic) -> RolloutStatus:
    """Follow a Deployment until its rollout is done, fails, or `timeout` seconds pass.

    Emits each distinct status message. Returns the final status (with
    `error` set on ProgressDeadlineExceeded); raises NotFound when the
    Deployment does not exist or is deleted, RolloutTimeout on timeout."""
    deadline = None if not timeout else monotonic() + timeout
    field = f"metadata.name={name}"
    last_msg = None

    def evaluate(obj: dict) -> RolloutStatus:
        nonlocal last_msg
        st = rollout_status_message(obj)
        if st.message and st.message != last_msg:
            emit(st.message)
            last_msg = st.message
        return st

    def not_found() -> errors.NotFound:
        return errors.NotFound(f'deployments.apps "{name}" not found')

    rv = None
    while True:
        if rv is None:
            lst = client.list("deployments", namespace, field_selector=field)
            items = [i for i in lst.get("items") or [] if (i.get("metadata") or {}).get("name") == name]
            if not items:
                raise not_found()
            st = evaluate(items[0])
            if st.done or st.error or not watch:
                return st
            rv = (lst.get("metadata") or {}).get("resourceVersion")
        remaining = None if deadline is None else deadline - monotonic()
        if remaining is not None and remaining <= 0:
            raise RolloutTimeout("timed out waiting for the condition")
        chunk = 60.0 if remaining is None else max(1.0, min(60.0, remaining))
        try:
            for ev in client.watch("deployments", namespace, resource_version=rv, field_selector=field,
                                   timeout_seconds=chunk, bookmarks=True):
                obj = ev.get("object") or {}
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if new_rv:
                    rv = new_rv
                if ev.get("type") == "BOOKMARK":
                    continue
                if (obj.get("metadata") or {}).get("name") != name:
                    continue
                if ev.get("type") == "DELETED":
                    raise not_found()
                st = evaluate(obj)
                if st.done or st.error:
                    return st
                if deadline is not None and monotonic() >= deadline:
                    raise RolloutTimeout("timed out waiting for the condition")
        except errors.Gone:
            rv = None  # history compacted: relist
