"""The README's first command, for real: `bash scripts/demo.sh` in a throwaway data dir.

It installs (idempotent, fast when everything is there), starts its own registry on a free
port, builds and pushes the demo images, starts `shoal up --detach` on a free API port
with a host network of its own (SHOAL_UP_ARGS), applies manifests/demo.yaml (a copy
naming the test registry), rolls web out to v2 by digest and waits for flaky's liveness
restart. Run twice: the second run must succeed too (the README promises idempotence).
The finalizer runs `shoal down`, stops the registry by its pid file, and fails the test if
any process, mount, netns or link of this cluster is left.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.userpath_fixtures import (REPO, free_tcp_port, isolated_host_network, stop_up_cluster,
                                         strip_ansi, table_column)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


@pytest.fixture
def demo_env():
    # A short path: conmon's attach sockets live under the data dir (108-byte socket paths).
    data = Path(tempfile.mkdtemp(prefix="shoal-demo-", dir="/tmp"))
    net = isolated_host_network()
    import dataclasses
    import json
    (data / "hostnet.json").write_text(json.dumps(dataclasses.asdict(net)))
    env = {**os.environ, "SHOAL_DATA": str(data), "SHOAL_REGISTRY_PORT": str(free_tcp_port()),
           "SHOAL_API_PORT": str(free_tcp_port()), "KUBECONFIG": str(data / "kubeconfig"),
           "SHOAL_UP_ARGS": " ".join(net.up_args())}
    try:
        yield env
    finally:
        problems = stop_up_cluster(data)
        shutil.rmtree(data, ignore_errors=True)
        assert not problems, "the demo left these behind after `shoal down`:\n" + "\n".join(problems)


def run_demo(env: dict[str, str]) -> tuple[str, float]:
    t0 = time.monotonic()
    r = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    took = time.monotonic() - t0
    out = strip_ansi(r.stdout)
    if r.returncode != 0:
        log = Path(env["SHOAL_DATA"]) / "up.log"
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-40:]) if log.exists() else "(no up.log)"
        pytest.fail(f"scripts/demo.sh exited {r.returncode} after {took:.0f} s\n--- stdout (end)\n{out[-6000:]}\n"
                    f"--- stderr (end)\n{strip_ansi(r.stderr)[-3000:]}\n--- {log} (end)\n{tail}")
    return out, took


def assert_demo_showed_everything(out: str, *, run: str) -> None:
    assert "version v2" in out, f"{run}: curl of a web pod did not answer 'version v2':\n{out[-4000:]}"
    assert 'deployment "web" successfully rolled out' in out, f"{run}: no completed rollout of web:\n{out[-4000:]}"
    restarts = table_column(out, header_has="RESTARTS", row_prefix="flaky-", column="RESTARTS")
    assert restarts, f"{run}: no flaky pod in a `get pods` table:\n{out[-4000:]}"
    assert int(restarts[-1]) >= 1, f"{run}: flaky shows RESTARTS {restarts[-1]} in the last table:\n{out[-4000:]}"
    assert "Done. The cluster keeps running" in out, f"{run}: the closing hints are missing:\n{out[-2000:]}"


def test_demo_script_twice(demo_env):
    out1, t1 = run_demo(demo_env)
    assert_demo_showed_everything(out1, run="first run")
    out2, t2 = run_demo(demo_env)
    assert_demo_showed_everything(out2, run="second run")
    assert "registry already running" in out2, "the second run started a second registry"
    assert "already running" in out2.split("shoal up --detach", 1)[-1], "the second run started a second cluster"
    print(f"demo.sh: first run {t1:.0f} s, second run {t2:.0f} s")
