"""Kubernetes-shaped errors shared by the server and the client.

The server raises `ApiError` subclasses; they render as `Status` objects
(kind Status, apiVersion v1, status Failure, reason, code, message, details
with field causes). The client raises the same classes when it receives such
a Status, so callers catch `Conflict`/`NotFound` alike on either side.

`status_object` builds a Status as Kubernetes' JSON serializer writes it, field for field:
Go's struct order (kind, apiVersion, metadata, status, message, reason, details, code;
details: name, group, kind, uid, causes, retryAfterSeconds; a cause: reason, message,
field) and Go's `omitempty` (an empty message, reason, details field or a zero code is left
out, `metadata` is always `{}`). `normalize_status` puts any Status dict in that shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Cause:
    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_dict(self) -> dict[str, Any]:
        """Go's StatusCause: reason, message, field, each left out when empty."""
        return {k: v for k, v in (("reason", self.reason), ("message", self.message), ("field", self.field)) if v}


_DETAILS_ORDER = ("name", "group", "kind", "uid", "causes", "retryAfterSeconds")


def status_object(*, status: str, message: str = "", reason: str = "", details: dict[str, Any] | None = None,
                  code: int = 0) -> dict[str, Any]:
    """A `Status` dict exactly as Kubernetes serializes one (see the module docstring).
    `details` keys outside Go's StatusDetails are dropped; `causes` are Cause objects or dicts."""
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": status}
    if message:
        out["message"] = message
    if reason:
        out["reason"] = reason
    det: dict[str, Any] = {}
    for k in _DETAILS_ORDER:
        v = (details or {}).get(k)
        if k == "causes" and v:
            v = [c.to_dict() if isinstance(c, Cause) else
                 {ck: c[ck] for ck in ("reason", "message", "field") if c.get(ck)} for c in v]
        if v:
            det[k] = v
    if det:
        out["details"] = det
    if code:
        out["code"] = code
    return out


def normalize_status(obj: dict[str, Any]) -> dict[str, Any]:
    """Any Status dict (e.g. a registry's Success) in Kubernetes' field order and omitempty."""
    return status_object(status=obj.get("status") or "", message=obj.get("message") or "",
                         reason=obj.get("reason") or "", details=obj.get("details"), code=obj.get("code") or 0)


class ApiError(Exception):
    code: int = 500
    reason: str = "InternalError"

    def __init__(self, message: str, *, causes: list[Cause] | None = None, details: dict[str, Any] | None = None,
                 code: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.causes = list(causes or [])
        self.details = dict(details or {})
        if code is not None:
            self.code = code
        if reason is not None:
            self.reason = reason

    def status(self) -> dict[str, Any]:
        """The Failure Status this error is answered with (`status_object`'s shape)."""
        details = dict(self.details)
        if self.causes:
            details["causes"] = self.causes
        return status_object(status="Failure", message=self.message, reason=self.reason, details=details,
                             code=self.code)

    def __str__(self) -> str:
        if self.causes:
            return self.message + "".join(f"\n  {c.field}: {c.message}" for c in self.causes
                                          if c.field and c.field not in self.message)
        return self.message


class BadRequest(ApiError):
    code, reason = 400, "BadRequest"


class Unauthorized(ApiError):
    code, reason = 401, "Unauthorized"


class Forbidden(ApiError):
    code, reason = 403, "Forbidden"


class NotFound(ApiError):
    code, reason = 404, "NotFound"


class MethodNotAllowed(ApiError):
    code, reason = 405, "MethodNotAllowed"


class Conflict(ApiError):
    code, reason = 409, "Conflict"


class AlreadyExists(Conflict):
    code, reason = 409, "AlreadyExists"


class Gone(ApiError):
    code, reason = 410, "Expired"


class UnsupportedMediaType(ApiError):
    code, reason = 415, "UnsupportedMediaType"


class RequestEntityTooLarge(ApiError):
    code, reason = 413, "RequestEntityTooLarge"


class Invalid(ApiError):
    code, reason = 422, "Invalid"


class TooManyRequests(ApiError):
    code, reason = 429, "TooManyRequests"


class ServiceUnavailable(ApiError):
    code, reason = 503, "ServiceUnavailable"


_BY_REASON = {c.reason: c for c in (BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, Conflict,
                                    AlreadyExists, Gone, RequestEntityTooLarge, UnsupportedMediaType, Invalid,
                                    TooManyRequests, ServiceUnavailable)}
_BY_CODE = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed,
            409: Conflict, 410: Gone, 413: RequestEntityTooLarge, 415: UnsupportedMediaType, 422: Invalid,
            429: TooManyRequests, 503: ServiceUnavailable}


def from_status(code: int, body: Any) -> ApiError:
    """Rebuild the matching ApiError from an HTTP status code and a Status body."""
    if isinstance(body, dict) and body.get("kind") == "Status":
        reason = body.get("reason") or ""
        cls = _BY_REASON.get(reason) or _BY_CODE.get(code, ApiError)
        det = dict(body.get("details") or {})
        causes = [Cause(c.get("field", ""), c.get("message", ""), c.get("reason", ""))
                  for c in det.pop("causes", []) or []]
        return cls(body.get("message") or reason or f"HTTP {code}", causes=causes, details=det, code=code,
                   reason=reason or None)
    cls = _BY_CODE.get(code, ApiError)
    return cls(f"HTTP {code}: {str(body)[:500]}", code=code)
