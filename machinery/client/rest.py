"""The Python client every shoal component uses to talk to the API server.

Contract:
- Objects are plain dicts in Kubernetes' wire form (camelCase), never models.
- `kind` arguments accept anything `shoal.machinery.api.resources.resolve` does:
  `"Deployment"`, `"deployments"`, `"deploy"`.
- Errors are raised as `shoal.machinery.api.errors.ApiError` subclasses rebuilt from
  the server's Status (`NotFound`, `Conflict`, `AlreadyExists`, `Gone`, ...);
  a server that cannot be reached raises `ConnectionFailed`.
- `watch()` yields event dicts `{"type": ..., "object": ...}` until the server
  closes the stream or `timeout_seconds` elapses; it does not reconnect by
  itself (informers own that loop, so they can relist on 410).
- Thread-safe: one `Client` may be shared by many threads.
- Names and namespaces go into paths percent-encoded, and one holding a control character
  (CR, LF, NUL, ...) is refused before anything is sent (`RequestRefused`), as is a token
  or user agent holding one: nothing a caller passes can end a request line or start a
  header (httpconn refuses such a request too, as a last line).
"""
from __future__ import annotations

import json
import os
import ssl
import threading
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, urlencode, urlsplit

import httpx
import yaml

from shoal.machinery.api import errors
from shoal.machinery.client import httpconn
from shoal.machinery.api.names import control_characters
from shoal.machinery.api.resources import Resource, resolve


class ConnectionFailed(errors.ApiError):
    code, reason = 0, "ConnectionFailed"


class RequestRefused(errors.ApiError):
    """The client would not send this request (a name or header value with control
    characters); nothing reached the server."""
    code, reason = 0, "RequestRefused"


def _checked(what: str, value: str) -> str:
    problems = control_characters(value)
    if problems:
        raise RequestRefused(f"{what} {value!r} {problems[0]}: the request was not sent")
    return value


def _path(res: Resource, name: str | None = None, namespace: str | None = None,
          subresource: str | None = None) -> str:
    """`res.path(...)` with the name and namespace checked (`_checked`) and percent-encoded."""
    seg: dict[str, str | None] = {}
    for what, value in (("name", name), ("namespace", namespace)):
        seg[what] = quote(_checked(f"{res.singular or res.kind} {what}", value), safe="") if value else value
    return res.path(seg["name"], seg["namespace"], subresource)


def default_kubeconfig_path() -> Path:
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(env.split(os.pathsep)[0])
    return Path.home() / ".shoal" / "kubeconfig"


def load_kubeconfig(path: str | os.PathLike | None = None) -> dict:
    """Read a kubeconfig-format file and return {server, token, ca_file|ca_data, namespace}."""
    p = Path(path) if path else default_kubeconfig_path()
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"kubeconfig {p} not found: start a cluster with `shoal up` or `shoal server`, "
                                f"or pass --kubeconfig / set KUBECONFIG") from None
    ctx_name = doc.get("current-context")
    ctxs = {c["name"]: c.get("context", {}) for c in doc.get("contexts", [])}
    ctx = ctxs.get(ctx_name) or (next(iter(ctxs.values())) if ctxs else {})
    clusters = {c["name"]: c.get("cluster", {}) for c in doc.get("clusters", [])}
    users = {u["name"]: u.get("user", {}) for u in doc.get("users", [])}
    cluster = clusters.get(ctx.get("cluster")) or (next(iter(clusters.values())) if clusters else {})
    user = users.get(ctx.get("user")) or (next(iter(users.values())) if users else {})
    out = {"server": cluster.get("server"), "token": user.get("token"),
           "namespace": ctx.get("namespace") or "default", "path": str(p)}
    if cluster.get("certificate-authority"):
        # relative to the kubeconfig's own directory, as kubectl resolves it
        out["ca_file"] = str(p.parent / Path(cluster["certificate-authority"]).expanduser())
    if cluster.get("certificate-authority-data"):
        out["ca_data"] = cluster["certificate-authority-data"]
    return out


def write_kubeconfig(path: str | os.PathLike, *, server: str, token: str, ca_data_b64: str | None = None,
                     name: str = "shoal") -> None:
    """Write a kubeconfig that both shoal and kubectl can read (mode 600)."""
    cluster: dict[str, Any] = {"server": server}
    if ca_data_b64:
        cluster["certificate-authority-data"] = ca_data_b64
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": name,
           "clusters": [{"name": name, "cluster": cluster}],
           "users": [{"name": f"{name}-admin", "user": {"token": token}}],
           "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin", "namespace": "default"}}],
           "preferences": {}}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    os.replace(tmp, p)


def _raise_status(status: int, data: bytes) -> None:
    """Raise the ApiError of a failed answer from its body (a Status, or text)."""
    try:
        payload = json.loads(data)
    except ValueError:
        payload = data.decode(errors="replace")
    raise errors.from_status(status, payload)


def _raise_for_stream(r: httpx.Response) -> None:
    """Raise the ApiError of a streamed response that failed (after reading its Status body)."""
    if r.status_code >= 400:
        _raise_status(r.status_code, r.read())


def _watch_event(line: bytes) -> dict:
    """One line of a watch stream; an ERROR event raises its Status (410 Gone: errors.Gone)."""
    ev = json.loads(line)
    if ev.get("type") == "ERROR":
        obj = ev.get("object") or {}
        raise errors.from_status(int(obj.get("code") or 500), obj)
    return ev


def _param(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


class _Pool:
    """Keep-alive HTTP/1.1 connections to one server for plain (non-streaming) requests,
    shared by threads: a request takes an idle connection or opens one, and gives it back
    once the response is read. A request that fails on a reused connection before any
    answer (the server closed it while idle) is sent once more on a new connection."""

    def __init__(self, server: str, verify: Any, timeout: float, max_idle: int = 16):
        u = urlsplit(server)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname or "localhost", u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        if self.https:
            self.ctx = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: list[httpconn.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _new(self) -> httpconn.Connection:
        return httpconn.Connection(self.host, self.port, timeout=self.timeout,
                                   ssl_context=self.ctx if self.https else None)

    def request(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._new()
            try:
                r = conn.request(method, self.prefix + path, body, headers)
            except ConnectionError:     # reset, broken pipe, or closed without an answer
                conn.close()
                if reused:
                    conn, reused = None, False       # a stale keep-alive connection: once more
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if r.will_close:
                conn.close()
            else:
                with self._lock:
                    if not self._closed and len(self._idle) < self.max_idle:
                        self._idle.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()
            return r.status, r.body

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()


class Client:
    """HTTP client for the shoal (Kubernetes-shaped) API."""

    def __init__(self, server: str, token: str | None, *, ca_file: str | None = None, ca_data: str | None = None,
                 timeout: float = 30.0, user_agent: str = "shoal"):
        self.server = server.rstrip("/")
        self.token = token
        verify: Any = True
        if ca_file or ca_data:
            ctx = ssl.create_default_context()
            if ca_file:
                ctx.load_verify_locations(cafile=ca_file)
            if ca_data:
                import base64
                ctx.load_verify_locations(cadata=base64.b64decode(ca_data).decode())
            verify = ctx
        self._verify = verify
        headers = {"User-Agent": _checked("user agent", user_agent), "Accept": "application/json"}
        if token:
            if control_characters(token):     # its value stays out of the message: a secret
                raise RequestRefused("the token holds control characters (a line break copied with it?): "
                                     "no request can carry it")
            headers["Authorization"] = f"Bearer {token}"
        self._headers = headers
        self._timeout = timeout
        # Logs stream through httpx; plain requests go through `_Pool` and watches through
        # a connection of their own, both httpconn (≈ 0.1 ms of client CPU per request,
        # http.client ≈ 0.35 ms, httpx ≈ 1.1 ms — the agent and the controllers make
        # several per pod).
        self._http = httpx.Client(base_url=self.server, headers=headers, verify=verify, timeout=timeout,
                                  limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
        self._pool = _Pool(self.server, verify, timeout)

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike | None = None, **kw) -> "Client":
        cfg = load_kubeconfig(path)
        c = cls(cfg["server"], cfg.get("token"), ca_file=cfg.get("ca_file"), ca_data=cfg.get("ca_data"), **kw)
        c.default_namespace = cfg.get("namespace", "default")
        return c

    default_namespace = "default"

    def close(self) -> None:
        self._pool.close()
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- plumbing -----------------------------------------------------------------
    def _ns(self, res: Resource, namespace: str | None, obj: dict | None = None) -> str | None:
        if not res.namespaced:
            return None
        if namespace:
            return namespace
        if obj is not None and (obj.get("metadata") or {}).get("namespace"):
            return obj["metadata"]["namespace"]
        return self.default_namespace

    def request(self, method: str, path: str, *, params: dict | None = None, body: Any = None,
                content_type: str = "application/json", raw: bool = False) -> Any:
        headers = dict(self._headers)
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        query = urlencode([(k, _param(v)) for k, v in (params or {}).items() if v is not None])
        try:
            status, data = self._pool.request(method, path + ("?" + query if query else ""), content, headers)
        except OSError as e:
            raise ConnectionFailed(f"cannot reach the API server at {self.server}: {e}") from e
        if status >= 400:
            _raise_status(status, data)
        if raw:
            return data.decode(errors="replace")
        if not data:
            return None
        return json.loads(data)

    # -- verbs ----------------------------------------------------------------------
    def create(self, kind: str, obj: dict, namespace: str | None = None) -> dict:
        res = resolve(kind)
        return self.request("POST", _path(res, namespace=self._ns(res, namespace, obj)), body=obj)

    def get(self, kind: str, name: str, namespace: str | None = None, *, subresource: str | None = None) -> dict:
        res = resolve(kind)
        return self.request("GET", _path(res, name, self._ns(res, namespace), subresource))

    def list(self, kind: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None, all_namespaces: bool = False) -> dict:
        """Return the List object: {"items": [...], "metadata": {"resourceVersion": "N"}}."""
        res = resolve(kind)
        ns = None if all_namespaces else self._ns(res, namespace)
        return self.request("GET", _path(res, namespace=ns),
                            params={"labelSelector": label_selector, "fieldSelector": field_selector})

    def update(self, kind: str, obj: dict, *, subresource: str | None = None) -> dict:
        """PUT with compare-and-swap on obj.metadata.resourceVersion (409 Conflict when stale)."""
        res = resolve(kind)
        md = obj["metadata"]
        return self.request("PUT", _path(res, md["name"], self._ns(res, None, obj), subresource), body=obj)

    def update_status(self, kind: str, obj: dict) -> dict:
        return self.update(kind, obj, subresource="status")

    def bind(self, name: str, namespace: str, node: str, *, uid: str | None = None) -> dict:
        """POST pods/NAME/binding: assign an unbound pod to `node` (409 Conflict if it is bound
        already or being deleted; with `uid`, also if the pod of that name is another one)."""
        md: dict = {"name": name, "namespace": namespace}
        if uid:
            md["uid"] = uid
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": md,
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        return self.request("POST", _path(resolve("pods"), name, namespace, "binding"), body=body)

    def patch(self, kind: str, name: str, patch: Any, namespace: str | None = None, *,
              subresource: str | None = None, patch_type: str = "merge") -> dict:
        """merge (RFC 7386, default), json (RFC 6902) or strategic patch."""
        res = resolve(kind)
        ct = {"merge": "application/merge-patch+json", "json": "application/json-patch+json",
              "strategic": "application/strategic-merge-patch+json"}[patch_type]
        return self.request("PATCH", _path(res, name, self._ns(res, namespace), subresource), body=patch,
                            content_type=ct)

    def delete(self, kind: str, name: str, namespace: str | None = None, *,
               grace_period_seconds: int | None = None, propagation_policy: str | None = None,
               preconditions_uid: str | None = None, preconditions_resource_version: str | None = None,
               dry_run: bool = False) -> dict:
        """DELETE with DeleteOptions; the preconditions make it a Conflict unless the object
        still has that uid / resourceVersion. `dry_run`: the server checks everything and
        deletes nothing (`dryRun: [All]` in the body, as kubectl sends it)."""
        res = resolve(kind)
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if dry_run:
            body["dryRun"] = ["All"]
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        pre = {k: v for k, v in (("uid", preconditions_uid), ("resourceVersion", preconditions_resource_version)) if v}
        if pre:
            body["preconditions"] = pre
        return self.request("DELETE", _path(res, name, self._ns(res, namespace)), body=body)

    def watch(self, kind: str, namespace: str | None = None, *, resource_version: str | None = None,
              label_selector: str | None = None, field_selector: str | None = None,
              timeout_seconds: float | None = None, bookmarks: bool = False,
              all_namespaces: bool = False) -> Iterator[dict]:
        """Yield watch events strictly after resource_version (or ADDED for current objects
        when it is None). Raises `errors.Gone` on 410 (as an HTTP answer or an ERROR event)."""
        res = resolve(kind)
        ns = None if all_namespaces else self._ns(res, namespace)
        params = {"watch": "true", "resourceVersion": resource_version, "labelSelector": label_selector,
                  "fieldSelector": field_selector, "allowWatchBookmarks": "true" if bookmarks else None,
                  "timeoutSeconds": int(timeout_seconds) if timeout_seconds else None}
        query = urlencode([(k, _param(v)) for k, v in params.items() if v is not None])
        # A lean connection of its own (httpconn), not httpx: a pod burst brings the agent
        # and the controllers hundreds of events, and httpx's layers cost several times
        # the reading of them. The read may wait the watch's timeout plus a margin.
        conn = self._pool._new()
        what = f"watch on {res.plural} from {self.server}"
        try:
            try:
                r = conn.stream("GET", self._pool.prefix + _path(res, namespace=ns) + "?" + query, self._headers,
                                read_timeout=(timeout_seconds or 300) + 30)
                if r.status >= 400:
                    _raise_status(r.status, r.read())
                rest = b""
                for piece in r:
                    lines = (rest + piece).split(b"\n")
                    rest = lines.pop()
                    for line in lines:
                        if line.strip():
                            yield _watch_event(line)
                if rest.strip():
                    yield _watch_event(rest)
            except OSError as e:
                raise ConnectionFailed(f"{what} broke: {e}") from e
        finally:
            conn.close()

    def logs(self, name: str, namespace: str | None = None, *, container: str | None = None,
             follow: bool = False, tail_lines: int | None = None, previous: bool = False) -> Iterator[str]:
        """Yield chunks of a pod's log (text)."""
        res = resolve("pods")
        params = {"container": container, "follow": "true" if follow else None, "tailLines": tail_lines,
                  "previous": "true" if previous else None}
        params = {k: v for k, v in params.items() if v is not None}
        timeout = httpx.Timeout(self._timeout, read=None if follow else self._timeout)
        try:
            with self._http.stream("GET", _path(res, name, self._ns(res, namespace), "log"), params=params,
                                   timeout=timeout) as r:
                _raise_for_stream(r)
                yield from r.iter_text()
        except httpx.TransportError as e:
            raise ConnectionFailed(f"log stream of pod {name} broke: {e}") from e
