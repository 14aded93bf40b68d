"""Hollow agents: many `Agent`s on the fakes against one API server.

    python3 bench/hollow_agents.py --nodes 10 --pods 200

Starts a test API server (temp SQLite), N agents with FakeRuntime/FakeNetwork/
FakeImageStore, creates P pods bound round-robin to them (spec.nodeName set,
no scheduler), and prints one JSON line per figure: time until all pods are
Running+Ready, time until all are deleted and confirmed, and the process RSS.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shoal.testkit.apiserver import start_test_server  # noqa: E402
from shoal.agent.agent import Agent, AgentOptions  # noqa: E402
from shoal.agent.fakes import FakeImageStore, FakeNetwork, FakeProbeExecutor, FakeRuntime  # noqa: E402
from shoal.agent.join import ensure_credentials, serving_tls  # noqa: E402


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, start_test_server(Path(tmp)) as srv:
        admin = srv.client()
        agents = []
        t0 = time.monotonic()
        for i in range(a.nodes):
            name = f"hollow-{i}"
            d = Path(tmp) / name
            creds = ensure_credentials(srv.url, srv.join_token, name, d)
            rt = FakeRuntime()
            ag = Agent(creds.client(user_agent=f"shoal-agent/{name}"), node_name=name, address="127.0.0.1",
                       data_dir=d, images=FakeImageStore(), runtime=rt, network=FakeNetwork(),
                       options=AgentOptions(kubelet_port=0, kubelet_tls=serving_tls(d),
                                            probe_executor=FakeProbeExecutor(rt), watch_timeout=30,
                                            sync_threads=4, timer_threads=2))
            ag.start()
            agents.append(ag)
            admin.patch("nodes", name, {"spec": {"podCIDR": f"10.244.{i}.0/24"}})
        emit(figure="hollow_agents_registered", nodes=a.nodes, seconds=round(time.monotonic() - t0, 3))
        try:
            t0 = time.monotonic()
            for j in range(a.pods):
                admin.create("pods", {"metadata": {"name": f"p{j}", "namespace": "default"},
                                      "spec": {"nodeName": f"hollow-{j % a.nodes}",
                                               "containers": [{"name": "c", "image": "reg/app:v1"}]}})
            created = time.monotonic() - t0

            def count_ready() -> int:
                items = admin.list("pods", "default")["items"]
                return sum(1 for p in items if any(c["type"] == "Ready" and c["status"] == "True"
                                                   for c in (p.get("status") or {}).get("conditions") or []))
            while count_ready() < a.pods:
                if time.monotonic() - t0 > a.timeout:
                    emit(figure="hollow_pods_ready", error="timeout", ready=count_ready(), pods=a.pods)
                    return 1
                time.sleep(0.1)
            emit(figure="hollow_pods_ready", nodes=a.nodes, pods=a.pods, create_seconds=round(created, 3),
                 seconds=round(time.monotonic() - t0, 3))
            t0 = time.monotonic()
            for j in range(a.pods):
                admin.delete("pods", f"p{j}", "default")
            while admin.list("pods", "default")["items"]:
                if time.monotonic() - t0 > a.timeout:
                    emit(figure="hollow_pods_deleted", error="timeout")
                    return 1
                time.sleep(0.1)
            emit(figure="hollow_pods_deleted", nodes=a.nodes, pods=a.pods, seconds=round(time.monotonic() - t0, 3))
            emit(figure="hollow_process_max_rss_mib", nodes=a.nodes, pods=a.pods,
                 value=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                 note="API server and all agents in one process")
        finally:
            for ag in agents:
                ag.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
