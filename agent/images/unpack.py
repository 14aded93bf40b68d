"""Safe extraction of one image layer (a tar, gzip or not) into a directory for overlayfs.

Contract: `unpack_layer(blob, dest, layer=digest)` extracts into a fresh temp dir next to
`dest`, checks the uncompressed stream's sha256 against `expected_diff_id` when given,
and only then renames the temp dir to `dest` (atomic: `dest` exists ⇔ the layer is
complete). Any failure removes the temp dir and raises `LayerError` (or its subclass
`UnsafeLayerError` for escape attempts) naming the layer digest and the tar member.

Rules (the threat is a hostile tar writing outside the layer dir on the host):
- Member names are relative: an absolute name or any `..` component is rejected.
- Nothing is ever written through a symlink. Every parent directory is opened
  component by component with `O_NOFOLLOW|O_DIRECTORY` relative to the layer root's fd
  (openat-style), so a symlink or a file in a parent position is an error, not a
  detour; the final component is created with `O_EXCL|O_NOFOLLOW` after removing what
  was there. Missing parents are created (0755), as tar tools do.
- Symlinks may point anywhere *absolute* (they are resolved inside the container's
  rootfs, never followed here), but a relative target that climbs above the layer root
  (`a/b -> ../../../etc`) is rejected.
- Hard links must name a member inside the layer (same name rules, no symlink on the
  way); the link is made with `follow_symlinks=False`.
- Character and block devices are rejected (a container gets its /dev from the runtime,
  never from an image); FIFOs are skipped and reported in `UnpackResult.skipped`.
- Whiteouts become overlayfs' own format: `.wh.NAME` → a 0:0 character device NAME,
  `.wh..wh..opq` → xattr `trusted.overlay.opaque=y` on its directory. Other `.wh..wh.`
  entries (aufs bookkeeping) are skipped.
- Modes, uid/gid (when running as root, or `same_owner=True`), mtimes, symlinks and hard
  links are kept; directory metadata is applied last, deepest first, so writing children
  does not disturb their mtimes. PAX xattrs are kept only for `user.*` and
  `security.capability`; an image may never set `trusted.*` (overlayfs' own namespace).
- zstd, bzip2 and xz layers are rejected with their name (not in OCI's gzip/tar set).

Bounds (the threat is a small blob that expands without end — a gzip bomb — or into
millions of inodes): the uncompressed stream may not exceed `Limits.max_bytes`, the layer
may not hold more than `Limits.max_entries` members, and extraction stops when the file
system under the layer would keep less than `Limits.reserve_bytes` free (checked every
`_FREE_CHECK_EVERY` bytes). Each stop is a `LayerError` naming the layer and the bound;
nothing of the layer is kept.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_KEPT_XATTRS = ("user.", "security.capability")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FREE_CHECK_EVERY = 64 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds on one layer's uncompressed content (module docstring, "Bounds").

    The defaults admit any real image (the largest common layers — CUDA, TeX — stay well
    below 16 GiB and 1M files) and refuse what can only be an attack or a mistake."""
    max_bytes: int = 16 << 30
    max_entries: int = 1_000_000
    reserve_bytes: int = 512 << 20


DEFAULT_LIMITS = Limits()


class LayerError(Exception):
    """A layer could not be unpacked; names the layer digest and, if any, the member."""

    def __init__(self, layer: str, message: str, member: str | None = None):
        where = f"layer {layer}" + (f" member {member!r}" if member is not None else "")
        super().__init__(f"{where}: {message}")
        self.layer = layer
        self.member = member


class UnsafeLayerError(LayerError):
    """The layer tried to write outside its directory (or to create a device)."""


@dataclass
class UnpackResult:
    diff_id: str                    # sha256 of the uncompressed tar stream
    entries: int = 0
    skipped: list[str] = field(default_factory=list)


class _HashingReader:
    """A read()-only stream that hashes what passes through (the layer's diffID) and stops
    the extraction when the stream outgrows `limits.max_bytes` or the file system under
    `root_fd` gets too full."""

    def __init__(self, inner: BinaryIO, *, layer: str = "", limits: Limits = DEFAULT_LIMITS,
                 root_fd: int | None = None):
        self.inner = inner
        self.hash = hashlib.sha256()
        self.layer, self.limits, self.root_fd = layer, limits, root_fd
        self.count = 0
        self._next_free_check = 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.hash.update(data)
        self.count += len(data)
        if self.count > self.limits.max_bytes:
            raise LayerError(self.layer, f"uncompressed content exceeds {self.limits.max_bytes} bytes "
                                         "(the node's bound on one layer; a compression bomb?)")
        if self.root_fd is not None and self.count >= self._next_free_check:
            self._next_free_check = self.count + _FREE_CHECK_EVERY
            st = os.fstatvfs(self.root_fd)
            free = st.f_bavail * st.f_frsize
            if free < self.limits.reserve_bytes:
                raise LayerError(self.layer, f"the file system holding the image store has {free} bytes "
                                             f"free, below the {self.limits.reserve_bytes} bytes kept in "
                                             "reserve; unpacking stopped")
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def detect_compression(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return "tar"


def member_parts(name: str, *, layer: str, member: str | None = None) -> list[str]:
    """Split a tar name into safe components; `[]` is the layer root itself."""
    member = name if member is None else member
    if name.startswith("/"):
        raise UnsafeLayerError(layer, "absolute path", member)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayerError(layer, "path has a '..' component", member)
    if any("\x00" in p for p in parts):
        raise UnsafeLayerError(layer, "path has a NUL byte", member)
    return parts


def symlink_escapes(parts: list[str], target: str) -> bool:
    """Would relative `target`, read from the directory of `parts`, climb above the root?"""
    if target.startswith("/"):
        return False
    depth = len(parts) - 1
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            depth -= 1
            if depth < 0:
                return True
        else:
            depth += 1
    return False


class _Extractor:
    def __init__(self, root_fd: int, *, layer: str, same_owner: bool):
        self.root_fd = root_fd
        self.layer = layer
        self.same_owner = same_owner
        self.dirs: list[tuple[list[str], tarfile.TarInfo]] = []
        self.result_entries = 0
        self.skipped: list[str] = []

    # -- path walking without following symlinks
    def open_dir(self, parts: list[str], *, member: str, create: bool) -> int:
        fd = os.dup(self.root_fd)
        try:
            for i, comp in enumerate(parts):
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise LayerError(self.layer, f"{'/'.join(parts[:i + 1])!r} does not exist",
                                         member) from None
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                    path = "/".join(parts[:i + 1])
                    if stat.S_ISLNK(st.st_mode):
                        raise UnsafeLayerError(self.layer, f"parent {path!r} is a symlink; "
                                               "refusing to write through it", member) from None
                    raise LayerError(self.layer, f"parent {path!r} is not a directory", member) from None
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def clear(self, dir_fd: int, name: str, *, keep_dir: bool) -> None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)

    # -- metadata
    def chown(self, name: str | int, dir_fd: int | None, m: tarfile.TarInfo) -> None:
        if not self.same_owner:
            return
        if isinstance(name, int):
            os.fchown(name, m.uid, m.gid)
        else:
            os.chown(name, m.uid, m.gid, dir_fd=dir_fd, follow_symlinks=False)

    def xattrs(self, fd: int, m: tarfile.TarInfo) -> None:
        for key, value in (m.pax_headers or {}).items():
            if not key.startswith("SCHILY.xattr."):
                continue
            attr = key[len("SCHILY.xattr."):]
            if not attr.startswith(_KEPT_XATTRS):
                continue
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            try:
                os.setxattr(fd, attr, raw)
            except OSError:
                # the filesystem may not take this xattr; the file itself is still right
                pass

    @staticmethod
    def mtime_ns(m: tarfile.TarInfo) -> tuple[int, int]:
        ns = int(float(m.mtime) * 1_000_000_000)
        return ns, ns

    # -- members
    def add(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = member_parts(m.name, layer=self.layer)
        if not parts:
            if m.isdir():
                self.dirs.append(([], m))
            return
        base = parts[-1]
        if base == OPAQUE_MARKER:
            fd = self.open_dir(parts[:-1], member=m.name, create=True)
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            self.result_entries += 1
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            self.skipped.append(m.name)
            return
        if m.ischr() or m.isblk():
            raise UnsafeLayerError(self.layer, "device nodes are not allowed in image layers", m.name)
        if m.isfifo():
            self.skipped.append(m.name)
            return
        pfd = self.open_dir(parts[:-1], member=m.name, create=True)
        try:
            if base.startswith(WHITEOUT_PREFIX):
                target = base[len(WHITEOUT_PREFIX):]
                if not target or target in (".", ".."):
                    raise UnsafeLayerError(self.layer, "malformed whiteout", m.name)
                self.clear(pfd, target, keep_dir=False)
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            elif m.isdir():
                self.clear(pfd, base, keep_dir=True)
                try:
                    os.mkdir(base, 0o700, dir_fd=pfd)
                except FileExistsError:
                    pass
                self.dirs.append((parts, m))
            elif m.issym():
                if "\x00" in m.linkname:
                    raise UnsafeLayerError(self.layer, "symlink target has a NUL byte", m.name)
                if symlink_escapes(parts, m.linkname):
                    raise UnsafeLayerError(self.layer, f"symlink target {m.linkname!r} climbs "
                                           "above the layer root", m.name)
                self.clear(pfd, base, keep_dir=False)
                os.symlink(m.linkname, base, dir_fd=pfd)
                self.chown(base, pfd, m)
                os.utime(base, ns=self.mtime_ns(m), dir_fd=pfd, follow_symlinks=False)
            elif m.islnk():
                tparts = member_parts(m.linkname, layer=self.layer, member=m.name)
                if not tparts:
                    raise UnsafeLayerError(self.layer, "hard link to the layer root", m.name)
                tfd = self.open_dir(tparts[:-1], member=m.name, create=False)
                try:
                    try:
                        tst = os.stat(tparts[-1], dir_fd=tfd, follow_symlinks=False)
                    except FileNotFoundError:
                        raise LayerError(self.layer, f"hard link target {m.linkname!r} does not "
                                         "exist in the layer", m.name) from None
                    if stat.S_ISDIR(tst.st_mode):
                        raise UnsafeLayerError(self.layer, f"hard link to directory {m.linkname!r}", m.name)
                    if tparts != parts:
                        self.clear(pfd, base, keep_dir=False)
                        os.link(tparts[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd,
                                follow_symlinks=False)
                finally:
                    os.close(tfd)
            elif m.isreg():
                self.clear(pfd, base, keep_dir=False)
                fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600, dir_fd=pfd)
                with os.fdopen(fd, "wb") as out:
                    src = tf.extractfile(m)
                    if src is not None:
                        shutil.copyfileobj(src, out, 1 << 20)
                    out.flush()
                    self.chown(fd, None, m)
                    os.fchmod(fd, m.mode & 0o7777)
                    self.xattrs(fd, m)
                    os.utime(fd, ns=self.mtime_ns(m))
            else:
                raise LayerError(self.layer, f"unsupported tar entry type {m.type!r}", m.name)
        finally:
            os.close(pfd)
        self.result_entries += 1

    def finish_dirs(self) -> None:
        for parts, m in sorted(self.dirs, key=lambda d: len(d[0]), reverse=True):
            fd = self.open_dir(parts, member=m.name, create=False)
            try:
                self.chown(fd, None, m)
                os.fchmod(fd, m.mode & 0o7777)
                self.xattrs(fd, m)
                os.utime(fd, ns=self.mtime_ns(m))
            finally:
                os.close(fd)


def extract_layer(stream: BinaryIO, root: Path, *, layer: str,
                  same_owner: bool | None = None, limits: Limits = DEFAULT_LIMITS) -> UnpackResult:
    """Extract an already-decompressed tar stream into the existing empty dir `root`."""
    owner = (os.geteuid() == 0) if same_owner is None else same_owner
    root_fd = os.open(root, _DIR_FLAGS)
    reader = _HashingReader(stream, layer=layer, limits=limits, root_fd=root_fd)
    try:
        ex = _Extractor(root_fd, layer=layer, same_owner=owner)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tf:  # type: ignore[arg-type]
                for m in tf:
                    if ex.result_entries + len(ex.skipped) >= limits.max_entries:
                        raise LayerError(layer, f"more than {limits.max_entries} entries (the node's "
                                                "bound on one layer)", m.name)
                    ex.add(tf, m)
        except tarfile.TarError as exc:
            raise LayerError(layer, f"corrupt layer data (not a valid tar stream): {exc}") from exc
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise LayerError(layer, f"corrupt layer data: {exc}") from exc
        ex.finish_dirs()
        reader.drain()
    finally:
        os.close(root_fd)
    return UnpackResult(diff_id="sha256:" + reader.hash.hexdigest(),
                        entries=ex.result_entries, skipped=ex.skipped)


def unpack_layer(blob: Path, dest: Path, *, layer: str, expected_diff_id: str | None = None,
                 tmp_dir: Path | None = None, same_owner: bool | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> UnpackResult:
    """Unpack the layer blob at `blob` into `dest` atomically (see the module docstring).

    If `dest` already exists (another pull finished it first) the work is discarded and
    the existing directory is kept: layers are content-addressed, so it is the same."""
    parent = tmp_dir or dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=parent))
    try:
        os.chmod(tmp, 0o755)
        with open(blob, "rb") as raw:
            kind = detect_compression(raw.read(8))
            raw.seek(0)
            if kind in ("zstd", "bzip2", "xz"):
                raise LayerError(layer, f"{kind}-compressed layers are not supported "
                                        "(only gzip and plain tar)")
            stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if kind == "gzip" else raw  # type: ignore[assignment]
            result = extract_layer(stream, tmp, layer=layer, same_owner=same_owner, limits=limits)
        if expected_diff_id is not None and result.diff_id != expected_diff_id:
            raise LayerError(layer, f"uncompressed content does not match diff_id: expected "
                                    f"{expected_diff_id}, got {result.diff_id}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
