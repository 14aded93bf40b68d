"""Run the `shoal` CLI in-process against a test API server, and small wait helpers for CLI tests."""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass

from shoal.testkit import apiserver as testing
from shoal.cli.main import main


@dataclass
class Result:
    rc: int
    out: str
    err: str


def shoal(srv, *argv: str, stdin: str | None = None, kubeconfig=None) -> Result:
    out, err = io.StringIO(), io.StringIO()
    rc = main(["--kubeconfig", str(kubeconfig or srv.kubeconfig), *argv], stdout=out, stderr=err,
              stdin=io.StringIO(stdin or ""))
    return Result(rc, out.getvalue(), err.getvalue())


class LiveOutput(io.StringIO):
    """A stdout the test can poll while the CLI runs in another thread."""

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()

    def write(self, s):
        with self._lock:
            return super().write(s)

    def text(self) -> str:
        with self._lock:
            return self.getvalue()


def shoal_in_thread(srv, *argv: str) -> tuple[threading.Thread, LiveOutput, io.StringIO, dict]:
    out, err, box = LiveOutput(), io.StringIO(), {}

    def run():
        box["rc"] = main(["--kubeconfig", str(srv.kubeconfig), *argv], stdout=out, stderr=err)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out, err, box


def wait_until(cond, *, timeout: float = 30.0, what: str = "condition"):
    """Poll `cond()` until it returns a truthy value; fail with `what` after `timeout` seconds."""
    return testing.wait_for(cond, timeout=timeout, what=what)
