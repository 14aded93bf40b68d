"""Dry run (`dryRun=All`): a write validated, admitted and checked as the real one, nothing stored.

Kubernetes runs a dry-run request through its whole registry — defaulting, validation,
admission, preconditions, the resourceVersion check — and stops only at the storage layer
(apiserver's `DryRunnableStorage`): a create checks that the key is free and hands the object
back; an update checks the revision and hands back the updated object with the *stored*
resourceVersion (so `kubectl diff` shows no change where there is none); a delete checks the
preconditions and hands back the object as stored. shoal stops at the same place:
`dry_run_view(registry)` is the registry with

- `store` replaced by a `DryRunStore`: reads pass through; `create`, `update`, `delete` and
  `delete_batch` make every check the real write makes (key free, object present,
  compare-and-swap revision, uid precondition, size limit, allocated values free), raise the
  same errors and return what it would return — and write nothing, so no log row, no watch
  event and no value claimed (a dry-run Service shows the cluster IP a real create would get
  now, and holds none);
- every queue it holds (the cascading-deletion and namespace garbage-collection queue)
  replaced by a sink, so no dependent is touched.

Every verb of the registry (create, update, patch and apply, /status, /scale, binding,
delete with its graceful, finalizer and namespace paths, deletecollection) thus runs its
real code under a dry run; none has a dry-run branch of its own that could be forgotten.

The store's interface is closed on purpose: a `Store` attribute this module has not
classified is refused (AttributeError), never passed through, and
tests/unit/test_dryrun_interface.py fails until a new one is classified as a read or a write.

Next: `apiserver.app` calls `dry_run_view` for requests with `dryRun=All`.
"""
from __future__ import annotations

import copy
import inspect
import json
import queue
from typing import Any

from shoal.machinery.api import errors
from shoal.apiserver.store import Allocation, AllocationTaken, Store, check_object_size, object_key

# Store attributes a dry run may use as they are: they read.
READS = frozenset({"get", "get_by_uid", "list", "page", "dependents", "allocations", "events_after", "current_revision",
                   "compacted_revision", "lookup_credential", "count_credentials", "node_password_hash", "node_endpoint",
                   "list_range", "count_range", "key_range", "last_logged", "dialect", "url", "clock"})
# Store writes a dry run answers itself (checked, never written).
WRITES = frozenset({"create", "update", "delete", "delete_batch"})
# Store attributes a dry run must never reach: writes no request path of the registry makes
# (credentials, compaction) and the machinery below the methods.
REFUSED = frozenset({"compact", "refresh_compacted", "put_credential", "delete_credentials", "replace_credentials",
                     "claim_node_password", "put_node_password", "put_node_endpoint", "close", "engine", "on_commit",
                     "COMPACT_CHUNK"})


def _stored(obj: dict) -> tuple[str, dict]:
    """The value the store would keep (JSON, without resourceVersion) and its decoded copy."""
    md = obj.get("metadata") or {}
    if "resourceVersion" in md:
        obj = dict(obj, metadata={k: v for k, v in md.items() if k != "resourceVersion"})
    value = json.dumps(obj, separators=(",", ":"))
    return value, json.loads(value)


class DryRunStore:
    """A `Store` whose writes are checked and answered but never made (module docstring)."""

    def __init__(self, store: Store):
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name in READS:
            return getattr(self._store, name)
        raise AttributeError(f"Store.{name} is not available to a dry run (apiserver.dryrun classifies the "
                             f"store's attributes)")

    def create(self, resource: str, obj: dict, *, allocations: set[Allocation] | None = None) -> dict:
        """As `Store.create`; the answer carries no resourceVersion (none was assigned),
        as Kubernetes' dry-run create."""
        md = obj["metadata"]
        value, out = _stored(obj)
        check_object_size(resource, obj, value)
        if self._store.get(resource, md.get("namespace") or None, md["name"]) is not None:
            raise errors.AlreadyExists(f'{resource} "{md["name"]}" already exists',
                                       details={"name": md["name"], "kind": resource})
        self._check_free(object_key(resource, md.get("namespace"), md["name"]), allocations)
        return out

    def _check_free(self, key: str, wanted: set[Allocation] | None) -> None:
        """AllocationTaken, as the real write would raise, for a wanted value another object holds."""
        for pool in sorted({p for p, _ in wanted or ()}):
            held = self._store.allocations(pool)
            for p, value in sorted(wanted or ()):
                if p == pool and held.get(value, key) != key:
                    raise AllocationTaken(pool, value, held[value])

    def update(self, resource: str, obj: dict, *, expected_revision: int,
               allocations: set[Allocation] | None = None) -> dict:
        """As `Store.update`; the answer keeps the stored resourceVersion (nothing was written)."""
        md = obj["metadata"]
        value, out = _stored(obj)
        check_object_size(resource, obj, value)
        cur = self._store.get(resource, md.get("namespace") or None, md["name"])
        if cur is None:
            raise errors.NotFound(f'{resource} "{md["name"]}" not found', details={"name": md["name"], "kind": resource})
        if int(cur["metadata"]["resourceVersion"]) != expected_revision:
            raise errors.Conflict(
                f'Operation cannot be fulfilled on {resource} "{md["name"]}": the object has been '
                f'modified; please apply your changes to the latest version and try again',
                details={"name": md["name"], "kind": resource})
        self._check_free(object_key(resource, md.get("namespace"), md["name"]), allocations)
        out.setdefault("metadata", {})["resourceVersion"] = str(expected_revision)
        return out

    def delete(self, resource: str, namespace: str | None, name: str, *,
               expected_revision: int | None = None, expected_uid: str | None = None,
               release_allocations: bool = False) -> dict:
        """As `Store.delete`; answers the object as stored (and releases nothing)."""
        cur = self._store.get(resource, namespace, name)
        if cur is None:
            raise errors.NotFound(f'{resource} "{name}" not found', details={"name": name, "kind": resource})
        uid = cur["metadata"].get("uid", "")
        if expected_uid is not None and uid != expected_uid:
            raise errors.Conflict(f'Precondition failed: UID in precondition: {expected_uid}, '
                                  f'UID in object meta: {uid}')
        if expected_revision is not None and int(cur["metadata"]["resourceVersion"]) != expected_revision:
            raise errors.Conflict(f'Operation cannot be fulfilled on {resource} "{name}": '
                                  f'the object has been modified')
        return cur

    def delete_batch(self, resource: str, items: list[tuple[str | None, str, int]]) -> list[dict]:
        """As `Store.delete_batch`: the objects that would go (present, at the expected revision)."""
        out = []
        for namespace, name, expected in items:
            cur = self._store.get(resource, namespace, name)
            if cur is not None and int(cur["metadata"]["resourceVersion"]) == expected:
                out.append(cur)
        return out


class _Sink:
    """Stands in for a queue: takes what is put and drops it."""

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        pass

    def put_nowait(self, item: Any) -> None:
        pass


def dry_run_view(registry: Any) -> Any:
    """A shallow copy of `registry` (an `apiserver.registry.Registry`) that runs every verb for
    real but stores nothing and queues no background work (module docstring). Cheap: make
    one per request, so it sees the registry as it is now."""
    view = copy.copy(registry)
    view.store = DryRunStore(registry.store)
    for name, value in list(vars(view).items()):
        if isinstance(value, queue.Queue):
            setattr(view, name, _Sink())
        elif inspect.ismethod(value) and isinstance(value.__self__, queue.Queue):
            setattr(view, name, _Sink().put)      # a queue's put kept as a callback
    return view
