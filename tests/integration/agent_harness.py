"""Shared helpers for the agent integration tests: a real API server on a temp
SQLite file, agents joined with the join token and running on the fakes.

`AgentHarness.start_agent(name)` joins `name`, builds an `Agent` on the given
(or new) fakes and starts it; `assign_cidr` plays the controller's IPAM; `wait`
polls a condition with a generous deadline and reports the last value seen
(no timed assertions: only "eventually" and ordering).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client
from shoal.testkit.apiserver import start_test_server, wait_for

from shoal.agent.agent import Agent, AgentOptions
from shoal.agent.join import ensure_credentials, serving_tls
from shoal.agent.fakes import FakeImageStore, FakeNetwork, FakeProbeExecutor, FakeRuntime


def wait(what: str, fn: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    return wait_for(fn, timeout=timeout, interval=interval, what=what, tolerate=(errors.ApiError,))


@dataclass
class Node:
    name: str
    agent: Agent
    runtime: FakeRuntime
    network: FakeNetwork
    images: FakeImageStore
    client: Client
    data_dir: Path


@dataclass
class AgentHarness:
    tmp: Path
    srv: Any = None
    admin: Client | None = None
    nodes: list[Node] = field(default_factory=list)

    def __enter__(self):
        self.srv = start_test_server(self.tmp)
        self.admin = self.srv.client()
        return self

    def __exit__(self, *exc):
        for n in self.nodes:
            if n.agent.started:
                n.agent.stop()
            n.client.close()
        self.admin.close()
        self.srv.stop()

    def start_agent(self, name: str = "node-1", *, runtime: FakeRuntime | None = None,
                    network: FakeNetwork | None = None, images: FakeImageStore | None = None,
                    address: str = "127.0.0.1", **opts) -> Node:
        data_dir = self.tmp / f"agent-{name}"
        creds = ensure_credentials(self.srv.url, self.srv.join_token, name, data_dir)
        client = creds.client(user_agent=f"shoal-agent/{name}")
        runtime = runtime or FakeRuntime()
        network = network or FakeNetwork()
        images = images or FakeImageStore()
        kw = dict(kubelet_port=0, kubelet_tls=serving_tls(data_dir), watch_timeout=2,
                  probe_executor=FakeProbeExecutor(runtime), lease_renew_interval=0.3, node_status_interval=1.0,
                  relist_interval=0.1, housekeeping_interval=1.0, backoff_initial=0.3, backoff_max=2.4,
                  kill_wait_inline=0.5)
        kw.update(opts)
        agent = Agent(client, node_name=name, address=address, data_dir=data_dir, images=images,
                      runtime=runtime, network=network, options=AgentOptions(**kw))
        node = Node(name, agent, runtime, network, images, client, data_dir)
        self.nodes.append(node)
        agent.start()
        return node

    def assign_cidr(self, node: str, cidr: str = "10.244.1.0/24") -> None:
        self.admin.patch("nodes", node, {"spec": {"podCIDR": cidr}})

    def create_pod(self, name: str, node: str, *, containers: list[dict] | None = None,
                   annotations: dict | None = None, **spec) -> dict:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default", "annotations": annotations or {}},
               "spec": {"nodeName": node, "containers": containers or [{"name": "web", "image": "reg/web:v1"}],
                        **spec}}
        return self.admin.create("pods", pod)

    def pod(self, name: str) -> dict:
        return self.admin.get("pods", name, "default")

    def cstatus(self, name: str, container: str = "web") -> dict:
        for cs in (self.pod(name).get("status") or {}).get("containerStatuses") or []:
            if cs["name"] == container:
                return cs
        return {}

    def events(self, name: str) -> list[tuple[str, str, str]]:
        items = self.admin.list("events", "default")["items"]
        return [(e["type"], e["reason"], e["message"]) for e in
                sorted(items, key=lambda e: e["metadata"].get("resourceVersion", "0"))
                if e["involvedObject"].get("name") == name]

    def gone(self, name: str) -> bool:
        try:
            self.pod(name)
            return False
        except errors.NotFound:
            return True
