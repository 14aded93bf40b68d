"""Pulls from a real docker-registry on loopback, imports, gc, and a runnable rootfs."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from shoal.agent.images.registry import RegistryClient
from shoal.agent.images.store import LocalImageStore
from shoal.agent.interfaces import ImagePullError
from tests.e2e.images_fixtures import (DOCKER_REGISTRY, TokenAuthServer, cached_test_images,
                                       free_port, gzip_bytes, push_all, push_image, start_registry,
                                       write_docker_save, write_layout, write_oci_archive)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e tests run as root"),
    pytest.mark.skipif(not DOCKER_REGISTRY.exists(), reason="docker-registry is not installed"),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return cached_test_images()


@pytest.fixture(scope="module")
def registry(tmp_path_factory, images):
    with start_registry(tmp_path_factory.mktemp("registry")) as reg:
        reg.pushed = push_all(images, reg)
        yield reg


@pytest.fixture
def store(tmp_path):
    client = RegistryClient(timeout=5)
    yield LocalImageStore(tmp_path / "store", registry_client=client)
    client.close()


def store_contents(store: LocalImageStore) -> dict:
    return {"blobs": sorted(p.name for p in store.blobs.iterdir()),
            "layers": sorted(p.name for p in store.layers.iterdir()),
            "images": sorted(p.name for p in store.images_dir.iterdir()),
            "tmp": sorted(p.name for p in store.tmp.iterdir()),
            "refs": json.loads(store.refs_path.read_text()) if store.refs_path.exists() else {}}


EMPTY = {"blobs": [], "layers": [], "images": [], "tmp": [], "refs": {}}


def assert_blobs_verified(store: LocalImageStore) -> None:
    for blob in store.blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, f"{blob} does not match its name"


def test_pull_by_tag_and_digest(registry, images, store):
    web = images["web:v1"]
    lines: list[str] = []
    img = store.pull(registry.ref("web:v1"), progress=lines.append)
    assert img.digest == web.digest
    assert img.image_id == f"{registry.host}/web@{web.digest}"
    assert img.config["Entrypoint"] == ["/bin/web-entrypoint"] and "8080/tcp" in img.config["ExposedPorts"]
    assert [Path(l).name for l in img.layers] == [l["diff_id"][7:] for l in web.layers]
    base, app = map(Path, img.layers)
    assert (base / "bin/busybox").stat().st_size > 500_000 and os.readlink(base / "bin/httpd") == "busybox"
    assert (app / "www/index.html").read_text() == "version v1\n"
    assert any(f"pulling {registry.ref('web:v1')}: layer sha256:" in l and "MB/" in l for l in lines)
    by_digest = store.pull(registry.pushed["web:v2"], policy="Always")
    assert by_digest.image_id == registry.pushed["web:v2"]
    assert by_digest.layers[0] == img.layers[0], "the busybox base layer is shared"
    assert_blobs_verified(store)


def test_policy_never_and_if_not_present(registry, store):
    with pytest.raises(ImagePullError) as err:
        store.pull(registry.ref("crash:v1"), policy="Never")
    assert err.value.reason == "ErrImageNeverPull"
    pulled = store.pull(registry.ref("crash:v1"))
    assert store.pull(registry.ref("crash:v1"), policy="Never").digest == pulled.digest


@pytest.mark.parametrize("what", ["wrong digest", "missing image", "missing tag", "unreachable"])
def test_pull_failures_are_clear_and_leave_nothing(registry, store, what):
    ref = {"wrong digest": registry.ref("web@sha256:" + "0" * 64),
           "missing image": registry.ref("nosuch:v1"),
           "missing tag": registry.ref("web:v9"),
           "unreachable": f"127.0.0.1:{free_port()}/web:v1"}[what]
    with pytest.raises(ImagePullError) as err:
        store.pull(ref)
    e = err.value
    assert e.reason == "ErrImagePull" and e.reference == ref and ref in e.message
    expect = {"wrong digest": "not found (GET", "missing image": "not found (GET",
              "missing tag": "not found (GET", "unreachable": "unreachable"}[what]
    assert expect in e.message, e.message
    assert store_contents(store) == EMPTY


def test_tampered_blob_in_registry(registry, store, tmp_path):
    # an image of its own (one unique layer), so tampering cannot disturb other tests
    payload = os.urandom(4096)
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("data.bin")
        ti.size = len(payload)
        tf.addfile(ti, io.BytesIO(payload))
    plain = buf.getvalue()
    blob = gzip_bytes(plain)
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(plain).hexdigest()]}}
    write_layout(tmp_path / "layout", tag="v1", full_name="docker.io/library/tampered:v1",
                 config=config, layer_blobs=[blob])
    digest = push_image(tmp_path / "layout", registry.url, "tampered:v1")
    layer_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    data = registry.blob_path(layer_digest)
    good = data.read_bytes()
    data.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])   # same size, one bit off
    tampered = "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()
    ref = registry.ref(f"tampered@{digest}")
    with pytest.raises(ImagePullError) as err:
        store.pull(ref)
    assert f"expected {layer_digest}, got {tampered}" in err.value.message and ref in err.value.message
    assert store_contents(store) == EMPTY, "nothing half-pulled may remain"


def test_gc_removes_unused_images_and_layers(registry, store):
    v1 = store.pull(registry.pushed["web:v1"])
    v2 = store.pull(registry.pushed["web:v2"])
    removed = store.gc({v2.image_id})
    assert f"image {v1.digest}" in removed and not Path(v1.layers[1]).exists()
    assert Path(v2.layers[0]).exists() and Path(v2.layers[1]).exists()
    assert store.pull(registry.pushed["web:v2"], policy="Never").digest == v2.digest
    store.gc(set())
    assert store_contents(store) == EMPTY


@pytest.mark.parametrize("kind", ["oci-dir", "oci-tar", "docker-save"])
def test_import_archive(images, store, tmp_path, kind):
    web = images["web:v1"]
    if kind == "oci-dir":
        path = web.layout
    elif kind == "oci-tar":
        path = write_oci_archive(web, tmp_path / "web-v1.oci.tar")
    else:
        path = write_docker_save(web, tmp_path / "web-v1.docker.tar")
    lines: list[str] = []
    (imported,) = store.import_archive(path, progress=lines.append)
    assert imported.reference == "docker.io/library/web:v1" and lines
    if kind != "docker-save":
        assert imported.digest == web.digest
    assert [Path(l).name for l in imported.layers] == [l["diff_id"][7:] for l in web.layers]
    again = store.pull("web:v1", policy="Never")          # usable offline by its name
    assert again.digest == imported.digest and again.image_id == f"docker.io/library/web@{imported.digest}"
    assert (Path(again.layers[1]) / "www/index.html").read_text() == "version v1\n"
    assert_blobs_verified(store)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_import_archives_made_by_skopeo(images, store, tmp_path):
    web = images["web:v1"]
    docker_tar, oci_tar = tmp_path / "d.tar", tmp_path / "o.tar"
    for dest in (f"docker-archive:{docker_tar}:127.0.0.1:5000/web:v1", f"oci-archive:{oci_tar}:v1"):
        subprocess.run(["skopeo", "copy", "-q", f"oci:{web.layout}:v1", dest], check=True)
    (from_docker,) = store.import_archive(docker_tar)
    assert from_docker.reference == "127.0.0.1:5000/web:v1"
    (untagged,) = store.import_archive(oci_tar)        # ref.name is a bare tag: no name to give it
    assert untagged.digest == web.digest and untagged.reference == f"localhost/imported@{web.digest}"
    (named,) = store.import_archive(oci_tar, repository="127.0.0.1:5000/web")
    assert named.reference == "127.0.0.1:5000/web:v1" and named.digest == web.digest
    assert store.pull("127.0.0.1:5000/web:v1", policy="Never").digest == web.digest   # last import wins the tag
    assert from_docker.layers == named.layers, "same diff_ids, same layer dirs"


def test_import_rejects_a_tampered_layout(images, store, tmp_path):
    layout = tmp_path / "layout"
    shutil.copytree(images["web:v2"].layout, layout)
    app = images["web:v2"].layers[1]["digest"]
    blob = layout / "blobs/sha256" / app[7:]
    data = blob.read_bytes()
    blob.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])   # flip a CRC byte
    with pytest.raises(ImagePullError, match=f"expected {app}, got sha256:"):
        store.import_archive(layout)
    assert store_contents(store) == EMPTY


def test_bearer_token_auth_with_distribution(tmp_path, images):
    with TokenAuthServer(users={"ci": "pw"}) as tokens, \
            start_registry(tmp_path / "reg", token_auth=tokens) as reg:
        digest = push_image(images["sleeper:v1"].layout, reg.url, "sleeper:v1", auth=("ci", "pw"))
        with RegistryClient(credentials={reg.host: ("ci", "pw")}) as client:
            img = LocalImageStore(tmp_path / "s1", registry_client=client).pull(reg.ref("sleeper:v1"))
        assert img.digest == digest
        assert ("ci", "repository:sleeper:pull") in tokens.issued
        with RegistryClient() as anonymous:
            with pytest.raises(ImagePullError, match="token server .* refused .*credentials required"):
                LocalImageStore(tmp_path / "s2", registry_client=anonymous).pull(reg.ref("sleeper:v1"))


def test_basic_auth_with_distribution(tmp_path, images):
    pytest.importorskip("bcrypt", reason="htpasswd for docker-registry needs bcrypt hashes")
    with start_registry(tmp_path / "reg", htpasswd={"ci": "pw"}) as reg:
        push_image(images["crash:v1"].layout, reg.url, "crash:v1", auth=("ci", "pw"))
        with RegistryClient(credentials={reg.host: ("ci", "pw")}) as client:
            assert LocalImageStore(tmp_path / "s", registry_client=client).pull(reg.ref("crash:v1")).digest


def test_pulled_layers_make_a_runnable_rootfs(registry, store, tmp_path):
    img = store.pull(registry.pushed["web:v2"])
    merged, upper, work = tmp_path / "merged", tmp_path / "upper", tmp_path / "work"
    for d in (merged, upper, work):
        d.mkdir()
    lower = ":".join(reversed(img.layers))      # overlayfs wants the top layer first
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    try:
        out = subprocess.run(["chroot", str(merged), "/bin/sh", "-c", "cat /www/index.html; id -u"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["version", "v2", "0"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)
