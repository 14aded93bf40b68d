"""Services through the real agents of a 3-host `shoal lab` (issue 18's data path, end to end):
a Deployment of 6 replicas on 3 hosts behind a NodePort Service — the API server allocates the
ClusterIP and the node port, the EndpointSlice controller follows the pods' readiness, and
every agent's service proxy turns that into its host's nftables table.

Shown: the VIP from a pod on every host reaches pods on every host, and from every host; the
NodePort from the lab's outside namespace on every host's address; a pod through its own
Service (hairpin); deleting the Services removes every rule of theirs on every host
(`nft list ruleset` in each host namespace). Each pod answers with its hostname (its name), so
the test sees who answered. "Eventually" waits only (the rules follow the slices within a
debounce).
"""
from __future__ import annotations

import os
import subprocess

import pytest

from lab_fixtures import LabHandle, is_ready, wait

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, runc, cgroups, nftables)"),
]

# busybox httpd serving the pod's hostname (its name) at / and ok at /healthz
SERVE_HOSTNAME = ("mkdir -p /srv && hostname > /srv/index.html && echo ok > /srv/healthz && "
                  "exec httpd -f -p 8080 -h /srv")


def echo_container(image: str) -> dict:
    return {"name": "web", "image": image, "command": ["sh", "-c", SERVE_HOSTNAME],
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}}


def service(name: str, selector: dict, typ: str = "ClusterIP") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": typ, "selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def fetch_loop(url: str, n: int) -> list[str]:
    # one connection per request: each is balanced anew; busybox wget has no working -T
    return ["sh", "-c", f"for i in $(seq 1 {n}); do timeout 3 wget -qO- {url} || echo FAILED; done"]


@pytest.fixture(scope="module")
def lab():
    h = LabHandle.start(3)
    try:
        yield h
    finally:
        h.close()


def test_a_node_port_service_over_six_replicas_on_three_hosts(lab):
    c = lab.client
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo", "namespace": "default"},
           "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "echo"}},
                    "template": {"metadata": {"labels": {"app": "echo"}},
                                 "spec": {"containers": [echo_container(lab.images["web:v1"])],
                                          "terminationGracePeriodSeconds": 2}}}}
    c.create("deployments", dep, "default")
    solo = c.create("pods", {"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": "solo", "namespace": "default", "labels": {"app": "solo"}},
                             "spec": {"containers": [echo_container(lab.images["web:v1"])],
                                      "terminationGracePeriodSeconds": 2}}, "default")
    svc = c.create("services", service("echo", {"app": "echo"}, "NodePort"), "default")
    c.create("services", service("solo", {"app": "solo"}), "default")
    vip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    solo_vip = c.get("services", "solo", "default")["spec"]["clusterIP"]

    pods = wait("6 ready echo pods", lambda: (lambda ps: ps if len(ps) == 6 else None)(
        [p for p in lab.pods("app=echo") if is_ready(p)]), timeout=120)
    names = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
    assert sorted(set(names.values())) == ["h1", "h2", "h3"], names
    solo = wait("solo ready", lambda: (lambda p: p if is_ready(p) else None)(c.get("pods", "solo", "default")),
                timeout=60)
    wait("the echo EndpointSlice with 6 ready endpoints", lambda: sum(
        1 for s in c.list("endpointslices", "default", label_selector="kubernetes.io/service-name=echo")["items"]
        for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")) == 6, timeout=60)

    def answered(out: str) -> list[str]:
        return [ln.strip() for ln in out.splitlines() if ln.strip()]

    # the VIP from a pod on every host: answers from pods on every host, nothing else
    for host in ("h1", "h2", "h3"):
        client = next(p for p in pods if p["spec"]["nodeName"] == host)

        def spread():
            got = answered(lab.pod_exec(client, fetch_loop(f"http://{vip}/", 24), timeout=120).stdout)
            hosts = {names.get(g) for g in got}
            return got if "FAILED" not in got and None not in hosts and hosts == {"h1", "h2", "h3"} else None
        wait(f"the VIP from a pod on {host} reaching pods on all three hosts", spread, timeout=60)

    # from every host itself
    for host in ("h1", "h2", "h3"):
        got = answered(lab.host_exec(host, ["busybox", *fetch_loop(f"http://{vip}/", 6)], timeout=60).stdout)
        assert got and all(g in names for g in got), (host, got)

    # the NodePort from outside the hosts, on every host's address
    for h in lab.plan.hosts:
        p = subprocess.run(["ip", "netns", "exec", lab.plan.lab_netns, "busybox",
                            *fetch_loop(f"http://{h.ip}:{node_port}/", 6)], capture_output=True, text=True,
                           timeout=60)
        got = answered(p.stdout)
        assert got and all(g in names for g in got), (h.ip, got, p.stderr)

    # hairpin: the solo pod through its own Service lands on itself
    got = wait("solo reaching itself through its Service", lambda: (lambda g: g if g == ["solo"] * 4 else None)(
        answered(lab.pod_exec(solo, fetch_loop(f"http://{solo_vip}/", 4), timeout=60).stdout)), timeout=30)
    assert got == ["solo"] * 4

    # the Services go: nothing of theirs is left on any host
    c.delete("services", "echo", "default")
    c.delete("services", "solo", "default")

    def clean(host: str):
        out = lab.host_exec(host, ["nft", "list", "ruleset"]).stdout
        traces = [t for t in (vip, solo_vip, str(node_port), "chain service-", "chain endpoint-", "chain external-")
                  if t in out]
        return "table ip shoal-svc" in out and not traces
    for h in ("h1", "h2", "h3"):
        wait(f"no rule of the deleted Services on {h}", lambda: clean(h), timeout=30)
    c.delete("deployments", "echo", "default")
    c.delete("pods", "solo", "default")


def test_names_headless_and_an_unready_pod_on_three_hosts(lab):
    """Cluster DNS through every host's agent: a pod on each host reaches the Service by `dns`,
    `dns.default` and `dns.default.svc.cluster.local` (its resolv.conf's search path, ndots:5);
    a headless Service resolves to the ready pods only; a pod whose readiness probe fails
    (failureThreshold 1, period 1 s) leaves the endpoints and the headless answer — the time it
    took is printed (timings are not asserted here: bench/ measures them)."""
    import time
    c = lab.client
    web = echo_container(lab.images["web:v1"])
    web["readinessProbe"] = {**web["readinessProbe"], "failureThreshold": 1}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dns", "namespace": "default"},
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "dns"}},
                    "template": {"metadata": {"labels": {"app": "dns"}},
                                 "spec": {"containers": [web], "terminationGracePeriodSeconds": 2}}}}
    c.create("deployments", dep, "default")
    c.create("services", service("dns", {"app": "dns"}), "default")
    hl = service("dns-hl", {"app": "dns"})
    hl["spec"]["clusterIP"] = "None"
    c.create("services", hl, "default")
    pods = wait("3 ready dns pods", lambda: (lambda ps: ps if len(ps) == 3 else None)(
        [p for p in lab.pods("app=dns") if is_ready(p)]), timeout=120)
    names = {p["metadata"]["name"] for p in pods}
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}

    # by name, from a pod on every host (pinned there)
    for host in ("h1", "h2", "h3"):
        c.create("pods", {"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": f"client-{host}", "namespace": "default", "labels": {"app": "client"}},
                          "spec": {"nodeName": host, "containers": [echo_container(lab.images["web:v1"])],
                                   "terminationGracePeriodSeconds": 2}}, "default")
    clients = {host: wait(f"client-{host} ready", lambda h=host: (lambda p: p if is_ready(p) else None)(
        c.get("pods", f"client-{h}", "default")), timeout=60) for host in ("h1", "h2", "h3")}
    for host, client in clients.items():
        for name in ("dns", "dns.default", "dns.default.svc.cluster.local"):
            def by_name():
                out = lab.pod_exec(client, ["sh", "-c", f"timeout 3 wget -qO- http://{name}/ || echo FAILED"],
                                   timeout=30).stdout.strip()
                return out if out in names else None
            wait(f"{name} from a pod on {host}", by_name, timeout=30)

    def headless(client) -> set[str]:
        out = lab.pod_exec(client, ["nslookup", "dns-hl.default.svc.cluster.local"], timeout=30).stdout
        return {ip for ip in ips.values() if ip in out}
    wait("the headless Service -> the 3 ready pods", lambda: headless(clients["h1"]) == set(ips.values()), timeout=30)

    # one pod turns unready: it leaves the slice and the headless answer
    victim = pods[0]
    vname = victim["metadata"]["name"]
    t0 = time.monotonic()
    lab.pod_exec(victim, ["rm", "/srv/healthz"], timeout=30)

    def out_of_slice():
        for s in c.list("endpointslices", "default", label_selector="kubernetes.io/service-name=dns")["items"]:
            for e in s.get("endpoints") or []:
                if (e.get("targetRef") or {}).get("name") == vname:
                    return not (e.get("conditions") or {}).get("ready")
        return True
    wait(f"{vname} out of the ready endpoints", out_of_slice, timeout=30)
    print(f"\nunready pod {vname} left the ready endpoints {time.monotonic() - t0:.2f} s after its probe "
          f"started failing (readiness period 1 s, failureThreshold 1)")
    rest = {ip for n, ip in ips.items() if n != vname}
    wait("the headless Service without the unready pod", lambda: headless(clients["h2"]) == rest, timeout=30)
    c.delete("services", "dns", "default")
    c.delete("services", "dns-hl", "default")
    c.delete("deployments", "dns", "default")
    for host in ("h1", "h2", "h3"):
        c.delete("pods", f"client-{host}", "default")
