"""Decoding wire dicts into models, and turning pydantic's errors into API errors.

Decoding problems are `errors.BadRequest` (HTTP 400), as they are for
Kubernetes' decoder, with one `Cause` per problem:
- unknown fields: `strict decoding error: unknown field "spec.foo"` (under
  `fieldValidation=Ignore|Warn` they are dropped instead, Warn recording a
  warning for the caller to send back);
- wrong JSON types: `Deployment in version "v1" cannot be handled as a
  Deployment: spec.replicas: expected an integer, got string "3"`.

Paths are rendered the Kubernetes way, `spec.containers[0].resources.limits[cpu]`:
the renderer walks the model classes along pydantic's error location to tell
a map key (`[cpu]`) from a field (`.cpu`).
"""
from __future__ import annotations

import copy
import typing
from typing import Any, Optional, Union

from pydantic import BaseModel, ValidationError

from shoal.machinery.api.errors import BadRequest, Cause
from shoal.machinery.api.models.field import INVALID, render

_TYPE_MESSAGES = {
    "int_type": "expected an integer", "int_parsing": "expected an integer", "int_from_float": "expected an integer",
    "string_type": "expected a string", "bool_type": "expected a boolean", "bool_parsing": "expected a boolean",
    "list_type": "expected a list", "dict_type": "expected an object", "model_type": "expected an object",
    "model_attributes_type": "expected an object", "float_type": "expected a number",
}


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null" if v is None else type(v).__name__


def unwrap_type(tp: Any) -> Any:
    """Strip Optional[...] and Annotated[...] down to the interesting type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is Union:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def render_loc(model: type[BaseModel], loc: tuple) -> tuple[str, bool]:
    """Render a pydantic location as a Kubernetes field path; also say whether it
    ended on a union member tag (`int`/`str`), which callers merge."""
    path = ""
    tp: Any = model
    union_tag = False
    for part in loc:
        cur = unwrap_type(tp)
        origin = typing.get_origin(cur)
        if isinstance(part, int):
            path += f"[{part}]"
            tp = typing.get_args(cur)[0] if origin is list and typing.get_args(cur) else Any
        elif origin is dict:
            path += f"[{part}]"
            args = typing.get_args(cur)
            tp = args[1] if len(args) == 2 else Any
        elif isinstance(cur, type) and issubclass(cur, BaseModel):
            by_alias = {(f.alias or n): f for n, f in cur.model_fields.items()}
            f = by_alias.get(part)
            path += f".{part}" if path else str(part)
            tp = f.annotation if f is not None else Any
        elif origin is Union:
            union_tag = True  # pydantic names the union member it tried: 'int', 'str'
            continue
        else:
            path += f".{part}" if path else str(part)
            tp = Any
    return path, union_tag


def _drop(obj: Any, loc: tuple) -> None:
    cur = obj
    for part in loc[:-1]:
        cur = cur[part]
    if isinstance(cur, dict):
        cur.pop(loc[-1], None)


def decode(model: type[BaseModel], obj: dict, *, kind: str, version: str, field_validation: str = "Strict",
           warnings: Optional[list[str]] = None) -> BaseModel:
    """Decode `obj` into `model` or raise BadRequest with every decoding problem."""
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        errs = e.errors()
    unknown = [er for er in errs if er["type"] == "extra_forbidden"]
    others = [er for er in errs if er["type"] != "extra_forbidden"]
    if unknown and not others and field_validation in ("Ignore", "Warn"):
        trimmed = copy.deepcopy(obj)
        for er in unknown:
            _drop(trimmed, er["loc"])
            if warnings is not None and field_validation == "Warn":
                warnings.append(f'unknown field "{render_loc(model, er["loc"])[0]}"')
        return decode(model, trimmed, kind=kind, version=version, field_validation="Strict")
    causes: list[Cause] = []
    type_problems: dict[str, list[str]] = {}
    for er in others:
        path, union = render_loc(model, er["loc"])
        if er["type"] == "value_error":
            msg = str(er["msg"]).removeprefix("Value error, ")
        else:
            msg = _TYPE_MESSAGES.get(er["type"], er["msg"])
            got = er.get("input")
            got_text = "null" if got is None else f"{_json_type(got)} {render(got)}"
            msg = f"{msg}, got {got_text}" if not union else f"expected an integer or a string, got {got_text}"
        if msg not in type_problems.setdefault(path, []):
            type_problems[path].append(msg)
    for path, msgs in type_problems.items():
        for msg in msgs:
            causes.append(Cause(path, msg, INVALID))
    unknown_paths = [render_loc(model, er["loc"])[0] for er in unknown]
    for path in unknown_paths:
        causes.append(Cause(path, f'unknown field "{path}"', INVALID))
    if type_problems:
        detail = "; ".join(f"{p or '(root)'}: {m}" for p, ms in type_problems.items() for m in ms)
        raise BadRequest(f'{kind} in version "{version}" cannot be handled as a {kind}: {detail}', causes=causes)
    raise BadRequest("strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in unknown_paths),
                     causes=causes)
