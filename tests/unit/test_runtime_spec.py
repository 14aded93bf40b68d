"""Table tests for the pure OCI spec builder and user resolution (agent.runtime.spec)."""
from __future__ import annotations

import json

import pytest

from shoal.agent.interfaces import ContainerConfig, Mount, PulledImage
from shoal.agent.runtime.spec import (DOCKER_DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS, EtcFiles, ResolvedUser,
                                      UserResolutionError, build_env, build_oci_spec, cpu_limits, memory_limits,
                                      render_hosts, render_resolv_conf, resolve_user)

pytestmark = pytest.mark.unit

IMG = PulledImage(reference="127.0.0.1:5000/web:v1", digest="sha256:" + "a" * 64,
                  image_id="127.0.0.1:5000/web@sha256:" + "a" * 64, layers=["/l/1", "/l/2"], config={})


def cfg(**kw) -> ContainerConfig:
    base = dict(id="0123456789ab-web-0", pod_uid="0123456789abcdef", pod_name="web-1", namespace="default",
                container_name="web", attempt=0, image=IMG, argv=["httpd", "-f"], env=["PATH=/bin", "A=1"],
                log_path="/logs/web/0.log")
    base.update(kw)
    return ContainerConfig(**base)


def spec(c=None, **kw):
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
    assert [n["type"] for n in ns] == ["pid", "mount", "uts", "ipc", "network"]
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
