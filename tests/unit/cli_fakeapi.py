"""An in-memory stand-in for `shoal.machinery.client.Client` used by the CLI unit tests.

It keeps objects per (kind, namespace, name), assigns uid/resourceVersion/
generation, enforces compare-and-swap on update, applies merge patches
(including the /scale subresource), filters by equality label selectors and
`metadata.name`/`involvedObject.uid`/`spec.nodeName` field selectors, and
records every call in `calls` so tests can assert what the CLI sent.
Watch replays scripted events (`script_watch`) — the real server is
exercised by the integration tests.
"""
from __future__ import annotations

import copy
import itertools

from shoal.machinery.api import errors
from shoal.machinery.api.resources import resolve


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class FakeApi:
    server = "http://fake"
    default_namespace = "default"

    def __init__(self):
        self.objects: dict[tuple[str, str | None, str], dict] = {}
        self.calls: list[tuple] = []
        self.delete_options: list[tuple] = []     # (propagation_policy, dry_run) of each delete
        self.rv = itertools.count(100)
        self.uids = itertools.count(1)
        self.watch_scripts: list[list[dict]] = []
        self.invalid: dict[str, errors.ApiError] = {}  # name -> error raised on create/update
        self.logs_text = ""

    def close(self):
        pass

    def _key(self, kind, name, namespace):
        res = resolve(kind)
        return res.kind, (namespace or self.default_namespace) if res.namespaced else None, name

    def add(self, obj: dict) -> dict:
        res = resolve(obj["kind"])
        o = copy.deepcopy(obj)
        md = o.setdefault("metadata", {})
        if res.namespaced:
            md.setdefault("namespace", "default")
        md.setdefault("uid", f"uid-{next(self.uids)}")
        md["resourceVersion"] = str(next(self.rv))
        md.setdefault("generation", 1)
        md.setdefault("creationTimestamp", "2024-05-01T11:59:00Z")
        o.setdefault("apiVersion", res.api_version)
        self.objects[(res.kind, md.get("namespace") if res.namespaced else None, md["name"])] = o
        return copy.deepcopy(o)

    def _not_found(self, kind, name):
        return errors.NotFound(f'{resolve(kind).group_resource} "{name}" not found')

    # -- Client API -------------------------------------------------------------
    def get(self, kind, name, namespace=None, *, subresource=None):
        self.calls.append(("get", resolve(kind).kind, name, namespace))
        k = self._key(kind, name, namespace)
        if k not in self.objects:
            raise self._not_found(kind, name)
        return copy.deepcopy(self.objects[k])

    def list(self, kind, namespace=None, *, label_selector=None, field_selector=None, all_namespaces=False):
        res = resolve(kind)
        self.calls.append(("list", res.kind, namespace, label_selector, field_selector, all_namespaces))
        ns = None if (all_namespaces or not res.namespaced) else (namespace or self.default_namespace)
        items = []
        for (k, n, _), o in self.objects.items():
            if k != res.kind or (ns is not None and n != ns):
                continue
            if label_selector:
                labels = (o["metadata"].get("labels") or {})
                if not all(labels.get(a) == b for a, _, b in (t.partition("=") for t in label_selector.split(","))):
                    continue
            if field_selector:
                ok = True
                for term in field_selector.split(","):
                    path, _, want = term.partition("=")
                    v = o
                    for part in path.split("."):
                        v = (v or {}).get(part) if isinstance(v, dict) else None
                    ok = ok and v == want
                if not ok:
                    continue
            items.append(copy.deepcopy(o))
        return {"items": items, "metadata": {"resourceVersion": str(next(self.rv))}}

    def create(self, kind, obj, namespace=None):
        self.calls.append(("create", resolve(kind).kind, obj["metadata"]["name"], copy.deepcopy(obj)))
        if obj["metadata"]["name"] in self.invalid:
            raise self.invalid[obj["metadata"]["name"]]
        k = self._key(kind, obj["metadata"]["name"], namespace or obj["metadata"].get("namespace"))
        if k in self.objects:
            raise errors.AlreadyExists(f'{resolve(kind).group_resource} "{k[2]}" already exists')
        return self.add({**obj, "kind": resolve(kind).kind})

    def update(self, kind, obj, *, subresource=None):
        self.calls.append(("update", resolve(kind).kind, obj["metadata"]["name"], copy.deepcopy(obj)))
        if obj["metadata"]["name"] in self.invalid:
            raise self.invalid[obj["metadata"]["name"]]
        k = self._key(kind, obj["metadata"]["name"], obj["metadata"].get("namespace"))
        cur = self.objects.get(k)
        if cur is None:
            raise self._not_found(kind, k[2])
        if obj["metadata"].get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise errors.Conflict("the object has been modified; please apply your changes to the latest version")
        new = copy.deepcopy(obj)
        new["metadata"]["resourceVersion"] = str(next(self.rv))
        if new.get("spec") != cur.get("spec"):
            new["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
        self.objects[k] = new
        return copy.deepcopy(new)

    def patch(self, kind, name, patch, namespace=None, *, subresource=None, patch_type="merge"):
        self.calls.append(("patch", resolve(kind).kind, name, subresource, copy.deepcopy(patch)))
        k = self._key(kind, name, namespace)
        if k not in self.objects:
            raise self._not_found(kind, name)
        cur = self.objects[k]
        new = merge_patch(cur, patch)
        new["metadata"]["resourceVersion"] = str(next(self.rv))
        if new.get("spec") != cur.get("spec"):
            new["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
        self.objects[k] = new
        return copy.deepcopy(new)

    def delete(self, kind, name, namespace=None, *, grace_period_seconds=None, propagation_policy=None,
               preconditions_uid=None, dry_run=False):
        self.calls.append(("delete", resolve(kind).kind, name, namespace, grace_period_seconds))
        self.delete_options.append((propagation_policy, dry_run))
        k = self._key(kind, name, namespace)
        if k not in self.objects:
            raise self._not_found(kind, name)
        obj = self.objects[k] if dry_run else self.objects.pop(k)
        return {"kind": "Status", "status": "Success", "details": {"name": name, "uid": obj["metadata"]["uid"]}}

    def watch(self, kind, namespace=None, **kw):
        self.calls.append(("watch", resolve(kind).kind, namespace, kw))
        script = self.watch_scripts.pop(0) if self.watch_scripts else []
        yield from script

    def logs(self, name, namespace=None, **kw):
        self.calls.append(("logs", name, namespace, kw))
        self.get("pods", name, namespace)
        yield self.logs_text

    def request(self, method, path, **kw):
        self.calls.append(("request", method, path))
        if path == "/version":
            return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-shoal"}
        raise errors.NotFound(path)
