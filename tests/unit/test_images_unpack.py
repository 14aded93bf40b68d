"""Safe layer extraction: escapes are rejected with nothing written outside, overlay forms."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from shoal.agent.images.unpack import (LayerError, Limits, UnsafeLayerError, member_parts, symlink_escapes,
                                       unpack_layer)

pytestmark = pytest.mark.unit

LAYER = "sha256:" + "ab" * 32
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="whiteouts are char devices and trusted.* xattrs: root only")


def entry(kind: str, name: str, data: bytes | str = b"", **kw) -> tarfile.TarInfo | tuple:
    ti = tarfile.TarInfo(name)
    ti.mtime = kw.get("mtime", 1_600_000_000)
    ti.uid, ti.gid = kw.get("uid", 0), kw.get("gid", 0)
    ti.mode = kw.get("mode", 0o644)
    if "pax" in kw:
        ti.pax_headers = kw["pax"]
    if kind == "file":
        payload = data.encode() if isinstance(data, str) else data
        ti.type, ti.size = tarfile.REGTYPE, len(payload)
        return ti, payload
    if kind == "dir":
        ti.type, ti.mode = tarfile.DIRTYPE, kw.get("mode", 0o755)
    elif kind == "symlink":
        ti.type, ti.linkname = tarfile.SYMTYPE, str(data)
    elif kind == "hardlink":
        ti.type, ti.linkname = tarfile.LNKTYPE, str(data)
    elif kind == "chr":
        ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
    elif kind == "blk":
        ti.type, ti.devmajor, ti.devminor = tarfile.BLKTYPE, 8, 0
    elif kind == "fifo":
        ti.type = tarfile.FIFOTYPE
    return ti, None


def make_tar(entries: list) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, payload in entries:
            tf.addfile(ti, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


@pytest.fixture
def env(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host data")
    layers = tmp_path / "layers"
    layers.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()

    def snapshot() -> dict:
        return {str(p.relative_to(tmp_path)): (p.is_symlink() or p.read_bytes() if p.is_file() else None)
                for p in sorted(tmp_path.rglob("*"))
                if not str(p).startswith(str(layers)) and p.name != "blob"}

    def unpack(entries: list, *, gz: bool = False, **kw):
        raw = make_tar(entries)
        blob = tmp_path / "blob"
        blob.write_bytes(gzip.compress(raw) if gz else raw)
        dest = layers / "L"
        return unpack_layer(blob, dest, layer=LAYER, tmp_dir=tmp, **kw), dest, raw

    return {"outside": outside, "tmp": tmp, "layers": layers, "unpack": unpack, "snapshot": snapshot,
            "root": tmp_path}


def O(p: Path) -> str:   # an absolute path to use inside a tar entry
    return str(p)


ESCAPES = [
    ("dotdot file", lambda o: [entry("file", "../escape", "x")], "'..'"),
    ("dotdot nested", lambda o: [entry("dir", "a"), entry("file", "a/../../escape", "x")], "'..'"),
    ("absolute path", lambda o: [entry("file", O(o / "abs"), "x")], "absolute"),
    ("write through absolute symlink",
     lambda o: [entry("symlink", "evil", O(o)), entry("file", "evil/pwned", "x")], "symlink"),
    ("write through absolute symlink to /",
     lambda o: [entry("symlink", "rootlink", "/"), entry("file", f"rootlink{O(o)}/pwned", "x")], "symlink"),
    ("mkdir through symlink",
     lambda o: [entry("symlink", "evil", O(o)), entry("dir", "evil/newdir")], "symlink"),
    ("relative symlink climbing out", lambda o: [entry("dir", "a"), entry("symlink", "a/up", "../../..")],
     "climbs above"),
    ("hardlink with dotdot", lambda o: [entry("hardlink", "h", "../outside/secret")], "'..'"),
    ("hardlink absolute", lambda o: [entry("hardlink", "h", O(o / "secret"))], "absolute"),
    ("hardlink through symlink",
     lambda o: [entry("symlink", "evil", O(o)), entry("hardlink", "h", "evil/secret")], "symlink"),
    ("whiteout through symlink",
     lambda o: [entry("symlink", "evil", O(o)), entry("file", "evil/.wh.secret")], "symlink"),
    ("opaque through symlink",
     lambda o: [entry("symlink", "evil", O(o)), entry("file", "evil/.wh..wh..opq")], "symlink"),
    ("char device", lambda o: [entry("chr", "dev/null")], "device"),
    ("block device", lambda o: [entry("blk", "dev/sda")], "device"),
]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("name,make,why", ESCAPES, ids=[c[0] for c in ESCAPES])
def test_escape_is_rejected_and_nothing_is_written_outside(env, name, make, why, gz):
    before = env["snapshot"]()
    entries = make(env["outside"])
    with pytest.raises(UnsafeLayerError) as err:
        env["unpack"](entries, gz=gz)
    msg = str(err.value)
    assert LAYER in msg and why in msg
    offending = entries[-1][0].name
    assert err.value.member == offending and repr(offending) in msg
    assert env["snapshot"]() == before, "something was written outside the layer dir"
    assert list(env["layers"].iterdir()) == [], "no (partial) layer dir may remain"
    assert list(env["tmp"].iterdir()) == [], "the temp dir must be removed"


def test_regular_layer_keeps_modes_owners_times_and_links(env):
    entries = [
        entry("dir", "bin", mode=0o755, mtime=1_500_000_000),
        entry("file", "bin/tool", "#!/bin/sh\n", mode=0o4755, uid=1000, gid=1001),
        entry("symlink", "bin/sh", "tool"),
        entry("symlink", "bin/abs", "/etc/alternatives/x"),    # absolute: fine as a symlink
        entry("hardlink", "bin/tool2", "bin/tool"),
        entry("file", "deep/implicit/parent", "x"),
        entry("dir", "tmp", mode=0o1777),
        entry("fifo", "run/fifo"),
        entry("file", "caps", "c", pax={"SCHILY.xattr.user.note": "hello",
                                        "SCHILY.xattr.trusted.overlay.opaque": "y"}),
    ]
    result, dest, raw = env["unpack"](entries)
    assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    tool = dest / "bin/tool"
    st = tool.stat()
    assert stat.S_IMODE(st.st_mode) == 0o4755
    if ROOT:
        assert (st.st_uid, st.st_gid) == (1000, 1001)
    assert st.st_mtime == 1_600_000_000
    assert os.readlink(dest / "bin/sh") == "tool"
    assert os.readlink(dest / "bin/abs") == "/etc/alternatives/x"
    assert (dest / "bin/tool2").stat().st_ino == st.st_ino
    assert (dest / "deep/implicit/parent").read_text() == "x"
    assert stat.S_IMODE((dest / "tmp").stat().st_mode) == 0o1777
    assert (dest / "bin").stat().st_mtime == 1_500_000_000, "dir mtimes are applied after children"
    assert not (dest / "run/fifo").exists() and "run/fifo" in result.skipped
    assert os.getxattr(dest / "caps", "user.note") == b"hello"
    if ROOT:
        with pytest.raises(OSError):
            os.getxattr(dest / "caps", "trusted.overlay.opaque")   # images may not set trusted.*
    assert list(env["tmp"].iterdir()) == []


def test_file_replacing_a_symlink_does_not_write_through_it(env):
    target = env["outside"] / "secret"
    result, dest, _ = env["unpack"]([entry("symlink", "f", O(target)), entry("file", "f", "inside")])
    assert target.read_text() == "host data"
    assert not (dest / "f").is_symlink() and (dest / "f").read_text() == "inside"


@needs_root
def test_whiteouts_become_overlay_whiteouts(env):
    entries = [entry("dir", "etc"), entry("file", "etc/.wh.passwd"), entry("dir", "opt"),
               entry("file", "opt/.wh..wh..opq"), entry("file", "opt/new", "n"),
               entry("file", "var/.wh..wh.plnk")]
    _, dest, _ = env["unpack"](entries)
    st = os.lstat(dest / "etc/passwd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (dest / "etc/.wh.passwd").exists()
    assert os.getxattr(dest / "opt", "trusted.overlay.opaque") == b"y"
    assert not (dest / "opt/.wh..wh..opq").exists() and (dest / "opt/new").read_text() == "n"
    assert not (dest / "var/.wh..wh.plnk").exists()


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_gzip_and_plain_give_the_same_tree_and_diff_id(env, gz):
    result, dest, raw = env["unpack"]([entry("file", "a/b", "data")], gz=gz)
    assert (dest / "a/b").read_text() == "data"
    assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_diff_id_mismatch_removes_everything(env):
    with pytest.raises(LayerError, match="does not match diff_id") as err:
        env["unpack"]([entry("file", "a", "x")], gz=True, expected_diff_id="sha256:" + "0" * 64)
    assert "sha256:" + "0" * 64 in str(err.value)
    assert list(env["layers"].iterdir()) == [] and list(env["tmp"].iterdir()) == []


@pytest.mark.parametrize("blob,why", [
    (b"\x28\xb5\x2f\xfd" + b"\0" * 64, "zstd"),
    (b"\x1f\x8b\x08\x00" + b"garbage" * 10, "corrupt"),
    (b"not a tar at all" * 64, "tar"),
], ids=["zstd", "corrupt-gzip", "not-tar"])
def test_bad_blobs_are_layer_errors(env, blob, why):
    path = env["root"] / "blob"
    path.write_bytes(blob)
    with pytest.raises(LayerError, match=why):
        unpack_layer(path, env["layers"] / "L", layer=LAYER, tmp_dir=env["tmp"])
    assert list(env["layers"].iterdir()) == [] and list(env["tmp"].iterdir()) == []


def test_existing_dest_is_kept(env):
    _, dest, _ = env["unpack"]([entry("file", "a", "first")])
    _, dest2, _ = env["unpack"]([entry("file", "a", "first")])
    assert dest == dest2 and (dest / "a").read_text() == "first"
    assert list(env["tmp"].iterdir()) == []


@pytest.mark.parametrize("name,parts", [("./a/b", ["a", "b"]), ("a//b/", ["a", "b"]), (".", []), ("./", [])])
def test_member_parts(name, parts):
    assert member_parts(name, layer=LAYER) == parts


@pytest.mark.parametrize("parts,target,escapes", [
    (["a"], "b", False), (["a"], "../x", True), (["a", "b"], "../x", False),
    (["a", "b"], "../../x", True), (["a", "b"], "/etc/passwd", False), (["a", "b"], "./c/../../d", False),
    (["a", "b"], "c/../../../d", True),
])
def test_symlink_escapes(parts, target, escapes):
    assert symlink_escapes(parts, target) is escapes


def test_gzip_bomb_stops_at_the_byte_bound_and_leaves_nothing(env):
    # 64 MiB of zeros compress to ~64 KiB: the blob is small, its content is not.
    bomb = [entry("file", "zeros", b"\0" * (64 << 20))]
    with pytest.raises(LayerError, match=r"uncompressed content exceeds 8388608 bytes") as err:
        env["unpack"](bomb, gz=True, limits=Limits(max_bytes=8 << 20))
    assert LAYER in str(err.value)
    assert list(env["layers"].iterdir()) == [] and list(env["tmp"].iterdir()) == []


def test_entry_bound(env):
    many = [entry("file", f"f{i}", "x") for i in range(20)]
    with pytest.raises(LayerError, match="more than 10 entries"):
        env["unpack"](many, limits=Limits(max_entries=10))
    assert list(env["layers"].iterdir()) == [] and list(env["tmp"].iterdir()) == []
    result, _, _ = env["unpack"](many, limits=Limits(max_entries=20))
    assert result.entries == 20


def test_disk_reserve_stops_unpacking(env):
    st = os.statvfs(env["root"])
    free = st.f_bavail * st.f_frsize
    with pytest.raises(LayerError, match="kept in reserve"):
        env["unpack"]([entry("file", "a", "x")], limits=Limits(reserve_bytes=free + (1 << 40)))
    assert list(env["layers"].iterdir()) == [] and list(env["tmp"].iterdir()) == []
