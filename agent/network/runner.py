"""The command seam: the two host tools the network shells out to (`nft`, `ethtool`).

`Runner.run(argv, input=...)` runs one command in the node namespace and returns
its stdout, or raises `CommandError` naming the command, exit code and stderr.
`SubprocessRunner(netns=NAME)` targets a named namespace through
`nsenter --net=/run/netns/NAME` (lighter than `ip netns exec`, which also
remounts /sys); `RecordingRunner` records argv/stdin and answers from a script
for unit tests.
"""
from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

from shoal.agent.network.netlink import NETNS_RUN_DIR

log = logging.getLogger(__name__)


class CommandError(RuntimeError):
    def __init__(self, argv: list[str], code: int, stderr: str):
        self.argv = argv
        self.code = code
        self.stderr = stderr
        super().__init__(f"{' '.join(argv)} exited {code}: {stderr.strip() or '(no stderr)'}")


@runtime_checkable
class Runner(Protocol):
    def run(self, argv: list[str], *, input: str | None = None) -> str: ...


class SubprocessRunner:
    def __init__(self, *, netns: str | None = None, run_dir: str = NETNS_RUN_DIR, timeout: float = 30.0):
        self.netns = netns
        self.run_dir = run_dir
        self.timeout = timeout

    def run(self, argv: list[str], *, input: str | None = None) -> str:
        full = list(argv)
        if self.netns:
            full = ["nsenter", f"--net={self.run_dir}/{self.netns}", "--"] + full
        log.debug("exec %s%s", " ".join(full), " (with stdin)" if input is not None else "")
        p = subprocess.run(full, input=input, capture_output=True, text=True, timeout=self.timeout)
        if p.returncode != 0:
            raise CommandError(full, p.returncode, p.stderr)
        return p.stdout


@dataclass
class RecordingRunner:
    """Records (argv, input); `respond(argv, input)` may return stdout or raise."""
    respond: Callable[[list[str], str | None], str] | None = None
    calls: list[tuple[list[str], str | None]] = field(default_factory=list)

    def run(self, argv: list[str], *, input: str | None = None) -> str:
        self.calls.append((list(argv), input))
        return self.respond(list(argv), input) if self.respond else ""
