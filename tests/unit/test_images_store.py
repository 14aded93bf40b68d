"""LocalImageStore against a scripted in-memory registry: policies, verification, clean-up, gc."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from shoal.agent.images.reference import Reference
from shoal.agent.images.registry import OCI_MANIFEST, Credential, RegistryAuthError, RegistryError, ResolvedManifest
from shoal.agent.images.store import LocalImageStore
from shoal.agent.interfaces import ImagePullError, ImageStore

pytestmark = pytest.mark.unit
REG = "127.0.0.1:5000"


def digest_of(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def layer_tar(files: dict[str, bytes], *, extra: list[tarfile.TarInfo] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 1_600_000_000, 0o644
            tf.addfile(ti, io.BytesIO(data))
        for ti in extra:
            tf.addfile(ti)
    return buf.getvalue()


class FakeRegistry:
    """Implements the store's RegistryAPI; counts calls; can serve wrong bytes."""

    def __init__(self):
        self.tags: dict[str, ResolvedManifest] = {}
        self.blobs: dict[str, bytes] = {}
        self.served: dict[str, bytes] = {}        # digest -> bytes to serve instead (tampering)
        self.resolves = 0
        self.downloads: list[str] = []
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()
        self.private: dict[str, tuple[str, str]] = {}     # repository -> the one (user, password) it takes
        self.credentials_seen: list[tuple[str, str, str | None]] = []   # (call, what, user or None)

    def _check(self, call: str, what: str, ref: Reference, credential: Credential | None) -> None:
        with self.lock:
            self.credentials_seen.append((call, what, credential.username if credential else None))
        want = self.private.get(ref.repository)
        if want is not None and (credential is None or (credential.username, credential.password) != want):
            raise RegistryAuthError(f"GET http://{ref.registry}/v2/{ref.repository}/manifests/{ref.pull_key}: "
                                    f"unauthorized (HTTP 401) with {credential.describe() if credential else 'none'}")

    def add_image(self, repo_tag: str, layers: list[bytes], *, gz: bool = True, arch: str = "amd64",
                  diff_ids: list[str] | None = None) -> ResolvedManifest:
        blobs = [gzip.compress(l, mtime=0) if gz else l for l in layers]
        config = {"architecture": arch, "os": "linux",
                  "config": {"Env": ["PATH=/bin"], "Entrypoint": ["/bin/app"], "Cmd": ["--x"]},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids or [digest_of(l) for l in layers]}}
        cfg = json.dumps(config).encode()
        for b in blobs + [cfg]:
            self.blobs[digest_of(b)] = b
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": digest_of(cfg), "size": len(cfg)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                "digest": digest_of(b), "size": len(b)} for b in blobs]}
        raw = json.dumps(manifest).encode()
        r = ResolvedManifest(digest=digest_of(raw), manifest_digest=digest_of(raw), manifest=manifest,
                             manifest_raw=raw)
        self.tags[f"{REG}/{repo_tag}"] = r
        self.tags[f"{REG}/{repo_tag.partition(':')[0]}@{r.digest}"] = r
        return r

    def endpoint(self, registry: str) -> str:
        return f"http://{registry}"

    def resolve(self, ref: Reference, *, credential: Credential | None = None) -> ResolvedManifest:
        self._check("resolve", ref.pull_key, ref, credential)
        with self.lock:
            self.resolves += 1
        key = f"{ref.name}@{ref.digest}" if ref.digest else f"{ref.name}:{ref.tag}"
        if key not in self.tags:
            raise RegistryError(f"GET http://{ref.registry}/v2/{ref.repository}/manifests/{ref.pull_key}: "
                                "HTTP 404 MANIFEST_UNKNOWN: manifest unknown")
        return self.tags[key]

    @contextmanager
    def open_blob(self, ref: Reference, digest: str, *, credential: Credential | None = None):
        self._check("blob", digest, ref, credential)
        if self.gate is not None:
            self.gate.wait(5)
        with self.lock:
            self.downloads.append(digest)
        data = self.served.get(digest, self.blobs.get(digest))
        if data is None:
            raise RegistryError(f"blob {digest} unknown")
        yield iter([data[i:i + 7] for i in range(0, len(data), 7)])


@pytest.fixture
def reg() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def store(tmp_path, reg) -> LocalImageStore:
    return LocalImageStore(tmp_path / "images", registry_client=reg, clock=lambda: 42.0)


BASE = layer_tar({"bin/app": b"#!/bin/sh\necho hi\n", "etc/passwd": b"root:x:0:0::/:/bin/sh\n"})
APP1 = layer_tar({"www/index.html": b"version v1\n"})
APP2 = layer_tar({"www/index.html": b"version v2\n"})


def contents(store: LocalImageStore) -> dict[str, list[str]]:
    return {d: sorted(p.name for p in (store.root / d).rglob("*") if p.parent.name in ("sha256", d))
            for d in ("blobs/sha256", "layers/sha256", "images", "tmp")}


def test_pull_by_tag_then_by_digest(store, reg):
    r = reg.add_image("web:v1", [BASE, APP1])
    lines: list[str] = []
    img = store.pull(f"{REG}/web:v1", progress=lines.append)
    assert isinstance(store, ImageStore)
    assert img.digest == r.digest and img.image_id == f"{REG}/web@{r.digest}"
    assert img.reference == f"{REG}/web:v1"
    assert img.config == {"Env": ["PATH=/bin"], "Entrypoint": ["/bin/app"], "Cmd": ["--x"]}
    assert len(img.layers) == 2
    assert (Path(img.layers[0]) / "bin/app").read_bytes().startswith(b"#!/bin/sh")
    assert (Path(img.layers[1]) / "www/index.html").read_text() == "version v1\n"
    assert Path(img.layers[0]).name == digest_of(BASE)[7:], "layers are keyed by diff_id"
    assert json.loads((store.root / "refs.json").read_text()) == {f"{REG}/web:v1": r.digest}
    assert all(l.startswith(f"pulling {REG}/web:v1: ") for l in lines)
    assert any(" verified" in l and "layer sha256:" in l for l in lines)
    by_digest = store.pull(f"{REG}/web@{r.digest}")
    assert by_digest.layers == img.layers and by_digest.digest == r.digest
    assert reg.resolves == 1, "IfNotPresent answers from the store"


def test_policies(store, reg):
    reg.add_image("web:v1", [BASE, APP1])
    with pytest.raises(ImagePullError) as err:
        store.pull(f"{REG}/web:v1", policy="Never")
    assert err.value.reason == "ErrImageNeverPull" and f"{REG}/web:v1" in err.value.message
    store.pull(f"{REG}/web:v1")
    assert store.pull(f"{REG}/web:v1", policy="Never").digest
    downloads = len(reg.downloads)
    # Always re-resolves the tag; a moved tag pulls the new image, reusing the shared base layer
    r2 = reg.add_image("web:v1", [BASE, APP2])
    img = store.pull(f"{REG}/web:v1", policy="Always")
    assert img.digest == r2.digest and reg.resolves == 2
    new = reg.downloads[downloads:]
    assert digest_of(gzip.compress(BASE, mtime=0)) not in new and len(new) == 2   # config + APP2
    with pytest.raises(ValueError, match="imagePullPolicy 'Sometimes'"):
        store.pull(f"{REG}/web:v1", policy="Sometimes")


def assert_empty(store: LocalImageStore) -> None:
    assert contents(store) == {"blobs/sha256": [], "layers/sha256": [], "images": [], "tmp": []}
    refs = store.root / "refs.json"
    assert not refs.exists() or json.loads(refs.read_text()) == {}


def test_tampered_layer_blob_leaves_nothing(store, reg):
    r = reg.add_image("web:v1", [BASE, APP1])
    bad = r.manifest["layers"][1]["digest"]
    good = reg.blobs[bad]
    reg.served[bad] = good[:-1] + bytes([good[-1] ^ 0xFF])
    with pytest.raises(ImagePullError) as err:
        store.pull(f"{REG}/web:v1")
    e = err.value
    assert e.reason == "ErrImagePull" and e.reference == f"{REG}/web:v1"
    assert f"expected {bad}, got {digest_of(reg.served[bad])}" in e.message and "web:v1" in e.message
    assert_empty(store)
    assert store.lookup(f"{REG}/web:v1") is None


def test_oversized_blob_is_cut_off(store, reg):
    r = reg.add_image("web:v1", [BASE])
    d = r.manifest["layers"][0]["digest"]
    reg.served[d] = reg.blobs[d] + b"x" * 100
    with pytest.raises(ImagePullError, match="larger than its descriptor"):
        store.pull(f"{REG}/web:v1")
    assert_empty(store)


def test_oversized_config_is_refused_before_download(store, reg, monkeypatch):
    import shoal.agent.images.store as store_mod
    monkeypatch.setattr(store_mod, "MAX_CONFIG_BYTES", 64)
    r = reg.add_image("web:v1", [BASE])
    cfg = r.manifest["config"]["digest"]
    with pytest.raises(ImagePullError, match=r"config .* more than the 64 bytes a node accepts"):
        store.pull(f"{REG}/web:v1")
    assert cfg not in reg.downloads
    assert_empty(store)
    # a descriptor that lies about the size is cut off while downloading
    r.manifest["config"]["size"] = 10
    reg.served[cfg] = reg.blobs[cfg]
    with pytest.raises(ImagePullError, match="larger than"):
        store.pull(f"{REG}/web:v1")
    assert_empty(store)


def test_layer_bomb_is_an_image_pull_error(tmp_path, reg):
    from shoal.agent.images.unpack import Limits
    small = LocalImageStore(tmp_path / "images", registry_client=reg, layer_limits=Limits(max_bytes=1 << 20))
    reg.add_image("bomb:v1", [layer_tar({"zeros": b"\0" * (4 << 20)})])
    with pytest.raises(ImagePullError, match="uncompressed content exceeds 1048576 bytes"):
        small.pull(f"{REG}/bomb:v1")
    assert_empty(small)


def test_diff_id_mismatch_fails_and_cleans(store, reg):
    reg.add_image("web:v1", [BASE], diff_ids=["sha256:" + "0" * 64])
    with pytest.raises(ImagePullError, match="does not match diff_id"):
        store.pull(f"{REG}/web:v1")
    assert_empty(store)


def test_missing_image_and_registry_errors(store, reg):
    with pytest.raises(ImagePullError) as err:
        store.pull(f"{REG}/web:nope")
    assert "MANIFEST_UNKNOWN" in err.value.message and f"{REG}/web:nope" in err.value.message
    with pytest.raises(ImagePullError) as err:
        store.pull("Not A Ref")
    assert err.value.reason == "InvalidImageName"
    assert_empty(store)


def test_unsafe_layer_is_an_image_pull_error(store, reg):
    evil = tarfile.TarInfo("../../etc/evil")
    r = reg.add_image("evil:v1", [BASE, layer_tar({}, extra=[evil])])
    with pytest.raises(ImagePullError) as err:
        store.pull(f"{REG}/evil:v1")
    assert r.manifest["layers"][1]["digest"] in err.value.message and "../../etc/evil" in err.value.message
    assert_empty(store)


def test_wrong_architecture(store, reg):
    reg.add_image("arm:v1", [BASE], arch="arm64")
    with pytest.raises(ImagePullError, match="built for linux/arm64"):
        store.pull(f"{REG}/arm:v1")
    assert_empty(store)


def test_failed_pull_keeps_layers_other_images_use(store, reg):
    reg.add_image("web:v1", [BASE, APP1])
    ok = store.pull(f"{REG}/web:v1")
    r2 = reg.add_image("web:v2", [BASE, APP2])
    reg.served[r2.manifest["layers"][1]["digest"]] = b"garbage"
    before = contents(store)
    with pytest.raises(ImagePullError):
        store.pull(f"{REG}/web:v2")
    assert contents(store) == before
    assert store.lookup(f"{REG}/web:v1").layers == ok.layers


def test_concurrent_pulls_of_one_image_download_once(store, reg):
    r = reg.add_image("web:v1", [BASE, APP1])
    reg.gate = threading.Event()
    results, errors = [], []

    def pull():
        try:
            results.append(store.pull(f"{REG}/web:v1"))
        except Exception as exc:   # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(6)]
    for t in threads:
        t.start()
    reg.gate.set()
    for t in threads:
        t.join(10)
    assert errors == [] and len(results) == 6
    assert {x.digest for x in results} == {r.digest}
    assert sorted(reg.downloads) == sorted([r.manifest["config"]["digest"]] +
                                           [l["digest"] for l in r.manifest["layers"]])


def test_gc(store, reg):
    v1 = store.pull(f"{REG}/web@{reg.add_image('web:v1', [BASE, APP1]).digest}")
    v2 = store.pull(f"{REG}/web@{reg.add_image('web:v2', [BASE, APP2]).digest}")
    assert store.gc({v1.digest, v2.image_id}) == []
    removed = store.gc({v2.image_id})
    assert f"image {v1.digest}" in removed and f"layer sha256:{Path(v1.layers[1]).name}" in removed
    assert f"blob {v1.digest}" in removed
    assert not Path(v1.layers[1]).exists() and Path(v1.layers[0]).exists() and v1.layers[0] == v2.layers[0]
    assert store.lookup(f"{REG}/web@{v2.digest}") is not None and store.lookup(f"{REG}/web@{v1.digest}") is None
    store.gc(set())
    assert_empty(store)


def test_tag_moves_and_refs(store, reg):
    reg.add_image("web:v1", [BASE, APP1])
    a = store.pull(f"{REG}/web:v1")
    reg.add_image("web:v1", [BASE, APP2])
    b = store.pull(f"{REG}/web:v1", policy="Always")
    assert a.digest != b.digest and store.lookup(f"{REG}/web:v1").digest == b.digest
    summary = {i["digest"]: i for i in store.list_images()}
    assert summary[b.digest]["tags"] == [f"{REG}/web:v1"] and summary[a.digest]["tags"] == []


def test_incomplete_image_is_not_used_and_tmp_is_cleared_on_open(tmp_path, store, reg):
    reg.add_image("web:v1", [BASE, APP1])
    img = store.pull(f"{REG}/web:v1")
    import shutil
    shutil.rmtree(img.layers[1])        # e.g. a crash or a manual rm: the record is no longer complete
    (store.tmp / "blob-leftover").write_bytes(b"partial")
    reopened = LocalImageStore(store.root, registry_client=reg)
    assert list(reopened.tmp.iterdir()) == []
    assert reopened.lookup(f"{REG}/web:v1") is None
    with pytest.raises(ImagePullError, match="Never"):
        reopened.pull(f"{REG}/web:v1", policy="Never")
    again = reopened.pull(f"{REG}/web:v1")
    assert Path(again.layers[1]).is_dir()


# ------------------------------------------------------------------ issue 17: credentials per pull
def docker_secret(name: str, auths: dict[str, tuple[str, str]], type_: str = "kubernetes.io/dockerconfigjson"):
    from shoal.agent.interfaces import PullSecret
    import base64
    doc = {"auths": {loc: {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()} for loc, (u, p) in auths.items()}}
    key = ".dockerconfigjson" if type_ == "kubernetes.io/dockerconfigjson" else ".dockercfg"
    raw = json.dumps(doc if key == ".dockerconfigjson" else doc["auths"]).encode()
    return PullSecret("default", name, type_, {key: raw})


def test_a_private_image_is_pulled_with_the_pods_secret_for_every_request(store, reg):
    reg.add_image("team/web:v1", [BASE, APP1])
    reg.private["team/web"] = ("ci", "pw")
    with pytest.raises(ImagePullError, match=r"unauthorized \(HTTP 401\) with none"):
        store.pull(f"{REG}/team/web:v1")
    assert contents(store)["images"] == []
    wrong = docker_secret("other", {"reg.example.com": ("ci", "pw")})     # matches another registry only
    with pytest.raises(ImagePullError, match="unauthorized"):
        store.pull(f"{REG}/team/web:v1", pull_secrets=[wrong])
    reg.credentials_seen.clear()
    img = store.pull(f"{REG}/team/web:v1", pull_secrets=[wrong, docker_secret("regcred", {REG: ("ci", "pw")})])
    assert img.digest
    assert {u for _, _, u in reg.credentials_seen} == {"ci"}, "the manifest and every blob with the secret"
    assert sorted(c for c, _, _ in reg.credentials_seen) == ["blob"] * 3 + ["resolve"]


def test_matching_credentials_are_tried_in_order_until_one_is_accepted(store, reg):
    reg.add_image("team/web:v1", [BASE])
    reg.private["team/web"] = ("right", "pw")
    secrets = [docker_secret("a", {REG: ("wrong", "pw")}), docker_secret("b", {f"{REG}/team": ("right", "pw")})]
    assert store.pull(f"{REG}/team/web:v1", pull_secrets=secrets).digest
    # the most specific key first, as kubelet's keyring: b's `REG/team` before a's `REG`
    assert [u for c, _, u in reg.credentials_seen if c == "resolve"] == ["right"]


def test_every_refusal_is_in_the_message(store, reg):
    reg.add_image("team/web:v1", [BASE])
    reg.private["team/web"] = ("right", "pw")
    secrets = [docker_secret("a", {REG: ("one", "pw-of-one")}), docker_secret("b", {REG: ("two", "pw-of-two")}),
               docker_secret("opaque", {}, type_="Opaque")]
    with pytest.raises(ImagePullError) as err:
        store.pull(f"{REG}/team/web:v1", pull_secrets=secrets)
    msg = err.value.message
    assert f"every credential matching {REG}/team/web was refused" in msg
    assert "imagePullSecret default/a (user 'one')" in msg and "imagePullSecret default/b (user 'two')" in msg
    assert "imagePullSecret default/opaque not used: its type is Opaque" in msg
    assert "pw-of" not in msg, "never a password in a message"


def test_the_node_credentials_come_after_the_pods(tmp_path, reg):
    from shoal.agent.images.dockerconfig import parse_auths
    node = parse_auths({REG: {"username": "node", "password": "npw"}}, source="--registry-auth f")
    store = LocalImageStore(tmp_path / "images", registry_client=reg, node_credentials=node)
    reg.add_image("team/web:v1", [BASE])
    reg.private["team/web"] = ("node", "npw")
    assert store.pull(f"{REG}/team/web:v1").digest                      # no pod secret: the node's
    reg.credentials_seen.clear()
    store.pull(f"{REG}/team/web:v1", policy="Always", pull_secrets=[docker_secret("a", {REG: ("pod", "x")})])
    assert [u for c, _, u in reg.credentials_seen if c == "resolve"] == ["pod", "node"]


def test_an_unreadable_pull_secret_fails_the_pull_and_names_it(store, reg):
    from shoal.agent.interfaces import PullSecret
    reg.add_image("web:v1", [BASE])
    bad = PullSecret("default", "bad", "kubernetes.io/dockerconfigjson", {".dockerconfigjson": b"{"})
    with pytest.raises(ImagePullError, match="imagePullSecret default/bad: not valid JSON"):
        store.pull(f"{REG}/web:v1", pull_secrets=[bad])
    assert reg.resolves == 0


def test_present_images_and_pull_policy_always(store, reg):
    """Kubernetes' behaviour: IfNotPresent uses an image already on the node whatever the pod's
    secrets; Always asks the registry with this pod's credentials every time."""
    reg.add_image("team/web:v1", [BASE])
    reg.private["team/web"] = ("ci", "pw")
    store.pull(f"{REG}/team/web:v1", pull_secrets=[docker_secret("regcred", {REG: ("ci", "pw")})])
    assert store.pull(f"{REG}/team/web:v1").digest                      # present: no registry, no secret
    assert reg.resolves == 1
    with pytest.raises(ImagePullError, match="unauthorized"):
        store.pull(f"{REG}/team/web:v1", policy="Always")
    assert store.pull(f"{REG}/team/web:v1", policy="Always",
                      pull_secrets=[docker_secret("regcred", {REG: ("ci", "pw")})]).digest


def test_a_registry_error_other_than_auth_stops_at_once(store, reg):
    secrets = [docker_secret("a", {REG: ("one", "x")}), docker_secret("b", {REG: ("two", "y")})]
    with pytest.raises(ImagePullError, match="HTTP 404 MANIFEST_UNKNOWN"):
        store.pull(f"{REG}/nothing:v1", pull_secrets=secrets)
    assert [c for c, _, _ in reg.credentials_seen] == ["resolve"], "no second credential for a missing image"
