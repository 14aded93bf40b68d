"""Kubernetes resource quantities: `100m`, `0.5`, `128Mi`, `1G`, `1e3`.

Contract:
- `parse_quantity` turns a wire quantity (a string, or a JSON number as YAML
  gives for `cpu: 1`) into an exact `Decimal`; anything else raises
  `ValueError` naming the bad value.
- `cpu_millis` and `memory_bytes` round *up*, as Kubernetes' `MilliValue()`
  and `Value()` do, so `0.0001` CPU still reserves 1m and a request is never
  under-counted by the scheduler.
- `format_cpu_millis` / `format_bytes` produce the short forms kubectl
  prints (`250m`, `2`, `128Mi`, `1Gi`).

Design note: Decimal, not float, so `0.1 + 0.2` CPU adds up to exactly 300m
and `1e3` equals `1k` equals `1000`.
"""
from __future__ import annotations

import decimal
import re
from decimal import Decimal

QUANTITY_REGEX = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
_REGEX = re.compile(QUANTITY_REGEX)
_SHAPE = re.compile(r"^([+-]?)([0-9]*)(\.([0-9]*))?(.*)$")
_EXP = re.compile(r"^[eE]([+-]?[0-9]+)$")
_CTX = decimal.Context(prec=60)


def _bad(s: object) -> ValueError:
    return ValueError(f"invalid quantity {s!r}: quantities must match the regular expression "
                      f"'{QUANTITY_REGEX}' (e.g. '100m', '0.5', '128Mi', '1G', '1e3')")


def parse_quantity(s: str | int | float | Decimal) -> Decimal:
    """Parse a Kubernetes quantity into an exact Decimal (`"128Mi"` -> 134217728); a Decimal
    (an already parsed quantity) is returned as it is."""
    if isinstance(s, bool):
        raise _bad(s)
    if isinstance(s, Decimal):
        return s
    if isinstance(s, int):
        return Decimal(s)
    if isinstance(s, float):
        if s != s or s in (float("inf"), float("-inf")):
            raise _bad(s)
        return Decimal(repr(s))
    if isinstance(s, Decimal):
        return s
    if not isinstance(s, str):
        raise _bad(s)
    text = s.strip()
    if not text or text != s:
        raise _bad(s)
    m = _SHAPE.match(text)
    if not m or not _REGEX.match(text):
        raise _bad(s)
    sign, whole, _, frac, suffix = m.group(1), m.group(2), m.group(3), m.group(4) or "", m.group(5)
    if not whole and not frac:
        raise _bad(s)
    number = Decimal(f"{sign}{whole or '0'}.{frac or '0'}")
    if suffix in _BINARY:
        return _CTX.multiply(number, Decimal(_BINARY[suffix]))
    if suffix in _DECIMAL:
        return _CTX.multiply(number, _DECIMAL[suffix])
    em = _EXP.match(suffix)
    if em:
        exp = int(em.group(1))
        if abs(exp) > 100:
            raise ValueError(f"invalid quantity {s!r}: exponent {exp} is out of range")
        return _CTX.multiply(number, Decimal(1).scaleb(exp))
    raise ValueError(f"invalid quantity {s!r}: unknown suffix {suffix!r} "
                     f"(use one of n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent like e3)")


def _ceil(d: Decimal) -> int:
    return int(d.to_integral_value(rounding=decimal.ROUND_CEILING))


def cpu_millis(q: str | int | float | Decimal) -> int:
    """CPU quantity in millicores, rounded up (`"0.5"` -> 500, `"100m"` -> 100)."""
    return _ceil(_CTX.multiply(parse_quantity(q), Decimal(1000)))


def memory_bytes(q: str | int | float | Decimal) -> int:
    """Memory (or any byte) quantity in bytes, rounded up (`"128Mi"` -> 134217728)."""
    return _ceil(parse_quantity(q))


def format_cpu_millis(millis: int) -> str:
    """`250` -> `"250m"`, `2000` -> `"2"`, as kubectl prints CPU."""
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis}m"


def format_bytes(n: int) -> str:
    """Bytes in the largest exact binary unit (`134217728` -> `"128Mi"`), else an
    exact decimal unit (`1500000000` -> `"1500M"`), else plain bytes."""
    if n == 0:
        return "0"
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    for suffix in ("E", "P", "T", "G", "M", "k"):
        unit = int(_DECIMAL[suffix])
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)
