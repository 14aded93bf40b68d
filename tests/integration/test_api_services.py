"""Services on a real API server: cluster IPs and node ports allocated with the Service (never
twice, also under concurrent creates), honoured when chosen, freed on delete, kept on update
and across a restart; the type changes that gain or give up node ports; dry runs that
allocate nothing; the LoadBalancer status; Endpoints and EndpointSlices as plain objects."""
from __future__ import annotations

import ipaddress
import threading

import pytest

from shoal.apiserver.allocation import POOL_CLUSTER_IP, POOL_NODE_PORT
from shoal.machinery.api import errors
from shoal.machinery.api.resources import resolve
from shoal.testkit.apiserver import start_test_server

pytestmark = pytest.mark.integration


def svc(name: str, ns: str = "default", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}


def held(srv, pool: str) -> dict[int, str]:
    return srv.store.allocations(pool)


def ips_of(srv) -> set[str]:
    return {str(ipaddress.IPv4Address(v)) for v in held(srv, POOL_CLUSTER_IP)}


def invalid(fn) -> list[tuple[str, str]]:
    with pytest.raises(errors.Invalid) as e:
        fn()
    return [(c.field, c.message) for c in e.value.causes]


def test_create_allocates_a_cluster_ip_from_the_range(api):
    c = api.client()
    made = c.create("services", svc("web"))
    spec = made["spec"]
    assert ipaddress.ip_address(spec["clusterIP"]) in ipaddress.ip_network("10.43.0.0/16")
    assert spec["clusterIPs"] == [spec["clusterIP"]] and spec["clusterIP"] != "10.43.0.1"
    assert spec["type"] == "ClusterIP" and spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert made["status"] == {"loadBalancer": {}}
    assert c.get("services", "web", "default") == made
    assert ips_of(api) == {spec["clusterIP"]}
    assert held(api, POOL_CLUSTER_IP) == {int(ipaddress.ip_address(spec["clusterIP"])): "services/default/web"}


def test_concurrent_creates_never_share_a_value(tmp_path):
    # a /27 (29 usable addresses) and 30 node ports: 24 NodePort Services at once collide often
    srv = start_test_server(tmp_path, service_cidr="10.96.0.0/27", service_node_port_range="30000-30029")
    try:
        made: list[dict] = []
        failures: list[BaseException] = []
        lock = threading.Lock()

        def create(i: int) -> None:
            with srv.client() as c:
                try:
                    out = c.create("services", svc(f"s{i}", type="NodePort"))
                except BaseException as e:  # noqa: BLE001 — reported below
                    with lock:
                        failures.append(e)
                    return
            with lock:
                made.append(out)
        threads = [threading.Thread(target=create, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures
        ips = [s["spec"]["clusterIP"] for s in made]
        ports = [s["spec"]["ports"][0]["nodePort"] for s in made]
        assert len(set(ips)) == 24 and len(set(ports)) == 24
        assert "10.96.0.1" not in ips
        assert all(ipaddress.ip_address(i) in ipaddress.ip_network("10.96.0.0/27") for i in ips)
        assert all(30000 <= p <= 30029 for p in ports)
        assert ips_of(srv) == set(ips) and set(held(srv, POOL_NODE_PORT)) == set(ports)
    finally:
        srv.stop()


def test_values_are_freed_on_delete_and_reused(tmp_path):
    srv = start_test_server(tmp_path, service_cidr="10.96.0.0/28", service_node_port_range="30000-30001")
    try:
        c = srv.client()
        made = [c.create("services", svc(f"s{i}")) for i in range(13)]           # .2 - .14: all of them
        with pytest.raises(errors.ApiError) as full:
            c.create("services", svc("one-more"))
        assert full.value.code == 500 and "failed to allocate a serviceIP: range is full" in full.value.message
        c.delete("services", "s3", "default")
        assert made[3]["spec"]["clusterIP"] not in ips_of(srv)
        again = c.create("services", svc("one-more"))
        assert again["spec"]["clusterIP"] == made[3]["spec"]["clusterIP"]
        # node ports likewise (two of them in this range), and a failed create holds no address
        c.delete("services", "s4", "default")
        c.delete("services", "s5", "default")
        np = c.create("services", svc("np", type="NodePort", ports=[{"name": "a", "port": 80},
                                                                    {"name": "b", "port": 81}]))
        with pytest.raises(errors.ApiError, match="failed to allocate a nodePort: range is full"):
            c.create("services", svc("np2", type="NodePort"))
        assert len(ips_of(srv)) == 12                 # 13 - s3 + one-more - s4 - s5 + np: np2 holds none
        c.delete("services", "np", "default")
        assert held(srv, POOL_NODE_PORT) == {}
        np2 = c.create("services", svc("np2", type="NodePort"))
        assert np2["spec"]["ports"][0]["nodePort"] in {p["nodePort"] for p in np["spec"]["ports"]}
    finally:
        srv.stop()


def test_a_chosen_cluster_ip_is_honoured_if_free(api):
    c = api.client()
    made = c.create("services", svc("dns", clusterIP="10.43.0.10"))
    assert made["spec"]["clusterIPs"] == ["10.43.0.10"]
    assert invalid(lambda: c.create("services", svc("dns2", clusterIP="10.43.0.10"))) == [
        ("spec.clusterIPs", 'Invalid value: ["10.43.0.10"]: failed to allocate IP 10.43.0.10: provided IP is already '
                            'allocated')]
    assert invalid(lambda: c.create("services", svc("k", clusterIP="10.43.0.1")))[0][1].endswith(
        "provided IP is already allocated")                                    # reserved for kubernetes
    [(field, message)] = invalid(lambda: c.create("services", svc("far", clusterIP="10.0.0.10")))
    assert field == "spec.clusterIPs" and message.endswith(
        "the provided IP (10.0.0.10) is not in the valid range. The range of valid IPs is 10.43.0.0/16")
    with pytest.raises(errors.NotFound):
        c.get("services", "dns2", "default")
    assert ips_of(api) == {"10.43.0.10"}


def test_node_ports_in_the_range_chosen_or_allocated(tmp_path):
    srv = start_test_server(tmp_path, service_node_port_range="31000-31100")
    try:
        c = srv.client()
        auto = c.create("services", svc("a", type="NodePort"))
        assert 31000 <= auto["spec"]["ports"][0]["nodePort"] <= 31100
        chosen = c.create("services", svc("b", type="NodePort", ports=[{"port": 80, "nodePort": 31050}]))
        assert chosen["spec"]["ports"][0]["nodePort"] == 31050
        assert invalid(lambda: c.create("services", svc("c", type="NodePort",
                                                         ports=[{"port": 80, "nodePort": 31050}]))) == [
            ("spec.ports[0].nodePort", "Invalid value: 31050: provided port is already allocated")]
        assert invalid(lambda: c.create("services", svc("d", type="NodePort",
                                                         ports=[{"port": 80, "nodePort": 30080}]))) == [
            ("spec.ports[0].nodePort", "Invalid value: 30080: provided port is not in the valid range. The range of "
                                       "valid ports is 31000-31100")]
        lb = c.create("services", svc("lb", type="LoadBalancer", externalTrafficPolicy="Local"))
        hc = lb["spec"]["healthCheckNodePort"]
        assert 31000 <= hc <= 31100 and hc != lb["spec"]["ports"][0]["nodePort"]
        assert set(held(srv, POOL_NODE_PORT)) == {auto["spec"]["ports"][0]["nodePort"], 31050,
                                                   lb["spec"]["ports"][0]["nodePort"], hc}
    finally:
        srv.stop()


def test_update_keeps_values_and_type_changes_gain_or_give_up_node_ports(api):
    c = api.client()
    made = c.create("services", svc("web"))
    ip = made["spec"]["clusterIP"]
    # the manifest again, without the allocated values (kubectl replace, or a PUT of the file)
    again = c.update("services", dict(svc("web"), metadata=dict(made["metadata"])))
    assert again["spec"]["clusterIP"] == ip
    assert invalid(lambda: c.update("services", dict(svc("web", clusterIP="10.43.9.9"),
                                                     metadata=dict(again["metadata"])))) == [
        ("spec.clusterIPs[0]", 'Invalid value: ["10.43.9.9"]: may not change once set')]
    np = c.patch("services", "web", {"spec": {"type": "NodePort"}}, "default")
    port = np["spec"]["ports"][0]["nodePort"]
    assert 30000 <= port <= 32767 and np["spec"]["externalTrafficPolicy"] == "Cluster"
    assert set(held(api, POOL_NODE_PORT)) == {port}
    back = c.patch("services", "web", {"spec": {"type": "ClusterIP"}}, "default")
    assert "nodePort" not in back["spec"]["ports"][0] and "externalTrafficPolicy" not in back["spec"]
    assert held(api, POOL_NODE_PORT) == {} and ips_of(api) == {ip}
    c.delete("services", "web", "default")
    assert held(api, POOL_CLUSTER_IP) == {}


def test_allocations_survive_a_restart(tmp_path):
    srv = start_test_server(tmp_path)
    try:
        made = srv.client().create("services", svc("web", type="NodePort"))
    finally:
        srv.stop()
    srv = start_test_server(tmp_path)
    try:
        c = srv.client()
        ip, port = made["spec"]["clusterIP"], made["spec"]["ports"][0]["nodePort"]
        assert c.get("services", "web", "default")["spec"]["clusterIP"] == ip
        [(field, message)] = invalid(lambda: c.create("services", svc("other", clusterIP=ip)))
        assert message.endswith("provided IP is already allocated")
        assert invalid(lambda: c.create("services", svc("other", type="NodePort",
                                                         ports=[{"port": 80, "nodePort": port}])))
        c.delete("services", "web", "default")
        assert c.create("services", svc("other", clusterIP=ip, type="NodePort",
                                        ports=[{"port": 80, "nodePort": port}]))["spec"]["clusterIP"] == ip
    finally:
        srv.stop()


def test_dry_run_allocates_nothing(api):
    c = api.client()
    path = resolve("services").path(namespace="default")
    before = api.store.current_revision()
    out = c.request("POST", path, params={"dryRun": "All"}, body=svc("web", type="NodePort"))
    assert ipaddress.ip_address(out["spec"]["clusterIP"]) in ipaddress.ip_network("10.43.0.0/16")
    assert out["spec"]["ports"][0]["nodePort"]                            # what a real create would get now
    assert held(api, POOL_CLUSTER_IP) == {} and held(api, POOL_NODE_PORT) == {}
    assert api.store.current_revision() == before
    with pytest.raises(errors.NotFound):
        c.get("services", "web", "default")
    # the values a dry run showed are still free
    real = c.create("services", svc("web", clusterIP=out["spec"]["clusterIP"], type="NodePort",
                                    ports=[{"port": 80, "nodePort": out["spec"]["ports"][0]["nodePort"]}]))
    assert real["spec"]["clusterIP"] == out["spec"]["clusterIP"]
    # a dry run that asks for a taken value fails as the real create would, and changes nothing
    rev = api.store.current_revision()
    with pytest.raises(errors.Invalid, match="provided IP is already allocated"):
        c.request("POST", path, params={"dryRun": "All"}, body=svc("web2", clusterIP=real["spec"]["clusterIP"]))
    # dry-run update (a type change) and delete keep the stored allocations as they are
    c.request("PATCH", resolve("services").path("web", "default"), params={"dryRun": "All"},
              body={"spec": {"type": "ClusterIP"}}, content_type="application/merge-patch+json")
    c.request("DELETE", resolve("services").path("web", "default"), params={"dryRun": "All"})
    assert api.store.current_revision() == rev
    assert set(held(api, POOL_NODE_PORT)) == {real["spec"]["ports"][0]["nodePort"]}
    assert ips_of(api) == {real["spec"]["clusterIP"]}


def test_load_balancer_status_through_the_status_subresource_only(api):
    c = api.client()
    lb = c.create("services", dict(svc("lb", type="LoadBalancer"),
                                   status={"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}))
    assert lb["status"] == {"loadBalancer": {}}                          # a create carries no status
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    out = c.update_status("services", lb)
    assert out["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.1", "ipMode": "VIP"}]
    out["status"] = {"loadBalancer": {}}
    kept = c.update("services", out)                                     # the main resource ignores status
    assert kept["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.1", "ipMode": "VIP"}]
    plain = c.create("services", svc("plain"))
    plain["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    assert invalid(lambda: c.update_status("services", plain)) == [
        ("status.loadBalancer.ingress", "Forbidden: may only be used when `spec.type` is 'LoadBalancer'")]
    # leaving LoadBalancer clears its status
    cleared = c.patch("services", "lb", {"spec": {"type": "ClusterIP"}}, "default")
    assert cleared["status"] == {"loadBalancer": {}}


def test_endpoints_and_endpointslices_are_plain_objects(api):
    c = api.client()
    ep = c.create("endpoints", {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext"},
                                "subsets": [{"addresses": [{"ip": "192.0.2.7"}], "ports": [{"port": 5432}]}]})
    assert ep["subsets"][0]["ports"] == [{"port": 5432, "protocol": "TCP"}]
    es = c.create("endpointslices", {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                                     "metadata": {"name": "ext-1", "labels": {"kubernetes.io/service-name": "ext"}},
                                     "addressType": "IPv4", "endpoints": [{"addresses": ["192.0.2.7"]}],
                                     "ports": [{"port": 5432}]})
    assert es["ports"] == [{"name": "", "protocol": "TCP", "port": 5432}]
    assert [s["metadata"]["name"] for s in c.list("endpointslices", "default",
                                                  label_selector="kubernetes.io/service-name=ext")["items"]] == ["ext-1"]
    es["addressType"] = "FQDN"
    assert invalid(lambda: c.update("endpointslices", es)) == [
        ("addressType", 'Invalid value: "FQDN": field is immutable')]
    assert c.get("ep", "ext", "default")["subsets"] == ep["subsets"]


def test_namespace_deletion_releases_its_services_values(api):
    c = api.client()
    c.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    made = c.create("services", svc("web", "team", type="NodePort"))
    assert ips_of(api) == {made["spec"]["clusterIP"]}
    c.delete("namespaces", "team")
    from shoal.testkit.apiserver import wait_for
    wait_for(lambda: not ips_of(api) and not held(api, POOL_NODE_PORT), what="the namespace's values released")
