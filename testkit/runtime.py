"""Helpers for e2e tests and benchmarks of the runtime (root only): a one-layer
busybox "image" on disk, and a teardown that leaves nothing behind.

`busybox_layer(dest)` builds an unpacked layer directory from Debian's
busybox-static — /bin/busybox plus one symlink per applet, a minimal
/etc/passwd and /etc/group — and `busybox_image(dest)` wraps it as the
`PulledImage` the image store would return, so runtime tests need no registry.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time

from shoal.agent.interfaces import PulledImage

log = logging.getLogger(__name__)

BUSYBOX = "/bin/busybox"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home/nobody:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def busybox_layer(dest: str, *, busybox: str = BUSYBOX) -> str:
    if os.path.exists(os.path.join(dest, "bin", "busybox")):
        return dest
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "home/nobody"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    shutil.copy2(busybox, os.path.join(dest, "bin", "busybox"))
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
    for a in applets:
        link = os.path.join(dest, "bin", a)
        if a != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write(PASSWD)
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write(GROUP)
    return dest


def busybox_image(dest: str) -> PulledImage:
    layer = busybox_layer(dest)
    digest = "sha256:" + "b" * 64
    return PulledImage(reference="local/busybox:test", digest=digest, image_id=f"local/busybox@{digest}",
                       layers=[layer], config={"Env": ["PATH=/bin"], "Cmd": ["sh"]})


def teardown_runtime(rt, *, timeout: float = 10.0) -> list[str]:
    """SIGKILL and remove every container of `rt`, then its monitors' and
    parent cgroups. Returns what could not be cleaned (for the test to report)."""
    problems: list[str] = []
    for st in rt.list():
        try:
            if st.status in ("running", "created"):
                rt.kill(st.id, signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                cur = rt.state(st.id)
                if cur is None or cur.status not in ("running", "created"):
                    break
                time.sleep(0.02)
            rt.remove(st.id)
        except Exception as e:   # keep going: clean as much as possible
            problems.append(f"{st.id}: {e}")
    deadline = time.monotonic() + timeout
    while True:
        left = rt.cgroups.remove(rt.cgroup_parent)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)     # monitors exit a moment after their container is deleted
    problems += [f"cgroup left: {d}" for d in left]
    return problems
