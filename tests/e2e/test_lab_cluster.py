"""Multi-host behaviour on a real 3-host `shoal lab`: spread and cross-host traffic,
rollouts, liveness restarts, a host that dies, a partition, node credentials, and
`shoal lab down` leaving nothing.

One lab serves the whole module (bringing one up takes ~20 s); tests run in file
order and each leaves the lab with every host up again. The finalizer always
runs `down`; the last test checks that `down` left nothing. Recovery times are
printed (bench/recovery.py records them), never asserted; waits have generous
deadlines and report the last state they saw.
"""
from __future__ import annotations

import base64
import os
import ssl
import time

import httpx
import pytest

from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client

from lab_fixtures import LabHandle, is_ready, wait, web_deployment

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, runc, cgroups)"),
]

SEL = "app=web"


@pytest.fixture(scope="module")
def lab():
    h = LabHandle.start(3)
    try:
        yield h
    finally:
        h.close()


def ready_pods(lab: LabHandle, selector: str = SEL, *, exclude_node: str | None = None) -> list[dict]:
    return [p for p in lab.pods(selector) if is_ready(p) and p["spec"].get("nodeName") != exclude_node]


def wait_deployment_ready(lab: LabHandle, n: int, selector: str = SEL, timeout: float = 120, **kw) -> list[dict]:
    return wait(f"{n} ready pods for {selector}",
                lambda: (lambda ps: ps if len(ps) == n else None)(ready_pods(lab, selector, **kw)), timeout)


# ---------------------------------------------------------------------------- spread + overlay
def test_six_replicas_spread_and_reach_each_other_by_pod_ip(lab):
    lab.client.create("deployments", web_deployment(lab.images["web:v1"]), "default")
    pods = wait_deployment_ready(lab, 6)
    by_host: dict[str, list[dict]] = {}
    for p in pods:
        by_host.setdefault(p["spec"]["nodeName"], []).append(p)
    assert sorted(by_host) == ["h1", "h2", "h3"], {h: len(v) for h, v in by_host.items()}
    a, b, c = by_host["h1"][0], by_host["h2"][0], by_host["h3"][0]
    for src, dst in ((a, b), (a, c), (c, a)):
        url = f"http://{dst['status']['podIP']}:8080/index.html"
        got = lab.http_from_pod(src, url)
        assert got == "version v1\n", f"{src['metadata']['name']} on {src['spec']['nodeName']} -> {url}: {got!r}"
    # hosts reach pods on other hosts too
    p = lab.host_exec("h2", ["busybox", "timeout", "5", "busybox", "wget", "-qO-",
                             f"http://{a['status']['podIP']}:8080/index.html"])
    assert p.stdout == "version v1\n", p.stderr


# ---------------------------------------------------------------------------- rollout
def test_rollout_of_a_new_digest_holds_the_bounds(lab):
    replicas, surge, unavailable = 6, 1, 1
    dep = lab.client.get("deployments", "web", "default")
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = lab.images["web:v2"]
    lab.client.update("deployments", dep)
    violations, states = [], 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        pods = lab.pods(SEL)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        ready = [p for p in live if is_ready(p)]
        states += 1
        if len(live) > replicas + surge:
            violations.append(f"{len(live)} pods > {replicas}+{surge}")
        if len(ready) < replicas - unavailable:
            violations.append(f"{len(ready)} ready < {replicas}-{unavailable}")
        new = [p for p in ready if p["spec"]["containers"][0]["image"] == lab.images["web:v2"]]
        if len(new) == replicas and len(live) == replicas:
            break
        time.sleep(0.1)
    assert not violations, f"rolling-update bounds broken in {len(violations)} of {states} states: {violations[:5]}"
    r = lab.shoal("rollout", "status", "deployment/web", "--timeout", "120s")
    assert r.returncode == 0, r.stdout + r.stderr
    pods = wait_deployment_ready(lab, replicas)
    digest = lab.digests["web:v2"]
    for p in pods:
        ids = [cs.get("imageID", "") for cs in p["status"]["containerStatuses"]]
        assert ids and all(i.endswith(digest) for i in ids), (p["metadata"]["name"], ids)
    assert len({p["spec"]["nodeName"] for p in pods}) == 3
    got = lab.http_from_pod(pods[0], f"http://{pods[-1]['status']['podIP']}:8080/index.html")
    assert got == "version v2\n"


# ---------------------------------------------------------------------------- liveness
def test_liveness_probe_restarts_on_every_host(lab):
    dep = web_deployment(lab.images["flaky:v1"], 3, name="flaky", env=[{"name": "FAIL_AFTER", "value": "4"}],
                         probes={"livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                                   "periodSeconds": 1, "failureThreshold": 2}})
    lab.client.create("deployments", dep, "default")
    try:
        def restarted():
            pods = [p for p in lab.pods("app=flaky") if not p["metadata"].get("deletionTimestamp")]
            counts = {p["metadata"]["name"]: (p["spec"].get("nodeName"),
                                              sum(cs.get("restartCount", 0)
                                                  for cs in p["status"].get("containerStatuses") or []))
                      for p in pods}
            return counts if len(counts) == 3 and all(n >= 1 for _, n in counts.values()) else None
        counts = wait("every flaky pod restarted by its liveness probe", restarted, timeout=150)
        assert len({host for host, _ in counts.values()}) >= 2, counts
        wide = lab.shoal("get", "pods", "-l", "app=flaky", "-o", "wide", check=True).stdout
        for name, (host, n) in counts.items():
            line = next(ln for ln in wide.splitlines() if ln.startswith(name))
            assert host in line.split(), line
            restarts = int(line.split()[3])
            assert restarts >= 1, line
        name = sorted(counts)[0]
        # events follow the state they describe (an agent holds them while busy, up to 1 s)
        def described():
            desc = lab.shoal("describe", "pod", name, check=True).stdout
            return desc if "Liveness probe failed" in desc and "Killing" in desc else None
        desc = wait(f"describe pod {name} showing the probe's events", described, timeout=30)
        assert "Restart Count:" in desc, desc
    finally:
        lab.client.delete("deployments", "flaky", "default")
        wait("flaky pods gone", lambda: not lab.pods("app=flaky"), timeout=60)


# ---------------------------------------------------------------------------- node credentials
def test_node_credential_is_confined_to_its_node(lab):
    import json
    creds = json.loads(open(f"{lab.plan.host('h1').data_dir}/credentials.json").read())
    ca = base64.b64encode(creds["ca"].encode()).decode()
    api = f"https://127.0.0.1:{lab.state.api_port}"
    node = Client(api, creds["token"], ca_data=ca)
    pods = wait_deployment_ready(lab, 6)
    theirs = next(p for p in pods if p["spec"]["nodeName"] != "h1")
    mine = next(p for p in pods if p["spec"]["nodeName"] == "h1")
    try:
        with pytest.raises(errors.Forbidden):                                    # another node's pod: not its to read
            node.get("pods", theirs["metadata"]["name"], "default")
        assert node.get("pods", mine["metadata"]["name"], "default")["spec"]["nodeName"] == "h1"
        with pytest.raises(errors.Forbidden):
            node.update_status("pods", dict(theirs, status={**theirs["status"], "phase": "Failed"}))
        with pytest.raises(errors.Forbidden):
            node.delete("pods", theirs["metadata"]["name"], "default", grace_period_seconds=0)
        with pytest.raises(errors.Forbidden):
            node.patch("deployments", "web", {"spec": {"replicas": 1}}, namespace="default")
        with pytest.raises(errors.Forbidden):
            node.delete("deployments", "web", "default")
        with pytest.raises(errors.Forbidden):
            node.patch("nodes", "h2", {"metadata": {"labels": {"x": "y"}}})
        node.patch("nodes", "h1", {"metadata": {"labels": {"lab-test": "ok"}}})  # its own Node: allowed
        node.update_status("pods", dict(mine, status=mine["status"]))          # its own pod's status: allowed
        with pytest.raises(errors.Unauthorized):
            Client(api, creds["token"] + "x", ca_data=ca).list("pods", "default")
        # plain HTTP to the TLS port: no API answer
        try:
            r = httpx.get(api.replace("https://", "http://") + "/api/v1/pods",
                          headers={"Authorization": f"Bearer {creds['token']}"}, timeout=5)
        except httpx.HTTPError:
            pass
        else:
            assert r.status_code == 400 and "items" not in r.text
        # a client trusting another CA refuses the server
        from shoal.apiserver import tls
        other = tls.new_ca(now=__import__("datetime").datetime.now(__import__("datetime").timezone.utc))[0]
        from cryptography.hazmat.primitives import serialization
        other_b64 = base64.b64encode(other.public_bytes(serialization.Encoding.PEM)).decode()
        with pytest.raises(Exception) as ei:
            Client(api, creds["token"], ca_data=other_b64).list("pods", "default")
        assert "CERTIFICATE_VERIFY_FAILED" in str(ei.value) or isinstance(ei.value.__cause__, ssl.SSLError)
    finally:
        node.close()


# ---------------------------------------------------------------------------- a host dies
def test_stop_host_replaces_its_pods_elsewhere_and_peers_drop_it(lab):
    pods = wait_deployment_ready(lab, 6)
    victim = "h3"
    assert any(p["spec"]["nodeName"] == victim for p in pods)
    h3 = lab.plan.host(victim)
    t0 = time.monotonic()
    lab.lab.stop_host(victim)
    wait(f"{victim} NotReady", lambda: not lab.node_ready(victim), timeout=60, interval=0.1)
    t_notready = time.monotonic() - t0
    wait_deployment_ready(lab, 6, exclude_node=victim, timeout=120)
    t_replaced = time.monotonic() - t0
    print(f"\nstop-host {victim}: NotReady after {t_notready:.1f}s, 6 pods Running+Ready elsewhere after "
          f"{t_replaced:.1f}s (goal <= 15 s)")
    # peers converge to the Ready set: no FDB entry, route or neighbour for the dead host
    h3_cidr = lab.client.get("nodes", victim)["spec"]["podCIDR"]

    def dropped():
        fdb = lab.host_exec("h1", ["bridge", "fdb", "show", "dev", "shoal.1"]).stdout
        routes = lab.host_exec("h1", ["ip", "route", "show", h3_cidr]).stdout
        return f"dst {h3.ip}" not in fdb and not routes.strip()
    wait(f"h1 to drop its overlay entries for {victim}", dropped, timeout=60)
    # the host comes back empty (its containers died with it) and Ready
    lab.lab.start_host(victim)
    lab.refresh()
    wait(f"{victim} Ready again", lambda: lab.node_ready(victim), timeout=90)
    wait(f"h1 to add {victim} back as a peer",
         lambda: f"dst {h3.ip}" in lab.host_exec("h1", ["bridge", "fdb", "show", "dev", "shoal.1"]).stdout,
         timeout=60)
    assert not [c for cs in lab.running_containers().values() for c in cs if c[0] == victim]


# ---------------------------------------------------------------------------- a partition
def test_cut_then_heal_converges_to_one_copy_per_pod(lab):
    pods = wait_deployment_ready(lab, 6)
    victim = next(h for h in ("h2", "h1", "h3") if any(p["spec"]["nodeName"] == h for p in pods))
    on_victim = {p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == victim}
    t0 = time.monotonic()
    lab.lab.set_link(victim, up=False)
    try:
        wait_deployment_ready(lab, 6, exclude_node=victim, timeout=60)
        print(f"\ncut {victim}: 6 pods Ready elsewhere after {time.monotonic() - t0:.1f}s")
        # the cut host cannot hear that its pods were replaced: its copies still run
        stale = {n for n, cs in lab.running_containers().items() if any(h == victim for h, _ in cs)}
        assert stale & on_victim, (stale, on_victim)
        time.sleep(max(0.0, 30 - (time.monotonic() - t0)))
    finally:
        lab.lab.set_link(victim, up=True)
    t1 = time.monotonic()

    def converged():
        api = {p["metadata"]["name"] for p in lab.pods(SEL)}
        running = lab.running_containers()
        web = {n: cs for n, cs in running.items() if n.startswith("web-")}
        ok = (len(api) == 6 and set(web) == api and all(len(cs) == 1 for cs in web.values())
              and len(ready_pods(lab)) == 6)
        return web if ok else None
    wait("one running container per pod after healing", converged, timeout=120, interval=0.5)
    print(f"heal {victim}: converged {time.monotonic() - t1:.1f}s after the link came back")
    for _ in range(10):     # and it stays so
        running = lab.running_containers()
        dup = {n: cs for n, cs in running.items() if n.startswith("web-") and len(cs) > 1}
        assert not dup, dup
        assert len([n for n in running if n.startswith("web-")]) == 6
        time.sleep(0.5)
    dep = lab.client.get("deployments", "web", "default")
    assert dep["spec"]["replicas"] == 6 and len(lab.pods(SEL)) == 6
    wait("node Ready after healing", lambda: lab.node_ready(victim), timeout=60)


# ---------------------------------------------------------------------------- down
def test_lab_down_leaves_nothing(lab):
    assert lab.running_containers()
    lab.close()
    lab.close()         # idempotent
    assert lab.leftovers() == []
