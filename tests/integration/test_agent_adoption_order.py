"""Adoption after an agent restart must not race the first pod syncs.

Found by tests/e2e/test_agent_real.py: a restarted agent woke its pod workers from
the first pod list *before* relisting the runtime, so a worker could sync knowing
no containers, plan attempt 0 again, and replace the live container (SIGKILL and
re-create) — and an exit that happened while the agent was down was lost. Here the
runtime's list() is slow, which makes that order certain without the fix.
"""
from __future__ import annotations

import time

import pytest

from shoal.agent.fakes import FakeRuntime

from agent_harness import AgentHarness, wait

pytestmark = pytest.mark.integration


class SlowListRuntime(FakeRuntime):
    """A FakeRuntime whose list() takes a while, as `runc list` under load does."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def list(self):
        time.sleep(self.delay)
        return super().list()


@pytest.fixture
def h(tmp_path):
    with AgentHarness(tmp_path) as harness:
        yield harness


def running(h, name):
    cs = h.cstatus(name)
    return cs if "running" in (cs.get("state") or {}) else None


def test_restarted_agent_adopts_before_its_workers_first_sync(h):
    rt = SlowListRuntime(0.0)
    n = h.start_agent("node-1", runtime=rt)
    h.assign_cidr("node-1")
    h.create_pod("web", "node-1")
    h.create_pod("exits", "node-1")
    wait("running", lambda: running(h, "web") and running(h, "exits"))
    web_id = running(h, "web")["containerID"].removeprefix("runc://")
    exits_id = running(h, "exits")["containerID"].removeprefix("runc://")
    pid = rt.state(web_id).pid
    n.agent.stop()
    rt.crash(exits_id, exit_code=7)          # while the agent is down
    rt.delay = 0.5
    calls_before = len(rt.calls)
    h.start_agent("node-1", runtime=rt, network=n.network, images=n.images)
    cs = wait("the exit made while down reported", lambda: (c := h.cstatus("exits")).get("restartCount") == 1 and c)
    assert cs["lastState"]["terminated"]["exitCode"] == 7
    time.sleep(1.0)        # several relists and syncs of the new agent
    web = running(h, "web")
    assert web["restartCount"] == 0 and web["containerID"] == f"runc://{web_id}"
    assert rt.state(web_id).pid == pid
    assert not [c for c in rt.calls[calls_before:] if len(c) > 1 and c[1] == web_id], "web was touched"
