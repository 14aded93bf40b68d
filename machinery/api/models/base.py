"""The decoding layer shared by every kind: wire naming, strictness, scalar types.

Every model derives from `WireModel`:
- Python attributes are snake_case; the wire (JSON/YAML) names are Kubernetes'
  camelCase, produced by an alias generator. The few names Kubernetes spells
  with initialisms (`hostIP`, `podCIDR`, `imageID`, ...) get explicit aliases.
- `extra="forbid"`: an unknown field is a decoding error that names its path,
  as Kubernetes' strict field validation does.
- `strict=True`: `replicas: "3"` or `labels: {v: 1}` are decoding errors, as
  they are for Kubernetes' JSON decoder; nothing is silently coerced.
- Every field is optional and defaults to None. Decoding only checks *shape*;
  whether a field is required, in range or well-formed is checked afterwards
  by `validation`, which can report every problem at once with its field path
  (Kubernetes separates decoding and validation the same way). Nulls sent by
  clients (`creationTimestamp: null`) therefore decode as "absent".

Scalar types:
- `Time`: RFC 3339 at second precision, always rendered `...Z` (the Python
  client sends `+00:00`; both decode). `MicroTime`: the same with microseconds
  (Event.eventTime, Lease times).
- `Quantity`: kept as the user wrote it (a JSON number becomes its string);
  `shoal.machinery.api.quantity` parses it during validation.
- `IntOrString`: ports and rolling-update bounds (`80` or `"http"`, `1` or `"25%"`).
- `Int32`, `Int64`: integers with the range of the Go type Kubernetes declares the field
  with (an `IntRange` in the annotation). JSON numbers have no bound, so decoding takes any
  integer; `validation.validate_int_ranges` reports one outside its range as a field error
  (422, with the path), before any rule reads it: `replicas: 10**12` or
  `terminationGracePeriodSeconds: 2**70` never reach the store.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel

from shoal.machinery.api.times import MICRO_TIME_FORMAT, TIME_FORMAT


class WireModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True,
                              validate_default=False, protected_namespaces=())

    def wire(self) -> dict[str, Any]:
        """The wire dict: camelCase names, None-valued fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="python")


def _parse_time(v: Any) -> datetime:
    if isinstance(v, datetime):
        dt = v
    elif isinstance(v, str):
        text = v.strip()
        if text.endswith("Z") or text.endswith("z"):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"invalid timestamp {v!r}: expected RFC 3339, e.g. 2024-05-01T12:00:00Z") from None
        if "T" not in text.upper():
            raise ValueError(f"invalid timestamp {v!r}: expected RFC 3339, e.g. 2024-05-01T12:00:00Z")
    else:
        raise ValueError(f"invalid timestamp {v!r}: expected an RFC 3339 string")
    if dt.tzinfo is None:
        raise ValueError(f"invalid timestamp {v!r}: a time zone is required (use 'Z' for UTC)")
    return dt.astimezone(timezone.utc)


def _time(v: Any) -> Any:
    if v is None:
        return None
    return _parse_time(v).strftime(TIME_FORMAT)


def _micro_time(v: Any) -> Any:
    if v is None:
        return None
    return _parse_time(v).strftime(MICRO_TIME_FORMAT)


def _quantity(v: Any) -> Any:
    # JSON numbers are quantities too (`cpu: 1`, `cpu: 0.5`); bools are not.
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return v  # left for the str check to reject
        return repr(v) if v != int(v) else str(int(v))
    return v


@dataclass(frozen=True)
class IntRange:
    """Annotation of an integer field: the range of its Go type (`name`)."""
    low: int
    high: int
    name: str


INT32 = IntRange(-(2**31), 2**31 - 1, "int32")
INT64 = IntRange(-(2**63), 2**63 - 1, "int64")

Time = Annotated[str, BeforeValidator(_time)]
MicroTime = Annotated[str, BeforeValidator(_micro_time)]
Quantity = Annotated[str, BeforeValidator(_quantity)]
Int32 = Annotated[int, INT32]
Int64 = Annotated[int, INT64]
IntOrString = Union[Int32, str]     # Kubernetes' IntOrString holds an int32
ResourceList = dict[str, Quantity]
