"""Table tests for the pure OCI spec builder and user resolution (agent.runtime.spec)."""
from __future__ import annotations

import json

import pytest

from shoal.agent.interfaces import ALL_CAPABILITIES, ConfigRefused, ContainerConfig, ContainerSecurity, Mount, PulledImage
from shoal.agent.runtime.seccomp import SeccompProfileError
from shoal.agent.runtime.spec import (DOCKER_DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS, EtcFiles, ResolvedUser,
                                      UserResolutionError, build_env, build_oci_spec, capabilities, cpu_limits,
                                      memory_limits, render_hosts, render_resolv_conf, resolve_user)

pytestmark = pytest.mark.unit

IMG = PulledImage(reference="127.0.0.1:5000/web:v1", digest="sha256:" + "a" * 64,
                  image_id="127.0.0.1:5000/web@sha256:" + "a" * 64, layers=["/l/1", "/l/2"], config={})


def cfg(**kw) -> ContainerConfig:
    base = dict(id="0123456789ab-web-0", pod_uid="0123456789abcdef", pod_name="web-1", namespace="default",
                container_name="web", attempt=0, image=IMG, argv=["httpd", "-f"], env=["PATH=/bin", "A=1"],
                log_path="/logs/web/0.log")
    base.update(kw)
    return ContainerConfig(**base)


# A profile in moby's format, small enough to read: one rule for everyone, one only with
# CAP_SYS_ADMIN, one only without it.
PROFILE = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
           "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
           "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {},
                         "excludes": {}},
                        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "args": [],
                         "includes": {"caps": ["CAP_SYS_ADMIN"]}, "excludes": {}},
                        {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]},
                         "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}]}


def sec(**kw) -> ContainerSecurity:
    return ContainerSecurity(**kw)


def spec(c=None, **kw):
    kw.setdefault("seccomp_profile", PROFILE)
    kw.setdefault("rootfs", "/b/rootfs")
    kw.setdefault("cgroups_path", "/shoal/0123456789ab-web-0")
    return build_oci_spec(c or cfg(), **kw)


def test_serialisable_and_version():
    s = spec()
    assert json.loads(json.dumps(s)) == s
    assert s["ociVersion"] == "1.0.2"
    assert s["root"] == {"path": "/b/rootfs", "readonly": False}
    assert s["linux"]["cgroupsPath"] == "/shoal/0123456789ab-web-0"


@pytest.mark.parametrize("netns_path, expected", [
    (None, {"type": "network"}),
    ("/run/netns/pod-x", {"type": "network", "path": "/run/netns/pod-x"}),
])
def test_namespaces(netns_path, expected):
    ns = spec(cfg(netns_path=netns_path))["linux"]["namespaces"]
    assert [n["type"] for n in ns] == ["pid", "mount", "uts", "ipc", "cgroup", "network"]
    assert ns[-1] == expected


@pytest.mark.parametrize("hostname, pod_name, expected", [
    ("", "web-1", "web-1"),
    ("custom", "web-1", "custom"),
    ("", "x" * 80, "x" * 63),
])
def test_hostname(hostname, pod_name, expected):
    s = spec(cfg(hostname=hostname, pod_name=pod_name))
    assert s["hostname"] == expected
    assert f"HOSTNAME={expected}" in s["process"]["env"]


def test_process_basics_and_privileges():
    p = spec(cfg(working_dir="/srv"))["process"]
    assert p["args"] == ["httpd", "-f"]
    assert p["cwd"] == "/srv"
    assert p["terminal"] is False
    assert p["noNewPrivileges"] is True
    caps = p["capabilities"]
    assert set(caps) == {"bounding", "effective", "permitted"}     # nothing inheritable or ambient
    for k in caps:
        assert caps[k] == list(DOCKER_DEFAULT_CAPS)
    assert len(DOCKER_DEFAULT_CAPS) == 14 and "CAP_SYS_ADMIN" not in DOCKER_DEFAULT_CAPS
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}]
    assert spec(nofile=20000)["process"]["rlimits"][0]["hard"] == 20000


@pytest.mark.parametrize("user, expected", [
    (ResolvedUser(), {"uid": 0, "gid": 0}),
    (ResolvedUser(1000, 100), {"uid": 1000, "gid": 100}),
    (ResolvedUser(33, 33, (4, 27)), {"uid": 33, "gid": 33, "additionalGids": [4, 27]}),
])
def test_user(user, expected):
    assert spec(user=user)["process"]["user"] == expected


@pytest.mark.parametrize("env, home, expected", [
    (["A=1"], "/root", ["A=1", f"PATH={'/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'}",
                        "HOSTNAME=h", "HOME=/root"]),
    (["PATH=/bin", "A=1", "A=2"], "/", ["PATH=/bin", "A=2", "HOSTNAME=h", "HOME=/"]),   # last wins, order kept
    (["HOME=/x", "HOSTNAME=y", "PATH=/p"], "/root", ["HOME=/x", "HOSTNAME=y", "PATH=/p"]),
    (["EMPTY=", "NOVALUE"], "/", ["EMPTY=", "NOVALUE=", f"PATH={'/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'}",
                                  "HOSTNAME=h", "HOME=/"]),
])
def test_env(env, home, expected):
    assert build_env(cfg(env=env), hostname="h", home=home) == expected


def test_mounts_standard_masked_readonly():
    s = spec()
    dests = [m["destination"] for m in s["mounts"]]
    assert dests == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    by = {m["destination"]: m for m in s["mounts"]}
    assert "ro" in by["/sys"]["options"] and "ro" in by["/sys/fs/cgroup"]["options"]
    assert by["/dev/shm"]["options"][-1] == "size=65536k"
    assert s["linux"]["maskedPaths"] == list(MASKED_PATHS)
    assert "/sys/devices/virtual/powercap" in MASKED_PATHS and "/proc/kcore" in MASKED_PATHS
    assert s["linux"]["readonlyPaths"] == list(READONLY_PATHS)
    assert "/proc/sysrq-trigger" in READONLY_PATHS


def test_etc_files_and_user_mounts():
    etc = EtcFiles(hosts="/c/etc/hosts", hostname="/c/etc/hostname", resolv_conf="/c/etc/resolv.conf")
    c = cfg(mounts=[Mount("/pods/u/volumes/cache", "/cache"),
                    Mount("/srv/data", "/data", options=["rbind", "ro"])])
    s = spec(c, etc_files=etc)
    extra = [(m["destination"], m["source"], m["type"], m["options"]) for m in s["mounts"][7:]]
    assert extra == [
        ("/etc/hosts", "/c/etc/hosts", "bind", ["rbind", "rprivate", "rw"]),
        ("/etc/hostname", "/c/etc/hostname", "bind", ["rbind", "rprivate", "rw"]),
        ("/etc/resolv.conf", "/c/etc/resolv.conf", "bind", ["rbind", "rprivate", "rw"]),
        ("/cache", "/pods/u/volumes/cache", "bind", ["rbind", "rw"]),
        ("/data", "/srv/data", "bind", ["rbind", "ro"]),
    ]


@pytest.mark.parametrize("millis, expected", [
    (None, None), (0, None), (1000, {"quota": 100000, "period": 100000}),
    (250, {"quota": 25000, "period": 100000}), (2500, {"quota": 250000, "period": 100000}),
    (1, {"quota": 1000, "period": 100000}),      # clamped to the kernel's minimum
])
def test_cpu_limits(millis, expected):
    assert cpu_limits(millis) == expected
    res = spec(cfg(cpu_millis=millis))["linux"]["resources"]
    assert res.get("cpu") == expected


@pytest.mark.parametrize("mem, expected", [
    (None, None), (0, None), (20 * 2**20, {"limit": 20 * 2**20, "swap": 20 * 2**20}),
])
def test_memory_limits(mem, expected):
    assert memory_limits(mem) == expected
    assert spec(cfg(memory_bytes=mem))["linux"]["resources"].get("memory") == expected


def test_devices_deny_all_first_then_basics():
    devs = spec()["linux"]["resources"]["devices"]
    assert devs[0] == {"allow": False, "access": "rwm"}
    allowed = {(d["type"], d.get("major"), d.get("minor")) for d in devs[1:] if d["allow"]}
    for dev in [("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9), ("c", 5, 0),
                ("c", 5, 1), ("c", 5, 2), ("c", 136, None)]:
        assert dev in allowed
    assert all(d["allow"] for d in devs[1:])    # no deny after a wildcard: cgroup v1 rejects it


def test_annotations_carry_identity_and_labels():
    ann = spec(cfg(labels={"shoal.io/pod-uid": "0123"}))["annotations"]
    assert ann["io.shoal.pod.uid"] == "0123456789abcdef"
    assert ann["io.shoal.container.attempt"] == "0"
    assert ann["io.shoal.image.digest"] == IMG.digest
    assert ann["io.shoal.label.shoal.io/pod-uid"] == "0123"


@pytest.mark.parametrize("bad, match", [
    (dict(argv=[]), "no command"),
    (dict(working_dir="srv"), "not absolute"),
    (dict(mounts=[Mount("/a", "rel")]), "not absolute"),
])
def test_invalid(bad, match):
    with pytest.raises(ValueError, match=match):
        spec(cfg(**bad))


PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """root:x:0:
adm:x:4:www-data
www-data:x:33:
staff:x:50:www-data,daemon
nogroup:x:65534:
"""


@pytest.mark.parametrize("user, expected", [
    (None, ResolvedUser(0, 0, (), "/root")),
    ("", ResolvedUser(0, 0, (), "/root")),
    ("root", ResolvedUser(0, 0, (), "/root")),
    ("www-data", ResolvedUser(33, 33, (4, 50), "/var/www")),
    ("33", ResolvedUser(33, 33, (4, 50), "/var/www")),
    ("www-data:nogroup", ResolvedUser(33, 65534, (), "/var/www")),
    ("1234", ResolvedUser(1234, 0, (), "/")),          # unknown numeric uid: as given
    ("1234:5678", ResolvedUser(1234, 5678, (), "/")),
    ("nobody:50", ResolvedUser(65534, 50, (), "/nonexistent")),
])
def test_resolve_user(user, expected):
    assert resolve_user(user, passwd=PASSWD, group=GROUP) == expected


@pytest.mark.parametrize("user, match", [
    ("alice", "user 'alice' not found in /etc/passwd of image x"),
    ("root:wheel", "group 'wheel' not found in /etc/group of image x"),
])
def test_resolve_user_errors(user, match):
    with pytest.raises(UserResolutionError, match=match):
        resolve_user(user, passwd=PASSWD, group=GROUP, where="image x")


def test_resolve_user_without_passwd_file():
    assert resolve_user("0", passwd="", group="") == ResolvedUser(0, 0, (), "/root")
    with pytest.raises(UserResolutionError):
        resolve_user("daemon", passwd="", group="")


@pytest.mark.parametrize("host, expected", [
    ("nameserver 127.0.0.53\noptions edns0\n", "options edns0\n"),
    ("nameserver 10.0.0.2\nnameserver ::1\nsearch lan\n", "nameserver 10.0.0.2\nsearch lan\n"),
    ("nameserver 127.0.0.1\n", ""),
    ("", ""),
])
def test_resolv_conf(host, expected):
    assert render_resolv_conf(host) == expected


def test_hosts():
    assert render_hosts("web-1", "10.244.0.5").splitlines()[-1] == "10.244.0.5\tweb-1"
    assert "web-1" not in render_hosts("web-1", None)
    assert render_hosts("h", None).startswith("127.0.0.1\tlocalhost\n")


# ------------------------------------------------------------------ securityContext
@pytest.mark.parametrize("security, expected", [
    (sec(), list(DOCKER_DEFAULT_CAPS)),
    (sec(caps_drop=("NET_RAW", "chown")), [c for c in DOCKER_DEFAULT_CAPS if c not in ("CAP_NET_RAW", "CAP_CHOWN")]),
    (sec(caps_drop=("ALL",)), []),
    (sec(caps_drop=("ALL",), caps_add=("NET_BIND_SERVICE",)), ["CAP_NET_BIND_SERVICE"]),
    (sec(caps_add=("NET_ADMIN", "CAP_SYS_TIME")), [*DOCKER_DEFAULT_CAPS, "CAP_NET_ADMIN", "CAP_SYS_TIME"]),
    (sec(caps_add=("CHOWN",)), list(DOCKER_DEFAULT_CAPS)),          # already held: not twice
    (sec(caps_add=("ALL",)), list(ALL_CAPABILITIES)),
    (sec(privileged=True, caps_drop=("ALL",)), list(ALL_CAPABILITIES)),
])
def test_capabilities(security, expected):
    assert capabilities(security) == expected
    caps = spec(cfg(security=security))["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == expected


@pytest.mark.parametrize("field, name", [("caps_add", "NET_ADMINN"), ("caps_drop", "FLY")])
def test_unknown_capability_is_refused_by_name(field, name):
    with pytest.raises(ConfigRefused, match=rf"pod default/web-1, container web: securityContext.capabilities"
                                            rf".{field[5:]}: unknown capability '{name}'"):
        spec(cfg(security=sec(**{field: (name,)})))


@pytest.mark.parametrize("security, nnp", [
    (sec(), True), (sec(allow_privilege_escalation=False), True), (sec(allow_privilege_escalation=True), False),
    (sec(privileged=True), False),
])
def test_no_new_privileges(security, nnp):
    assert spec(cfg(security=security))["process"]["noNewPrivileges"] is nnp


def test_read_only_root_filesystem():
    assert spec(cfg(security=sec(readonly_rootfs=True)))["root"]["readonly"] is True
    assert spec(cfg(security=sec()))["root"]["readonly"] is False


@pytest.mark.parametrize("uid, refused", [(0, True), (1000, False)])
def test_run_as_non_root_checks_the_resolved_user(uid, refused):
    c = cfg(security=sec(run_as_non_root=True))
    if refused:
        with pytest.raises(ConfigRefused, match="runAsNonRoot is set and the container would run as root"):
            spec(c, user=ResolvedUser(uid, 0))
    else:
        assert spec(c, user=ResolvedUser(uid, 0))["process"]["user"]["uid"] == uid


def test_seccomp_default_follows_the_capabilities():
    s = spec()["linux"]["seccomp"]
    assert s["defaultAction"] == "SCMP_ACT_ERRNO" and s["defaultErrnoRet"] == 38
    assert s["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert [r["names"] for r in s["syscalls"]] == [["read", "write"], ["clone"]]
    assert s["syscalls"][1]["args"] == [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    admin = spec(cfg(security=sec(caps_add=("SYS_ADMIN",))))["linux"]["seccomp"]
    assert [r["names"] for r in admin["syscalls"]] == [["read", "write"], ["mount"]]


def test_seccomp_unconfined_and_missing_profile():
    assert "seccomp" not in spec(cfg(security=sec(seccomp="Unconfined")))["linux"]
    assert "seccomp" not in spec(cfg(security=sec(seccomp="Unconfined")), seccomp_profile=None)["linux"]
    with pytest.raises(SeccompProfileError, match="container web: the RuntimeDefault seccomp profile is not loaded"):
        spec(seccomp_profile=None)


def test_pids_limit():
    assert spec()["linux"]["resources"]["pids"] == {"limit": 4096}
    assert spec(pids_limit=100)["linux"]["resources"]["pids"] == {"limit": 100}
    assert "pids" not in spec(pids_limit=None)["linux"]["resources"]


def test_privileged_is_dockers_privileged():
    s = spec(cfg(security=sec(privileged=True)))
    lx = s["linux"]
    assert "seccomp" not in lx and "maskedPaths" not in lx and "readonlyPaths" not in lx
    assert lx["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    by = {m["destination"]: m for m in s["mounts"]}
    assert by["/dev"] == {"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind", "rw"]}
    assert "ro" not in by["/sys"]["options"] and "rw" in by["/sys/fs/cgroup"]["options"]
    assert by["/dev/pts"]["type"] == "devpts"       # its own ptys, not the host's


def test_supplemental_groups_join_the_users_own():
    s = spec(cfg(security=sec(supplemental_groups=(2000, 27))), user=ResolvedUser(1000, 1000, (27,)))
    assert s["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [27, 2000]}
