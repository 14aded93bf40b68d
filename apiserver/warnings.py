"""Warnings for the client: Kubernetes' `Warning: 299 - "<text>"` response headers.

Anything on a request's path (admission, validation with `fieldValidation=Warn`) calls
`warn(text)`; the request's texts go out as headers of its answer (kubectl prints each as
`Warning: <text>` on stderr). The list lives in a context variable that the app sets per
request (`collecting()`), so it follows the request into worker threads (anyio copies the
context) and never mixes requests. Outside a request, `warn` does nothing.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_CURRENT: ContextVar[list[str] | None] = ContextVar("shoal_warnings", default=None)
_FIELD_VALIDATION: ContextVar[str] = ContextVar("shoal_field_validation", default="Strict")
FIELD_VALIDATIONS = ("Strict", "Warn", "Ignore")
MAX_WARNINGS = 32            # Kubernetes caps them too (4 KiB of text per request)


def warn(text: str) -> None:
    texts = _CURRENT.get()
    if texts is not None and text not in texts and len(texts) < MAX_WARNINGS:
        texts.append(text)


@contextmanager
def collecting(field_validation: str = "Strict") -> Iterator[list[str]]:
    """One request's warnings; `field_validation` is its `fieldValidation` parameter."""
    texts: list[str] = []
    token = _CURRENT.set(texts)
    token2 = _FIELD_VALIDATION.set(field_validation)
    try:
        yield texts
    finally:
        _CURRENT.reset(token)
        _FIELD_VALIDATION.reset(token2)


def field_validation() -> str:
    """How the request being served wants unknown fields treated, as the model layer takes
    it: "Strict" refuses them (400); "Warn" drops them with a warning each. "Ignore" is
    answered as "Warn": shoal never drops a field without telling (docs/api.md)."""
    v = _FIELD_VALIDATION.get()
    return "Warn" if v in ("Warn", "Ignore") else "Strict"


def header_values(texts: list[str]) -> list[str]:
    """RFC 7234 warn-values with code 299 and agent "-", the text quoted (quotes and
    backslashes escaped; control characters dropped: a header is one line)."""
    out = []
    for t in texts:
        clean = "".join(ch for ch in t if ch >= " " and ch != "\x7f")
        out.append('299 - "' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return out
