"""Issue 17 ("Host exposure"): a pod never gets a hostPort that shoal's own components listen
on here — the agent's worker refuses to start its container (a config error naming the port
and the component), and the agent derives the reserved set from its own configuration."""
import pytest

from shoal.agent.agent import reserved_host_ports

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("server,log_port,expected", [
    ("https://127.0.0.1:6443", 10250, {6443: "the shoal API server", 10250: "the shoal agent's log endpoint"}),
    ("https://10.0.0.1:7443/", None, {7443: "the shoal API server"}),
    ("https://api.example", 0, {443: "the shoal API server"}),      # 0: the log port is added once bound
    ("http://api.example", 10251, {80: "the shoal API server", 10251: "the shoal agent's log endpoint"}),
    ("", 10250, {10250: "the shoal agent's log endpoint"}),
])
def test_reserved_host_ports(server, log_port, expected):
    assert reserved_host_ports(server, log_port) == expected


def _worker(tmp_path, ports):
    from test_agent_worker import _worker as make
    w = make(tmp_path)
    w.ctx.reserved_host_ports = {6443: "the shoal API server", 10250: "the shoal agent's log endpoint"}
    pod = w.pod
    pod["spec"]["containers"][0]["ports"] = ports
    w.set_pod(pod)
    return w


def test_worker_refuses_a_container_asking_for_the_api_server_port(tmp_path):
    w = _worker(tmp_path, [{"containerPort": 8443, "hostPort": 6443}])
    w.sync()
    assert not w.ctx.runtime.list()                         # nothing made, nothing run
    msg = "pod default/web-1: hostPort 6443 of container web is reserved for the shoal API server on this node"
    assert ("Failed", f"Error: {msg}") in w.ctx.events.seen
    cs = w.ctx.api.statuses[-1]["containerStatuses"][0]
    state = cs["state"].get("waiting") or cs["state"].get("terminated") or {}
    assert state.get("reason") == "CreateContainerConfigError" and state.get("message") == msg, cs


def test_worker_starts_a_container_with_an_ordinary_host_port(tmp_path):
    w = _worker(tmp_path, [{"containerPort": 8080, "hostPort": 18080}])
    w.sync()
    assert [s.status for s in w.ctx.runtime.list()] == ["running"]
