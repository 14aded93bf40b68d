"""Images built from busybox-static and a loopback registry, for the demo and every e2e test.

What is here:
- `build_test_images(workdir)` builds, with no downloads, OCI image layouts from Debian's
  static `/bin/busybox`: a shared base layer (busybox, a symlink per applet, /etc/passwd,
  /tmp) and a small per-image layer. Deterministic (fixed mtimes, owners and gzip
  headers), so the same busybox always gives the same digests.
    web:v1, web:v2  busybox httpd on :8080 (env PORT) serving /index.html = "version v1\n"
                    (or v2) and /healthz = "ok\n"; the shell stays PID 1 and stops httpd
                    on SIGTERM.
    flaky:v1        like web, but /healthz is removed after $FAIL_AFTER seconds (default 20),
                    so an httpGet probe on /healthz starts failing (404).
    crash:v1        prints "crash: exiting with status 1" and exits $EXIT_CODE (default 1).
    sleeper:v1      sleeps forever; on SIGTERM prints "sleeper: got SIGTERM", writes
                    "SIGTERM" to $MARKER (default /tmp/sigterm-received) and exits 0.
- `cached_test_images(cache_root=None)` builds once per busybox binary and builder version
  into a cache dir (default `$TMPDIR/shoal-test-images-<uid>/<key>`) and reuses it.
- `start_registry(tmpdir, port=0, htpasswd=None, token_auth=None)` runs Debian's
  `docker-registry` on 127.0.0.1 with filesystem storage in tmpdir; returns a
  `RegistryHandle` (context manager, stops the process by its PID).
- `push_image(layout_dir, registry_url, "web:v1")` pushes a layout with the v2 API in pure
  Python (monolithic blob uploads, then the manifest) and returns the manifest digest;
  `push_all(images, registry)` pushes every built image.
- `write_docker_save(image, path)` and `write_oci_archive(image, path)` produce the two
  archive kinds `shoal images import` accepts, from a built image.
- `TokenAuthServer`: an in-process bearer-token server (RS256 JWTs with an x5c self-signed
  certificate) that a `start_registry(token_auth=...)` registry trusts.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx

BUILDER_VERSION = "3"
BUSYBOX = Path("/bin/busybox")
DOCKER_REGISTRY = Path("/usr/bin/docker-registry")
MTIME = 1_700_000_000           # fixed, so layers are byte-for-byte reproducible
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

WEB_SCRIPT = """#!/bin/sh
# busybox httpd in the foreground; this shell stays PID 1 so SIGTERM stops it cleanly
PORT="${PORT:-8080}"
echo "web $VERSION: serving /www on port $PORT"
httpd -f -v -p "$PORT" -h /www &
child=$!
trap 'echo "web $VERSION: got SIGTERM, stopping"; kill $child; wait $child; exit 0' TERM INT
wait $child
"""

FLAKY_SCRIPT = """#!/bin/sh
# healthy at first; /healthz disappears after FAIL_AFTER seconds (a liveness probe fails)
PORT="${PORT:-8080}"
FAIL_AFTER="${FAIL_AFTER:-20}"
echo "flaky: serving on port $PORT, /healthz fails after ${FAIL_AFTER}s"
( sleep "$FAIL_AFTER"; rm -f /www/healthz; echo "flaky: /healthz removed" ) &
timer=$!
httpd -f -v -p "$PORT" -h /www &
child=$!
trap 'echo "flaky: got SIGTERM, stopping"; kill $timer $child 2>/dev/null; wait $child; exit 0' TERM INT
wait $child
"""

CRASH_SCRIPT = """#!/bin/sh
echo "crash: exiting with status ${EXIT_CODE:-1}"
exit "${EXIT_CODE:-1}"
"""

SLEEPER_SCRIPT = """#!/bin/sh
MARKER="${MARKER:-/tmp/sigterm-received}"
child=
trap 'echo "sleeper: got SIGTERM"; echo SIGTERM > "$MARKER"; kill $child 2>/dev/null; exit 0' TERM
echo "sleeper: sleeping (pid $$)"
while :; do sleep 3600 & child=$!; wait $child; done
"""

PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class TestImage:
    __test__ = False           # not a pytest test class
    name: str                  # "web"
    tag: str                   # "v1"
    layout: Path               # OCI image layout dir holding just this image (ref.name = tag)
    digest: str                # manifest digest
    config_digest: str
    layers: list[dict]         # [{"digest", "diff_id", "size"}], bottom first
    config: dict               # the full OCI config document

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    def to_json(self) -> dict:
        return {"name": self.name, "tag": self.tag, "layout": str(self.layout), "digest": self.digest,
                "config_digest": self.config_digest, "layers": self.layers, "config": self.config}

    @classmethod
    def from_json(cls, d: dict) -> "TestImage":
        return cls(name=d["name"], tag=d["tag"], layout=Path(d["layout"]), digest=d["digest"],
                   config_digest=d["config_digest"], layers=d["layers"], config=d["config"])


# ------------------------------------------------------------------ deterministic tars
class _TarBuilder:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name: str, type_: bytes, mode: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime = type_, mode, MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    def dir(self, name: str, mode: int = 0o755) -> None:
        self.tf.addfile(self._info(name, tarfile.DIRTYPE, mode))

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        ti = self._info(name, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.tf.addfile(ti, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tf.addfile(ti)

    def finish(self) -> bytes:
        self.tf.close()
        return self.buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return out.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def busybox_applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True).stdout
    return sorted(a for a in out.split() if a and "/" not in a and a != "busybox")


def base_layer_tar(busybox: Path = BUSYBOX) -> bytes:
    t = _TarBuilder()
    for d in ("bin", "dev", "etc", "proc", "sys", "usr", "usr/bin", "var", "www"):
        t.dir(d)
    t.dir("root", 0o700)
    t.dir("tmp", 0o1777)
    t.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in busybox_applets(busybox):
        t.symlink(f"bin/{applet}", "busybox")
    t.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    t.file("etc/group", b"root:x:0:\nnobody:x:65534:\n")
    return t.finish()


def _app_layer(files: dict[str, tuple[bytes, int]]) -> bytes:
    t = _TarBuilder()
    for d in sorted({str(Path(p).parent) for p in files} - {"."}):
        t.dir(d)
    for path, (data, mode) in sorted(files.items()):
        t.file(path, data, mode)
    return t.finish()


def _image_specs() -> list[dict]:
    web = lambda v: {"name": "web", "tag": v,
                     "files": {"www/index.html": (f"version {v}\n".encode(), 0o644),
                               "www/healthz": (b"ok\n", 0o644),
                               "bin/web-entrypoint": (WEB_SCRIPT.encode(), 0o755)},
                     "env": [PATH_ENV, f"VERSION={v}", "PORT=8080"],
                     "entrypoint": ["/bin/web-entrypoint"], "ports": ["8080/tcp"]}
    return [
        web("v1"), web("v2"),
        {"name": "flaky", "tag": "v1",
         "files": {"www/index.html": (b"version flaky-v1\n", 0o644), "www/healthz": (b"ok\n", 0o644),
                   "bin/flaky-entrypoint": (FLAKY_SCRIPT.encode(), 0o755)},
         "env": [PATH_ENV, "VERSION=flaky-v1", "PORT=8080", "FAIL_AFTER=20"],
         "entrypoint": ["/bin/flaky-entrypoint"], "ports": ["8080/tcp"]},
        {"name": "crash", "tag": "v1", "files": {"bin/crash-entrypoint": (CRASH_SCRIPT.encode(), 0o755)},
         "env": [PATH_ENV, "EXIT_CODE=1"], "entrypoint": ["/bin/crash-entrypoint"], "ports": []},
        {"name": "sleeper", "tag": "v1",
         "files": {"bin/sleeper-entrypoint": (SLEEPER_SCRIPT.encode(), 0o755)},
         "env": [PATH_ENV, "MARKER=/tmp/sigterm-received"],
         "entrypoint": ["/bin/sleeper-entrypoint"], "ports": []},
    ]


def write_layout(layout: Path, *, tag: str, full_name: str, config: dict,
                 layer_blobs: list[bytes]) -> tuple[str, str]:
    """Write an OCI image layout holding one image; returns (manifest digest, config digest)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        d = _digest(data)
        (blobs / d[7:]).write_bytes(data)
        return d

    cfg_raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    cfg_digest = put(cfg_raw)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": len(cfg_raw)},
                "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": put(b), "size": len(b)}
                           for b in layer_blobs]}
    man_raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    man_digest = put(man_raw)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": man_digest, "size": len(man_raw),
                            "platform": {"architecture": "amd64", "os": "linux"},
                            "annotations": {"org.opencontainers.image.ref.name": tag,
                                            "io.containerd.image.name": full_name}}]}
    (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
    return man_digest, cfg_digest


def build_test_images(workdir: Path | str, *, busybox: Path = BUSYBOX) -> dict[str, TestImage]:
    """Build every test image as its own OCI layout under workdir; keys are "name:tag"."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    base_tar = base_layer_tar(busybox)
    base_gz = gzip_bytes(base_tar)
    base = {"digest": _digest(base_gz), "diff_id": _digest(base_tar), "size": len(base_gz)}
    out: dict[str, TestImage] = {}
    for spec in _image_specs():
        app_tar = _app_layer(spec["files"])
        app_gz = gzip_bytes(app_tar)
        app = {"digest": _digest(app_gz), "diff_id": _digest(app_tar), "size": len(app_gz)}
        config = {
            "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
            "config": {"Env": spec["env"], "Entrypoint": spec["entrypoint"], "Cmd": [],
                       "WorkingDir": "/",
                       "ExposedPorts": {p: {} for p in spec["ports"]},
                       "Labels": {"org.opencontainers.image.title": f"shoal test image {spec['name']}"}},
            "rootfs": {"type": "layers", "diff_ids": [base["diff_id"], app["diff_id"]]},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "shoal test builder: busybox base"},
                        {"created": "2023-11-14T22:13:20Z", "created_by": f"shoal test builder: {spec['name']}"}],
        }
        layout = workdir / f"{spec['name']}-{spec['tag']}"
        if layout.exists():
            shutil.rmtree(layout)
        digest, cfg_digest = write_layout(layout, tag=spec["tag"],
                                          full_name=f"docker.io/library/{spec['name']}:{spec['tag']}",
                                          config=config, layer_blobs=[base_gz, app_gz])
        img = TestImage(name=spec["name"], tag=spec["tag"], layout=layout, digest=digest,
                        config_digest=cfg_digest, layers=[base, app], config=config)
        out[img.ref] = img
    (workdir / "images.json").write_text(json.dumps({k: v.to_json() for k, v in out.items()}, indent=1))
    return out


def cached_test_images(cache_root: Path | str | None = None, *, busybox: Path = BUSYBOX) -> dict[str, TestImage]:
    """Build once per (busybox binary, builder version); later calls load the cache."""
    h = hashlib.sha256(busybox.read_bytes())
    h.update(BUILDER_VERSION.encode())
    for s in (WEB_SCRIPT, FLAKY_SCRIPT, CRASH_SCRIPT, SLEEPER_SCRIPT):
        h.update(s.encode())
    root = Path(cache_root) if cache_root else Path(tempfile.gettempdir()) / f"shoal-test-images-{os.getuid()}"
    final = root / h.hexdigest()[:16]
    if (final / "images.json").exists():
        data = json.loads((final / "images.json").read_text())
        return {k: TestImage.from_json(v) for k, v in data.items()}
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        build_test_images(work, busybox=busybox)
        # layouts record their path; rewrite it for the final location, then publish atomically
        data = json.loads((work / "images.json").read_text())
        for v in data.values():
            v["layout"] = str(final / Path(v["layout"]).name)
        (work / "images.json").write_text(json.dumps(data, indent=1))
        try:
            os.rename(work, final)
        except OSError:
            if not (final / "images.json").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return cached_test_images(cache_root, busybox=busybox)


# ------------------------------------------------------------------ archives for import
def write_oci_archive(image: TestImage, path: Path) -> Path:
    """A tar of the image's OCI layout (what `skopeo copy ... oci-archive:` makes)."""
    with tarfile.open(path, "w") as tf:
        for p in sorted(image.layout.rglob("*")):
            tf.add(p, arcname=str(p.relative_to(image.layout)), recursive=False)
    return path


def write_docker_save(image: TestImage, path: Path, *, repo_tags: list[str] | None = None) -> Path:
    """A legacy `docker save` tarball: manifest.json, <config hex>.json, <id>/layer.tar."""
    blobs = image.layout / "blobs" / "sha256"
    cfg_raw = (blobs / image.config_digest[7:]).read_bytes()
    with tarfile.open(path, "w") as tf:
        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), MTIME, 0o644
            tf.addfile(ti, io.BytesIO(data))

        layer_names = []
        for layer in image.layers:
            plain = gzip.decompress((blobs / layer["digest"][7:]).read_bytes())
            layer_id = hashlib.sha256(layer["diff_id"].encode()).hexdigest()
            add(f"{layer_id}/layer.tar", plain)
            add(f"{layer_id}/VERSION", b"1.0")
            layer_names.append(f"{layer_id}/layer.tar")
        cfg_name = f"{image.config_digest[7:]}.json"
        add(cfg_name, cfg_raw)
        tags = repo_tags if repo_tags is not None else [image.ref]
        add("manifest.json", json.dumps([{"Config": cfg_name, "RepoTags": tags,
                                          "Layers": layer_names}]).encode())
    return path


# ------------------------------------------------------------------ registry
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RegistryHandle:
    host: str                      # "127.0.0.1:PORT"
    url: str                       # "http://127.0.0.1:PORT"
    storage: Path
    log_path: Path
    proc: subprocess.Popen
    auth: tuple[str, str] | None = None

    def ref(self, name: str) -> str:
        """"web:v1" → "127.0.0.1:PORT/web:v1"; "web@sha256:…" likewise."""
        return f"{self.host}/{name}"

    def blob_path(self, digest: str) -> Path:
        hexd = digest.partition(":")[2]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "RegistryHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _htpasswd_lines(users: dict[str, str]) -> str:
    try:
        import bcrypt   # docker-registry's htpasswd accepts bcrypt only
    except ImportError as exc:
        raise RuntimeError("basic auth in start_registry needs the python 'bcrypt' package "
                           "(pip install bcrypt) or apache2-utils' htpasswd") from exc
    return "".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
                   for u, p in users.items())


def start_registry(tmpdir: Path | str, port: int = 0, *, htpasswd: dict[str, str] | None = None,
                   token_auth: "TokenAuthServer | None" = None,
                   ready_timeout: float = 15.0) -> RegistryHandle:
    """Run docker-registry on 127.0.0.1 with storage in tmpdir; wait for /v2/ to answer."""
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    storage = tmpdir / "storage"
    storage.mkdir(exist_ok=True)
    last_error = ""
    for _attempt in range(3):       # a free port can be taken between probe and bind: retry
        chosen = port or free_port()
        lines = ["version: 0.1", "log:", "  level: warn", "  accesslog:", "    disabled: true",
                 "storage:", "  filesystem:", f"    rootdirectory: {storage}",
                 "  delete:", "    enabled: true", "http:", f"  addr: 127.0.0.1:{chosen}",
                 f"  secret: {uuid.uuid4().hex}", "health:", "  storagedriver:", "    enabled: false"]
        if htpasswd:
            (tmpdir / "htpasswd").write_text(_htpasswd_lines(htpasswd))
            lines += ["auth:", "  htpasswd:", "    realm: shoal-test", f"    path: {tmpdir / 'htpasswd'}"]
        elif token_auth is not None:
            lines += ["auth:", "  token:", f"    realm: {token_auth.realm}",
                      f"    service: {token_auth.service}", f"    issuer: {token_auth.issuer}",
                      f"    rootcertbundle: {token_auth.write_cert(tmpdir / 'token-root.pem')}"]
        config = tmpdir / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        log_path = tmpdir / "registry.log"
        log = open(log_path, "ab")
        try:
            proc = subprocess.Popen([str(DOCKER_REGISTRY), "serve", str(config)], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        finally:
            log.close()
        handle = RegistryHandle(host=f"127.0.0.1:{chosen}", url=f"http://127.0.0.1:{chosen}",
                                storage=storage, log_path=log_path, proc=proc,
                                auth=next(iter(htpasswd.items())) if htpasswd else None)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = httpx.get(f"{handle.url}/v2/", timeout=1.0)
                if r.status_code in (200, 401):
                    return handle
            except httpx.HTTPError as exc:
                last_error = str(exc)
            time.sleep(0.05)
        handle.close()
        last_error = f"exit {proc.returncode}: {handle.log()[-2000:] or last_error}"
        if port:
            break
    raise RuntimeError(f"docker-registry did not come up on 127.0.0.1: {last_error}")


# ------------------------------------------------------------------ pushing
class _Pusher:
    def __init__(self, registry_url: str, repo: str, auth: tuple[str, str] | None):
        self.base = registry_url.rstrip("/")
        if "://" not in self.base:
            self.base = f"http://{self.base}"
        self.repo = repo
        self.basic = auth
        self.http = httpx.Client(timeout=60.0)
        self.header: dict[str, str] = {}

    def request(self, method: str, url: str, **kw) -> httpx.Response:
        for _ in range(2):
            resp = self.http.request(method, url, headers={**kw.pop("headers", {}), **self.header}, **kw)
            if resp.status_code != 401:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            if challenge.lower().startswith("basic") and self.basic:
                token = base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
                self.header = {"Authorization": f"Basic {token}"}
            elif challenge.lower().startswith("bearer"):
                params = dict(p.split("=", 1) for p in challenge[7:].replace('"', "").split(","))
                r = self.http.get(params["realm"], params={"service": params.get("service", ""),
                                                           "scope": f"repository:{self.repo}:pull,push"},
                                  auth=self.basic)
                r.raise_for_status()
                self.header = {"Authorization": f"Bearer {r.json()['token']}"}
            else:
                return resp
        return resp

    def push_blob(self, data: bytes, digest: str) -> None:
        head = self.request("HEAD", f"{self.base}/v2/{self.repo}/blobs/{digest}")
        if head.status_code == 200:
            return
        start = self.request("POST", f"{self.base}/v2/{self.repo}/blobs/uploads/")
        if start.status_code != 202:
            raise RuntimeError(f"push {self.repo}: starting upload of {digest}: HTTP {start.status_code} {start.text}")
        location = httpx.URL(self.base).join(start.headers["Location"])
        done = self.request("PUT", str(location.copy_merge_params({"digest": digest})), content=data,
                            headers={"Content-Type": "application/octet-stream"})
        if done.status_code != 201:
            raise RuntimeError(f"push {self.repo}: uploading {digest}: HTTP {done.status_code} {done.text}")


def push_image(layout_dir: Path | str, registry_url: str, target: str, *,
               auth: tuple[str, str] | None = None) -> str:
    """Push the (single) image of an OCI layout as `target` ("web:v1"); return its digest."""
    layout_dir = Path(layout_dir)
    repo, _, tag = target.partition(":")
    index = json.loads((layout_dir / "index.json").read_text())
    desc = index["manifests"][0]
    blobs = layout_dir / "blobs" / "sha256"
    man_raw = (blobs / desc["digest"][7:]).read_bytes()
    manifest = json.loads(man_raw)
    pusher = _Pusher(registry_url, repo, auth)
    try:
        for d in [manifest["config"]] + manifest["layers"]:
            pusher.push_blob((blobs / d["digest"][7:]).read_bytes(), d["digest"])
        resp = pusher.request("PUT", f"{pusher.base}/v2/{repo}/manifests/{tag or 'latest'}", content=man_raw,
                              headers={"Content-Type": manifest.get("mediaType", OCI_MANIFEST)})
        if resp.status_code != 201:
            raise RuntimeError(f"push {target}: manifest: HTTP {resp.status_code} {resp.text}")
        digest = _digest(man_raw)
        if resp.headers.get("Docker-Content-Digest", digest) != digest:
            raise RuntimeError(f"push {target}: registry says {resp.headers['Docker-Content-Digest']}, "
                               f"expected {digest}")
        return digest
    finally:
        pusher.http.close()


def push_all(images: dict[str, TestImage], registry: RegistryHandle) -> dict[str, str]:
    """Push every image; returns {"web:v1": "127.0.0.1:PORT/web@sha256:…"}."""
    return {key: registry.ref(f"{img.name}@{push_image(img.layout, registry.url, key, auth=registry.auth)}")
            for key, img in images.items()}


# ------------------------------------------------------------------ bearer tokens
@dataclass
class TokenAuthServer:
    """A loopback token server for Distribution's `auth: token` (JWT RS256, x5c header).

    `users` maps name → password for basic credentials at the token endpoint; anonymous
    requests get a token only if `allow_anonymous`. `issued` records every scope asked."""
    users: dict[str, str] = field(default_factory=dict)
    allow_anonymous: bool = False
    service: str = "shoal-test-registry"
    issuer: str = "shoal-test-issuer"
    issued: list[tuple[str | None, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
        import datetime as dt
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoal test token issuer")])
        now = dt.datetime.now(dt.timezone.utc)
        self._cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                      .sign(self._key, hashes.SHA256()))
        self._serialization = serialization
        self._hashes = hashes
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/token"

    def write_cert(self, path: Path) -> Path:
        path.write_bytes(self._cert.public_bytes(self._serialization.Encoding.PEM))
        return path

    def _jwt(self, subject: str, access: list[dict]) -> str:
        from cryptography.hazmat.primitives.asymmetric import padding
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        der = self._cert.public_bytes(self._serialization.Encoding.DER)
        header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        sig = self._key.sign(signing_input.encode(), padding.PKCS1v15(), self._hashes.SHA256())
        return f"{signing_input}.{b64(sig)}"

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        q = parse_qs(urlparse(req.path).query)
        scope = (q.get("scope") or [""])[0]
        user = None
        auth = req.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(u) != p:
                return _reply(req, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
            user = u
        elif not self.allow_anonymous:
            return _reply(req, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "credentials required"}]})
        self.issued.append((user, scope))
        access = []
        for s in scope.split():
            typ, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": typ, "name": name, "actions": actions.split(",") if user else ["pull"]})
        _reply(req, 200, {"token": self._jwt(user or "anonymous", access), "expires_in": 300})

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "TokenAuthServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reply(req: BaseHTTPRequestHandler, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    req.send_response(status)
    req.send_header("Content-Type", "application/json")
    req.send_header("Content-Length", str(len(data)))
    req.end_headers()
    req.wfile.write(data)
