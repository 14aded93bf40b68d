"""Label selectors over wire dicts: `matchLabels` + `matchExpressions` (In, NotIn, Exists,
DoesNotExist), as `metav1.LabelSelector` defines them.

Uses `apiserver.selectors` when it provides `selector_from_label_selector`; this module keeps
a small local implementation so the controllers do not depend on that module's schedule.
An empty selector matches everything (as Kubernetes' LabelSelectorAsSelector); a missing
(None) selector matches nothing.
"""
from __future__ import annotations


def matches(selector: dict | None, labels: dict[str, str] | None) -> bool:
    if selector is None:
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            if key not in labels or labels[key] not in values:
                return False
        elif op == "NotIn":
            if key in labels and labels[key] in values:
                return False
        elif op == "Exists":
            if key not in labels:
                return False
        elif op == "DoesNotExist":
            if key in labels:
                return False
        else:
            raise ValueError(f"label selector operator {op!r} for key {key!r} is not one of "
                             f"In, NotIn, Exists, DoesNotExist")
    return True


def is_empty(selector: dict | None) -> bool:
    return not selector or (not selector.get("matchLabels") and not selector.get("matchExpressions"))


def to_string(selector: dict | None) -> str:
    """Render as the `labelSelector` query string (`app=web,tier in (a,b),!x`)."""
    parts = [f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for e in (selector or {}).get("matchExpressions") or []:
        op, key, vals = e.get("operator"), e.get("key"), ",".join(e.get("values") or [])
        parts.append({"In": f"{key} in ({vals})", "NotIn": f"{key} notin ({vals})", "Exists": key,
                      "DoesNotExist": f"!{key}"}[op])
    return ",".join(parts)
