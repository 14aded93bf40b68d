"""Garbage collector for dependents whose owners are gone: the controllers' safety net.

The API server's own collector (apiserver/registry.py) does the deletion work: the cascade
after a Background delete, orphaning (the `orphan` finalizer) and foreground deletion (the
`foregroundDeletion` finalizer), resumed at its start after a crash. This controller covers
what that cannot see: a dependent created with a reference to an owner already gone (or that
never existed), a cascade another server process lost. Both judge a dependent by the same
rule, `machinery.api.deletion.plan_dependent`; here every owner that exists counts as solid
(driving a foreground deletion is the server's job):

- a dependent none of whose owners exists is deleted, with no policy named (its own
  finalizers decide, else Background) and preconditions on its uid *and* resourceVersion,
  so a reference removed meanwhile — the server orphaning it — turns the delete into a
  Conflict and the dependent is judged again;
- a dependent with some owners gone loses only the references to those;
- an owner exists while an object with its uid does, deletionTimestamp or not. An owner
  being orphaned keeps the `orphan` finalizer (so exists) until every reference to it is
  gone, so its dependents are never collected; an owner being deleted in the foreground
  exists until its blocking dependents are gone.

"An owner exists" is decided by the cache first and confirmed with a live GET before
anything is written, and the dependent is read live before it is judged, so a lagging cache
never causes a deletion. Owners of kinds this process cannot resolve are assumed to exist.

Keys are `<Kind>|<namespace>/<name>`. Triggers: every dependent add/update, every owner
deletion (its dependents via the owner-uid index), and the periodic resync.
"""
from __future__ import annotations

import logging

from shoal.machinery.api import deletion, errors
from shoal.machinery.client.rest import Client
from shoal.machinery.api.resources import UnknownResource, resolve

from shoal.controller import indexes
from shoal.machinery.control.events import NORMAL, EventSink
from shoal.machinery.api.objects import key_of, meta, name_of, namespace_of, thaw, uid_of
from shoal.machinery.control import Controller, Informer, Manager, Result

log = logging.getLogger("shoal.controller.gc")


class GarbageCollector:
    def __init__(self, client: Client, *, dependents: dict[str, Informer], owners: dict[str, Informer],
                 events: EventSink):
        self.client = client
        self.dependents = dependents  # Kind -> informer
        self.owners = owners          # Kind -> informer
        self.events = events

    def register(self, manager: Manager) -> Controller:
        c = manager.add_controller("garbagecollector", self, workers=1)
        for kind, inf in self.dependents.items():
            indexes.ensure(inf, indexes.OWNERS)
            c.watch(inf, lambda obj, kind=kind: [f"{kind}|{key_of(obj)}"] if meta(obj).get("ownerReferences") else [])

        def owner_deleted(owner: dict) -> None:
            for kind, inf in self.dependents.items():
                for dep in inf.by_index(indexes.OWNERS, uid_of(owner)):
                    c.enqueue(f"{kind}|{key_of(dep)}")
        for inf in self.owners.values():
            inf.add_handler(on_delete=owner_deleted)
        return c

    def owner_exists(self, ref: dict, namespace: str, *, live: bool = True) -> bool:
        """An object with the reference's uid exists (being deleted or not): in the cache, or,
        with `live`, on the server. A namespaced owner is looked for in the dependent's
        namespace only (one elsewhere is no owner of it)."""
        kind = ref.get("kind", "")
        try:
            res = resolve(kind)
        except UnknownResource:
            return True
        ns = namespace if res.namespaced else ""
        inf = self.owners.get(res.kind)
        if inf is not None:
            cached = inf.get(f"{ns}/{ref.get('name')}" if ns else ref.get("name", ""))
            if cached is not None and uid_of(cached) == ref.get("uid"):
                return True
        if not live:
            return False
        try:
            found = self.client.get(res.kind, ref.get("name", ""), ns or None)
        except errors.NotFound:
            return False
        return uid_of(found) == ref.get("uid")

    def judge(self, obj: dict, *, live: bool) -> deletion.DependentAction:
        refs = meta(obj).get("ownerReferences") or []
        states = {str(r["uid"]): deletion.SOLID if self.owner_exists(r, namespace_of(obj), live=live)
                  else deletion.DANGLING for r in refs if r.get("uid")}
        # No owner is ever "waiting" here, so the rule never asks about the dependent's dependents.
        return deletion.plan_dependent(refs, states, deleting=bool(meta(obj).get("deletionTimestamp")),
                                       has_dependents=lambda: False)

    def reconcile(self, key: str) -> Result:
        kind, obj_key = key.split("|", 1)
        inf = self.dependents.get(kind)
        cached = inf.get(obj_key) if inf is not None else None
        if inf is None or cached is None or not meta(cached).get("ownerReferences"):
            return Result()
        if self.judge(cached, live=False) == deletion.KEEP:
            return Result()         # every owner is in the cache: no request at all
        try:
            obj = self.client.get(kind, name_of(cached), namespace_of(cached) or None)
        except errors.NotFound:
            return Result()
        if uid_of(obj) != uid_of(cached):
            return Result()         # replaced: the new object's own events bring it here
        action = self.judge(obj, live=True)
        refs = meta(obj).get("ownerReferences") or []
        if action.verb == "delete":
            log.info("deleting %s %s: its owners %s no longer exist", kind, obj_key,
                     ", ".join(f"{r.get('kind')}/{r.get('name')}" for r in refs))
            try:
                self.client.delete(kind, name_of(obj), namespace_of(obj) or None, preconditions_uid=uid_of(obj),
                                   preconditions_resource_version=meta(obj).get("resourceVersion"))
            except errors.NotFound:
                return Result()
            self.events.event(obj, NORMAL, "GarbageCollected",
                              f"Deleted {kind} {obj_key}: owner {refs[0].get('kind')}/{refs[0].get('name')} "
                              f"(uid {refs[0].get('uid')}) no longer exists")
        elif action.verb == "strip":
            new = thaw(obj)
            kept = deletion.without_owners(refs, action.strip)
            if kept:
                new["metadata"]["ownerReferences"] = kept
            else:
                new["metadata"].pop("ownerReferences", None)
            inf.observe(self.client.update(kind, new))
        return Result()
