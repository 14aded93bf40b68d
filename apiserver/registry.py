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
- patch: merge / JSON / strategic / apply patches applied to the live object,
  then the update path, retried internally on conflicts unless the patch pins
  a resourceVersion.
- delete: graceful for pods bound to a node (deletionTimestamp set, the agent
  confirms with gracePeriodSeconds=0), held by finalizers, otherwise at once;
  dependents (ownerReferences) are deleted in the background (`Orphan` strips
  the references instead). Namespaces delete their contents first.
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

from shoal.machinery.api import errors, selectors
from shoal.apiserver import patch as patches
from shoal.machinery.api.names import is_dns1123_subdomain
from shoal.machinery.api.resources import RESOURCES, Resource, resolve
from shoal.machinery.api.times import format_time, parse_time
from shoal.apiserver.settings import Settings
from shoal.apiserver.store import Store, object_key

log = logging.getLogger(__name__)

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Kinds whose status is owned by controllers/agents: a create carries none.
STATUS_RESET_ON_CREATE = {"Pod", "Deployment", "ReplicaSet"}
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
    from shoal.machinery.api.models import validate
    return validate(kind, obj, old=old, subresource=subresource)


def _validate_status(kind: str, status: Any, name: str) -> dict | None:
    from shoal.machinery.api.models import validate_status
    return validate_status(kind, status, name=name)


class Registry:
    def __init__(self, store: Store, settings: Settings, *, clock: Callable[[], float] = time.time):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.tokens: dict[str, str] = {}
        self._gc_queue: "queue.Queue[tuple[str, str] | None]" = queue.Queue()
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
        # A cascade cut short by a crash is finished once at start-up; from then on the
        # controllers' garbage collector (controller/gc.py) covers orphans.
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

    def create(self, res: Resource, namespace: str | None, body: Any, *, dry_run: bool = False) -> dict:
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
        if dry_run:
            return obj
        # A generated name can meet an existing one (5 characters of 27: after a thousand
        # objects of one prefix about once in twenty): like Kubernetes' RetryGenerateName,
        # draw again a few times instead of failing the caller's create.
        for _ in range(GENERATE_NAME_ATTEMPTS - 1 if generated else 0):
            try:
                return self.store.create(res.plural, obj)
            except errors.AlreadyExists:
                md["name"] = _generated_name(md["generateName"])
        try:
            return self.store.create(res.plural, obj)
        except errors.AlreadyExists:
            raise errors.AlreadyExists(f'{res.group_resource} "{md["name"]}" already exists',
                                       details={"name": md["name"], "group": res.group, "kind": res.plural}) from None

    # ------------------------------------------------------------------ update
    def update(self, res: Resource, namespace: str | None, name: str, body: Any, *,
               subresource: str | None = None, current: dict | None = None) -> dict:
        """`current`: the stored object when the caller has just read it (saves a read; the
        compare-and-swap still checks the revision)."""
        if not isinstance(body, dict):
            raise errors.BadRequest(f"the request body must be a {res.kind} object")
        body = dict(body)
        body.setdefault("apiVersion", res.api_version)
        body.setdefault("kind", res.kind)
        if not isinstance(body.get("metadata"), dict):
            raise errors.BadRequest("metadata: must be an object", causes=[errors.Cause("metadata", "Required")])
        bmd = dict(body["metadata"])
        body["metadata"] = bmd
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
        obj["metadata"].pop("resourceVersion", None)
        cur_cmp = dict(cur, metadata={k: v for k, v in cmd.items() if k != "resourceVersion"})
        if obj == cur_cmp and expected == int(cmd["resourceVersion"]):
            return cur  # no-op update: Kubernetes does not bump the resourceVersion either
        out = self.store.update(res.plural, obj, expected_revision=expected)
        # A deletion that was only waiting for finalizers completes when the last one goes.
        omd = out["metadata"]
        if omd.get("deletionTimestamp") and not omd.get("finalizers") and not self._awaits_node(res, out):
            try:
                self._remove(res, out, propagation="Background")
            except (errors.NotFound, errors.Conflict):
                pass
        return out

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
              subresource: str | None = None, admit: Callable[[dict | None, dict], None] | None = None) -> dict:
        """`admit(stored, patched)` may refuse (raise) what the patch would store, seen against
        the object it is applied to (None when an apply creates it), before the write."""
        for attempt in range(10):
            try:
                cur = self.get(res, namespace, name)
            except errors.NotFound:
                if content_type == "application/apply-patch+yaml" and subresource is None:
                    if admit is not None and isinstance(body, dict):
                        admit(None, body)
                    return self.create(res, namespace, body)
                raise
            new = self._apply_patch(cur, body, content_type)
            if not isinstance(new, dict):
                raise errors.BadRequest("the patch does not produce an object")
            if admit is not None:
                admit(cur, new)
            pinned = isinstance(body, dict) and (body.get("metadata") or {}).get("resourceVersion")
            if not pinned:
                new.setdefault("metadata", {})["resourceVersion"] = cur["metadata"]["resourceVersion"]
            try:
                return self.update(res, namespace, name, new, subresource=subresource, current=cur)
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
        if content_type in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
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
                     content_type: str | None) -> dict:
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
                out = self.update(res, namespace, name, new, current=cur)
                return self._scale_of(res, out)
            except errors.Conflict:
                if rv or attempt == 9:
                    raise
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ delete
    @staticmethod
    def _awaits_node(res: Resource, obj: dict) -> bool:
        """A pod bound to a node is removed only when that node confirms (grace 0)."""
        return res.kind == "Pod" and bool((obj.get("spec") or {}).get("nodeName")) and \
            (obj.get("metadata") or {}).get("deletionGracePeriodSeconds", 0) != 0

    def delete(self, res: Resource, namespace: str | None, name: str, opts: dict) -> dict:
        if res.kind == "Namespace" and name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            raise errors.Forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted')
        propagation = opts.get("propagationPolicy") or "Background"
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise errors.BadRequest(f"propagationPolicy: Unsupported value: {propagation!r}: supported values: "
                                    f"Background, Foreground, Orphan")
        grace = opts.get("gracePeriodSeconds")
        if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
            raise errors.BadRequest("gracePeriodSeconds must be an integer")
        pre = opts.get("preconditions") or {}
        for attempt in range(10):
            cur = self.get(res, namespace, name)
            md = cur["metadata"]
            if pre.get("uid") and pre["uid"] != md.get("uid"):
                raise errors.Conflict(f'Precondition failed: UID in precondition: {pre["uid"]}, UID in object '
                                      f'meta: {md.get("uid")}')
            if pre.get("resourceVersion") and pre["resourceVersion"] != md.get("resourceVersion"):
                raise errors.Conflict(f'Precondition failed: ResourceVersion in precondition: '
                                      f'{pre["resourceVersion"]}, ResourceVersion in object meta: '
                                      f'{md.get("resourceVersion")}')
            try:
                if res.kind == "Namespace":
                    return self._delete_namespace(res, cur)
                if res.kind == "Pod" and (cur.get("spec") or {}).get("nodeName"):
                    if grace is None:
                        grace = int((cur.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
                    grace = max(grace, 0)
                    if grace > 0:
                        return self._mark_deleting(res, cur, grace)
                if md.get("finalizers"):
                    return self._mark_deleting(res, cur, 0)
                out = self._remove(res, cur, propagation=propagation)
                return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": res.group, "kind": res.plural, "uid": md.get("uid")}} \
                    if res.kind != "Pod" else out
            except errors.Conflict:
                if attempt == 9:
                    raise
        raise AssertionError("unreachable")

    def _mark_deleting(self, res: Resource, cur: dict, grace: int) -> dict:
        md = cur["metadata"]
        deadline = self.clock() + grace
        existing = md.get("deletionTimestamp")
        if existing:
            # A shorter grace period may shorten a pending deletion, never lengthen it.
            cur_deadline = parse_time(existing)
            if cur_deadline is not None and deadline >= cur_deadline:
                return cur
        new = dict(cur)
        new["metadata"] = dict(md, deletionTimestamp=now_rfc3339(lambda: deadline),
                               deletionGracePeriodSeconds=grace)
        new["metadata"].pop("resourceVersion", None)
        return self.store.update(res.plural, new, expected_revision=int(md["resourceVersion"]))

    def _remove(self, res: Resource, cur: dict, *, propagation: str) -> dict:
        md = cur["metadata"]
        out = self.store.delete(res.plural, md.get("namespace"), md["name"],
                                expected_revision=int(md["resourceVersion"]))
        if md.get("uid"):
            self._gc_queue.put(("orphan" if propagation == "Orphan" else "cascade", md["uid"]))
        return out

    def _delete_namespace(self, res: Resource, cur: dict) -> dict:
        md = cur["metadata"]
        if not md.get("deletionTimestamp"):
            new = dict(cur)
            new["metadata"] = dict(md, deletionTimestamp=now_rfc3339(self.clock), deletionGracePeriodSeconds=0)
            new["metadata"].pop("resourceVersion", None)
            new["status"] = {"phase": "Terminating"}
            cur = self.store.update(res.plural, new, expected_revision=int(md["resourceVersion"]))
        self._gc_queue.put(("namespace", md["name"]))
        return cur

    # ------------------------------------------------------------------ background garbage collection
    def _gc_loop(self) -> None:
        while not self._stopping.is_set():
            item = self._gc_queue.get()
            if item is None:
                return
            kind, arg = item
            try:
                if kind == "cascade":
                    self._cascade(arg)
                elif kind == "orphan":
                    self._orphan(arg)
                elif kind == "namespace":
                    self._finish_namespace(arg)
                elif kind == "sweep":
                    self._sweep_orphans()
            except Exception:
                log.exception("garbage collection of %s %s failed; will retry", kind, arg)
                if not self._stopping.is_set():
                    threading.Timer(1.0, self._gc_queue.put, args=((kind, arg),)).start()

    def _cascade(self, owner_uid: str) -> None:
        for plural, dep in self.store.dependents(owner_uid):
            dres = resolve(plural)
            md = dep["metadata"]
            refs = [r for r in md.get("ownerReferences") or [] if r.get("uid") != owner_uid]
            try:
                if refs and any(self.store.get_by_uid(r.get("uid", "")) for r in refs):
                    # Another owner still exists: only drop the reference to the deleted one.
                    self._strip_owner(dres, dep, owner_uid)
                elif not md.get("deletionTimestamp"):
                    self.delete(dres, md.get("namespace"), md["name"], {"propagationPolicy": "Background"})
            except errors.NotFound:
                pass

    def _orphan(self, owner_uid: str) -> None:
        for plural, dep in self.store.dependents(owner_uid):
            try:
                self._strip_owner(resolve(plural), dep, owner_uid)
            except errors.NotFound:
                pass

    def _strip_owner(self, res: Resource, dep: dict, owner_uid: str) -> None:
        for _ in range(10):
            new = dict(dep)
            new["metadata"] = dict(dep["metadata"])
            new["metadata"]["ownerReferences"] = [r for r in dep["metadata"].get("ownerReferences") or []
                                                  if r.get("uid") != owner_uid]
            if not new["metadata"]["ownerReferences"]:
                new["metadata"].pop("ownerReferences")
            rv = int(new["metadata"].pop("resourceVersion"))
            try:
                self.store.update(res.plural, new, expected_revision=rv)
                return
            except errors.Conflict:
                dep = self.get(res, dep["metadata"].get("namespace"), dep["metadata"]["name"])

    def _sweep_orphans(self) -> None:
        """Dependents whose owners are all gone (e.g. the server died between the two deletes)."""
        for r in RESOURCES:
            if r.kind in ("Namespace", "Node", "Event", "Lease"):
                continue
            items, _ = self.store.list(r.plural)
            for obj in items:
                refs = (obj.get("metadata") or {}).get("ownerReferences") or []
                if refs and not any(self.store.get_by_uid(x.get("uid", "")) for x in refs):
                    for x in refs:
                        self._gc_queue.put(("cascade", x.get("uid", "")))

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
                        self.delete(r, name, obj["metadata"]["name"], {"propagationPolicy": "Background"})
                    except errors.NotFound:
                        remaining -= 1
        if remaining:
            # Pods still terminating on their nodes: look again shortly.
            if not self._stopping.is_set():
                threading.Timer(1.0, self._gc_queue.put, args=(("namespace", name),)).start()
            return
        cur = self.store.get("namespaces", None, name)
        if cur is not None:
            try:
                self.store.delete("namespaces", None, name, expected_revision=int(cur["metadata"]["resourceVersion"]))
            except (errors.NotFound, errors.Conflict):
                self._gc_queue.put(("namespace", name))

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
