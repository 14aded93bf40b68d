"""The node's content-addressed image store: pull, look up, import and garbage-collect.

Layout under `root` (one agent per root; all writes are temp-then-rename):

    blobs/sha256/<hex>            verified blobs: manifests, indexes, configs, layer blobs.
                                  A file here was hashed while written and renamed into
                                  place only when its sha256 and size matched.
    layers/sha256/<key>/          one unpacked layer, shared by every container that uses
                                  it (an overlayfs lower dir). <key> is the layer's
                                  diff_id hex (sha256 of the uncompressed tar, checked
                                  while unpacking), or the blob hex if the config has no
                                  diff_ids. Unpacked into tmp/ and renamed: exists ⇔ complete.
    images/<hex>.json             one record per image, <hex> = the digest the reference
                                  resolved to (the index digest for multi-arch images):
                                  manifest digest, config, layer list with their dirs, and
                                  every blob it references. Written last, so an image is
                                  visible only when everything it needs is in place.
    refs.json                     "registry/repo:tag" → "sha256:…" (tag resolution).
    tmp/                          temp files and dirs; emptied when a store is opened.

Pull flow (`pull`): parse the reference → apply `policy` (IfNotPresent/Never answer from
the local record when it is complete; Never fails with ErrImageNeverPull otherwise;
Always re-resolves the tag with one manifest GET) → choose the credentials (the pod's
`pull_secrets` that match the image, then the node's `node_credentials`:
`agent.images.dockerconfig`) → resolve with the first the registry accepts, anonymously when
none matches (registry client: manifest verified against its digest, index →
linux/amd64) → every blob of this pull fetched with that same credential → under a
per-digest lock: config blob,
then each layer blob (skipped when present; else streamed to tmp/, hashed, checked,
renamed) and its unpacked dir (skipped when present) → image record → tag.
Any failure raises `ImagePullError` (reason ErrImagePull) naming image and digests and
removes what this pull created that no image record uses: temp files, blobs, layer dirs.

Concurrency: one store per process may be used from many threads. Keyed locks serialize
work on one image digest / blob / layer; a pin count marks blobs, layers and images an
in-flight pull relies on, and `gc` and failure clean-up never delete a pinned item.
The store-wide lock guards pins and refs.json and is never held during network I/O.

Credentials and shared images: blobs and layers are shared by digest, so an image a pod
pulled with its secret is on the node for every pod. A pod without the secret whose
`imagePullPolicy` is IfNotPresent (the default for a tagged image) runs it without asking
the registry — Kubernetes' behaviour (its AlwaysPullImages admission exists for this).
`Always` asks the registry on every start with the pod's own credentials, so a pod that may
not pull the image fails even when it is present (docs/images.md, "Private registries").

`import_archive` takes an OCI image layout (dir or tar) or a `docker save` tarball and
feeds the same install path with an archive as the blob source, so imported blobs are
verified exactly like pulled ones (see docs/images.md for how names are chosen).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ContextManager, Protocol

from shoal.agent.hostfiles import private_dir
from shoal.agent.images.dockerconfig import DockerConfigError, Keyring, keyring_from_pull_secrets
from shoal.agent.images.reference import Reference, parse_reference
from shoal.agent.images.registry import (DOCKER_MANIFEST, INDEX_TYPES, Credential, RegistryAuthError, RegistryClient,
                                         RegistryError, ResolvedManifest, check_image_manifest, select_platform,
                                         sha256_digest)
from shoal.agent.images.unpack import DEFAULT_LIMITS, LayerError, Limits, detect_compression, unpack_layer
from shoal.agent.interfaces import ImagePullError, PulledImage, PullSecret

log = logging.getLogger(__name__)

POLICIES = ("Always", "IfNotPresent", "Never")
_HEX = re.compile(r"[a-f0-9]{64}\Z")
_MB = 1_000_000
# An image config is a few KiB of JSON (the largest seen in the wild: ~100 KiB of history);
# it is parsed whole in memory, so a registry may not hand the node an unbounded one.
MAX_CONFIG_BYTES = 8 << 20


class RegistryAPI(Protocol):
    """What the store needs from a registry client (RegistryClient, or a test fake)."""

    def resolve(self, ref: Reference, *, credential: Credential | None = None) -> ResolvedManifest: ...

    def open_blob(self, ref: Reference, digest: str, *,
                  credential: Credential | None = None) -> ContextManager[Iterator[bytes]]: ...


class BlobSource(Protocol):
    def open(self, digest: str) -> ContextManager[Iterator[bytes]]: ...


def short(digest: str) -> str:
    return digest[:19] + "…" if len(digest) > 19 else digest


def human(n: int) -> str:
    return f"{n / _MB:.1f} MB" if n >= 100_000 else f"{n / 1000:.1f} kB"


class _KeyedLocks:
    """One lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, list] = {}   # key -> [Lock, users]

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._lock:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        entry[0].acquire()
        try:
            yield
        finally:
            entry[0].release()
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]


@dataclass
class _Job:
    """One pull or import in flight: its name for messages, progress, pins, what it made."""
    reference: str
    say: Callable[[str], None]
    pins: list[str] = field(default_factory=list)
    created: list[tuple[str, str]] = field(default_factory=list)   # ("blob"|"layer", key)

    def fail(self, message: str) -> ImagePullError:
        return ImagePullError(self.reference, message)


class _RegistrySource:
    """The blobs of one pull, fetched with the credential its manifest was resolved with."""

    def __init__(self, client: RegistryAPI, ref: Reference, credential: Credential | None):
        self.client, self.ref, self.credential = client, ref, credential

    def open(self, digest: str) -> ContextManager[Iterator[bytes]]:
        return self.client.open_blob(self.ref, digest, credential=self.credential)


class LocalImageStore:
    def __init__(self, root: Path, *, registry_client: RegistryAPI | None = None,
                 clock: Callable[[], float] = time.time, layer_limits: Limits = DEFAULT_LIMITS,
                 node_credentials: Keyring | None = None):
        """`node_credentials`: the node's own registry credentials (`--registry-auth`), tried
        after a pod's matching imagePullSecrets."""
        self.root = Path(root).absolute()
        self.layer_limits = layer_limits
        self.registry: RegistryAPI = registry_client if registry_client is not None else RegistryClient()
        self.node_credentials = node_credentials if node_credentials is not None else Keyring()
        self._clock = clock
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers" / "sha256"
        self.images_dir = self.root / "images"
        self.tmp = self.root / "tmp"
        self.refs_path = self.root / "refs.json"
        # 0700 all the way: a layer's setuid files stay unreachable from the host (agent/hostfiles.py)
        for d in (self.root, self.root / "blobs", self.blobs, self.root / "layers", self.layers,
                  self.images_dir, self.tmp):
            private_dir(d)
        for leftover in self.tmp.iterdir():   # from a crash mid-pull: never complete, never used
            _remove_path(leftover)
        self._lock = threading.Lock()
        self._keyed = _KeyedLocks()
        self._pins: Counter[str] = Counter()

    # ------------------------------------------------------------------ public API
    def pull(self, reference: str, *, policy: str = "IfNotPresent",
             progress: Callable[[str], None] | None = None,
             pull_secrets: Sequence[PullSecret] = ()) -> PulledImage:
        if policy not in POLICIES:
            raise ValueError(f"imagePullPolicy {policy!r} is not one of {', '.join(POLICIES)}")
        ref = parse_reference(reference)
        job = _Job(reference, _sayer(reference, progress))
        if policy != "Always":
            local = self.lookup(reference)
            if local is not None:
                # Not a pull: no progress line (callers report "already present on machine").
                log.debug("%s present locally as %s", reference, local.digest)
                return local
            if policy == "Never":
                raise ImagePullError(reference, f"image {reference} is not present on this node "
                                     "and imagePullPolicy is Never", reason="ErrImageNeverPull")
        try:
            pod_credentials = keyring_from_pull_secrets(pull_secrets)
        except DockerConfigError as exc:       # kubelet fails the pull on an unreadable secret too
            raise job.fail(f"pulling {reference}: {exc}") from exc
        job.say(f"resolving on {self._endpoint(ref.registry)}")
        resolved, credential = self._resolve(job, ref, pod_credentials)
        job.say(f"resolved to {resolved.digest}")
        tags = [ref.tagged] if ref.tagged else []
        return self._install(job, resolved, source=_RegistrySource(self.registry, ref, credential),
                             name=ref.name, tags=tags)

    def _resolve(self, job: _Job, ref: Reference, pod_credentials: Keyring) -> tuple[ResolvedManifest,
                                                                                        Credential | None]:
        """The manifest, resolved with the first matching credential the registry accepts (the
        pod's, then the node's), anonymously when none matches — and that credential."""
        candidates: list[Credential | None] = [*pod_credentials.lookup(ref.name),
                                               *self.node_credentials.lookup(ref.name)]
        refused: list[str] = []
        for credential in candidates or [None]:
            try:
                return self.registry.resolve(ref, credential=credential), credential
            except RegistryAuthError as exc:     # the next credential may be the right one
                refused.append(str(exc))
            except RegistryError as exc:
                raise job.fail(f"pulling {job.reference}: {exc}{_notes(pod_credentials)}") from exc
        if len(refused) == 1:
            why = refused[0]
        else:
            why = f"every credential matching {ref.name} was refused: " + "; ".join(refused)
        raise job.fail(f"pulling {job.reference}: {why}{_notes(pod_credentials)}")

    def lookup(self, reference: str) -> PulledImage | None:
        """The complete local image for a reference (tag via refs.json, or digest), or None."""
        ref = parse_reference(reference)
        digest = ref.digest or self._read_refs().get(ref.tagged or "")
        if digest is None:
            return None
        rec = self._read_record(digest)
        if rec is None or not self._complete(rec):
            return None
        return self._pulled(reference, ref.name, rec)

    def list_images(self) -> list[dict]:
        """Summaries for a CLI: digest, tags, layer count, size of layer blobs, created."""
        refs = self._read_refs()
        out = []
        for rec in self._records():
            tags = sorted(r for r, d in refs.items() if d == rec["digest"])
            out.append({"digest": rec["digest"], "tags": tags, "layers": len(rec["layers"]),
                        "size": sum(int(l.get("size") or 0) for l in rec["layers"]),
                        "created": rec.get("created"), "complete": self._complete(rec)})
        return out

    def gc(self, in_use: set[str]) -> list[str]:
        """Remove images whose digest is not in `in_use` (digests or image ids), then every
        blob and layer dir no remaining image references. Pinned items are kept."""
        keep_images = {d.rpartition("@")[2] if "@" in d else d for d in in_use}
        removed: list[str] = []
        doomed_dirs: list[Path] = []
        with self._lock:
            refs = self._read_refs()
            live_blobs: set[str] = set()
            live_layers: set[str] = set()
            for rec in self._records():
                digest = rec["digest"]
                if digest in keep_images or self._pins[f"image:{digest}"]:
                    live_blobs.update(rec.get("blobs", []))
                    live_layers.update(Path(l["dir"]).name for l in rec["layers"])
                    continue
                (self.images_dir / f"{_hex(digest)}.json").unlink(missing_ok=True)
                removed.append(f"image {digest}")
                refs = {r: d for r, d in refs.items() if d != digest}
            self._write_json(self.refs_path, refs)
            for blob in sorted(self.blobs.iterdir()):
                digest = f"sha256:{blob.name}"
                if digest not in live_blobs and not self._pins[f"blob:{digest}"]:
                    blob.unlink(missing_ok=True)
                    removed.append(f"blob {digest}")
            for layer in sorted(self.layers.iterdir()):
                if layer.name not in live_layers and not self._pins[f"layer:{layer.name}"]:
                    doomed_dirs.append(self._move_to_tmp(layer))
                    removed.append(f"layer sha256:{layer.name}")
        for d in doomed_dirs:
            _remove_path(d)
        return removed

    def import_archive(self, path: Path | str, *, repository: str | None = None,
                       progress: Callable[[str], None] | None = None) -> list[PulledImage]:
        """Import every image of an OCI layout (dir or tar) or a `docker save` tarball."""
        path = Path(path)
        label = f"import {path}"
        if not path.exists():
            raise ImagePullError(label, f"{label}: no such file or directory")
        with _open_archive(path) as archive:
            if archive.exists("oci-layout") and archive.exists("index.json"):
                return self._import_oci(archive, label, repository, progress)
            if archive.exists("manifest.json"):
                return self._import_docker(archive, label, progress)
            raise ImagePullError(label, f"{label}: neither an OCI image layout (oci-layout, "
                                 "index.json) nor a docker save archive (manifest.json)")

    # ------------------------------------------------------------------ install (shared)
    def _install(self, job: _Job, resolved: ResolvedManifest, *, source: BlobSource,
                 name: str, tags: list[str]) -> PulledImage:
        digest = resolved.digest
        try:
            with self._keyed.hold(f"image:{digest}"):
                self._pin(job, f"image:{digest}")
                rec = self._read_record(digest)
                if rec is None or not self._complete(rec):
                    rec = self._fetch_and_unpack(job, resolved, source, name)
                self._tag(tags, digest)
                job.say(f"done: {digest}")
                return self._pulled(job.reference, name, rec)
        except ImagePullError:
            self._cleanup(job)
            raise
        except (RegistryError, LayerError) as exc:
            self._cleanup(job)
            raise job.fail(f"pulling {job.reference}: {exc}") from exc
        except BaseException:
            self._cleanup(job)
            raise
        finally:
            self._unpin(job)

    def _fetch_and_unpack(self, job: _Job, resolved: ResolvedManifest, source: BlobSource,
                          name: str) -> dict:
        manifest = resolved.manifest
        self._put_bytes(job, resolved.manifest_digest, resolved.manifest_raw)
        blobs = [resolved.manifest_digest]
        if resolved.index_raw is not None:
            self._put_bytes(job, resolved.digest, resolved.index_raw)
            blobs.append(resolved.digest)
        cfg_desc = manifest["config"]
        cfg_path = self._ensure_blob(job, cfg_desc, source, label="config")
        blobs.append(cfg_desc["digest"])
        try:
            config = json.loads(cfg_path.read_bytes())
        except ValueError as exc:
            raise job.fail(f"image {job.reference}: config {cfg_desc['digest']} is not JSON: {exc}")
        arch = config.get("architecture")
        if arch not in (None, "", "amd64") or config.get("os") not in (None, "", "linux"):
            raise job.fail(f"image {job.reference} ({resolved.manifest_digest}) is built for "
                           f"{config.get('os')}/{arch}, this node runs linux/amd64")
        layer_descs = manifest["layers"]
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if diff_ids and len(diff_ids) != len(layer_descs):
            raise job.fail(f"image {job.reference}: config {cfg_desc['digest']} lists "
                           f"{len(diff_ids)} diff_ids for {len(layer_descs)} layers")
        layers = []
        for i, desc in enumerate(layer_descs):
            diff_id = diff_ids[i] if diff_ids else None
            blob = self._ensure_blob(job, desc, source, label="layer")
            blobs.append(desc["digest"])
            key = _hex(diff_id) if diff_id else _hex(desc["digest"])
            self._ensure_layer(job, blob, desc["digest"], key, diff_id)
            layers.append({"digest": desc["digest"], "diff_id": diff_id, "size": desc.get("size"),
                           "media_type": desc.get("mediaType"),
                           "dir": f"layers/sha256/{key}"})
        rec = {"digest": resolved.digest, "manifest_digest": resolved.manifest_digest,
               "media_type": resolved.media_type, "name": name,
               "config_digest": cfg_desc["digest"], "config": config, "layers": layers,
               "blobs": blobs, "created": self._clock()}
        self._write_json(self.images_dir / f"{_hex(resolved.digest)}.json", rec)
        return rec

    def _ensure_blob(self, job: _Job, desc: dict, source: BlobSource, *, label: str) -> Path:
        digest = str(desc.get("digest", ""))
        if not digest.startswith("sha256:") or not _HEX.match(digest[7:]):
            raise job.fail(f"image {job.reference}: {label} descriptor has invalid digest {digest!r}")
        size = desc.get("size")
        cap = MAX_CONFIG_BYTES if label == "config" else None
        if cap is not None and isinstance(size, int) and size > cap:
            raise job.fail(f"image {job.reference}: {label} {digest} is {size} bytes, more than the "
                           f"{cap} bytes a node accepts for an image config; refused before download")
        path = self.blobs / digest[7:]
        self._pin(job, f"blob:{digest}")
        with self._keyed.hold(f"blob:{digest}"):
            if path.exists():
                job.say(f"{label} {short(digest)} already present")
                return path
            fd, tmp_name = tempfile.mkstemp(prefix="blob-", dir=self.tmp)
            tmp = Path(tmp_name)
            try:
                h, n = hashlib.sha256(), 0
                total = f"/{human(size)}" if isinstance(size, int) else ""
                step = max(_MB, (size or 0) // 10)
                next_report = 0
                with os.fdopen(fd, "wb") as out, source.open(digest) as chunks:
                    for chunk in chunks:
                        n += len(chunk)
                        if isinstance(size, int) and n > size:
                            raise job.fail(f"image {job.reference}: {label} {digest} is larger than "
                                           f"its descriptor's {size} bytes; download aborted")
                        if cap is not None and n > cap:
                            raise job.fail(f"image {job.reference}: {label} {digest} is larger than "
                                           f"{cap} bytes; download aborted")
                        h.update(chunk)
                        out.write(chunk)
                        if n >= next_report:
                            job.say(f"{label} {short(digest)} {human(n)}{total}")
                            next_report = n + step
                actual = "sha256:" + h.hexdigest()
                if actual != digest:
                    raise job.fail(f"image {job.reference}: {label} blob digest mismatch: expected "
                                   f"{digest}, got {actual} ({n} bytes); blob discarded")
                if isinstance(size, int) and n != size:
                    raise job.fail(f"image {job.reference}: {label} {digest} size mismatch: "
                                   f"expected {size} bytes, got {n}")
                job.say(f"{label} {short(digest)} {human(n)}{total} verified")
                os.replace(tmp, path)
                job.created.append(("blob", digest))
                return path
            finally:
                tmp.unlink(missing_ok=True)

    def _ensure_layer(self, job: _Job, blob: Path, digest: str, key: str, diff_id: str | None) -> Path:
        dest = self.layers / key
        self._pin(job, f"layer:{key}")
        with self._keyed.hold(f"layer:{key}"):
            if dest.exists():
                return dest
            job.say(f"unpacking layer {short(digest)}")
            unpack_layer(blob, dest, layer=digest, expected_diff_id=diff_id, tmp_dir=self.tmp,
                         limits=self.layer_limits)
            job.created.append(("layer", key))
            return dest

    def _put_bytes(self, job: _Job, digest: str, data: bytes) -> None:
        """Store bytes already hashed by the caller (manifests); re-checked here anyway."""
        if sha256_digest(data) != digest:
            raise job.fail(f"image {job.reference}: manifest digest mismatch: expected {digest}, "
                           f"got {sha256_digest(data)}")
        path = self.blobs / _hex(digest)
        self._pin(job, f"blob:{digest}")
        if path.exists():
            return
        fd, tmp = tempfile.mkstemp(prefix="blob-", dir=self.tmp)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
        job.created.append(("blob", digest))

    # ------------------------------------------------------------------ bookkeeping
    def _pin(self, job: _Job, key: str) -> None:
        with self._lock:
            self._pins[key] += 1
        job.pins.append(key)

    def _unpin(self, job: _Job) -> None:
        with self._lock:
            for key in job.pins:
                self._pins[key] -= 1
                if self._pins[key] <= 0:
                    del self._pins[key]
        job.pins.clear()

    def _cleanup(self, job: _Job) -> None:
        """Remove what a failed job created unless a record or another job uses it."""
        doomed: list[Path] = []
        with self._lock:
            used_blobs: set[str] = set()
            used_layers: set[str] = set()
            for rec in self._records():
                used_blobs.update(rec.get("blobs", []))
                used_layers.update(Path(l["dir"]).name for l in rec["layers"])
            mine = Counter(job.pins)
            for kind, key in job.created:
                pin = f"{kind}:{key}"
                if self._pins[pin] > mine[pin]:
                    continue   # another pull relies on it
                if kind == "blob" and key not in used_blobs:
                    (self.blobs / _hex(key)).unlink(missing_ok=True)
                elif kind == "layer" and key not in used_layers and (self.layers / key).exists():
                    doomed.append(self._move_to_tmp(self.layers / key))
        for d in doomed:
            _remove_path(d)

    def _move_to_tmp(self, path: Path) -> Path:
        dest = Path(tempfile.mkdtemp(prefix="gc-", dir=self.tmp)) / path.name
        os.rename(path, dest)
        return dest.parent

    def _complete(self, rec: dict) -> bool:
        return all((self.root / l["dir"]).is_dir() for l in rec["layers"])

    def _pulled(self, reference: str, name: str, rec: dict) -> PulledImage:
        return PulledImage(reference=reference, digest=rec["digest"],
                           image_id=f"{name}@{rec['digest']}",
                           layers=[str(self.root / l["dir"]) for l in rec["layers"]],
                           config=dict(rec["config"].get("config") or {}))

    def _read_record(self, digest: str) -> dict | None:
        try:
            return json.loads((self.images_dir / f"{_hex(digest)}.json").read_text())
        except FileNotFoundError:
            return None

    def _records(self) -> list[dict]:
        out = []
        for p in sorted(self.images_dir.glob("*.json")):
            with contextlib.suppress(FileNotFoundError):
                out.append(json.loads(p.read_text()))
        return out

    def _read_refs(self) -> dict[str, str]:
        try:
            return json.loads(self.refs_path.read_text())
        except FileNotFoundError:
            return {}

    def _tag(self, tags: list[str], digest: str) -> None:
        if not tags:
            return
        with self._lock:
            refs = self._read_refs()
            refs.update({t: digest for t in tags})
            self._write_json(self.refs_path, refs)

    def _write_json(self, path: Path, doc: dict) -> None:
        fd, tmp = tempfile.mkstemp(prefix="json-", dir=self.tmp)
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out, indent=1, sort_keys=True)
        os.replace(tmp, path)

    def _endpoint(self, registry: str) -> str:
        endpoint = getattr(self.registry, "endpoint", None)
        return endpoint(registry) if callable(endpoint) else registry

    # ------------------------------------------------------------------ import
    def _import_oci(self, archive: "_Archive", label: str, repository: str | None,
                    progress: Callable[[str], None] | None) -> list[PulledImage]:
        index = _json_member(archive, "index.json", label)
        out = []
        for top in index.get("manifests") or []:
            annotations = top.get("annotations") or {}
            names = _oci_names(annotations, repository, label)
            job = _Job(names[0] if names else label, _sayer(names[0] if names else label, progress))
            resolved = self._resolve_archive(job, archive, top)
            name = parse_reference(names[0]).name if names else _untagged_name(repository)
            tags = [t for t in (parse_reference(n).tagged for n in names) if t]
            image = self._install(job, resolved, source=_ArchiveSource(archive), name=name, tags=tags)
            if not names:   # nothing to call it by but its digest
                image = dataclasses.replace(image, reference=image.image_id)
                job.say(f"image {resolved.digest} has no repository name; reference it by digest")
            out.append(image)
        return out

    def _resolve_archive(self, job: _Job, archive: "_Archive", desc: dict) -> ResolvedManifest:
        digest = str(desc.get("digest", ""))
        raw = _verified_blob(archive, digest, desc.get("size"), job)
        doc = json.loads(raw)
        media = doc.get("mediaType") or desc.get("mediaType")
        index_raw = None
        manifest_digest, manifest_raw, manifest = digest, raw, doc
        if media in INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
            sub = select_platform(doc)
            if sub is None:
                raise job.fail(f"{job.reference}: index {digest} has no linux/amd64 image")
            sub_resolved = self._resolve_archive(job, archive, sub)
            return ResolvedManifest(digest=digest, manifest_digest=sub_resolved.manifest_digest,
                                    manifest=sub_resolved.manifest,
                                    manifest_raw=sub_resolved.manifest_raw, index_raw=raw,
                                    media_type=sub_resolved.media_type)
        try:
            check_image_manifest(manifest, where=f"{job.reference} manifest {digest}")
        except RegistryError as exc:
            raise job.fail(str(exc)) from exc
        return ResolvedManifest(digest=digest, manifest_digest=manifest_digest, manifest=manifest,
                                manifest_raw=manifest_raw, index_raw=index_raw,
                                media_type=media or "application/vnd.oci.image.manifest.v1+json")

    def _import_docker(self, archive: "_Archive", label: str,
                       progress: Callable[[str], None] | None) -> list[PulledImage]:
        entries = _json_member(archive, "manifest.json", label)
        if not isinstance(entries, list):
            raise ImagePullError(label, f"{label}: manifest.json is not a list")
        out = []
        for entry in entries:
            tags = [parse_reference(t) for t in entry.get("RepoTags") or []]
            ref_label = str(tags[0]) if tags else label
            job = _Job(ref_label, _sayer(ref_label, progress))
            cfg_name = str(entry.get("Config", ""))
            cfg_raw = archive.read(_safe_name(cfg_name, label))
            cfg_digest = sha256_digest(cfg_raw)
            stem = Path(cfg_name).name.removesuffix(".json")
            if _HEX.match(stem) and stem != cfg_digest[7:]:
                raise job.fail(f"{label}: config {cfg_name} hashes to {cfg_digest}, not sha256:{stem}")
            config = json.loads(cfg_raw)
            diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
            layer_names = [_safe_name(str(n), label) for n in entry.get("Layers") or []]
            if len(diff_ids) != len(layer_names):
                raise job.fail(f"{label}: config {cfg_digest} lists {len(diff_ids)} diff_ids for "
                               f"{len(layer_names)} layers")
            source = _ArchiveSource(archive)
            layers = []
            for lname, diff_id in zip(layer_names, diff_ids):
                with archive.open(lname) as f:
                    compressed = detect_compression(f.read(8)) != "tar"
                if compressed:   # unusual for docker save; hash it to name the blob
                    digest, size = _hash_member(archive, lname)
                    media = "application/vnd.docker.image.rootfs.diff.tar.gzip"
                else:            # the blob is the uncompressed tar: its digest must be the diff_id
                    digest, size = diff_id, archive.size(lname)
                    media = "application/vnd.docker.image.rootfs.diff.tar"
                source.alias(digest, lname)
                layers.append({"mediaType": media, "size": size, "digest": digest})
            manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                   "size": len(cfg_raw), "digest": cfg_digest},
                        "layers": layers}
            raw = json.dumps(manifest, separators=(",", ":")).encode()
            source.add_bytes(cfg_digest, cfg_raw)
            resolved = ResolvedManifest(digest=sha256_digest(raw), manifest_digest=sha256_digest(raw),
                                        manifest=manifest, manifest_raw=raw, media_type=DOCKER_MANIFEST)
            name = tags[0].name if tags else _untagged_name(None)
            out.append(self._install(job, resolved, source=source, name=name,
                                     tags=[t.tagged for t in tags if t.tagged]))
        return out


# ---------------------------------------------------------------------- archives
class _Archive(Protocol):
    def exists(self, name: str) -> bool: ...
    def read(self, name: str) -> bytes: ...
    def open(self, name: str) -> ContextManager[BinaryIO]: ...
    def size(self, name: str) -> int: ...


class _DirArchive:
    def __init__(self, root: Path):
        self.root = root

    def _path(self, name: str) -> Path:
        p = self.root / _safe_name(name, str(self.root))
        if p.is_symlink() or not p.resolve().is_relative_to(self.root.resolve()):
            raise ImagePullError(str(self.root), f"{self.root}: {name} leaves the layout directory")
        return p

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def read(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def open(self, name: str) -> ContextManager[BinaryIO]:
        return open(self._path(name), "rb")

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size


class _TarArchive:
    def __init__(self, tf: tarfile.TarFile, label: str):
        self.tf = tf
        self.label = label
        self.members: dict[str, tarfile.TarInfo] = {}
        for m in tf.getmembers():
            parts = [p for p in m.name.split("/") if p not in ("", ".")]
            self.members["/".join(parts)] = m

    def _member(self, name: str) -> tarfile.TarInfo:
        m = self.members.get(_safe_name(name, self.label))
        if m is None or not (m.isreg() or m.issym() or m.islnk()):
            raise ImagePullError(self.label, f"{self.label}: {name} is missing from the archive")
        return m

    def exists(self, name: str) -> bool:
        return _safe_name(name, self.label) in self.members

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def open(self, name: str) -> ContextManager[BinaryIO]:
        f = self.tf.extractfile(self._member(name))
        if f is None:
            raise ImagePullError(self.label, f"{self.label}: {name} is not a regular file")
        return f   # type: ignore[return-value]

    def size(self, name: str) -> int:
        m = self._member(name)
        if not m.isreg():
            with self.open(name) as f:
                return len(f.read())
        return m.size


@contextmanager
def _open_archive(path: Path) -> Iterator[_Archive]:
    if path.is_dir():
        yield _DirArchive(path)
        return
    try:
        tf = tarfile.open(path, "r:*")
    except tarfile.TarError as exc:
        raise ImagePullError(str(path), f"import {path}: not a tar archive or directory: {exc}") from exc
    with tf:
        yield _TarArchive(tf, f"import {path}")


class _ArchiveSource:
    """Blobs of an archive by digest: OCI `blobs/sha256/<hex>`, or names given by alias."""

    def __init__(self, archive: _Archive):
        self.archive = archive
        self.aliases: dict[str, str] = {}
        self.memory: dict[str, bytes] = {}

    def alias(self, digest: str, name: str) -> None:
        self.aliases[digest] = name

    def add_bytes(self, digest: str, data: bytes) -> None:
        self.memory[digest] = data

    @contextmanager
    def open(self, digest: str) -> Iterator[Iterator[bytes]]:
        if digest in self.memory:
            yield iter([self.memory[digest]])
            return
        name = self.aliases.get(digest) or f"blobs/sha256/{_hex(digest)}"
        if not self.archive.exists(name):
            raise RegistryError(f"blob {digest} is missing from the archive ({name})")
        with self.archive.open(name) as f:
            yield iter(lambda: f.read(1 << 20), b"")


def _verified_blob(archive: _Archive, digest: str, size, job: _Job) -> bytes:
    if not digest.startswith("sha256:") or not _HEX.match(digest[7:]):
        raise job.fail(f"{job.reference}: invalid digest {digest!r} in the archive index")
    name = f"blobs/sha256/{digest[7:]}"
    if not archive.exists(name):
        raise job.fail(f"{job.reference}: {name} is missing from the archive")
    raw = archive.read(name)
    actual = sha256_digest(raw)
    if actual != digest:
        raise job.fail(f"{job.reference}: blob digest mismatch in the archive: expected {digest}, got {actual}")
    if isinstance(size, int) and size != len(raw):
        raise job.fail(f"{job.reference}: {digest} size mismatch: expected {size}, got {len(raw)}")
    return raw


def _hash_member(archive: _Archive, name: str) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with archive.open(name) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            n += len(chunk)
    return "sha256:" + h.hexdigest(), n


def _json_member(archive: _Archive, name: str, label: str):
    try:
        return json.loads(archive.read(name))
    except ValueError as exc:
        raise ImagePullError(label, f"{label}: {name} is not JSON: {exc}") from exc


def _oci_names(annotations: dict, repository: str | None, label: str) -> list[str]:
    """Full references an OCI index entry names (see docs/images.md)."""
    names = []
    full = annotations.get("io.containerd.image.name")
    if full:
        names.append(full)
    ref_name = annotations.get("org.opencontainers.image.ref.name")
    if ref_name:
        if ":" in ref_name or "/" in ref_name:
            names.append(ref_name)
        elif repository:
            names.append(f"{repository}:{ref_name}")
    for n in names:
        parse_reference(n)   # raises InvalidImageName with the name
    return list(dict.fromkeys(names))


def _untagged_name(repository: str | None) -> str:
    return parse_reference(repository).name if repository else "localhost/imported"


def _safe_name(name: str, label: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts:
        raise ImagePullError(label, f"{label}: unsafe member name {name!r} in the archive")
    return "/".join(parts)


def _hex(digest: str) -> str:
    hexpart = digest.partition(":")[2] if ":" in digest else digest
    if not _HEX.match(hexpart):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart


def _notes(ring: Keyring) -> str:
    """What of a pod's secrets was not used, for a failure's message."""
    return f" ({'; '.join(ring.notes)})" if ring.notes else ""


def _sayer(reference: str, progress: Callable[[str], None] | None) -> Callable[[str], None]:
    if progress is None:
        return lambda _msg: None
    return lambda msg: progress(f"pulling {reference}: {msg}")


def _remove_path(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)
