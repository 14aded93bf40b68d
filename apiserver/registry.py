"""Object semantics on top of the store — what Kubernetes' registry layer does.

Contract of every verb: validate first, then one compare-and-swap write; a
request that fails validation changes nothing.

- create: defaults + validation (`shoal.machinery.api.models.validate`), namespace must
  exist, `generateName`, server fields (uid, creationTimestamp, generation 1),
  status dropped for kinds whose status is written by controllers/agents.
- update (PUT): compare-and-swap on `metadata.resourceVersion` (unconditional
  when it is absent, as Kubernetes allows); server fields preserved; the main
  resource ignores status changes and `/status` ignores everything else;
  `generation` bumps only when `spec` changes; a pod's `spec.nodeName` may be
  set once (binding) and never changed.
- patch: merge / JSON / strategic patches applied to the live object, then the
  update path, retried internally on conflicts unless the patch pins a
  resourceVersion. `apply` (server-side apply, `application/apply-patch+yaml`)
  merges a configuration by field ownership (`apiserver.managedfields`) and
  creates the object when it is absent.
- field ownership: every create, update, patch, /status and /scale write records
  its manager's fields in `metadata.managedFields` (`_own_fields`), as
  Kubernetes' field manager does.
- Services: a create or update writes the cluster IP and node ports the Service holds in
  the same transaction (`apiserver.allocation`); its removal releases them.
- delete: graceful for pods bound to a node (deletionTimestamp set, the agent
  confirms with gracePeriodSeconds=0), held by finalizers, otherwise at once.
  The propagation policy (Kubernetes' DeleteOptions, `machinery.api.deletion`)
  decides what becomes of dependents (ownerReferences): Background — the owner
  goes at once, the collector deletes them after; Orphan — the `orphan`
  finalizer holds the owner until the collector has removed the owner
  reference from every dependent; Foreground — the `foregroundDeletion`
  finalizer holds it until the collector has deleted every dependent that
  blocks it (`blockOwnerDeletion`). `delete_collection` deletes every object a
  selector matches. Namespaces delete their contents first.
- the collector (`_gc_loop`, one thread fed by `_gc_queue`): cascades after a
  removal, the orphan and foreground jobs, namespace termination, and at start
  a sweep that resumes whatever a crash cut short. See "Deletion and garbage
  collection" in docs/controllers.md.
- background jobs beside the requests: log compaction, and the Event TTL
  (`expire_events`: Events whose last occurrence is older than
  `settings.event_ttl` are deleted in batches, each with a DELETED watch event).

Next: `apiserver.app` (HTTP), `apiserver.watch`.
"""
from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from shoal.machinery.api import deletion, errors, selectors
from shoal.apiserver import managedfields
from shoal.apiserver import warnings as client_warnings
from shoal.apiserver import patch as patches
from shoal.machinery.api.names import is_dns1123_subdomain
from shoal.machinery.api.resources import RESOURCES, Resource, resolve
from shoal.machinery.api.times import format_time, parse_time
from shoal.apiserver.settings import Settings
from shoal.apiserver.allocation import Ranges, ServiceAllocator
from shoal.apiserver.store import Store, object_key

log = logging.getLogger(__name__)

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Kinds whose status is owned by controllers/agents: a create carries none.
STATUS_RESET_ON_CREATE = {"Pod", "Deployment", "ReplicaSet", "Service"}
APPLY_PATCH = "application/apply-patch+yaml"
# The field manager of the API server's own writes (system namespaces, the collector's edits).
SERVER_MANAGER = "shoal-apiserver"
NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
GENERATE_NAME_ATTEMPTS = 8


def now_rfc3339(clock: Callable[[], float] = time.time) -> str:
    return format_time(clock())


def event_last_seen(ev: dict) -> float | None:
    """When an Event last happened, in epoch seconds: the first time it carries of
    `series.lastObservedTime`, `lastTimestamp` (both moved forward by recorders that count
    repeats), `eventTime` and `metadata.creationTimestamp` (every stored object has one).
    None if it has no parseable time at all. The Event's own account of its last occurrence
    wins over when it was stored, so an Event posted late about an old occurrence ages from
    that occurrence (Kubernetes ages from the last write instead: its TTL is an etcd lease)."""
    for t in ((ev.get("series") or {}).get("lastObservedTime"), ev.get("lastTimestamp"), ev.get("eventTime"),
              (ev.get("metadata") or {}).get("creationTimestamp")):
        seen = parse_time(t) if isinstance(t, str) else None
        if seen is not None:
            return seen
    return None


def _generated_name(prefix: str) -> str:
    return str(prefix) + "".join(secrets.choice(NAME_SUFFIX_ALPHABET) for _ in range(5))


def _not_found(res: Resource, name: str) -> errors.NotFound:
    return errors.NotFound(f'{res.group_resource} "{name}" not found',
                           details={"name": name, "group": res.group, "kind": res.plural})


@dataclass
class Selectors:
    labels: selectors.Selector
    fields: list = field(default_factory=list)

    @classmethod
    def parse(cls, label_selector: str | None, field_selector: str | None) -> "Selectors":
        try:
            ls = selectors.parse_selector(label_selector)
        except ValueError as e:
            raise errors.BadRequest(f"unable to parse requirement: {e}",
                                    causes=[errors.Cause("labelSelector", str(e))]) from None
        try:
            fs = selectors.parse_field_selector(field_selector)
        except ValueError as e:
            raise errors.BadRequest(f"invalid field selector: {e}",
                                    causes=[errors.Cause("fieldSelector", str(e))]) from None
        return cls(ls, fs)

    def matches(self, obj: dict) -> bool:
        if not self.labels.empty and not self.labels.matches((obj.get("metadata") or {}).get("labels") or {}):
            return False
        return selectors.field_matches(obj, self.fields) if self.fields else True


def _validate(kind: str, obj: dict, *, old: dict | None = None, subresource: str | None = None) -> dict:
    """Validate as the request asked (`fieldValidation`: apiserver.warnings): unknown fields
    refused, or dropped with a Warning header each."""
    from shoal.machinery.api.models import validate
    mode = client_warnings.field_validation()
    if mode == "Strict":
        return validate(kind, obj, old=old, subresource=subresource)
    texts: list[str] = []
    out = validate(kind, obj, old=old, subresource=subresource, field_validation=mode, warnings=texts)
    for t in texts:
        client_warnings.warn(t)
    return out


def _validate_status(kind: str, status: Any, name: str) -> dict | None:
    from shoal.machinery.api.models import validate_status
    return validate_status(kind, status, name=name)


class Registry:
    def __init__(self, store: Store, settings: Settings, *, clock: Callable[[], float] = time.time):
        self.store = store
        self.settings = settings
        # Cluster IPs and node ports of Services, written with them (apiserver.allocation).
        self.services = ServiceAllocator(Ranges.parse(settings.service_cidr, settings.service_node_port_range))
        self.clock = clock
        self.tokens: dict[str, str] = {}
        self._now_text: tuple[int, str] = (-1, "")
        # The collector's jobs, (job, argument): every hand-off from a request goes through
        # this queue (a dry run swaps it for a sink). Only the collector's own thread uses
        # `_gc_delayed` (job -> monotonic time it is due) and `_gc_failures`.
        self._gc_queue: "queue.Queue[tuple[str, str] | None]" = queue.Queue()
        self._gc_delayed: dict[tuple[str, str], float] = {}
        self._gc_failures: dict[tuple[str, str], int] = {}
        self._gc_thread: threading.Thread | None = None
        self._scheduler = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        from shoal.apiserver import auth
        self.tokens = auth.bootstrap_tokens(self.store, self.settings.data_dir)
        for ns in SYSTEM_NAMESPACES:
            if self.store.get("namespaces", None, ns) is None:
                try:
                    self.create(resolve("Namespace"), None,
                                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
                except errors.AlreadyExists:
                    pass
        self._stopping.clear()
        self._gc_thread = threading.Thread(target=self._gc_loop, name="cascade-gc", daemon=True)
        self._gc_thread.start()
        from apscheduler.schedulers.background import BackgroundScheduler
        self._scheduler = BackgroundScheduler(daemon=True)
        self._scheduler.add_job(self._compact, "interval", seconds=self.settings.compaction_interval,
                                id="compaction", max_instances=1, coalesce=True)
        if self.settings.event_ttl > 0:
            self._scheduler.add_job(self._expire_events, "interval", seconds=self.settings.event_ttl_interval,
                                    id="event-ttl", max_instances=1, coalesce=True)
        self._scheduler.start()
        # Work a crash cut short (a cascade, an orphan or foreground job, a namespace, a last
        # finalizer removed but the object not) is resumed once at start-up; from then on the
        # controllers' garbage collector (controller/gc.py) also covers dangling owners.
        self._gc_queue.put(("sweep", ""))

    def stop(self) -> None:
        self._stopping.set()
        self._gc_queue.put(None)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._gc_thread is not None:
            self._gc_thread.join(timeout=5)

    def _compact(self) -> None:
        try:
            self.store.refresh_compacted()
            self.store.compact(keep_seconds=self.settings.compaction_keep)
        except Exception:
            log.exception("compaction failed")

    def _expire_events(self) -> None:
        try:
            self.expire_events()
        except Exception:
            log.exception("expiring events failed")

    EVENT_TTL_BATCH = 500     # Events read and deleted per transaction

    def expire_events(self) -> int:
        """Delete the Events that last happened more than `settings.event_ttl` ago, as
        Kubernetes' --event-ttl does (there an etcd lease; here this sweep on a timer). Scans in
        key order EVENT_TTL_BATCH at a time and deletes each batch in one transaction (each
        delete a DELETED watch event), so memory stays bounded and writers get the lock
        between batches. An Event updated after it was read is left for the next sweep.
        Returns how many were deleted."""
        cutoff = self.clock() - self.settings.event_ttl
        deleted, after = 0, ""
        while not self._stopping.is_set():
            page = self.store.page("events", after_key=after, limit=self.EVENT_TTL_BATCH)
            if not page:
                break
            last = page[-1]["metadata"]
            after = object_key("events", last.get("namespace"), last["name"])
            old = [((ev["metadata"].get("namespace")), ev["metadata"]["name"], int(ev["metadata"]["resourceVersion"]))
                   for ev in page if (seen := event_last_seen(ev)) is not None and seen < cutoff]
            deleted += len(self.store.delete_batch("events", old))
            if len(page) < self.EVENT_TTL_BATCH:
                break
        if deleted:
            log.info("deleted %d events older than %gs", deleted, self.settings.event_ttl)
        return deleted

    # ------------------------------------------------------------------ reads
    def get(self, res: Resource, namespace: str | None, name: str) -> dict:
        obj = self.store.get(res.plural, namespace if res.namespaced else None, name)
        if obj is None:
            raise _not_found(res, name)
        return obj

    def list(self, res: Resource, namespace: str | None, sel: Selectors) -> tuple[list[dict], int]:
        items, rev = self.store.list(res.plural, namespace if res.namespaced else None)
        return [o for o in items if sel.matches(o)], rev

    # ------------------------------------------------------------------ create
    def _check_namespace(self, res: Resource, namespace: str | None, body: dict) -> str | None:
        md = body.get("metadata", {})
        if not isinstance(md, dict):
            raise errors.BadRequest("metadata: must be an object",
                                    causes=[errors.Cause("metadata", "must be an object")])
        md = body["metadata"] = dict(md)
        if not res.namespaced:
            md.pop("namespace", None)
            return None
        body_ns = md.get("namespace")
        if body_ns and namespace and body_ns != namespace:
            raise errors.BadRequest("the namespace of the provided object does not match the namespace sent on "
                                    "the request", causes=[errors.Cause("metadata.namespace", f"{body_ns} != "
                                                                        f"{namespace}")])
        ns = namespace or body_ns or "default"
        md["namespace"] = ns
        return ns

    def create(self, res: Resource, namespace: str | None, body: Any, *, manager: str | None = None,
               applied: bool = False) -> dict:
        """`manager`: who writes (the request's fieldManager; managedFields record its fields).
        `applied`: the body's managedFields were computed by `apply` and are kept as they are."""
        if not isinstance(body, dict):
            raise errors.BadRequest(f"the request body must be a {res.kind} object")
        body = dict(body)
        body.setdefault("apiVersion", res.api_version)
        body.setdefault("kind", res.kind)
        if body["kind"] != res.kind or body["apiVersion"] != res.api_version:
            raise errors.BadRequest(
                f'the body is a {body["apiVersion"]}/{body["kind"]} but the request is for {res.api_version} '
                f'{res.plural}', causes=[errors.Cause("kind", f"expected {res.kind}")])
        ns = self._check_namespace(res, namespace, body)
        md = body["metadata"]
        generated = not md.get("name") and bool(md.get("generateName"))
        if generated:
            md["name"] = _generated_name(md["generateName"])
        if not md.get("name"):
            raise errors.Invalid(f"{res.kind} is invalid: metadata.name: Required value: name or generateName is "
                                 f"required", causes=[errors.Cause("metadata.name", "Required value",
                                                                   "FieldValueRequired")])
        for k in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation", "selfLink"):
            md.pop(k, None)
        requested_fields = md.pop("managedFields", None)
        if res.kind in STATUS_RESET_ON_CREATE:
            body.pop("status", None)
        obj = _validate(res.kind, body)
        if ns is not None and res.kind != "Namespace":
            nsobj = self.store.get("namespaces", None, ns)
            if nsobj is None:
                raise errors.NotFound(f'namespaces "{ns}" not found', details={"name": ns, "kind": "namespaces"})
            if (nsobj.get("metadata") or {}).get("deletionTimestamp"):
                raise errors.Forbidden(f'{res.group_resource} "{md["name"]}" is forbidden: unable to create new '
                                       f'content in namespace {ns} because it is being terminated')
        md = obj["metadata"]
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now_rfc3339(self.clock)
        if "spec" in obj or res.kind in ("Deployment", "ReplicaSet", "Pod"):
            md["generation"] = 1
        if res.kind == "Pod":
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj)}
        if res.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        if res.kind == "Service":
            obj["status"] = {"loadBalancer": {}}
        self._own_fields(res, obj, None, requested_fields, manager=manager, subresource=None, applied=applied)
        # A generated name can meet an existing one (5 characters of 27: after a thousand
        # objects of one prefix about once in twenty): like Kubernetes' RetryGenerateName,
        # draw again a few times instead of failing the caller's create.
        for _ in range(GENERATE_NAME_ATTEMPTS - 1 if generated else 0):
            try:
                return self._store_create(res, obj)
            except errors.AlreadyExists:
                md["name"] = _generated_name(md["generateName"])
        try:
            return self._store_create(res, obj)
        except errors.AlreadyExists:
            raise errors.AlreadyExists(f'{res.group_resource} "{md["name"]}" already exists',
                                       details={"name": md["name"], "group": res.group, "kind": res.plural}) from None

    # ------------------------------------------------------------------ update
    def update(self, res: Resource, namespace: str | None, name: str, body: Any, *,
               subresource: str | None = None, current: dict | None = None, manager: str | None = None,
               applied: bool = False, owner_subresource: str | None = None) -> dict:
        """`current`: the stored object when the caller has just read it (saves a read; the
        compare-and-swap still checks the revision). `manager`: who writes, for
        managedFields; `owner_subresource`: the subresource it writes through when that is not
        `subresource` (a /scale write is an update of the main resource). `applied`: the
        body's managedFields were computed by `apply` and are kept as they are."""
        if not isinstance(body, dict):
            raise errors.BadRequest(f"the request body must be a {res.kind} object")
        body = dict(body)
        body.setdefault("apiVersion", res.api_version)
        body.setdefault("kind", res.kind)
        if not isinstance(body.get("metadata"), dict):
            raise errors.BadRequest("metadata: must be an object", causes=[errors.Cause("metadata", "Required")])
        bmd = dict(body["metadata"])
        body["metadata"] = bmd
        requested_fields = bmd.pop("managedFields", None)
        if bmd.get("name") and bmd["name"] != name:
            raise errors.BadRequest(f'the name of the object ({bmd["name"]}) does not match the name on the URL '
                                    f'({name})', causes=[errors.Cause("metadata.name", "does not match the URL")])
        bmd["name"] = name
        if res.namespaced:
            if bmd.get("namespace") and bmd["namespace"] != namespace:
                raise errors.BadRequest("the namespace of the provided object does not match the namespace sent "
                                        "on the request")
            bmd["namespace"] = namespace
        cur = current or self.get(res, namespace, name)
        cmd = cur["metadata"]
        rv = bmd.get("resourceVersion")
        if rv in (None, "", "0"):
            expected = int(cmd["resourceVersion"])
        else:
            try:
                expected = int(rv)
            except (TypeError, ValueError):
                raise errors.BadRequest(f"metadata.resourceVersion: invalid value {rv!r}") from None
        if subresource == "status":
            status = _validate_status(res.kind, body.get("status") or {}, name)
            if status is not None:
                obj = dict(cur)
                obj["status"] = status
            else:
                merged = dict(cur)
                merged["status"] = body.get("status") or {}
                obj = _validate(res.kind, merged, old=cur, subresource="status")
            obj["metadata"] = dict(cmd)
        else:
            if "status" in cur:
                body["status"] = cur["status"]
            else:
                body.pop("status", None)
            obj = _validate(res.kind, body, old=cur)
            md = obj["metadata"]
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if k in cmd:
                    md[k] = cmd[k]
                else:
                    md.pop(k, None)
            md["generation"] = cmd.get("generation", 1)
            if obj.get("spec") != cur.get("spec"):
                md["generation"] = int(cmd.get("generation") or 0) + 1
            if res.kind == "Pod":
                self._check_pod_update(cur, obj)
            if res.kind == "Namespace":
                obj["status"] = cur.get("status", {"phase": "Active"})
        self._own_fields(res, obj, cur, requested_fields, manager=manager, applied=applied,
                         subresource=owner_subresource or subresource)
        obj["metadata"].pop("resourceVersion", None)
        cur_cmp = dict(cur, metadata={k: v for k, v in cmd.items() if k != "resourceVersion"})
        if obj == cur_cmp and expected == int(cmd["resourceVersion"]):
            return cur  # no-op update: Kubernetes does not bump the resourceVersion either
        out = self._store_update(res, obj, cur, expected, subresource)
        self._after_update(res, cur, out)
        return out

    def _now(self) -> str:
        """now_rfc3339(), formatted once a second: managedFields stamp every recorded write."""
        t = int(self.clock())
        last = self._now_text
        if last[0] != t:
            last = self._now_text = (t, now_rfc3339(lambda: t))
        return last[1]

    def _own_fields(self, res: Resource, obj: dict, live: dict | None, requested: Any, *, manager: str | None,
                    subresource: str | None, applied: bool) -> None:
        """Set `obj`'s managedFields for a write of it over `live` (None: a create) by
        `manager` through `subresource`; None is the API server itself (`SERVER_MANAGER`: its
        own writes, e.g. the collector's ownerReferences edits; a request always names one). `requested`: the managedFields the request carried (None if it had
        none): an apply's own result when `applied`; otherwise Kubernetes' rules — a
        subresource write ignores them, `[]` or `[{}]` resets them, others replace the stored
        ones (checked: 422 naming the bad entry) — and the write's changes are recorded on top
        (`managedfields.track_update`)."""
        md = obj["metadata"]
        if applied:
            entries = requested or []
        else:
            live_entries = ((live or {}).get("metadata") or {}).get("managedFields") or []
            if subresource:
                base = live_entries
            else:
                base = managedfields.requested_entries(
                    requested, live_entries, qualified=f"{res.kind}.{res.group}" if res.group else res.kind,
                    name=md.get("name") or "")
            entries = managedfields.track_update(
                res.kind, base, live, obj, manager=managedfields.Manager(manager or SERVER_MANAGER,
                                                                         subresource=subresource or ""),
                api_version=res.api_version, now=self._now(),
                scope="status" if subresource == "status" else None)
        if entries:
            md["managedFields"] = entries
        else:
            md.pop("managedFields", None)

    def bind(self, namespace: str, name: str, body: Any, *, current: dict | None = None) -> dict:
        """POST pods/NAME/binding (Kubernetes' Binding): set an unbound pod's `spec.nodeName`
        to `target.name` and its PodScheduled condition to True, in one write. Conflict when
        the pod is bound already or being deleted, or when the Binding's `metadata.uid` or
        `metadata.resourceVersion` (optional preconditions) no longer match the pod.
        Returns a Success Status, as Kubernetes does. `current`: the pod as just read, if so."""
        if not isinstance(body, dict):
            raise errors.BadRequest("the request body must be a Binding object")
        kind, api = body.get("kind") or "Binding", body.get("apiVersion") or "v1"
        if kind != "Binding" or api != "v1":
            raise errors.BadRequest(f"the body is a {api}/{kind} but the request is for v1 pods/binding",
                                    causes=[errors.Cause("kind", "expected Binding")])
        bmd = body.get("metadata") or {}
        if not isinstance(bmd, dict):
            raise errors.BadRequest("metadata: must be an object", causes=[errors.Cause("metadata", "Required")])
        if bmd.get("name") and bmd["name"] != name:
            raise errors.BadRequest(f'the name of the Binding ({bmd["name"]}) does not match the pod on the URL '
                                    f'({name})', causes=[errors.Cause("metadata.name", "does not match the URL")])
        if bmd.get("namespace") and bmd["namespace"] != namespace:
            raise errors.BadRequest("the namespace of the provided object does not match the namespace sent "
                                    "on the request")
        target = body.get("target")
        node = target.get("name") if isinstance(target, dict) else None
        if not isinstance(node, str) or not node or is_dns1123_subdomain(node):
            raise errors.Invalid(f'Binding "{name}" is invalid: target.name: Invalid value: {node!r}: a node name '
                                 f'(a lowercase RFC 1123 subdomain) is required',
                                 causes=[errors.Cause("target.name", "a valid node name is required")])
        if (target.get("kind") or "Node") != "Node":
            raise errors.Invalid(f'Binding "{name}" is invalid: target.kind: Unsupported value: '
                                 f'"{target["kind"]}": supported values: "Node"',
                                 causes=[errors.Cause("target.kind", "must be Node")])
        res = resolve("pods")
        what = f'Operation cannot be fulfilled on pods/binding "{name}"'
        annotations = bmd.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise errors.BadRequest("metadata.annotations: must be a map of strings")
        for _ in range(10):
            cur = current or self.get(res, namespace, name)
            current = None
            cmd = cur["metadata"]
            if bmd.get("uid") and bmd["uid"] != cmd.get("uid"):
                raise errors.Conflict(f'{what}: Precondition failed: UID in precondition: {bmd["uid"]}, '
                                      f'UID in object meta: {cmd.get("uid")}', details={"name": name, "kind": "pods"})
            if bmd.get("resourceVersion") and str(bmd["resourceVersion"]) != cmd["resourceVersion"]:
                raise errors.Conflict(f"{what}: the object has been modified; please apply your changes to the "
                                      f"latest version and try again", details={"name": name, "kind": "pods"})
            if cmd.get("deletionTimestamp"):
                raise errors.Conflict(f"{what}: pod {name} is being deleted, cannot be assigned to a host",
                                      details={"name": name, "kind": "pods"})
            bound = (cur.get("spec") or {}).get("nodeName")
            if bound:
                raise errors.Conflict(f'{what}: pod {name} is already assigned to node "{bound}"',
                                      details={"name": name, "kind": "pods"})
            obj = dict(cur)
            obj["metadata"] = md = dict(cmd)          # resourceVersion: the store drops it
            if annotations:
                md["annotations"] = {**(cmd.get("annotations") or {}), **annotations}
            obj["spec"] = dict(cur.get("spec") or {}, nodeName=node)
            status = dict(cur.get("status") or {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339(self.clock)})
            status["conditions"] = conds
            obj["status"] = status
            if annotations:             # the only part of the Binding that is the user's to shape
                obj = _validate("Pod", obj, old=cur)
            try:
                self.store.update(res.plural, obj, expected_revision=int(cmd["resourceVersion"]))
            except errors.Conflict:
                if bmd.get("resourceVersion"):
                    raise
                continue            # written meanwhile (a status update): look again
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
        raise errors.Conflict(f"{what}: the pod kept changing; try again", details={"name": name, "kind": "pods"})

    def _check_pod_update(self, cur: dict, new: dict) -> None:
        old_node = (cur.get("spec") or {}).get("nodeName")
        new_node = (new.get("spec") or {}).get("nodeName")
        if old_node and new_node != old_node:
            raise errors.Invalid(f'Pod "{cur["metadata"]["name"]}" is invalid: spec.nodeName: Invalid value: '
                                 f'"{new_node}": field is immutable once the pod is bound (to {old_node})',
                                 causes=[errors.Cause("spec.nodeName", "field is immutable once set")])
        a = dict(cur.get("spec") or {})
        b = dict(new.get("spec") or {})
        a.pop("nodeName", None)
        b.pop("nodeName", None)
        # Like Kubernetes: a pod's spec is immutable except container images, tolerations
        # (additions) and activeDeadlineSeconds.
        for spec in (a, b):
            spec.pop("tolerations", None)
            spec.pop("activeDeadlineSeconds", None)
            spec["containers"] = [{k: v for k, v in c.items() if k != "image"} for c in spec.get("containers", [])]
            spec["initContainers"] = [{k: v for k, v in c.items() if k != "image"}
                                      for c in spec.get("initContainers", [])]
        if a != b:
            raise errors.Invalid(f'Pod "{cur["metadata"]["name"]}" is invalid: spec: Forbidden: pod updates may not '
                                 f'change fields other than `spec.containers[*].image`, '
                                 f'`spec.activeDeadlineSeconds` and `spec.tolerations` (only additions)',
                                 causes=[errors.Cause("spec", "pod updates may not change fields other than "
                                                              "images", "FieldValueForbidden")])

    # ------------------------------------------------------------------ patch
    def patch(self, res: Resource, namespace: str | None, name: str, body: Any, content_type: str, *,
              subresource: str | None = None, admit: Callable[[dict | None, dict], None] | None = None,
              manager: str | None = None, force: bool = False) -> dict:
        """`admit(stored, patched)` may refuse (raise) what the patch would store, seen against
        the object it is applied to (None when an apply creates it), before the write.
        `manager`: who writes (managedFields); an apply (`application/apply-patch+yaml`) is
        `apply` (`force` is its option)."""
        if content_type == APPLY_PATCH:
            return self.apply(res, namespace, name, body, manager=manager or "", force=force,
                              subresource=subresource, admit=admit)[0]
        pinned = patches.pins_resource_version(body, content_type)
        for attempt in range(10):
            cur = self.get(res, namespace, name)
            new = self._apply_patch(cur, body, content_type)
            if not isinstance(new, dict):
                raise errors.BadRequest("the patch does not produce an object")
            if admit is not None:
                admit(cur, new)
            if not pinned:
                new.setdefault("metadata", {})["resourceVersion"] = cur["metadata"]["resourceVersion"]
            try:
                return self.update(res, namespace, name, new, subresource=subresource, current=cur, manager=manager)
            except errors.Conflict:
                if pinned or attempt == 9:
                    raise
        raise AssertionError("unreachable")

    def apply(self, res: Resource, namespace: str | None, name: str, config: Any, *, manager: str,
              force: bool = False, subresource: str | None = None,
              admit: Callable[[dict | None, dict], None] | None = None) -> tuple[dict, bool]:
        """Server-side apply of `config` by `manager` (Kubernetes' semantics, in
        `managedfields.apply`): 409 listing the fields another manager owns with another
        value unless `force`; fields this manager applied before and no longer does are
        removed unless another manager owns them too. The object is created when absent
        (not through a subresource). Returns (object, created). A configuration that names a
        resourceVersion is a precondition; otherwise a concurrent write is retried."""
        managedfields.check_config(res.kind, res.api_version, config)
        from shoal.machinery.api.models import KINDS
        from shoal.machinery.api.models.codec import decode
        info = KINDS[res.kind]
        decode(info.model, config, kind=res.kind, version=res.version)     # shape: unknown fields, types
        config = dict(config, metadata=dict(config.get("metadata") or {}))
        cmd = config["metadata"]
        if cmd.get("name") and cmd["name"] != name:
            raise errors.BadRequest(f'the name of the object ({cmd["name"]}) does not match the name on the URL '
                                    f'({name})', causes=[errors.Cause("metadata.name", "does not match the URL")])
        if res.namespaced and cmd.get("namespace") and cmd["namespace"] != namespace:
            raise errors.BadRequest("the namespace of the provided object does not match the namespace sent on "
                                    "the request", causes=[errors.Cause("metadata.namespace", "does not match "
                                                                                              "the URL")])
        cmd["name"] = name
        pinned = bool(cmd.get("resourceVersion"))
        for attempt in range(10):
            try:
                cur: dict | None = self.get(res, namespace, name)
            except errors.NotFound:
                if subresource is not None:
                    raise
                cur = None
            entries = ((cur or {}).get("metadata") or {}).get("managedFields") or []
            merged = managedfields.apply(res.kind, entries, cur, config, manager=manager, force=force,
                                         api_version=res.api_version, now=self._now(),
                                         subresource=subresource or "")
            if admit is not None:
                admit(cur, merged)
            if cur is None:
                try:
                    return self.create(res, namespace, merged, manager=manager, applied=True), True
                except errors.AlreadyExists:
                    if attempt == 9:
                        raise
                    continue            # created meanwhile: apply to it
            if not pinned:
                merged["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
            try:
                return self.update(res, namespace, name, merged, subresource=subresource, current=cur,
                                   manager=manager, applied=True), False
            except errors.Conflict:
                if pinned or attempt == 9:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _apply_patch(cur: dict, body: Any, content_type: str) -> Any:
        if content_type == "application/json-patch+json":
            return patches.json_patch(cur, body)
        if not isinstance(body, dict):
            raise errors.BadRequest(f"a {content_type} body must be an object")
        if content_type == "application/strategic-merge-patch+json":
            return patches.strategic_merge_patch(cur, body)
        if content_type in ("application/merge-patch+json", "application/json"):
            return patches.merge_patch(cur, body)
        raise errors.UnsupportedMediaType(f"the body of the request was in an unknown format - accepted media "
                                          f"types include: application/json-patch+json, application/merge-patch+"
                                          f"json, application/strategic-merge-patch+json, application/apply-patch"
                                          f"+yaml (got {content_type})")

    # ------------------------------------------------------------------ scale
    def get_scale(self, res: Resource, namespace: str | None, name: str) -> dict:
        return self._scale_of(res, self.get(res, namespace, name))

    @staticmethod
    def _scale_of(res: Resource, obj: dict) -> dict:
        md = obj["metadata"]
        sel = selectors.selector_from_label_selector((obj.get("spec") or {}).get("selector"))
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                             if k in md},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": str(sel)}}

    def update_scale(self, res: Resource, namespace: str | None, name: str, body: Any,
                     content_type: str | None, *, manager: str | None = None, force: bool = False) -> dict:
        """PUT (`content_type` None) or PATCH of /scale: the main resource's `spec.replicas`,
        recorded in managedFields as `manager`'s through the `scale` subresource (an apply
        too: `force` is its option)."""
        if content_type == APPLY_PATCH:
            return self._apply_scale(res, namespace, name, body, manager=manager or "", force=force)
        for attempt in range(10):
            cur = self.get(res, namespace, name)
            scale = self._scale_of(res, cur)
            new_scale = self._apply_patch(scale, body, content_type) if content_type else body
            if not isinstance(new_scale, dict):
                raise errors.BadRequest("the request body must be a Scale object")
            replicas = (new_scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise errors.Invalid(f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                                     f'{replicas!r}: must be greater than or equal to 0',
                                     causes=[errors.Cause("spec.replicas", "must be greater than or equal to 0")])
            rv = (new_scale.get("metadata") or {}).get("resourceVersion") if content_type is None else None
            new = dict(cur)
            new["spec"] = dict(cur.get("spec") or {}, replicas=replicas)
            new["metadata"] = dict(cur["metadata"], resourceVersion=rv or cur["metadata"]["resourceVersion"])
            try:
                out = self.update(res, namespace, name, new, current=cur, manager=manager, owner_subresource="scale")
                return self._scale_of(res, out)
            except errors.Conflict:
                if rv or attempt == 9:
                    raise
        raise AssertionError("unreachable")

    def _apply_scale(self, res: Resource, namespace: str | None, name: str, body: Any, *, manager: str,
                     force: bool) -> dict:
        """An apply of an autoscaling/v1 Scale: `spec.replicas` of the object applied by
        `manager` through the `scale` subresource (Kubernetes maps the Scale's fields onto
        the object's the same way)."""
        from shoal.machinery.api.models import KINDS
        from shoal.machinery.api.models.codec import decode
        if not isinstance(body, dict) or (body.get("apiVersion"), body.get("kind")) != ("autoscaling/v1", "Scale"):
            raise errors.BadRequest("an apply to /scale must be an autoscaling/v1 Scale",
                                    causes=[errors.Cause("kind", "expected autoscaling/v1 Scale")])
        decode(KINDS["Scale"].model, body, kind="Scale", version="v1")
        md = body.get("metadata") or {}
        config: dict[str, Any] = {"apiVersion": res.api_version, "kind": res.kind,
                                  "metadata": {k: md[k] for k in ("name", "namespace", "resourceVersion") if k in md}}
        if "replicas" in (body.get("spec") or {}):
            config["spec"] = {"replicas": body["spec"]["replicas"]}
        out, _ = self.apply(res, namespace, name, config, manager=manager, force=force, subresource="scale")
        return self._scale_of(res, out)

    # ------------------------------------------------------------------ delete
    # The last second a deletionTimestamp can name (9999-12-31T23:59:59Z): a grace period
    # beyond it still holds the pod until its node confirms, but cannot be written as a time.
    LATEST_TIME = 253402300799

    @staticmethod
    def _awaits_node(res: Resource, obj: dict) -> bool:
        """A pod bound to a node is removed only when that node confirms (grace 0)."""
        return res.kind == "Pod" and bool((obj.get("spec") or {}).get("nodeName")) and \
            (obj.get("metadata") or {}).get("deletionGracePeriodSeconds", 0) != 0

    # Kinds whose removal answers the object's last value (Kubernetes' ReturnDeletedObject)
    # rather than a Success Status.
    RETURNS_DELETED_OBJECT = frozenset({"Pod", "Service"})

    def delete(self, res: Resource, namespace: str | None, name: str, opts: dict) -> dict:
        """DELETE with Kubernetes' DeleteOptions: `delete_outcome`'s answer."""
        return self.delete_outcome(res, namespace, name, opts)[0]

    def delete_outcome(self, res: Resource, namespace: str | None, name: str, opts: dict) -> tuple[dict, bool]:
        """DELETE with Kubernetes' DeleteOptions (`opts`: the JSON body's keys; bad options
        change nothing). The propagation policy sets the object's GC finalizers
        (`deletion.gc_finalizers`); the object goes at once when no finalizer holds it and,
        for a pod bound to a node, the grace period is 0. Otherwise it is marked
        (deletionTimestamp, finalizers) and returned, and the collector gets the `orphan` /
        `foregroundDeletion` job. A removal answers a Success Status (RETURNS_DELETED_OBJECT:
        the last value). Returns (answer, whether the object is gone)."""
        if res.kind == "Namespace" and name in SYSTEM_NAMESPACES:
            raise errors.Forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted')
        options = deletion.parse_delete_options(opts)
        for attempt in range(10):
            cur = self.get(res, namespace, name)
            md = cur["metadata"]
            what = f'Operation cannot be fulfilled on {res.group_resource} "{name}": Precondition failed'
            details = {"name": name, "group": res.group, "kind": res.plural}
            if options.uid and options.uid != md.get("uid"):
                raise errors.Conflict(f'{what}: UID in precondition: {options.uid}, UID in object meta: '
                                      f'{md.get("uid")}', details=details)
            if options.resource_version and options.resource_version != md.get("resourceVersion"):
                raise errors.Conflict(f'{what}: ResourceVersion in precondition: {options.resource_version}, '
                                      f'ResourceVersion in object meta: {md.get("resourceVersion")}', details=details)
            try:
                out, removed = self._delete_object(res, cur, options)
            except errors.Conflict:
                if attempt == 9:
                    raise
                continue
            if removed and res.kind not in self.RETURNS_DELETED_OBJECT:
                return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": res.group, "kind": res.plural,
                                    "uid": md.get("uid")}}, True
            return out, removed
        raise AssertionError("unreachable")

    def delete_collection(self, res: Resource, namespace: str | None, sel: Selectors, opts: dict) -> dict:
        """DELETE on a collection (Kubernetes' deletecollection): every object of `res` in
        `namespace` (None: all namespaces, or a cluster-scoped kind) matching `sel` is deleted
        with the same DeleteOptions, as `delete` would one by one; an object gone meanwhile
        is skipped. Options are validated before anything is deleted. Answers the
        `{Kind}List` of the objects the call deleted: marked ones as marked, removed ones as
        listed (a Pod: its last value);
        when some deletions failed, the others are still made and the first error is raised.
        Namespaces have no deletecollection (as in Kubernetes): 405."""
        if res.kind == "Namespace":
            raise errors.MethodNotAllowed('the server does not allow this method on the requested resource: '
                                          'namespaces do not support deletecollection')
        deletion.parse_delete_options(opts)
        items, rev = self.list(res, namespace, sel)
        done: list[dict] = []
        first_error: errors.ApiError | None = None
        for obj in items:
            md = obj["metadata"]
            try:
                out = self.delete(res, md.get("namespace"), md["name"], opts)
            except errors.NotFound:
                continue
            except errors.ApiError as e:
                if first_error is None:
                    first_error = e
                continue
            done.append(obj if out.get("kind") == "Status" else out)
        if first_error is not None:
            raise first_error
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(rev)}, "items": done}

    def _delete_object(self, res: Resource, cur: dict, options: deletion.DeleteOptions) -> tuple[dict, bool]:
        """One attempt at deleting `cur` (Conflict: it changed, read it again). Returns the
        object (marked, or its last value) and whether it was removed."""
        md = cur["metadata"]
        finalizers = deletion.gc_finalizers(md.get("finalizers") or [], options.propagation,
                                            default=deletion.default_propagation(res.kind))
        if res.kind == "Namespace":
            return self._delete_namespace(res, cur, finalizers), False
        grace = 0
        spec = cur.get("spec") or {}
        if res.kind == "Pod" and spec.get("nodeName"):
            grace = options.grace_period_seconds
            if grace is None:
                tgps = spec.get("terminationGracePeriodSeconds")
                grace = 30 if tgps is None else int(tgps)
            grace = max(grace, 0)
        if grace > 0 or finalizers:
            out = self._mark_deleting(res, cur, grace, finalizers)
            for job in deletion.pending_work(out):
                self._gc_queue.put((job, md["uid"]))
            return out, False
        return self._remove(res, cur), True

    def _mark_deleting(self, res: Resource, cur: dict, grace: int, finalizers: list[str]) -> dict:
        """Write the deletion mark: `finalizers`, and deletionTimestamp = now + grace unless
        one is set that is no later (a shorter grace period may shorten a pending deletion,
        never lengthen it). No write when nothing changes."""
        md = cur["metadata"]
        new_md = dict(md)
        if finalizers != list(md.get("finalizers") or []):
            if finalizers:
                new_md["finalizers"] = finalizers
            else:
                new_md.pop("finalizers", None)
        deadline = min(self.clock() + grace, self.LATEST_TIME)
        existing = parse_time(md["deletionTimestamp"]) if md.get("deletionTimestamp") else None
        if existing is None or deadline < existing:
            new_md["deletionTimestamp"] = format_time(deadline)
            new_md["deletionGracePeriodSeconds"] = grace
        if new_md == md:
            return cur
        new_md.pop("resourceVersion", None)
        return self.store.update(res.plural, dict(cur, metadata=new_md), expected_revision=int(md["resourceVersion"]))

    def _store_create(self, res: Resource, obj: dict) -> dict:
        """The store's create; a Service's with the cluster IP and node ports it holds."""
        if res.kind == "Service":
            return self.services.create(self.store, obj)
        return self.store.create(res.plural, obj)

    def _store_update(self, res: Resource, obj: dict, cur: dict, expected: int, subresource: str | None) -> dict:
        """The store's compare-and-swap update; a Service's (not its /status) with the values
        it holds after the write (kept, new, and the ones a type change gives up released)."""
        if res.kind == "Service" and subresource is None:
            return self.services.update(self.store, obj, cur, expected_revision=expected)
        return self.store.update(res.plural, obj, expected_revision=expected)

    def _remove(self, res: Resource, cur: dict, *, collect: bool = True) -> dict:
        """Remove `cur` (compare-and-swap on its revision). `collect`: hand its dependents to
        the collector's cascade (the orphan job removes an owner without, having orphaned
        them). Owners waiting in the foreground for it are told it is gone."""
        md = cur["metadata"]
        out = self.store.delete(res.plural, md.get("namespace"), md["name"],
                                expected_revision=int(md["resourceVersion"]),
                                release_allocations=res.kind == "Service")
        if md.get("uid") and collect:
            self._gc_queue.put(("cascade", md["uid"]))
        self._notify_owners(md.get("ownerReferences") or [])
        return out

    def _notify_owners(self, refs: list[dict], still: list[dict] | None = None) -> None:
        """Wake the foreground job of every owner `refs` blocked and `still` (the references
        now, None: none) no longer blocks."""
        keep = {r.get("uid") for r in still or [] if r.get("blockOwnerDeletion") is True}
        for r in refs:
            if r.get("blockOwnerDeletion") is True and r.get("uid") and r["uid"] not in keep:
                self._gc_queue.put(("foreground", r["uid"]))

    def _after_update(self, res: Resource, cur: dict, out: dict) -> None:
        """What an update (`update`) sets off: a deletion that was waiting only for finalizers
        completes when the last one goes (a namespace's through its termination job); owners a
        dropped blocking reference held in the foreground look again. (No GC finalizer can
        appear here on an object being deleted: validation refuses new finalizers then.)"""
        cmd, omd = cur.get("metadata") or {}, out.get("metadata") or {}
        refs_before, refs_now = cmd.get("ownerReferences") or [], omd.get("ownerReferences") or []
        if refs_before != refs_now:
            self._notify_owners(refs_before, refs_now)
        if not deletion.finished(out) or self._awaits_node(res, out):
            return
        try:
            self._finish(res, out)
        except errors.Conflict:
            self._gc_queue.put(("finalize", omd["uid"]))     # it keeps changing: the collector finishes it

    def _delete_namespace(self, res: Resource, cur: dict, finalizers: list[str]) -> dict:
        md = cur["metadata"]
        new_md = dict(md)
        if not md.get("deletionTimestamp"):
            new_md.update(deletionTimestamp=now_rfc3339(self.clock), deletionGracePeriodSeconds=0)
        if finalizers != list(md.get("finalizers") or []):
            if finalizers:
                new_md["finalizers"] = finalizers
            else:
                new_md.pop("finalizers", None)
        if new_md != md or (cur.get("status") or {}).get("phase") != "Terminating":
            new_md.pop("resourceVersion", None)
            new = dict(cur, metadata=new_md, status=dict(cur.get("status") or {}, phase="Terminating"))
            cur = self.store.update(res.plural, new, expected_revision=int(md["resourceVersion"]))
        for job in deletion.pending_work(cur):
            self._gc_queue.put((job, md["uid"]))
        self._gc_queue.put(("namespace", md["name"]))
        return cur

    # ------------------------------------------------------------------ the collector
    # Jobs (the queue's items), each idempotent and re-reading what it needs:
    #   cascade <uid>     an owner was removed: judge its dependents (deletion.plan_dependent)
    #   orphan <uid>      an owner carries `orphan`: strip every reference to it, then the finalizer
    #   foreground <uid>  an owner carries `foregroundDeletion`: delete its dependents; when none
    #                     that blocks is left, drop the finalizer
    #   finalize <uid>    an object marked for deletion whose finalizers are gone: remove it
    #   namespace <name>  a namespace is terminating: delete its contents, then it
    #   sweep             at start: find the work above a crash left undone
    # A job that fails, or must wait, is put back after a delay (`_gc_later`).
    GC_RETRY = 1.0              # seconds before a failed job runs again (doubling, up to GC_RETRY_MAX)
    GC_RETRY_MAX = 30.0
    FOREGROUND_RECHECK = 1.0    # a waiting foreground job looks again this often (besides being woken)

    def _gc_loop(self) -> None:
        while not self._stopping.is_set():
            jobs = self._gc_take()
            if jobs is None:
                return
            for job in jobs:
                if self._stopping.is_set():
                    return
                self._gc_run(job)

    def _gc_take(self) -> list[tuple[str, str]] | None:
        """The next jobs: those queued (each once, in order) and the delayed ones now due.
        Waits for the first. None once `stop` was called."""
        timeout = None
        if self._gc_delayed:
            timeout = max(0.0, min(self._gc_delayed.values()) - time.monotonic())
        items: list = []
        try:
            items.append(self._gc_queue.get(timeout=timeout))
            while True:
                items.append(self._gc_queue.get_nowait())
        except queue.Empty:
            pass
        if any(i is None for i in items):
            return None
        now = time.monotonic()
        due = [job for job, at in self._gc_delayed.items() if at <= now]
        for job in due:
            del self._gc_delayed[job]
        return list(dict.fromkeys([*due, *items]))

    def _gc_later(self, job: tuple[str, str], delay: float) -> None:
        """Run `job` again after `delay` seconds (the collector's thread only)."""
        at = time.monotonic() + delay
        self._gc_delayed[job] = min(at, self._gc_delayed.get(job, at))

    def _gc_run(self, job: tuple[str, str]) -> None:
        kind, arg = job
        handler: Callable[[str], None] = {
            "cascade": self._cascade, "orphan": self._orphan, "foreground": self._foreground,
            "finalize": self._finalize, "namespace": self._finish_namespace, "sweep": self._sweep}[kind]
        try:
            handler(arg)
        except Exception as e:
            failures = self._gc_failures.get(job, 0) + 1
            self._gc_failures[job] = failures
            delay = min(self.GC_RETRY * 2 ** (failures - 1), self.GC_RETRY_MAX)
            if isinstance(e, errors.Conflict):
                log.info("garbage collection %s %s: %s; again in %gs", kind, arg, e, delay)
            else:
                log.exception("garbage collection %s %s failed; again in %gs", kind, arg, delay)
            if not self._stopping.is_set():
                self._gc_later(job, delay)
        else:
            self._gc_failures.pop(job, None)

    def _cascade(self, owner_uid: str) -> None:
        """An owner is gone: each dependent is deleted, or loses its references to owners
        that are gone or going, as `deletion.plan_dependent` says."""
        self._judge_dependents(owner_uid)

    def _judge_dependents(self, owner_uid: str) -> None:
        owners: dict[str, dict | None] = {}

        def owner(uid: str) -> dict | None:
            if uid not in owners:
                found = self.store.get_by_uid(uid)
                owners[uid] = found[1] if found else None
            return owners[uid]

        for plural, dep in self.store.dependents(owner_uid):
            dres = resolve(plural)
            md = dep["metadata"]
            refs = md.get("ownerReferences") or []
            states = {str(r["uid"]): deletion.owner_state(owner(str(r["uid"])), dependent_namespace=md.get("namespace"))
                      for r in refs if r.get("uid")}
            action = deletion.plan_dependent(refs, states, deleting=deletion.is_deleting(dep),
                                             has_dependents=lambda uid=md["uid"]: bool(self.store.dependents(uid)))
            try:
                if action.verb == "strip":
                    self._set_owner_refs(dres, dep, lambda rs, gone=action.strip: deletion.without_owners(rs, gone))
                elif action.verb == "delete":
                    # Only the dependent as judged: a reference added meanwhile (an adoption)
                    # makes the delete a Conflict, and the job judges it again.
                    opts: dict[str, Any] = {"preconditions": {"uid": md["uid"],
                                                              "resourceVersion": str(md["resourceVersion"])}}
                    if action.propagation:
                        opts["propagationPolicy"] = action.propagation
                    self.delete(dres, md.get("namespace"), md["name"], opts)
            except errors.NotFound:
                pass

    def _set_owner_refs(self, res: Resource, dep: dict, change: Callable[[list[dict]], list[dict]]) -> dict | None:
        """Rewrite a dependent's ownerReferences as `change(refs)` says, through `update` (so
        validation, managedFields and the owners' wake-ups are those of any write; compare-
        and-swap, read again on conflict). None when it is gone."""
        for _ in range(10):
            md = dep["metadata"]
            refs = md.get("ownerReferences") or []
            new_refs = change(refs)
            if new_refs == refs:
                return dep
            new_md = dict(md)
            if new_refs:
                new_md["ownerReferences"] = new_refs
            else:
                new_md.pop("ownerReferences", None)
            try:
                try:
                    return self.update(res, md.get("namespace"), md["name"], dict(dep, metadata=new_md),
                                       current=dep)
                except errors.Invalid as e:
                    # Stored before a rule it breaks was made: changing only its references
                    # makes it no worse, and an owner must not wait on it forever.
                    log.warning("%s %s fails validation (%s); its ownerReferences are rewritten as they are",
                                res.plural, md["name"], e)
                    new_md.pop("resourceVersion", None)
                    out = self.store.update(res.plural, dict(dep, metadata=new_md),
                                            expected_revision=int(md["resourceVersion"]))
                    self._notify_owners(refs, new_refs)
                    return out
            except errors.Conflict:
                fresh = self.store.get(res.plural, md.get("namespace"), md["name"])
                if fresh is None or fresh["metadata"].get("uid") != md.get("uid"):
                    return None
                dep = fresh
            except errors.NotFound:
                return None
        raise errors.Conflict(f'{res.group_resource} "{dep["metadata"]["name"]}": its ownerReferences could not '
                              f'be written, it kept changing')

    def _strip_references_to(self, owner_uid: str) -> None:
        for plural, dep in self.store.dependents(owner_uid):
            self._set_owner_refs(resolve(plural), dep, lambda rs: deletion.without_owners(rs, [owner_uid]))

    def _orphan(self, owner_uid: str) -> None:
        """The `orphan` finalizer's job: every dependent loses its reference to the owner, and
        only then the finalizer goes (so no dependent is ever seen with a dangling owner and
        collected). When that removes the owner, references added meanwhile (a controller
        adopting a just-orphaned object for an owner it did not yet see go) are stripped too."""
        found = self.store.get_by_uid(owner_uid)
        if found is None:
            return
        plural, owner = found
        if "orphan" not in deletion.pending_work(owner):
            return          # the policy changed since (a later DELETE), or done
        self._strip_references_to(owner_uid)
        if self._drop_finalizer(resolve(plural), owner, deletion.ORPHAN_FINALIZER, collect=False):
            self._strip_references_to(owner_uid)

    def _foreground(self, owner_uid: str) -> None:
        """The `foregroundDeletion` finalizer's job: its dependents are judged as in a cascade
        (each deleted, in the foreground when it has dependents of its own, or unhooked when
        it has another live owner); while one whose reference blocks the owner exists — a pod
        terminating on its node included — the owner waits; then the finalizer goes."""
        found = self.store.get_by_uid(owner_uid)
        if found is None:
            return
        plural, owner = found
        if "foreground" not in deletion.pending_work(owner):
            return
        self._judge_dependents(owner_uid)
        blockers = [(p, d) for p, d in self.store.dependents(owner_uid) if deletion.blocks(d, owner_uid)]
        for p, d in blockers:
            if self._waits_for(d, owner_uid):
                # A cycle of foreground deletions: d waits (through its dependents) for this
                # owner, which waits for d. d stops blocking it, as Kubernetes' collector does.
                self._set_owner_refs(resolve(p), d, lambda rs: deletion.unblock(rs, owner_uid))
        if any(deletion.blocks(d, owner_uid) for _, d in self.store.dependents(owner_uid)):
            self._gc_later(("foreground", owner_uid), self.FOREGROUND_RECHECK)
            return
        self._drop_finalizer(resolve(plural), owner, deletion.FOREGROUND_FINALIZER)

    def _waits_for(self, dep: dict, owner_uid: str) -> bool:
        """`dep` is waiting in the foreground, through a chain of blocking dependents all
        waiting in the foreground too, for the object `owner_uid`."""
        seen: set[str] = set()
        todo = [dep]
        while todo:
            node = todo.pop()
            uid = node["metadata"].get("uid", "")
            if uid in seen or "foreground" not in deletion.pending_work(node):
                continue
            seen.add(uid)
            for _, child in self.store.dependents(uid):
                if not deletion.blocks(child, uid):
                    continue
                if child["metadata"].get("uid") == owner_uid:
                    return True
                todo.append(child)
        return False

    def _drop_finalizer(self, res: Resource, obj: dict, name: str, *, collect: bool = True) -> bool:
        """Remove finalizer `name` from `obj` (compare-and-swap, read again on conflict), then
        finish its deletion if nothing else holds it. True when that removed it."""
        for _ in range(10):
            md = obj["metadata"]
            fins = [f for f in md.get("finalizers") or [] if f != name]
            if fins == list(md.get("finalizers") or []):
                return False
            new_md = dict(md)
            if fins:
                new_md["finalizers"] = fins
            else:
                new_md.pop("finalizers", None)
            new_md.pop("resourceVersion", None)
            try:
                out = self.store.update(res.plural, dict(obj, metadata=new_md),
                                        expected_revision=int(md["resourceVersion"]))
            except errors.Conflict:
                found = self.store.get_by_uid(md.get("uid", ""))
                if found is None:
                    return False
                obj = found[1]
                continue
            except errors.NotFound:
                return False
            return self._finish(res, out, collect=collect)
        raise errors.Conflict(f'{res.group_resource} "{obj["metadata"]["name"]}": finalizer {name} could not be '
                              f'removed, the object kept changing')

    def _finish(self, res: Resource, obj: dict, *, collect: bool = True) -> bool:
        """Remove `obj` if its deletion waits for nothing any more (a namespace: hand it to its
        termination job). True when this removed it."""
        for _ in range(10):
            if not deletion.finished(obj) or self._awaits_node(res, obj):
                return False
            if res.kind == "Namespace":
                self._gc_queue.put(("namespace", obj["metadata"]["name"]))
                return False
            try:
                self._remove(res, obj, collect=collect)
                return True
            except errors.NotFound:
                return False
            except errors.Conflict:
                md = obj["metadata"]
                fresh = self.store.get(res.plural, md.get("namespace"), md["name"])
                if fresh is None or fresh["metadata"].get("uid") != md.get("uid"):
                    return False
                obj = fresh
        raise errors.Conflict(f'{res.group_resource} "{obj["metadata"]["name"]}" could not be removed: it kept '
                              f'changing')

    def _finalize(self, uid: str) -> None:
        found = self.store.get_by_uid(uid)
        if found is not None:
            self._finish(resolve(found[0]), found[1])

    def _sweep(self, _: str = "") -> None:
        """At start: resume what a crash cut short — orphan and foreground jobs of objects
        marked for deletion, removals whose last finalizer went but not the object,
        terminating namespaces, and cascades of owners already gone. Events are not read (no
        kind of shoal makes them owners or dependents, and there are many)."""
        for r in RESOURCES:
            if r.kind == "Event":
                continue
            for obj in self._scan(r.plural):
                md = obj.get("metadata") or {}
                for job in deletion.pending_work(obj):
                    self._gc_queue.put((job, md.get("uid", "")))
                if r.kind == "Namespace" and deletion.is_deleting(obj):
                    self._gc_queue.put(("namespace", md["name"]))
                elif deletion.finished(obj) and not self._awaits_node(r, obj):
                    self._gc_queue.put(("finalize", md.get("uid", "")))
                for ref in md.get("ownerReferences") or []:
                    uid = ref.get("uid", "")
                    if uid and self.store.get_by_uid(uid) is None:
                        self._gc_queue.put(("cascade", uid))

    SCAN_PAGE = 500

    def _scan(self, plural: str):
        """Every object of a resource, read SCAN_PAGE at a time (bounded memory: the whole
        list of 10,000 pods held at once cost ≈ 120 MiB at every start)."""
        after = ""
        while not self._stopping.is_set():
            page = self.store.page(plural, after_key=after, limit=self.SCAN_PAGE)
            yield from page
            if len(page) < self.SCAN_PAGE:
                return
            md = page[-1]["metadata"]
            after = object_key(plural, md.get("namespace"), md["name"])

    def _finish_namespace(self, name: str) -> None:
        remaining = 0
        for r in RESOURCES:
            if not r.namespaced:
                continue
            items, _ = self.store.list(r.plural, name)
            for obj in items:
                remaining += 1
                if not (obj.get("metadata") or {}).get("deletionTimestamp"):
                    try:
                        out = self.delete(r, name, obj["metadata"]["name"], {"propagationPolicy": "Background"})
                    except errors.NotFound:
                        out = {}
                    if not deletion.is_deleting(out):
                        remaining -= 1      # removed at once
        if remaining:
            # Pods still terminating on their nodes, objects held by finalizers: look again.
            self._gc_later(("namespace", name), 1.0)
            return
        cur = self.store.get("namespaces", None, name)
        if cur is None or not deletion.is_deleting(cur):
            return
        if cur["metadata"].get("finalizers"):
            return      # whoever removes the last one finishes it (`_after_update`, `_drop_finalizer`)
        try:
            self._remove(resolve("Namespace"), cur)
        except errors.NotFound:
            pass
        except errors.Conflict:
            self._gc_later(("namespace", name), 0.0)

    # ------------------------------------------------------------------ logs
    async def pod_log(self, namespace: str | None, name: str, params) -> Any:
        from shoal.apiserver.logproxy import proxy_pod_log
        return await proxy_pod_log(self, namespace, name, params)


def _qos_class(pod: dict) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    reqs = [(c.get("resources") or {}) for c in containers]
    if not any(r.get("limits") or r.get("requests") for r in reqs):
        return "BestEffort"
    for r in reqs:
        lim, req = r.get("limits") or {}, r.get("requests") or {}
        if not lim.get("cpu") or not lim.get("memory") or (req and req != {k: lim[k] for k in req if k in lim}):
            return "Burstable"
    return "Guaranteed"
