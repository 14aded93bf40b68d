"""Pure formatting of API objects the way kubectl prints them.

Everything here is a function of (objects, now): no I/O, no client. The
commands in `cli.commands` fetch objects and hand them to `render_table`,
`render_yaml`, `render_json` or `render_names`.

Design notes:
- Columns come from one table per kind (`COLUMNS`), each column a name, a
  cell function and whether it is a `-o wide` column, mirroring the
  priority-0/priority-1 column definitions of the server-side Tables kubectl
  prints. The cell logic follows kubectl's printers (pkg/printers/
  internalversion/printers.go): pod STATUS and RESTARTS, node STATUS and
  ROLES, label-selector formatting, event LAST SEEN.
- AGE is `human_duration`, a port of apimachinery's `duration.HumanDuration`.
- Alignment is Go's tabwriter (`cli.tabwriter`), so output matches kubectl
  column for column.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable

import yaml

from shoal.machinery.api.objects import meta
from shoal.machinery.api.resources import Resource, resolve
from shoal.machinery.api.selectors import format_label_selector as format_selector
from shoal.machinery.api.times import parse_datetime

from shoal.cli.tabwriter import TabWriter

NONE = "<none>"


# --- time ---------------------------------------------------------------------------

def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: `45s`, `5m12s`, `12m`, `3h`, `5h10m`, `2d`, `3d4h`, `1y20d`."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rem = s % 60
        return f"{minutes}m" if rem == 0 else f"{minutes}m{rem}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def since(value: str | None, now: datetime) -> str:
    """kubectl's translateTimestampSince: `<unknown>` for a missing timestamp."""
    t = parse_datetime(value)
    if t is None:
        return "<unknown>"
    return human_duration((now - t).total_seconds())


def age(obj: dict, now: datetime) -> str:
    return since(meta(obj).get("creationTimestamp"), now)


# --- small helpers --------------------------------------------------------------------

def _spec(obj: dict) -> dict:
    return obj.get("spec") or {}


def _status(obj: dict) -> dict:
    return obj.get("status") or {}


def format_labels(labels: dict | None) -> str:
    if not labels:
        return NONE
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


# --- pods -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PodSummary:
    ready: str  # "1/2"
    status: str  # "Running", "CrashLoopBackOff", "Init:0/1", "Terminating", ...
    restarts: str  # "0", "3 (12s ago)"


def pod_summary(pod: dict, now: datetime) -> PodSummary:
    """kubectl's printPod: READY, STATUS (reason) and RESTARTS of one pod."""
    spec, status, md = _spec(pod), _status(pod), meta(pod)
    containers = spec.get("containers") or []
    init_containers = spec.get("initContainers") or []
    total = len(containers)
    ready_count = 0
    restarts = 0
    last_restart: datetime | None = None
    phase = status.get("phase") or "Pending"
    reason = status.get("reason") or phase
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    def note_restart(cs: dict) -> None:
        nonlocal last_restart
        term = (cs.get("lastState") or {}).get("terminated")
        if term:
            t = parse_datetime(term.get("finishedAt"))
            if t and (last_restart is None or t > last_restart):
                last_restart = t

    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts += _int(cs.get("restartCount"))
        note_restart(cs)
        state = cs.get("state") or {}
        term, waiting = state.get("terminated"), state.get("waiting")
        if term and _int(term.get("exitCode")) == 0:
            continue
        if term:
            if term.get("reason"):
                reason = "Init:" + term["reason"]
            elif _int(term.get("signal")):
                reason = f"Init:Signal:{_int(term.get('signal'))}"
            else:
                reason = f"Init:ExitCode:{_int(term.get('exitCode'))}"
        elif waiting and waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_containers)}"
        initializing = True
        break

    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True"
                      for c in status.get("conditions") or [])
    if not initializing or initialized:
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += _int(cs.get("restartCount"))
            note_restart(cs)
            state = cs.get("state") or {}
            waiting, term, running = state.get("waiting"), state.get("terminated"), state.get("running")
            if waiting and waiting.get("reason"):
                reason = waiting["reason"]
            elif term and term.get("reason"):
                reason = term["reason"]
            elif term:
                sig = _int(term.get("signal"))
                reason = f"Signal:{sig}" if sig else f"ExitCode:{_int(term.get('exitCode'))}"
            elif cs.get("ready") and running is not None:
                has_running = True
                ready_count += 1
        if reason == "Completed" and has_running:
            ready_cond = any(c.get("type") == "Ready" and c.get("status") == "True"
                             for c in status.get("conditions") or [])
            reason = "Running" if ready_cond else "NotReady"

    if md.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif md.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_str = str(restarts)
    if restarts and last_restart is not None:
        restarts_str = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    return PodSummary(f"{ready_count}/{total}", reason, restarts_str)


def _readiness_gates(pod: dict) -> str:
    gates = _spec(pod).get("readinessGates") or []
    if not gates:
        return NONE
    conds = {c.get("type"): c.get("status") for c in _status(pod).get("conditions") or []}
    ok = sum(1 for g in gates if conds.get(g.get("conditionType")) == "True")
    return f"{ok}/{len(gates)}"


# --- nodes ------------------------------------------------------------------------------

def node_status(node: dict) -> str:
    """kubectl: Ready / NotReady (also for Unknown) / Unknown (no condition), `,SchedulingDisabled`."""
    parts = []
    for cond in _status(node).get("conditions") or []:
        if cond.get("type") == "Ready":
            parts.append("Ready" if cond.get("status") == "True" else "NotReady")
            break
    if not parts:
        parts.append("Unknown")
    if _spec(node).get("unschedulable"):
        parts.append("SchedulingDisabled")
    return ",".join(parts)


def node_roles(node: dict) -> str:
    roles = set()
    for k, v in (meta(node).get("labels") or {}).items():
        if k.startswith("node-role.kubernetes.io/"):
            role = k[len("node-role.kubernetes.io/"):]
            if role:
                roles.add(role)
        elif k == "kubernetes.io/role" and v:
            roles.add(v)
    return ",".join(sorted(roles)) if roles else NONE


def _node_address(node: dict, kind: str) -> str:
    for a in _status(node).get("addresses") or []:
        if a.get("type") == kind:
            return a.get("address") or NONE
    return NONE


def _node_info(node: dict, key: str) -> str:
    return (_status(node).get("nodeInfo") or {}).get(key) or "<unknown>"


def count_pods_by_node(pods: Iterable[dict]) -> dict[str, int]:
    """Non-terminated pods per node name, for `get nodes -o wide`'s PODS column."""
    out: dict[str, int] = {}
    for p in pods:
        node = _spec(p).get("nodeName")
        if node and _status(p).get("phase") not in ("Succeeded", "Failed"):
            out[node] = out.get(node, 0) + 1
    return out


# --- workloads --------------------------------------------------------------------------

def _template_containers(obj: dict) -> list[dict]:
    return ((_spec(obj).get("template") or {}).get("spec") or {}).get("containers") or []


def _containers_cell(obj: dict) -> str:
    return ",".join(c.get("name", "") for c in _template_containers(obj)) or NONE


def _images_cell(obj: dict) -> str:
    return ",".join(c.get("image", "") for c in _template_containers(obj)) or NONE


def _replicas(obj: dict) -> int:
    r = _spec(obj).get("replicas")
    return 1 if r is None else _int(r)


# --- events -----------------------------------------------------------------------------

def event_last_seen(ev: dict, now: datetime) -> str:
    """kubectl's LAST SEEN: `12s`, or `2m (x3 over 10m)` for repeated events."""
    first_ts = ev.get("firstTimestamp") or ev.get("eventTime")
    first = since(first_ts, now)
    last = since(ev["lastTimestamp"], now) if ev.get("lastTimestamp") else first
    series = ev.get("series")
    if series:
        return f"{since(series.get('lastObservedTime'), now)} (x{_int(series.get('count'))} over {first})"
    count = _int(ev.get("count"))
    if count > 1:
        return f"{last} (x{count} over {first})"
    return last


def event_object(ev: dict) -> str:
    io = ev.get("involvedObject") or {}
    return f"{(io.get('kind') or '').lower()}/{io.get('name', '')}"


def event_sort_key(ev: dict) -> str:
    return ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp") or \
        meta(ev).get("creationTimestamp") or ""


# --- column tables ----------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[dict, "RenderContext"], str]
    wide: bool = False


@dataclass(frozen=True)
class RenderContext:
    now: datetime
    pods_by_node: dict[str, int] | None = None


def _c(fn: Callable[[dict], Any]) -> Callable[[dict, RenderContext], str]:
    return lambda obj, ctx: str(fn(obj))


def _name(obj: dict, ctx: RenderContext) -> str:
    return meta(obj).get("name", "")


def _age(obj: dict, ctx: RenderContext) -> str:
    return age(obj, ctx.now)


# the -o wide columns kubectl adds to Deployments and ReplicaSets
_WORKLOAD_WIDE = (
    Column("CONTAINERS", _c(_containers_cell), wide=True),
    Column("IMAGES", _c(_images_cell), wide=True),
    Column("SELECTOR", _c(lambda o: format_selector(_spec(o).get("selector"))), wide=True),
)

COLUMNS: dict[str, tuple[Column, ...]] = {
    "Pod": (
        Column("NAME", _name),
        Column("READY", lambda o, c: pod_summary(o, c.now).ready),
        Column("STATUS", lambda o, c: pod_summary(o, c.now).status),
        Column("RESTARTS", lambda o, c: pod_summary(o, c.now).restarts),
        Column("AGE", _age),
        Column("IP", _c(lambda o: _status(o).get("podIP") or NONE), wide=True),
        Column("NODE", _c(lambda o: _spec(o).get("nodeName") or NONE), wide=True),
        Column("NOMINATED NODE", _c(lambda o: _status(o).get("nominatedNodeName") or NONE), wide=True),
        Column("READINESS GATES", _c(_readiness_gates), wide=True),
    ),
    "Deployment": (
        Column("NAME", _name),
        Column("READY", _c(lambda o: f"{_int(_status(o).get('readyReplicas'))}/{_replicas(o)}")),
        Column("UP-TO-DATE", _c(lambda o: _int(_status(o).get("updatedReplicas")))),
        Column("AVAILABLE", _c(lambda o: _int(_status(o).get("availableReplicas")))),
        Column("AGE", _age),
        *_WORKLOAD_WIDE,
    ),
    "ReplicaSet": (
        Column("NAME", _name),
        Column("DESIRED", _c(_replicas)),
        Column("CURRENT", _c(lambda o: _int(_status(o).get("replicas")))),
        Column("READY", _c(lambda o: _int(_status(o).get("readyReplicas")))),
        Column("AGE", _age),
        *_WORKLOAD_WIDE,
    ),
    "Node": (
        Column("NAME", _name),
        Column("STATUS", _c(node_status)),
        Column("ROLES", _c(node_roles)),
        Column("AGE", _age),
        Column("VERSION", _c(lambda o: _node_info(o, "kubeletVersion"))),
        Column("INTERNAL-IP", _c(lambda o: _node_address(o, "InternalIP")), wide=True),
        Column("EXTERNAL-IP", _c(lambda o: _node_address(o, "ExternalIP")), wide=True),
        Column("OS-IMAGE", _c(lambda o: _node_info(o, "osImage")), wide=True),
        Column("KERNEL-VERSION", _c(lambda o: _node_info(o, "kernelVersion")), wide=True),
        Column("CONTAINER-RUNTIME", _c(lambda o: _node_info(o, "containerRuntimeVersion")), wide=True),
        # shoal extras: what issue 5 asks `get nodes -o wide` to show
        Column("POD-CIDR", _c(lambda o: _spec(o).get("podCIDR") or NONE), wide=True),
        Column("PODS", lambda o, c: str((c.pods_by_node or {}).get(meta(o).get("name", ""), 0))
               if c.pods_by_node is not None else "<unknown>", wide=True),
    ),
    "Namespace": (
        Column("NAME", _name),
        Column("STATUS", _c(lambda o: _status(o).get("phase") or "Active")),
        Column("AGE", _age),
    ),
    "Event": (
        Column("LAST SEEN", lambda o, c: event_last_seen(o, c.now)),
        Column("TYPE", _c(lambda o: o.get("type") or "")),
        Column("REASON", _c(lambda o: o.get("reason") or "")),
        Column("OBJECT", _c(event_object)),
        Column("SUBOBJECT", _c(lambda o: (o.get("involvedObject") or {}).get("fieldPath") or ""), wide=True),
        Column("SOURCE", _c(lambda o: ", ".join(x for x in ((o.get("source") or {}).get("component"),
                                                             (o.get("source") or {}).get("host")) if x)
                            or o.get("reportingComponent") or ""), wide=True),
        Column("MESSAGE", _c(lambda o: (o.get("message") or "").strip())),
        Column("FIRST SEEN", lambda o, c: since(o.get("firstTimestamp") or o.get("eventTime"), c.now), wide=True),
        Column("COUNT", _c(lambda o: _int(o.get("count")) or 1), wide=True),
        Column("NAME", _name, wide=True),
    ),
    "Lease": (
        Column("NAME", _name),
        Column("HOLDER", _c(lambda o: _spec(o).get("holderIdentity") or "")),
        Column("AGE", _age),
    ),
}


def columns_for(kind: str, *, wide: bool) -> tuple[Column, ...]:
    cols = COLUMNS.get(kind) or (Column("NAME", _name), Column("AGE", _age))
    return tuple(c for c in cols if wide or not c.wide)


def table_lines(kind: str, objs: Iterable[dict], ctx: RenderContext, *, wide: bool = False,
                all_namespaces: bool = False, show_labels: bool = False, show_kind: bool = False,
                header: bool = True) -> list[str]:
    """Tab-separated lines (header first unless `header=False`) for a kind's table.

    `show_kind` prefixes names with `deployment.apps/` as kubectl does when
    several kinds are printed together."""
    cols = columns_for(kind, wide=wide)
    prefix = ""
    if show_kind:
        try:
            prefix = resolve(kind).kind_lower_group + "/"
        except KeyError:
            prefix = kind.lower() + "/"
    lines = []
    if header:
        hdr = [c.header for c in cols]
        if all_namespaces:
            hdr.insert(0, "NAMESPACE")
        if show_labels:
            hdr.append("LABELS")
        lines.append("\t".join(hdr))
    for obj in objs:
        cells = []
        for c in cols:
            v = c.cell(obj, ctx)
            if c.header == "NAME" and c is cols[0]:
                v = prefix + v
            cells.append(v)
        if all_namespaces:
            cells.insert(0, meta(obj).get("namespace", ""))
        if show_labels:
            cells.append(format_labels(meta(obj).get("labels")))
        lines.append("\t".join(cells))
    return lines


def render_table(kind: str, objs: Iterable[dict], now: datetime, **kw: Any) -> str:
    pods_by_node = kw.pop("pods_by_node", None)
    return TabWriter(6, 3).format(table_lines(kind, objs, RenderContext(now, pods_by_node), **kw))


# --- structured output -------------------------------------------------------------------

def for_output(obj: dict, res: Resource | None = None) -> dict:
    """The object as `-o yaml|json` prints it: kind/apiVersion present, managedFields hidden."""
    out = dict(obj)
    if res is not None:
        out.setdefault("apiVersion", res.api_version)
        out.setdefault("kind", res.kind)
        # put apiVersion and kind first, like kubectl
        out = {"apiVersion": out.pop("apiVersion"), "kind": out.pop("kind"), **out}
    md = out.get("metadata")
    if isinstance(md, dict) and "managedFields" in md:
        out["metadata"] = {k: v for k, v in md.items() if k != "managedFields"}
    return out


def as_list(items: list[dict]) -> dict:
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the last-applied annotation, scripts) as `|` blocks, as kubectl prints them."""


def _str_representer(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def render_yaml(obj: dict) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def render_json(obj: dict) -> str:
    return json.dumps(obj, indent=4, ensure_ascii=False) + "\n"


def object_ref(obj: dict, res: Resource) -> str:
    """`deployment.apps/web` — the form `-o name` and apply print."""
    return f"{res.kind_lower_group}/{meta(obj).get('name', '')}"
