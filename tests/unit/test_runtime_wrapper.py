"""The runc wrapper's argv and error handling, conmon's argv and sync message,
cgroup mount parsing, overlay options and the pure state assembly — all
without root, through `RecordingRunner`."""
from __future__ import annotations

import json
import shutil
import signal

import pytest

from shoal.agent.runtime.cgroups import Cgroups, Hierarchy, cgroup_mode, parse_cgroup_mounts
from shoal.agent.runtime.monitor import MonitorPaths, conmon_argv, parse_sync_message
from shoal.agent.runtime.mounts import fs_type_of, mountpoints, overlay_options
from shoal.agent.runtime.runc import CommandTimeout, RecordingRunner, Runc, RuncError, signal_name
from shoal.agent.runtime.runc_runtime import DiskRecord, assemble_state, parse_exit_file, runc_created_at

pytestmark = pytest.mark.unit

R = ["/usr/sbin/runc", "--root", "/var/lib/shoal/n1/runc"]


def runc(runner: RecordingRunner) -> Runc:
    return Runc(root="/var/lib/shoal/n1/runc", runner=runner)


@pytest.mark.parametrize("call, argv", [
    (lambda r: r.start("c1"), R + ["start", "c1"]),
    (lambda r: r.kill("c1", signal.SIGTERM), R + ["kill", "c1", "TERM"]),
    (lambda r: r.kill("c1", signal.SIGKILL, all_processes=True), R + ["kill", "--all", "c1", "KILL"]),
    (lambda r: r.kill("c1", 64), R + ["kill", "c1", "RTMAX"]),
    (lambda r: r.delete("c1"), R + ["delete", "c1"]),
    (lambda r: r.delete("c1", force=True), R + ["delete", "--force", "c1"]),
    (lambda r: r.state("c1"), R + ["state", "c1"]),
    (lambda r: r.list(), R + ["list", "--format", "json"]),
])
def test_argv(call, argv):
    rr = RecordingRunner()
    rr.when("state", stdout=b'{"id": "c1", "status": "running", "pid": 5}')
    call(runc(rr))
    assert rr.calls == [argv]


def test_global_root_always_first():
    rr = RecordingRunner()
    r = Runc(root="/a", binary="/opt/runc", runner=rr)
    r.start("x")
    r.kill("x", 9)
    assert all(c[:3] == ["/opt/runc", "--root", "/a"] for c in rr.calls)


@pytest.mark.parametrize("stderr", [b"container not running", b'level=error msg="container \\"c1\\" does not exist"'])
def test_kill_of_gone_container_is_not_an_error(stderr):
    rr = RecordingRunner().when("kill", returncode=1, stderr=stderr)
    assert runc(rr).kill("c1", signal.SIGTERM) is False


def test_kill_other_error_raises_with_argv_and_message():
    rr = RecordingRunner().when("kill", returncode=1, stderr=b"permission denied")
    with pytest.raises(RuncError, match=r"kill c1 TERM failed \(exit 1\): permission denied"):
        runc(rr).kill("c1", signal.SIGTERM)


def test_state_unknown_is_none_and_list_empty():
    rr = RecordingRunner().when("state", returncode=1, stderr=b'container "c9" does not exist') \
                          .when("list", stdout=b"null\n")
    r = runc(rr)
    assert r.state("c9") is None
    assert r.list() == []


def test_list_parses():
    rows = [{"id": "a", "pid": 10, "status": "running"}, {"id": "b", "pid": 0, "status": "stopped"}]
    rr = RecordingRunner().when("list", stdout=json.dumps(rows).encode())
    assert runc(rr).list() == rows


def test_delete_unknown_is_false_start_error_raises():
    rr = RecordingRunner().when("delete", returncode=1, stderr=b'container "x" does not exist') \
                          .when("start", returncode=1, stderr=b"cannot start a container that has stopped")
    r = runc(rr)
    assert r.delete("x") is False
    with pytest.raises(RuncError, match="cannot start"):
        r.start("x")


def test_exec_returns_code_and_output(tmp_path):
    rr = RecordingRunner().when("exec", returncode=3, stdout=b"out+err\n")
    code, out = runc(rr).exec("c1", ["cat", "/etc/hostname"], timeout=2, pid_file=str(tmp_path / "p"))
    assert (code, out) == (3, b"out+err\n")
    assert rr.calls == [R + ["exec", "--pid-file", str(tmp_path / "p"), "c1", "cat", "/etc/hostname"]]


def test_exec_timeout_kills_the_process_in_the_container(tmp_path):
    pid_file = tmp_path / "exec.pid"
    pid_file.write_text("4242")          # as runc writes it once the process runs
    rr = RecordingRunner().when("exec", timeout=True)
    killed = []
    with pytest.raises(TimeoutError):
        runc(rr).exec("c1", ["sleep", "100"], timeout=0.5, pid_file=str(pid_file),
                      kill=lambda pid, sig: killed.append((pid, sig)))
    assert killed == [(4242, signal.SIGKILL)]
    assert not pid_file.exists()
    assert issubclass(CommandTimeout, TimeoutError)


def test_signal_name():
    assert signal_name(15) == "TERM" and signal_name(9) == "KILL" and signal_name(999) == "999"


# ---------------------------------------------------------------------------- conmon
PATHS = MonitorPaths(bundle="/d/c/b", container_pidfile="/d/c/b/pidfile", log_path="/logs/0.log",
                     exit_dir="/d/exits", persist_dir="/d/c/persist", socket_dir="/d/sockets",
                     stderr_path="/d/c/conmon.stderr")


def test_conmon_argv():
    argv = conmon_argv(container_id="c1", name="ns_pod_web_0", runc_binary="/usr/sbin/runc",
                       runc_root="/d/runc", paths=PATHS, log_size_max=1024)
    assert argv == ["/usr/bin/conmon", "--api-version", "1", "-c", "c1", "-u", "c1", "-n", "ns_pod_web_0",
                    "-r", "/usr/sbin/runc", "--runtime-arg", "--root=/d/runc", "-b", "/d/c/b",
                    "-p", "/d/c/b/pidfile", "-l", "k8s-file:/logs/0.log", "--log-size-max", "1024",
                    "--exit-dir", "/d/exits", "--persist-dir", "/d/c/persist",
                    "--socket-dir-path", "/d/sockets", "--sync"]
    no_max = conmon_argv(container_id="c1", name="n", runc_binary="r", runc_root="/x", paths=PATHS,
                         log_size_max=0, log_level="debug")
    assert "--log-size-max" not in no_max and no_max[-2:] == ["--log-level", "debug"]


@pytest.mark.parametrize("raw, expected", [
    (b'{"data": 18992}\n', (18992, "")),
    (b'{"data": -1, "message": "runc create failed: boom"}\n', (-1, "runc create failed: boom")),
    (b"", (-1, "conmon exited without reporting a pid")),
    (b"garbage\n", (-1, "conmon sent an unreadable sync message: 'garbage'")),
])
def test_sync_message(raw, expected):
    assert parse_sync_message(raw) == expected


# ---------------------------------------------------------------------------- cgroups / mounts
HYBRID = """\
25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
40 24 0:5 / /proc rw - proc proc rw
"""
V2 = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_join_makes_a_group_ready_once_and_again_after_it_was_removed(tmp_path):
    # Plain directories stand in for cgroupfs: what join() writes is what the kernel reads.
    cpuset, mem = tmp_path / "cpuset", tmp_path / "memory"
    for d in (cpuset / "shoal" / "mon", mem):
        d.mkdir(parents=True)
    (cpuset / "cpuset.cpus").write_text("0-1\n")
    (cpuset / "cpuset.mems").write_text("0\n")
    for d in (cpuset / "shoal", cpuset / "shoal" / "mon"):         # as the kernel makes them
        (d / "cpuset.cpus").write_text("")
        (d / "cpuset.mems").write_text("")
    cg = Cgroups([Hierarchy(str(cpuset), 1, ("cpuset",)), Hierarchy(str(mem), 1, ("memory",))])
    cg.join(101, "/shoal/mon")
    for d in (cpuset, mem):
        assert (d / "shoal" / "mon" / "cgroup.procs").read_text() == "101"
    assert (cpuset / "shoal" / "mon" / "cpuset.cpus").read_text() == "0-1"
    (cpuset / "shoal" / "mon" / "cpuset.mems").write_text("")     # not looked at again
    cg.join(102, "/shoal/mon")
    assert (cpuset / "shoal" / "mon" / "cgroup.procs").read_text() == "102"
    assert (cpuset / "shoal" / "mon" / "cpuset.mems").read_text() == ""
    shutil.rmtree(mem / "shoal")                                    # removed behind its back
    cg.join(103, "/shoal/mon")
    assert (mem / "shoal" / "mon" / "cgroup.procs").read_text() == "103"


def test_parse_cgroup_mounts():
    hs = parse_cgroup_mounts(HYBRID)
    assert [(h.mountpoint, h.version, h.controllers) for h in hs] == [
        ("/sys/fs/cgroup/unified", 2, ()),
        ("/sys/fs/cgroup/systemd", 1, ("name=systemd",)),
        ("/sys/fs/cgroup/memory", 1, ("memory",)),
        ("/sys/fs/cgroup/cpu,cpuacct", 1, ("cpu", "cpuacct")),
    ]
    assert cgroup_mode(hs) == "hybrid"
    assert cgroup_mode(parse_cgroup_mounts(V2)) == "v2"
    assert cgroup_mode(parse_cgroup_mounts(HYBRID.replace("cgroup2 cgroup2", "tmpfs tmpfs"))) == "v1"


def test_overlay_options_reverse_layers():
    assert overlay_options(["/l/base", "/l/mid", "/l/top"], upper="/c/u", work="/c/w") == \
        "lowerdir=/l/top:/l/mid:/l/base,upperdir=/c/u,workdir=/c/w"


@pytest.mark.parametrize("layers, match", [
    ([], "at least one layer"),
    (["/l/a,b"], "contains ','"),
    ([f"/very/long/layer/store/path/{i:064d}" for i in range(60)], "over the kernel's 4095"),
])
def test_overlay_options_invalid(layers, match):
    with pytest.raises(ValueError, match=match):
        overlay_options(layers, upper="/u", work="/w")


def test_mountpoints_decodes_escapes():
    text = "100 30 0:50 / /data/with\\040space rw - overlay overlay rw\n"
    assert mountpoints(text) == {"/data/with space"}


MOUNTINFO = """\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
25 22 0:21 / /run rw,nosuid - tmpfs tmpfs rw,mode=755
26 25 0:22 / /run/shoal rw - tmpfs tmpfs rw,size=65536k
27 22 0:23 / /data/with\\040space rw - xfs /dev/vdb rw
"""


@pytest.mark.parametrize("path, fstype", [
    ("/", "ext4"), ("/var/lib/shoal", "ext4"), ("/run", "tmpfs"), ("/run/shoal/agent/runc", "tmpfs"),
    ("/runner", "ext4"),                      # a prefix of the string, not of the path
    ("/data/with space/x", "xfs"),
])
def test_fs_type_of_the_longest_mount_holding_a_path(path, fstype):
    assert fs_type_of(path, MOUNTINFO) == fstype


def test_writable_layers_without_state_are_removed_when_the_runtime_opens(tmp_path):
    from shoal.agent.runtime.runc_runtime import RuncRuntime
    root, state = tmp_path / "disk", tmp_path / "state"
    for cid in ("kept-web-0", "orphan-web-0", "runc-only-0"):
        (root / "rw" / cid / "upper").mkdir(parents=True)
    (state / "containers" / "kept-web-0").mkdir(parents=True)     # our record: a live container
    (tmp_path / "runc" / "runc-only-0").mkdir(parents=True)       # runc knows it: a create cut short
    RuncRuntime(str(root), state_dir=str(state), runc_root=str(tmp_path / "runc"), runc_binary="/bin/true")
    assert sorted(p.name for p in (root / "rw").iterdir()) == ["kept-web-0", "runc-only-0"]


# ---------------------------------------------------------------------------- state assembly
REC = DiskRecord(id="c1", labels={"shoal.io/pod-uid": "u"}, log_path="/l/0.log", started_at=100.0)


@pytest.mark.parametrize("rec_kw, runc_state, oom_counter, expected", [
    ({}, {"status": "created", "pid": 7}, None, dict(status="created", pid=7)),
    ({}, {"status": "running", "pid": 7}, None, dict(status="running", pid=7)),
    ({}, {"status": "paused", "pid": 7}, None, dict(status="running", pid=7)),
    (dict(exit_code=3, finished_at=105.0), {"status": "stopped", "pid": 0}, None,
     dict(status="stopped", exit_code=3, finished_at=105.0, pid=None)),
    # runc forgot it (deleted, or its state dir lost): the exit file still tells
    (dict(exit_code=143, finished_at=105.0), None, None, dict(status="stopped", exit_code=143)),
    (dict(exit_code=137, oom_file=True), {"status": "stopped"}, None, dict(status="stopped", oom_killed=True)),
    (dict(exit_code=137), {"status": "stopped"}, 1, dict(status="stopped", oom_killed=True)),
    (dict(exit_code=137), {"status": "stopped"}, 0, dict(status="stopped", oom_killed=False)),
    # exited, conmon alive but its exit file not written yet: not "stopped" yet
    (dict(monitor_alive=True), {"status": "stopped", "pid": 0}, None, dict(status="running", pid=None)),
    # exited and the monitor is gone without a word: stopped, code unknown
    ({}, {"status": "stopped", "pid": 0}, None, dict(status="stopped", exit_code=None)),
    ({}, None, None, dict(status="unknown")),
    # exited at once: the exit file's mtime (tick resolution) can read before the start
    (dict(exit_code=3, finished_at=99.998), {"status": "stopped"}, None,
     dict(status="stopped", started_at=99.998, finished_at=99.998)),
    (dict(exit_code=3, finished_at=105.0), {"status": "stopped"}, None, dict(started_at=100.0)),
])
def test_assemble_state(rec_kw, runc_state, oom_counter, expected):
    from dataclasses import replace
    st = assemble_state(replace(REC, **rec_kw), runc_state, oom_counter=oom_counter)
    for k, v in expected.items():
        assert getattr(st, k) == v, k
    assert st.labels == REC.labels and st.log_path == "/l/0.log"
    assert st.started_at == expected.get("started_at", 100.0)


@pytest.mark.parametrize("text, expected", [("137", 137), ("0\n", 0), ("", None), ("x", None)])
def test_parse_exit_file(text, expected):
    assert parse_exit_file(text) == expected


@pytest.mark.parametrize("ts, expected", [
    ("2026-11-22T10:55:14.5Z", 1795344914.5),
    ("2026-11-22T10:55:14Z", 1795344914.0),
    ("2026-11-22T11:55:14.25+01:00", 1795344914.25),
    ("", None), ("nonsense", None),
])
def test_runc_created_at(ts, expected):
    got = runc_created_at({"created": ts})
    assert (got is None and expected is None) or abs(got - expected) < 1e-6


# ---------------------------------------------------------------- state from our own records
class _NoCgroups:
    def exists(self, path: str) -> bool:
        return False


def _runtime_with_record(tmp_path, cid: str, *, init: dict | None, started: bool, exit_code: int | None = None,
                         in_runc: bool = True):
    from shoal.agent.runtime.runc_runtime import RuncRuntime
    rr = RecordingRunner().when("state", returncode=1, stderr=b'container does not exist')
    rt = RuncRuntime(str(tmp_path / "rt"), runc_root=str(tmp_path / "runc"), runner=rr, cgroups=_NoCgroups())
    cdir = tmp_path / "rt" / "containers" / cid
    cdir.mkdir(parents=True)
    (cdir / "meta.json").write_text(json.dumps({"id": cid, "labels": {"a": "b"}, "created_at": 1.0}))
    if init is not None:
        (cdir / "init.json").write_text(json.dumps(init))
    if started:
        (cdir / "started").write_text("2.0")
    if exit_code is not None:
        (tmp_path / "rt" / "exits" / cid).write_text(str(exit_code))
    if in_runc:
        (tmp_path / "runc" / cid).mkdir(parents=True)
    return rt, rr


def test_state_of_a_started_container_comes_from_proc_without_runc(tmp_path):
    import os

    from shoal.agent.runtime.runc_runtime import proc_start_time
    me = os.getpid()     # a live process standing in for the container's init
    rt, rr = _runtime_with_record(tmp_path, "c1", init={"pid": me, "start": proc_start_time(me)}, started=True)
    st = rt.state("c1")
    assert st.status == "running" and st.pid == me and st.labels == {"a": "b"}
    assert rr.calls == []          # no `runc state` fork


def test_state_of_an_exited_container_reads_the_exit_file_without_runc(tmp_path):
    import subprocess
    p = subprocess.Popen(["true"])
    p.wait()                       # a pid that is gone
    rt, rr = _runtime_with_record(tmp_path, "c2", init={"pid": p.pid, "start": 1}, started=True, exit_code=3)
    st = rt.state("c2")
    assert st.status == "stopped" and st.exit_code == 3
    assert rr.calls == []


def test_a_recycled_pid_is_not_the_container(tmp_path):
    import os

    from shoal.agent.runtime.runc_runtime import proc_alive, proc_start_time
    me = os.getpid()
    assert proc_alive(me, proc_start_time(me)) and not proc_alive(me, None)
    assert not proc_alive(me, proc_start_time(me) + 1)     # same pid, another process
    rt, rr = _runtime_with_record(tmp_path, "c3", init={"pid": me, "start": proc_start_time(me) + 1},
                                  started=True, exit_code=0)
    assert rt.state("c3").status == "stopped"


def test_runc_is_asked_only_when_the_records_cannot_tell(tmp_path):
    import os

    from shoal.agent.runtime.runc_runtime import proc_start_time
    me = os.getpid()
    # created, not started: only runc knows whether `runc start` ran
    rt, rr = _runtime_with_record(tmp_path, "c4", init={"pid": me, "start": proc_start_time(me)}, started=False)
    rt.state("c4")
    assert [c for c in rr.calls if "state" in c] != []
    # a container nobody made: no fork either
    rr.calls.clear()
    assert rt.state("nobody") is None and rr.calls == []


def test_a_monitor_that_exits_while_observed_leaves_its_exit_code(tmp_path, monkeypatch):
    """conmon writes the exit file, then exits. Checking the monitor before reading the file
    means a monitor seen dead has always left its file; the other order could report an exit
    without code or time, which restarted a crash-looping container without its back-off."""
    import subprocess

    from shoal.agent.runtime import runc_runtime
    p = subprocess.Popen(["true"])
    p.wait()
    rt, rr = _runtime_with_record(tmp_path, "c5", init={"pid": p.pid, "start": 1}, started=True)
    (tmp_path / "rt" / "containers" / "c5" / "conmon.pid").write_text("12345")

    def conmon_finishes_now(pid, cid):
        (tmp_path / "rt" / "exits" / cid).write_text("1")   # its last act
        return False
    monkeypatch.setattr(runc_runtime, "monitor_alive", conmon_finishes_now)
    st = rt.state("c5")
    assert st.status == "stopped" and st.exit_code == 1 and st.finished_at is not None


@pytest.mark.parametrize("given, passed", [
    (["--root=/r", "create", "--bundle", "/b", "--pid-file", "/b/pid", "c1"],
     ["--root=/r", "run", "--detach", "--bundle", "/b", "--pid-file", "/b/pid", "c1"]),
    # only conmon's verb changes, not a later argument that happens to read "create"
    (["--root=/r", "create", "--bundle", "/b b", "create"], ["--root=/r", "run", "--detach", "--bundle", "/b b", "create"]),
    (["--root=/r", "delete", "c1"], ["--root=/r", "delete", "c1"]),
])
def test_run_shim_turns_conmons_create_into_run_detach(tmp_path, given, passed):
    import subprocess
    from shoal.agent.runtime.monitor import install_run_shim
    fake = tmp_path / "fake runc"          # a path with a space: the shim quotes it
    fake.write_text('#!/bin/sh\nfor a do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    shim = install_run_shim(str(tmp_path / "runc-run"), str(fake))
    assert install_run_shim(shim, str(fake)) == shim          # idempotent
    out = subprocess.run([shim, *given], capture_output=True, check=True).stdout.decode()
    assert out.splitlines() == passed
