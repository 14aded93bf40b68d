"""Generate `apiserver/protobuf_schema.py`: the protobuf field table of every kind shoal serves.

    python scripts/gen_protobuf_schema.py --api ~/src/kubernetes-api --apimachinery ~/src/apimachinery \
        > apiserver/protobuf_schema.py

`--api` and `--apimachinery` are source trees of the Go modules k8s.io/api and
k8s.io/apimachinery (any release: field numbers are never reused, so a newer tree only
adds fields). Two inputs per message:

- `generated.proto`: field numbers, proto types, `repeated` and `map<string, V>`;
- the Go struct the message was generated from (`types.go`): whether the field is a
  pointer, whether its json tag says `omitempty`, and whether it is embedded (inlined
  into its parent in JSON, e.g. `Volume.volumeSource`, `Probe.handler`).

The output holds names, numbers and type names only — the API's wire facts — for the
messages reachable from ROOTS. `apiserver/protobuf.py` reads it; docs/api.md says why the
decoder is table-driven.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

# (Go module tree, package dir) per proto package we read.
PACKAGES = {
    "k8s.io.api.core.v1": ("api", "core/v1"),
    "k8s.io.api.apps.v1": ("api", "apps/v1"),
    "k8s.io.api.coordination.v1": ("api", "coordination/v1"),
    "k8s.io.api.discovery.v1": ("api", "discovery/v1"),
    "k8s.io.api.autoscaling.v1": ("api", "autoscaling/v1"),
    "k8s.io.apimachinery.pkg.apis.meta.v1": ("apimachinery", "pkg/apis/meta/v1"),
}
# Types whose JSON form is not their protobuf structure (custom marshallers in Go); the
# decoder converts them by name.
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": "Duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "FieldsV1",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "RawExtension",
}
SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float"}
ROOTS = [
    "k8s.io.api.core.v1.Namespace", "k8s.io.api.core.v1.Pod", "k8s.io.api.core.v1.Node",
    "k8s.io.api.core.v1.Event", "k8s.io.api.core.v1.ConfigMap", "k8s.io.api.core.v1.Secret",
    "k8s.io.api.core.v1.Binding", "k8s.io.api.core.v1.Service", "k8s.io.api.core.v1.Endpoints",
    "k8s.io.api.discovery.v1.EndpointSlice", "k8s.io.api.apps.v1.Deployment", "k8s.io.api.apps.v1.ReplicaSet",
    "k8s.io.api.coordination.v1.Lease", "k8s.io.api.autoscaling.v1.Scale",
    "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
]

_FIELD = re.compile(r"^\s*(optional|repeated)?\s*(map<\s*(\S+?)\s*,\s*(\S+?)\s*>|\S+)\s+(\w+)\s*=\s*(\d+)\s*;")
_GO_FIELD = re.compile(r"^\s*(?:(\w+)\s+)?(\S+)\s+`([^`]*)`")
_TAG = re.compile(r'(\w+):"([^"]*)"')


def short(name: str) -> str:
    """`k8s.io.api.core.v1.Pod` → `core.v1.Pod`; `…pkg.apis.meta.v1.X` → `meta.v1.X`."""
    return SPECIAL.get(name) or name.replace("k8s.io.api.", "").replace("k8s.io.apimachinery.pkg.apis.", "")


def parse_proto(text: str, package: str) -> dict[str, list[tuple]]:
    """message name → [(label, type, map value type, proto name, number)], types fully qualified."""
    out: dict[str, list[tuple]] = {}
    current = None
    for line in text.splitlines():
        line = line.split("//", 1)[0]
        m = re.match(r"^\s*message\s+(\w+)\s*\{", line)
        if m:
            current = f"{package}.{m.group(1)}"
            out[current] = []
            continue
        if current and re.match(r"^\s*\}", line):
            current = None
            continue
        m = _FIELD.match(line)
        if current and m:
            label, typ, key, value, name, num = m.groups()
            if key is not None:
                if key != "string":
                    raise SystemExit(f"{current}.{name}: map key {key} is not a string")
                out[current].append(("map", qualify(value, package), None, name, int(num)))
            else:
                out[current].append((label or "optional", qualify(typ, package), None, name, int(num)))
    return out


def qualify(typ: str, package: str) -> str:
    if typ in SCALARS:
        return typ
    return typ[1:] if typ.startswith(".") else f"{package}.{typ}"


def parse_go(text: str) -> dict[str, dict[int, dict]]:
    """struct name → protobuf number → {json, pointer, omitempty, inline}."""
    out: dict[str, dict[int, dict]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^type\s+(\w+)\s+struct\s*\{", line)
        if m:
            current = m.group(1)
            out[current] = {}
            continue
        if current and line.startswith("}"):
            current = None
            continue
        if not current:
            continue
        m = _GO_FIELD.match(line)
        if not m:
            continue
        field_name, gotype, tags = m.groups()
        tag = dict(_TAG.findall(tags))
        if "," not in tag.get("protobuf", ""):      # none, or `protobuf:"-"`
            continue
        number = int(tag["protobuf"].split(",")[1])
        json_parts = tag.get("json", "").split(",")
        out[current][number] = {
            "json": json_parts[0], "pointer": gotype.startswith("*"),
            "omitempty": "omitempty" in json_parts[1:],
            # an embedded struct without a JSON name (`json:""`, `json:",inline"`) is inlined
            "inline": (field_name is None and not json_parts[0]) or "inline" in json_parts[1:],
        }
    return out


def read_tree(root: Path, pkg_dir: str) -> tuple[str, str]:
    d = root / pkg_dir
    proto = (d / "generated.proto").read_text()
    go = "\n".join(p.read_text() for p in sorted(d.glob("*.go"))
                   if not p.name.endswith("_test.go") and not p.name.startswith(("zz_", "generated")))
    return proto, go


def build(trees: dict[str, Path]) -> dict[str, dict[int, tuple[str, str, str]]]:
    protos: dict[str, list[tuple]] = {}
    gos: dict[str, dict[str, dict[int, dict]]] = {}
    for package, (module, pkg_dir) in PACKAGES.items():
        proto, go = read_tree(trees[module], pkg_dir)
        protos.update(parse_proto(proto, package))
        gos[package] = parse_go(go)
    table: dict[str, dict[int, tuple[str, str, str]]] = {}
    todo = list(ROOTS)
    while todo:
        msg = todo.pop()
        if short(msg) in table:
            continue
        package, _, struct = msg.rpartition(".")
        go = gos[package].get(struct)
        if go is None:
            raise SystemExit(f"no Go struct {struct} in {package}")
        fields: dict[int, tuple[str, str, str]] = {}
        for label, typ, _, name, num in protos[msg]:
            info = go.get(num)
            if info is None:
                raise SystemExit(f"{msg}.{name} ({num}): no Go field carries this protobuf number")
            json_name = "" if info["inline"] else info["json"]
            if not info["inline"] and json_name != name:
                print(f"note: {msg}.{name}: JSON name {json_name!r}", file=sys.stderr)
            flags = ("r" if label == "repeated" else "") + ("m" if label == "map" else "")
            if info["pointer"] or not info["omitempty"]:
                flags += "k"
            if info["inline"]:
                flags += "i"
            if typ in SCALARS:
                fields[num] = (json_name, typ, flags)
            else:
                fields[num] = (json_name, short(typ), flags)
                if typ not in SPECIAL:
                    if typ not in protos:
                        raise SystemExit(f"{msg}.{name}: type {typ} is in no package read (add it to PACKAGES)")
                    todo.append(typ)
        table[short(msg)] = fields
    return table


def render(table: dict, sources: list[str]) -> str:
    lines = [
        '"""Protobuf field table of the kinds shoal serves. GENERATED by scripts/gen_protobuf_schema.py',
        "from " + "; ".join(sources) + ". Do not edit: regenerate.",
        "",
        "MESSAGES[message][field number] = (JSON name, type, flags):",
        "- type: a proto scalar (string, bytes, bool, int32, int64, ...), another message of this table,",
        "  or a type whose JSON is not its protobuf structure (Time, MicroTime, Duration, Quantity,",
        "  IntOrString, FieldsV1, RawExtension), converted by `apiserver.protobuf`;",
        "- flags: r repeated, m map<string, type>, k keep a zero value (a Go pointer, or a JSON tag",
        "  without omitempty: JSON would carry the zero), i inline (the JSON name is empty: the",
        "  message's fields are the parent's, as with Go's embedded structs).",
        '"""',
        "# flake8: noqa",
        "MESSAGES: dict[str, dict[int, tuple[str, str, str]]] = {",
    ]
    for msg in sorted(table):
        lines.append(f"    {msg!r}: {{")
        for num in sorted(table[msg]):
            lines.append(f"        {num}: {table[msg][num]!r},")
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _describe(tree: Path) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = ""
    return rev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--api", type=Path, required=True, help="a source tree of k8s.io/api")
    ap.add_argument("--apimachinery", type=Path, required=True, help="a source tree of k8s.io/apimachinery")
    ap.add_argument("--api-rev", default="", help="the k8s.io/api revision, for the header")
    ap.add_argument("--apimachinery-rev", default="", help="the k8s.io/apimachinery revision, for the header")
    a = ap.parse_args()
    table = build({"api": a.api, "apimachinery": a.apimachinery})
    sources = [f"k8s.io/api {a.api_rev or _describe(a.api) or '(unknown revision)'}",
               f"k8s.io/apimachinery {a.apimachinery_rev or _describe(a.apimachinery) or '(unknown revision)'}"]
    sys.stdout.write(render(table, sources))


if __name__ == "__main__":
    main()
