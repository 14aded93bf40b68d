"""The agent's service proxy against a real API server: its node credential lists and watches
Services, EndpointSlices and Nodes, and every change reaches the (recording) nft runner as one
whole-table transaction."""
from __future__ import annotations

import pytest

from shoal.agent.agent import Agent, AgentOptions
from shoal.agent.fakes import FakeImageStore, FakeNetwork, FakeProbeExecutor, FakeRuntime
from shoal.agent.join import ensure_credentials, serving_tls
from shoal.agent.network.runner import CommandError, RecordingRunner
from shoal.testkit.apiserver import start_test_server, wait_for

pytestmark = pytest.mark.integration


def nft_fake(argv, stdin):
    if argv[:4] == ["nft", "-t", "-j", "list"]:
        raise CommandError(argv, 1, "Error: No such file or directory")
    return ""


def service(name):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def endpointslice(name, svc, ips):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}, "nodeName": "node-2"} for ip in ips]}


def test_the_agents_service_proxy_follows_services_and_endpointslices(tmp_path):
    srv = start_test_server(tmp_path)
    admin = srv.client()
    nft = RecordingRunner(respond=nft_fake)
    agent = None
    try:
        data_dir = tmp_path / "agent"
        client = ensure_credentials(srv.url, srv.join_token, "node-1", data_dir).client()
        rt = FakeRuntime()
        agent = Agent(client, node_name="node-1", address="127.0.0.1", data_dir=data_dir, images=FakeImageStore(),
                      runtime=rt, network=FakeNetwork(),
                      options=AgentOptions(kubelet_port=0, kubelet_tls=serving_tls(data_dir), watch_timeout=2,
                                           probe_executor=FakeProbeExecutor(rt), service_table="shoal-svc-test"),
                      service_proxy_runner=nft)
        agent.start()
        proxy = agent.service_proxy
        admin.patch("nodes", "node-1", {"spec": {"podCIDR": "10.244.1.0/24"}})

        def scripts():
            return [stdin for argv, stdin in nft.calls if argv == ["nft", "-f", "-"]]
        # start-up: the table is observed (absent), then built once everything is listed
        wait_for(lambda: proxy.generation >= 1, timeout=20, what="the first sync")
        assert nft.calls[0][0] == ["nft", "-t", "-j", "list", "table", "ip", "shoal-svc-test"]
        wait_for(lambda: "10.244.1.0/24" in scripts()[-1], timeout=20, what="the node's pod CIDR in the rules")

        svc = admin.create("services", service("web"))
        vip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
        wait_for(lambda: f"{vip} . tcp . 80 : goto reject-chain" in scripts()[-1], timeout=20,
                 what="the new Service, refused while it has no endpoints")
        assert f"tcp . {node_port} : goto reject-chain" in scripts()[-1]
        slc = admin.create("endpointslices", endpointslice("web-a", "web", ["10.244.2.5", "10.244.2.6"]))
        wait_for(lambda: "dnat to 10.244.2.6:8080" in scripts()[-1], timeout=20, what="the endpoints' rules")
        last = scripts()[-1]
        assert f"{vip} . tcp . 80 : goto service-" in last and "dnat to 10.244.2.5:8080" in last
        assert f"tcp . {node_port} : goto external-" in last
        assert proxy.wait_applied("default", "web-a", slc["metadata"]["resourceVersion"], timeout=10)
        assert all(s.startswith("add table ip shoal-svc-test\n") for s in scripts())
        assert not any("delete table" in s for s in scripts()[1:])        # converged, never recreated

        admin.delete("services", "web", "default")
        admin.delete("endpointslices", "web-a", "default")
        wait_for(lambda: vip not in scripts()[-1] and "dnat" not in scripts()[-1], timeout=20,
                 what="the Service's rules gone")
        wait_for(lambda: getattr(proxy.applied_slice("default", "web-a"), "deleted", False), timeout=20,
                 what="the slice's deletion applied")
    finally:
        if agent is not None:
            agent.stop()
        admin.close()
        srv.stop()
    # the rules outlive the agent by default
    assert not any("delete table" in (stdin or "") for _, stdin in nft.calls)
