"""Field errors with Kubernetes' wording, collected per object and raised as one `Invalid`.

A validator appends to a `FieldErrors` instead of raising, so that a user
sees every problem of a manifest at once; `raise_if_any` turns the list into
`errors.Invalid` whose message reads exactly like the API server's:

    Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0

and whose `causes` carry one (field, reason, message) per problem, which
`Status.details.causes` serialises. Paths are plain strings built by the
caller: `spec.template.spec.containers[0].ports[1].containerPort`, map keys as
`resources.limits[cpu]`.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

from shoal.machinery.api.errors import Cause, Invalid

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
NOT_FOUND = "FieldValueNotFound"


def render(value: Any) -> str:
    """A value as it appears in a message: strings quoted, numbers bare, maps as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    except TypeError:
        return repr(value)


class FieldErrors:
    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def __bool__(self) -> bool:
        return bool(self.causes)

    def __len__(self) -> int:
        return len(self.causes)

    def _add(self, path: str, reason: str, message: str) -> None:
        self.causes.append(Cause(path, message, reason))

    def required(self, path: str, detail: str = "") -> None:
        self._add(path, REQUIRED, "Required value" + (f": {detail}" if detail else ""))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self._add(path, INVALID, f"Invalid value: {render(value)}: {detail}")

    def invalid_all(self, path: str, value: Any, details: Iterable[str]) -> None:
        for d in details:
            self.invalid(path, value, d)

    def not_supported(self, path: str, value: Any, supported: Iterable[str]) -> None:
        opts = ", ".join(render(s) for s in sorted(supported))
        self._add(path, NOT_SUPPORTED, f"Unsupported value: {render(value)}: supported values: {opts}")

    def duplicate(self, path: str, value: Any) -> None:
        self._add(path, DUPLICATE, f"Duplicate value: {render(value)}")

    def forbidden(self, path: str, detail: str) -> None:
        self._add(path, FORBIDDEN, f"Forbidden: {detail}")

    def too_long(self, path: str, detail: str) -> None:
        self._add(path, TOO_LONG, f"Too long: {detail}")

    def not_found(self, path: str, value: Any) -> None:
        self._add(path, NOT_FOUND, f"Not found: {render(value)}")

    # --- common numeric checks, Kubernetes' wording -------------------------------
    def nonnegative(self, path: str, value: int | None) -> None:
        if value is not None and value < 0:
            self.invalid(path, value, "must be greater than or equal to 0")

    def positive(self, path: str, value: int | None) -> None:
        if value is not None and value <= 0:
            self.invalid(path, value, "must be greater than 0")

    def one_of(self, path: str, value: str | None, supported: Iterable[str], *, required: bool = False) -> None:
        supported = tuple(supported)
        if value is None or value == "":
            if required:
                self.required(path)
            return
        if value not in supported:
            self.not_supported(path, value, supported)

    def raise_if_any(self, qualified_kind: str, name: str | None) -> None:
        if not self.causes:
            return
        parts = [f"{c.field}: {c.message}" if c.field else c.message for c in self.causes]
        body = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
        raise Invalid(f'{qualified_kind} "{name or ""}" is invalid: {body}', causes=list(self.causes),
                      details={"name": name or "", "kind": qualified_kind.split(".", 1)[0],
                               **({"group": qualified_kind.split(".", 1)[1]} if "." in qualified_kind else {})})
