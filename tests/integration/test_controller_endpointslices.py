"""The endpointslice and servicelb controllers against a real API server: the test plays the
agents (pod IPs and readiness through /status, graceful deletions confirmed with grace 0,
Node status), and the slices, the Endpoints object and a LoadBalancer's ingress follow."""
from __future__ import annotations

import pytest

from shoal.controller.manager import ControllerOptions
from shoal.machinery.api import errors
from shoal.machinery.api.objects import thaw
from shoal.machinery.api.services import MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL
from shoal.testkit.apiserver import start_test_server, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path):
    # nodes here post no leases: the node lifecycle controller must not call them dead meanwhile
    srv = start_test_server(tmp_path, controllers=True,
                            controller_options=ControllerOptions(node_grace_period=600.0))
    try:
        yield srv, srv.client()
    finally:
        srv.stop()


def service(name: str = "web", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                     **spec}}


def make_pod(c, i: int, *, port: int = 8080, node: str = "n1", labels: dict | None = None) -> dict:
    return c.create("pods", {"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": f"web-{i}", "labels": labels or {"app": "web"}},
                             "spec": {"nodeName": node, "terminationGracePeriodSeconds": 30,
                                      "containers": [{"name": "c", "image": "busybox",
                                                      "ports": [{"name": "http", "containerPort": port}]}]}},
                    "default")


def set_status(c, name: str, *, ip: str | None, ready: bool) -> dict:
    """What the agent reports: the pod runs at `ip` and is Ready or not."""
    for _ in range(10):
        pod = thaw(c.get("pods", name, "default"))
        pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
        if ip:
            pod["status"].update(podIP=ip, podIPs=[{"ip": ip}])
        try:
            return c.update_status("pods", pod)
        except errors.Conflict:
            continue
    raise AssertionError(f"pod {name}: status kept conflicting")


def slices(c, name: str = "web") -> list[dict]:
    return c.list("endpointslices", "default", label_selector=f"{SERVICE_NAME_LABEL}={name}")["items"]


def endpoints_by_pod(c, name: str = "web") -> dict[str, dict]:
    return {e["targetRef"]["name"]: e for s in slices(c, name) for e in s.get("endpoints") or []}


def conditions(c, name: str = "web") -> dict[str, tuple]:
    return {p: (e["conditions"]["ready"], e["conditions"]["serving"], e["conditions"]["terminating"])
            for p, e in endpoints_by_pod(c, name).items()}


def legacy(c, name: str = "web") -> tuple[list[str], list[str]]:
    try:
        ep = c.get("endpoints", name, "default")
    except errors.NotFound:
        return [], []
    ready = [a["ip"] for ss in ep.get("subsets") or [] for a in ss.get("addresses") or []]
    not_ready = [a["ip"] for ss in ep.get("subsets") or [] for a in ss.get("notReadyAddresses") or []]
    return sorted(ready), sorted(not_ready)


def test_slices_and_endpoints_follow_pod_readiness_and_termination(cluster):
    srv, c = cluster
    svc = c.create("services", service(), "default")
    wait_for(lambda: len(slices(c)) == 1 and slices(c)[0]["endpoints"] == [], what="a placeholder slice")
    for i in range(3):
        make_pod(c, i, port=8080 + i)
    make_pod(c, 9)                                           # no IP yet: no endpoint
    for i in range(3):
        set_status(c, f"web-{i}", ip=f"10.244.1.{10 + i}", ready=True)
    ready = (True, True, False)
    wait_for(lambda: conditions(c) == {"web-0": ready, "web-1": ready, "web-2": ready},
             what="three ready endpoints", detail=lambda: repr(conditions(c)))
    # the named targetPort resolves per pod: three port mappings, three slices
    assert sorted(s["ports"][0]["port"] for s in slices(c)) == [8080, 8081, 8082]
    for s in slices(c):
        md = s["metadata"]
        assert md["labels"][MANAGED_BY_LABEL] == MANAGED_BY and md["labels"]["team"] == "a"
        assert md["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
        assert s["endpoints"][0]["nodeName"] == "n1"
    wait_for(lambda: legacy(c) == (["10.244.1.10", "10.244.1.11", "10.244.1.12"], []), what="Endpoints addresses")

    # the agent reports web-1 unready: it stays listed, not ready, not serving
    set_status(c, "web-1", ip="10.244.1.11", ready=False)
    wait_for(lambda: conditions(c).get("web-1") == (False, False, False), what="web-1 unready",
             detail=lambda: repr(conditions(c)))
    wait_for(lambda: legacy(c) == (["10.244.1.10", "10.244.1.12"], ["10.244.1.11"]), what="web-1 not ready")

    # a graceful delete of a ready pod: terminating, still serving, no longer ready
    c.delete("pods", "web-0", "default")
    wait_for(lambda: conditions(c).get("web-0") == (False, True, True), what="web-0 terminating",
             detail=lambda: repr(conditions(c)))
    wait_for(lambda: legacy(c) == (["10.244.1.12"], ["10.244.1.11"]), what="web-0 out of Endpoints")
    # the agent confirms: the endpoint goes
    c.delete("pods", "web-0", "default", grace_period_seconds=0)
    wait_for(lambda: "web-0" not in conditions(c), what="web-0 gone")
    # a pod that gets its IP later joins
    set_status(c, "web-9", ip="10.244.1.19", ready=True)
    wait_for(lambda: conditions(c).get("web-9") == ready, what="web-9 ready")
    # a pod that stops matching the selector leaves
    pod = thaw(c.get("pods", "web-2", "default"))
    pod["metadata"]["labels"] = {"app": "other"}
    c.update("pods", pod)
    wait_for(lambda: "web-2" not in conditions(c), what="web-2 unselected")
    wait_for(lambda: legacy(c) == (["10.244.1.19"], ["10.244.1.11"]), what="web-2 out of Endpoints")

    # the Service goes: its slices and Endpoints too
    c.delete("services", "web", "default")
    wait_for(lambda: not slices(c) and legacy(c) == ([], []), what="slices and Endpoints removed",
             detail=lambda: repr(slices(c)))


def test_more_than_100_endpoints_are_split_and_headless_services_get_slices(cluster):
    srv, c = cluster
    c.create("services", service("web", clusterIP="None"), "default")
    for i in range(120):
        make_pod(c, i)
        set_status(c, f"web-{i}", ip=f"10.244.{2 + i // 200}.{i % 200 + 1}", ready=True)
    wait_for(lambda: len(endpoints_by_pod(c)) == 120, timeout=60, what="120 endpoints",
             detail=lambda: repr([len(s.get("endpoints") or []) for s in slices(c)]))
    assert sorted(len(s["endpoints"]) for s in slices(c)) == [20, 100]
    assert all(s["metadata"]["labels"]["service.kubernetes.io/headless"] == "" for s in slices(c))
    assert len(legacy(c)[0]) == 120


def test_selectorless_services_are_left_to_their_owner(cluster):
    srv, c = cluster
    c.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
                          "spec": {"ports": [{"port": 5432}]}}, "default")
    c.create("endpoints", {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext"},
                           "subsets": [{"addresses": [{"ip": "192.0.2.7"}], "ports": [{"port": 5432}]}]}, "default")
    c.create("services", service("marker"), "default")             # a reconcile that surely ran after
    wait_for(lambda: slices(c, "marker"), what="the marker's placeholder")
    assert slices(c, "ext") == [] and legacy(c, "ext") == (["192.0.2.7"], [])


def set_node(c, name: str, *, ready: bool, ip: str) -> None:
    try:
        c.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    except errors.AlreadyExists:
        pass
    for _ in range(10):
        node = thaw(c.get("nodes", name))
        node["status"] = dict(node.get("status") or {},
                              conditions=[{"type": "Ready", "status": "True" if ready else "False"}],
                              addresses=[{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}])
        try:
            c.update_status("nodes", node)
            return
        except errors.Conflict:
            continue


def ingress(c, name: str = "lb") -> list[str]:
    st = c.get("services", name, "default").get("status") or {}
    return [i["ip"] for i in (st.get("loadBalancer") or {}).get("ingress") or []]


def test_load_balancer_ingress_is_the_ready_nodes(cluster):
    srv, c = cluster
    set_node(c, "n1", ready=True, ip="192.168.50.11")
    set_node(c, "n2", ready=True, ip="192.168.50.2")
    c.create("services", service("lb", type="LoadBalancer"), "default")
    c.create("services", service("plain"), "default")
    wait_for(lambda: ingress(c) == ["192.168.50.2", "192.168.50.11"], what="both nodes",
             detail=lambda: repr(ingress(c)))
    set_node(c, "n2", ready=False, ip="192.168.50.2")
    wait_for(lambda: ingress(c) == ["192.168.50.11"], what="n2 out", detail=lambda: repr(ingress(c)))
    set_node(c, "n3", ready=True, ip="192.168.50.3")
    wait_for(lambda: ingress(c) == ["192.168.50.3", "192.168.50.11"], what="n3 in", detail=lambda: repr(ingress(c)))
    assert c.get("services", "plain", "default")["status"] == {"loadBalancer": {}}
    # a LoadBalancer that becomes a ClusterIP Service loses its ingress (the API server clears it)
    c.patch("services", "lb", {"spec": {"type": "ClusterIP"}}, "default")
    assert ingress(c) == []
    # externalTrafficPolicy Local: only the nodes with a ready endpoint of the Service
    c.create("services", service("local", type="LoadBalancer", externalTrafficPolicy="Local"), "default")
    make_pod(c, 1, node="n3")
    set_status(c, "web-1", ip="10.244.3.5", ready=True)
    wait_for(lambda: ingress(c, "local") == ["192.168.50.3"], what="n3 only", detail=lambda: repr(ingress(c, "local")))
    make_pod(c, 2, node="n1")
    set_status(c, "web-2", ip="10.244.1.5", ready=True)
    wait_for(lambda: ingress(c, "local") == ["192.168.50.3", "192.168.50.11"], what="n1 and n3",
             detail=lambda: repr(ingress(c, "local")))
    set_status(c, "web-1", ip="10.244.3.5", ready=False)
    wait_for(lambda: ingress(c, "local") == ["192.168.50.11"], what="n1 only",
             detail=lambda: repr(ingress(c, "local")))
