"""A thin wrapper over the `runc` binary, and the seam every command goes through.

`CommandRunner` is the one place the runtime package starts short-lived
programs (runc, nsenter). `SubprocessRunner` is the real one; `RecordingRunner`
records argv and answers from a script, so the argv of every verb is unit
tested without root (`tests/unit/test_runtime_wrapper.py`).

`Runc` always passes the global `--root` so several agents on one machine
(the multi-host lab) keep separate state directories, and logs every call's
argv at debug level. Verbs raise `RuncError` (argv, exit code, runc's stderr)
except where "already gone" is an expected outcome: `kill` of a stopped
container and `state` of an unknown one.

Long-lived processes (conmon) are not started here: see `agent.runtime.monitor`.
"""
from __future__ import annotations

import json
import logging
import os
import signal as _signal
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Protocol

log = logging.getLogger(__name__)

DEFAULT_RUNC = "/usr/sbin/runc"


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""


class CommandTimeout(TimeoutError):
    def __init__(self, argv: list[str], timeout: float, output: bytes = b""):
        super().__init__(f"timed out after {timeout:g}s: {' '.join(argv)}")
        self.argv, self.timeout, self.output = argv, timeout, output


class CommandRunner(Protocol):
    def run(self, argv: list[str], *, timeout: float | None = None,
            merge_stderr: bool = False) -> CommandResult:
        """Run argv to completion. On timeout the process is killed and
        CommandTimeout raised (with what it printed so far)."""


class SubprocessRunner:
    def run(self, argv: list[str], *, timeout: float | None = None,
            merge_stderr: bool = False) -> CommandResult:
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                               timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:   # subprocess.run has killed and reaped it
            raise CommandTimeout(argv, timeout or 0.0, e.output or b"") from None
        return CommandResult(argv, p.returncode, p.stdout or b"", p.stderr or b"")


@dataclass
class RecordingRunner:
    """Records every argv; answers with the first scripted result whose
    matcher accepts the argv (a callable, or a substring of the joined argv),
    else `default`. A scripted `CommandTimeout` instance is raised."""
    script: list[tuple[Callable[[list[str]], bool] | str, CommandResult | CommandTimeout]] = field(default_factory=list)
    default_returncode: int = 0
    calls: list[list[str]] = field(default_factory=list)

    def when(self, match: Callable[[list[str]], bool] | str, *, returncode: int = 0,
             stdout: bytes = b"", stderr: bytes = b"", timeout: bool = False) -> "RecordingRunner":
        result: CommandResult | CommandTimeout
        result = CommandTimeout([], 0.0) if timeout else CommandResult([], returncode, stdout, stderr)
        self.script.append((match, result))
        return self

    def run(self, argv: list[str], *, timeout: float | None = None,
            merge_stderr: bool = False) -> CommandResult:
        self.calls.append(list(argv))
        joined = " ".join(argv)
        for match, result in self.script:
            hit = match(argv) if callable(match) else match in joined
            if hit:
                if isinstance(result, CommandTimeout):
                    raise CommandTimeout(argv, timeout or 0.0, result.output)
                return CommandResult(list(argv), result.returncode, result.stdout, result.stderr)
        return CommandResult(list(argv), self.default_returncode)


class RuncError(Exception):
    def __init__(self, argv: list[str], returncode: int, stderr: bytes):
        msg = stderr.decode(errors="replace").strip()
        super().__init__(f"{' '.join(argv)} failed (exit {returncode}): {msg}")
        self.argv, self.returncode, self.stderr = argv, returncode, msg


def _gone(stderr: bytes) -> bool:
    s = stderr.decode(errors="replace")
    return "does not exist" in s or "not running" in s or "container not found" in s


def signal_name(sig: int) -> str:
    """runc accepts names or numbers; names make the debug log readable."""
    try:
        return _signal.Signals(sig).name.removeprefix("SIG")
    except ValueError:
        return str(int(sig))


class Runc:
    def __init__(self, *, root: str, binary: str = DEFAULT_RUNC,
                 runner: CommandRunner | None = None):
        self.root = root
        self.binary = binary
        self.runner: CommandRunner = runner or SubprocessRunner()

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", self.root, *args]

    def _run(self, *args: str, timeout: float | None = 30.0, merge_stderr: bool = False) -> CommandResult:
        argv = self.argv(*args)
        log.debug("runc: %s", argv)
        return self.runner.run(argv, timeout=timeout, merge_stderr=merge_stderr)

    def _check(self, r: CommandResult) -> CommandResult:
        if r.returncode != 0:
            raise RuncError(r.argv, r.returncode, r.stderr)
        return r

    # ------------------------------------------------------------------ verbs
    def start(self, container_id: str) -> None:
        self._check(self._run("start", container_id))

    def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> bool:
        """Signal the init process (every process with all_processes).
        Returns False, without raising, if it had already exited or is unknown."""
        args = ["kill", *(["--all"] if all_processes else []), container_id, signal_name(sig)]
        r = self._run(*args)
        if r.returncode != 0:
            if _gone(r.stderr):
                log.debug("runc kill %s: already gone: %s", container_id, r.stderr.decode(errors="replace").strip())
                return False
            self._check(r)
        return True

    def delete(self, container_id: str, *, force: bool = False) -> bool:
        """`runc delete` (without -f for a stopped container: -f polls, ~100 ms).
        Returns False if runc did not know the container."""
        r = self._run("delete", *(["--force"] if force else []), container_id)
        if r.returncode != 0:
            if "does not exist" in r.stderr.decode(errors="replace"):
                return False
            self._check(r)
        return True

    def state(self, container_id: str) -> dict | None:
        r = self._run("state", container_id)
        if r.returncode != 0:
            if "does not exist" in r.stderr.decode(errors="replace"):
                return None
            self._check(r)
        return json.loads(r.stdout)

    def list(self) -> list[dict]:
        r = self._check(self._run("list", "--format", "json"))
        out = r.stdout.strip()
        return (json.loads(out) or []) if out else []

    def exec_argv(self, container_id: str, argv: list[str], *, pid_file: str) -> list[str]:
        """The argv of `runc exec` (process env, cwd and user come from the
        container's config.json)."""
        return self.argv("exec", "--pid-file", pid_file, container_id, *argv)

    def exec(self, container_id: str, argv: list[str], *, timeout: float, pid_file: str,
             kill: Callable[[int, int], None] = os.kill) -> tuple[int, bytes]:
        """Run argv in the container; (exit code, stdout+stderr). On timeout
        the runc process is killed by the runner and the process it started
        inside the container (found through --pid-file) by SIGKILL here —
        killing runc alone would leave it running in the container."""
        full = self.exec_argv(container_id, argv, pid_file=pid_file)
        log.debug("runc: %s", full)
        try:
            r = self.runner.run(full, timeout=timeout, merge_stderr=True)
        except CommandTimeout as e:
            try:
                with open(pid_file) as f:
                    pid = int(f.read().strip() or 0)
                if pid > 0:
                    kill(pid, _signal.SIGKILL)
            except (FileNotFoundError, ValueError, ProcessLookupError):
                pass
            raise CommandTimeout(full, timeout, e.output) from None
        finally:
            try:
                os.unlink(pid_file)
            except FileNotFoundError:
                pass
        return r.returncode, r.stdout
