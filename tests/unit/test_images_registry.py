"""Registry client: references, endpoints, auth flows against an in-process loopback fake."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from shoal.agent.images.reference import Reference, parse_reference
from shoal.agent.images.registry import (DOCKER_LIST, OCI_INDEX, OCI_MANIFEST, RegistryClient, RegistryError,
                                         endpoint_for, is_insecure, parse_challenge)
from shoal.agent.interfaces import ImagePullError

pytestmark = pytest.mark.unit

D = "sha256:" + "a" * 64
_PATH = re.compile(r"^/v2/(.+)/(manifests|blobs)/([^/]+)$")


@pytest.mark.parametrize("text,expected", [
    ("busybox", Reference("docker.io", "library/busybox", "latest")),
    ("busybox:1.36", Reference("docker.io", "library/busybox", "1.36")),
    ("user/app", Reference("docker.io", "user/app", "latest")),
    ("index.docker.io/user/app:v1", Reference("docker.io", "user/app", "v1")),
    ("127.0.0.1:5000/web:v1", Reference("127.0.0.1:5000", "web", "v1")),
    ("127.0.0.1:5000/web", Reference("127.0.0.1:5000", "web", "latest")),
    (f"127.0.0.1:5000/web@{D}", Reference("127.0.0.1:5000", "web", None, D)),
    (f"127.0.0.1:5000/web:v1@{D}", Reference("127.0.0.1:5000", "web", "v1", D)),
    ("localhost/team/web:v2", Reference("localhost", "team/web", "v2")),
    ("localhost:5000/a.b/c_d/e--f:x", Reference("localhost:5000", "a.b/c_d/e--f", "x")),
    ("registry.example.com/a/b/c", Reference("registry.example.com", "a/b/c", "latest")),
    ("Registry/web", Reference("Registry", "web", "latest")),    # upper case: it is a host
    (f"web@{D}", Reference("docker.io", "library/web", None, D)),
])
def test_parse_reference(text, expected):
    assert parse_reference(text) == expected


@pytest.mark.parametrize("text,why", [
    ("", "empty"), ("Web:v1", "lower-case"), ("web:", "tag"), ("web:-bad", "tag"),
    ("web@sha256:abc", "digest"), ("web@md5:" + "a" * 32, "digest"), ("a b", "whitespace"),
    ("127.0.0.1:5000/", "no repository"), ("host:5000/web/", "component"), ("web//x", "component"),
    ("-host.com/web", "registry host"),
])
def test_invalid_references(text, why):
    with pytest.raises(ImagePullError) as err:
        parse_reference(text)
    assert err.value.reason == "InvalidImageName" and why in err.value.message
    assert repr(text) in err.value.message


def test_reference_strings():
    ref = parse_reference("127.0.0.1:5000/web:v1")
    assert (ref.name, ref.tagged, ref.pull_key, str(ref)) == (
        "127.0.0.1:5000/web", "127.0.0.1:5000/web:v1", "v1", "127.0.0.1:5000/web:v1")
    pinned = ref.with_digest(D)
    assert pinned.tagged is None and pinned.pull_key == D and str(pinned) == f"127.0.0.1:5000/web:v1@{D}"


@pytest.mark.parametrize("registry,insecure,expected", [
    ("127.0.0.1:5000", (), True), ("127.9.9.9", (), True), ("localhost:5000", (), True),
    ("[::1]:5000", (), True), ("10.0.0.5:5000", (), False), ("10.0.0.5:5000", ("10.0.0.0/8",), True),
    ("reg.lab:5000", ("reg.lab",), True), ("reg.lab:5000", ("reg.lab:5000",), True),
    ("reg.lab:5001", ("reg.lab:5000",), False), ("example.com", (), False),
])
def test_insecure(registry, insecure, expected):
    assert is_insecure(registry, ("127.0.0.0/8", "::1/128", "localhost") + insecure) is expected


def test_endpoints_and_mirrors():
    insecure = ("127.0.0.0/8", "localhost")
    assert endpoint_for("127.0.0.1:5000", mirrors={}, insecure=insecure) == "http://127.0.0.1:5000"
    assert endpoint_for("reg.example.com", mirrors={}, insecure=insecure) == "https://reg.example.com"
    assert endpoint_for("docker.io", mirrors={}, insecure=insecure) == "https://registry-1.docker.io"
    mirrors = {"docker.io": "http://10.1.0.1:5000/", "reg.lab:5000": "http://10.1.0.2:5000"}
    assert endpoint_for("docker.io", mirrors=mirrors, insecure=insecure) == "http://10.1.0.1:5000"
    assert endpoint_for("reg.lab:5000", mirrors=mirrors, insecure=insecure) == "http://10.1.0.2:5000"


def test_parse_challenge():
    scheme, params = parse_challenge('Bearer realm="http://a/token",service="reg",scope="repository:x:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "http://a/token", "service": "reg", "scope": "repository:x:pull"}
    assert parse_challenge('Basic realm="r"') == ("basic", {"realm": "r"})


# ------------------------------------------------------------------ in-process fake registry
def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    """A loopback Distribution fake: manifests, blobs, and one auth mode at a time."""

    def __init__(self, *, auth: str = "anon", users: dict[str, str] | None = None,
                 token_users_required: bool = False, bind: str = "127.0.0.1"):
        self.auth = auth
        self.users = users or {}
        self.token_users_required = token_users_required
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.tokens_issued: list[tuple[str | None, str]] = []
        self.requests: list[tuple[str, str | None]] = []
        self.valid_tokens: set[str] = set()
        self.realm: str | None = None          # the token realm the challenge names (default: this server)
        self.raw_manifest: bytes | None = None  # answer every manifest GET with these bytes as they are
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                fake.handle(self)

        self.httpd = ThreadingHTTPServer((bind, 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.host = f"{bind}:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_manifest(self, repo: str, doc: dict, *, tag: str | None = None, media: str = OCI_MANIFEST,
                     raw: bytes | None = None) -> str:
        body = raw if raw is not None else json.dumps(doc).encode()
        d = _digest(body)
        self.manifests[(repo, d)] = (body, media)
        if tag:
            self.manifests[(repo, tag)] = (body, media)
        return d

    def reply(self, req, status, body: bytes = b"", headers: dict | None = None):
        req.send_response(status)
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def user_of(self, header: str) -> str | None | bool:
        if not header.startswith("Basic "):
            return None
        u, _, p = base64.b64decode(header[6:]).decode().partition(":")
        return u if self.users.get(u) == p else False

    def handle(self, req):
        url = urlparse(req.path)
        auth = req.headers.get("Authorization", "")
        self.requests.append((url.path, auth or None))
        if url.path == "/token":
            user = self.user_of(auth)
            if user is False or (self.token_users_required and user is None):
                return self.reply(req, 401, b'{"errors":[{"code":"UNAUTHORIZED","message":"bad creds"}]}')
            scope = parse_qs(url.query).get("scope", [""])[0]
            service = parse_qs(url.query).get("service", [""])[0]
            assert service == "fake-registry"
            token = f"tok-{len(self.tokens_issued)}"
            self.tokens_issued.append((user, scope))
            self.valid_tokens.add(token)
            return self.reply(req, 200, json.dumps({"token": token, "expires_in": 60}).encode())
        if self.auth == "bearer" and auth.removeprefix("Bearer ") not in self.valid_tokens:
            realm = self.realm or f"http://{self.host}/token"
            m = _PATH.match(url.path)
            scope = f"repository:{m.group(1) if m else ''}:pull"
            return self.reply(req, 401, b"", {"WWW-Authenticate":
                                             f'Bearer realm="{realm}",service="fake-registry",scope="{scope}"'})
        if self.auth == "basic" and not self.user_of(auth):
            return self.reply(req, 401, b"", {"WWW-Authenticate": 'Basic realm="fake"'})
        m = _PATH.match(url.path)
        if m is None:
            return self.reply(req, 404)
        repo, kind, key = m.groups()
        if kind == "manifests" and self.raw_manifest is not None:
            req.wfile.write(self.raw_manifest)       # head and body as given, then the connection closes
            return
        if kind == "manifests":
            hit = self.manifests.get((repo, key))
            if hit is None:
                return self.reply(req, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}',
                                  {"Content-Type": "application/json"})
            body, media = hit
            return self.reply(req, 200, body, {"Content-Type": media, "Docker-Content-Digest": _digest(body)})
        if key not in self.blobs:
            return self.reply(req, 404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
        return self.reply(req, 200, self.blobs[key], {"Content-Type": "application/octet-stream"})


def image_manifest(fake: FakeRegistry) -> dict:
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {}}).encode()
    layer = b"layer-bytes"
    fake.blobs[_digest(config)] = config
    fake.blobs[_digest(layer)] = layer
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": _digest(layer), "size": len(layer)}]}


@pytest.fixture
def fake_factory():
    made = []

    def make(**kw) -> FakeRegistry:
        f = FakeRegistry(**kw)
        made.append(f)
        return f
    yield make
    for f in made:
        f.close()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_bearer_flow_anonymous_token_is_cached_until_expiry(fake_factory):
    fake = fake_factory(auth="bearer")
    digest = fake.add_manifest("web", image_manifest(fake), tag="v1")
    clock = Clock()
    with RegistryClient(clock=clock) as client:
        ref = parse_reference(f"{fake.host}/web:v1")
        resolved = client.resolve(ref)
        assert resolved.digest == digest and resolved.index_raw is None
        with client.open_blob(ref, resolved.manifest["layers"][0]["digest"]) as chunks:
            assert b"".join(chunks) == b"layer-bytes"
        assert fake.tokens_issued == [(None, "repository:web:pull")], "one challenge per pull"
        clock.now += 120     # past expires_in: the next request needs a fresh token
        client.resolve(ref)
        assert len(fake.tokens_issued) == 2


def test_bearer_flow_with_basic_credentials_at_token_server(fake_factory):
    fake = fake_factory(auth="bearer", users={"alice": "s3cret"}, token_users_required=True)
    fake.add_manifest("web", image_manifest(fake), tag="v1")
    ref = parse_reference(f"{fake.host}/web:v1")
    with RegistryClient(credentials={fake.host: ("alice", "s3cret")}) as client:
        client.resolve(ref)
    assert fake.tokens_issued == [("alice", "repository:web:pull")]
    token_calls = [a for p, a in fake.requests if p == "/token"]
    assert token_calls == ["Basic " + base64.b64encode(b"alice:s3cret").decode()]
    with RegistryClient(credentials={fake.host: ("alice", "wrong")}) as client:
        with pytest.raises(RegistryError, match=r"token server .*/token for 127\.0\.0\.1:\d+ refused.*401.*bad creds"):
            client.resolve(ref)
    with RegistryClient() as client:
        with pytest.raises(RegistryError, match="refused"):
            client.resolve(ref)


def test_basic_auth(fake_factory):
    fake = fake_factory(auth="basic", users={"bob": "pw"})
    fake.add_manifest("web", image_manifest(fake), tag="v1")
    ref = parse_reference(f"{fake.host}/web:v1")
    with RegistryClient(credentials={fake.host: ("bob", "pw")}) as client:
        assert client.resolve(ref).manifest["schemaVersion"] == 2
    with RegistryClient() as client:
        with pytest.raises(RegistryError, match="wants basic auth and no credentials"):
            client.resolve(ref)


@pytest.mark.parametrize("index_media", [OCI_INDEX, DOCKER_LIST])
def test_index_picks_linux_amd64(fake_factory, index_media):
    fake = fake_factory()
    amd = fake.add_manifest("web", image_manifest(fake))
    arm_doc = dict(image_manifest(fake), annotations={"arch": "arm64"})
    arm = fake.add_manifest("web", arm_doc)
    index = {"schemaVersion": 2, "mediaType": index_media, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": arm, "size": len(fake.manifests[("web", arm)][0]),
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "f" * 64, "size": 1,
         "platform": {"os": "unknown", "architecture": "unknown"}},
        {"mediaType": OCI_MANIFEST, "digest": amd, "size": len(fake.manifests[("web", amd)][0]),
         "platform": {"os": "linux", "architecture": "amd64"}}]}
    idx = fake.add_manifest("web", index, tag="multi", media=index_media)
    with RegistryClient() as client:
        r = client.resolve(parse_reference(f"{fake.host}/web:multi"))
    assert (r.digest, r.manifest_digest) == (idx, amd) and r.index_raw is not None


def test_index_without_amd64_names_what_it_has(fake_factory):
    fake = fake_factory()
    arm = fake.add_manifest("web", image_manifest(fake))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": arm, "size": 1, "platform": {"os": "linux", "architecture": "arm64"}}]}
    fake.add_manifest("web", index, tag="arm", media=OCI_INDEX)
    with RegistryClient() as client, pytest.raises(RegistryError, match="no linux/amd64 image.*linux/arm64"):
        client.resolve(parse_reference(f"{fake.host}/web:arm"))


def test_manifest_digest_mismatch_is_rejected(fake_factory):
    fake = fake_factory()
    good = fake.add_manifest("web", image_manifest(fake))
    wrong = "sha256:" + "b" * 64
    fake.manifests[("web", wrong)] = fake.manifests[("web", good)]     # served under another digest
    with RegistryClient() as client:
        with pytest.raises(RegistryError, match=f"manifest digest mismatch.*expected {wrong}, got {good}"):
            client.resolve(parse_reference(f"{fake.host}/web@{wrong}"))


def test_unknown_manifest_and_unreachable_registry(fake_factory):
    fake = fake_factory()
    with RegistryClient() as client:
        with pytest.raises(RegistryError, match=r"HTTP 404 MANIFEST_UNKNOWN: manifest unknown"):
            client.resolve(parse_reference(f"{fake.host}/web:nope"))
    port = fake.httpd.server_address[1]
    fake.close()
    with RegistryClient(timeout=2) as client:
        with pytest.raises(RegistryError, match=rf"registry 127.0.0.1:{port} unreachable at http://127.0.0.1:{port}/v2/web/manifests/v1"):
            client.resolve(parse_reference(f"127.0.0.1:{port}/web:v1"))


@pytest.mark.parametrize("mutate,why", [
    (lambda m: m.update(schemaVersion=1), "schema"),
    (lambda m: m["layers"][0].update(mediaType="application/vnd.oci.image.layer.v1.tar+zstd"), "zstd"),
    (lambda m: m["layers"][0].update(mediaType="application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
     "foreign"),
    (lambda m: m.pop("config"), "config"),
])
def test_unusable_manifests_are_rejected(fake_factory, mutate, why):
    fake = fake_factory()
    doc = image_manifest(fake)
    mutate(doc)
    fake.add_manifest("web", doc, tag="bad")
    with RegistryClient() as client, pytest.raises(RegistryError, match=why):
        client.resolve(parse_reference(f"{fake.host}/web:bad"))


def test_mirror_endpoint_is_used_instead_of_the_registry(fake_factory):
    fake = fake_factory()
    digest = fake.add_manifest("library/web", image_manifest(fake), tag="v1")
    with RegistryClient(mirrors={"docker.io": f"http://{fake.host}"}) as client:
        assert client.resolve(parse_reference("web:v1")).digest == digest


# ------------------------------------------------------------------ issue 17: registry hardening
def test_basic_credentials_never_go_to_a_plain_http_realm_on_another_host(fake_factory):
    token_server = fake_factory(users={"alice": "s3cret"}, token_users_required=True, bind="127.0.0.2")
    fake = fake_factory(auth="bearer", users={"alice": "s3cret"})
    fake.realm = f"http://{token_server.host}/token"      # the registry names a foreign plain-http realm
    fake.add_manifest("web", image_manifest(fake), tag="v1")
    ref = parse_reference(f"{fake.host}/web:v1")
    with RegistryClient(credentials={fake.host: ("alice", "s3cret")}) as client:
        with pytest.raises(RegistryError, match=r"were not sent: the token server is neither https nor "
                                                r"on the registry's own host"):
            client.resolve(ref)
    assert [a for p, a in token_server.requests if p == "/token"] == [None], "asked anonymously, no credentials"


@pytest.mark.parametrize("realm, endpoint, ok", [
    ("https://auth.example.com/token", "https://registry.example.com", True),
    ("https://auth.example.com/token", "http://127.0.0.1:5000", True),
    ("http://127.0.0.1:5000/token", "http://127.0.0.1:5000", True),
    ("http://127.0.0.1:5001/token", "http://127.0.0.1:5000", True),     # the registry's own host
    ("http://127.0.0.2:5000/token", "http://127.0.0.1:5000", False),
    ("http://evil.example.com/token", "http://127.0.0.1:5000", False),
    ("http://registry.example.com/token", "https://registry.example.com", False),
    ("ftp://x/y", "http://127.0.0.1:5000", False),
])
def test_may_send_credentials(realm, endpoint, ok):
    from shoal.agent.images.registry import may_send_credentials
    assert may_send_credentials(realm, endpoint) is ok


def test_a_manifest_over_the_cap_is_refused_before_it_is_read(fake_factory):
    import time as _time
    from shoal.agent.images.registry import MAX_MANIFEST_BYTES
    fake = fake_factory()
    # claims 100 MiB and sends 10 bytes, then holds the connection: reading it whole would hang
    fake.raw_manifest = (b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n"
                         b"Content-Length: %d\r\n\r\n0123456789" % (100 << 20))
    ref = parse_reference(f"{fake.host}/web:v1")
    t0 = _time.monotonic()
    with RegistryClient(timeout=5.0) as client:
        with pytest.raises(RegistryError, match=f"manifest larger than {MAX_MANIFEST_BYTES} bytes"):
            client.resolve(ref)
    assert _time.monotonic() - t0 < 2.0


def test_a_manifest_without_length_is_cut_off_at_the_cap(fake_factory):
    from shoal.agent.images.registry import MAX_MANIFEST_BYTES
    fake = fake_factory()
    fake.raw_manifest = (b"HTTP/1.0 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\r\n"
                         + b" " * (MAX_MANIFEST_BYTES + 1))
    ref = parse_reference(f"{fake.host}/web:v1")
    with RegistryClient() as client:
        with pytest.raises(RegistryError, match="manifest larger than"):
            client.resolve(ref)


# ------------------------------------------------------------------ issue 17: credentials per call
def test_a_token_earned_with_one_credential_is_never_sent_without_it(fake_factory):
    """The token cache is keyed by the credential too: a pod without the secret asks the
    token server anonymously (and is refused) instead of reusing another pod's token."""
    from shoal.agent.images.registry import Credential, RegistryAuthError
    fake = fake_factory(auth="bearer", users={"alice": "s3cret"}, token_users_required=True)
    digest = fake.add_manifest("private/web", image_manifest(fake), tag="v1")
    ref = parse_reference(f"{fake.host}/private/web:v1")
    alice = Credential("alice", "s3cret", "imagePullSecret default/regcred")
    with RegistryClient() as client:
        resolved = client.resolve(ref, credential=alice)
        assert resolved.digest == digest
        with client.open_blob(ref, resolved.manifest["layers"][0]["digest"], credential=alice) as chunks:
            assert b"".join(chunks) == b"layer-bytes"
        assert fake.tokens_issued == [("alice", "repository:private/web:pull")], "one token for the pull"
        with pytest.raises(RegistryAuthError, match=r"token server .* refused .*HTTP 401"):
            client.resolve(ref)                               # anonymous: the cached token is not alice's
        with pytest.raises(RegistryAuthError, match="HTTP 401"):
            with client.open_blob(ref, resolved.manifest["layers"][0]["digest"]):
                pass
        with pytest.raises(RegistryAuthError, match=r"refused.*401"):
            client.resolve(ref, credential=Credential("alice", "wrong", "x"))
        assert client.resolve(ref, credential=alice).digest == digest     # alice's token still cached
    assert fake.tokens_issued == [("alice", "repository:private/web:pull")]
    sent = [a for p, a in fake.requests if p.startswith("/v2/")]
    assert sent.count("Bearer tok-0") == 3, "alice's token went with alice's requests only"


def test_basic_credentials_per_call(fake_factory):
    from shoal.agent.images.registry import Credential, RegistryAuthError
    fake = fake_factory(auth="basic", users={"bob": "pw"})
    fake.add_manifest("web", image_manifest(fake), tag="v1")
    ref = parse_reference(f"{fake.host}/web:v1")
    with RegistryClient() as client:
        assert client.resolve(ref, credential=Credential("bob", "pw", "s")).manifest["schemaVersion"] == 2
        with pytest.raises(RegistryAuthError, match="unauthorized: registry .* wants basic auth and no credentials"):
            client.resolve(ref)
        with pytest.raises(RegistryAuthError, match=r"unauthorized \(HTTP 401\) with s \(user 'eve'\)"):
            client.resolve(ref, credential=Credential("eve", "pw", "s"))


def test_a_403_is_an_auth_error_naming_the_credential(fake_factory):
    from shoal.agent.images.registry import Credential, RegistryAuthError
    fake = fake_factory()
    fake.raw_manifest = (b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 52\r\n\r\n"
                         b'{"errors":[{"code":"DENIED","message":"no access"}]}')
    ref = parse_reference(f"{fake.host}/web:v1")
    with RegistryClient() as client:
        with pytest.raises(RegistryAuthError, match=r"denied \(HTTP 403\) DENIED: no access with s \(user 'u'\)"):
            client.resolve(ref, credential=Credential("u", "p", "s"))
