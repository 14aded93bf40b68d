"""The container's root filesystem: an overlay of the image layers.

`overlay_options` is pure: the image's layers come bottom first
(`PulledImage.layers`), overlayfs wants the top-most lower dir first, so the
list is reversed. The mount itself is one `mount(2)` through libc (no fork of
/bin/mount: it is on the pod-start path).

The kernel limits mount data to one page (4096 bytes); with long layer paths
a deep image could exceed it. `overlay_options` checks and says which image
is too deep rather than letting mount fail with a bare EINVAL.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os

log = logging.getLogger(__name__)

MAX_MOUNT_DATA = 4095
MNT_DETACH = 2


class MountError(OSError):
    pass


def overlay_options(layers: list[str], *, upper: str, work: str) -> str:
    if not layers:
        raise ValueError("an image needs at least one layer to mount")
    for p in (*layers, upper, work):
        if "," in p or ":" in p:
            raise ValueError(f"overlay path {p!r} contains ',' or ':' which overlayfs cannot take")
    opts = f"lowerdir={':'.join(reversed(layers))},upperdir={upper},workdir={work}"
    if len(opts) > MAX_MOUNT_DATA:
        raise ValueError(f"overlay mount options are {len(opts)} bytes for {len(layers)} layers, "
                         f"over the kernel's {MAX_MOUNT_DATA}: shorten the layer store path")
    return opts


@functools.lru_cache(maxsize=1)
def _libc():
    # Cached: find_library runs `ldconfig -p` (~20 ms), on every pod start otherwise.
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mount_overlay(target: str, *, layers: list[str], upper: str, work: str) -> None:
    opts = overlay_options(layers, upper=upper, work=work)
    log.debug("mount overlay on %s: %s", target, opts)
    if _libc().mount(b"overlay", target.encode(), b"overlay", 0, opts.encode()) != 0:
        e = ctypes.get_errno()
        raise MountError(e, f"mount overlay on {target} (lower {layers}) failed: {os.strerror(e)}")


MS_BIND = 0x1000
MS_REC = 0x4000


def bind_mount(source: str, target: str) -> None:
    """A recursive bind mount of `source` (which may be a `/proc/self/fd/N` of an O_PATH
    fd: the kernel then binds exactly that file or directory) onto an existing `target`."""
    log.debug("bind mount %s on %s", source, target)
    if _libc().mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None) != 0:
        e = ctypes.get_errno()
        raise MountError(e, f"bind mount {source} on {target} failed: {os.strerror(e)}")


def unmount(target: str) -> bool:
    """Unmount; False if nothing was mounted there. Lazy (MNT_DETACH) only as
    a fallback when busy, so a normal remove leaves no detached mount behind."""
    libc = _libc()
    if libc.umount2(target.encode(), 0) == 0:
        log.debug("unmounted %s", target)
        return True
    e = ctypes.get_errno()
    if e in (errno.EINVAL, errno.ENOENT):    # not a mount point / gone
        return False
    if e == errno.EBUSY and libc.umount2(target.encode(), MNT_DETACH) == 0:
        log.warning("unmount %s: busy, detached lazily", target)
        return True
    raise MountError(e, f"unmount {target} failed: {os.strerror(e)}")


def mountpoints(mountinfo: str) -> set[str]:
    """Mount points listed in a /proc/<pid>/mountinfo text (octal escapes decoded)."""
    out: set[str] = set()
    for line in mountinfo.splitlines():
        f = line.split()
        if len(f) >= 5:
            out.add(f[4].encode().decode("unicode_escape"))
    return out


def is_mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return os.path.abspath(path) in mountpoints(f.read())


def fs_type_of(path: str, mountinfo: str) -> str | None:
    """The filesystem type of the mount holding `path` (the longest mount point that is a
    prefix of it; the last such mount when several are stacked), from a mountinfo text."""
    path = os.path.abspath(path)
    best, fstype = "", None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if not sep or len(f) < 5 or not r:
            continue
        mp = f[4].encode().decode("unicode_escape")
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
            best, fstype = mp, r[0]
    return fstype


def is_tmpfs(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return fs_type_of(path, f.read()) == "tmpfs"
