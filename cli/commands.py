"""Handlers of the kubectl-familiar verbs: get, describe, delete, rollout, scale, set image, logs, version.

Each handler is `cmd_x(args) -> int` with `args.ctx` a `cli.context.Context`;
they fetch with the client (`shoal.machinery.client.Client`, which builds every
URL from `shoal.machinery.api.resources`), hand objects to the pure formatters in
`cli.printers`, `cli.describe` and `cli.rollout`, and print. Errors from the
server propagate as `shoal.machinery.api.errors.ApiError` to `shoal.cli.main`, which prints
them kubectl-style; errors about one object among several are printed here
and turn the exit code to 1 without stopping the others.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from shoal.machinery.api import errors, podtemplate
from shoal.machinery.api.resources import RESOURCES, Resource, resolve
from shoal.machinery.api.services import SERVICE_NAME_LABEL
from shoal.machinery.api.times import format_time

from shoal.cli import describe as describers
from shoal.cli import printers
from shoal.cli import rollout as ro
from shoal.cli.tabwriter import TabWriter


class UsageError(Exception):
    """A command line that cannot be acted on; printed as `error: ...`, exit 1."""


# --- argument helpers ------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str | float | int | None) -> float | None:
    """`90`, `30s`, `5m`, `1h30m`, `0` → seconds (None for None; 0 means no limit)."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    t = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    pos, total = 0, 0.0
    for m in _DURATION.finditer(t):
        if m.start() != pos:
            break
        n, unit = float(m.group(1)), m.group(2)
        total += n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
        pos = m.end()
    if pos != len(t) or not t:
        raise UsageError(f'invalid duration "{text}": use a number of seconds or a form like 30s, 5m, 1h30m')
    return total


@dataclass(frozen=True)
class Target:
    resource: Resource
    names: tuple[str, ...]  # empty: all objects of the kind


def parse_targets(words: list[str]) -> list[Target]:
    """kubectl's resource arguments: `pods`, `pods a b`, `pod/a deploy/b`, `deploy,rs`, `all`."""
    if not words:
        raise UsageError("you must specify the type of resource to get (for example: pods, deployments, "
                         "nodes); run `shoal api-resources` for the list")
    if any("/" in w for w in words):
        if not all("/" in w for w in words):
            raise UsageError("there is no need to specify a resource type as a separate argument when passing "
                             "arguments in resource/name form (e.g. 'shoal get resource/<resource_name>' instead "
                             "of 'shoal get resource resource/<resource_name>')")
        out: list[Target] = []
        for w in words:
            kind, _, name = w.partition("/")
            if not name:
                raise UsageError(f'"{w}": a resource name is required after "/"')
            out.append(Target(resolve(kind), (name,)))
        return out
    kinds, names = words[0], tuple(words[1:])
    resources: list[Resource] = []
    for k in kinds.split(","):
        if k == "all":
            resources += [r for r in RESOURCES if "all" in r.categories and r not in resources]
        elif k:
            r = resolve(k)
            if r not in resources:
                resources.append(r)
    if names and len(resources) > 1:
        raise UsageError("names can only be given for a single resource type (or use TYPE/NAME for each)")
    return [Target(r, names) for r in resources]


def single_target(words: list[str], verb: str) -> tuple[Resource, str]:
    """`deployment/web` or `deployment web` → (Resource, name)."""
    targets = parse_targets(words)
    if len(targets) != 1 or len(targets[0].names) != 1:
        raise UsageError(f"{verb} needs exactly one object, e.g. deployment/web")
    return targets[0].resource, targets[0].names[0]


def _name_of(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("name", "")


def _ns_of(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("namespace", "")


def _sorted(res: Resource, items: list[dict]) -> list[dict]:
    if res.kind == "Event":
        return sorted(items, key=printers.event_sort_key)
    return sorted(items, key=lambda o: (_ns_of(o), _name_of(o)))


def _not_found(res: Resource, name: str) -> str:
    return f'{res.group_resource} "{name}" not found'


# --- get ---------------------------------------------------------------------------------------

def _fetch(ctx, target: Target, args) -> tuple[list[dict], str | None, list[str]]:
    """(objects, list resourceVersion, error lines) for one target."""
    client = ctx.client()
    res = target.resource
    all_ns = bool(getattr(args, "all_namespaces", False)) and res.namespaced
    ns = None if all_ns else ctx.namespace()
    if target.names:
        objs, errs = [], []
        for n in target.names:
            try:
                objs.append(client.get(res.kind, n, ns))
            except errors.NotFound:
                errs.append(_not_found(res, n))
        return objs, None, errs
    lst = client.list(res.kind, ns, label_selector=getattr(args, "selector", None),
                      field_selector=getattr(args, "field_selector", None), all_namespaces=all_ns)
    return _sorted(res, lst.get("items") or []), (lst.get("metadata") or {}).get("resourceVersion"), []


def _pods_by_node(ctx) -> dict[str, int] | None:
    try:
        return printers.count_pods_by_node(ctx.client().list("pods", all_namespaces=True).get("items") or [])
    except errors.ApiError as e:
        if e.reason == "ConnectionFailed":
            raise
        return None


def _no_resources(ctx, res: Resource, args) -> None:
    if res.namespaced and not getattr(args, "all_namespaces", False):
        ctx.info(f"No resources found in {ctx.namespace()} namespace.")
    else:
        ctx.info("No resources found")


def cmd_get(args) -> int:
    ctx = args.ctx
    targets = parse_targets(args.resources)
    fmt = args.output
    watch = args.watch or args.watch_only
    if watch and (len(targets) != 1 or len(targets[0].names) > 1):
        raise UsageError("watch is only supported on individual resources and resource collections, "
                         "but several were given")
    rc = 0
    structured_objs: list[tuple[Resource, dict]] = []
    single_request = len(targets) == 1 and len(targets[0].names) == 1
    show_kind = len(targets) > 1 and not all(t.resource == targets[0].resource for t in targets)
    printed_any = False
    writer = TabWriter(6, 3)
    last_rv = None
    for t in targets:
        objs, rv, errs = _fetch(ctx, t, args)
        last_rv = rv
        for e in errs:
            ctx.error(e)
            rc = 1
        if fmt in ("yaml", "json", "name"):
            structured_objs += [(t.resource, o) for o in objs]
            continue
        if not objs or args.watch_only:
            continue
        pods_by_node = _pods_by_node(ctx) if (t.resource.kind == "Node" and fmt == "wide") else None
        lines = printers.table_lines(t.resource.kind, objs, printers.RenderContext(ctx.now(), pods_by_node),
                                     wide=fmt == "wide", all_namespaces=bool(args.all_namespaces)
                                     and t.resource.namespaced, show_labels=args.show_labels, show_kind=show_kind)
        if printed_any:
            ctx.line()
        ctx.write(writer.format(lines, remember=watch))
        printed_any = True
    # kubectl prints an empty List for -o json|yaml of an empty collection (scripts parse it)
    empty_list = fmt in ("yaml", "json") and not any(t.names for t in targets)
    if fmt in ("yaml", "json", "name") and not args.watch_only and (structured_objs or empty_list):
        if fmt == "name":
            for res, o in structured_objs:
                ctx.line(printers.object_ref(o, res))
        else:
            items = [printers.for_output(o, res) for res, o in structured_objs]
            doc = items[0] if single_request and len(items) == 1 else printers.as_list(items)
            ctx.write(printers.render_yaml(doc) if fmt == "yaml" else printers.render_json(doc))
        printed_any = True
    if not printed_any and not args.watch_only and rc == 0 and not any(t.names for t in targets):
        _no_resources(ctx, targets[0].resource, args)
    if watch:
        return max(rc, _watch_rows(ctx, targets[0], args, last_rv, writer, header_printed=printed_any))
    return rc


def _watch_rows(ctx, target: Target, args, rv: str | None, writer: TabWriter, *, header_printed: bool) -> int:
    """`get -w`: print a row (or document) per change until interrupted or --request-timeout."""
    client = ctx.client()
    res = target.resource
    all_ns = bool(args.all_namespaces) and res.namespaced
    ns = None if all_ns else ctx.namespace()
    field = args.field_selector
    if target.names:
        name_sel = f"metadata.name={target.names[0]}"
        field = f"{field},{name_sel}" if field else name_sel
    limit = parse_duration(args.request_timeout) or None
    deadline = None if not limit else ctx.monotonic() + limit
    fmt = args.output
    need_header = not header_printed and fmt not in ("yaml", "json", "name")
    if rv is None:  # names were fetched one by one: start from the current state
        lst = client.list(res.kind, ns, label_selector=args.selector, field_selector=field, all_namespaces=all_ns)
        rv = (lst.get("metadata") or {}).get("resourceVersion")
    while True:
        remaining = None if deadline is None else deadline - ctx.monotonic()
        if remaining is not None and remaining <= 0:
            return 0
        chunk = 300.0 if remaining is None else max(1.0, remaining)
        try:
            for ev in client.watch(res.kind, ns, resource_version=rv, label_selector=args.selector,
                                   field_selector=field, timeout_seconds=chunk, bookmarks=True,
                                   all_namespaces=all_ns):
                obj = ev.get("object") or {}
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if new_rv:
                    rv = new_rv
                if ev.get("type") == "BOOKMARK":
                    continue
                if fmt in ("yaml", "json"):
                    o = printers.for_output(obj, res)
                    ctx.write("---\n" + printers.render_yaml(o) if fmt == "yaml" else printers.render_json(o))
                elif fmt == "name":
                    ctx.line(printers.object_ref(obj, res))
                else:
                    lines = printers.table_lines(res.kind, [obj], printers.RenderContext(ctx.now()),
                                                 wide=fmt == "wide", all_namespaces=all_ns,
                                                 show_labels=args.show_labels, header=need_header)
                    need_header = False
                    ctx.write(writer.format(lines, remember=True))
                if deadline is not None and ctx.monotonic() >= deadline:
                    return 0
        except errors.Gone:
            lst = client.list(res.kind, ns, label_selector=args.selector, field_selector=field,
                              all_namespaces=all_ns)
            rv = (lst.get("metadata") or {}).get("resourceVersion")


# --- describe ---------------------------------------------------------------------------------

def _events_for(ctx, obj: dict, res: Resource) -> list[dict]:
    uid = (obj.get("metadata") or {}).get("uid")
    if not uid:
        return []
    client = ctx.client()
    sel = f"involvedObject.uid={uid}"
    if res.namespaced:
        lst = client.list("events", _ns_of(obj) or ctx.namespace(), field_selector=sel)
    else:
        lst = client.list("events", field_selector=sel, all_namespaces=True)
    return lst.get("items") or []


def describe_one(ctx, res: Resource, obj: dict) -> str:
    client = ctx.client()
    now = ctx.now()
    events = _events_for(ctx, obj, res)
    if res.kind == "Pod":
        return describers.describe_pod(obj, events, now)
    if res.kind == "Deployment":
        sel = printers.format_selector((obj.get("spec") or {}).get("selector"))
        rss = client.list("replicasets", _ns_of(obj), label_selector=None if sel == printers.NONE else sel)
        return describers.describe_deployment(obj, rss.get("items") or [], events, now)
    if res.kind == "ReplicaSet":
        sel = printers.format_selector((obj.get("spec") or {}).get("selector"))
        pods = client.list("pods", _ns_of(obj), label_selector=None if sel == printers.NONE else sel)
        owned = [p for p in pods.get("items") or [] if ro.controlled_by(p, obj)]
        return describers.describe_replicaset(obj, owned, events, now)
    if res.kind == "Node":
        pods = client.list("pods", field_selector=f"spec.nodeName={_name_of(obj)}", all_namespaces=True)
        return describers.describe_node(obj, pods.get("items") or [], events, now)
    if res.kind == "Service":
        slices = client.list("endpointslices", _ns_of(obj), label_selector=f"{SERVICE_NAME_LABEL}={_name_of(obj)}")
        return describers.describe_service(obj, slices.get("items") or [], events, now)
    return describers.describe_generic(obj, events, now)


def cmd_describe(args) -> int:
    ctx = args.ctx
    rc = 0
    first = True
    for t in parse_targets(args.resources):
        objs, _, errs = _fetch(ctx, t, args)
        for e in errs:
            ctx.error(e)
            rc = 1
        if not objs and not t.names:
            _no_resources(ctx, t.resource, args)
        for o in objs:
            if not first:
                ctx.line()
                ctx.line()
            ctx.write(describe_one(ctx, t.resource, o))
            first = False
    return rc


# --- delete -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Deleted:
    resource: Resource
    name: str
    namespace: str | None
    uid: str | None


def wait_gone(ctx, items: list[Deleted], timeout: float | None) -> list[Deleted]:
    """Wait until each object is gone (404, or replaced by one with another uid). Returns those still there."""
    client = ctx.client()
    deadline = None if not timeout else ctx.monotonic() + timeout
    left = []
    for d in items:
        while True:
            try:
                obj = client.get(d.resource.kind, d.name, d.namespace)
            except errors.NotFound:
                break
            if d.uid and (obj.get("metadata") or {}).get("uid") != d.uid:
                break
            remaining = None if deadline is None else deadline - ctx.monotonic()
            if remaining is not None and remaining <= 0:
                left.append(d)
                break
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            chunk = 5.0 if remaining is None else max(1.0, min(5.0, remaining))
            try:
                for ev in client.watch(d.resource.kind, d.namespace, resource_version=rv,
                                       field_selector=f"metadata.name={d.name}", timeout_seconds=chunk):
                    if ev.get("type") == "DELETED":
                        break
            except errors.Gone:
                pass
    return left


# kubectl's --cascade values -> DeleteOptions.propagationPolicy
CASCADE_POLICIES = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan"}


def cmd_delete(args) -> int:
    ctx = args.ctx
    client = ctx.client()
    rc = 0
    todo: list[tuple[Resource, str, str | None]] = []
    if args.filename:
        from shoal.cli.manifests import check_document, load
        loaded = load(args.filename, stdin=ctx.stdin, recursive=args.recursive)
        for e in loaded.errors:
            ctx.error(str(e))
            rc = 1
        for doc in loaded.documents:
            problems = check_document(doc)
            if problems:
                for p in problems:
                    ctx.error(f"{doc.where()}: {p}")
                rc = 1
                continue
            res = resolve(doc.obj["kind"])
            ns = ((doc.obj.get("metadata") or {}).get("namespace") or ctx.namespace()) if res.namespaced else None
            todo.append((res, doc.obj["metadata"]["name"], ns))
        if args.resources:
            raise UsageError("give either -f FILE or resources to delete, not both")
    else:
        if not args.resources:
            raise UsageError("you must specify what to delete: -f FILE, TYPE NAME..., TYPE/NAME, "
                             "or TYPE with -l SELECTOR / --all")
        for t in parse_targets(args.resources):
            ns = ctx.namespace() if t.resource.namespaced else None
            if t.names:
                todo += [(t.resource, n, ns) for n in t.names]
            elif args.selector or args.all:
                lst = client.list(t.resource.kind, ns, label_selector=args.selector)
                todo += [(t.resource, _name_of(o), ns) for o in lst.get("items") or []]
            else:
                raise UsageError(f"resource(s) were provided, but no name was specified: give names, "
                                 f"-l SELECTOR or --all to delete {t.resource.plural}")
        if not todo and (args.selector or args.all):
            ctx.info("No resources found")
    # objects before the namespaces that hold them, so each is reported rather than swept away by the cascade
    todo.sort(key=lambda t: t[0].kind == "Namespace")
    policy = CASCADE_POLICIES[args.cascade]
    dry = args.dry_run == "server"
    deleted: list[Deleted] = []
    for res, name, ns in todo:
        try:
            out = client.delete(res.kind, name, ns, grace_period_seconds=args.grace_period,
                                propagation_policy=policy, dry_run=dry)
        except errors.NotFound:
            if not args.ignore_not_found:
                ctx.error(_not_found(res, name))
                rc = 1
            continue
        if dry:     # as kubectl: reported, nothing to wait for
            ctx.line(f'{res.kind_lower_group} "{name}" deleted (server dry run)')
            continue
        uid = ((out or {}).get("details") or {}).get("uid") or ((out or {}).get("metadata") or {}).get("uid")
        ctx.line(f'{res.kind_lower_group} "{name}" deleted')
        deleted.append(Deleted(res, name, ns, uid))
    if args.wait and deleted:
        for d in wait_gone(ctx, deleted, parse_duration(args.timeout)):
            ctx.error(f'timed out waiting for {d.resource.group_resource} "{d.name}" to be deleted '
                      f'(it may still be terminating: see `shoal describe {d.resource.singular} {d.name}`)')
            rc = 1
    return rc


# --- rollout ------------------------------------------------------------------------------------

def _deployment_target(words: list[str], verb: str) -> str:
    res, name = single_target(words, f"rollout {verb}")
    if res.kind != "Deployment":
        raise UsageError(f"rollout {verb} supports deployments only, not {res.plural}")
    return name


def cmd_rollout_status(args) -> int:
    ctx = args.ctx
    name = _deployment_target(args.resources, "status")
    try:
        st = ro.watch_rollout(ctx.client(), name, ctx.namespace(), timeout=parse_duration(args.timeout),
                              emit=ctx.line, watch=args.watch, monotonic=ctx.monotonic)
    except ro.RolloutTimeout as e:
        ctx.error(str(e))
        return 1
    if st.error:
        ctx.error(st.error)
        return 1
    return 0


def _history(ctx, name: str) -> tuple[dict, list[dict]]:
    client = ctx.client()
    deploy = client.get("deployments", name, ctx.namespace())
    sel = printers.format_selector((deploy.get("spec") or {}).get("selector"))
    rss = client.list("replicasets", ctx.namespace(), label_selector=None if sel == printers.NONE else sel)
    return deploy, rss.get("items") or []


def cmd_rollout_history(args) -> int:
    ctx = args.ctx
    name = _deployment_target(args.resources, "history")
    deploy, rss = _history(ctx, name)
    revs = ro.history(deploy, rss)
    if args.revision:
        for r in revs:
            if r.number == args.revision:
                ctx.line(f"deployment.apps/{name} with revision #{r.number}")
                w = describers.Lines()
                w(0, "Pod Template:")
                describers.describe_pod_template(w, 1, podtemplate.without_hash_label(
                    (r.replicaset.get("spec") or {}).get("template") or {}))
                ctx.write(w.text())
                return 0
        ctx.error(f"unable to find the specified revision {args.revision}")
        return 1
    if not revs:
        ctx.line("No rollout history found.")
        return 0
    ctx.line(f"deployment.apps/{name}")
    ctx.write(TabWriter(0, 2).format(["REVISION\tCHANGE-CAUSE"] +
                                     [f"{r.number}\t{r.change_cause or '<none>'}" for r in revs]))
    ctx.line()
    return 0


def _update_deployment(ctx, name: str, mutate) -> tuple[dict, bool]:
    """Read-modify-CAS-write with retries on Conflict; `mutate(obj)` returns False to skip the write."""
    client = ctx.client()
    for _ in range(5):
        obj = client.get("deployments", name, ctx.namespace())
        if mutate(obj) is False:
            return obj, False
        try:
            return client.update("deployments", obj), True
        except errors.Conflict:
            continue
    raise errors.Conflict(f'deployments.apps "{name}": the object kept changing while it was being updated; '
                          f'try again')


def cmd_rollout_undo(args) -> int:
    ctx = args.ctx
    name = _deployment_target(args.resources, "undo")
    deploy, rss = _history(ctx, name)
    try:
        target = ro.rollback_target(deploy, rss, args.to_revision or 0)
    except ro.RollbackError as e:
        ctx.error(str(e))
        return 1
    template = podtemplate.without_hash_label((target.replicaset.get("spec") or {}).get("template") or {})
    skipped = {}

    def mutate(obj: dict):
        if podtemplate.templates_equal((obj.get("spec") or {}).get("template") or {}, template):
            skipped["yes"] = True
            return False
        obj.setdefault("spec", {})["template"] = template
        return True
    _update_deployment(ctx, name, mutate)
    if skipped:
        ctx.line(f"deployment.apps/{name} skipped rollback (current template already matches revision "
                 f"{target.number})")
    else:
        ctx.line(f"deployment.apps/{name} rolled back")
    return 0


def cmd_rollout_pause_resume(args) -> int:
    ctx = args.ctx
    pause = args.rollout_verb == "pause"
    name = _deployment_target(args.resources, args.rollout_verb)
    deploy = ctx.client().get("deployments", name, ctx.namespace())
    if bool((deploy.get("spec") or {}).get("paused")) == pause:
        ctx.error(f'deployments.apps "{name}" is {"already paused" if pause else "not paused"}')
        return 1
    ctx.client().patch("deployments", name, {"spec": {"paused": pause}}, ctx.namespace())
    ctx.line(f"deployment.apps/{name} {'paused' if pause else 'resumed'}")
    return 0


def cmd_rollout_restart(args) -> int:
    ctx = args.ctx
    name = _deployment_target(args.resources, "restart")
    deploy = ctx.client().get("deployments", name, ctx.namespace())
    if (deploy.get("spec") or {}).get("paused"):
        ctx.error(f'deployments.apps "{name}" can\'t restart paused deployment (run rollout resume first)')
        return 1
    stamp = format_time(ctx.now().timestamp())
    ctx.client().patch("deployments", name, {"spec": {"template": {"metadata": {"annotations": {
        ro.RESTARTED_AT: stamp}}}}}, ctx.namespace())
    ctx.line(f"deployment.apps/{name} restarted")
    return 0


# --- expose ---------------------------------------------------------------------------------------

EXPOSABLE = ("Deployment", "ReplicaSet", "Pod", "Service")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")


def _int_or_name(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if text.isdigit() else text


def service_for(res: Resource, obj: dict, *, name: str | None = None, port: str | None = None,
                target_port: str | None = None, protocol: str | None = None, type_: str | None = None,
                selector: str | None = None) -> dict:
    """kubectl expose's Service for `obj` (pure): its selector from the object (a
    Deployment's or ReplicaSet's matchLabels, a pod's labels, a Service's selector) unless
    `selector` (`k=v,...`) is given, its labels from the object, one port `port` → `target_port`
    (default: the port), or without `port` one per container port of the pod template
    (`port-1`, `port-2`... when there are several). UsageError when it cannot be built."""
    what = f"{res.kind.lower()} {_name_of(obj)}"
    if res.kind not in EXPOSABLE:
        raise UsageError(f"cannot expose a {res.kind}: only deployments, replica sets, pods and services can be "
                         f"exposed")
    if type_ is not None and type_ not in SERVICE_TYPES:
        raise UsageError(f"--type={type_}: expected one of {', '.join(SERVICE_TYPES)}")
    spec = obj.get("spec") or {}
    if selector:
        sel = {}
        for part in selector.split(","):
            k, eq, v = part.partition("=")
            if not eq or not k.strip():
                raise UsageError(f"--selector {selector!r}: expected key=value[,key=value...]")
            sel[k.strip()] = v.strip()
    elif res.kind in ("Deployment", "ReplicaSet"):
        ls = spec.get("selector") or {}
        if ls.get("matchExpressions"):
            raise UsageError(f"cannot expose {what}: its selector has matchExpressions, which a Service "
                             f"selector cannot hold; give --selector")
        sel = dict(ls.get("matchLabels") or {})
    elif res.kind == "Pod":
        sel = dict((obj.get("metadata") or {}).get("labels") or {})
    else:
        sel = dict(spec.get("selector") or {})
    if not sel:
        raise UsageError(f"cannot expose {what}: it has no selector (or labels) to select pods with; give --selector")
    proto = protocol or "TCP"
    ports: list[dict] = []
    if port is not None:
        if not port.isdigit():
            raise UsageError(f"--port={port}: expected a port number")
        p: dict = {"port": int(port), "protocol": proto}
        target = _int_or_name(target_port) if target_port is not None else None
        if target is not None:
            p["targetPort"] = target
        ports.append(p)
    else:
        template = spec if res.kind == "Pod" else ((spec.get("template") or {}).get("spec") or {})
        if res.kind == "Service":
            found = [dict(q) for q in spec.get("ports") or []]
            for q in found:
                q.pop("nodePort", None)
            ports = found
        else:
            found = [(c.get("containerPort"), c.get("protocol") or "TCP")
                     for ct in template.get("containers") or [] for c in ct.get("ports") or []]
            for i, (number, prot) in enumerate(found):
                q = {"port": number, "protocol": protocol or prot, "targetPort": _int_or_name(target_port) or number}
                if len(found) > 1:
                    q = {"name": f"port-{i + 1}", **q}
                ports.append(q)
        if not ports:
            raise UsageError(f"couldn't find port via --port flag or introspection: {what} declares no container "
                             f"ports; give --port")
    svc_spec: dict = {"ports": ports, "selector": sel}
    if type_:
        svc_spec["type"] = type_
    md: dict = {"name": name or _name_of(obj)}
    labels = (obj.get("metadata") or {}).get("labels")
    if labels:
        md["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "Service", "metadata": md, "spec": svc_spec}


def cmd_expose(args) -> int:
    ctx = args.ctx
    res, name = single_target(args.resources, "expose")
    client = ctx.client()
    try:
        obj = client.get(res.kind, name, ctx.namespace())
    except errors.NotFound:
        ctx.error(_not_found(res, name))
        return 1
    body = service_for(res, obj, name=args.name, port=args.port, target_port=args.target_port,
                       protocol=args.protocol, type_=args.type, selector=args.selector)
    svc_res = resolve("services")
    params = {"fieldManager": "shoal-expose", **({"dryRun": "All"} if args.dry_run == "server" else {})}
    out = client.request("POST", svc_res.path(namespace=ctx.namespace()), params=params, body=body)
    if args.output in ("yaml", "json"):
        o = printers.for_output(out, svc_res)
        ctx.write(printers.render_yaml(o) if args.output == "yaml" else printers.render_json(o))
        return 0
    ctx.line(f"service/{_name_of(out)} exposed{' (server dry run)' if args.dry_run == 'server' else ''}")
    return 0


# --- scale, set image ---------------------------------------------------------------------------

def cmd_scale(args) -> int:
    ctx = args.ctx
    if args.replicas is None or args.replicas < 0:
        raise UsageError("--replicas=COUNT is required, and COUNT must be 0 or more")
    rc = 0
    for t in parse_targets(args.resources):
        if "scale" not in t.resource.subresources:
            raise UsageError(f"{t.resource.plural} cannot be scaled (no scale subresource)")
        if not t.names:
            raise UsageError("give the name of what to scale, e.g. deployment/web")
        for n in t.names:
            try:
                ctx.client().patch(t.resource.kind, n, {"spec": {"replicas": args.replicas}}, ctx.namespace(),
                                   subresource="scale")
            except errors.NotFound:
                ctx.error(_not_found(t.resource, n))
                rc = 1
                continue
            ctx.line(f"{t.resource.kind_lower_group}/{n} scaled")
    return rc


def parse_image_pairs(words: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split `deployment/web web=nginx:1.28 side=busybox` into targets and {container: image}."""
    targets, pairs = [], {}
    for w in words:
        if "=" in w:
            c, _, img = w.partition("=")
            if not c or not img:
                raise UsageError(f'"{w}": expected CONTAINER=IMAGE')
            pairs[c] = img
        else:
            if pairs:
                raise UsageError(f'"{w}": resources come before CONTAINER=IMAGE pairs')
            targets.append(w)
    if not pairs:
        raise UsageError("at least one CONTAINER=IMAGE pair is required (use *=IMAGE for every container)")
    return targets, pairs


def set_images(obj: dict, pairs: dict[str, str]) -> list[str]:
    """Set images in a pod or a workload's pod template. Returns container names not found."""
    spec = obj.get("spec") or {}
    pod_spec = spec if obj.get("kind") == "Pod" or "containers" in spec else (spec.get("template") or {}).get("spec") or {}
    containers = (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or [])
    missing = []
    for cname, image in pairs.items():
        hit = False
        for c in containers:
            if cname == "*" or c.get("name") == cname:
                c["image"] = image
                hit = True
        if not hit:
            missing.append(cname)
    return missing


def cmd_set_image(args) -> int:
    ctx = args.ctx
    words, pairs = parse_image_pairs(args.args)
    client = ctx.client()
    rc = 0
    for t in parse_targets(words):
        if t.resource.kind not in ("Deployment", "ReplicaSet", "Pod"):
            raise UsageError(f"set image supports deployments, replicasets and pods, not {t.resource.plural}")
        for n in t.names:
            missing: list[str] = []
            for _ in range(5):
                try:
                    obj = client.get(t.resource.kind, n, ctx.namespace())
                except errors.NotFound:
                    ctx.error(_not_found(t.resource, n))
                    rc = 1
                    break
                obj.setdefault("kind", t.resource.kind)
                missing = set_images(obj, pairs)
                if missing:
                    ctx.error(f'unable to find container named "{missing[0]}" in {t.resource.kind_lower_group}/{n}')
                    rc = 1
                    break
                try:
                    client.update(t.resource.kind, obj)
                except errors.Conflict:
                    continue
                ctx.line(f"{t.resource.kind_lower_group}/{n} image updated")
                break
    return rc


# --- logs, version, api-resources ---------------------------------------------------------------

def _pod_for_logs(ctx, words: list[str]) -> dict:
    client = ctx.client()
    if len(words) == 1 and "/" not in words[0]:
        return client.get("pods", words[0], ctx.namespace())
    res, name = single_target(words, "logs")
    if res.kind == "Pod":
        return client.get("pods", name, ctx.namespace())
    if res.kind not in ("Deployment", "ReplicaSet"):
        raise UsageError(f"logs takes a pod, deployment or replicaset, not {res.plural}")
    owner = client.get(res.kind, name, ctx.namespace())
    sel = printers.format_selector((owner.get("spec") or {}).get("selector"))
    pods = client.list("pods", ctx.namespace(), label_selector=None if sel == printers.NONE else sel)
    items = sorted(pods.get("items") or [], key=lambda p: (
        (p.get("status") or {}).get("phase") != "Running", (p.get("metadata") or {}).get("creationTimestamp", "")))
    if not items:
        raise UsageError(f'{res.kind_lower_group}/{name} has no pods to show logs of')
    if len(items) > 1:
        ctx.info(f"Found {len(items)} pods, using pod/{_name_of(items[0])}")
    return items[0]


def cmd_logs(args) -> int:
    ctx = args.ctx
    words = [args.pod] + ([args.container_arg] if args.container_arg else [])
    container = args.container
    if args.container_arg and "/" not in args.pod:
        words, container = [args.pod], container or args.container_arg
    pod = _pod_for_logs(ctx, words)
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    if container is None and len(names) > 1:
        default = ((pod.get("metadata") or {}).get("annotations") or {}).get(
            "kubectl.kubernetes.io/default-container") or names[0]
        ctx.info(f'Defaulted container "{default}" out of: {", ".join(names)}')
        container = default
    elif container is not None and container not in names:
        ctx.error(f'container {container} is not valid for pod {_name_of(pod)}: it has {", ".join(names)}')
        return 1
    tail = args.tail if args.tail is not None and args.tail >= 0 else None
    for chunk in ctx.client().logs(_name_of(pod), _ns_of(pod) or ctx.namespace(), container=container,
                                   follow=args.follow, tail_lines=tail, previous=args.previous):
        ctx.write(chunk)
    return 0


def client_version() -> str:
    from importlib import metadata
    try:
        return metadata.version("shoal")
    except metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text())["project"]["version"]
        except (OSError, KeyError, ValueError):
            return "unknown"


def cmd_version(args) -> int:
    ctx = args.ctx
    ctx.line(f"Client Version: v{client_version()}")
    if args.client:
        return 0
    info = ctx.client().request("GET", "/version") or {}
    server = info.get("gitVersion") or f"v{info.get('major', '?')}.{info.get('minor', '?')}"
    extra = f" (shoal {info['shoal']})" if isinstance(info.get("shoal"), str) else ""
    ctx.line(f"Server Version: {server}{extra}")
    return 0


def cmd_api_resources(args) -> int:
    ctx = args.ctx
    lines = ["NAME\tSHORTNAMES\tAPIVERSION\tNAMESPACED\tKIND"]
    for r in sorted(RESOURCES, key=lambda r: r.plural):
        lines.append(f"{r.plural}\t{','.join(r.short_names)}\t{r.api_version}\t{str(r.namespaced).lower()}\t{r.kind}")
    ctx.write(TabWriter(6, 3).format(lines))
    return 0
