"""The service kinds in kubectl's tables (machinery.api.printing), `shoal expose`'s Service
(cli.commands.service_for) and `shoal describe service` (cli.describe.describe_service)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from shoal.cli.commands import UsageError, service_for
from shoal.cli.describe import describe_service, format_slice_endpoints
from shoal.machinery.api import printing
from shoal.machinery.api.resources import resolve

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
MD = {"name": "web", "namespace": "default", "creationTimestamp": "2024-05-01T11:59:00Z"}


def row(kind: str, obj: dict) -> dict:
    return dict(zip([c.name for c in printing.columns(kind)], printing.cells(kind, obj, NOW)))


@pytest.mark.parametrize("kind, plain, wide", [
    ("Service", ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"], ["Selector"]),
    ("EndpointSlice", ["Name", "AddressType", "Ports", "Endpoints", "Age"], []),
    ("Endpoints", ["Name", "Endpoints", "Age"], []),
])
def test_columns_are_kubectls(kind, plain, wide):
    assert [c.name for c in printing.columns(kind) if c.priority == 0] == plain
    assert [c.name for c in printing.columns(kind) if c.priority == 1] == wide


@pytest.mark.parametrize("spec, status, cells", [
    ({"type": "ClusterIP", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"], "selector": {"b": "2", "a": "1"},
      "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}, {},
     ["web", "ClusterIP", "10.43.0.10", "<none>", "80/TCP,53/UDP", "60s", "a=1,b=2"]),
    ({"type": "NodePort", "clusterIPs": ["10.43.0.11"], "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
     {}, ["web", "NodePort", "10.43.0.11", "<none>", "80:30080/TCP", "60s", "<none>"]),
    ({"type": "LoadBalancer", "clusterIPs": ["10.43.0.12"], "ports": [{"port": 80, "nodePort": 30080}]},
     {"loadBalancer": {}}, ["web", "LoadBalancer", "10.43.0.12", "<pending>", "80:30080/TCP", "60s", "<none>"]),
    ({"type": "LoadBalancer", "clusterIPs": ["10.43.0.12"], "ports": [{"port": 80}], "externalIPs": ["192.0.2.9"]},
     {"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}, {"ip": "192.168.1.2"}, {"hostname": "lb.example"}]}},
     ["web", "LoadBalancer", "10.43.0.12", "192.168.1.10,192.168.1.2,lb.example,192.0.2.9", "80/TCP", "60s",
      "<none>"]),
    ({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]}, {},
     ["web", "ClusterIP", "None", "<none>", "<none>", "60s", "<none>"]),
])
def test_service_rows(spec, status, cells):
    assert list(row("Service", {"metadata": MD, "spec": spec, "status": status}).values()) == cells


def test_endpointslice_and_endpoints_rows():
    es = {"metadata": MD, "addressType": "IPv4",
          "ports": [{"name": "a", "port": 80}, {"name": "b"}, {}, {"port": 9}],
          "endpoints": [{"addresses": [f"10.244.0.{i}"]} for i in range(1, 6)]}
    assert row("EndpointSlice", es) == {"Name": "web", "AddressType": "IPv4", "Ports": "80,b,* + 1 more...",
                                        "Endpoints": "10.244.0.1,10.244.0.2,10.244.0.3 + 2 more...", "Age": "60s"}
    assert row("EndpointSlice", {"metadata": MD, "addressType": "IPv4", "endpoints": []})["Endpoints"] == "<unset>"
    ep = {"metadata": MD, "subsets": [{"addresses": [{"ip": "10.244.0.1"}, {"ip": "10.244.0.2"}],
                                       "notReadyAddresses": [{"ip": "10.244.0.3"}],
                                       "ports": [{"port": 8080}, {"name": "m", "port": 9090}]}]}
    assert row("Endpoints", ep)["Endpoints"] == "10.244.0.1:8080,10.244.0.2:8080,10.244.0.1:9090 + 1 more..."
    assert row("Endpoints", {"metadata": MD})["Endpoints"] == "<none>"
    assert row("Endpoints", {"metadata": MD, "subsets": [{"addresses": [{"ip": "10.244.0.1"}]}]})["Endpoints"] == \
        "10.244.0.1"


# --- shoal expose ---------------------------------------------------------------------------------------------

DEPLOY = {"metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
          "spec": {"selector": {"matchLabels": {"app": "web"}},
                   "template": {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080},
                                                                                {"containerPort": 9090,
                                                                                 "protocol": "UDP"}]}]}}}}


def test_expose_deployment_as_kubectl():
    body = service_for(resolve("deployment"), DEPLOY, port="80", target_port="8080")
    assert body == {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
                    "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
                             "selector": {"app": "web"}}}
    named = service_for(resolve("deployment"), DEPLOY, port="80", target_port="http", type_="NodePort", name="web-np")
    assert named["metadata"]["name"] == "web-np" and named["spec"]["type"] == "NodePort"
    assert named["spec"]["ports"][0]["targetPort"] == "http"


def test_expose_without_port_takes_the_container_ports():
    body = service_for(resolve("deployment"), DEPLOY)
    assert body["spec"]["ports"] == [{"name": "port-1", "port": 8080, "protocol": "TCP", "targetPort": 8080},
                                     {"name": "port-2", "port": 9090, "protocol": "UDP", "targetPort": 9090}]


@pytest.mark.parametrize("kind, obj, kw, message", [
    ("deployment", {"metadata": {"name": "w"}, "spec": {"selector": {"matchExpressions": [{"key": "a"}]}}},
     {"port": "80"}, "matchExpressions"),
    ("deployment", {"metadata": {"name": "w"}, "spec": {"template": {"spec": {"containers": [{"name": "c"}]}},
                                                        "selector": {"matchLabels": {"a": "b"}}}}, {},
     "couldn't find port via --port flag or introspection"),
    ("pod", {"metadata": {"name": "p"}, "spec": {}}, {"port": "80"}, r"no selector \(or labels\)"),
    ("configmap", {"metadata": {"name": "c"}}, {"port": "80"}, "cannot expose a ConfigMap"),
    ("deployment", DEPLOY, {"port": "http"}, "expected a port number"),
    ("deployment", DEPLOY, {"port": "80", "selector": "a"}, "expected key=value"),
])
def test_expose_refusals(kind, obj, kw, message):
    with pytest.raises(UsageError, match=message):
        service_for(resolve(kind), obj, **kw)


def test_expose_pod_and_service():
    p = {"metadata": {"name": "p", "labels": {"run": "p"}}, "spec": {"containers": [{"ports": [{"containerPort": 5}]}]}}
    assert service_for(resolve("pod"), p)["spec"] == {"ports": [{"port": 5, "protocol": "TCP", "targetPort": 5}],
                                                      "selector": {"run": "p"}}
    s = {"metadata": {"name": "s"}, "spec": {"selector": {"app": "web"},
                                             "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}}
    again = service_for(resolve("svc"), s, name="s2", type_="ClusterIP")
    assert again["spec"] == {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web"},
                             "type": "ClusterIP"}


# --- shoal describe service ------------------------------------------------------------------------------------

SLICES = [{"ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}},
                         {"addresses": ["10.244.2.7"], "conditions": {"ready": False}},
                         {"addresses": ["10.244.3.9"]}]}]


def test_describe_service():
    svc = {"metadata": MD, "spec": {"type": "NodePort", "selector": {"app": "web"}, "clusterIP": "10.43.0.10",
                                    "clusterIPs": ["10.43.0.10"], "ipFamilies": ["IPv4"],
                                    "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                                    "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster",
                                    "ports": [{"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080,
                                               "protocol": "TCP"}]}}
    text = describe_service(svc, SLICES, [], NOW)
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines == [
        "Name:                     web",
        "Namespace:                default",
        "Labels:                   <none>",
        "Annotations:              <none>",
        "Selector:                 app=web",
        "Type:                     NodePort",
        "IP Family Policy:         SingleStack",
        "IP Families:              IPv4",
        "IP:                       10.43.0.10",
        "IPs:                      10.43.0.10",
        "Port:                     http  80/TCP",
        "TargetPort:               web/TCP",
        "NodePort:                 http  30080/TCP",
        "Endpoints:                10.244.1.5:8080,10.244.3.9:8080",
        "Session Affinity:         None",
        "External Traffic Policy:  Cluster",
        "Internal Traffic Policy:  Cluster",
        "Events:                   <none>",
    ]


def test_describe_load_balancer_ingress_and_endpoint_summaries():
    svc = {"metadata": MD, "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.9", "ipMode": "VIP"}, {"hostname": "lb"}]}}}
    text = describe_service(svc, [], [], NOW)
    assert "LoadBalancer Ingress:  192.168.1.9 (VIP), lb\n" in text
    assert "Port:                  <unset>  80/TCP\n" in text and "Endpoints:             <none>\n" in text
    many = [{"ports": [{"name": "", "port": 80}], "endpoints": [{"addresses": [f"10.0.0.{i}"]} for i in range(5)]}]
    assert format_slice_endpoints(many, "") == "10.0.0.0:80,10.0.0.1:80,10.0.0.2:80 + 2 more..."
    assert format_slice_endpoints([{"endpoints": [{"addresses": ["10.0.0.1"]}]}], None) == "10.0.0.1"
