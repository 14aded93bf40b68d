"""Lists as Kubernetes serves them: pages (`limit`, `continue`), `resourceVersion` and
`resourceVersionMatch`, and answers encoded one item at a time.

Contract (Kubernetes' API concepts, "Retrieving large results sets in chunks" and "Resource
versions"; docs/api.md "Lists"):
- **Pages.** `limit=N` (N > 0) answers at most N items and, when keys follow the last one,
  `metadata.continue`: an opaque token, Kubernetes' own format (URL-safe base64 without padding
  of `{"v":"meta.k8s.io/v1","rv":R,"start":"<last key after the list's prefix>\\u0000"}`).
  Sending it back (`continue=`, with the same selectors) answers the next page. `limit` <= 0
  or absent: everything. Items are in key order (namespace, then name, compared as bytes, as
  etcd orders Kubernetes' keys).
- **Consistent.** Every page of one list is read at the first page's revision R, which is
  every page's `metadata.resourceVersion`: objects created, changed or deleted meanwhile are
  answered as they were at R (`Store.list_range` reads the revision log). A token whose R has
  been compacted answers 410 Expired with Kubernetes' message and, in the Status's
  `metadata.continue`, a token (rv -1) that goes on from the same key at the newest revision,
  knowingly inconsistent, as Kubernetes does. A watch from R sees every change after the list.
- **Selectors before the limit.** `labelSelector`/`fieldSelector` filter before counting, so a
  page holds N matching items unless the list ends first; as in Kubernetes, `continue` is set
  whenever keys (matching or not) follow the last item, so the last page may be empty.
- **`remainingItemCount`**: on a page with `continue` and no selectors, the number of objects
  after it (at R); left out with selectors (unknown without reading them), as in Kubernetes.
- **resourceVersion** (no `continue`): "" is the newest (consistent), "0" any (the newest);
  "N" with `resourceVersionMatch` NotOlderThan (the default) the newest when N has been
  reached, Exact: the state at N (410 Expired once compacted). N past the newest revision is
  504 Timeout "Too large resource version", Kubernetes' answer (`retryAfterSeconds` 1).
  With `continue`, only "" or "0" (400). ListOptions errors are Kubernetes' 400/422.
- **Memory.** Rows are read `CHUNK` at a time, each decoded, matched and encoded on its own;
  a page keeps only encoded items, and a list without `limit` is streamed: its first chunk
  is read (and any error answered as a Status) before the answer starts; a failure after
  that (a list outliving the history window) ends the stream early, which the client sees
  as a broken answer, never as a short list.
- **Views**: a Table (`as=Table`) or PartialObjectMetadataList carries the same list metadata
  (`resourceVersion`, `continue`, `remainingItemCount`), so `kubectl get --chunk-size` pages.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import posixpath
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable

import anyio
from starlette.responses import Response, StreamingResponse

from shoal.apiserver import tables
from shoal.apiserver.store import FutureRevision, Store, _with_rv
from shoal.machinery.api import errors
from shoal.machinery.api.models.field import FieldErrors
from shoal.machinery.api.resources import Resource

log = logging.getLogger(__name__)

CHUNK = 500                   # rows read per store call
TOKEN_VERSION = "meta.k8s.io/v1"
MAX_INT64 = 2**63 - 1
MAX_TOKEN_CHARS = 4096        # a token shoal makes holds one key (<= 512 characters): far less
BLOCK_BYTES = 256 * 1024      # encoded items are sent in blocks of about this size

EXPIRED = "The resourceVersion for the provided list is too old."
CONTINUE_EXPIRED = ("The provided continue parameter is too old to display a consistent list result. You can "
                    "start a new list without the continue parameter, or use the continue token in this "
                    "response to retrieve the remainder of the results. Continuing with the provided token "
                    "results in an inconsistent list - objects that were created, modified, or deleted between "
                    "the time the first chunk was returned and now may show up in the list.")


class ContinueExpired(errors.Gone):
    """410 Expired for a continue token whose revision is compacted; the Status carries, in
    `metadata.continue`, a token going on from the same key at the newest revision."""

    def __init__(self, token: str):
        super().__init__(CONTINUE_EXPIRED)
        self.continue_token = token

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["metadata"] = {"continue": self.continue_token}
        return out


def too_large(revision: int, current: int) -> errors.ApiError:
    """Kubernetes' NewTooLargeResourceVersionError: 504 Timeout, retry after 1 s."""
    return errors.ApiError(f"Timeout: Too large resource version: {revision}, current: {current}", code=504,
                           reason="Timeout", details={"retryAfterSeconds": 1, "causes": [
                               errors.Cause("", "Too large resource version", "ResourceVersionTooLarge")]})


# --- options -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ListOptions:
    """A list's query (`parse`): `limit` 0 is no limit; `revision` the resourceVersion as an
    integer (None: empty), `exact` whether resourceVersionMatch is Exact."""
    limit: int = 0
    continue_token: str = ""
    revision: int | None = None
    exact: bool = False

    @classmethod
    def parse(cls, query: Any) -> "ListOptions":
        """Raises BadRequest (a value that is not an integer, a bad token is `decode_continue`'s)
        or Invalid (ListOptions.meta.k8s.io, Kubernetes' ValidateListOptions)."""
        limit = _int(query.get("limit"), "limit")
        rv_text = query.get("resourceVersion") or ""
        revision = _int(rv_text, "resourceVersion", message="invalid resource version") if rv_text else None
        if revision is not None and revision < 0:
            raise errors.BadRequest(f"invalid resource version: {rv_text!r}")
        token = query.get("continue") or ""
        match = query.get("resourceVersionMatch") or ""
        errs = FieldErrors()
        if match:
            if not rv_text:
                errs.forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden unless resourceVersion is "
                                                       "provided")
            if token:
                errs.forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden when continue is provided")
            if match not in ("Exact", "NotOlderThan"):
                errs.not_supported("resourceVersionMatch", match, ["Exact", "NotOlderThan", ""])
            if match == "Exact" and rv_text == "0":
                errs.forbidden("resourceVersionMatch", 'resourceVersionMatch "exact" is forbidden for '
                                                       'resourceVersion "0"')
        errs.raise_if_any("ListOptions.meta.k8s.io", "")
        if token and revision not in (None, 0):
            raise errors.BadRequest("specifying resource version is not allowed when using continue")
        # "0" is "any revision": the newest; so is a revision with a continue token (the token's rules)
        return cls(limit=max(limit or 0, 0), continue_token=token, revision=None if token else revision or None,
                   exact=match == "Exact")


def _int(text: str | None, name: str, *, message: str | None = None) -> int | None:
    """A query parameter as Go's strconv.ParseInt reads it: ASCII digits and a sign only
    (Python's int() also takes "٣", "1_000" and spaces)."""
    if text in (None, ""):
        return None
    value = int(text) if re.fullmatch(r"[+-]?[0-9]+", str(text)) else None
    if value is None or not -MAX_INT64 - 1 <= value <= MAX_INT64:
        raise errors.BadRequest(f"{message or name}: invalid value {text!r}: must be a 64-bit integer",
                                causes=[errors.Cause(name, "must be a 64-bit integer")])
    return value


# --- continue tokens ---------------------------------------------------------------------------

def encode_continue(start: str, prefix: str, revision: int) -> str:
    """Kubernetes' continue token for a list whose keys start with `prefix`, going on from key
    `start` (the last key answered + NUL) at `revision` (-1: at the newest)."""
    body = json.dumps({"v": TOKEN_VERSION, "rv": revision, "start": start[len(prefix):]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).rstrip(b"=").decode()


def decode_continue(token: str, prefix: str) -> tuple[str, int]:
    """(start key, revision) of a token made by `encode_continue` for `prefix`; BadRequest
    "invalid continue token: continue key is not valid: ..." otherwise, in Kubernetes' words.
    The start key cannot leave `prefix` (a `..` or a `//` is refused as Kubernetes does, and
    reads are bounded by the list's range anyway)."""
    def bad(why: str) -> errors.BadRequest:
        return errors.BadRequest(f"invalid continue token: continue key is not valid: {why}",
                                 causes=[errors.Cause("continue", why)])
    if len(token) > MAX_TOKEN_CHARS:
        raise bad(f"{len(token)} characters long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as e:
        raise bad(str(e)) from None
    if not isinstance(data, dict) or data.get("v") != TOKEN_VERSION:
        version = data.get("v") if isinstance(data, dict) else None
        raise bad(f"server does not recognize this encoded version {version!r}")
    rv, start = data.get("rv"), data.get("start")
    if not isinstance(rv, int) or isinstance(rv, bool) or rv == 0 or not -MAX_INT64 - 1 <= rv <= MAX_INT64:
        raise bad(f"incorrect encoded start resourceVersion (version {TOKEN_VERSION})")
    if not isinstance(start, str) or not start:
        raise bad(f"encoded start key empty (version {TOKEN_VERSION})")
    path = "/" + start.lstrip("/") if not start.startswith("/") else start
    if posixpath.normpath(path) != path or "\x00" in start[:-1]:
        raise bad(repr(start))
    return prefix + path[1:], rv


# --- reading -----------------------------------------------------------------------------------

@dataclass
class _Cursor:
    """Where a list is: the next key to read from and the revision it is read at."""
    start: str
    revision: int | None
    done: bool = False


def _rows(store: Store, res: Resource, namespace: str | None, cur: _Cursor, size: int
          ) -> list[tuple[str, dict]]:
    """The next `size` rows of the list at `cur` as (key, object with resourceVersion);
    advances `cur` (its revision is fixed by the first read)."""
    chunk = store.list_range(res.plural, namespace, start=cur.start, revision=cur.revision, limit=size)
    cur.revision = chunk.revision
    if chunk.last is None:
        cur.done = True
    else:
        cur.start = chunk.last + "\x00"
    return [(key, _with_rv(value, rev)) for key, value, rev in chunk.rows]


@dataclass
class Page:
    """One answer's list metadata and its items, already encoded (`encode_item`)."""
    revision: int
    items: list[bytes]
    continue_token: str = ""
    remaining: int | None = None


def _start(store: Store, res: Resource, namespace: str | None, opts: ListOptions) -> tuple[_Cursor, str]:
    """The cursor a list begins at (from its token, or the start of its range), and the range's prefix."""
    prefix, _ = store.key_range(res.plural, namespace)
    if not opts.continue_token:
        if opts.revision is None or not opts.exact:
            return _Cursor(prefix, None), prefix
        return _Cursor(prefix, opts.revision), prefix
    start, rv = decode_continue(opts.continue_token, prefix)
    return _Cursor(start, rv if rv > 0 else None), prefix


def _first_rows(store: Store, res: Resource, namespace: str | None, opts: ListOptions, cur: _Cursor,
                size: int) -> list[tuple[str, dict]]:
    """The first read of a list, with its errors in Kubernetes' words."""
    try:
        rows = _rows(store, res, namespace, cur, size)
    except FutureRevision as e:
        raise too_large(e.revision, e.current) from None
    except errors.Gone:
        if opts.continue_token:
            prefix, _ = store.key_range(res.plural, namespace)
            raise ContinueExpired(encode_continue(cur.start, prefix, -1)) from None
        raise errors.Gone(EXPIRED) from None
    at = cur.revision or 0
    if opts.revision and not opts.exact and opts.revision > at:
        raise too_large(opts.revision, at)     # NotOlderThan a revision not reached yet
    return rows


def read_page(store: Store, res: Resource, namespace: str | None, sel: Any, opts: ListOptions,
              encode_item: Callable[[list[dict]], list[bytes]]) -> Page:
    """One page of at most `opts.limit` (> 0) matching items (module docstring). Runs its
    store reads in the calling thread: call it on a worker thread."""
    cur, prefix = _start(store, res, namespace, opts)
    want = opts.limit
    size = min(want + 1, CHUNK)
    rows = _first_rows(store, res, namespace, opts, cur, size)
    picked: list[dict] = []
    items: list[bytes] = []
    last_key = None
    more = False
    while True:
        for i, (key, obj) in enumerate(rows):
            if not sel.matches(obj):
                continue
            picked.append(obj)
            if len(picked) + len(items) == want:
                last_key = key
                more = i + 1 < len(rows) or _any_left(store, res, namespace, cur)
                break
        items += encode_item(picked)
        picked = []
        if last_key is not None or cur.done:
            break
        size = min(size * 2, CHUNK)       # selectors skipping many: read more at once (as Kubernetes)
        rows = _rows(store, res, namespace, cur, size)
    page = Page(revision=cur.revision or 0, items=items)
    if more and last_key is not None:
        page.continue_token = encode_continue(last_key + "\x00", prefix, cur.revision or 0)
        if _no_selectors(sel):
            page.remaining = store.count_range(res.plural, namespace, start=last_key + "\x00",
                                               revision=cur.revision or 0)
    return page


def _any_left(store: Store, res: Resource, namespace: str | None, cur: _Cursor) -> bool:
    """Whether any object follows `cur` (leaves `cur` as it was)."""
    probe = _Cursor(cur.start, cur.revision, cur.done)
    while not probe.done:
        if _rows(store, res, namespace, probe, 1):
            return True
    return False


def _no_selectors(sel: Any) -> bool:
    return bool(sel.labels.empty and not sel.fields)


# --- answers -----------------------------------------------------------------------------------

def _list_meta(page: Page) -> dict[str, Any]:
    """ListMeta in Go's field order (resourceVersion, continue, remainingItemCount), omitempty."""
    md: dict[str, Any] = {"resourceVersion": str(page.revision)}
    if page.continue_token:
        md["continue"] = page.continue_token
    if page.remaining is not None:
        md["remainingItemCount"] = page.remaining
    return md


class _Shape:
    """How a list is answered: the head of the answer (everything before the items, in
    Kubernetes' field order) and each item's encoding."""

    def __init__(self, res: Resource, view: tables.View | None, encode: Callable[[Any], bytes]):
        self.res, self.view, self.encode = res, view, encode
        self.now = datetime.now(timezone.utc)

    def head(self, md: dict) -> bytes:
        v, res = self.view, self.res
        if v is None:
            head: dict[str, Any] = {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": md}
            field = "items"
        elif v.kind == "Table":
            head = tables.table(v, res, [], resource_version=None, now=self.now)
            head["metadata"] = md
            del head["rows"]
            field = "rows"
        else:
            head = {"kind": "PartialObjectMetadataList", "apiVersion": v.api_version, "metadata": md}
            field = "items"
        text = self.encode(head)           # ...}\n: the items go in before the closing brace
        return text[:-2] + b',"' + field.encode() + b'":['

    def items(self, objs: list[dict]) -> list[bytes]:
        v = self.view
        if v is None:
            shaped: list[Any] = objs
        elif v.kind == "Table":
            shaped = tables.table(v, self.res, objs, resource_version=None, now=self.now, headers=False)["rows"]
        else:
            shaped = [tables.partial_object_metadata(o, v.api_version) for o in objs]
        return [self.encode(x)[:-1] for x in shaped]


class _Writer:
    """The answer's bytes: the head, the items comma-separated, then `]}` and a newline, in
    blocks of about BLOCK_BYTES (one send per block, not one per item)."""

    def __init__(self, head: bytes):
        self.buf = bytearray(head)
        self.first = True

    def add(self, items: list[bytes]) -> list[bytes]:
        """The blocks filled by `items`."""
        out = []
        for item in items:
            if not self.first:
                self.buf += b","
            self.first = False
            self.buf += item
            if len(self.buf) >= BLOCK_BYTES:
                out.append(bytes(self.buf))
                self.buf.clear()
        return out

    def end(self) -> bytes:
        self.buf += b"]}\n"
        return bytes(self.buf)


async def respond(store: Store, res: Resource, namespace: str | None, sel: Any, opts: ListOptions,
                  view: tables.View | None, encode: Callable[[Any], bytes]) -> Response:
    """The answer to a list request (module docstring): a page when `opts.limit` > 0, else the
    whole list, streamed. `namespace`: None for every namespace (or a cluster-scoped kind);
    `encode` is the server's JSON writer (one value + newline)."""
    namespace = namespace if res.namespaced else ""       # the store's scope of a cluster-scoped kind
    shape = _Shape(res, view, encode)
    media = view.media_type if view is not None else "application/json"
    if opts.limit > 0:
        page = await anyio.to_thread.run_sync(read_page, store, res, namespace, sel, opts, shape.items)
        w = _Writer(shape.head(_list_meta(page)))
        blocks = w.add(page.items) + [w.end()]
        del page
        return StreamingResponse(_aiter(blocks), media_type=media)

    cur, _prefix = _start(store, res, namespace, opts)

    def first() -> list[bytes]:
        rows = _first_rows(store, res, namespace, opts, cur, CHUNK)
        return shape.items([o for _, o in rows if sel.matches(o)])

    def more() -> list[bytes] | None:
        if cur.done:
            return None
        return shape.items([o for _, o in _rows(store, res, namespace, cur, CHUNK) if sel.matches(o)])

    items = await anyio.to_thread.run_sync(first)       # errors here are still a Status
    w = _Writer(shape.head({"resourceVersion": str(cur.revision)}))

    async def body() -> AsyncIterator[bytes]:
        nxt: list[bytes] | None = items
        while nxt is not None:
            for block in w.add(nxt):
                yield block
            try:
                nxt = await anyio.to_thread.run_sync(more)
            except Exception:
                # The answer has started: it can only end early, which the client sees as an
                # incomplete body, never as a shorter list.
                log.exception("list of %s cut short at revision %s", res.plural, cur.revision)
                raise
        yield w.end()

    return StreamingResponse(body(), media_type=media)


async def _aiter(blocks: list[bytes]) -> AsyncIterator[bytes]:
    for block in blocks:
        yield block
