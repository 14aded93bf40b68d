"""`shoal lab down` on a half-built lab with no state file (as after a crash of `up`)."""
from __future__ import annotations

import os
import secrets
import time

import pytest

from shoal.testkit.labnet import create_lab_network
from shoal.testkit.lab import Lab, LabState, cgroup_pids, lab_cgroups, spawn
from lab_fixtures import LabHandle

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, cgroups)"),
]


def test_down_after_a_crash_removes_processes_cgroups_namespaces_and_dirs():
    from shoal.agent.runtime.cgroups import Cgroups
    name = "c" + secrets.token_hex(3)
    lab = Lab(name, out=print)
    handle = LabHandle(lab=lab, state=LabState(name=name, subnet="10.213.0.0/24", n_hosts=2), plan=None)
    try:
        create_lab_network(name, 2, "10.213.0.0/24")
        lab.dir.mkdir(parents=True)
        (lab.run_root / name / "h1" / "runc").mkdir(parents=True)
        # a process of "h1" inside its namespace and cgroups, plus one it left behind in a child group
        p1 = spawn(["sleep", "600"], log_path=str(lab.dir / "logs" / "a.log"), cgroup=f"shoal-lab-{name}-h1/shoal-agent",
                   netns=f"{name}-h1")
        p2 = spawn(["sleep", "600"], log_path=str(lab.dir / "logs" / "b.log"), cgroup=f"shoal-lab-{name}-h1/ctr-1")
        cg = Cgroups()
        assert lab_cgroups(cg, f"shoal-lab-{name}-") == [f"shoal-lab-{name}-h1"]
        assert {p1.pid, p2.pid} <= cgroup_pids(cg, f"shoal-lab-{name}-h1")
        assert os.readlink(f"/proc/{p1.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert os.readlink(f"/proc/{p1.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert not (lab.dir / "state.json").exists()
        done = lab.down()
        assert any(d.startswith(f"cgroup shoal-lab-{name}-h1") for d in done), done
        assert f"netns {name}-lab" in done
        for _ in range(50):
            if not os.path.exists(f"/proc/{p1.pid}") or open(f"/proc/{p1.pid}/stat").read().split(")")[1].split()[0] == "Z":
                break
            time.sleep(0.1)
        assert handle.leftovers() == []
        assert lab.down() == []          # idempotent: nothing left to do
    finally:
        lab.down(quiet=True)
