"""Modes of the agent's files on the host: its state is for root (the agent) only.

Contract: every directory the agent keeps state in (its data dir, the image store and
its layers, the runtime's container state and bundles, pods/, the network state) is
made with `private_dir`, which creates it 0700 and tightens an existing one that
other users could enter; every file holding a secret (a bundle's `config.json` with
the pod's env, node credentials, tokens) is written with `write_private`, 0600.

Why the directories, not the files inside them: image layers keep their modes,
owners and setuid bits (a container needs `su` and `ping` to behave as in the image),
so a setuid-root file sits on the host's disk. What keeps an unprivileged host user
from running it is that every path to it crosses a 0700 directory owned by root, so
it cannot be reached (EACCES on the lookup), not its own mode. A container never sees
these parents: runc (as root) mounts the layers and pivots into the rootfs, and the
mount roots a container sees (the overlay's upper dir, an emptyDir) keep their modes.
"""
from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: str | os.PathLike, *, tighten: bool = True) -> Path:
    """Make `path` (and its missing parents) 0700; tighten it if it exists and group or
    others may use it. Existing parents are left alone: they are not ours (/var/lib).

    `tighten=False` is for a directory the user named (`--data-dir`, `--run-dir`): made 0700
    when missing, but an existing one keeps its mode — it may be shared (a home directory,
    /srv) and everything secret below it is made private on its own. A directory with the
    sticky bit (/tmp) is never changed."""
    p = Path(path)
    existed = p.is_dir()
    try:
        os.mkdir(p, PRIVATE_DIR_MODE)
    except FileNotFoundError:
        private_dir(p.parent)
        try:
            os.mkdir(p, PRIVATE_DIR_MODE)
        except FileExistsError:
            pass
    except FileExistsError:
        pass
    st = os.stat(p)
    # mkdir's mode is masked by the umask only to tighten it; a 0700 request stays 0700
    # or less. An existing directory may be anything: drop group and other bits — unless
    # the user named it, or it is a shared sticky directory such as /tmp.
    if st.st_mode & 0o077 and not st.st_mode & 0o1000 and (tighten or not existed):
        os.chmod(p, st.st_mode & 0o7700)
    return p


def write_private(path: str | os.PathLike, data: str | bytes) -> None:
    """Write `data` to `path` atomically (temp file + rename), mode 0600 from the start:
    the secret is never readable by others, not even for a moment."""
    tmp = f"{os.fspath(path)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), PRIVATE_FILE_MODE)   # an old .tmp from a crash keeps its mode on O_CREAT
            f.write(data.encode() if isinstance(data, str) else data)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.replace(tmp, path)
