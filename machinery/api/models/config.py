"""core/v1 shapes: ConfigMap and Secret — configuration stored for pods.

Shape only, as in `core`: the rules (key syntax, size, the well-known Secret types'
required keys, immutability) are in `validation`, Secret's `type` default and the
`stringData` merge in `defaults`.

Byte fields (`ConfigMap.binaryData`, `Secret.data`) are base64 on the wire, as Go's JSON
writes `[]byte`: decoding checks the encoding (`illegal base64 data at input byte N`, a
400 as in Kubernetes) and keeps the canonical form of the bytes, which is what Kubernetes
stores and answers (it keeps the bytes, not the text).

What pods may do with them is a later step: a pod spec cannot reference a ConfigMap or a
Secret yet (docs/configmaps-secrets.md).
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Optional

from pydantic import BeforeValidator

from shoal.machinery.api.models.base import WireModel
from shoal.machinery.api.models.meta import ObjectMeta

_BASE64_ALPHABET = re.compile(r"[^A-Za-z0-9+/=\r\n]")


def decode_base64(text: str) -> bytes:
    """Go's `base64.StdEncoding` decoding of a JSON `[]byte`: padding required, CR and LF
    ignored. Raises ValueError with Go's wording and the offending offset."""
    bad = _BASE64_ALPHABET.search(text)
    if bad:
        raise ValueError(f"illegal base64 data at input byte {bad.start()}")
    compact = text.replace("\r", "").replace("\n", "")
    pad = compact.find("=")
    if pad != -1 and compact[pad:].strip("=") != "":
        raise ValueError(f"illegal base64 data at input byte {text.index('=')}: '=' may only end the data")
    if len(compact) % 4:
        raise ValueError(f"illegal base64 data at input byte {len(text)}: the length is not a multiple of 4 "
                         f"(missing '=' padding?)")
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error as e:
        raise ValueError(f"illegal base64 data: {e}") from None


def _base64(v: Any) -> Any:
    if not isinstance(v, str):
        return v                 # left for the strict str check: "expected a string"
    return base64.b64encode(decode_base64(v)).decode("ascii")


Base64Bytes = Annotated[str, BeforeValidator(_base64)]
"""A `[]byte` on the wire: base64 text, decoded to check it and kept in canonical form."""


class ConfigMap(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    immutable: Optional[bool] = None
    data: Optional[dict[str, str]] = None
    binary_data: Optional[dict[str, Base64Bytes]] = None


class Secret(WireModel):
    api_version: Optional[str] = None
    kind: Optional[str] = None
    metadata: Optional[ObjectMeta] = None
    immutable: Optional[bool] = None
    data: Optional[dict[str, Base64Bytes]] = None
    string_data: Optional[dict[str, str]] = None
    type: Optional[str] = None
