"""The endpointslice controller's pure planning (plan_slices, plan_endpoints) and ServiceLB's
ingress list, as tables: which pods are endpoints with which conditions and ports, how
slices are reused, filled, split and emptied, and what the legacy Endpoints object holds."""
from __future__ import annotations

import itertools

import pytest

from shoal.controller.endpointslice import SlicePlan, endpoint_ports, plan_endpoints, plan_slices
from shoal.controller.servicelb import lb_ingress, local_endpoint_nodes
from shoal.machinery.api.services import HEADLESS_LABEL, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL

pytestmark = pytest.mark.unit


def service(**spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "d", "uid": "svc-uid", "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                                            "targetPort": 8080}], **spec}}


def pod(i: int, *, ready: bool = True, ip: str | None = "auto", deleting: bool = False, phase: str = "Running",
        labels: dict | None = None, ns: str = "d", ports: list | None = None, node: str = "n1") -> dict:
    p = {"metadata": {"name": f"web-{i:03d}", "namespace": ns, "uid": f"uid-{i}", "labels": labels or {"app": "web"}},
         "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "ports": ports or []}]},
         "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    if ip == "auto":
        ip = f"10.244.{i // 250}.{i % 250 + 1}"
    if ip:
        p["status"]["podIP"] = ip
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:00Z"
    return p


_names = itertools.count()


def apply(existing: list[dict], plan: SlicePlan) -> list[dict]:
    """What the API server holds after the plan's writes (creates get a name and a uid)."""
    gone = {s["metadata"]["name"] for s in plan.delete}
    by_name = {s["metadata"]["name"]: s for s in existing if s["metadata"]["name"] not in gone}
    for s in plan.update:
        by_name[s["metadata"]["name"]] = s
    for s in plan.create:
        n = next(_names)
        md = dict(s["metadata"], name=f"web-s{n}", uid=f"slice-{n}")
        md.pop("generateName")
        by_name[md["name"]] = dict(s, metadata=md)
    return sorted(by_name.values(), key=lambda s: s["metadata"]["name"])


def converge(svc: dict, pods: list[dict], existing: list[dict] | None = None) -> list[dict]:
    slices = apply(existing or [], plan_slices(svc, pods, existing or []))
    assert not plan_slices(svc, pods, slices), "a second plan of the same world writes nothing"
    return slices


def endpoints_of(slices: list[dict]) -> dict[str, dict]:
    return {e["targetRef"]["name"]: e for s in slices for e in s["endpoints"]}


# --- which pods, which conditions ---------------------------------------------------------------------

@pytest.mark.parametrize("ready, deleting, publish, conditions", [
    (True, False, False, {"ready": True, "serving": True, "terminating": False}),
    (False, False, False, {"ready": False, "serving": False, "terminating": False}),
    (True, True, False, {"ready": False, "serving": True, "terminating": True}),       # draining: still serving
    (False, True, False, {"ready": False, "serving": False, "terminating": True}),
    (False, False, True, {"ready": True, "serving": True, "terminating": False}),      # publishNotReadyAddresses
    (False, True, True, {"ready": True, "serving": True, "terminating": True}),
])
def test_endpoint_conditions_are_kubernetes(ready, deleting, publish, conditions):
    svc = service(publishNotReadyAddresses=publish)
    [s] = converge(svc, [pod(1, ready=ready, deleting=deleting)])
    [ep] = s["endpoints"]
    assert ep["conditions"] == conditions
    assert ep["addresses"] == ["10.244.0.2"] and ep["nodeName"] == "n1"
    assert ep["targetRef"] == {"kind": "Pod", "namespace": "d", "name": "web-001", "uid": "uid-1"}


@pytest.mark.parametrize("other", [
    pod(2, ip=None),                                   # no IP yet
    pod(2, phase="Succeeded"), pod(2, phase="Failed"),  # finished
    pod(2, labels={"app": "db"}),                      # not selected
    pod(2, ns="other"),                                # another namespace
])
def test_pods_that_are_no_endpoints(other):
    slices = converge(service(), [pod(1), other])
    assert list(endpoints_of(slices)) == ["web-001"]


def test_slice_metadata_says_whose_it_is():
    [s] = converge(service(), [pod(1)])
    assert plan_slices(service(), [pod(1)], []).create[0]["metadata"]["generateName"] == "web-"
    md = s["metadata"]
    assert md["labels"] == {"team": "a", SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: MANAGED_BY}
    assert md["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "svc-uid",
                                      "controller": True, "blockOwnerDeletion": True}]
    assert s["addressType"] == "IPv4" and s["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    [h] = converge(service(clusterIP="None"), [pod(1)])
    assert h["metadata"]["labels"][HEADLESS_LABEL] == ""


# --- ports ------------------------------------------------------------------------------------------------

def test_named_target_ports_resolve_per_pod_and_group_slices_by_port_mapping():
    svc = service(ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"},
                         {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}])
    pods = [pod(1, ports=[{"name": "web", "containerPort": 8080}]),
            pod(2, ports=[{"name": "web", "containerPort": 8080}]),
            pod(3, ports=[{"name": "web", "containerPort": 9090}]),
            pod(4, ports=[{"name": "web", "containerPort": 7070, "protocol": "UDP"}]),    # wrong protocol: no http
            pod(5, ports=[])]                                                            # only dns resolves
    slices = converge(svc, pods)
    by_ports = {tuple(sorted((p["name"], p["port"]) for p in s["ports"])):
                sorted(e["targetRef"]["name"] for e in s["endpoints"]) for s in slices}
    assert by_ports == {(("dns", 5353), ("http", 8080)): ["web-001", "web-002"],
                        (("dns", 5353), ("http", 9090)): ["web-003"],
                        (("dns", 5353),): ["web-004", "web-005"]}


def test_app_protocol_is_carried_and_unnamed_ports_are_empty_names():
    svc = service(ports=[{"port": 80, "protocol": "TCP", "targetPort": 8080, "appProtocol": "http"}])
    assert endpoint_ports(svc, pod(1)) == ({"name": "", "protocol": "TCP", "port": 8080, "appProtocol": "http"},)


def test_a_pod_without_any_resolvable_port_is_no_endpoint():
    svc = service(ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"}])
    slices = converge(svc, [pod(1, ports=[{"name": "web", "containerPort": 8080}]), pod(2)])
    assert list(endpoints_of(slices)) == ["web-001"]


def test_headless_service_without_ports_lists_addresses():
    [s] = converge(service(clusterIP="None", ports=[]), [pod(1), pod(2)])
    assert "ports" not in s and sorted(endpoints_of([s])) == ["web-001", "web-002"]


# --- slices: reuse, fill, split, empty ------------------------------------------------------------------------

def test_no_endpoints_keeps_one_placeholder():
    plan = plan_slices(service(), [], [])
    assert not plan.update and not plan.delete and len(plan.create) == 1
    assert plan.create[0]["endpoints"] == [] and "ports" not in plan.create[0]
    [placeholder] = converge(service(), [])
    # endpoints arrive: the placeholder goes, a real slice comes
    slices = converge(service(), [pod(1)], [placeholder])
    assert [s["metadata"]["name"] for s in slices] != [placeholder["metadata"]["name"]]
    # and when they leave, the emptied slice becomes the placeholder
    again = converge(service(), [], slices)
    assert len(again) == 1 and again[0]["endpoints"] == [] and "ports" not in again[0]
    assert again[0]["metadata"]["name"] == slices[0]["metadata"]["name"]


def test_at_most_100_endpoints_per_slice():
    pods = [pod(i) for i in range(250)]
    slices = converge(service(), pods)
    assert sorted(len(s["endpoints"]) for s in slices) == [50, 100, 100]
    assert len(endpoints_of(slices)) == 250


def test_a_readiness_change_rewrites_only_its_slice():
    pods = [pod(i) for i in range(150)]
    slices = converge(service(), pods)
    pods[7] = pod(7, ready=False)
    plan = plan_slices(service(), pods, slices)
    assert not plan.create and not plan.delete and len(plan.update) == 1
    [upd] = plan.update
    assert next(e for e in upd["endpoints"] if e["targetRef"]["name"] == "web-007")["conditions"]["ready"] is False
    assert len(upd["endpoints"]) == next(len(s["endpoints"]) for s in slices
                                         if s["metadata"]["name"] == upd["metadata"]["name"])


def test_new_endpoints_fill_slices_with_room_before_new_slices():
    slices = converge(service(), [pod(i) for i in range(150)])          # 100 + 50
    grown = [pod(i) for i in range(190)]
    plan = plan_slices(service(), grown, slices)
    assert not plan.create and len(plan.update) == 1                  # 40 more fit the slice of 50
    slices = apply(slices, plan)
    assert sorted(len(s["endpoints"]) for s in slices) == [90, 100]


def test_removed_endpoints_leave_their_slices_which_go_when_empty():
    slices = converge(service(), [pod(i) for i in range(150)])
    half = next(s for s in slices if len(s["endpoints"]) == 50)
    small = converge(service(), [pod(i) for i in range(100, 150)], slices)
    assert [(s["metadata"]["name"], len(s["endpoints"])) for s in small] == [(half["metadata"]["name"], 50)]
    assert sorted(endpoints_of(small)) == [f"web-{i:03d}" for i in range(100, 150)]


def test_a_pod_is_listed_once_even_when_two_slices_hold_it():
    slices = converge(service(), [pod(1), pod(2)])
    dup = dict(slices[0], metadata=dict(slices[0]["metadata"], name="web-dup"))
    healed = converge(service(), [pod(1), pod(2)], slices + [dup])
    assert sorted(e["targetRef"]["name"] for s in healed for e in s["endpoints"]) == ["web-001", "web-002"]


def test_slices_of_other_address_types_are_replaced():
    foreign = {"metadata": {"name": "web-v6", "namespace": "d", "labels": {}}, "addressType": "IPv6",
               "endpoints": [{"addresses": ["fd00::1"]}]}
    plan = plan_slices(service(), [pod(1)], [foreign])
    assert plan.delete == [foreign] and len(plan.create) == 1


def test_labels_follow_the_service():
    slices = converge(service(), [pod(1)])
    relabelled = service()
    relabelled["metadata"]["labels"] = {"team": "b"}
    plan = plan_slices(relabelled, [pod(1)], slices)
    assert [s["metadata"]["labels"]["team"] for s in plan.update] == ["b"]


# --- the legacy Endpoints object ------------------------------------------------------------------------------

def test_endpoints_split_ready_and_not_ready_and_drop_terminating():
    ep = plan_endpoints(service(), [pod(3), pod(1), pod(2, ready=False), pod(4, deleting=True), pod(5, ip=None)])
    [ss] = ep["subsets"]
    assert [a["ip"] for a in ss["addresses"]] == ["10.244.0.2", "10.244.0.4"]
    assert [a["ip"] for a in ss["notReadyAddresses"]] == ["10.244.0.3"]
    assert ss["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert ss["addresses"][0] == {"ip": "10.244.0.2", "nodeName": "n1",
                                  "targetRef": {"kind": "Pod", "namespace": "d", "name": "web-001", "uid": "uid-1"}}
    assert ep["metadata"]["labels"] == {"team": "a", "endpoints.kubernetes.io/managed-by": "endpoint-controller"}


def test_endpoints_with_publish_not_ready_addresses_keep_everyone_ready():
    ep = plan_endpoints(service(publishNotReadyAddresses=True), [pod(1, ready=False), pod(2, deleting=True)])
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == ["10.244.0.2", "10.244.0.3"]


def test_endpoints_subsets_by_port_set_and_unnamed_port_without_name():
    svc = service(ports=[{"port": 80, "protocol": "TCP", "targetPort": "web"}])
    ep = plan_endpoints(svc, [pod(1, ports=[{"name": "web", "containerPort": 8080}]),
                              pod(2, ports=[{"name": "web", "containerPort": 9090}])])
    assert sorted(ss["ports"][0]["port"] for ss in ep["subsets"]) == [8080, 9090]
    assert all("name" not in ss["ports"][0] for ss in ep["subsets"])


def test_endpoints_without_pods_have_no_subsets_and_over_1000_are_truncated():
    assert "subsets" not in plan_endpoints(service(), [])
    big = plan_endpoints(service(), [pod(i, ready=i % 2 == 0) for i in range(1100)])
    total = sum(len(ss.get("addresses", [])) + len(ss.get("notReadyAddresses", [])) for ss in big["subsets"])
    assert total == 1000 and len(big["subsets"][0]["addresses"]) == 550          # ready ones kept first
    assert big["metadata"]["annotations"] == {"endpoints.kubernetes.io/over-capacity": "truncated"}


def test_headless_endpoints_are_labelled():
    ep = plan_endpoints(service(clusterIP="None", ports=[]), [pod(1)])
    assert ep["metadata"]["labels"][HEADLESS_LABEL] == "" and "ports" not in ep["subsets"][0]


# --- ServiceLB -------------------------------------------------------------------------------------------------

def node(name: str, ready: bool, **addresses) -> dict:
    return {"metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "addresses": [{"type": t, "address": a} for t, a in addresses.items()]}}


def test_load_balancer_ingress_is_the_ready_nodes():
    nodes = [node("c", True, InternalIP="192.168.1.10"), node("a", True, InternalIP="192.168.1.9"),
             node("b", False, InternalIP="192.168.1.11"), node("d", True, Hostname="d")]
    assert lb_ingress(nodes) == [{"ip": "192.168.1.9", "ipMode": "VIP"}, {"ip": "192.168.1.10", "ipMode": "VIP"}]
    nodes.append(node("e", True, InternalIP="192.168.1.12", ExternalIP="203.0.113.5"))
    assert lb_ingress(nodes) == [{"ip": "203.0.113.5", "ipMode": "VIP"}]           # external addresses win
    assert lb_ingress([node("b", False, InternalIP="192.168.1.11")]) == []


def test_local_load_balancers_list_the_nodes_with_ready_endpoints():
    nodes = [node("n1", True, InternalIP="192.168.1.1"), node("n2", True, InternalIP="192.168.1.2"),
             node("n3", True, InternalIP="192.168.1.3")]
    slices = [{"endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "n1", "conditions": {"ready": True}},
                             {"addresses": ["10.244.3.5"], "nodeName": "n3", "conditions": {"ready": False}},
                             {"addresses": ["10.244.2.5"], "nodeName": "n2"}]}]       # no conditions: ready
    assert local_endpoint_nodes(slices) == {"n1", "n2"}
    assert [i["ip"] for i in lb_ingress(nodes, only=local_endpoint_nodes(slices))] == ["192.168.1.1", "192.168.1.2"]
    assert lb_ingress(nodes, only=set()) == []
