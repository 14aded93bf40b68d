"""Protobuf request bodies (`application/vnd.kubernetes.protobuf`) decoded into JSON-shaped dicts.

Typed kubectl commands (`create deployment|namespace|configmap|secret|service`, drain's fallback
DELETE) send their object as Kubernetes' protobuf and do not retry as JSON. `decode(raw)`
turns such a body into the dict kubectl would have sent as JSON, which then goes through
the very same decoding, defaulting and validation as a JSON body (`machinery.api.models`):
an unknown field, a wrong value, a field shoal does not support are refused the same way.

Design notes:
- No PyPI package decodes Kubernetes' protobuf in Python today (the one that ships
  generated classes, k8s-proto, stopped in 2019 with core/v1 only and pins protobuf < 4), so
  this is a small table-driven decoder over the wire format (varints and length-delimited
  fields). `apiserver.protobuf_schema` is the table, generated from Kubernetes' own API
  definitions by `scripts/gen_protobuf_schema.py`: every field of every message reachable
  from the kinds shoal serves, with its number, JSON name and type.
- The envelope is `"k8s\\0"` + a `runtime.Unknown` message: typeMeta (1: apiVersion, 2:
  kind), raw (the object's own message), contentEncoding and contentType (both empty).
- Go's protobuf encoder writes every non-pointer field, zero or not (`""`, `0`, `false`,
  empty messages); Go's JSON encoder leaves out zero fields tagged `omitempty`. The table
  says which fields keep a zero (pointers, and fields without `omitempty`: flag `k`), so
  `strategy: {type: ""}` decodes as `strategy: {}`, while `replicas: 0` stays 0. Messages
  are kept even when empty (Go's JSON writes a struct as `{}`), except the types Go's JSON
  writes differently from their protobuf: a zero Time is `null` (absent here), Quantity is
  its string, IntOrString an int or a string, byte fields and map values (Secret data) base64.
- Embedded structs (`Volume.volumeSource`, `Probe.handler`) are inlined, as in JSON.
- A field number Kubernetes does not define is a 400 naming it and where it was; malformed
  bytes are a 400 saying what and at which offset. The decoder never guesses.

Next: `apiserver.app` calls `decode` from `_body` for this content type; answers are JSON.
"""
from __future__ import annotations

import base64
import json
import struct
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from shoal.apiserver.protobuf_schema import MESSAGES
from shoal.machinery.api import errors

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
MAX_DEPTH = 64          # the schema nests about 12 deep; a body may not pretend otherwise

# (apiVersion, kind) of the envelope → the message its raw object is. DeleteOptions travel
# under the group version of the client that sent them; shoal's models take v1 and meta.k8s.io/v1.
ROOTS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "core.v1.Namespace",
    ("v1", "Pod"): "core.v1.Pod",
    ("v1", "Node"): "core.v1.Node",
    ("v1", "Event"): "core.v1.Event",
    ("v1", "ConfigMap"): "core.v1.ConfigMap",
    ("v1", "Secret"): "core.v1.Secret",
    ("v1", "Binding"): "core.v1.Binding",
    ("v1", "Service"): "core.v1.Service",
    ("v1", "Endpoints"): "core.v1.Endpoints",
    ("discovery.k8s.io/v1", "EndpointSlice"): "discovery.v1.EndpointSlice",
    ("apps/v1", "Deployment"): "apps.v1.Deployment",
    ("apps/v1", "ReplicaSet"): "apps.v1.ReplicaSet",
    ("coordination.k8s.io/v1", "Lease"): "coordination.v1.Lease",
    ("autoscaling/v1", "Scale"): "autoscaling.v1.Scale",
    ("v1", "DeleteOptions"): "meta.v1.DeleteOptions",
    ("meta.k8s.io/v1", "DeleteOptions"): "meta.v1.DeleteOptions",
}

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "start-group", 4: "end-group", 5: "32-bit"}
_SCALAR_WIRE = {"string": _LEN, "bytes": _LEN, "bool": _VARINT, "int32": _VARINT, "int64": _VARINT,
                "uint32": _VARINT, "uint64": _VARINT, "double": _I64, "float": _I32}
_GO_ZERO_TIME = -62135596800        # time.Time{}.Unix(): Go's zero time, JSON null


def is_protobuf(content_type: str | None) -> bool:
    """Whether a Content-Type header names Kubernetes' protobuf encoding."""
    return (content_type or "").split(";", 1)[0].strip().lower() == MEDIA_TYPE


def accepts_only_protobuf(accept: str | None) -> bool:
    """Whether an Accept header admits protobuf and nothing shoal can answer (JSON): the
    client must then get 406. No header, `*/*`, `application/*` or any JSON/YAML range is
    fine; kubectl always offers JSON after protobuf."""
    if not accept or not accept.strip():
        return False
    ranges = [r.split(";", 1)[0].strip().lower() for r in accept.split(",")]
    ranges = [r for r in ranges if r]
    return bool(ranges) and all(r == MEDIA_TYPE for r in ranges)


def check_accept(scope: dict) -> None:
    """Raise 406 NotAcceptable when the ASGI request's Accept header admits only protobuf
    (`accepts_only_protobuf`): shoal answers in JSON, and a client that cannot read it must
    be told so rather than handed JSON it will fail to decode."""
    accept = next((v.decode("latin-1") for k, v in scope.get("headers") or () if k == b"accept"), None)
    if accepts_only_protobuf(accept):
        raise errors.ApiError("only the following media types are accepted: application/json (shoal decodes "
                              f"{MEDIA_TYPE} request bodies but always answers in JSON)",
                              code=406, reason="NotAcceptable")


class _Malformed(Exception):
    pass


def _bad(msg: str) -> errors.BadRequest:
    return errors.BadRequest(f"the protobuf request body cannot be decoded: {msg}")


# --- wire primitives -----------------------------------------------------------------------

def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise _Malformed(f"truncated varint at offset {start}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed(f"varint longer than 10 bytes at offset {start}")


def _fields(buf: bytes, start: int, end: int):
    """(field number, wire type, value, offset) of each field in buf[start:end]; the value
    of a length-delimited field is its (start, end) span."""
    pos = start
    while pos < end:
        at = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed(f"field number 0 at offset {at}")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, at
        elif wire == _LEN:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise _Malformed(f"field {number} at offset {at} claims {length} bytes, {end - pos} remain")
            yield number, wire, (pos, pos + length), at
            pos += length
        elif wire == _I64:
            if end - pos < 8:
                raise _Malformed(f"truncated 64-bit field {number} at offset {at}")
            yield number, wire, buf[pos:pos + 8], at
            pos += 8
        elif wire == _I32:
            if end - pos < 4:
                raise _Malformed(f"truncated 32-bit field {number} at offset {at}")
            yield number, wire, buf[pos:pos + 4], at
            pos += 4
        else:
            raise _Malformed(f"unsupported wire type {wire} ({_WIRE_NAMES.get(wire, '?')}) of field {number} "
                             f"at offset {at}")


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _where(path: str) -> str:
    return path or "the object's top level"


# --- the decoder -------------------------------------------------------------------------------

class _Decoder:
    def __init__(self, buf: bytes):
        self.buf = buf

    def message(self, name: str, start: int, end: int, path: str, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise _bad(f"nested deeper than {MAX_DEPTH} messages at {_where(path)}")
        table = MESSAGES[name]
        out: dict[str, Any] = {}
        for number, wire, value, at in _fields(self.buf, start, end):
            spec = table.get(number)
            if spec is None:
                raise _bad(f"unknown field number {number} at {_where(path)} (offset {at}): Kubernetes' "
                           f"{name} has no such field")
            jname, typ, flags = spec
            fpath = f"{path}.{jname}" if path and jname else (jname or path)
            if "m" in flags:
                key, val = self.map_entry(typ, wire, value, fpath, at, depth)
                out.setdefault(jname, {})[key] = val
            elif "r" in flags:
                items = out.setdefault(jname, [])
                if wire == _LEN and typ in _SCALAR_WIRE and _SCALAR_WIRE[typ] != _LEN:
                    items.extend(self.packed(typ, value, f"{fpath}[{len(items)}]", at))
                else:
                    items.append(self.value(typ, wire, value, f"{fpath}[{len(items)}]", at, depth))
            else:
                val = self.value(typ, wire, value, fpath, at, depth)
                if "i" in flags:
                    _merge(out, val)
                elif val is _ABSENT or (typ in _SCALAR_WIRE and "k" not in flags and not val):
                    out.pop(jname, None)        # JSON would leave this zero out (omitempty)
                elif isinstance(val, dict) and isinstance(out.get(jname), dict):
                    _merge(out[jname], val)     # a message field sent twice merges, as in Go
                else:
                    out[jname] = val
        return out

    def value(self, typ: str, wire: int, value: Any, path: str, at: int, depth: int) -> Any:
        scalar_wire = _SCALAR_WIRE.get(typ)
        expected = _LEN if scalar_wire is None else scalar_wire
        if wire != expected:
            raise _bad(f"{path} (offset {at}) is sent as {_WIRE_NAMES[wire]}, a {typ} is {_WIRE_NAMES[expected]}")
        if scalar_wire is not None:
            return self.scalar(typ, value, path, at)
        start, end = value
        special = _SPECIALS.get(typ)
        if special is not None:
            return special(self, start, end, path, depth)
        return self.message(typ, start, end, path, depth + 1)

    def scalar(self, typ: str, value: Any, path: str, at: int) -> Any:
        if typ == "string":
            start, end = value
            try:
                return self.buf[start:end].decode("utf-8")
            except UnicodeDecodeError as e:
                raise _bad(f"{path} (offset {at}) is not valid UTF-8: {e.reason} at byte {e.start}") from None
        if typ == "bytes":
            start, end = value
            return base64.b64encode(self.buf[start:end]).decode("ascii")
        if typ == "bool":
            return value != 0
        if typ == "int32":
            v = _signed64(value)
            if not -(1 << 31) <= v < 1 << 31:
                raise _bad(f"{path} (offset {at}): {v} does not fit in an int32")
            return v
        if typ == "int64":
            return _signed64(value)
        if typ == "uint32":
            if value >= 1 << 32:
                raise _bad(f"{path} (offset {at}): {value} does not fit in a uint32")
            return value
        if typ == "uint64":
            return value
        if typ == "double":
            return _finite(struct.unpack("<d", value)[0], path, at)
        if typ == "float":
            return _finite(struct.unpack("<f", value)[0], path, at)
        raise AssertionError(f"scalar type {typ} of the schema is not decoded")   # guarded by a unit test

    def packed(self, typ: str, span: tuple[int, int], path: str, at: int) -> list[Any]:
        start, end = span
        out: list[Any] = []
        pos = start
        while pos < end:
            if typ in ("double", "float"):
                size = 8 if typ == "double" else 4
                if end - pos < size:
                    raise _Malformed(f"truncated packed {typ} list {path} at offset {at}")
                out.append(self.scalar(typ, self.buf[pos:pos + size], path, at))
                pos += size
            else:
                v, pos = _varint(self.buf, pos, end)
                out.append(self.scalar(typ, v, path, at))
        return out

    def map_entry(self, typ: str, wire: int, value: Any, path: str, at: int, depth: int) -> tuple[str, Any]:
        if wire != _LEN:
            raise _bad(f"{path} (offset {at}) is sent as {_WIRE_NAMES[wire]}, a map entry is length-delimited")
        key: str = ""
        val: Any = _ABSENT
        for number, w, v, a in _fields(self.buf, value[0], value[1]):
            if number == 1:
                key = self.value("string", w, v, f"{path} key", a, depth)
            elif number == 2:
                val = self.value(typ, w, v, f"{path}[{key}]", a, depth)
            else:
                raise _bad(f"unknown field number {number} in an entry of {path} (offset {a}): map entries "
                           f"have a key (1) and a value (2)")
        if val is _ABSENT:
            val = _zero(typ)
        return key, val


_ABSENT = object()


def _zero(typ: str) -> Any:
    """A map value Go wrote as its zero value (no field 2)."""
    if typ in ("string", "bytes"):
        return ""
    if typ == "bool":
        return False
    if typ in _SCALAR_WIRE:
        return 0
    if typ == "Quantity":
        return "0"
    if typ == "IntOrString":
        return 0
    return {}


def _finite(v: float, path: str, at: int) -> float:
    if v != v or v in (float("inf"), float("-inf")):
        raise _bad(f"{path} (offset {at}): {v} is not a finite number")
    return v


def _merge(into: dict, extra: Any) -> None:
    if not isinstance(extra, dict):
        return
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        elif isinstance(v, list) and isinstance(into.get(k), list):
            into[k].extend(v)
        else:
            into[k] = v


# --- types whose JSON is not their protobuf structure -----------------------------------------

def _time_parts(d: _Decoder, start: int, end: int, path: str) -> tuple[int, int] | None:
    seconds = nanos = 0
    for number, wire, value, at in _fields(d.buf, start, end):
        if number == 1 and wire == _VARINT:
            seconds = _signed64(value)
        elif number == 2 and wire == _VARINT:
            nanos = _signed64(value)
        else:
            raise _bad(f"{path} (offset {at}): a Time has seconds (1) and nanos (2), not field {number} "
                       f"sent as {_WIRE_NAMES[wire]}")
    if start == end or (seconds == _GO_ZERO_TIME and nanos == 0):
        return None                                   # Go's zero time: JSON null
    if not 0 <= nanos < 1_000_000_000:
        raise _bad(f"{path}: nanos {nanos} is out of range")
    return seconds, nanos


def _datetime(seconds: int, nanos: int, path: str) -> datetime:
    try:
        return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError:
        raise _bad(f"{path}: {seconds} seconds since 1970 is not a time between the years 1 and 9999") from None


def _time(d: _Decoder, start: int, end: int, path: str, depth: int) -> Any:
    parts = _time_parts(d, start, end, path)
    if parts is None:
        return _ABSENT
    return _datetime(*parts, path).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_time(d: _Decoder, start: int, end: int, path: str, depth: int) -> Any:
    parts = _time_parts(d, start, end, path)
    if parts is None:
        return _ABSENT
    return _datetime(*parts, path).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _quantity(d: _Decoder, start: int, end: int, path: str, depth: int) -> Any:
    text = ""
    for number, wire, value, at in _fields(d.buf, start, end):
        if number != 1:
            raise _bad(f"{path} (offset {at}): a Quantity has only its string (1), not field {number}")
        text = d.value("string", wire, value, path, at, depth)
    return text or "0"                                  # Go's zero Quantity is "0" in JSON


def _int_or_string(d: _Decoder, start: int, end: int, path: str, depth: int) -> Any:
    kind, int_val, str_val = 0, 0, ""
    for number, wire, value, at in _fields(d.buf, start, end):
        if number == 1:
            kind = d.value("int64", wire, value, path, at, depth)
        elif number == 2:
            int_val = d.value("int32", wire, value, path, at, depth)
        elif number == 3:
            str_val = d.value("string", wire, value, path, at, depth)
        else:
            raise _bad(f"{path} (offset {at}): an IntOrString has type (1), intVal (2) and strVal (3), "
                       f"not field {number}")
    if kind == 0:
        return int_val
    if kind == 1:
        return str_val
    raise _bad(f"{path}: IntOrString type {kind} is neither 0 (int) nor 1 (string)")


def _fields_v1(d: _Decoder, start: int, end: int, path: str, depth: int) -> Any:
    raw = b""
    for number, wire, value, at in _fields(d.buf, start, end):
        if number != 1 or wire != _LEN:
            raise _bad(f"{path} (offset {at}): FieldsV1 has only its raw JSON (1)")
        raw = d.buf[value[0]:value[1]]
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError as e:
        raise _bad(f"{path}: the field set is not JSON: {e}") from None


_SPECIALS: dict[str, Callable[[_Decoder, int, int, str, int], Any]] = {
    "Time": _time, "MicroTime": _micro_time, "Quantity": _quantity, "IntOrString": _int_or_string,
    "FieldsV1": _fields_v1,
}


# --- the envelope --------------------------------------------------------------------------------

def decode(raw: bytes) -> dict[str, Any]:
    """Decode a Kubernetes protobuf body into the JSON-shaped object it stands for, with the
    envelope's `apiVersion` and `kind`. Raises `errors.BadRequest` naming what is wrong
    (and where) for malformed bytes, an unknown field number or a kind shoal does not
    decode, `errors.UnsupportedMediaType` for an encoded (e.g. gzip) inner object."""
    if not raw.startswith(MAGIC):
        raise _bad(f"it does not start with Kubernetes' protobuf prefix 'k8s\\x00' (got {bytes(raw[:4])!r})")
    buf = bytes(raw)
    d = _Decoder(buf)
    api_version = kind = content_encoding = content_type = ""
    inner: tuple[int, int] = (0, 0)
    try:
        for number, wire, value, at in _fields(buf, len(MAGIC), len(buf)):
            if wire != _LEN or number not in (1, 2, 3, 4):
                raise _bad(f"unknown field number {number} ({_WIRE_NAMES[wire]}) in the envelope at offset "
                           f"{at}: it has typeMeta (1), raw (2), contentEncoding (3) and contentType (4)")
            if number == 1:
                for n, w, v, a in _fields(buf, value[0], value[1]):
                    if n == 1:
                        api_version = d.value("string", w, v, "typeMeta.apiVersion", a, 0)
                    elif n == 2:
                        kind = d.value("string", w, v, "typeMeta.kind", a, 0)
                    else:
                        raise _bad(f"unknown field number {n} in the envelope's typeMeta at offset {a}")
            elif number == 2:
                inner = value
            elif number == 3:
                content_encoding = d.value("string", wire, value, "contentEncoding", at, 0)
            else:
                content_type = d.value("string", wire, value, "contentType", at, 0)
        if content_encoding:
            raise errors.UnsupportedMediaType(f"the protobuf body's object is encoded as {content_encoding!r}; "
                                              f"shoal reads only plain protobuf objects")
        if content_type and not is_protobuf(content_type):
            raise errors.UnsupportedMediaType(f"the protobuf body's object is {content_type!r}; shoal reads only "
                                              f"protobuf objects in a protobuf envelope")
        if not kind:
            raise _bad("the envelope names no kind (typeMeta.kind is empty)")
        root = ROOTS.get((api_version, kind))
        if root is None:
            known = ", ".join(f"{v} {k}" for v, k in sorted(ROOTS))
            raise _bad(f'no kind "{kind}" of version "{api_version}" is decoded from protobuf by shoal '
                       f"(it decodes {known})")
        obj = d.message(root, inner[0], inner[1], "", 0)
    except _Malformed as e:
        raise _bad(str(e)) from None
    return {"apiVersion": api_version, "kind": kind, **obj}
