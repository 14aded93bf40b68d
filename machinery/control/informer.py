"""Informer: list + watch one resource into a read-only in-memory cache, and tell handlers.

Contract:
- `start()` runs one thread: LIST (remember the collection's resourceVersion), then WATCH
  from exactly that revision; when the stream ends it watches again from the last revision
  seen; on 410 Gone it lists again and reconciles the cache with the list (objects missing
  from it are reported as deleted). Connection errors back off and retry.
- `field_selector` (say `spec.nodeName=node-1`, the agent's own pods) narrows both the list
  and the watch; the server reports an object that stops matching as DELETED.
- `has_synced()` is True once the first list has been applied.
- The cache is keyed `namespace/name` (or `name`); cached objects are shared — never mutate
  them (`objects.thaw()` first).
- Handlers (`on_add(obj)`, `on_update(old, new)`, `on_delete(obj)`) run on the informer's
  thread, serialized, and must be quick (enqueue a key, adjust a counter).
- `on_list()` handlers run after every LIST has been applied (the first one and each one
  after 410 Gone), on the informer's thread, before the watch resumes: the point where the
  cache is a whole, consistent picture (the agent adopts its containers there).
- `resync()` replays `on_update(obj, obj)` for every cached object (level-based safety net);
  the Manager calls it on a timer.
- Read-your-writes: a controller that just wrote an object hands the server's answer to
  `observe(obj)`, so its next reconcile sees its own write even before the watch event
  arrives (this replaces client-go's "expectations"). Older revisions never overwrite newer
  ones. `observe_deleted(key, uid)` removes an object the controller deleted and ignores
  late ADDED/MODIFIED events for that uid until the watch reports the deletion. The uids of
  objects the watch reported deleted are remembered (bounded), so a write-through that loses
  the race against the DELETED event cannot bring a deleted object back into the cache.
- Indexes (`add_index(name, fn)`, `by_index(name, value)`) give O(1) lookups such as pods by
  node or by controller owner.
- Cached objects carry no `metadata.managedFields` (Kubernetes' own controllers trim them in
  their informers too): field ownership roughly doubles an object and no controller reads
  it. A write of a cached object leaves the server's ownership records as they are (an
  update without managedFields keeps them).
"""
from __future__ import annotations

import builtins
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client

from shoal.machinery.api.objects import key_of, resource_version, uid_of

log = logging.getLogger(__name__)

IndexFunc = Callable[[dict], list[str]]


@dataclass
class Handler:
    on_add: Callable[[dict], None] | None = None
    on_update: Callable[[dict, dict], None] | None = None
    on_delete: Callable[[dict], None] | None = None
    on_list: Callable[[], None] | None = None


class Informer:
    def __init__(self, client: Client, kind: str, *, namespace: str | None = None, watch_timeout: float = 30.0,
                 retry_base: float = 0.2, retry_cap: float = 5.0, field_selector: str | None = None,
                 name: str | None = None):
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.field_selector = field_selector
        self.name = name or f"informer-{kind}"
        self.watch_timeout = watch_timeout
        self._retry_base, self._retry_cap = retry_base, retry_cap
        self._items: dict[str, dict] = {}
        self._indexers: dict[str, IndexFunc] = {}
        self._indexes: dict[str, dict[str, dict[str, dict]]] = {}
        self._tombstones: dict[str, str] = {}
        self._deleted: OrderedDict[str, int] = OrderedDict()  # uid -> resourceVersion of its deletion
        self._deleted_max = 50_000
        self._handlers: list[Handler] = []
        self._lock = threading.Lock()  # cache reads/writes, held briefly
        self._dispatch = threading.RLock()  # serializes mutations + handler calls
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rv: str | None = None

    # -- configuration ------------------------------------------------------------------------
    def add_handler(self, *, on_add=None, on_update=None, on_delete=None, on_list=None) -> None:
        with self._dispatch:
            self._handlers.append(Handler(on_add, on_update, on_delete, on_list))

    def add_index(self, name: str, fn: IndexFunc) -> None:
        with self._dispatch, self._lock:
            self._indexers[name] = fn
            idx: dict[str, dict[str, dict]] = {}
            for k, obj in self._items.items():
                for v in fn(obj):
                    idx.setdefault(v, {})[k] = obj
            self._indexes[name] = idx

    def has_index(self, name: str) -> bool:
        return name in self._indexers

    # -- reading ------------------------------------------------------------------------------
    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._items.get(key)

    def list(self) -> list[dict]:
        with self._lock:
            return list(self._items.values())

    def keys(self) -> builtins.list[str]:
        with self._lock:
            return list(self._items)

    def by_index(self, name: str, value: str) -> builtins.list[dict]:
        with self._lock:
            return list(self._indexes[name].get(value, {}).values())

    def has_synced(self) -> bool:
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    # -- cache mutation (always under _dispatch) -----------------------------------------------
    def _index_locked(self, key: str, old: dict | None, new: dict | None) -> None:
        for name, fn in self._indexers.items():
            idx = self._indexes[name]
            if old is not None:
                for v in fn(old):
                    bucket = idx.get(v)
                    if bucket is not None:
                        bucket.pop(key, None)
                        if not bucket:
                            del idx[v]
            if new is not None:
                for v in fn(new):
                    idx.setdefault(v, {})[key] = new

    def _upsert(self, obj: dict, *, from_watch: bool) -> None:
        md = obj.get("metadata")
        if md and "managedFields" in md:
            obj = {**obj, "metadata": {k: v for k, v in md.items() if k != "managedFields"}}
        key = key_of(obj)
        with self._dispatch:
            with self._lock:
                tomb = self._tombstones.get(key)
                if tomb is not None:
                    if tomb == uid_of(obj):
                        return
                    del self._tombstones[key]
                gone_at = self._deleted.get(uid_of(obj))
                if gone_at is not None and resource_version(obj) <= gone_at:
                    return
                old = self._items.get(key)
                if old is not None and uid_of(old) == uid_of(obj) and resource_version(old) >= resource_version(obj):
                    return
                self._items[key] = obj
                self._index_locked(key, old, obj)
            self._notify(old, obj)

    def _remove(self, key: str, last: dict | None, *, tombstone_uid: str | None = None) -> None:
        with self._dispatch:
            with self._lock:
                if tombstone_uid:
                    self._tombstones[key] = tombstone_uid
                old = self._items.pop(key, None)
                if old is not None:
                    self._index_locked(key, old, None)
            if old is not None:
                for h in list(self._handlers):
                    if h.on_delete:
                        self._call(h.on_delete, old)

    def _notify(self, old: dict | None, new: dict) -> None:
        for h in list(self._handlers):
            if old is None:
                if h.on_add:
                    self._call(h.on_add, new)
            elif h.on_update:
                self._call(h.on_update, old, new)

    def _call(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # a broken handler must not kill the informer
            log.exception("%s informer: handler %r failed", self.kind, fn)

    def observe(self, obj: dict | None) -> None:
        """Write-through of an object this process just wrote (see module docstring)."""
        if isinstance(obj, dict) and obj.get("metadata", {}).get("name"):
            self._upsert(obj, from_watch=False)

    def observe_deleted(self, key: str, uid: str) -> None:
        self._remove(key, None, tombstone_uid=uid)

    def resync(self) -> None:
        with self._dispatch:
            for obj in self.list():
                for h in list(self._handlers):
                    if h.on_update:
                        self._call(h.on_update, obj, obj)

    # -- the list/watch loop --------------------------------------------------------------------
    def _list_kwargs(self) -> dict:
        kw: dict = {"namespace": self.namespace} if self.namespace else {"all_namespaces": True}
        if self.field_selector:
            kw["field_selector"] = self.field_selector
        return kw

    def _relist(self) -> None:
        lst = self.client.list(self.kind, **self._list_kwargs())
        items = lst.get("items") or []
        list_rv = int((lst.get("metadata") or {}).get("resourceVersion") or 0)
        seen = set()
        with self._dispatch:
            for obj in items:
                # List items may omit kind/apiVersion; cached objects always carry them.
                obj.setdefault("kind", self._kind_name())
                seen.add(key_of(obj))
                self._upsert(obj, from_watch=True)
            with self._lock:
                gone = [(k, o) for k, o in self._items.items() if k not in seen and resource_version(o) <= list_rv]
                for k in list(self._tombstones):
                    if k not in seen:
                        del self._tombstones[k]
            for k, o in gone:
                self._remove(k, o)
        self._rv = (lst.get("metadata") or {}).get("resourceVersion")
        self._synced.set()
        with self._dispatch:
            for h in list(self._handlers):
                if h.on_list:
                    self._call(h.on_list)

    def _kind_name(self) -> str:
        from shoal.machinery.api.resources import resolve
        return resolve(self.kind).kind

    def _handle(self, ev: dict) -> None:
        typ, obj = ev.get("type"), ev.get("object") or {}
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if typ in ("ADDED", "MODIFIED"):
            self._upsert(obj, from_watch=True)
        elif typ == "DELETED":
            key = key_of(obj)
            with self._lock:
                self._tombstones.pop(key, None)
                cur = self._items.get(key)
                if uid_of(obj):
                    self._deleted[uid_of(obj)] = max(resource_version(obj), resource_version(cur or {}))
                    if len(self._deleted) > self._deleted_max:
                        self._deleted.popitem(last=False)
            if cur is not None and uid_of(cur) == uid_of(obj):
                self._remove(key, obj)
        if rv:
            self._rv = rv

    def _run(self) -> None:
        failures = 0
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                for ev in self.client.watch(self.kind, resource_version=self._rv, bookmarks=True,
                                            timeout_seconds=self.watch_timeout, **self._list_kwargs()):
                    if self._stop.is_set():
                        return
                    self._handle(ev)
                    failures = 0
                failures = 0
            except errors.Gone:
                log.info("%s informer: resourceVersion %s is compacted, listing again", self.kind, self._rv)
                need_list = True
            except Exception as e:
                if self._stop.is_set():
                    return
                failures += 1
                delay = min(self._retry_base * 2 ** min(failures, 10), self._retry_cap)
                log.warning("%s informer: %s; retrying in %.1fs", self.kind, e, delay)
                self._stop.wait(delay)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the loop. A watch blocked on a quiet stream ends at its timeout at the latest;
        the thread is a daemon, so stop() waits only `timeout` for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
