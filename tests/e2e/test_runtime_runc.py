"""RuncRuntime end to end, as root, with real runc, conmon, overlayfs and cgroups.

Every test gets its own root dir, runc --root and cgroup parent, and a
finalizer that SIGKILLs and removes whatever is left (and fails the test if
something could not be cleaned). Waits poll with generous deadlines; the only
timing here is logged (create+start latency), never asserted.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from shoal.agent.interfaces import ContainerConfig
from shoal.agent.runtime import RuncRuntime
from shoal.agent.runtime.logs import read_log
from shoal.agent.runtime.mounts import is_mounted
from shoal.testkit.runtime import busybox_image, teardown_runtime
from shoal.testkit import apiserver as testing

pytestmark = pytest.mark.e2e
log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return busybox_image(str(tmp_path_factory.mktemp("img") / "layer"))


@pytest.fixture
def env(tmp_path):
    # state_dir apart from root_dir, as an agent with --run-dir has them (tmpfs / disk)
    dirs = dict(root_dir=str(tmp_path / "rt"), state_dir=str(tmp_path / "state"), runc_root=str(tmp_path / "runc"),
                cgroup_parent=f"/shoal-e2e-{uuid.uuid4().hex[:8]}")
    made: list[RuncRuntime] = []

    def new_runtime(**kw) -> RuncRuntime:
        rt = RuncRuntime(dirs["root_dir"], state_dir=dirs["state_dir"], runc_root=dirs["runc_root"],
                         cgroup_parent=dirs["cgroup_parent"], **kw)
        made.append(rt)
        return rt

    yield {"new": new_runtime, "tmp": tmp_path, **dirs}
    if made:
        problems = teardown_runtime(made[-1])
        assert not problems, problems


def config(image, tmp_path, name: str, argv: list[str], **kw) -> ContainerConfig:
    cid = f"0123456789ab-{name}-0"
    return ContainerConfig(id=cid, pod_uid="0123456789abcdef", pod_name=f"pod-{name}", namespace="default",
                           container_name=name, attempt=0, image=image, argv=argv, env=["PATH=/bin"],
                           log_path=str(tmp_path / "logs" / name / "0.log"),
                           labels={"shoal.io/pod-uid": "0123456789abcdef", "shoal.io/container": name}, **kw)


def wait_for(pred, *, timeout: float = 15.0, what: str = "condition"):
    return testing.wait_for(pred, timeout=timeout, interval=0.02, what=what)


def stopped(rt, cid):
    st = rt.state(cid)
    return st if st and st.status == "stopped" else None


def log_text(path: str) -> str:
    try:
        return b"".join(read_log(path)).decode()
    except FileNotFoundError:
        return ""


def test_lifecycle_logs_exec_sigterm_remove(env, image):
    rt = env["new"]()
    cfg = config(image, env["tmp"], "web",
                 ["sh", "-c", "trap 'echo got-term; exit 143' TERM; echo hi; sleep 1000 & wait"],
                 hostname="web-host", memory_bytes=64 * 2**20, cpu_millis=500)
    t0 = time.monotonic()
    rt.create(cfg)
    t1 = time.monotonic()
    rt.start(cfg.id)
    t2 = time.monotonic()
    log.info("create %.1f ms, start %.1f ms, create+start %.1f ms",
             (t1 - t0) * 1000, (t2 - t1) * 1000, (t2 - t0) * 1000)

    st = rt.state(cfg.id)
    assert st.status == "running" and st.pid and os.path.exists(f"/proc/{st.pid}")
    # records and bundle in the state dir, the writable layer in the root dir
    assert rt.container_dir(cfg.id).startswith(env["state_dir"] + "/")
    assert os.path.isfile(os.path.join(rt.bundle_dir(cfg.id), "config.json"))
    assert os.path.isdir(os.path.join(env["root_dir"], "rw", cfg.id, "upper"))
    assert not os.path.exists(os.path.join(env["root_dir"], "containers", cfg.id))
    assert st.labels == cfg.labels and st.started_at and st.log_path == cfg.log_path
    wait_for(lambda: "hi\n" in log_text(cfg.log_path), what="'hi' in the log")

    assert rt.exec(cfg.id, ["cat", "/etc/hostname"], 10) == (0, b"web-host\n")
    code, out = rt.exec(cfg.id, ["sh", "-c", "echo out; echo err >&2; exit 4"], 10)
    assert code == 4 and b"out\n" in out and b"err\n" in out
    # Docker's capability set, no more (0xa80425fb), and the limits reached the cgroup
    _, status = rt.exec(cfg.id, ["grep", "CapEff", "/proc/self/status"], 10)
    assert status.split()[-1] == b"00000000a80425fb"
    mem = Path("/sys/fs/cgroup/memory") / env["cgroup_parent"].lstrip("/") / cfg.id / "memory.limit_in_bytes"
    if mem.exists():
        assert int(mem.read_text()) == 64 * 2**20
    # the monitor sits in its own cgroup, not ours
    conmon_pid = int(Path(rt.container_dir(cfg.id), "conmon.pid").read_text())
    assert f"{env['cgroup_parent']}/shoal-monitors" in Path(f"/proc/{conmon_pid}/cgroup").read_text()

    with pytest.raises(RuntimeError, match="is running"):
        rt.remove(cfg.id)

    rt.kill(cfg.id, signal.SIGTERM)
    st = wait_for(lambda: stopped(rt, cfg.id), what="stop after SIGTERM")
    assert st.exit_code == 143 and not st.oom_killed and st.finished_at >= st.started_at
    assert "got-term" in log_text(cfg.log_path)
    rt.kill(cfg.id, signal.SIGKILL)          # already exited: no error

    rootfs = rt.rootfs_dir(cfg.id)
    rt.remove(cfg.id)
    assert not is_mounted(rootfs)
    assert cfg.id not in Path("/proc/self/mountinfo").read_text()
    assert rt.runc.state(cfg.id) is None
    assert not rt.cgroups.exists(rt.cgroup_path(cfg.id))
    assert not os.path.exists(rt.container_dir(cfg.id))
    assert not os.path.exists(rt.rw_dir(cfg.id))
    assert not os.path.exists(os.path.join(rt.exit_dir, cfg.id))
    assert rt.state(cfg.id) is None and rt.list() == []
    assert os.path.exists(cfg.log_path)          # the log is the caller's to delete
    rt.remove(cfg.id)                            # idempotent


def test_exit_code(env, image):
    rt = env["new"]()
    cfg = config(image, env["tmp"], "crash", ["sh", "-c", "echo bye; exit 3"])
    rt.create(cfg)
    assert rt.state(cfg.id).status == "created"
    rt.start(cfg.id)
    st = wait_for(lambda: stopped(rt, cfg.id), what="exit")
    assert st.exit_code == 3 and not st.oom_killed
    assert log_text(cfg.log_path) == "bye\n"


def test_run_starts_in_one_step_after_ready(env, image):
    rt = env["new"]()
    cfg = config(image, env["tmp"], "once", ["sh", "-c", "echo bye; exit 3"])
    seen = {}

    def ready():
        # conmon is there (its move into the monitors' cgroup runs meanwhile); runc has not run yet
        seen["runc"] = rt.runc.state(cfg.id)
        seen["conmon"] = bool(_processes_naming(cfg.id))

    rt.run(cfg, ready=ready)
    assert seen == {"runc": None, "conmon": True}
    st = wait_for(lambda: stopped(rt, cfg.id), what="exit")
    assert st.exit_code == 3 and st.started_at and st.finished_at >= st.started_at
    assert log_text(cfg.log_path) == "bye\n"

    cfg2 = config(image, env["tmp"], "stay", ["sleep", "1000"])
    rt.run(cfg2)
    st = rt.state(cfg2.id)
    assert st.status == "running" and st.pid and os.path.exists(f"/proc/{st.pid}")
    conmon_pid = int(Path(rt.container_dir(cfg2.id), "conmon.pid").read_text())
    assert f"{env['cgroup_parent']}/shoal-monitors" in Path(f"/proc/{conmon_pid}/cgroup").read_text()
    # the container's init is conmon's child, as with create + start
    ppid = int(Path(f"/proc/{st.pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert ppid == conmon_pid


def test_run_undone_when_ready_fails(env, image):
    rt = env["new"]()
    cfg = config(image, env["tmp"], "never", ["sleep", "1000"])

    def ready():
        raise OSError("the pod network could not be made")

    with pytest.raises(RuntimeError, match="pod network could not be made"):
        rt.run(cfg, ready=ready)
    assert rt.runc.state(cfg.id) is None and rt.state(cfg.id) is None and rt.list() == []
    assert not os.path.exists(rt.container_dir(cfg.id))
    assert cfg.id not in Path("/proc/self/mountinfo").read_text()
    assert not rt.cgroups.exists(rt.cgroup_path(cfg.id))
    assert _processes_naming(cfg.id) == []     # conmon was killed and reaped


def test_run_undone_when_the_monitor_cannot_be_placed(env, image):
    """The move of conmon into the monitors' cgroup runs beside the container's start; when it
    fails (here once the container is already running), nothing is left: no monitor outside
    its cgroup, no container, no mount."""
    rt = env["new"]()
    cfg = config(image, env["tmp"], "unplaced", ["sleep", "1000"])
    real_join = rt.cgroups.join
    started = []

    def join(pid, rel):
        if rel == rt.monitors_cgroup:
            wait_for(lambda: started or rt.runc.state(cfg.id), what="the container's runtime to run")
            started.append(True)
            raise PermissionError(13, "Permission denied", f"{rel}/cgroup.procs")
        return real_join(pid, rel)

    rt.cgroups.join = join
    with pytest.raises(RuntimeError, match="moving conmon .* into its cgroup failed"):
        rt.run(cfg)
    assert started
    assert rt.runc.state(cfg.id) is None and rt.state(cfg.id) is None and rt.list() == []
    assert not os.path.exists(rt.container_dir(cfg.id))
    assert cfg.id not in Path("/proc/self/mountinfo").read_text()
    assert not rt.cgroups.exists(rt.cgroup_path(cfg.id))
    assert _processes_naming(cfg.id) == []     # conmon and the container's processes are gone


def _processes_naming(text: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(p))
            except OSError:
                pass
    return out


def test_user_from_image_passwd(env, image):
    rt = env["new"]()
    cfg = config(image, env["tmp"], "nobody", ["sleep", "1000"], user="nobody")
    rt.create(cfg)
    rt.start(cfg.id)
    assert rt.exec(cfg.id, ["sh", "-c", "id -u; id -g; echo $HOME"], 10) == (0, b"65534\n65534\n/home/nobody\n")


def test_oom_killed(env, image):
    rt = env["new"]()
    # `tail` keeps the newline-free 100 MiB stream in memory: real RSS past the 20 MiB limit.
    cfg = config(image, env["tmp"], "hog", ["sh", "-c", "head -c 100m /dev/zero | tail"],
                 memory_bytes=20 * 2**20)
    rt.create(cfg)
    rt.start(cfg.id)
    st = wait_for(lambda: stopped(rt, cfg.id), what="the OOM kill")
    assert st.oom_killed is True and st.exit_code == 137
    assert os.path.exists(os.path.join(rt.container_dir(cfg.id), "persist", "oom"))   # conmon's file


def test_exec_timeout_kills_the_exec_process(env, image):
    rt = env["new"]()
    cfg = config(image, env["tmp"], "slow", ["sleep", "1000"])
    rt.create(cfg)
    rt.start(cfg.id)
    with pytest.raises(TimeoutError):
        rt.exec(cfg.id, ["sleep", "777"], 0.5)
    procs = Path("/sys/fs/cgroup/pids") / env["cgroup_parent"].lstrip("/") / cfg.id / "cgroup.procs"
    wait_for(lambda: len(procs.read_text().split()) == 1, what="the timed-out exec to be gone")


def test_log_rotation_keeps_previous_generation(env, image):
    rt = env["new"]()
    rt.log_size_max = 2048            # ~40 records of ~52 bytes
    cfg = config(image, env["tmp"], "chatty", ["sh", "-c",
                 "for i in $(seq 1 30); do echo line-$i; done; "
                 "while [ ! -e /tmp/go ]; do sleep 0.05; done; "
                 "for i in $(seq 31 60); do echo line-$i; done"])
    rt.create(cfg)
    rt.start(cfg.id)
    wait_for(lambda: "line-30\n" in log_text(cfg.log_path), what="the first 30 lines")
    rt.state(cfg.id)                   # a relist: the runtime notes the file conmon writes
    Path(rt.rootfs_dir(cfg.id), "tmp", "go").touch()
    wait_for(lambda: stopped(rt, cfg.id), what="exit")     # state() also notices the rotation
    assert os.path.exists(cfg.log_path + ".1")
    assert os.path.getsize(cfg.log_path) < 2048
    expected = "".join(f"line-{i}\n" for i in range(1, 61))
    assert log_text(cfg.log_path) == expected
    assert b"".join(read_log(cfg.log_path, tail_lines=3)) == b"line-58\nline-59\nline-60\n"
    rt.remove(cfg.id)
    assert not os.path.exists(cfg.log_path + ".cur")


AGENT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    from shoal.agent.runtime import RuncRuntime
    from shoal.testkit.runtime import busybox_image
    from shoal.agent.interfaces import ContainerConfig
    rt = RuncRuntime({root!r}, state_dir={state!r}, runc_root={runc!r}, cgroup_parent={cg!r})
    img = busybox_image({layer!r})
    out = {{}}
    for name, argv in (("stay", ["sleep", "1000"]),
                       ("leave", ["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 7"])):
        cid = "0123456789ab-" + name + "-0"
        cfg = ContainerConfig(id=cid, pod_uid="u", pod_name="p", namespace="default", container_name=name,
                              attempt=0, image=img, argv=argv, env=[], log_path={logs!r} + "/" + name + ".log",
                              labels={{"shoal.io/container": name}})
        if name == "stay":
            rt.create(cfg)
            rt.start(cid)
        else:
            rt.run(cfg)           # the pod worker's one-step path
        out[name] = rt.state(cid).pid
    print(json.dumps(out), flush=True)
    sys.stdin.read()          # "run" until killed
""")


def test_containers_and_exit_codes_survive_agent_sigkill(env, image):
    layer = image.layers[0]
    script = AGENT.format(repo=str(REPO), root=env["root_dir"], state=env["state_dir"], runc=env["runc_root"], cg=env["cgroup_parent"],
                          layer=layer, logs=str(env["tmp"] / "logs"))
    agent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             start_new_session=True)
    try:
        pids = json.loads(agent.stdout.readline())
    finally:
        os.killpg(agent.pid, signal.SIGKILL)      # kill -9 of the agent's whole process group
        agent.wait()
        agent.stdin.close()
        agent.stdout.close()
    rt = env["new"]()                             # the restarted agent: same dirs, new object
    # a container exits while no agent is running
    stay, leave = "0123456789ab-stay-0", "0123456789ab-leave-0"
    Path(rt.rootfs_dir(leave), "tmp", "go").touch()
    states = wait_for(lambda: (lambda s: s if s[leave].status == "stopped" else None)(
        {st.id: st for st in rt.list()}), what="the container to exit")
    assert states[stay].status == "running" and states[stay].pid == pids["stay"]
    assert states[stay].labels == {"shoal.io/container": "stay"}
    assert states[leave].exit_code == 7 and states[leave].labels == {"shoal.io/container": "leave"}
    # the adopted one is still fully managed
    assert rt.exec(stay, ["true"], 10)[0] == 0
    rt.kill(stay, signal.SIGKILL)
    assert wait_for(lambda: stopped(rt, stay)).exit_code == 137
    for cid in (stay, leave):
        rt.remove(cid)
    assert rt.list() == []


# ------------------------------------------------------------------ securityContext and defaults
def _run_and_log(rt, cfg) -> tuple[int, str]:
    rt.create(cfg)
    rt.start(cfg.id)
    st = wait_for(lambda: stopped(rt, cfg.id), what=f"{cfg.container_name} to finish")
    return st.exit_code, log_text(cfg.log_path)


def test_defaults_seccomp_pids_limit_and_cgroup_namespace(env, image):
    rt = env["new"]()
    cfg = config(image, env["tmp"], "defaults", ["sh", "-c",
                 "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; cat /proc/self/cgroup | grep pids; "
                 "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max"])
    code, out = _run_and_log(rt, cfg)
    assert code == 0, out
    assert "Seccomp:\t2" in out          # filter mode: the RuntimeDefault profile is loaded
    assert "NoNewPrivs:\t1" in out
    assert ":pids:/\n" in out            # its own cgroup namespace: its cgroup is its root
    assert out.rstrip().endswith("4096")


def test_seccomp_unconfined_on_request(env, image):
    from shoal.agent.interfaces import ContainerSecurity
    rt = env["new"]()
    cfg = config(image, env["tmp"], "unconfined", ["grep", "^Seccomp:", "/proc/self/status"],
                 security=ContainerSecurity(seccomp="Unconfined"))
    assert _run_and_log(rt, cfg) == (0, "Seccomp:\t0\n")


def test_capabilities_drop_all_and_read_only_root(env, image):
    from shoal.agent.interfaces import ContainerSecurity
    rt = env["new"]()
    cfg = config(image, env["tmp"], "locked", ["sh", "-c",
                 "grep CapEff /proc/self/status; touch /x 2>&1; echo touch=$?"],
                 security=ContainerSecurity(caps_drop=("ALL",), readonly_rootfs=True))
    code, out = _run_and_log(rt, cfg)
    assert "CapEff:\t0000000000000000" in out, out
    assert "Read-only file system" in out and "touch=1" in out


def test_run_as_non_root_and_privileged_are_refused_before_anything_runs(env, image):
    from shoal.agent.interfaces import ConfigRefused, ContainerSecurity
    rt = env["new"]()
    root = config(image, env["tmp"], "root", ["true"], security=ContainerSecurity(run_as_non_root=True))
    with pytest.raises(ConfigRefused, match="runAsNonRoot is set and the container would run as root"):
        rt.create(root)
    assert rt.state(root.id) is None
    nobody = config(image, env["tmp"], "nobody2", ["id", "-u"], user="nobody",
                    security=ContainerSecurity(run_as_non_root=True))
    assert _run_and_log(rt, nobody) == (0, "65534\n")
    priv = config(image, env["tmp"], "priv", ["true"], security=ContainerSecurity(privileged=True))
    with pytest.raises(ConfigRefused, match="privileged containers are not allowed on this node"):
        rt.create(priv)
    assert rt.state(priv.id) is None


def test_localhost_seccomp_profile(env, image):
    from shoal.agent.interfaces import ConfigRefused, ContainerSecurity
    profiles = env["tmp"] / "seccomp"
    profiles.mkdir()
    (profiles / "no-mkdir.json").write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))
    rt = env["new"](seccomp_dir=str(profiles))
    cfg = config(image, env["tmp"], "local", ["sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?"],
                 security=ContainerSecurity(seccomp="Localhost", seccomp_localhost="no-mkdir.json"))
    code, out = _run_and_log(rt, cfg)
    assert "Operation not permitted" in out and "rc=1" in out, out
    escape = config(image, env["tmp"], "escape", ["true"],
                    security=ContainerSecurity(seccomp="Localhost", seccomp_localhost="../../etc/passwd"))
    with pytest.raises(ConfigRefused, match="resolves outside"):
        rt.create(escape)
