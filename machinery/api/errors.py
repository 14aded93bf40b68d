"""Kubernetes-shaped errors shared by the server and the client.

The server raises `ApiError` subclasses; they render as `Status` objects
(kind Status, apiVersion v1, status Failure, reason, code, message, details
with field causes). The client raises the same classes when it receives such
a Status, so callers catch `Conflict`/`NotFound` alike on either side.
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
        return {"reason": self.reason, "message": self.message, "field": self.field}


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
        details = dict(self.details)
        if self.causes:
            details["causes"] = [c.to_dict() for c in self.causes]
        out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": self.message, "reason": self.reason, "code": self.code}
        if details:
            out["details"] = details
        return out

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


class Invalid(ApiError):
    code, reason = 422, "Invalid"


class TooManyRequests(ApiError):
    code, reason = 429, "TooManyRequests"


class ServiceUnavailable(ApiError):
    code, reason = 503, "ServiceUnavailable"


_BY_REASON = {c.reason: c for c in (BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, Conflict,
                                    AlreadyExists, Gone, UnsupportedMediaType, Invalid, TooManyRequests,
                                    ServiceUnavailable)}
_BY_CODE = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed,
            409: Conflict, 410: Gone, 415: UnsupportedMediaType, 422: Invalid, 429: TooManyRequests,
            503: ServiceUnavailable}


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
