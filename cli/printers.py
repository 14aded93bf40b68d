"""Pure formatting of API objects the way kubectl prints them.

Everything here is a function of (objects, now): no I/O, no client. The
commands in `cli.commands` fetch objects and hand them to `render_table`,
`render_yaml`, `render_json` or `render_names`.

Design notes:
- The columns and cells are the API server's: `shoal.machinery.api.printing` holds
  kubectl's column table per kind (Kubernetes' names, priority-1 `-o wide` columns, the
  cell rules of pkg/printers: pod STATUS and RESTARTS, node STATUS and ROLES, selectors),
  and the server answers kubectl's Table requests from the same table. Here they are
  only laid out: headers upper-cased as kubectl does, cells as strings.
- shoal's CLI adds to them: `get events` reads LAST SEEN as `kubectl events` does
  (`2m (x3 over 10m)`), and `get nodes -o wide` shows POD-CIDR and PODS.
- Alignment is Go's tabwriter (`cli.tabwriter`), so output matches kubectl
  column for column.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable

import yaml

from shoal.machinery.api import printing
from shoal.machinery.api.objects import meta
from shoal.machinery.api.printing import (NONE, PodSummary, age, event_object, human_duration,  # noqa: F401
                                          node_roles, node_status, pod_summary, since)
from shoal.machinery.api.resources import Resource, resolve
from shoal.machinery.api.selectors import format_label_selector as format_selector

from shoal.cli.tabwriter import TabWriter

__all__ = ["NONE", "PodSummary", "age", "event_object", "human_duration", "node_roles", "node_status",
           "pod_summary", "since", "format_selector", "format_labels", "event_last_seen", "event_sort_key",
           "count_pods_by_node", "Column", "RenderContext", "COLUMNS", "columns_for", "table_lines",
           "render_table", "for_output", "as_list", "render_yaml", "render_json", "object_ref"]


def format_labels(labels: dict | None) -> str:
    if not labels:
        return NONE
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def count_pods_by_node(pods: Iterable[dict]) -> dict[str, int]:
    """Non-terminated pods per node name, for `get nodes -o wide`'s PODS column."""
    out: dict[str, int] = {}
    for p in pods:
        node = (p.get("spec") or {}).get("nodeName")
        if node and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            out[node] = out.get(node, 0) + 1
    return out


# --- events -----------------------------------------------------------------------------

def event_last_seen(ev: dict, now: datetime) -> str:
    """`kubectl events`' LAST SEEN: `12s`, or `2m (x3 over 10m)` for repeated events."""
    first = printing.event_first_seen(ev, now)
    last = since(ev["lastTimestamp"], now) if ev.get("lastTimestamp") else first
    series = ev.get("series")
    if series:
        return f"{since(series.get('lastObservedTime'), now)} (x{_int(series.get('count'))} over {first})"
    count = _int(ev.get("count"))
    if count > 1:
        return f"{last} (x{count} over {first})"
    return last


def event_sort_key(ev: dict) -> str:
    return ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp") or \
        meta(ev).get("creationTimestamp") or ""


# --- column tables ----------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[dict, "RenderContext"], str]
    wide: bool = False
    is_name: bool = False       # the column `--show-kind` prefixes (format "name")


@dataclass(frozen=True)
class RenderContext:
    now: datetime
    pods_by_node: dict[str, int] | None = None


def _from_server(col: printing.Column) -> Column:
    fn = col.cell
    return Column(col.name.upper(), lambda obj, ctx: str(fn(obj, ctx.now)), wide=col.priority > 0,
                  is_name=col.format == "name")


def _pods_cell(obj: dict, ctx: RenderContext) -> str:
    if ctx.pods_by_node is None:
        return "<unknown>"
    return str(ctx.pods_by_node.get(meta(obj).get("name", ""), 0))


# shoal's own columns over the server's: (kind, header) -> replacement cell, and added columns
_CLI_CELLS: dict[tuple[str, str], Callable[[dict, RenderContext], str]] = {
    ("Event", "LAST SEEN"): lambda o, c: event_last_seen(o, c.now),
}
_CLI_EXTRA: dict[str, tuple[Column, ...]] = {
    # what issue 5 asks `get nodes -o wide` to show
    "Node": (Column("POD-CIDR", lambda o, c: (o.get("spec") or {}).get("podCIDR") or NONE, wide=True),
             Column("PODS", _pods_cell, wide=True)),
}


def _cli_columns(kind: str) -> tuple[Column, ...]:
    cols = []
    for sc in printing.columns(kind):
        c = _from_server(sc)
        override = _CLI_CELLS.get((kind, c.header))
        if override is not None:
            c = Column(c.header, override, c.wide, c.is_name)
        cols.append(c)
    return (*cols, *_CLI_EXTRA.get(kind, ()))


COLUMNS: dict[str, tuple[Column, ...]] = {kind: _cli_columns(kind) for kind in printing.COLUMNS}


def columns_for(kind: str, *, wide: bool) -> tuple[Column, ...]:
    cols = COLUMNS.get(kind) or _cli_columns(kind)
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
            if c.is_name:
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
