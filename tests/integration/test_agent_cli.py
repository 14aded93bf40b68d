"""`shoal agent --fake-runtime` as a process: joins, registers, stops cleanly on SIGTERM."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent_harness import wait
from shoal.testkit.apiserver import start_test_server

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_shoal_agent_hollow_process_joins_registers_and_stops_on_sigterm(tmp_path):
    with start_test_server(tmp_path) as srv:
        admin = srv.client()
        cmd = [sys.executable, "-c", "import sys; from shoal.cli.main import main; sys.exit(main(sys.argv[1:]))",
               "agent", "--server", srv.url, "--token", srv.join_token, "--node-name", "hollow-1",
               "--address", "127.0.0.1", "--data-dir", str(tmp_path / "hollow-1"), "--fake-runtime",
               "--kubelet-port", "0", "--lease-interval", "0.5"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            node = wait("the node to register", lambda: admin.get("nodes", "hollow-1"))
            assert node["status"]["nodeInfo"]["containerRuntimeVersion"] == "fake://0"
            assert (tmp_path / "hollow-1" / "credentials.json").exists()
            admin.patch("nodes", "hollow-1", {"spec": {"podCIDR": "10.244.3.0/24"}})
            admin.create("pods", {"metadata": {"name": "p", "namespace": "default"},
                                  "spec": {"nodeName": "hollow-1",
                                           "containers": [{"name": "c", "image": "reg/app:v1"}]}})
            wait("the pod to run", lambda: admin.get("pods", "p", "default")["status"].get("phase") == "Running")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
        assert proc.returncode == 0, out
        assert "containers keep running" in out
