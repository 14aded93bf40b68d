"""subPath volume mounts that cannot lead out of their volume.

A `volumeMount` with `subPath: x` mounts `<volume>/x` instead of the whole
volume. Whoever can write into the volume (a container of the pod, for an
emptyDir or a hostPath) can make `x` a symbolic link; building the path on the
host and handing it to runc, which follows links, would then mount whatever
the link names — `ln -s / /data/x` gives the next container that mounts
`subPath: x` the host's root, read-write (Kubernetes' CVE-2017-1002101).

What is done instead, as kubelet's fix does:

1. `open_subpath(root, sub_path, volume=)` walks the subPath one component at
   a time from an fd of the volume root, each with
   `openat(O_PATH|O_NOFOLLOW)` on the fd held for its parent. **Any symbolic
   link is refused** — in the middle or at the end, and even one that points
   inside the volume: refusing is simple to check and to explain, and nothing
   a pod needs is lost (the link's target can be named as the subPath
   itself). A missing component is created as a directory with `mkdirat` on
   the held parent fd (Kubernetes creates a missing subPath too), so a link
   swapped in meanwhile is never followed: `mkdirat` does not follow, and the
   re-open after it refuses the link. Intermediate components must be
   directories; the last a directory or a regular file. The answer is an
   O_PATH fd of exactly what was checked.
2. `bind_fd(fd, target)` bind-mounts that fd (`/proc/self/fd/N`) onto a
   path the agent made under the pod's directory
   (`<pod dir>/volume-subpaths/<volume>/<container>/<index>`), and runc gets
   that path as the mount source: what runc mounts is the checked inode even
   if the container swaps a link in after the check.

The pod worker does this at every container start (each attempt re-checks),
and unmounts the host-side binds as soon as the runtime has made the
container: runc copied them into the container's own mount namespace while
creating it, so nothing needs them afterwards and nothing stays mounted in the
pod's directory (`release` at teardown catches binds left by an agent killed
in between; the pod's directory is never removed while one is still mounted,
since removing it would descend into the volume).

Errors are `SubPathError`s that say which subPath of which volume and why.
"""
from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Protocol

from shoal.agent.runtime.mounts import bind_mount, is_mounted, mountpoints, unmount

log = logging.getLogger(__name__)

SUBPATHS_DIR = "volume-subpaths"
_OPEN = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class SubPathError(ValueError):
    """A subPath that cannot be mounted safely (the message says which and why)."""


def _components(sub_path: str, volume: str) -> list[str]:
    parts = [p for p in sub_path.split("/") if p not in ("", ".")]
    if sub_path.startswith("/") or ".." in parts:
        # validation refuses these already; checked again here because this is the gate
        raise SubPathError(f"subPath {sub_path} of volume {volume}: must be a relative path without '..'")
    return parts


def open_subpath(root: str | Path, sub_path: str, *, volume: str, create: bool = True) -> int:
    """An O_PATH fd of `root/sub_path`, reached without following any symbolic link below
    `root` (the root itself is opened normally: it is the volume, chosen by the agent or by
    the pod's hostPath). Missing components are created as directories (mode 0755) when
    `create`. The caller closes the fd."""
    parts = _components(sub_path, volume)
    try:
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise SubPathError(f"subPath {sub_path} of volume {volume}: cannot open the volume at {root}: "
                           f"{e.strerror}") from e
    try:
        for i, name in enumerate(parts):
            here = "/".join(parts[:i + 1])
            where = f"subPath {sub_path} of volume {volume}: " + ("" if here == sub_path else f"{here} ")
            last = i == len(parts) - 1
            try:
                nfd = os.open(name, _OPEN, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise SubPathError(f"{where}does not exist") from None
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)        # mkdirat: never follows a link
                except FileExistsError:
                    pass                                     # raced: whatever is there is checked below
                nfd = os.open(name, _OPEN, dir_fd=fd)
            except OSError as e:
                raise SubPathError(f"{where}cannot be opened: {e.strerror}") from e
            try:
                mode = os.fstat(nfd).st_mode
                if stat.S_ISLNK(mode):
                    raise SubPathError(f"{where}{'a' if here == sub_path else 'is a'} symbolic link "
                                       f"(refused: it could lead out of the volume)")
                if not last and not stat.S_ISDIR(mode):
                    raise SubPathError(f"{where}is not a directory")
                if last and not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                    raise SubPathError(f"{where}is neither a directory nor a regular file")
            except BaseException:
                os.close(nfd)
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def bind_fd(fd: int, target: Path) -> None:
    """Bind-mount the file or directory `fd` refers to onto `target` (made here: a directory
    or an empty file, as the source is), after unmounting whatever an earlier attempt left."""
    is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
    _unmount_all(target)
    if target.exists() and target.is_dir() != is_dir:
        target.rmdir() if target.is_dir() else target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        target.mkdir(exist_ok=True)
    else:
        target.touch()
    bind_mount(f"/proc/self/fd/{fd}", str(target))


def _unmount_all(target: Path) -> None:
    path = os.path.realpath(target)         # mountinfo lists resolved paths
    while is_mounted(path):                 # stacked binds: one unmount each
        if not unmount(path):
            break


class SubPaths(Protocol):
    """The worker's seam for subPath mounts (`HostSubPaths`; tests may record)."""
    def mount(self, *, root: Path, sub_path: str, target: Path, volume: str) -> None: ...
    def release(self, base: Path) -> list[str]: ...


class HostSubPaths:
    def mount(self, *, root: Path, sub_path: str, target: Path, volume: str) -> None:
        """Check `root/sub_path` (open_subpath) and bind it onto `target`."""
        fd = open_subpath(root, sub_path, volume=volume)
        try:
            bind_fd(fd, target)
        finally:
            os.close(fd)
        log.debug("subPath %s of volume %s (%s) bound at %s", sub_path, volume, root, target)

    def release(self, base: Path) -> list[str]:
        """Unmount and remove every bind under `base` (a pod's or a container's subPath dir).
        Returns the paths still mounted (empty: all gone, `base` removed)."""
        if not base.exists():
            return []
        left = []
        with open("/proc/self/mountinfo") as f:
            prefix = str(base.resolve()) + "/"
            mine = sorted((m for m in mountpoints(f.read()) if m.startswith(prefix)), key=len, reverse=True)
        for m in mine:
            try:
                _unmount_all(Path(m))
            except OSError as e:
                log.error("unmounting subPath bind %s failed: %s", m, e)
            if is_mounted(m):
                left.append(m)
        if left:
            return left
        shutil.rmtree(base)         # nothing is mounted below: removing cannot reach into a volume
        return []
