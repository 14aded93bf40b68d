"""Draining before SIGTERM against a real API server and the real controllers: two agents on
the fake runtime, each with a service proxy on a recording nft runner whose transactions the
test can hold back (a slow node). A deleted pod behind a Service gets its SIGTERM only once
the endpointslice controller has marked it terminating (revision R) and both nodes publish a
position ≥ R on their Node; a node that never catches up holds it until the cap, then a
Warning event says why; a node the node lifecycle marks NotReady is not waited for; a pod no
Service selects is stopped at once."""
from __future__ import annotations

import threading
import time

import pytest

from shoal.agent.agent import Agent, AgentOptions
from shoal.agent.drainplan import ANN_APPLIED, published_revision
from shoal.agent.fakes import FakeImageStore, FakeNetwork, FakeProbeExecutor, FakeRuntime
from shoal.agent.join import ensure_credentials, serving_tls
from shoal.agent.network.runner import CommandError, RecordingRunner
from shoal.controller.manager import Options
from shoal.testkit.apiserver import start_test_server, wait_for

pytestmark = pytest.mark.integration


class Nft:
    """A recording nft runner; `hold()` makes every later transaction block until `release()`."""

    def __init__(self):
        self.open = threading.Event()
        self.open.set()
        self.runner = RecordingRunner(respond=self.respond)

    def respond(self, argv, stdin):
        if argv[:4] == ["nft", "-t", "-j", "list"]:
            raise CommandError(argv, 1, "Error: No such file or directory")
        self.open.wait(60)
        return ""

    def hold(self):
        self.open.clear()

    def release(self):
        self.open.set()


class Cluster:
    def __init__(self, tmp, *, node_grace=None, **agent_opts):
        self.tmp = tmp
        opts = Options(node_grace_period=node_grace, eviction_delay=600.0) if node_grace else None
        self.srv = start_test_server(tmp, controllers=True, controller_options=opts)
        self.admin = self.srv.client()
        self.agents: dict[str, Agent] = {}
        self.runtimes: dict[str, FakeRuntime] = {}
        self.nft: dict[str, Nft] = {}
        self.agent_opts = agent_opts

    def start_agent(self, name):
        d = self.tmp / name
        client = ensure_credentials(self.srv.url, self.srv.join_token, name, d).client(user_agent=f"agent/{name}")
        rt, nft = FakeRuntime(), Nft()
        kw = dict(kubelet_port=0, kubelet_tls=serving_tls(d), watch_timeout=2, probe_executor=FakeProbeExecutor(rt),
                  lease_renew_interval=0.3, node_status_interval=1.0, relist_interval=0.1, kill_wait_inline=0.2,
                  service_table=f"shoal-svc-{name}")
        kw.update(self.agent_opts)
        a = Agent(client, node_name=name, address="127.0.0.1", data_dir=d, images=FakeImageStore(), runtime=rt,
                  network=FakeNetwork(), options=AgentOptions(**kw), service_proxy_runner=nft.runner)
        self.agents[name], self.runtimes[name], self.nft[name] = a, rt, nft
        a.start()
        return a

    def close(self):
        for n in self.nft.values():
            n.release()
        for a in self.agents.values():
            a.stop()
        self.admin.close()
        self.srv.stop()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def web_pod(name, node, labels=None):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels or {"app": "web"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 30,
                     "containers": [{"name": "web", "image": "reg/web:v1", "ports": [{"containerPort": 8080}]}]}}


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}


def sigterms(rt: FakeRuntime) -> list[str]:
    return [c[1] for c in rt.calls if c[0] == "kill" and c[2] == 15]


def terminating_rv(admin, pod_name) -> int | None:
    """The resourceVersion of the web slice once it lists `pod_name` as terminating."""
    for s in admin.list("endpointslices", "default", label_selector="kubernetes.io/service-name=web")["items"]:
        for e in s.get("endpoints") or []:
            if (e.get("targetRef") or {}).get("name") == pod_name and e["conditions"].get("terminating"):
                return int(s["metadata"]["resourceVersion"])
    return None


def ready_endpoints(admin) -> set[str]:
    return {(e.get("targetRef") or {}).get("name")
            for s in admin.list("endpointslices", "default", label_selector="kubernetes.io/service-name=web")["items"]
            for e in s.get("endpoints") or [] if e["conditions"].get("ready")}


def positions(admin) -> dict[str, int | None]:
    return {n["metadata"]["name"]: published_revision(n) for n in admin.list("nodes")["items"]}


def start_two(c: Cluster, pods=("web-a", "web-b")):
    # two endpoints: a terminating one leaves the rules (a last one would stay, as serving-terminating)
    c.start_agent("node-1")
    c.start_agent("node-2")
    c.admin.create("services", SERVICE, "default")
    for p in pods:
        c.admin.create("pods", web_pod(p, "node-1"), "default")
    wait_for(lambda: ready_endpoints(c.admin) == set(pods), timeout=30, what=f"{pods} ready endpoints")
    # both proxies have the endpoint in their rules and say so on their Nodes
    slice_rv = max(int(s["metadata"]["resourceVersion"]) for s in c.admin.list("endpointslices", "default")["items"])
    wait_for(lambda: all((v or 0) >= slice_rv for v in positions(c.admin).values()), timeout=30,
             what="both nodes publishing their proxy's position")


def test_sigterm_waits_until_every_proxy_has_applied_the_terminating_endpoint(cluster):
    c = cluster
    start_two(c)
    c.nft["node-2"].hold()                      # node-2's proxy is slow: its next transaction hangs
    c.admin.delete("pods", "web-a", "default")
    r = wait_for(lambda: terminating_rv(c.admin, "web-a"), timeout=20, what="web-a marked terminating")
    wait_for(lambda: (positions(c.admin)["node-1"] or 0) >= r, timeout=20, what="node-1 past R")
    time.sleep(1.0)                             # node-1 is done; node-2 is not: the SIGTERM waits
    assert sigterms(c.runtimes["node-1"]) == []
    assert (positions(c.admin)["node-2"] or 0) < r
    assert c.agents["node-1"].drain.waiting()
    c.nft["node-2"].release()
    wait_for(lambda: sigterms(c.runtimes["node-1"]), timeout=20, what="the SIGTERM once node-2 caught up")
    assert (positions(c.admin)["node-2"] or 0) >= r         # it was published before the SIGTERM went
    wait_for(lambda: [p["metadata"]["name"] for p in c.admin.list("pods", "default")["items"]] == ["web-b"],
             timeout=20, what="web-a gone")
    assert not any(e["reason"] == "ServiceDrainTimeout" for e in c.admin.list("events", "default")["items"])


def test_a_pod_no_service_selects_is_stopped_at_once(cluster):
    c = cluster
    start_two(c)
    c.nft["node-2"].hold()                      # would hold a drain forever, were there one
    c.admin.create("pods", web_pod("batch", "node-1", labels={"app": "batch"}), "default")
    wait_for(lambda: any(s.status == "running" for s in c.runtimes["node-1"].list()
                         if s.labels.get("shoal.io/pod-name") == "batch"), timeout=20, what="batch running")
    c.admin.delete("pods", "batch", "default")
    # a held SIGTERM would wait for node-2 up to the cap (10 s)
    wait_for(lambda: not any(p["metadata"]["name"] == "batch" for p in c.admin.list("pods", "default")["items"]),
             timeout=5, what="batch stopped and gone without waiting for node-2")
    assert c.agents["node-1"].drain.waiting() == []


def test_a_proxy_that_never_catches_up_holds_the_sigterm_until_the_cap(tmp_path):
    c = Cluster(tmp_path, drain_cap=1.5)
    try:
        start_two(c)
        c.nft["node-2"].hold()
        t0 = time.monotonic()
        c.admin.delete("pods", "web-a", "default")
        wait_for(lambda: sigterms(c.runtimes["node-1"]), timeout=20, what="the SIGTERM after the cap")
        assert time.monotonic() - t0 >= 1.5
        ev = wait_for(lambda: [e for e in c.admin.list("events", "default")["items"]
                               if e["reason"] == "ServiceDrainTimeout"], timeout=10, what="the Warning event")
        assert ev[0]["type"] == "Warning" and "node-2" in ev[0]["message"], ev[0]["message"]
        assert ev[0]["involvedObject"]["name"] == "web-a"
    finally:
        c.close()


def test_a_node_marked_not_ready_is_not_waited_for(tmp_path):
    c = Cluster(tmp_path, node_grace=1.5, drain_cap=30.0)
    try:
        start_two(c)
        c.nft["node-2"].hold()
        c.agents["node-2"].stop()               # its lease lapses: the node lifecycle marks it Unknown
        c.admin.delete("pods", "web-a", "default")
        wait_for(lambda: sigterms(c.runtimes["node-1"]), timeout=25, what="the SIGTERM once node-2 is NotReady")
        n2 = c.admin.get("nodes", "node-2")
        assert any(x["type"] == "Ready" and x["status"] != "True" for x in n2["status"]["conditions"])
        assert not any(e["reason"] == "ServiceDrainTimeout" for e in c.admin.list("events", "default")["items"])
    finally:
        c.close()


def test_an_agent_without_a_proxy_removes_its_stale_position(tmp_path):
    srv = start_test_server(tmp_path)
    admin = srv.client()
    a = None
    try:
        d = tmp_path / "n1"
        client = ensure_credentials(srv.url, srv.join_token, "n1", d).client()
        rt = FakeRuntime()
        opts = AgentOptions(kubelet_port=0, kubelet_tls=serving_tls(d), watch_timeout=2,
                            probe_executor=FakeProbeExecutor(rt))
        a = Agent(client, node_name="n1", address="127.0.0.1", data_dir=d, images=FakeImageStore(), runtime=rt,
                  network=FakeNetwork(), options=opts)
        a.start()
        # as left by an earlier run of this node with its proxy (through the node's own credential)
        client.patch("nodes", "n1", {"metadata": {"annotations": {ANN_APPLIED: "12"}}})
        wait_for(lambda: ANN_APPLIED not in (admin.get("nodes", "n1")["metadata"].get("annotations") or {}),
                 timeout=20, what="the stale position removed")
    finally:
        if a is not None:
            a.stop()
        admin.close()
        srv.stop()
