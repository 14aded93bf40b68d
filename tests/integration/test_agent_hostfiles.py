"""Issue 17, "Host files": a started agent's data dir is root's alone (agent/hostfiles.py)."""
import os
import stat

import pytest

from agent_harness import AgentHarness

pytestmark = pytest.mark.integration


def test_agent_data_dir_pods_and_credentials_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / "agent-node-1" / "pods").mkdir(parents=True)     # as an older agent left them: 0755
        os.chmod(tmp_path / "agent-node-1", 0o755)
        with AgentHarness(tmp_path) as h:
            n = h.start_agent("node-1")
            modes = {p: stat.S_IMODE(os.stat(n.data_dir / p).st_mode)
                     for p in (".", "pods", "credentials.json")}
    finally:
        os.umask(old)
    # the data dir the user named keeps its mode when it exists (it may be shared: agent/hostfiles.py);
    # what is secret below it is private on its own
    assert modes == {".": 0o755, "pods": 0o700, "credentials.json": 0o600}
