"""A Distribution API v2 client (pull side) on httpx.

Contract:
- `RegistryClient.resolve(ref)` GETs the manifest the reference names (tag or digest),
  checks its sha256 (against the reference's digest, and against the registry's
  `Docker-Content-Digest` header when it sends one), follows an image index / manifest
  list to its linux/amd64 entry (checking that manifest's digest too) and returns a
  `ResolvedManifest`. `digest` is the digest the reference resolves to (the index's
  when there is one, as `docker pull` reports it); `manifest_digest` the platform
  manifest's.
- `RegistryClient.open_blob(ref, digest)` is a context manager yielding an iterator of
  byte chunks. It does *not* verify: the store hashes while streaming to a temp file.
- Every failure is a `RegistryError` whose message names the registry URL and what went
  wrong (unreachable, unauthorized, manifest unknown, digest mismatch, unsupported type);
  a refusal of the credentials (or of their absence) is a `RegistryAuthError`, so a caller
  holding several candidate credentials knows to try the next one.
- Credentials are per call: `resolve`/`open_blob` take the `Credential` of this pull (a
  pod's imagePullSecret, the node's --registry-auth file: `agent.images.dockerconfig`
  chooses, the store passes it) or None — then the client's static `credentials` for that
  registry host, if it was built with any (tools and tests), else anonymous.

Design notes:
- Endpoint choice is a pure function (`endpoint_for`): a configured mirror wins (like k3s'
  registries.yaml `mirrors`, host → endpoint URL); otherwise http for insecure registries
  (loopback and `localhost` by default, plus configured hosts, host:ports or CIDRs) and
  https for the rest; `docker.io` is served by `registry-1.docker.io`.
- Auth follows the registry's 401 challenge. `Basic` → retry with the configured
  credentials for that registry. `Bearer realm=…,service=…,scope=…` → GET the realm
  (with basic credentials if configured and the realm may have them — `may_send_credentials`:
  over https, or over plain http on the registry's own host; a registry cannot name a
  plain-http host of its choosing and collect them — anonymously otherwise), take `token` or
  `access_token`, cache it per (registry, scope, credential) until `expires_in` (default
  60 s, by the injected clock) and retry once. The cached scheme is sent up-front on later
  requests with the same credential, so a pull costs one challenge, not one per blob. The
  credential is part of the key: a token a pod's secret earned for a private repository is
  never sent for a pull without that secret (an anonymous pull asks the token server
  anonymously and is refused as it should be).
- A manifest is read only up to `MAX_MANIFEST_BYTES`: a larger Content-Length is refused
  before the body is read, and a body without one is cut off at the cap.
- The httpx client is shared and thread-safe; the token cache is guarded by a lock.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from shoal.agent.images.reference import DOCKER_HUB, DOCKER_HUB_ENDPOINT, Reference, parse_reference

# media types ----------------------------------------------------------------------------
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))

MAX_MANIFEST_BYTES = 4 << 20      # the Distribution spec's own limit for manifests
DEFAULT_INSECURE = ("127.0.0.0/8", "::1/128", "localhost")


class RegistryError(Exception):
    """A registry operation failed; the message names the URL and the cause."""


class RegistryAuthError(RegistryError):
    """The registry (or its token server) refused the credentials sent, or their absence:
    401 after authenticating, 403, a token server's refusal, a basic challenge without
    credentials. Another credential may do better; a network error would not."""


@dataclass(frozen=True)
class Credential:
    """A user name and password for one pull. `source` says where it came from, for
    messages (`imagePullSecret default/regcred`, `--registry-auth /etc/shoal/auth.json`);
    the password is never in a message or a repr."""
    username: str
    password: str = field(repr=False)
    source: str = ""

    def describe(self) -> str:
        return f"{self.source or 'credentials'} (user {self.username!r})"

    def cache_key(self) -> str:
        """Tells credentials apart in the token cache without keeping the password in the key."""
        return hashlib.sha256(f"{self.username}\0{self.password}".encode()).hexdigest()


@dataclass(frozen=True)
class ResolvedManifest:
    digest: str                 # what the reference resolves to (index digest for multi-arch)
    manifest_digest: str        # the linux/amd64 image manifest's digest
    manifest: dict              # the parsed image manifest
    manifest_raw: bytes
    index_raw: bytes | None = None    # the index / manifest list, when the reference named one
    media_type: str = OCI_MANIFEST


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# pure helpers -----------------------------------------------------------------------------
def split_host_port(registry: str) -> tuple[str, int | None]:
    if registry.startswith("["):
        host, _, rest = registry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, sep, port = registry.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return registry, None


def is_insecure(registry: str, insecure: Iterable[str]) -> bool:
    """True if `registry` (host[:port]) matches an entry: a host, a host:port or a CIDR."""
    host, _ = split_host_port(registry)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in insecure:
        if entry in (registry, host):
            return True
        if ip is not None and "/" in entry:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def endpoint_for(registry: str, *, mirrors: Mapping[str, str], insecure: Iterable[str]) -> str:
    """Base URL (no trailing slash, no /v2) to reach `registry`."""
    if registry in mirrors:
        return mirrors[registry].rstrip("/")
    if registry == DOCKER_HUB:
        return DOCKER_HUB_ENDPOINT
    scheme = "http" if is_insecure(registry, insecure) else "https"
    return f"{scheme}://{registry}"


_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def may_send_credentials(realm: str, endpoint: str) -> bool:
    """Whether a registry's configured credentials may go to the token `realm` it names:
    over https (any host: Docker Hub's realm is auth.docker.io), or over plain http only to
    the registry's own host (an insecure registry's token server may listen on another port
    of it) — never to another plain-http host."""
    try:
        r, e = httpx.URL(realm), httpx.URL(endpoint)
    except (httpx.InvalidURL, TypeError):
        return False
    if r.scheme == "https":
        return True
    return r.scheme == "http" and e.scheme == "http" and r.host == e.host


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y"` → ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def select_platform(index: dict, *, os_name: str = "linux", arch: str = "amd64") -> dict | None:
    """The first manifest descriptor of an index for os/arch (attestations are skipped)."""
    for desc in index.get("manifests") or []:
        plat = desc.get("platform") or {}
        if plat.get("os") == os_name and plat.get("architecture") == arch:
            return desc
    return None


def _registry_error_text(resp: httpx.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        text = "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errors)
        if text:
            return text
    except Exception:  # not JSON: fall back to the status line
        pass
    return resp.reason_phrase or "error"


# the client -------------------------------------------------------------------------------
class RegistryClient:
    def __init__(self, *, insecure_registries: Iterable[str] = (),
                 mirrors: Mapping[str, str] | None = None,
                 credentials: Mapping[str, tuple[str, str]] | None = None,
                 timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 platform: tuple[str, str] = ("linux", "amd64"),
                 transport: httpx.BaseTransport | None = None):
        self.insecure = tuple(DEFAULT_INSECURE) + tuple(insecure_registries)
        self.mirrors = dict(mirrors or {})
        self.credentials = dict(credentials or {})
        self.platform = platform
        self._clock = clock
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                                  follow_redirects=True, transport=transport,
                                  headers={"User-Agent": "shoal-agent"})
        self._lock = threading.Lock()
        # (registry, scope, credential's cache_key or "" for anonymous) ->
        # (Authorization header value, expiry by clock or None)
        self._auth: dict[tuple[str, str, str], tuple[str, float | None]] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def endpoint(self, registry: str) -> str:
        return endpoint_for(registry, mirrors=self.mirrors, insecure=self.insecure)

    # -- auth
    def _credential(self, registry: str, credential: Credential | None) -> Credential | None:
        """The credential a call sends: its own, else the static one for the registry host."""
        if credential is not None:
            return credential
        static = self.credentials.get(registry)
        return Credential(static[0], static[1], f"the credentials configured for {registry}") if static else None

    def _cached_auth(self, key: tuple[str, str, str]) -> str | None:
        with self._lock:
            hit = self._auth.get(key)
            if hit is None:
                return None
            value, expiry = hit
            if expiry is not None and self._clock() >= expiry:
                del self._auth[key]
                return None
            return value

    @staticmethod
    def _basic(cred: Credential | None) -> str | None:
        if cred is None:
            return None
        raw = f"{cred.username}:{cred.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _authenticate(self, registry: str, scope: str, challenge: str, url: str,
                      cred: Credential | None) -> str:
        scheme, params = parse_challenge(challenge)
        key = (registry, scope, cred.cache_key() if cred else "")
        if scheme == "basic":
            value = self._basic(cred)
            if value is None:
                raise RegistryAuthError(f"{url}: unauthorized: registry {registry} wants basic auth and no "
                                        "credentials are configured for it (no imagePullSecret or node "
                                        "credential matches this image)")
            with self._lock:
                self._auth[key] = (value, None)
            return value
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(f"{url}: unsupported auth challenge {challenge!r}")
        query = {}
        if params.get("service"):
            query["service"] = params["service"]
        query["scope"] = params.get("scope") or scope
        headers = {}
        realm = params["realm"]
        basic = self._basic(cred)
        withheld = ""
        if basic and may_send_credentials(realm, self.endpoint(registry)):
            headers["Authorization"] = basic
        elif basic:
            assert cred is not None
            withheld = (f" ({cred.describe()} were not sent: the token server is "
                        f"neither https nor on the registry's own host, {self.endpoint(registry)})")
        try:
            resp = self._http.get(realm, params=query, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryError(f"token server {realm} for {registry} unreachable: {exc}") from exc
        if resp.status_code != 200:
            error = RegistryAuthError if resp.status_code in (401, 403) else RegistryError
            raise error(f"token server {realm} for {registry} refused "
                        f"scope {query['scope']!r}: HTTP {resp.status_code} "
                        f"{_registry_error_text(resp)}{withheld}")
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token, body = None, {}
        if not token:
            raise RegistryError(f"token server {realm} for {registry} returned no token")
        expires_in = body.get("expires_in") or 60
        value = f"Bearer {token}"
        with self._lock:
            self._auth[key] = (value, self._clock() + max(float(expires_in) - 5, 1))
        return value

    def _send(self, ref: Reference, method: str, path: str, *, headers: dict[str, str],
              stream: bool = False, credential: Credential | None = None) -> httpx.Response:
        """One authenticated request to `<endpoint>/v2/<repo><path>`; caller closes if stream."""
        url = f"{self.endpoint(ref.registry)}/v2/{ref.repository}{path}"
        scope = f"repository:{ref.repository}:pull"
        cred = self._credential(ref.registry, credential)
        key = (ref.registry, scope, cred.cache_key() if cred else "")
        for attempt in range(2):
            hdrs = dict(headers)
            auth = self._cached_auth(key)
            if auth:
                hdrs["Authorization"] = auth
            try:
                req = self._http.build_request(method, url, headers=hdrs)
                resp = self._http.send(req, stream=stream)
            except httpx.HTTPError as exc:
                raise RegistryError(f"registry {ref.registry} unreachable at {url}: "
                                    f"{type(exc).__name__}: {exc}") from exc
            if resp.status_code == 403:
                resp.read()
                text = _registry_error_text(resp)
                resp.close()
                raise RegistryAuthError(f"{method} {url}: denied (HTTP 403) {text}"
                                        f"{' with ' + cred.describe() if cred else ' to an anonymous pull'}")
            if resp.status_code != 401:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            if attempt == 1 or not challenge:
                break
            with self._lock:
                self._auth.pop(key, None)
            self._authenticate(ref.registry, scope, challenge, url, cred)
        raise RegistryAuthError(f"{method} {url}: unauthorized (HTTP 401)"
                                f"{' with ' + cred.describe() if cred else ' to an anonymous pull'}")

    # -- manifests
    def _get_manifest(self, ref: Reference, key: str,
                      credential: Credential | None) -> tuple[bytes, str, str | None]:
        resp = self._send(ref, "GET", f"/manifests/{key}", headers={"Accept": ACCEPT}, stream=True,
                          credential=credential)
        try:
            url = str(resp.request.url)
            if resp.status_code == 404:
                resp.read()
                what = f"{ref.name}@{key}" if key.startswith("sha256:") else f"{ref.name}:{key}"
                raise RegistryError(f"{what} not found (GET {url}: HTTP 404 {_registry_error_text(resp)})")
            if resp.status_code != 200:
                resp.read()
                raise RegistryError(f"GET {url}: HTTP {resp.status_code} {_registry_error_text(resp)}")
            too_big = RegistryError(f"GET {url}: manifest larger than {MAX_MANIFEST_BYTES} bytes (refused)")
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > MAX_MANIFEST_BYTES:
                raise too_big                     # before reading a byte of it
            buf = bytearray()
            for chunk in resp.iter_bytes():
                buf += chunk
                if len(buf) > MAX_MANIFEST_BYTES:
                    raise too_big
            raw = bytes(buf)
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
            return raw, ctype, resp.headers.get("Docker-Content-Digest")
        finally:
            resp.close()

    def resolve(self, ref: Reference, *, credential: Credential | None = None) -> ResolvedManifest:
        """The manifest `ref` names, fetched with `credential` (see the module's contract)."""
        where = f"{self.endpoint(ref.registry)}/v2/{ref.repository}/manifests/{ref.pull_key}"
        raw, ctype, header_digest = self._get_manifest(ref, ref.pull_key, credential)
        digest = sha256_digest(raw)
        if ref.digest is not None and digest != ref.digest:
            raise RegistryError(f"manifest digest mismatch for {ref}: expected {ref.digest}, "
                                f"got {digest} from {where}")
        if ref.digest is None and header_digest and header_digest.startswith("sha256:") \
                and header_digest != digest:
            raise RegistryError(f"manifest digest mismatch for {ref}: registry says {header_digest}, "
                                f"content hashes to {digest} ({where})")
        doc = _parse_json(raw, where)
        media = doc.get("mediaType") or ctype
        if media in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
            raise RegistryError(f"{where}: Docker schema 1 manifests are not supported; "
                                "push the image again with a current client")
        index_raw = None
        manifest_digest, manifest_raw, manifest = digest, raw, doc
        if media in INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
            os_name, arch = self.platform
            desc = select_platform(doc, os_name=os_name, arch=arch)
            if desc is None:
                have = sorted({f"{(d.get('platform') or {}).get('os')}/"
                               f"{(d.get('platform') or {}).get('architecture')}"
                               for d in doc.get("manifests") or []})
                raise RegistryError(f"{ref}: index {digest} has no {os_name}/{arch} image "
                                    f"(has: {', '.join(have) or 'nothing'})")
            index_raw = raw
            manifest_digest = desc.get("digest", "")
            if not str(manifest_digest).startswith("sha256:"):
                raise RegistryError(f"{ref}: index {digest} names unsupported digest {manifest_digest!r}")
            manifest_raw, _, _ = self._get_manifest(ref, manifest_digest, credential)
            actual = sha256_digest(manifest_raw)
            if actual != manifest_digest:
                raise RegistryError(f"manifest digest mismatch for {ref} ({os_name}/{arch}): "
                                    f"expected {manifest_digest}, got {actual}")
            if "size" in desc and desc["size"] != len(manifest_raw):
                raise RegistryError(f"manifest size mismatch for {ref}: expected {desc['size']} "
                                    f"bytes, got {len(manifest_raw)}")
            manifest = _parse_json(manifest_raw, f"{ref.name}@{manifest_digest}")
            media = manifest.get("mediaType") or desc.get("mediaType") or OCI_MANIFEST
        check_image_manifest(manifest, where=f"{ref.name}@{manifest_digest}")
        return ResolvedManifest(digest=digest, manifest_digest=manifest_digest, manifest=manifest,
                                manifest_raw=manifest_raw, index_raw=index_raw, media_type=media)

    # -- blobs
    @contextmanager
    def open_blob(self, ref: Reference, digest: str, *,
                  credential: Credential | None = None) -> Iterator[Iterator[bytes]]:
        resp = self._send(ref, "GET", f"/blobs/{digest}", headers={}, stream=True, credential=credential)
        try:
            if resp.status_code != 200:
                resp.read()
                raise RegistryError(f"GET {resp.request.url}: HTTP {resp.status_code} "
                                    f"{_registry_error_text(resp)}")
            yield _chunks(resp, ref)
        finally:
            resp.close()


def _chunks(resp: httpx.Response, ref: Reference) -> Iterator[bytes]:
    try:
        yield from resp.iter_bytes(1 << 16)
    except httpx.HTTPError as exc:
        raise RegistryError(f"reading {resp.request.url} for {ref}: {type(exc).__name__}: {exc}") from exc


def _parse_json(raw: bytes, where: str) -> dict:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise RegistryError(f"{where}: manifest is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"{where}: manifest is not a JSON object")
    return doc


def check_image_manifest(manifest: dict, *, where: str) -> None:
    """Reject what the store cannot use, with the reason (schema, config, layer types)."""
    if manifest.get("schemaVersion") != 2:
        raise RegistryError(f"{where}: unsupported manifest schemaVersion {manifest.get('schemaVersion')!r}")
    media = manifest.get("mediaType")
    if media is not None and media not in MANIFEST_TYPES:
        raise RegistryError(f"{where}: unsupported manifest media type {media!r}")
    config = manifest.get("config")
    if not isinstance(config, dict) or not str(config.get("digest", "")).startswith("sha256:"):
        raise RegistryError(f"{where}: manifest has no sha256 config descriptor")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise RegistryError(f"{where}: manifest has no layers list")
    for layer in layers:
        lmt = str(layer.get("mediaType", ""))
        if not str(layer.get("digest", "")).startswith("sha256:"):
            raise RegistryError(f"{where}: layer {layer.get('digest')!r} is not a sha256 digest")
        if "zstd" in lmt:
            raise RegistryError(f"{where}: layer {layer['digest']} is zstd-compressed ({lmt}); "
                                "only gzip and uncompressed layers are supported")
        if "foreign" in lmt or "nondistributable" in lmt:
            raise RegistryError(f"{where}: layer {layer['digest']} is a foreign layer ({lmt}) "
                                "and cannot be pulled")


__all__ = ["RegistryClient", "RegistryError", "RegistryAuthError", "Credential", "ResolvedManifest", "Reference", "parse_reference",
           "endpoint_for", "is_insecure", "parse_challenge", "select_platform", "sha256_digest",
           "check_image_manifest", "ACCEPT", "OCI_INDEX", "OCI_MANIFEST", "DOCKER_LIST",
           "DOCKER_MANIFEST"]
