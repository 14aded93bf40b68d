"""Issue 17, first bullet, end to end: a container cannot reach the host through a subPath
that it made a symbolic link (Kubernetes' CVE-2017-1002101), on real runc.

One pod, one emptyDir `data`:
- `attacker` mounts the whole volume and makes `x` a link to `/` (and a plain `ok/f`);
- `victim` mounts `subPath: x`; were the link followed, it would see the marker file
  planted in the host's `/` (it then sleeps, so the refusal below never comes);
- `reader` mounts `subPath: ok`, which must still work (the bind of the checked dir).

The victim's first attempt may come before the link (the agent then creates `x` as a
directory, which the attacker replaces); every later attempt must be refused with a
CreateContainerConfigError naming the subPath, and nothing may stay mounted on the host.
Everything is removed in `finally`s and by the module's cluster fixture, even on failure.
"""
from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from agent_fixtures import E2ECluster, container, cstatus, pod_manifest, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def _subpath_mounts(under: Path) -> list[str]:
    root = str(under.resolve())
    return [l.split()[4] for l in Path("/proc/self/mountinfo").read_text().splitlines()
            if l.split()[4].startswith(root) and "volume-subpaths" in l.split()[4]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = E2ECluster(tmp_path_factory.mktemp("subpath"), backoff_initial=1.0, backoff_max=4.0)
    try:
        c.start()
        yield c
    finally:
        problems = c.close()
        # a safety net before pytest removes the tmp dir: never leave a bind under it
        left = _subpath_mounts(c.tmp)
        for m in sorted(left, key=len, reverse=True):
            subprocess.run(["umount", "--lazy", m], capture_output=True)
        assert not problems and not left, f"left behind on the host: {problems + left}"


def test_a_symlink_subpath_is_refused_and_never_reaches_the_host(cluster):
    c = cluster
    marker = Path("/") / f"shoal-subpath-e2e-{secrets.token_hex(4)}"
    marker.write_text("the host's root\n")
    ref = c.refs["web:v1"]
    attack = ("while [ ! -L /data/x ]; do rm -rf /data/x; ln -s / /data/x; done; "
              "mkdir -p /data/ok && echo hi > /data/ok/f; exec sleep 3600")
    peek = f"if [ -e /x/{marker.name} ]; then echo ESCAPED; exec sleep 3600; fi; sleep 1; exit 1"
    c.create_pod(pod_manifest("subpath", [
        container("attacker", ref, command=["sh", "-c", attack],
                  volumeMounts=[{"name": "data", "mountPath": "/data"}]),
        container("victim", ref, command=["sh", "-c", peek],
                  volumeMounts=[{"name": "data", "mountPath": "/x", "subPath": "x"}]),
        container("reader", ref, command=["sh", "-c", "exec sleep 3600"],
                  volumeMounts=[{"name": "data", "mountPath": "/ok", "subPath": "ok"}]),
    ], volumes=[{"name": "data", "emptyDir": {}}]))
    uid = None
    try:
        def refused(p):
            w = (cstatus(p, "victim").get("state") or {}).get("waiting") or {}
            return w.get("reason") == "CreateContainerConfigError"
        pod = c.wait_pod("subpath", refused, timeout=90, what="victim refused its subPath")
        uid = pod["metadata"]["uid"]
        victim = cstatus(pod, "victim")
        msg = victim["state"]["waiting"]["message"]
        # a refusal is no exit (an earlier attempt may have run, before the link was there)
        assert ((victim.get("lastState") or {}).get("terminated") or {}).get("reason") != "CreateContainerConfigError"
        assert msg == ("pod default/subpath, container victim: subPath x of volume data: a symbolic link "
                       "(refused: it could lead out of the volume)"), msg
        c.wait_events("subpath", "Failed", lambda e: e["message"] == f"Error: {msg}")
        v = c.running_container(pod, "victim")
        assert v is None or c.runtime.exec(v.id, ["ls", f"/x/{marker.name}"], 10)[0] != 0
        # a plain subPath still mounts the directory that was checked
        r = c.running_container(pod, "reader")
        assert r is not None
        wait_for(lambda: c.runtime.exec(r.id, ["cat", "/ok/f"], 10) == (0, b"hi\n"), what="reader sees ok/f")
        # the host-side binds were released once runc had made each container
        assert _subpath_mounts(c.agent_dir) == []
    finally:
        marker.unlink()
        c.delete_pod_and_wait("subpath")
    assert c.leftovers(uid=uid) == [] if uid else True
    assert _subpath_mounts(c.agent_dir) == []
