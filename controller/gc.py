"""Garbage collector for orphaned dependents.

The API server deletes dependents in the background when their owner is deleted. This
controller covers what that misses — a server or controller crash mid-cascade, a dependent
created with an owner reference to an object that is already gone:
- a dependent (pod, ReplicaSet) none of whose owners exists any more is deleted
  (propagationPolicy Background, precondition on its uid);
- a dependent with some owners gone has only those dangling references removed.
"An owner exists" is decided by the cache first and confirmed with a live GET before
anything is deleted, so a lagging cache never causes a deletion. Owners of kinds this
process cannot resolve are assumed to exist.

Keys are `<Kind>|<namespace>/<name>`. Triggers: every dependent add/update, every owner
deletion (its dependents via the owner-uid index), and the periodic resync.
"""
from __future__ import annotations

import logging

from shoal.machinery.api import errors
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

    def owner_exists(self, ref: dict, namespace: str) -> bool:
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
        try:
            live = self.client.get(res.kind, ref.get("name", ""), ns or None)
        except errors.NotFound:
            return False
        return uid_of(live) == ref.get("uid")

    def reconcile(self, key: str) -> Result:
        kind, obj_key = key.split("|", 1)
        inf = self.dependents.get(kind)
        obj = inf.get(obj_key) if inf is not None else None
        if obj is None:
            return Result()
        refs = meta(obj).get("ownerReferences") or []
        if not refs:
            return Result()
        dangling = [r for r in refs if not self.owner_exists(r, namespace_of(obj))]
        if not dangling:
            return Result()
        if len(dangling) == len(refs):
            log.info("deleting %s %s: its owners %s no longer exist", kind, obj_key,
                     ", ".join(f"{r.get('kind')}/{r.get('name')}" for r in refs))
            try:
                self.client.delete(kind, name_of(obj), namespace_of(obj) or None, propagation_policy="Background",
                                   preconditions_uid=uid_of(obj))
            except errors.NotFound:
                pass
            self.events.event(obj, NORMAL, "GarbageCollected",
                              f"Deleted {kind} {obj_key}: owner {refs[0].get('kind')}/{refs[0].get('name')} "
                              f"(uid {refs[0].get('uid')}) no longer exists")
            return Result()
        gone = {r.get("uid") for r in dangling}
        new = thaw(obj)
        new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") not in gone]
        inf.observe(self.client.update(kind, new))
        return Result()
