"""Issue 17 ("Host exposure") end to end: a hostPort never captures the host's own loopback
traffic, and never a port of shoal's own components.

One `agent_fixtures.E2ECluster` (its own bridge, nft table, netns prefix, cgroup parent,
all tagged; `close()` removes them and fails on leftovers). The agent runs in the host's
namespace, as a real one does:

- a pod publishing hostPort P answers on the node's non-loopback address:P, and the host's
  `127.0.0.1:P` does not reach it (before, the output hook DNATed it too);
- a pod asking for the API server's port as its hostPort is not started
  (CreateContainerConfigError naming the port and the component), and the host's
  connections to the API server keep reaching the API server.
"""
from __future__ import annotations

import os
import socket
import subprocess
from urllib.parse import urlsplit

import httpx
import pytest

from agent_fixtures import (E2ECluster, container, cstatus, host_address, http_probe, is_ready, pod_manifest,
                            wait_for, waiting_reason)

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with E2ECluster(tmp_path_factory.mktemp("hostport-exposure")) as c:     # asserts nothing is left behind
        yield c


def node_address() -> str:
    addr = host_address()
    if addr is None:
        pytest.skip("this host has no non-loopback IPv4 address to reach a hostPort on")
    return addr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> str | None:
    try:
        with httpx.Client(trust_env=False, timeout=2) as h:
            r = h.get(url)
        return r.text if r.status_code == 200 else f"HTTP {r.status_code}"
    except httpx.HTTPError:
        return None


def test_host_loopback_is_never_captured_but_the_node_address_is(cluster):
    c = cluster
    addr = node_address()
    port = free_port()
    c.create_pod(pod_manifest("hp-exposure-web", [container(
        "web", c.refs["web:v2"], readinessProbe=http_probe(),
        ports=[{"containerPort": 8080, "hostPort": port, "protocol": "TCP"}])]))
    try:
        c.wait_pod("hp-exposure-web", is_ready)
        assert wait_for(lambda: get(f"http://{addr}:{port}/"), timeout=20,
                        what=f"an answer on {addr}:{port}") == "version v2\n"
        # the host's loopback: nothing listens there, and the pod must not answer for it
        assert get(f"http://127.0.0.1:{port}/") is None
        # a listener of the host's own on 127.0.0.1:P is what the host reaches
        with socket.socket() as srv:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("127.0.0.1", port))
            srv.listen(1)
            srv.settimeout(5)       # DNATed away to the pod, the connection would never arrive here
            with socket.create_connection(("127.0.0.1", port), timeout=2) as cli:
                conn, peer = srv.accept()
                with conn:
                    cli.sendall(b"token")
                    assert conn.recv(16) == b"token" and peer[0] == "127.0.0.1"
        table = subprocess.run(["nft", "list", "table", "ip", c.table], capture_output=True, text=True,
                               check=True).stdout
        assert "ip daddr 127.0.0.0/8 return" in table, table
    finally:
        c.delete_pod_and_wait("hp-exposure-web")


def test_the_api_server_port_is_refused_as_a_host_port(cluster):
    c = cluster
    api_port = urlsplit(c.srv.url).port
    c.create_pod(pod_manifest("hp-exposure-api", [container(
        "thief", c.refs["web:v2"],
        ports=[{"containerPort": 8080, "hostPort": api_port, "protocol": "TCP"}])]))
    try:
        pod = c.wait_pod("hp-exposure-api", lambda p: waiting_reason(p) == "CreateContainerConfigError",
                         what="refused with CreateContainerConfigError")
        msg = (cstatus(pod).get("state") or {}).get("waiting", {}).get("message", "")
        assert f"hostPort {api_port}" in msg and "API server" in msg, msg
        c.wait_events("hp-exposure-api", "Failed", lambda e: f"hostPort {api_port}" in e["message"])
        assert not c.containers_of(pod)
        table = subprocess.run(["nft", "list", "table", "ip", c.table], capture_output=True, text=True,
                               check=True).stdout
        assert f"dport {api_port}" not in table, table
        assert c.client.get("nodes", c.node)["metadata"]["name"] == c.node     # the server still answers
    finally:
        c.delete_pod_and_wait("hp-exposure-api")
