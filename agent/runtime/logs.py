"""Container log files: conmon's k8s-file format, rotation, and reading them back.

Format (what the CRI and conmon write), one record per line:

    2026-11-22T10:55:38.075067787+00:00 stdout F hi
    <RFC 3339 nano timestamp>           <stream> <F = full line | P = partial> <text>

A line longer than conmon's buffer is split into P records ending with an F
one; `read_log` joins them back. Lines without the prefix are passed through.

Rotation: with `--log-size-max N` conmon, once the file would pass N bytes,
writes a fresh `<log>.tmp` and renames it over `<log>` — the old content is
simply dropped. To keep one previous generation as `<log>.1` (as the kubelet
and Docker's json-file driver do), the runtime keeps a hard link `<log>.cur`
to the file conmon is writing; `track_rotation` (called on every state/list,
i.e. every relist) notices when `<log>` became a new inode and renames the
link to `<log>.1`. A hard link costs no space, and needs no cooperation from
conmon. Two rotations between two relists lose the middle generation.

`read_log` yields bytes (a container may print anything), each a full line
ending in "\n" except perhaps the very last partial one when the container
stopped mid-line; it reads `<log>.1` before `<log>`, `tail_lines` counts over
both, and `follow` keeps reading across a rotation until `still_writing()`
turns false. `--previous` is just the previous attempt's file: the caller
picks the path.
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import Callable, Iterable, Iterator

log = logging.getLogger(__name__)

_RECORD = re.compile(rb"^(\S+) (stdout|stderr) ([FP]) ?(.*)$", re.S)


def rotated_path(path: str) -> str:
    return path + ".1"


def live_link_path(path: str) -> str:
    return path + ".cur"


def parse_record(raw: bytes) -> tuple[bytes, bool]:
    """One k8s-file line → (text without newline, is it the end of a line)."""
    body = raw[:-1] if raw.endswith(b"\n") else raw
    m = _RECORD.match(body)
    if not m:
        return body, True
    return m.group(4), m.group(3) == b"F"


def join_records(raws: Iterable[bytes]) -> Iterator[bytes]:
    """k8s-file lines → container output lines (with "\\n"); a trailing
    partial record is yielded as is, without a newline."""
    pending = b""
    for raw in raws:
        text, full = parse_record(raw)
        pending += text
        if full:
            yield pending + b"\n"
            pending = b""
    if pending:
        yield pending


def track_rotation(path: str) -> bool:
    """Keep `<path>.1` as the generation conmon rotated away; True if it moved."""
    cur = live_link_path(path)
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    try:
        linked = os.stat(cur)
    except FileNotFoundError:
        _link(path, cur)
        return False
    if (linked.st_dev, linked.st_ino) == (now.st_dev, now.st_ino):
        return False
    os.replace(cur, rotated_path(path))
    _link(path, cur)
    log.debug("log %s rotated: previous generation kept as %s", path, rotated_path(path))
    return True


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except FileExistsError:
        pass
    except FileNotFoundError:      # rotated again under us; the next call links it
        pass


def forget_rotation(path: str) -> None:
    """Drop the bookkeeping link (the log files themselves stay)."""
    track_rotation(path)
    try:
        os.unlink(live_link_path(path))
    except FileNotFoundError:
        pass


def read_log(path: str, *, tail_lines: int | None = None, follow: bool = False,
             still_writing: Callable[[], bool] = lambda: False, poll: float = 0.2,
             sleep: Callable[[float], None] = time.sleep) -> Iterator[bytes]:
    """The container's output lines from `<path>.1` and `<path>` (see module doc).
    Raises FileNotFoundError if neither exists."""
    old = rotated_path(str(path))
    path = str(path)
    raws: list[bytes] = []
    if os.path.exists(old):
        with open(old, "rb") as f:
            raws.extend(f.readlines())
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        if not raws:
            raise
        f = None
    try:
        if f is not None:
            raws.extend(_complete_lines(f))
        lines = list(join_records(raws)) if not follow else list(_full_only(raws))
        if tail_lines is not None:
            lines = lines[-tail_lines:] if tail_lines > 0 else []
        yield from lines
        if not follow:
            return
        pending = _leftover(raws)
        while True:
            if f is None:
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    if not still_writing():
                        break
                    sleep(poll)
                    continue
            got = False
            for raw in _complete_lines(f):
                got = True
                text, full = parse_record(raw)
                pending += text
                if full:
                    yield pending + b"\n"
                    pending = b""
            if got:
                continue
            if _replaced(f, path):       # conmon rotated: the rest is in a new file
                f.close()
                f = None
                continue
            if not still_writing():
                break
            sleep(poll)
        if pending:
            yield pending
    finally:
        if f is not None:
            f.close()


def _complete_lines(f) -> list[bytes]:
    """Lines up to the last newline; a torn last line is left for the next read."""
    out = []
    while True:
        pos = f.tell()
        line = f.readline()
        if not line:
            break
        if not line.endswith(b"\n"):
            f.seek(pos)
            break
        out.append(line)
    return out


def _full_only(raws: list[bytes]) -> Iterator[bytes]:
    for line in join_records(raws):
        if line.endswith(b"\n"):
            yield line


def _leftover(raws: list[bytes]) -> bytes:
    """The partial-record text after the last full line (followed later)."""
    pending = b""
    for raw in raws:
        text, full = parse_record(raw)
        pending = b"" if full else pending + text
    return pending


def _replaced(f, path: str) -> bool:
    try:
        a, b = os.fstat(f.fileno()), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino)
