"""Modes of the agent's state on the host (agent/hostfiles.py, issue 17 "Host files"):
every state dir 0700 at creation or tightened, secrets and bundles' config.json 0600."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shoal.agent.hostfiles import private_dir, write_private
from shoal.agent.interfaces import ContainerConfig, PulledImage


@pytest.fixture(autouse=True)
def usual_umask():
    old = os.umask(0o022)      # the common default: what made every dir 0755 before
    yield
    os.umask(old)


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def open_dirs(root: Path) -> list[str]:
    """Directories under (and including) `root` that group or others may use."""
    out = [] if not mode(root) & 0o077 else [str(root)]
    for dirpath, dirnames, _ in os.walk(root):
        out += [os.path.join(dirpath, d) for d in dirnames
                if not os.path.islink(os.path.join(dirpath, d)) and mode(os.path.join(dirpath, d)) & 0o077]
    return out


# ---------------------------------------------------------------------------- the helpers
def test_private_dir_creates_missing_parents_0700_and_leaves_existing_parents(tmp_path):
    os.chmod(tmp_path, 0o755)
    d = private_dir(tmp_path / "a" / "b" / "c")
    assert d == tmp_path / "a" / "b" / "c"
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700, 0o700, 0o700]
    assert mode(tmp_path) == 0o755          # not ours: /var/lib, /run


@pytest.mark.parametrize("before, after", [(0o755, 0o700), (0o777, 0o700), (0o711, 0o700), (0o700, 0o700),
                                           (0o500, 0o500), (0o1777, 0o1777)])   # sticky (/tmp): never changed
def test_private_dir_tightens_an_existing_dir(tmp_path, before, after):
    d = tmp_path / "state"
    d.mkdir()
    os.chmod(d, before)
    private_dir(d)
    assert mode(d) == after


def test_write_private_is_0600_even_over_a_stale_tmp_and_an_old_file(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("old")
    os.chmod(p, 0o644)
    (tmp_path / "config.json.tmp").write_text("crash leftover")
    os.chmod(tmp_path / "config.json.tmp", 0o666)
    write_private(p, '{"env": ["DB_PASSWORD=x"]}')
    assert p.read_text() == '{"env": ["DB_PASSWORD=x"]}' and mode(p) == 0o600
    assert not (tmp_path / "config.json.tmp").exists()
    write_private(p, b"bytes")
    assert p.read_bytes() == b"bytes" and mode(p) == 0o600


# ---------------------------------------------------------------------------- the agent's stores
def test_image_store_dirs_are_private_and_an_old_store_is_tightened(tmp_path):
    from shoal.agent.images.store import LocalImageStore
    root = tmp_path / "images"
    for d in ("blobs/sha256", "layers/sha256/abc", "images", "tmp"):   # as the old code left them
        (root / d).mkdir(parents=True)
        os.chmod(root / d, 0o755)
    os.chmod(root, 0o755)
    LocalImageStore(root)
    # the layer's own root keeps its mode (it is the image's); its parents close it off
    assert open_dirs(root) == [str(root / "layers" / "sha256" / "abc")]
    assert mode(root / "layers" / "sha256") == 0o700
    LocalImageStore(tmp_path / "fresh")
    assert open_dirs(tmp_path / "fresh") == []


def test_runtime_state_dirs_are_private_and_the_bundle_config_is_0600(tmp_path, monkeypatch):
    from shoal.agent.runtime import runc_runtime
    from shoal.agent.runtime.runc import RecordingRunner
    seen: dict[str, int] = {}

    def spawn(argv, **kw):    # stands in for conmon: the bundle is complete by now
        cdir = tmp_path / "state" / "containers" / "0123456789ab-web-0"
        rw = tmp_path / "root" / "rw" / "0123456789ab-web-0"
        seen["config"] = mode(cdir / "bundle" / "config.json")
        seen["private"] = {str(d.relative_to(tmp_path)) for d in (cdir, *cdir.parents, rw.parent, rw.parent.parent)
                           if d.is_relative_to(tmp_path) and d != tmp_path and mode(d) == 0o700}
        # what the container sees is unchanged: the rootfs' own root is the upper dir's mode
        seen["upper"] = mode(rw / "upper")
        raise OSError("no conmon in a unit test")

    monkeypatch.setattr(runc_runtime, "mount_overlay", lambda *a, **kw: None)
    monkeypatch.setattr(runc_runtime, "is_mounted", lambda *a, **kw: False)
    monkeypatch.setattr(runc_runtime, "spawn_monitor", spawn)
    rt = runc_runtime.RuncRuntime(str(tmp_path / "root"), state_dir=str(tmp_path / "state"),
                                  runc_root=str(tmp_path / "runc"), runc_binary="/bin/true",
                                  runner=RecordingRunner(), cgroups=_NoCgroups())
    assert open_dirs(tmp_path) == []
    img = PulledImage(reference="r/web:v1", digest="sha256:" + "a" * 64, image_id="r/web@sha256:" + "a" * 64,
                      layers=[], config={})
    cfg = ContainerConfig(id="0123456789ab-web-0", pod_uid="0123456789abcdef", pod_name="web-1",
                          namespace="default", container_name="web", attempt=0, image=img, argv=["/bin/sh"],
                          env=["DB_PASSWORD=hunter2"], user="0:0", log_path=str(tmp_path / "logs" / "web.log"))
    with pytest.raises(runc_runtime.CreateError, match="no conmon"):
        rt.create(cfg)
    assert seen == {"config": 0o600, "upper": 0o755,
                    "private": {"state", "state/containers", "state/containers/0123456789ab-web-0",
                                "root", "root/rw"}}
    assert {mode(tmp_path / d) for d in ("state/exits", "state/sockets", "runc")} == {0o700}


class _NoCgroups:
    def exists(self, path: str) -> bool:
        return False

    def remove(self, path: str) -> None:
        pass


def test_network_state_and_node_credentials_are_private(tmp_path):
    from shoal.agent.join import NodeCredentials, node_password, save_credentials
    from shoal.agent.network.ipam import NodeState
    NodeState(str(tmp_path / "agent" / "network"))
    assert open_dirs(tmp_path / "agent") == []
    node_password(tmp_path / "agent2")
    assert mode(tmp_path / "agent2") == 0o700 and mode(tmp_path / "agent2" / "node-password") == 0o600
    fields = {f: "x" for f in NodeCredentials.__dataclass_fields__}
    p = save_credentials(tmp_path / "agent3", NodeCredentials(**fields))
    assert mode(tmp_path / "agent3") == 0o700 and mode(p) == 0o600


def test_a_directory_the_user_named_keeps_its_mode_and_sticky_ones_are_never_changed(tmp_path):
    shared = tmp_path / "home"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    private_dir(shared, tighten=False)           # --data-dir pointing at a shared directory
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o755
    new = private_dir(tmp_path / "fresh", tighten=False)
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o700
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    private_dir(sticky)                           # /tmp-like: never tightened, even when asked
    assert stat.S_IMODE(os.stat(sticky).st_mode) == 0o1777
