"""The HTTP API: Kubernetes' paths and semantics over the revision-log store.

`create_app(settings, store)` builds a FastAPI app with no module-level
state. Every resource in `shoal.machinery.api.resources` gets Kubernetes' routes
(collection, item, `/status`, `/scale`, `pods/{name}/log`); handlers are
thin: parse → authorize → `Registry` (the semantics: defaulting, CAS,
generation, graceful deletion, cascading) → JSON. Requests for resource paths
reach their handler through `ShoalAPI`'s `RouteTable` (a dictionary lookup)
rather than FastAPI's router; FastAPI still serves everything else and the
OpenAPI document of all of it.

The request pipeline, as Kubernetes' (docs/api.md "Dry run and limits"):
- authentication before anything else; a request body is read only after it, and only up
  to `MAX_REQUEST_BYTES` (3 MiB: Content-Length checked first, then the bytes as they
  arrive; 413 RequestEntityTooLarge), and a large body is decoded off the event loop;
- names in the URL are refused (400) when they hold control characters;
- `dryRun=All` (the query of POST/PUT/PATCH; the DeleteOptions body or the query of a
  DELETE) runs the very same handler on `dryrun.dry_run_view(registry)`: authorized,
  admitted, validated and checked as the real call, nothing stored; any other value is 422;
- every JSON answer is written as Kubernetes' serializer writes it (compact, `<`, `>` and `&`
  escaped as Go does, a final newline), a Status in Go's field order (`errors.status_object`).

Next: `apiserver.registry` holds the semantics, `apiserver.watch` streams.
"""
from __future__ import annotations

import json
import logging
import math
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shoal.apiserver import listing
from shoal.apiserver import auth, podsecurity, protobuf, tables, watch
from shoal.apiserver import warnings as client_warnings
from shoal.apiserver import managedfields
from shoal.apiserver import nodecerts
from shoal.apiserver.dryrun import dry_run_view
from shoal.machinery.api import errors
from shoal.machinery.api.models.field import FieldErrors
from shoal.machinery.api.models.validation import validate_dry_run
from shoal.machinery.api.names import control_characters
from shoal.apiserver.registry import Registry, Selectors
from shoal.machinery.api.resources import RESOURCES, Resource
from shoal.apiserver.routetable import RouteTable
from shoal.apiserver.settings import Settings
from shoal.apiserver.store import Store

log = logging.getLogger(__name__)

OBJECT_BODY = {"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}, "required": True}}
PATCH_BODY = {"requestBody": {"content": {
    "application/merge-patch+json": {"schema": {"type": "object"}},
    "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
    "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
}, "required": True}}
DELETE_BODY = {"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}, "required": False}}

MAX_REQUEST_BYTES = 3 * 1024 * 1024       # Kubernetes' --max-request-bytes default (apiserver MaxRequestBodyBytes)
DECODE_OFF_LOOP_BYTES = 64 * 1024         # a body larger than this is decoded, and its write run, on a thread


def _status_response(e: errors.ApiError) -> Response:
    # A refused upload may still be arriving: close the connection rather than read the rest.
    headers = {"Connection": "close"} if e.code == 413 else {}
    retry = e.details.get("retryAfterSeconds")
    if isinstance(retry, int) and retry > 0:        # as Kubernetes' ErrorNegotiated: 429, 504 Timeout
        headers["Retry-After"] = str(retry)
    return _Json(e.status(), status_code=e.code or 500, headers=headers)


async def _read_body(request: Request) -> bytes:
    """The request's body, at most MAX_REQUEST_BYTES: refused (413) by its Content-Length
    before any byte is read, else as soon as more than the limit has arrived."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise errors.BadRequest(f"Content-Length: invalid value {declared!r}") from None
        if size > MAX_REQUEST_BYTES:
            raise _too_large(size)
    chunks: list[bytes] = []
    got = 0
    async for chunk in request.stream():
        got += len(chunk)
        if got > MAX_REQUEST_BYTES:
            raise _too_large(None)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int | None) -> errors.RequestEntityTooLarge:
    what = f"the body is {size} bytes; " if size is not None else ""
    return errors.RequestEntityTooLarge(f"Request entity too large: {what}limit is {MAX_REQUEST_BYTES}")


# How deep a request body may nest (objects and arrays): far above any kind shoal serves (a
# pod's deepest field is about a dozen levels down), far below what the decoders and the code
# after them (validation, patches, deep copies) can recurse through. Deeper: 400, never a 500.
MAX_BODY_DEPTH = 100


def _too_deep() -> errors.BadRequest:
    return errors.BadRequest(f"the request body nests objects and arrays more than {MAX_BODY_DEPTH} levels deep")


def nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` (decoded JSON) holds objects or arrays more than `limit` levels deep.
    Iterative, so any depth can be measured."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children: Any = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _decode_body(raw: bytes, content_type: str) -> Any:
    """JSON (also without a Content-Type: kubectl's scale PUT, the Python client), YAML for
    apply-patch+yaml, or Kubernetes' protobuf (typed kubectl commands: `apiserver.protobuf`).
    BadRequest for a body that does not decode, or nests deeper than MAX_BODY_DEPTH."""
    if protobuf.is_protobuf(content_type):
        value = protobuf.decode(raw)
    else:
        try:
            value = json.loads(raw)
        except RecursionError:
            raise _too_deep() from None
        except ValueError:
            if "yaml" not in content_type:
                raise errors.BadRequest("the request body is not valid JSON") from None
            import yaml
            try:
                value = yaml.safe_load(raw)
            except RecursionError:
                raise _too_deep() from None
            except yaml.YAMLError as e:
                raise errors.BadRequest(f"the request body is not valid YAML: {e}") from None
    if nests_deeper_than(value, MAX_BODY_DEPTH):
        raise _too_deep()
    return value


async def _body(request: Request, *, required: bool = True) -> Any:
    """The decoded body (None when empty and not `required`). Call it only once the request is
    authenticated (and, where the decision does not need the body, authorized). Sets
    `request.state.body_bytes`, which `_heavy` reads."""
    raw = await _read_body(request)
    request.state.body_bytes = len(raw)
    if not raw.strip():
        if required:
            raise errors.BadRequest("the request body is empty; an object was expected")
        return None
    ct = request.headers.get("content-type", "")
    if len(raw) > DECODE_OFF_LOOP_BYTES:
        # JSON at ~100 MB/s and YAML far slower: megabytes would hold every other request.
        return await anyio.to_thread.run_sync(_decode_body, raw, ct)
    return _decode_body(raw, ct)


def _heavy(request: Request) -> bool:
    """Whether the request brought a body large enough that its write (decoding into models,
    validation) belongs on a thread rather than the event loop."""
    return getattr(request.state, "body_bytes", 0) > DECODE_OFF_LOOP_BYTES


_OPTIONS_KIND = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}


def _dry_run(request: Request, also: list | None = None) -> bool:
    """Whether the write is a dry run: `dryRun` of the query (any number of times) and `also`
    (a DeleteOptions body's). Only "All" is known; anything else is 422, as Kubernetes'
    ValidateDryRun answers (`CreateOptions.meta.k8s.io "" is invalid: dryRun: ...`)."""
    values = request.query_params.getlist("dryRun") + list(also or [])
    errs = FieldErrors()
    validate_dry_run(errs, values)
    errs.raise_if_any(f"{_OPTIONS_KIND.get(request.method, 'DeleteOptions')}.meta.k8s.io", "")
    return bool(values)


def _field_manager(request: Request, *, apply: bool = False) -> str:
    """The request's field manager (`managedfields.request_manager`): the `fieldManager`
    query parameter, else the User-Agent's product; 422 for a bad one, an apply without one,
    or `force` on a patch that is not an apply."""
    q = request.query_params
    return managedfields.request_manager(q.get("fieldManager"), request.headers.get("user-agent"),
                                         options=_OPTIONS_KIND.get(request.method, "PatchOptions"), apply=apply,
                                         force=q.get("force"))


def _delete_options(request: Request, body: Any) -> tuple[dict, bool]:
    """A DELETE's options: the DeleteOptions body (kubectl puts everything there, dryRun
    included) with the query's `gracePeriodSeconds`, `propagationPolicy`, `orphanDependents`
    and `dryRun` (the Python client's form) over it; decoded and validated as a DeleteOptions
    (400 for an unknown field or a wrong type, 422 for a value out of range or not supported,
    e.g. `gracePeriodSeconds: 2**70`). Returns (options for `Registry.delete`, dry run)."""
    if body is not None and not isinstance(body, dict):
        raise errors.BadRequest("the request body must be a DeleteOptions object")
    opts = dict(body or {})
    q = request.query_params
    if q.get("gracePeriodSeconds") is not None:
        try:
            opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
        except ValueError:
            raise errors.BadRequest(f"gracePeriodSeconds: invalid value {q['gracePeriodSeconds']!r}: must be an "
                                    f"integer", causes=[errors.Cause("gracePeriodSeconds", "must be an integer")]
                                    ) from None
    if q.get("propagationPolicy"):
        opts["propagationPolicy"] = q["propagationPolicy"]
    if q.get("orphanDependents") is not None:
        if q["orphanDependents"].lower() not in ("true", "false", "1", "0"):
            raise errors.BadRequest(f"orphanDependents: invalid value {q['orphanDependents']!r}: must be true or "
                                    f"false", causes=[errors.Cause("orphanDependents", "must be true or false")])
        opts["orphanDependents"] = q["orphanDependents"].lower() in ("true", "1")
    from shoal.machinery.api.models import validate
    opts = validate("DeleteOptions", opts)
    dry = _dry_run(request, opts.pop("dryRun", None))
    opts.pop("kind", None)
    opts.pop("apiVersion", None)
    orphan = opts.pop("orphanDependents", None)
    if orphan is not None:          # the legacy form of the policy (validation refused both at once)
        opts["propagationPolicy"] = "Orphan" if orphan else "Background"
    return opts, dry


def _orphan_dependents(request: Request, body: Any) -> bool | None:
    """The DELETE's `orphanDependents` as the client sent it (the query's over the body's),
    None when absent; `_delete_options` has validated it."""
    q = request.query_params.get("orphanDependents")
    if q is not None:
        return q.lower() in ("true", "1")
    value = body.get("orphanDependents") if isinstance(body, dict) else None
    return value if isinstance(value, bool) else None


def _check_path_names(**params: str | None) -> None:
    """A namespace or name taken from the URL must be one printable line (400 otherwise): it
    may end up in a header, a log line or an agent's request."""
    for what, value in params.items():
        problems = control_characters(value) if value else []
        if problems:
            raise errors.BadRequest(f"invalid {what} {value!r} in the URL: {problems[0]}",
                                    causes=[errors.Cause(what, problems[0])])


def _authenticate(scope, cache: "auth.TokenCache") -> None:
    """Put the bearer token's principal in `request.state.principal`, or raise ApiError (401)."""
    header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
    scope.setdefault("state", {})["principal"] = cache.get(header)


class _Authn:
    """Bearer-token authentication for every path but the health checks; the principal
    goes to `request.state.principal`."""

    def __init__(self, app, *, cache: "auth.TokenCache", open_paths: set[str]):
        self.app, self.cache, self.open_paths = app, cache, open_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        try:
            _authenticate(scope, self.cache)
        except errors.ApiError as e:
            return await _status_response(e)(scope, receive, send)
        return await self.app(scope, receive, send)


class ShoalAPI(FastAPI):
    """FastAPI, with the resource routes answered straight from a `RouteTable`.

    Every object read and write of the cluster is a resource route; for those, FastAPI's
    router, dependency solving and middleware chain were a fifth of the server's CPU per
    request. A resource path is resolved by dictionary lookup, authenticated as `_Authn`
    does, and handed to the very handler FastAPI would call, whose errors become the same
    Status objects FastAPI's exception handlers make. Anything the table does not know goes
    to FastAPI unchanged: the meta endpoints, discovery, the OpenAPI document, pod logs, and
    every 404/405/redirect.
    """

    routes_fast: RouteTable | None = None
    authn_cache: "auth.TokenCache | None" = None

    async def __call__(self, scope, receive, send):
        table = self.routes_fast
        if scope["type"] == "http" and table is not None:
            hit = table.resolve(scope["method"], scope["path"])
            if hit is not None:
                handler, params = hit
                fv = _field_validation(scope)
                with client_warnings.collecting(fv or "Strict") as texts:
                    try:
                        _authenticate(scope, self.authn_cache)
                        if fv is None:
                            raise errors.BadRequest(
                                "fieldValidation: Unsupported value: supported values: \"Ignore\", \"Strict\", "
                                "\"Warn\"", causes=[errors.Cause("fieldValidation", "Unsupported value",
                                                                 "FieldValueNotSupported")])
                        protobuf.check_accept(scope)        # answers are JSON: 406 if it takes only protobuf
                        response = await handler(Request(scope, receive), **params)
                    except errors.ApiError as e:
                        response = _status_response(e)
                    except StarletteHTTPException as e:
                        response = _http_error(e)
                    except Exception as e:  # noqa: BLE001 — answered as FastAPI's handler would
                        log.exception("internal error")
                        response = _status_response(errors.ApiError(f"internal error: {type(e).__name__}: {e}"))
                for value in client_warnings.header_values(texts):
                    response.headers.append("Warning", value)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _field_validation(scope) -> str | None:
    """The request's `fieldValidation` query parameter (default Strict); None when it names
    no known value."""
    from urllib.parse import parse_qs
    raw = scope.get("query_string") or b""
    if b"fieldValidation" not in raw:
        return "Strict"
    v = (parse_qs(raw.decode("latin-1")).get("fieldValidation") or ["Strict"])[-1]
    return v if v in client_warnings.FIELD_VALIDATIONS else None


def _http_error(e: StarletteHTTPException) -> JSONResponse:
    if e.status_code == 404:
        return _status_response(errors.NotFound("the server could not find the requested resource"))
    if e.status_code == 405:
        return _status_response(errors.MethodNotAllowed(
            "the server does not allow this method on the requested resource"))
    return _status_response(errors.ApiError(str(e.detail), code=e.status_code, reason="BadRequest"))


# What Go's encoding/json escapes in strings beyond what Python's does (HTML-safe output);
# these characters occur only inside JSON strings, so replacing them in the text is exact.
_GO_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
               ("\u2029", "\\u2029"))


def encode_json(content: Any) -> bytes:
    """JSON as Kubernetes' serializer writes it (json.Encoder.Encode): compact, UTF-8,
    `<`/`>`/`&`/U+2028/U+2029 escaped, one final newline."""
    text = json.dumps(content, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in _GO_ESCAPES:
        if char in text:
            text = text.replace(char, escaped)
    return (text + "\n").encode()


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return encode_json(content)


def _json(obj: Any, status: int = 200) -> JSONResponse:
    """Objects are plain JSON already: answer them directly, skipping FastAPI's
    `jsonable_encoder`, which walks every field of every object again. A Status (a delete's,
    a binding's) is put in Kubernetes' field order and omitempty."""
    if isinstance(obj, dict) and obj.get("kind") == "Status":
        obj = errors.normalize_status(obj)
    return _Json(obj, status_code=status)


def _bool(v: str | None) -> bool:
    return (v or "").lower() in ("true", "1", "yes")


def create_app(settings: Settings, store: Store) -> FastAPI:
    hub = watch.WatchHub(store, poll_interval=settings.watch_poll_interval, read_on_loop=store.dialect == "sqlite")
    registry = Registry(store, settings)

    if store.dialect == "sqlite":
        async def store_call(fn, *args):
            # One get or one write on local SQLite takes well under a millisecond: running it
            # on the event loop beats a hop to a worker thread, whose hand-over and GIL
            # contention cost more than the call (measured: 56 -> 107 pods/s in
            # bench/controller.py, GET p50 26 -> 6 ms). Lists stay on threads: they can be long.
            return fn(*args)
    else:
        async def store_call(fn, *args):
            # A remote database can stall (locks held by another API server, the network):
            # never on the event loop.
            return await anyio.to_thread.run_sync(fn, *args)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Few request threads: they all contend for the GIL, and the one holding the store's
        # write lock must get it back quickly (measured: 30 runnable threads starve it).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        await hub.start()
        registry.start()
        try:
            yield
        finally:
            registry.stop()
            await hub.stop()

    app = ShoalAPI(title="shoal API", version=settings.version, lifespan=lifespan,
                  description="Kubernetes-shaped API of shoal: namespaces, pods, nodes, events, deployments, "
                              "replicasets, leases.")
    app.state.settings = settings
    app.state.store = store
    app.state.hub = hub
    app.state.registry = registry
    app.state.node_admission = auth.NodeAdmission(store, event_qps=settings.node_event_qps,
                                                  event_burst=settings.node_event_burst)

    # ------------------------------------------------------------------ errors
    @app.exception_handler(errors.ApiError)
    async def _api_error(_req: Request, e: errors.ApiError):
        return _status_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, e: RequestValidationError):
        causes = [errors.Cause(".".join(str(x) for x in err.get("loc", ())), err.get("msg", ""))
                  for err in e.errors()]
        return _status_response(errors.BadRequest("invalid request parameters", causes=causes))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, e: StarletteHTTPException):
        return _http_error(e)

    @app.exception_handler(Exception)
    async def _internal(_req: Request, e: Exception):
        log.exception("internal error")
        return _status_response(errors.ApiError(f"internal error: {type(e).__name__}: {e}"))

    # ------------------------------------------------------------------ auth
    # /cacerts is open on purpose: agents fetch the CA before they trust it, then check
    # it against the pin in their join token (agent.join)
    open_paths = {"/healthz", "/readyz", "/livez", "/cacerts"}
    authn_cache = auth.TokenCache(store)
    app.state.authn_cache = authn_cache

    # A plain ASGI middleware: Starlette's BaseHTTPMiddleware (`@app.middleware`) costs an
    # extra task and stream per request, a large share of a small request's time.
    app.add_middleware(_Authn, cache=authn_cache, open_paths=open_paths)
    app.authn_cache = authn_cache

    def principal(request: Request) -> auth.Principal:
        return request.state.principal

    # ------------------------------------------------------------------ meta endpoints
    @app.get("/healthz", response_class=PlainTextResponse, tags=["meta"])
    async def healthz():
        return "ok"

    @app.get("/livez", response_class=PlainTextResponse, tags=["meta"])
    async def livez():
        return "ok"

    @app.get("/readyz", response_class=PlainTextResponse, tags=["meta"])
    async def readyz():
        try:
            await anyio.to_thread.run_sync(store.current_revision)
        except Exception as e:  # noqa: BLE001 — readiness reports any datastore failure
            raise errors.ServiceUnavailable(f"datastore not ready: {e}") from e
        return "ok"

    @app.get("/version", tags=["meta"])
    async def version():
        return {"major": "1", "minor": "32", "gitVersion": settings.version, "gitCommit": "",
                "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "cpython",
                "platform": "linux/amd64"}

    @app.get("/cacerts", response_class=PlainTextResponse, tags=["meta"])
    async def cacerts():
        """The CA certificate (PEM) this server's certificate chains to, for joining agents."""
        from shoal.apiserver.tls import ca_path
        if not settings.tls:
            raise errors.NotFound("this server does not serve TLS: it has no CA")
        try:
            pem = ca_path(settings.data_dir).read_bytes()
        except OSError as e:
            raise errors.NotFound(f"the CA certificate {ca_path(settings.data_dir)} cannot be read: {e.strerror}")
        return Response(pem, media_type="application/x-pem-file")

    from shoal.apiserver.discovery import add_discovery_routes
    add_discovery_routes(app, settings.version)

    @app.post("/shoal/v1/join", tags=["shoal"], openapi_extra=OBJECT_BODY)
    async def join(request: Request):
        """Exchange the join token and the node password for a node credential (k3s-style
        agent join; `auth.join_node` says when a name already taken is refused), and the
        agent's CSR for its serving certificate (`apiserver.nodecerts`)."""
        p = principal(request)
        if p.role not in ("join", "admin"):
            raise errors.Forbidden("only the join token may join nodes")
        body = await _body(request)
        node = (body or {}).get("nodeName") if isinstance(body, dict) else None
        from shoal.machinery.api.names import is_dns1123_subdomain
        if not isinstance(node, str) or not node or is_dns1123_subdomain(node):
            raise errors.Invalid("nodeName: a valid DNS-1123 subdomain is required",
                                 causes=[errors.Cause("nodeName", "a valid DNS-1123 subdomain is required")])
        password = body.get("nodePassword")
        if password is not None and (not isinstance(password, str) or len(password) > 1024):
            raise errors.Invalid("nodePassword: a string of at most 1024 characters is required",
                                 causes=[errors.Cause("nodePassword", "a string of at most 1024 characters")])
        pending = nodecerts.prepare(body, node, request.client)     # checked before anything is written
        tok = await anyio.to_thread.run_sync(
            lambda: auth.join_node(store, node, password, admin=p.role == "admin"))
        authn_cache.clear()
        cert = await anyio.to_thread.run_sync(nodecerts.issue, store, settings.data_dir, node, pending)
        return {"nodeName": node, "token": tok, **cert}

    @app.post("/shoal/v1/node-certificate", tags=["shoal"], openapi_extra=OBJECT_BODY)
    async def node_certificate(request: Request):
        """A node renews its agent's serving certificate with its own credential
        (`apiserver.nodecerts`, `agent.join`)."""
        p = principal(request)
        if p.role != "node":
            raise errors.Forbidden("only a node's own credential may renew its serving certificate")
        body = await _body(request)
        node = nodecerts.renewal_node(p.role, p.subject, body)
        pending = nodecerts.prepare(body, node, request.client, required=True)
        cert = await anyio.to_thread.run_sync(nodecerts.issue, store, settings.data_dir, node, pending)
        return {"nodeName": node, **cert}

    @app.post("/shoal/v1/tokens/rotate", tags=["shoal"], openapi_extra=OBJECT_BODY)
    async def rotate(request: Request):
        p = principal(request)
        if p.role != "admin":
            raise errors.Forbidden("only an admin may rotate tokens")
        body = await _body(request)
        role = body.get("role") if isinstance(body, dict) else None
        tok = await anyio.to_thread.run_sync(auth.rotate_token, store, settings.data_dir, role)
        registry.tokens[role] = tok
        authn_cache.clear()
        return {"role": role, "token": tok}

    # ------------------------------------------------------------------ resources
    table = RouteTable(RESOURCES)
    for res in RESOURCES:
        _add_resource_routes(app, table, res, registry, hub, settings, principal, store_call)
    app.routes_fast = table
    return app


def _add_resource_routes(app: FastAPI, table: RouteTable, res: Resource, registry: Registry, hub: watch.WatchHub,
                         settings: Settings, principal, store_call) -> None:
    root = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
    coll = f"{root}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{root}/{res.plural}"
    item = coll + "/{name}"
    tag = res.plural
    admission: auth.NodeAdmission = app.state.node_admission      # NodeRestriction, nodes' Events

    async def do_list(request: Request, namespace: str | None = None):
        q = request.query_params
        p = principal(request)
        verb = "watch" if _bool(q.get("watch")) else "list"
        auth.authorize(p, verb, res, namespace=namespace, field_selector=q.get("fieldSelector"))
        sel = Selectors.parse(q.get("labelSelector"), q.get("fieldSelector"))
        if verb == "watch":
            return await _watch(request, res, namespace, sel)
        view = tables.view_for(request.headers.get("accept"), q, target="list")     # kubectl get: a Table
        # limit/continue pages and resourceVersion, item by item (apiserver.listing)
        return await listing.respond(registry.store, res, namespace, sel,
                                     listing.ListOptions.parse(q), view, encode_json)

    async def _watch(request: Request, res: Resource, namespace: str | None, sel: Selectors):
        q = request.query_params
        view = tables.view_for(request.headers.get("accept"), q, target="watch")
        rv = q.get("resourceVersion") or ""
        try:
            timeout = min(float(q.get("timeoutSeconds") or settings.max_watch_seconds), settings.max_watch_seconds)
        except ValueError:
            raise errors.BadRequest(f"timeoutSeconds: invalid value {q.get('timeoutSeconds')!r}") from None
        if math.isnan(timeout):
            raise errors.BadRequest(f"timeoutSeconds: invalid value {q.get('timeoutSeconds')!r}")
        if timeout <= 0:
            timeout = settings.max_watch_seconds
        initial: list[dict] | None = None
        if rv in ("", "0"):
            items, start = await anyio.to_thread.run_sync(registry.list, res, namespace, sel)
            initial = items
        else:
            try:
                start = int(rv)
            except ValueError:
                raise errors.BadRequest(f"resourceVersion: invalid value {rv!r}: must be an integer") from None
            if not 0 <= start < 2**63:     # a revision is an int64 (and SQLite's integer)
                raise errors.BadRequest(f"resourceVersion: invalid value {rv!r}")

        def matches(obj: dict) -> bool:
            if namespace and (obj.get("metadata") or {}).get("namespace") != namespace:
                return False
            return sel.matches(obj)

        def bookmark(rev: int) -> dict:
            return {"kind": res.kind, "apiVersion": res.api_version, "metadata": {"resourceVersion": str(rev)}}

        convert = None if view is None else tables.WatchConverter(view, res)     # kubectl get -w: Tables

        async def gen():
            async for chunk in watch.stream(hub, resource=res.plural, start_revision=start, matches=matches,
                                            initial=initial, timeout=timeout,
                                            bookmark_interval=settings.bookmark_interval
                                            if _bool(q.get("allowWatchBookmarks")) else None,
                                            bookmark_object=bookmark, is_disconnected=request.is_disconnected):
                yield chunk if convert is None else convert.chunk(chunk)

        return StreamingResponse(gen(), media_type="application/json",
                                 headers={"Cache-Control": "no-cache, private", "X-Content-Type-Options": "nosniff"})

    async def write(request: Request, fn):
        """Run a registry write: as `store_call` does, but on a thread when the request brought
        a large body (its decoding into models and validation would hold the event loop)."""
        if _heavy(request):
            return await anyio.to_thread.run_sync(fn)
        return await store_call(fn)

    def semantics(dry_run: bool) -> Registry:
        """The registry the write runs on: the real one, or its dry-run view (apiserver.dryrun)."""
        return dry_run_view(registry) if dry_run else registry

    def namespace_labels(ns: str) -> dict | None:
        obj = registry.store.get("namespaces", None, ns)
        return ((obj or {}).get("metadata") or {}).get("labels")

    def pod_security(res: Resource, namespace: str | None, new: Any, old: dict | None) -> None:
        """Pod Security admission (apiserver.podsecurity): Forbidden for a pod its namespace's
        enforce level refuses; warnings for the rest."""
        ns = namespace
        if ns is None and isinstance(new, dict) and isinstance(new.get("metadata"), dict):
            ns = new["metadata"].get("namespace")
        for text in podsecurity.admit(res.kind, ns, new if isinstance(new, dict) else None, old,
                                      namespace_labels=namespace_labels, default_enforce=settings.pod_security,
                                      audit=lambda line: log.warning("pod security audit: %s", line)):
            client_warnings.warn(text)

    async def do_create(request: Request, namespace: str | None = None):
        p = principal(request)
        dry = _dry_run(request)
        if p.role not in ("admin", "node"):       # nothing in the body could make this allowed
            auth.authorize(p, "create", res, namespace=namespace)
        body = await _body(request)
        auth.authorize(p, "create", res, namespace=namespace, obj=body if isinstance(body, dict) else None)
        admission.admit(p, res, body if isinstance(body, dict) else None, None)
        pod_security(res, namespace, body, None)
        manager = _field_manager(request)
        reg = semantics(dry)
        out = await write(request, lambda: reg.create(res, namespace, body, manager=manager))
        return _json(out, 201)

    async def do_get(request: Request, name: str, namespace: str | None = None):
        p = principal(request)
        view = tables.view_for(request.headers.get("accept"), request.query_params, target="object")
        if auth.needs_stored_for_get(p, res):      # a node may read only the pods bound to it
            obj = await store_call(registry.get, res, namespace, name)
            auth.authorize(p, "get", res, namespace=namespace, name=name, old=obj)
        elif auth.needs_graph_for_get(p, res):     # only what the pods bound to the node reference
            related = await anyio.to_thread.run_sync(auth.node_related_objects, registry.store, p.subject, namespace)
            auth.authorize(p, "get", res, namespace=namespace, name=name, related=related)
            obj = await store_call(registry.get, res, namespace, name)
        else:
            auth.authorize(p, "get", res, namespace=namespace, name=name)
            obj = await store_call(registry.get, res, namespace, name)
        return _json(obj) if view is None else tables.response(view, tables.for_object(view, res, obj), encode_json)

    async def do_update(request: Request, name: str, namespace: str | None = None, subresource: str | None = None):
        p = principal(request)
        dry = _dry_run(request)
        auth.authorize_before_read(p, "update", res, namespace=namespace, name=name, subresource=subresource)
        old = await store_call(registry.get, res, namespace, name)
        # Decided on the URL and the stored object (never the body): before the body is read.
        auth.authorize(p, "update", res, namespace=namespace, name=name, subresource=subresource, old=old)
        body = await _body(request)
        admission.admit(p, res, body if isinstance(body, dict) else None, old, subresource=subresource)
        if subresource != "status":     # /status keeps the stored spec
            pod_security(res, namespace, body, old)
        manager = _field_manager(request)
        reg = semantics(dry)
        return _json(await write(
            request, lambda: reg.update(res, namespace, name, body, subresource=subresource, current=old,
                                        manager=manager)))

    async def do_patch(request: Request, name: str, namespace: str | None = None, subresource: str | None = None):
        p = principal(request)
        dry = _dry_run(request)
        ct = (request.headers.get("content-type") or "application/merge-patch+json").split(";")[0].strip()
        auth.authorize_before_read(p, "patch", res, namespace=namespace, name=name, subresource=subresource)
        old = None
        try:
            old = await store_call(registry.get, res, namespace, name)
        except errors.NotFound:
            if ct != "application/apply-patch+yaml":
                raise
        auth.authorize(p, "patch", res, namespace=namespace, name=name, subresource=subresource, old=old,
                       obj=old)
        apply = ct == "application/apply-patch+yaml"
        manager = _field_manager(request, apply=apply)
        body = await _body(request)
        def admit(cur: dict | None, new: dict) -> None:
            admission.admit(p, res, new, cur, subresource=subresource)     # a node's own Node: /status too
            if subresource not in ("status", "scale"):      # a status write never changes the spec
                pod_security(res, namespace, new, cur)
        reg = semantics(dry)
        if apply:       # server-side apply: 201 when it created the object
            out, created = await write(request, lambda: reg.apply(
                res, namespace, name, body, manager=manager, force=_bool(request.query_params.get("force")),
                subresource=subresource, admit=admit))
            return _json(out, 201 if created else 200)
        return _json(await write(
            request, lambda: reg.patch(res, namespace, name, body, ct, subresource=subresource, admit=admit,
                                       manager=manager)))

    async def do_delete(request: Request, name: str, namespace: str | None = None):
        p = principal(request)
        auth.authorize_before_read(p, "delete", res, namespace=namespace, name=name)
        old = await store_call(registry.get, res, namespace, name)
        auth.authorize(p, "delete", res, namespace=namespace, name=name, old=old)
        body = await _body(request, required=False)
        opts, dry = _delete_options(request, body)
        reg = semantics(dry)
        out, removed = await write(request, lambda: reg.delete_outcome(res, namespace, name, opts))
        if res.kind == "Node" and not dry:      # the name is free: a new machine may join under it
            await anyio.to_thread.run_sync(auth.release_node_name, registry.store, name)
        # Kubernetes answers 202 Accepted when the object is still there and the (legacy)
        # orphanDependents: false asked for its dependents to go; 200 otherwise (handlers/delete.go).
        return _json(out, 202 if not removed and _orphan_dependents(request, body) is False else 200)

    async def do_delete_collection(request: Request, namespace: str | None = None):
        """DELETE on a collection (Kubernetes' deletecollection): every object matching
        `labelSelector`/`fieldSelector`, each deleted as a DELETE of it with the same options
        would; answers the {Kind}List of the objects selected."""
        p = principal(request)
        q = request.query_params
        auth.authorize(p, "deletecollection", res, namespace=namespace)
        sel = Selectors.parse(q.get("labelSelector"), q.get("fieldSelector"))
        opts, dry = _delete_options(request, await _body(request, required=False))
        reg = semantics(dry)
        # Many deletes, each its own transaction: never on the event loop.
        out = await anyio.to_thread.run_sync(lambda: reg.delete_collection(res, namespace, sel, opts))
        if res.kind == "Node" and not dry:
            for item in out.get("items") or []:
                node = item["metadata"]["name"]
                if registry.store.get("nodes", None, node) is None:     # gone, not held by a finalizer
                    await anyio.to_thread.run_sync(auth.release_node_name, registry.store, node)
        return _json(out)

    async def do_scale_get(request: Request, name: str, namespace: str | None = None):
        auth.authorize(principal(request), "get", res, namespace=namespace, name=name, subresource="scale")
        return _json(await store_call(registry.get_scale, res, namespace, name))

    async def do_scale_put(request: Request, name: str, namespace: str | None = None):
        auth.authorize(principal(request), "update", res, namespace=namespace, name=name, subresource="scale")
        dry = _dry_run(request)
        manager = _field_manager(request)
        body = await _body(request)
        reg = semantics(dry)
        return _json(await write(request, lambda: reg.update_scale(res, namespace, name, body, None,
                                                                   manager=manager)))

    async def do_scale_patch(request: Request, name: str, namespace: str | None = None):
        auth.authorize(principal(request), "patch", res, namespace=namespace, name=name, subresource="scale")
        dry = _dry_run(request)
        body = await _body(request)
        ct = (request.headers.get("content-type") or "application/merge-patch+json").split(";")[0].strip()
        manager = _field_manager(request, apply=ct == "application/apply-patch+yaml")
        force = _bool(request.query_params.get("force"))
        reg = semantics(dry)
        return _json(await write(request, lambda: reg.update_scale(res, namespace, name, body, ct, manager=manager,
                                                                   force=force)))

    async def do_bind(request: Request, name: str, namespace: str | None = None):
        p = principal(request)
        dry = _dry_run(request)
        old = await store_call(registry.get, res, namespace, name)
        auth.authorize(p, "create", res, namespace=namespace, name=name, subresource="binding", old=old)
        body = await _body(request)
        reg = semantics(dry)
        return _json(await write(request, lambda: reg.bind(namespace, name, body, current=old)), 201)

    async def do_log(request: Request, name: str, namespace: str | None = None):
        auth.authorize(principal(request), "get", res, namespace=namespace, name=name, subresource="log")
        return await registry.pod_log(namespace, name, request.query_params)

    # (path, method, handler, route name, extra keyword arguments of add_api_route)
    ns = res.namespaced
    sing = res.singular
    routes = [
        (coll, "GET", _collection_route(do_list, ns), f"list or watch {res.plural}", {}),
        (coll, "POST", _collection_route(do_create, ns), f"create a {sing}",
         {"openapi_extra": OBJECT_BODY, "status_code": 201}),
        (item, "GET", _item_route(do_get, ns), f"read a {sing}", {}),
        (item, "PUT", _item_route(do_update, ns), f"replace a {sing}", {"openapi_extra": OBJECT_BODY}),
        (item, "PATCH", _item_route(do_patch, ns), f"patch a {sing}", {"openapi_extra": PATCH_BODY}),
        (item, "DELETE", _item_route(do_delete, ns), f"delete a {sing}", {"openapi_extra": DELETE_BODY}),
    ]
    if res.kind != "Namespace":     # as in Kubernetes, namespaces are deleted one by one
        routes.append((coll, "DELETE", _collection_route(do_delete_collection, ns), f"delete a collection of "
                       f"{res.plural}", {"openapi_extra": DELETE_BODY}))
    if ns:
        routes.append((f"{root}/{res.plural}", "GET", _collection_route(do_list, False),
                       f"list {res.plural} in all namespaces", {}))
    if "status" in res.subresources:
        routes += [
            (item + "/status", "GET", _item_route(do_get, ns), f"read the status of a {sing}", {}),
            (item + "/status", "PUT", _item_route(do_update, ns, "status"), f"replace the status of a {sing}",
             {"openapi_extra": OBJECT_BODY}),
            (item + "/status", "PATCH", _item_route(do_patch, ns, "status"), f"patch the status of a {sing}",
             {"openapi_extra": PATCH_BODY}),
        ]
    if "scale" in res.subresources:
        routes += [
            (item + "/scale", "GET", _item_route(do_scale_get, ns), f"read the scale of a {sing}", {}),
            (item + "/scale", "PUT", _item_route(do_scale_put, ns), f"replace the scale of a {sing}",
             {"openapi_extra": OBJECT_BODY}),
            (item + "/scale", "PATCH", _item_route(do_scale_patch, ns), f"patch the scale of a {sing}",
             {"openapi_extra": PATCH_BODY}),
        ]
    if "binding" in res.subresources:
        routes.append((item + "/binding", "POST", _item_route(do_bind, ns), f"bind a {sing} to a node",
                       {"openapi_extra": OBJECT_BODY, "status_code": 201}))
    if "log" in res.subresources:
        routes.append((item + "/log", "GET", _item_route(do_log, ns), f"read the log of a {sing}",
                       {"response_class": PlainTextResponse}))
    for path, method, handler, name, kw in routes:
        app.add_api_route(path, handler, methods=[method], tags=[tag], name=name, **kw)
        if not path.endswith("/log"):        # streamed from the agent; FastAPI wraps its answer
            table.add(method, path, handler)


def _collection_route(fn, namespaced: bool):
    """A handler with the explicit path parameters FastAPI reads (for routing and the OpenAPI
    document) that calls fn(request, namespace)."""
    if namespaced:
        async def handler(request: Request, namespace: str):
            _check_path_names(namespace=namespace)
            return await fn(request, namespace)
    else:
        async def handler(request: Request):
            return await fn(request, None)
    return handler


def _item_route(fn, namespaced: bool, *extra):
    """Like _collection_route for one object: calls fn(request, name, namespace, *extra)."""
    if namespaced:
        async def handler(request: Request, namespace: str, name: str):
            _check_path_names(namespace=namespace, name=name)
            return await fn(request, name, namespace, *extra)
    else:
        async def handler(request: Request, name: str):
            _check_path_names(name=name)
            return await fn(request, name, None, *extra)
    return handler
