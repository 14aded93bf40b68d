"""subPath resolution (agent.subpath.open_subpath) on a tmp dir, and the worker's use of it
through a recording SubPaths (no mount: the real bind is in tests/e2e/test_subpath_escape.py)."""
import os
import stat
from pathlib import Path

import pytest

from shoal.agent.subpath import SUBPATHS_DIR, SubPathError, open_subpath

pytestmark = pytest.mark.unit


def _target(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _open(root, sub):
    fd = open_subpath(root, sub, volume="data")
    try:
        return _target(fd), os.fstat(fd).st_mode
    finally:
        os.close(fd)


@pytest.fixture
def vol(tmp_path):
    v = tmp_path / "vol"
    (v / "a" / "b").mkdir(parents=True)
    (v / "a" / "f").write_text("x")
    (tmp_path / "outside").mkdir()
    return v


@pytest.mark.parametrize("sub,rel", [("a", "a"), ("a/b", "a/b"), ("./a//b/", "a/b"), ("a/f", "a/f"), (".", "")])
def test_plain_directories_and_files_are_opened(vol, sub, rel):
    path, mode = _open(vol, sub)
    assert path == str((vol / rel).resolve()).rstrip("/")
    assert stat.S_ISDIR(mode) or stat.S_ISREG(mode)


def test_missing_components_are_created_as_directories_inside(vol):
    path, mode = _open(vol, "a/new/deeper")
    assert path == str((vol / "a" / "new" / "deeper").resolve()) and stat.S_ISDIR(mode)


@pytest.mark.parametrize("link_to,sub,why", [
    ("/", "x", "subPath x of volume data: a symbolic link (refused: it could lead out of the volume)"),
    ("/", "x/etc", "subPath x/etc of volume data: x is a symbolic link (refused"),
    ("../outside", "x", "subPath x of volume data: a symbolic link"),     # '..' through a link
    ("a/b", "x", "subPath x of volume data: a symbolic link"),           # inside the volume: refused too
    ("nowhere", "x", "subPath x of volume data: a symbolic link"),       # dangling: not created through
])
def test_symbolic_links_are_refused_wherever_they_point(vol, link_to, sub, why):
    os.symlink(link_to, vol / "x")
    with pytest.raises(SubPathError) as e:
        open_subpath(vol, sub, volume="data")
    assert str(e.value).startswith(why)
    assert not (vol / "nowhere").exists() and not (vol.parent / "outside" / "etc").exists()


def test_a_link_deeper_down_is_refused(vol):
    os.symlink("/", vol / "a" / "b" / "up")
    with pytest.raises(SubPathError, match="a/b/up is a symbolic link"):
        open_subpath(vol, "a/b/up/tmp", volume="data")


@pytest.mark.parametrize("sub,why", [("../x", "without '..'"), ("/etc", "without '..'"),
                                     ("a/f/g", "a/f is not a directory")])
def test_bad_paths_are_refused(vol, sub, why):
    with pytest.raises(SubPathError, match=why):
        open_subpath(vol, sub, volume="data")


def test_other_file_types_are_refused(vol):
    os.mkfifo(vol / "fifo")
    with pytest.raises(SubPathError, match="neither a directory nor a regular file"):
        open_subpath(vol, "fifo", volume="data")


def test_no_fd_is_leaked(vol):
    os.symlink("/", vol / "x")
    before = len(os.listdir("/proc/self/fd"))
    for sub in ("a/b", "x", "x/etc", "a/f/g", "a/new"):
        try:
            os.close(open_subpath(vol, sub, volume="data"))
        except SubPathError:
            pass
    assert len(os.listdir("/proc/self/fd")) == before


# ---------------------------------------------------------------------------- in the worker
class _RecordingSubPaths:
    """Checks with the real open_subpath; records the bind instead of mounting."""
    def __init__(self):
        self.bound, self.released = [], []

    def mount(self, *, root, sub_path, target, volume):
        os.close(open_subpath(root, sub_path, volume=volume))
        self.bound.append((sub_path, target))

    def release(self, base):
        self.released.append(base)
        return []


def _worker(tmp_path, sub_path, policy=None):
    from test_agent_worker import _worker as make
    w = make(tmp_path)
    w.ctx.subpaths = _RecordingSubPaths()
    pod = w.pod
    pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "data", "mountPath": "/d", "subPath": sub_path}]
    if policy:
        pod["spec"]["restartPolicy"] = policy
    w.set_pod(pod)
    return w


def test_worker_gives_runc_the_bound_path_and_releases_it_after_the_create(tmp_path):
    w = _worker(tmp_path, "ok/dir")
    w.sync()
    target = w.pod_dir / SUBPATHS_DIR / "web" / "data" / "0"
    assert w.ctx.subpaths.bound == [("ok/dir", target)]
    cfg = w.ctx.runtime.config("u1-012345678-web-0")
    assert [(m.source, m.destination) for m in cfg.mounts if m.destination == "/d"] == [(str(target), "/d")]
    assert (w.pod_dir / "volumes" / "data" / "ok" / "dir").is_dir()
    assert w.ctx.subpaths.released == [w.pod_dir / SUBPATHS_DIR / "web"]


@pytest.mark.parametrize("policy", ["Always", "Never"])
def test_worker_refuses_a_symlink_subpath_as_a_config_error(tmp_path, policy):
    w = _worker(tmp_path, "x", policy)
    (w.pod_dir / "volumes" / "data").mkdir(parents=True)
    os.symlink("/", w.pod_dir / "volumes" / "data" / "x")
    t0 = w.ctx.clock.now()
    wake = w.sync()
    assert not w.ctx.runtime.list() and w.ctx.subpaths.bound == []
    msg = ("pod default/web-1, container web: subPath x of volume data: a symbolic link "
           "(refused: it could lead out of the volume)")
    failed = [e for e in w.ctx.events.seen if e[0] == "Failed"]
    assert failed == [("Failed", f"Error: {msg}")]
    # kubelet's shape: waiting, no exit — no restart counted, no lastState, Pending even under Never
    st = w.ctx.api.statuses[-1]
    cs = st["containerStatuses"][0]
    assert cs["state"] == {"waiting": {"reason": "CreateContainerConfigError", "message": msg}}
    assert cs["restartCount"] == 0 and cs["lastState"] == {} and st["phase"] == "Pending"
    assert w.ctx.subpaths.released == [w.pod_dir / SUBPATHS_DIR / "web"]
    assert wake is not None and wake > t0            # retried later, with the pull back-off

    # before the retry nothing is tried again; at it, the same message makes no second event
    assert w.sync() == wake and len(w.ctx.subpaths.released) == 1
    w.ctx.clock.advance(wake - w.ctx.clock.now())
    wake2 = w.sync()
    assert len(w.ctx.subpaths.released) == 2 and wake2 is not None and wake2 - wake > wake - t0   # backing off
    assert [e for e in w.ctx.events.seen if e[0] == "Failed"] == failed
    cs = w.ctx.api.statuses[-1]["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CreateContainerConfigError" and cs["restartCount"] == 0

    # the volume fixed: the next retry builds the config and the container starts as attempt 0
    os.unlink(w.pod_dir / "volumes" / "data" / "x")
    w.ctx.clock.advance(wake2 - w.ctx.clock.now())
    w.sync()
    assert [s.status for s in w.ctx.runtime.list()] == ["running"]
    assert w.ctx.subpaths.bound == [("x", w.pod_dir / SUBPATHS_DIR / "web" / "data" / "0")]
    st = w.ctx.api.statuses[-1]
    cs = st["containerStatuses"][0]
    assert "running" in cs["state"] and cs["restartCount"] == 0 and cs["lastState"] == {}
    assert st["phase"] == "Running" and not w.mem.config_failures


def test_worker_reports_a_volume_mount_naming_no_volume_as_a_config_error(tmp_path):
    w = _worker(tmp_path, "ok")
    w.pod["spec"]["volumes"] = []
    w.sync()
    assert not w.ctx.runtime.list()
    cs = w.ctx.api.statuses[-1]["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    assert "names no volume" in cs["state"]["waiting"]["message"] and cs["restartCount"] == 0
