"""Label and field selectors, with Kubernetes' syntax and semantics.

Label selectors (`?labelSelector=`, `spec.selector`):
- `parse_selector("app=web,tier!=db,env in (prod,staging),!canary")` parses the
  string form: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`,
  and `k>n` / `k<n` (integer comparisons, as Kubernetes allows).
- `selector_from_label_selector({"matchLabels": ..., "matchExpressions": ...})`
  converts the structured form (operators In, NotIn, Exists, DoesNotExist).
  As in Kubernetes, `{}` selects everything and `None` selects nothing; an
  unknown operator is a ValueError. `format_label_selector` renders it as
  kubectl prints it (metav1.FormatLabelSelector).
- `Selector.matches(labels)`; `str(selector)` is the canonical string (sorted
  by key, `==` written `=`, `in` values sorted) so it can be stored in
  `Scale.status.selector` and compared.
- `!=` and `notin` match objects that lack the key, as in Kubernetes.

Field selectors (`?fieldSelector=`):
- `parse_field_selector("spec.nodeName=n1,status.phase!=Failed")` returns
  `[(path, op, value)]` with op normalised to `=` or `!=`; `\\,`, `\\=` and
  `\\\\` escape those characters in values.
- `field_value(obj, "spec.nodeName")` reads a dotted path from a wire dict and
  renders it as a string (booleans `true`/`false`); a missing field is None,
  which `field_matches` compares as "" (so `spec.nodeName=` finds unscheduled
  pods, as in Kubernetes).
- `FIELD_LABELS` lists the paths each kind supports; `check_field_selector`
  rejects others with Kubernetes' `field label not supported: ...`.

Every parse error is a ValueError naming the fragment it could not read.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping

from shoal.machinery.api.names import is_label_value, is_qualified_name

IN, NOT_IN, EXISTS, DOES_NOT_EXIST, EQUALS, NOT_EQUALS, GT, LT = (
    "in", "notin", "exists", "!", "=", "!=", "gt", "lt")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # one of the constants above
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        if self.operator in (IN, EQUALS):
            return has and labels[self.key] in self.values
        if self.operator in (NOT_IN, NOT_EQUALS):
            return not has or labels[self.key] not in self.values
        if self.operator == EXISTS:
            return has
        if self.operator == DOES_NOT_EXIST:
            return not has
        if self.operator in (GT, LT):
            if not has:
                return False
            try:
                have, want = int(labels[self.key]), int(self.values[0])
            except ValueError:
                return False
            return have > want if self.operator == GT else have < want
        raise AssertionError(f"unknown operator {self.operator!r}")

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return f"!{self.key}"
        if self.operator in (EQUALS, NOT_EQUALS):
            return f"{self.key}{self.operator}{self.values[0]}"
        if self.operator == GT:
            return f"{self.key}>{self.values[0]}"
        if self.operator == LT:
            return f"{self.key}<{self.values[0]}"
        return f"{self.key} {self.operator} ({','.join(self.values)})"


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False  # the nil selector: matches no object

    @property
    def empty(self) -> bool:
        """True when the selector has no requirements and so matches every object."""
        return not self.requirements and not self.nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def everything() -> Selector:
    return Selector()


def nothing() -> Selector:
    return Selector(nothing=True)


def _check_key(key: str, fragment: str) -> None:
    errs = is_qualified_name(key)
    if errs:
        raise ValueError(f"invalid label key {key!r} in selector fragment {fragment!r}: {'; '.join(errs)}")


def _check_value(value: str, fragment: str) -> None:
    errs = is_label_value(value)
    if errs:
        raise ValueError(f"invalid label value {value!r} in selector fragment {fragment!r}: {'; '.join(errs)}")


def _make(key: str, op: str, values: Iterable[str], fragment: str) -> Requirement:
    _check_key(key, fragment)
    vals = tuple(sorted(set(values)))
    if op in (IN, NOT_IN) and not vals:
        raise ValueError(f"selector fragment {fragment!r}: for 'in', 'notin' operators, values set can't be empty")
    if op in (GT, LT):
        if len(vals) != 1:
            raise ValueError(f"selector fragment {fragment!r}: for 'Gt', 'Lt' operators, exactly one value is required")
        try:
            int(vals[0])
        except ValueError:
            raise ValueError(f"selector fragment {fragment!r}: for 'Gt', 'Lt' operators, the value must be an "
                             f"integer") from None
    else:
        for v in vals:
            _check_value(v, fragment)
    return Requirement(key, op, vals)


def _split_top_level(s: str) -> list[str]:
    """Split on commas that are not inside `( )`."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in selector {s!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise ValueError(f"unclosed '(' in selector {s!r}")
    parts.append("".join(cur))
    return parts


def _parse_requirement(fragment: str) -> Requirement:
    text = fragment.strip()
    if not text:
        raise ValueError("empty requirement in selector (a stray ',')")
    if text.startswith("!"):
        key = text[1:].strip()
        if not key or any(c in key for c in "=!<>() "):
            raise ValueError(f"selector fragment {fragment!r}: expected '!<key>'")
        return _make(key, DOES_NOT_EXIST, (), fragment)
    # set-based: "key in (a,b)" / "key notin (a)"
    words = text.split(None, 1)
    if len(words) == 2:
        key, rest = words
        rest = rest.strip()
        for op in (NOT_IN, IN):
            if rest.startswith(op) and rest[len(op):].lstrip().startswith("("):
                body = rest[len(op):].strip()
                if not body.endswith(")"):
                    raise ValueError(f"selector fragment {fragment!r}: expected ')' to close the value set")
                values = [v.strip() for v in body[1:-1].split(",")]
                if values == [""]:
                    values = []
                return _make(key, op, values, fragment)
    for token, op in (("!=", NOT_EQUALS), ("==", EQUALS), ("=", EQUALS), (">", GT), ("<", LT)):
        idx = text.find(token)
        if idx >= 0:
            key, value = text[:idx].strip(), text[idx + len(token):].strip()
            if not key:
                raise ValueError(f"selector fragment {fragment!r}: missing the label key before {token!r}")
            if any(c in value for c in "=!<>()"):
                raise ValueError(f"selector fragment {fragment!r}: unexpected operator characters in value {value!r}")
            return _make(key, op, (value,), fragment)
    if any(c in text for c in " ()"):
        raise ValueError(f"selector fragment {fragment!r}: expected one of '=', '==', '!=', 'in', 'notin', "
                         f"'<key>' or '!<key>'")
    return _make(text, EXISTS, (), fragment)


def parse_selector(s: str | None) -> Selector:
    """Parse a label selector string; "" (or None) selects everything."""
    if s is None or not s.strip():
        return everything()
    reqs = [_parse_requirement(part) for part in _split_top_level(s)]
    return Selector(tuple(sorted(reqs, key=lambda r: (r.key, r.operator, r.values))))


_EXPR_OPS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


_LabelSelectorKey = tuple[tuple[tuple[Any, Any], ...], tuple[tuple[Any, Any, tuple[Any, ...]], ...]]


def selector_from_label_selector(ls: Mapping[str, Any] | None) -> Selector:
    """Convert a structured LabelSelector (wire dict) into a Selector.

    Controllers match every pod event against the selectors of a namespace's ReplicaSets and
    Deployments, so conversions are cached by the selector's content (a Selector is immutable);
    an invalid selector raises every time."""
    if ls is None:
        return nothing()
    try:
        exprs = ls.get("matchExpressions") or ()
        key: _LabelSelectorKey = (tuple((ls.get("matchLabels") or {}).items()),
                                  tuple((e.get("key"), e.get("operator"), tuple(e.get("values") or ())) for e in exprs))
        hash(key)
    except (AttributeError, TypeError):     # not the shape of a LabelSelector: let the conversion say what is wrong
        return _convert_label_selector(ls)
    return _converted(key)


@lru_cache(maxsize=1024)
def _converted(key: _LabelSelectorKey) -> Selector:
    match_labels, exprs = key
    return _convert_label_selector({"matchLabels": dict(match_labels),
                                    "matchExpressions": [{"key": k, "operator": op, "values": list(values)}
                                                         for k, op, values in exprs]})


def _convert_label_selector(ls: Mapping[str, Any]) -> Selector:
    reqs: list[Requirement] = []
    for k, v in (ls.get("matchLabels") or {}).items():
        reqs.append(_make(k, EQUALS, (v,), f"matchLabels {k}: {v}"))
    for i, expr in enumerate(ls.get("matchExpressions") or []):
        where = f"matchExpressions[{i}]"
        op = _EXPR_OPS.get(expr.get("operator"))
        if op is None:
            raise ValueError(f"{where}: {expr.get('operator')!r} is not a valid label selector operator "
                             f"(use In, NotIn, Exists or DoesNotExist)")
        values = expr.get("values") or []
        if op in (EXISTS, DOES_NOT_EXIST) and values:
            raise ValueError(f"{where}: values set must be empty for exists and does not exist")
        reqs.append(_make(expr.get("key") or "", op, values, where))
    return Selector(tuple(sorted(reqs, key=lambda r: (r.key, r.operator, r.values))))


def format_label_selector(ls: Mapping[str, Any] | None) -> str:
    """metav1.FormatLabelSelector: the canonical string (`app=web,tier in (a,b),!legacy`), `<none>`
    for a selector that selects nothing or everything, `<error>` for an invalid one."""
    try:
        text = str(selector_from_label_selector(ls))
    except ValueError:
        return "<error>"
    return text or "<none>"


# --- field selectors --------------------------------------------------------------

FieldRequirement = tuple[str, str, str]

_COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
FIELD_LABELS: dict[str, frozenset[str]] = {
    "Pod": _COMMON_FIELDS | {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "status.phase",
                             "status.podIP", "status.nominatedNodeName"},
    "Node": _COMMON_FIELDS | {"spec.unschedulable"},
    "Event": _COMMON_FIELDS | {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                               "involvedObject.uid", "involvedObject.apiVersion",
                               "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                               "reportingComponent", "source", "type"},
    "Namespace": _COMMON_FIELDS | {"status.phase"},
    "Deployment": _COMMON_FIELDS,
    "ReplicaSet": _COMMON_FIELDS | {"status.replicas"},
    "Lease": _COMMON_FIELDS,
}


def _split_escaped(s: str, sep: str) -> list[str]:
    out, cur, i = [], [], 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            cur.append(s[i:i + 2])
            i += 2
            continue
        if ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def _unescape(s: str, fragment: str) -> str:
    out, i = [], 0
    while i < len(s):
        ch = s[i]
        if ch == "\\":
            if i + 1 >= len(s) or s[i + 1] not in "\\,=!":
                raise ValueError(f"invalid escape sequence in field selector fragment {fragment!r}")
            out.append(s[i + 1])
            i += 2
            continue
        if ch in ",=":
            raise ValueError(f"field selector fragment {fragment!r}: unescaped {ch!r} in value")
        out.append(ch)
        i += 1
    return "".join(out)


def parse_field_selector(s: str | None) -> list[FieldRequirement]:
    """`"metadata.name=web,status.phase!=Failed"` -> `[("metadata.name", "=", "web"), ...]`."""
    if s is None or not s.strip():
        return []
    reqs: list[FieldRequirement] = []
    for fragment in _split_escaped(s, ","):
        if not fragment.strip():
            raise ValueError(f"empty requirement in field selector {s!r} (a stray ',')")
        for token, op in (("!=", "!="), ("==", "="), ("=", "=")):
            idx = _find_unescaped(fragment, token)
            if idx >= 0:
                path = fragment[:idx].strip()
                if not path or any(c in path for c in " \\!=,"):
                    raise ValueError(f"field selector fragment {fragment!r}: invalid field path {path!r}")
                reqs.append((path, op, _unescape(fragment[idx + len(token):], fragment)))
                break
        else:
            raise ValueError(f"field selector fragment {fragment!r}: expected <field>=<value>, "
                             f"<field>==<value> or <field>!=<value>")
    return reqs


def _find_unescaped(s: str, token: str) -> int:
    i = 0
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        if s.startswith(token, i):
            return i
        i += 1
    return -1


def check_field_selector(kind: str, reqs: Iterable[FieldRequirement]) -> None:
    """Raise ValueError for a field path the kind does not support."""
    allowed = FIELD_LABELS.get(kind, _COMMON_FIELDS)
    for path, _, _ in reqs:
        if path not in allowed:
            raise ValueError(f'field label not supported: {path} (supported for {kind}: '
                             f'{", ".join(sorted(allowed))})')


def field_value(obj: Mapping[str, Any], path: str) -> str | None:
    """The string value at a dotted path of a wire dict, or None when absent."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    if cur is None:
        return None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, (dict, list)):
        return None
    return str(cur)


def field_matches(obj: Mapping[str, Any], reqs: Iterable[FieldRequirement]) -> bool:
    for path, op, want in reqs:
        have = field_value(obj, path)
        have = "" if have is None else have
        if (have == want) != (op == "="):
            return False
    return True
