"""The test images behave as documented (run from their overlay rootfs in a private netns)."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from shoal.agent.images.store import LocalImageStore
from tests.e2e.images_fixtures import cached_test_images

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e tests run as root"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare is missing"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    st = LocalImageStore(tmp_path_factory.mktemp("store"))
    for img in cached_test_images().values():
        st.import_archive(img.layout)
    return st


def run_in(store: LocalImageStore, image: str, script: str, tmp_path: Path, *, env: dict | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `script` with /bin/sh inside the image's rootfs, in a fresh network namespace."""
    img = store.pull(image, policy="Never")
    merged, upper, work = tmp_path / "merged", tmp_path / "upper", tmp_path / "work"
    for d in (merged, upper, work):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={':'.join(reversed(img.layers))},upperdir={upper},workdir={work}",
                    str(merged)], check=True)
    mounted = [merged]
    try:
        # a private tmpfs /dev with just `null` (never a bind of the host's /dev: a failed
        # clean-up followed by rm -rf of the test dir must not be able to touch host devices)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=755", "tmpfs", str(merged / "dev")],
                       check=True)
        mounted.append(merged / "dev")
        os.mknod(merged / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(merged / "dev/null", 0o666)
        full_env = {"PATH": "/bin", **{k.partition("=")[0]: k.partition("=")[2] for k in img.config["Env"]},
                    **(env or {})}
        # own pid namespace: when the script ends (or unshare is killed on timeout) the kernel
        # kills everything it left behind, so no process keeps the mounts busy
        return subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child", "chroot", str(merged),
                               "/bin/sh", "-c", "ip link set lo up; " + script],
                              env=full_env, capture_output=True, text=True, timeout=timeout)
    finally:
        for m in reversed(mounted):
            if subprocess.run(["umount", str(m)], check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(m)], check=False)


def marked(out: subprocess.CompletedProcess) -> list[str]:
    """The test script's own lines (prefixed T:), without the image's log lines."""
    return [l[2:] for l in out.stdout.splitlines() if l.startswith("T:")]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_web_serves_its_version_and_healthz(store, tmp_path, version):
    out = run_in(store, f"web:{version}", """
        /bin/web-entrypoint & pid=$!
        i=0; until wget -qO- http://127.0.0.1:8080/healthz >/dev/null 2>&1; do
          i=$((i+1)); [ $i -gt 100 ] && exit 9; sleep 0.1; done
        echo "T:$(wget -qO- http://127.0.0.1:8080/index.html)"
        echo "T:$(wget -qO- http://127.0.0.1:8080/healthz)"
        kill -TERM $pid; wait $pid; echo "T:exit=$?"
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert marked(out) == [f"version {version}", "ok", "exit=0"]
    assert f"web {version}: got SIGTERM" in out.stdout + out.stderr


def test_flaky_healthz_fails_after_fail_after(store, tmp_path):
    out = run_in(store, "flaky:v1", """
        /bin/flaky-entrypoint & pid=$!
        i=0; until wget -qO- http://127.0.0.1:8080/healthz >/dev/null 2>&1; do
          i=$((i+1)); [ $i -gt 100 ] && exit 9; sleep 0.1; done
        echo T:healthy
        i=0; while wget -qO- http://127.0.0.1:8080/healthz >/dev/null 2>&1; do
          i=$((i+1)); [ $i -gt 300 ] && exit 8; sleep 0.1; done
        echo T:unhealthy
        echo "T:$(wget -qO- http://127.0.0.1:8080/index.html)"
        kill -TERM $pid; wait $pid
    """, tmp_path, env={"FAIL_AFTER": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert marked(out) == ["healthy", "unhealthy", "version flaky-v1"]


def test_crash_exits_non_zero(store, tmp_path):
    out = run_in(store, "crash:v1", "exec /bin/crash-entrypoint", tmp_path)
    assert out.returncode == 1 and out.stdout == "crash: exiting with status 1\n"


def test_sleeper_traps_sigterm_and_writes_marker(store, tmp_path):
    out = run_in(store, "sleeper:v1", """
        /bin/sleeper-entrypoint >/tmp/log 2>&1 & pid=$!
        until grep -q "sleeper: sleeping" /tmp/log; do sleep 0.05; done   # trap is installed
        kill -TERM $pid; wait $pid; echo "T:exit=$?"; echo "T:$(cat "$MARKER")"; cat /tmp/log
    """, tmp_path, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "sleeper: got SIGTERM" in out.stdout
    assert marked(out) == ["exit=0", "SIGTERM"]
