"""Load manifests from files, directories or stdin into positioned documents.

Contract: `load(paths, stdin=...)` returns a `Loaded` with the documents in
file order (`Document(source, index, line, obj)`, index 1-based among the
non-empty documents of a source, line 1-based where the document starts) and
the errors found (`ManifestError` naming source, document, line and column).
A broken document never hides the valid ones around it: each document is
parsed on its own, so `apply` can apply the others and still exit 1.

Design notes: a YAML stream is split on document markers (`---` / `...` at
column 0) before parsing; PyYAML's `safe_load_all` would stop at the first
syntax error and lose the documents after it, and its line numbers would
not name the document. Each chunk keeps its line offset so errors point at
the line in the file. `.json` files (and stdin starting with `{` or `[`) are
parsed as JSON, one object per file. `kind: List` documents are expanded
into their items (kubectl does the same). `check_document` is the local
validation apply runs before talking to the server.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

from shoal.machinery.api.resources import UnknownResource, resolve

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_MARKER = re.compile(r"^(---|\.\.\.)(\s.*)?$")


@dataclass(frozen=True)
class Document:
    source: str  # file path, or "-" / "<stdin>"
    index: int  # 1-based among the source's non-empty documents
    line: int  # 1-based line where the document starts
    obj: dict

    @property
    def label(self) -> str:
        """`Deployment/web` (or what is known of it) for messages."""
        md = self.obj.get("metadata") if isinstance(self.obj.get("metadata"), dict) else {}
        return f"{self.obj.get('kind') or '?'}/{md.get('name') or '?'}"

    def where(self) -> str:
        return f"{self.source}: document {self.index} ({self.label})"


@dataclass(frozen=True)
class ManifestError:
    source: str
    index: int | None
    message: str
    line: int | None = None
    column: int | None = None
    label: str | None = None

    def __str__(self) -> str:
        parts = [self.source]
        if self.index is not None:
            parts.append(f"document {self.index}" + (f" ({self.label})" if self.label else ""))
        loc = ""
        if self.line is not None:
            loc = f"line {self.line}" + (f", column {self.column}" if self.column is not None else "") + ": "
        return ": ".join(parts) + ": " + loc + self.message


@dataclass
class Loaded:
    documents: list[Document] = field(default_factory=list)
    errors: list[ManifestError] = field(default_factory=list)


def _split_yaml(text: str) -> list[tuple[int, str]]:
    """Split a YAML stream into (first line number, chunk) pairs, 1-based."""
    chunks: list[tuple[int, str]] = []
    start, buf = 1, []
    for i, line in enumerate(text.splitlines(keepends=True), start=1):
        if _MARKER.match(line.rstrip("\r\n")):
            chunks.append((start, "".join(buf)))
            rest = line[3:].strip()
            # `--- {...}` / `--- !tag` carries content on the marker line itself
            start, buf = (i, [rest + "\n"]) if rest and line.startswith("---") else (i + 1, [])
            continue
        buf.append(line)
    chunks.append((start, "".join(buf)))
    return chunks


def _is_blank(chunk: str) -> bool:
    return all(not ln.strip() or ln.lstrip().startswith("#") for ln in chunk.splitlines())


def _expand(source: str, index: int, line: int, obj, out: Loaded) -> None:
    if obj is None:
        return
    if not isinstance(obj, dict):
        out.errors.append(ManifestError(source, index, f"expected a mapping (an object with apiVersion, kind "
                                        f"and metadata), got {type(obj).__name__}", line))
        return
    if obj.get("kind") == "List" and isinstance(obj.get("items"), list):
        for item in obj["items"]:
            _expand(source, index, line, item, out)
        return
    out.documents.append(Document(source, index, line, obj))


def parse_text(text: str, source: str, *, as_json: bool | None = None) -> Loaded:
    """Parse one source's text into documents and errors."""
    out = Loaded()
    if as_json is None:
        as_json = source.endswith(".json") or (source in ("-", "<stdin>") and text.lstrip()[:1] in ("{", "["))
    if as_json:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            out.errors.append(ManifestError(source, 1, f"invalid JSON: {e.msg}", e.lineno, e.colno))
            return out
        if isinstance(obj, list):  # a bare JSON array of objects
            for o in obj:
                _expand(source, 1, 1, o, out)
        else:
            _expand(source, 1, 1, obj, out)
        return out
    index = 0
    for start, chunk in _split_yaml(text):
        if _is_blank(chunk):
            continue
        index += 1
        try:
            obj = yaml.safe_load(chunk)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = start + mark.line if mark else start
            col = mark.column + 1 if mark else None
            msg = e.problem or str(e)
            if e.context and e.problem:
                msg = f"{e.problem} ({e.context})"
            out.errors.append(ManifestError(source, index, f"invalid YAML: {msg}", line, col))
            continue
        except yaml.YAMLError as e:
            out.errors.append(ManifestError(source, index, f"invalid YAML: {e}", start))
            continue
        _expand(source, index, start, obj, out)
    return out


def _files_in(path: Path, recursive: bool) -> list[Path]:
    it = path.rglob("*") if recursive else path.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix in MANIFEST_SUFFIXES)


def load(paths: list[str], *, stdin: IO[str] | None = None, recursive: bool = False) -> Loaded:
    """Load every FILE, DIR (its .yaml/.yml/.json files) or `-` (stdin) in order."""
    out = Loaded()
    for p in paths:
        if p == "-":
            if stdin is None:
                out.errors.append(ManifestError("-", None, "no standard input to read"))
                continue
            got = parse_text(stdin.read(), "<stdin>")
        else:
            path = Path(p)
            if path.is_dir():
                files = _files_in(path, recursive)
                if not files:
                    out.errors.append(ManifestError(p, None, "no .yaml, .yml or .json files in this directory"))
                for f in files:
                    sub = load([str(f)])
                    out.documents += sub.documents
                    out.errors += sub.errors
                continue
            try:
                text = path.read_text()
            except FileNotFoundError:
                out.errors.append(ManifestError(p, None, "no such file or directory"))
                continue
            except (OSError, UnicodeDecodeError) as e:
                out.errors.append(ManifestError(p, None, f"cannot read: {e}"))
                continue
            got = parse_text(text, p)
        out.documents += got.documents
        out.errors += got.errors
    return out


def check_document(doc: Document) -> list[str]:
    """Local validation before anything is sent: apiVersion, kind, metadata.name, a known kind
    served at that apiVersion. Returns problems as `field: message` strings."""
    obj = doc.obj
    problems = []
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    md = obj.get("metadata")
    if not api_version or not isinstance(api_version, str):
        problems.append("apiVersion: Required value")
    if not kind or not isinstance(kind, str):
        problems.append("kind: Required value")
    if not isinstance(md, dict):
        problems.append("metadata: Required value" if md is None else "metadata: must be a mapping")
    elif not md.get("name") or not isinstance(md.get("name"), str):
        problems.append("metadata.name: Required value" + (
            " (generateName is not supported by apply)" if md.get("generateName") else ""))
    if isinstance(kind, str) and kind:
        try:
            res = resolve(kind)
        except UnknownResource:
            problems.append(f'kind: Unsupported value: "{kind}": no such kind is served by shoal')
        else:
            if res.kind != kind:
                problems.append(f'kind: Invalid value: "{kind}": kinds are spelled "{res.kind}"')
            elif isinstance(api_version, str) and api_version and api_version != res.api_version:
                problems.append(f'apiVersion: Invalid value: "{api_version}": no matches for kind "{kind}" '
                                f'in version "{api_version}" (use "{res.api_version}")')
    return problems
