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
MAX_WARNINGS = 32            # Kubernetes caps them too (4 KiB of text per request)


def warn(text: str) -> None:
    texts = _CURRENT.get()
    if texts is not None and text not in texts and len(texts) < MAX_WARNINGS:
        texts.append(text)


@contextmanager
def collecting() -> Iterator[list[str]]:
    texts: list[str] = []
    token = _CURRENT.set(texts)
    try:
        yield texts
    finally:
        _CURRENT.reset(token)


def header_values(texts: list[str]) -> list[str]:
    """RFC 7234 warn-values with code 299 and agent "-", the text quoted (quotes and
    backslashes escaped; control characters dropped: a header is one line)."""
    out = []
    for t in texts:
        clean = "".join(ch for ch in t if ch >= " " and ch != "\x7f")
        out.append('299 - "' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return out
