"""The per-container monitor: Debian's `conmon` (2.1, API version 1).

Why a monitor at all: `runc create` leaves the container's init process as a
child of whoever ran it. If that were the agent, an agent restart would orphan
every container and lose its exit code. conmon is a small C daemon (≈2 MB
RSS) that stays the parent (a subreaper) of `runc create`'s container, copies
its stdout/stderr into a k8s-file log, and when it exits writes the exit code
to `<exit-dir>/<id>` and `<persist-dir>/exit`, and an `oom` file into the
persist dir when the container's cgroup saw an OOM kill. All of that is on
disk, so an agent started later reads it back.

How it is started (found by experiment on this machine, conmon 2.1.6):
- `--socket-dir-path` is required in practice: the default /var/run/crio does
  not exist here and conmon exits 1 ("Failed to create symlink").
- `--sync`: conmon forks only once, so the process we spawn *is* the monitor
  and the agent reaps it as soon as it exits (`RuncRuntime._reap`). Without
  it conmon double-forks and every exit leaves a zombie under PID 1 until
  init gets round to it (this VM's init reaps only now and then). Monitors of
  an agent that died are re-parented to init, as they would be anyway.
  conmon calls setsid() itself, so SIGKILL of the agent or its process group
  does not reach it.
- `_OCI_STARTPIPE=<fd>`: conmon blocks reading it before forking `runc
  create`; the agent releases it once the pod's network is up (`ready`). The
  agent moves conmon into the monitors' cgroup at the same time, on a thread of
  its own, so that a service manager stopping the agent does not take the
  monitors down. The move is not waited for before the release: the first
  migration after a quiet spell waits for an RCU grace period (≈ 20 ms here, on
  cgroup v1), which was a third of a pod's start one at a time. So the runtime
  conmon forks (the run shim, `runc`, which exits once the container runs) may
  start in the agent's cgroup; the container's processes never do (runc puts
  its init into the container's own cgroup before it runs anything of the
  image), and `spawn_monitor` returns only once conmon has been moved.
- `_OCI_SYNCPIPE=<fd>`: after `runc create` conmon writes `{"data": <pid>}`
  (or a negative pid and a "message"), which is when `create` returns.
- conmon only creates; the agent then runs `runc start` — or, for `run`, conmon
  is pointed at the run shim (`install_run_shim`): a short sh script that
  turns conmon's `create` into `runc run --detach`, so one runc process creates
  and starts the container (a separate `runc start` is one more Go process,
  ≈ 7–8 ms here; net 2–9 ms per container in bench/runtime_floor.py). conmon is the same subreaper either way: `runc run --detach` leaves
  the container's init as conmon's child, as `create` does.
- it tries to set its oom_score_adj to -1000 and carries on if it may not
  (no CAP_SYS_RESOURCE here).
"""
from __future__ import annotations

import json
import logging
import os
import select
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

DEFAULT_CONMON = "/usr/bin/conmon"


@dataclass(frozen=True)
class MonitorPaths:
    bundle: str
    container_pidfile: str
    log_path: str
    exit_dir: str
    persist_dir: str
    socket_dir: str
    stderr_path: str


def conmon_argv(*, container_id: str, name: str, runc_binary: str, runc_root: str,
                paths: MonitorPaths, log_size_max: int, conmon_binary: str = DEFAULT_CONMON,
                log_level: str | None = None) -> list[str]:
    argv = [conmon_binary, "--api-version", "1",
            "-c", container_id, "-u", container_id, "-n", name,
            "-r", runc_binary, "--runtime-arg", f"--root={runc_root}",
            "-b", paths.bundle, "-p", paths.container_pidfile,
            "-l", f"k8s-file:{paths.log_path}"]
    if log_size_max > 0:
        argv += ["--log-size-max", str(log_size_max)]
    argv += ["--exit-dir", paths.exit_dir, "--persist-dir", paths.persist_dir,
             "--socket-dir-path", paths.socket_dir, "--sync"]
    if log_level:
        argv += ["--log-level", log_level]
    return argv


class MonitorError(RuntimeError):
    pass


def parse_sync_message(raw: bytes) -> tuple[int, str]:
    """conmon's sync pipe message → (pid, message); pid < 0 is a failure."""
    text = raw.decode(errors="replace").strip()
    if not text:
        return -1, "conmon exited without reporting a pid"
    first = text.splitlines()[0]
    try:
        msg = json.loads(first)
    except json.JSONDecodeError:
        return -1, f"conmon sent an unreadable sync message: {first!r}"
    pid = int(msg.get("data", -1))
    return pid, str(msg.get("message", ""))


# conmon runs `<runtime> --root=R create --bundle B --pid-file P ID`; the shim passes
# everything through but the first `create`, which becomes `run --detach`.
RUN_SHIM = """#!/bin/sh
# Written by shoal's agent: conmon's "create" as "runc run --detach" (create + start in one runc).
seen=
for a do
  shift
  if [ -z "$seen" ] && [ "$a" = create ]; then seen=1; set -- "$@" run --detach; else set -- "$@" "$a"; fi
done
exec {runc} "$@"
"""


def install_run_shim(path: str, runc_binary: str) -> str:
    """Write the run shim for `runc_binary` at `path` (mode 0755) unless it is there
    already with the same text; returns `path`."""
    text = RUN_SHIM.replace("{runc}", shlex.quote(runc_binary))
    try:
        with open(path) as f:
            if f.read() == text and os.access(path, os.X_OK):
                return path
    except FileNotFoundError:
        pass
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return path


class _Placing:
    """`place(pid)` on a thread of its own; `result()` waits for it and returns its
    exception, if any."""

    def __init__(self, place: Callable[[int], None], pid: int):
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(place, pid), name=f"place-{pid}", daemon=True)
        self._thread.start()

    def _run(self, place: Callable[[int], None], pid: int) -> None:
        try:
            place(pid)
        except BaseException as e:  # noqa: BLE001 — handed to the caller by result()
            self._error = e

    def result(self) -> BaseException | None:
        self._thread.join()
        return self._error


def spawn_monitor(argv: list[str], *, stderr_path: str, place: Callable[[int], None],
                  timeout: float = 30.0, ready: Callable[[], None] | None = None) -> tuple[subprocess.Popen, int]:
    """Start conmon; on a thread, let `place(pid)` move it into its cgroup; meanwhile
    call `ready()` (what must be done before the container's runtime runs, e.g. the
    rest of its pod network), release conmon, and wait for the runtime's create (or
    run) to finish; then wait for `place` too. If ready raises, conmon is killed and
    the error propagates; if place raises, conmon is killed once it has answered and
    the error propagates (the caller's clean-up removes the container it made).
    Returns the conmon Popen (the agent's child, to be reaped) and the container's
    pid."""
    sync_r, sync_w = os.pipe()
    start_r, start_w = os.pipe()
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "_OCI_SYNCPIPE": str(sync_w), "_OCI_STARTPIPE": str(start_r)}
    try:
        with open(stderr_path, "wb") as err:
            log.debug("conmon: %s", argv)
            # conmon writes an `oom` marker into its working directory (besides the persist
            # dir): run it in the container's own directory, never the agent's.
            proc = subprocess.Popen(argv, env=env, pass_fds=(sync_w, start_r), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, close_fds=True,
                                    cwd=os.path.dirname(os.path.abspath(stderr_path)))
    except BaseException:
        for fd in (sync_r, sync_w, start_r, start_w):
            os.close(fd)
        raise
    os.close(sync_w)
    os.close(start_r)
    placing = _Placing(place, proc.pid)
    try:
        try:
            if ready is not None:
                ready()
        except BaseException:
            proc.kill()
            proc.wait()
            placing.result()
            raise
        os.write(start_w, b"0")
        os.close(start_w)
        start_w = -1
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MonitorError(f"conmon ({' '.join(argv[:5])} …) did not report the container pid "
                                   f"within {timeout:g}s")
            ready, _, _ = select.select([sync_r], [], [], left)
            if not ready:
                continue
            chunk = os.read(sync_r, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        if start_w >= 0:
            os.close(start_w)
        os.close(sync_r)
        placed = placing.result()
    if placed is not None:
        # A monitor outside its cgroup would die with the agent's service: none at all is
        # better. The caller's clean-up removes the container conmon may have made.
        proc.kill()
        proc.wait()
        raise MonitorError(f"moving conmon (pid {proc.pid}) into its cgroup failed: {placed}") from placed
    pid, message = parse_sync_message(data)
    if pid <= 0:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            with open(stderr_path, "rb") as f:
                stderr = f.read().decode(errors="replace").strip()
        except FileNotFoundError:
            stderr = ""
        detail = "; ".join(x for x in (message, stderr) if x)
        raise MonitorError(f"creating the container failed (conmon exit {proc.returncode}): {detail}")
    return proc, pid


def monitor_alive(pid: int | None, container_id: str) -> bool:
    """Is `pid` still the conmon of `container_id` (not a recycled pid, not a zombie)?"""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat[stat.rfind(b")") + 2:][:1]
    if state == b"Z" or not cmd or not cmd[0].endswith(b"conmon"):
        return False
    return container_id.encode() in cmd
