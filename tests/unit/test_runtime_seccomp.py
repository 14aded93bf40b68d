"""The default seccomp profile: moby's rule selection, and the profile the node installs."""
from __future__ import annotations

import json

import pytest

from shoal.agent.runtime.seccomp import DEFAULT_PROFILE_PATH, SeccompProfileError, load_profile, oci_seccomp
from shoal.agent.runtime.spec import DOCKER_DEFAULT_CAPS

pytestmark = pytest.mark.unit


def rule(names, **kw):
    return {"names": names, "action": "SCMP_ACT_ALLOW", "args": [], "includes": {}, "excludes": {}, **kw}


@pytest.mark.parametrize("r, caps, machine, kernel, kept", [
    (rule(["a"]), [], "x86_64", (6, 1), True),
    (rule(["a"], includes={"caps": ["CAP_X", "CAP_Y"]}), ["CAP_X"], "x86_64", (6, 1), False),   # needs all
    (rule(["a"], includes={"caps": ["CAP_X", "CAP_Y"]}), ["CAP_X", "CAP_Y"], "x86_64", (6, 1), True),
    (rule(["a"], excludes={"caps": ["CAP_X", "CAP_Y"]}), ["CAP_Y"], "x86_64", (6, 1), False),   # any excludes
    (rule(["a"], includes={"arches": ["arm64"]}), [], "x86_64", (6, 1), False),
    (rule(["a"], includes={"arches": ["amd64", "x32"]}), [], "x86_64", (6, 1), True),
    (rule(["a"], excludes={"arches": ["amd64"]}), [], "x86_64", (6, 1), False),
    (rule(["a"], includes={"minKernel": "4.8"}), [], "x86_64", (4, 7, 9), False),
    (rule(["a"], includes={"minKernel": "4.8"}), [], "x86_64", (4, 8), True),
    (rule([]), [], "x86_64", (6, 1), False),
])
def test_rule_selection(r, caps, machine, kernel, kept):
    out = oci_seccomp({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [r]}, caps=caps, machine=machine, kernel=kernel)
    assert (len(out["syscalls"]) == 1) is kept


def test_errno_and_args_are_kept():
    out = oci_seccomp({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "syscalls": [
        rule(["x"], action="SCMP_ACT_ERRNO", errnoRet=22, args=[{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}])]},
        caps=[], machine="x86_64", kernel=(6,))
    assert out == {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": ["SCMP_ARCH_X86_64"],
                   "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
                                 "args": [{"index": 0, "value": 16, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}]}


def test_load_profile_errors(tmp_path):
    with pytest.raises(SeccompProfileError, match="golang-github-containers-common"):
        load_profile(str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"syscalls": []}))
    with pytest.raises(SeccompProfileError, match="not a seccomp profile"):
        load_profile(str(bad))


def test_the_installed_default_profile():
    """scripts/install.sh installs it; a node without it refuses to run containers."""
    profile = load_profile(DEFAULT_PROFILE_PATH)
    out = oci_seccomp(profile, caps=list(DOCKER_DEFAULT_CAPS), machine="x86_64", kernel=(6, 1))
    allowed = {n for r in out["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]}
    assert out["defaultAction"] == "SCMP_ACT_ERRNO"
    assert {"read", "write", "execve", "clone3", "openat"} <= allowed
    # what only CAP_SYS_MODULE / CAP_SYS_TIME holders get is refused by default
    assert not {"init_module", "delete_module", "settimeofday", "kexec_load"} & allowed
    timer = oci_seccomp(profile, caps=[*DOCKER_DEFAULT_CAPS, "CAP_SYS_TIME"], machine="x86_64", kernel=(6, 1))
    assert "settimeofday" in {n for r in timer["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
