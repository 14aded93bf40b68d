"""Issue 17, "Host files": a setuid-root file in an image layer cannot be run by an
unprivileged host user (agent/hostfiles.py).

As root: a store under a world-traversable dir (as /var/lib is) imports an image whose
layer holds a setuid-root copy of busybox. The layer keeps the bit and the owner (the
container needs them), but `nobody` must not reach the file: exec fails with EACCES on
the lookup. A control opens the store's dirs as the old code made them (0755) and shows
that the very same exec then runs, so the refusal is the dirs' doing. No runc, no network;
everything made lives under one temp dir removed in a `finally`.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from shoal.agent.images.store import LocalImageStore
from shoal.testkit.images import BUSYBOX, gzip_bytes, write_layout

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

NOBODY = 65534


def _setuid_layer(busybox: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("bin")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        data = busybox.read_bytes()
        f = tarfile.TarInfo("bin/busybox")
        f.mode, f.size, f.uid, f.gid = 0o4755, len(data), 0, 0      # setuid root, as `su` in an image
        tf.addfile(f, io.BytesIO(data))
    return buf.getvalue()


def _as_nobody(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(path), "id", "-u"], user=NOBODY, group=NOBODY, extra_groups=[],
                          capture_output=True, text=True, timeout=30)


def test_a_setuid_file_in_a_layer_is_unreachable_for_an_unprivileged_host_user():
    base = Path(tempfile.mkdtemp(prefix="shoal-e2e-hostfiles-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)                      # like /var/lib: anyone may traverse it
        tar = _setuid_layer(BUSYBOX)
        layer = gzip_bytes(tar)
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Entrypoint": ["/bin/busybox"], "Cmd": ["sh"]},
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}}
        layout = base / "layout"
        write_layout(layout, tag="v1", full_name="registry.local/setuid:v1", config=config, layer_blobs=[layer])
        store = LocalImageStore(base / "agent" / "images")
        [img] = store.import_archive(layout)
        target = Path(img.layers[0]) / "bin" / "busybox"

        st = os.stat(target)          # the image's file as it was: setuid, root's
        assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_uid == 0

        with pytest.raises(PermissionError) as exc:
            _as_nobody(target)
        assert exc.value.errno == errno.EACCES

        # control: the dirs as the old code left them, and the same exec runs
        for d in (base / "agent", base / "agent" / "images", base / "agent" / "images" / "layers",
                  Path(img.layers[0]).parent):
            os.chmod(d, 0o755)
        r = _as_nobody(target)
        assert r.returncode == 0 and r.stdout.strip().isdigit(), r
    finally:
        shutil.rmtree(base, ignore_errors=True)
