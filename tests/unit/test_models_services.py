"""Service, Endpoints and EndpointSlice: Kubernetes' defaults, the update preparation of its
service storage, validation and update rules (machinery.api.models.network_rules)."""
from __future__ import annotations

import pytest

from shoal.machinery.api import errors
from shoal.machinery.api.models import validate

pytestmark = pytest.mark.unit


def svc(spec: dict | None = None, *, name: str = "web", status: dict | None = None) -> dict:
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "d"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **(spec or {})}}
    if status is not None:
        obj["status"] = status
    return obj


def causes(kind: str, obj: dict, old: dict | None = None, subresource: str | None = None) -> list[tuple[str, str]]:
    with pytest.raises(errors.Invalid) as e:
        validate(kind, obj, old=old, subresource=subresource)
    return [(c.field, c.message) for c in e.value.causes]


def one(kind: str, obj: dict, old: dict | None = None) -> tuple[str, str]:
    found = causes(kind, obj, old)
    assert len(found) == 1, found
    return found[0]


# --- defaults ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ({}, {"type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
          "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
          "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}),
    ({"type": "NodePort"}, {"type": "NodePort", "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster"}),
    ({"type": "LoadBalancer"}, {"externalTrafficPolicy": "Cluster", "allocateLoadBalancerNodePorts": True}),
    ({"externalIPs": ["192.0.2.10"]}, {"externalTrafficPolicy": "Cluster"}),     # ClusterIP reached from outside
    ({"sessionAffinity": "ClientIP"}, {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}}),
    ({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}},
     {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
    ({"sessionAffinity": "None", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}},
     {"sessionAffinity": "None"}),                       # None drops the config (Kubernetes' defaulter)
    ({"ports": [{"name": "a", "port": 80, "targetPort": 0}, {"name": "b", "port": 53, "protocol": "UDP",
                                                             "targetPort": ""}]},
     {"ports": [{"name": "a", "port": 80, "protocol": "TCP", "targetPort": 80},
                {"name": "b", "port": 53, "protocol": "UDP", "targetPort": 53}]}),
    ({"clusterIP": "10.43.0.9"}, {"clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9"]}),
    ({"clusterIP": "None"}, {"clusterIPs": ["None"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}),
    ({"clusterIP": "None", "selector": None},          # headless without selector: both families, as Kubernetes
     {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}),
    ({"ipFamilyPolicy": "PreferDualStack"}, {"ipFamilies": ["IPv4"], "ipFamilyPolicy": "PreferDualStack"}),
])
def test_defaults(spec, expected):
    spec = {k: v for k, v in spec.items()}
    obj = svc(spec)
    if spec.get("selector", "x") is None:
        del obj["spec"]["selector"]
    out = validate("Service", obj)["spec"]
    for k, v in expected.items():
        assert out[k] == v, (k, out)
    if "sessionAffinityConfig" not in expected:
        assert "sessionAffinityConfig" not in out
    assert validate("Service", validate("Service", obj)) == validate("Service", obj)     # stored = re-validated


def test_service_status_defaults_ip_mode_for_load_balancers():
    out = validate("Service", svc({"type": "LoadBalancer"}, status={"loadBalancer": {"ingress": [
        {"ip": "192.0.2.1"}, {"hostname": "lb.example"}]}}))
    assert out["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.1", "ipMode": "VIP"},
                                                        {"hostname": "lb.example"}]


# --- validation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, field, message", [
    ({"ports": []}, "spec.ports", "Required value"),
    ({"ports": [{"port": 80}, {"port": 81}]}, "spec.ports[0].name", "Required value"),
    ({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}, "spec.ports[1].name", 'Duplicate value: "a"'),
    ({"ports": [{"name": "A_b", "port": 80}]}, "spec.ports[0].name", "a lowercase RFC 1123 label"),
    ({"ports": [{"port": 0}]}, "spec.ports[0].port", "Invalid value: 0: must be between 1 and 65535, inclusive"),
    ({"ports": [{"port": 65536}]}, "spec.ports[0].port", "must be between 1 and 65535"),
    ({"ports": [{"port": 80, "protocol": "ICMP"}]}, "spec.ports[0].protocol",
     'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"'),
    ({"ports": [{"port": 80, "targetPort": 70000}]}, "spec.ports[0].targetPort", "must be between 1 and 65535"),
    ({"ports": [{"port": 80, "targetPort": "no_such"}]}, "spec.ports[0].targetPort",
     "must contain only alpha-numeric characters"),
    ({"ports": [{"port": 80, "targetPort": "averyveryverylongname"}]}, "spec.ports[0].targetPort",
     "must be no more than 15 characters"),
    ({"ports": [{"port": 80, "appProtocol": "a b"}]}, "spec.ports[0].appProtocol", "name part must consist of"),
    ({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}, "spec.ports[1]",
     'Duplicate value: {"port":80,"protocol":"TCP"}'),
    ({"ports": [{"port": 80, "nodePort": 30080}]}, "spec.ports[0].nodePort",
     "Forbidden: may not be used when `type` is 'ClusterIP'"),
    ({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30080},
                                    {"name": "b", "port": 81, "nodePort": 30080}]},
     "spec.ports[1].nodePort", "Duplicate value: 30080"),
    ({"type": "Headless"}, "spec.type",
     'Unsupported value: "Headless": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'),
    ({"type": "ExternalName"}, "spec.type", "shoal does not serve ExternalName Services"),
    ({"externalName": "db.example.com"}, "spec.externalName", "ExternalName Services are not supported by shoal"),
    ({"selector": {"app": "a b"}}, "spec.selector", "a valid label must be"),
    ({"sessionAffinity": "Sticky"}, "spec.sessionAffinity", 'Unsupported value: "Sticky"'),
    ({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}},
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "must be greater than 0 and less than 86400"),
    ({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}}},
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "must be greater than 0 and less than 86400"),
    ({"clusterIP": "10.43.0.300"}, "spec.clusterIPs[0]", "must be a valid IP address"),
    ({"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.6"]}, "spec.clusterIPs", "first value must match `clusterIP`"),
    ({"clusterIPs": ["10.43.0.6"]}, "spec.clusterIPs", "must be empty when `clusterIP` is not specified"),
    ({"clusterIP": "fd00::5"}, "spec.clusterIPs[0]", "IPv6 is not configured on this cluster"),
    ({"clusterIP": "None", "type": "NodePort"}, "spec.clusterIPs[0]",
     "may not be set to 'None' for NodePort services"),
    ({"ipFamilies": ["IPv6"]}, "spec.ipFamilies[0]", 'Invalid value: "IPv6": not configured on this cluster'),
    ({"ipFamilies": ["IPv5"]}, "spec.ipFamilies[0]", 'Unsupported value: "IPv5"'),
    ({"ipFamilyPolicy": "RequireDualStack"}, "spec.ipFamilyPolicy",
     "this cluster is not configured for dual-stack services"),
    ({"ipFamilyPolicy": "Some"}, "spec.ipFamilyPolicy", 'Unsupported value: "Some"'),
    ({"externalTrafficPolicy": "Local"}, "spec.externalTrafficPolicy",
     "may only be set for externally-accessible services"),
    ({"type": "NodePort", "externalTrafficPolicy": "Everywhere"}, "spec.externalTrafficPolicy",
     'Unsupported value: "Everywhere": supported values: "Cluster", "Local"'),
    ({"internalTrafficPolicy": "Nearby"}, "spec.internalTrafficPolicy", 'Unsupported value: "Nearby"'),
    ({"allocateLoadBalancerNodePorts": False}, "spec.allocateLoadBalancerNodePorts",
     "may only be used when `type` is 'LoadBalancer'"),
    ({"healthCheckNodePort": 30100}, "spec.healthCheckNodePort",
     "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"),
    ({"externalIPs": ["127.0.0.1"]}, "spec.externalIPs[0]", "may not be in the loopback range"),
    ({"externalIPs": ["0.0.0.0"]}, "spec.externalIPs[0]", "may not be unspecified (0.0.0.0)"),
    ({"externalIPs": ["web"]}, "spec.externalIPs[0]", "must be a valid IP address"),
])
def test_invalid_services(spec, field, message):
    found = causes("Service", svc(spec))
    assert any(f == field and message in m for f, m in found), found


@pytest.mark.parametrize("name, ok", [("web", True), ("w-1", True), ("1web", False), ("Web", False),
                                      ("web-", False), ("a" * 63, True), ("a" * 64, False)])
def test_service_names_are_dns1035_labels(name, ok):
    if ok:
        validate("Service", svc(name=name))
    else:
        f, m = one("Service", svc(name=name))
        assert f == "metadata.name" and ("a DNS-1035 label" in m or "no more than 63" in m)


@pytest.mark.parametrize("spec", [
    {"clusterIP": "None", "ports": []},                               # headless: ports optional
    {"clusterIP": "None", "selector": None, "ipFamilyPolicy": "RequireDualStack"},
    {"type": "NodePort", "externalTrafficPolicy": "Local"},
    {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30100},
    {"internalTrafficPolicy": "Local"},
    {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False},
    {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]},
    {"type": "NodePort", "ports": [{"name": "a", "port": 53, "protocol": "UDP", "nodePort": 30053},
                                   {"name": "b", "port": 53, "protocol": "TCP", "nodePort": 30053}]},
    {"ports": [{"port": 80, "targetPort": "http", "appProtocol": "kubernetes.io/h2c"}]},
    {"publishNotReadyAddresses": True, "externalIPs": ["192.0.2.10"]},
])
def test_valid_services(spec):
    obj = svc(spec)
    if spec.get("selector", "x") is None:
        del obj["spec"]["selector"]
    out = validate("Service", obj)
    assert validate("Service", out) == out


@pytest.mark.parametrize("spec, status, field, message", [
    ({}, {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}, "status.loadBalancer.ingress",
     "may only be used when `spec.type` is 'LoadBalancer'"),
    ({"type": "LoadBalancer"}, {"loadBalancer": {"ingress": [{"ip": "1.2.3"}]}}, "status.loadBalancer.ingress[0].ip",
     "must be a valid IP address"),
    ({"type": "LoadBalancer"}, {"loadBalancer": {"ingress": [{"hostname": "lb", "ipMode": "VIP"}]}},
     "status.loadBalancer.ingress[0].ipMode", "may not be specified when `ip` is not set"),
    ({"type": "LoadBalancer"}, {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ipMode": "Tunnel"}]}},
     "status.loadBalancer.ingress[0].ipMode", 'Unsupported value: "Tunnel"'),
    ({"type": "LoadBalancer"}, {"loadBalancer": {"ingress": [{"hostname": "192.0.2.1"}]}},
     "status.loadBalancer.ingress[0].hostname", "must be a DNS name, not an IP address"),
])
def test_invalid_load_balancer_status(spec, status, field, message):
    found = causes("Service", svc(spec, status=status))
    assert any(f == field and message in m for f, m in found), found


def test_unknown_service_fields_are_refused_by_name():
    for fieldname in ("loadBalancerIP", "loadBalancerSourceRanges", "loadBalancerClass", "trafficDistribution"):
        with pytest.raises(errors.BadRequest) as e:
            validate("Service", svc({fieldname: "x"}))
        assert fieldname in e.value.message


# --- updates: Kubernetes' service storage --------------------------------------------------------------

def stored(spec: dict, status: dict | None = None) -> dict:
    """A Service as the API server stores it after allocation."""
    obj = validate("Service", svc(spec, status=status))
    return obj


def test_resubmitted_manifest_keeps_what_the_server_allocated():
    old = stored({"type": "NodePort", "clusterIP": "10.43.7.7",
                  "ports": [{"name": "http", "port": 80, "nodePort": 30080}]})
    new = validate("Service", svc({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}), old=old)
    assert new["spec"]["clusterIP"] == "10.43.7.7" and new["spec"]["clusterIPs"] == ["10.43.7.7"]
    assert new["spec"]["ports"][0]["nodePort"] == 30080


def test_node_port_kept_by_name_not_when_used_by_another_port():
    old = stored({"type": "NodePort", "clusterIP": "10.43.7.7",
                  "ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30081}]})
    new = validate("Service", svc({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30081},
                                                                 {"name": "b", "port": 81}]}), old=old)
    # 30081 moved to port a by the client: b's old value is in use, so it is left for allocation
    assert [p.get("nodePort") for p in new["spec"]["ports"]] == [30081, None]


def test_cluster_ip_is_immutable():
    old = stored({"clusterIP": "10.43.7.7"})
    f, m = one("Service", svc({"clusterIP": "10.43.7.8"}), old)
    assert f == "spec.clusterIPs[0]" and 'may not change once set' in m
    f, m = one("Service", svc({"clusterIP": "None"}), old)       # no switch to headless either
    assert f == "spec.clusterIPs[0]" and 'may not change once set' in m
    headless = stored({"clusterIP": "None"})
    f, m = one("Service", svc({"clusterIP": "10.43.7.8"}), headless)
    assert f == "spec.clusterIPs[0]"
    # the singular field alone (an old client): kept in step, still refused
    assert causes("Service", svc({"clusterIP": "10.43.7.9", "clusterIPs": ["10.43.7.7"]}), old)


def test_type_change_drops_what_the_old_type_allocated():
    old = stored({"type": "LoadBalancer", "clusterIP": "10.43.7.7", "externalTrafficPolicy": "Local",
                  "healthCheckNodePort": 30100, "ports": [{"port": 80, "nodePort": 30080}]},
                 status={"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}})
    client_copy = dict(old, spec=dict(old["spec"], type="ClusterIP"))        # a GET, edited, PUT back
    new = validate("Service", client_copy, old=old)
    spec = new["spec"]
    assert spec["type"] == "ClusterIP" and "nodePort" not in spec["ports"][0]
    assert "externalTrafficPolicy" not in spec and "healthCheckNodePort" not in spec
    assert "allocateLoadBalancerNodePorts" not in spec
    assert new["status"] == {"loadBalancer": {}}
    assert spec["clusterIP"] == "10.43.7.7"
    # a node port the client changes while leaving NodePort is its mistake to see
    bad = dict(old, spec=dict(old["spec"], type="ClusterIP", ports=[{"port": 80, "nodePort": 30099}]))
    assert ("spec.ports[0].nodePort", "Forbidden: may not be used when `type` is 'ClusterIP'") in causes(
        "Service", bad, old)


def test_health_check_node_port_is_immutable_while_needed():
    old = stored({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30100})
    f, m = one("Service", svc({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                               "healthCheckNodePort": 30101}), old)
    assert f == "spec.healthCheckNodePort" and "field is immutable" in m
    kept = validate("Service", svc({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}), old=old)
    assert kept["spec"]["healthCheckNodePort"] == 30100


def test_ip_family_policy_kept_from_the_stored_service():
    old = stored({"clusterIP": "10.43.7.7", "ipFamilyPolicy": "PreferDualStack"})
    new = validate("Service", svc({}), old=old)
    assert new["spec"]["ipFamilyPolicy"] == "PreferDualStack" and new["spec"]["ipFamilies"] == ["IPv4"]


def test_status_write_keeps_spec_and_checks_status():
    old = stored({"type": "LoadBalancer", "clusterIP": "10.43.7.7"})
    ok = dict(old, status={"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}})
    out = validate("Service", ok, old=old, subresource="status")
    assert out["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.1", "ipMode": "VIP"}]
    bad = dict(old, status={"loadBalancer": {"ingress": [{"ip": "x"}]}})
    assert causes("Service", bad, old, subresource="status")


# --- Endpoints -------------------------------------------------------------------------------------------

def endpoints(subsets: list) -> dict:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": "d"},
            "subsets": subsets}


def test_endpoints_round_trip_and_defaults():
    obj = endpoints([{"addresses": [{"ip": "10.244.1.2", "nodeName": "n1", "hostname": "h",
                                     "targetRef": {"kind": "Pod", "namespace": "d", "name": "p", "uid": "u"}}],
                      "notReadyAddresses": [{"ip": "10.244.1.3"}], "ports": [{"port": 8080}]}])
    out = validate("Endpoints", obj)
    assert out["subsets"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert validate("Endpoints", out) == out


@pytest.mark.parametrize("subset, field, message", [
    ({"ports": [{"port": 80}]}, "subsets[0]", "must specify `addresses` or `notReadyAddresses`"),
    ({"addresses": [{"ip": "10.244.1"}]}, "subsets[0].addresses[0].ip", "must be a valid IP address"),
    ({"addresses": [{"ip": "127.0.0.1"}]}, "subsets[0].addresses[0].ip", "may not be in the loopback range"),
    ({"addresses": [{"ip": "169.254.1.1"}]}, "subsets[0].addresses[0].ip", "may not be in the link-local range"),
    ({"notReadyAddresses": [{"ip": "224.0.0.5"}]}, "subsets[0].notReadyAddresses[0].ip",
     "may not be in the link-local multicast range"),
    ({"addresses": [{"ip": "10.0.0.1", "nodeName": "N_1"}]}, "subsets[0].addresses[0].nodeName",
     "a lowercase RFC 1123 subdomain"),
    ({"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}, {"port": 81}]}, "subsets[0].ports[0].name",
     "Required value"),
    ({"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 0}]}, "subsets[0].ports[0].port",
     "must be between 1 and 65535"),
])
def test_invalid_endpoints(subset, field, message):
    found = causes("Endpoints", endpoints([subset]))
    assert any(f == field and message in m for f, m in found), found


# --- EndpointSlice ------------------------------------------------------------------------------------------

def eps(**kw) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-x", "namespace": "d"}, "addressType": "IPv4", **kw}


def test_endpointslice_defaults_port_name_and_protocol():
    out = validate("EndpointSlice", eps(endpoints=[{"addresses": ["10.244.1.2"]}], ports=[{"port": 8080}]))
    assert out["ports"] == [{"name": "", "protocol": "TCP", "port": 8080}]
    assert validate("EndpointSlice", out) == out


@pytest.mark.parametrize("kw, field, message", [
    ({"addressType": None}, "addressType", "Required value"),
    ({"addressType": "IPX"}, "addressType", 'Unsupported value: "IPX": supported values: "FQDN", "IPv4", "IPv6"'),
    ({"endpoints": [{"addresses": []}]}, "endpoints[0].addresses", "must contain at least 1 address"),
    ({"endpoints": [{"addresses": ["fd00::1"]}]}, "endpoints[0].addresses[0]", "must be a valid IPv4 address"),
    ({"endpoints": [{"addresses": ["127.0.0.2"]}]}, "endpoints[0].addresses[0]", "may not be in the loopback range"),
    ({"endpoints": [{"addresses": [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(101)]}]},
     "endpoints[0].addresses", "Too many: 101: must have at most 100 items"),
    ({"endpoints": [{"addresses": ["10.0.0.1"]}] * 1001}, "endpoints", "Too many: 1001: must have at most 1000 items"),
    ({"endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "Node A"}]}, "endpoints[0].nodeName", "RFC 1123"),
    ({"endpoints": [{"addresses": ["10.0.0.1"], "hostname": "a.b"}]}, "endpoints[0].hostname", "RFC 1123 label"),
    ({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}, "ports[1].name", 'Duplicate value: "a"'),
    ({"ports": [{"port": 80}, {"port": 81}]}, "ports[1].name", 'Duplicate value: ""'),
    ({"ports": [{"name": "a", "port": 80, "protocol": "ICMP"}]}, "ports[0].protocol", 'Unsupported value: "ICMP"'),
])
def test_invalid_endpointslices(kw, field, message):
    obj = eps(**kw)
    if kw.get("addressType", "x") is None:
        del obj["addressType"]
    found = causes("EndpointSlice", obj)
    assert any(f == field and message in m for f, m in found), found


def test_endpointslice_address_type_is_immutable():
    old = validate("EndpointSlice", eps(endpoints=[{"addresses": ["10.0.0.1"]}]))
    f, m = one("EndpointSlice", eps(addressType="FQDN", endpoints=[{"addresses": ["db.example"]}]), old)
    assert f == "addressType" and "field is immutable" in m
