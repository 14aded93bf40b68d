"""Draining before SIGTERM: the pure decisions (agent.drainplan, one row per rule), the gate and
the publisher over fake informers (agent.drain), the pod worker holding and releasing its
SIGTERMs, and the service proxy's applied position."""
from __future__ import annotations

import threading

import pytest

from shoal.agent.drain import AppliedPublisher, DrainGate
from shoal.agent.drainplan import (ANN_APPLIED, DrainDecision, endpoint_state, node_is_awaited, plan_drain,
                                   plan_publish, proxies_behind, published_revision, selecting_services, term_grace)
from shoal.machinery.control.clock import FakeClock

pytestmark = pytest.mark.unit
NOW = 1000.0


def pod(uid="u1", labels=None, ns="default", ip="10.244.1.5"):
    return {"metadata": {"name": "web-1", "namespace": ns, "uid": uid, "labels": labels or {"app": "web"},
                         "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "web"}]},
            "status": {"podIP": ip}}


def svc(name="web", selector=None, ns="default"):
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": "web"} if selector is None else selector}}


def ep(uid="u1", ip="10.244.1.5", ready=False, terminating=True, ref=True):
    e = {"addresses": [ip], "conditions": {"ready": ready, "serving": True, "terminating": terminating}}
    if ref:
        e["targetRef"] = {"kind": "Pod", "uid": uid}
    return e


def slc(name="web-abc", rv=50, endpoints=(), service="web", ns="default"):
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv),
                         "labels": {"kubernetes.io/service-name": service}},
            "endpoints": list(endpoints)}


def node(name, applied=None, ready="True", taints=()):
    md = {"name": name, "resourceVersion": "7", "uid": f"uid-{name}"}
    if applied is not None:
        md["annotations"] = {ANN_APPLIED: str(applied)}
    return {"metadata": md, "spec": {"taints": list(taints)},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}


# ---------------------------------------------------------------------------- which Services, which R
@pytest.mark.parametrize("services,selected", [
    ([svc()], ["web"]),
    ([svc(selector={"app": "db"})], []),                         # labels do not match
    ([svc(selector={})], []),                                    # selectorless: its slices are the user's
    ([svc(ns="other")], []),                                     # another namespace
    ([svc("a"), svc("b", selector={"app": "web", "tier": "x"})], ["a"]),   # every selector term must match
])
def test_selecting_services(services, selected):
    assert [s["metadata"]["name"] for s in selecting_services(pod(), services)] == selected


@pytest.mark.parametrize("slices,routable,revision", [
    ([slc(rv=50, endpoints=[ep()])], (), 50),                                       # marked terminating at 50
    ([slc(rv=50, endpoints=[ep(ready=True, terminating=False)])], ("web-abc",), 50),  # controller behind
    ([slc(rv=50, endpoints=[{"addresses": ["10.244.1.5"], "targetRef": {"uid": "u1"}}])], ("web-abc",), 50),
    #  ^ conditions missing: ready nil is true (Kubernetes' reading), so still routable
    ([slc(rv=50, endpoints=[ep(ready=True, terminating=True)])], (), 50),          # publishNotReadyAddresses
    ([slc(rv=50, endpoints=[ep(uid="other", ip="10.244.1.5")])], (), 50),          # same IP, another pod: ref wins
    ([slc(rv=50, endpoints=[ep(ref=False, ready=True, terminating=False)])], ("web-abc",), 50),  # by address
    ([slc("a", 40, [ep()]), slc("b", 60, [ep(uid="x", ip="10.244.2.2")])], (), 40),  # R: the slice listing it
    ([slc("a", 40), slc("b", 60)], (), 60),                     # listed nowhere: every slice of its Services
    ([slc("a", 40, [ep()], service="other")], (), 0),           # another Service's slice does not count
    ([], (), 0),
])
def test_endpoint_state(slices, routable, revision):
    assert endpoint_state(pod(), [svc()], slices) == type(endpoint_state(pod(), [], []))(routable, revision)


# ---------------------------------------------------------------------------- which nodes
@pytest.mark.parametrize("n,awaited", [
    (node("a", 5), True),
    (node("a", 5, ready="Unknown"), False),                      # the lease lapsed (node lifecycle)
    (node("a", 5, ready="False"), False),
    (node("a", 5, taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]), False),
    (node("a", 5, taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]), True),  # cordoned
])
def test_node_is_awaited(n, awaited):
    assert node_is_awaited(n) is awaited


def test_published_revision():
    assert published_revision(node("a", 17)) == 17
    assert published_revision(node("a")) is None
    bad = node("a")
    bad["metadata"]["annotations"] = {ANN_APPLIED: "soon"}
    assert published_revision(bad) is None


def test_proxies_behind():
    nodes = [node("a", 50), node("b", 49), node("c"), node("d", 10, ready="Unknown"), node("e", 12)]
    assert proxies_behind(nodes, 50) == ("b", "e")              # c runs no proxy, d is not Ready
    assert proxies_behind(nodes, 50, own_node="e", own_applied=55) == ("b",)   # own position is fresher
    assert proxies_behind(nodes, 50, own_node="c", own_applied=3) == ("b", "c", "e")
    assert proxies_behind(nodes, 0) == ()


# ---------------------------------------------------------------------------- the decision
def decide(*, services=None, slices=None, nodes=None, synced=True, target=None, started_at=NOW, now=NOW, grace=30,
           cap=10.0, p=None, **kw) -> DrainDecision:
    return plan_drain(p or pod(), grace=grace, services=[svc()] if services is None else services,
                      slices=[slc(rv=50, endpoints=[ep()])] if slices is None else slices,
                      nodes=[node("n1", 50), node("n2", 50)] if nodes is None else nodes, synced=synced,
                      target=target, started_at=started_at, now=now, cap=cap, **kw)


@pytest.mark.parametrize("kw,proceed,target,behind,why", [
    ({}, True, 50, (), "every node's Service rules include revision 50"),
    ({"nodes": [node("n1", 50), node("n2", 49)]}, False, 50, ("n2",), "node(s) n2 have not applied revision 50"),
    ({"nodes": [node("n1", 50), node("n2", 49, ready="Unknown")]}, True, 50, (), "every node"),
    ({"nodes": [node("n1", 50), node("n2")]}, True, 50, (), "every node"),          # n2 runs no proxy
    ({"services": [svc(selector={"app": "db"})]}, True, None, (), "no Service selects it"),
    ({"slices": [slc(rv=50, endpoints=[ep(ready=True, terminating=False)])]}, False, None, (),
     "EndpointSlice(s) web-abc still list it as ready"),
    ({"synced": False}, False, None, (), "not listed yet"),
    ({"grace": 0}, True, None, (), "no grace period"),
    ({"cap": 0}, True, None, (), "no grace period"),
    # R decided earlier is kept, whatever the slices say now (a busy slice keeps moving)
    ({"target": 40, "slices": [slc(rv=90, endpoints=[ep()])], "nodes": [node("n1", 45), node("n2", 41)]},
     True, 40, (), "revision 40"),
    ({"own_node": "n2", "own_applied": 50, "nodes": [node("n1", 50), node("n2", 20)]}, True, 50, (), "every node"),
])
def test_plan_drain(kw, proceed, target, behind, why):
    d = decide(**kw)
    assert (d.proceed, d.target, d.behind) == (proceed, target, behind)
    assert why in d.why
    assert not d.timed_out
    if not proceed:
        assert d.wake_at == NOW + 1.0                            # the safety net; events come sooner


@pytest.mark.parametrize("grace,cap,now,proceed,wake_at", [
    (30, 10.0, NOW + 9.5, False, NOW + 10.0),       # the deadline bounds the wake-up
    (30, 10.0, NOW + 10.0, True, None),             # cap reached
    (3, 10.0, NOW + 3.0, True, None),               # a short grace period bounds it first
    (3, 10.0, NOW + 2.5, False, NOW + 3.0),
])
def test_plan_drain_is_bounded_by_grace_and_cap(grace, cap, now, proceed, wake_at):
    d = decide(nodes=[node("n1", 50), node("n2", 10)], grace=grace, cap=cap, now=now)
    assert (d.proceed, d.wake_at, d.timed_out) == (proceed, wake_at, proceed)
    assert d.waited == now - NOW
    if proceed:
        assert d.why.startswith(f"gave up waiting after {now - NOW:.1f}s: node(s) n2") and d.behind == ("n2",)


@pytest.mark.parametrize("grace,waited,out", [
    (30, 0.0, 30), (30, 0.4, 30), (30, 1.0, 29), (30, 10.0, 20), (3, 2.5, 2), (1, 1.0, 2), (0, 0.0, 0), (0, 1.0, 0),
])
def test_term_grace(grace, waited, out):
    assert term_grace(grace, waited) == out


@pytest.mark.parametrize("want,current,last,now,at", [
    ("50", "50", None, NOW, None),
    ("50", "49", None, NOW, NOW),
    ("50", None, NOW - 1, NOW, NOW),
    ("50", "49", NOW - 0.05, NOW, NOW + 0.15),      # at most every 0.2 s
    (None, "49", None, NOW, NOW),                   # no proxy: remove a stale value
    (None, None, None, NOW, None),
])
def test_plan_publish(want, current, last, now, at):
    assert plan_publish(want=want, current=current, last_write=last, now=now) == (
        pytest.approx(at) if at is not None else None)


# ---------------------------------------------------------------------------- the gate over fake informers
class Src:
    def __init__(self, items=(), synced=True):
        self.items = {self.key(o): o for o in items}
        self.synced = synced
        self.handlers = []

    @staticmethod
    def key(o):
        md = o["metadata"]
        return f"{md['namespace']}/{md['name']}" if md.get("namespace") else md["name"]

    def list(self):
        return list(self.items.values())

    def get(self, key):
        return self.items.get(key)

    def has_synced(self):
        return self.synced

    def add_handler(self, *, on_add=None, on_update=None, on_delete=None, on_list=None):
        self.handlers.append((on_add, on_update, on_delete, on_list))

    def put(self, obj):
        old = self.items.get(self.key(obj))
        self.items[self.key(obj)] = obj
        for add, upd, _, _ in self.handlers:
            if old is None and add:
                add(obj)
            elif old is not None and upd:
                upd(old, obj)


def test_the_gate_waits_for_every_proxy_then_forgets_the_pod():
    clock = FakeClock(start=NOW)
    woken = []
    slices = Src([slc(rv=50, endpoints=[ep(ready=True, terminating=False)])])
    nodes = Src([node("n1", 40), node("n2", 40)])
    own = {"rev": None}
    gate = DrainGate(node_name="n1", services=Src([svc()]), slices=slices, nodes=nodes, clock=clock,
                     wake=woken.append, own_applied=lambda: own["rev"])
    p = pod()
    d = gate.check(p)
    assert not d.proceed and "still list it as ready" in d.why and gate.waiting() == ["u1"]
    clock.advance(0.1)
    slices.put(slc(rv=55, endpoints=[ep()]))                     # the controller marks it terminating
    assert woken == ["u1"]
    d = gate.check(p)
    assert (d.proceed, d.target, d.behind) == (False, 55, ("n1", "n2"))
    nodes.put(node("n2", 56))                                    # n2's proxy publishes
    assert woken == ["u1", "u1"]
    nodes.put({**node("n2", 56), "metadata": {**node("n2", 56)["metadata"], "resourceVersion": "8"}})
    assert woken == ["u1", "u1"]                                 # a change that cannot end the wait wakes nobody
    own["rev"] = 60                                              # our own proxy, fresher than its annotation
    clock.advance(0.2)
    d = gate.check(p)
    assert d.proceed and d.target == 55 and d.waited == pytest.approx(0.3)
    assert gate.waiting() == []
    slices.put(slc(rv=70, endpoints=[ep()]))
    assert woken == ["u1", "u1"]                                 # nobody waits any more


def test_the_gate_times_out_and_a_pod_without_a_service_is_not_held():
    clock = FakeClock(start=NOW)
    gate = DrainGate(node_name="n1", services=Src([svc()]), slices=Src([slc(rv=50, endpoints=[ep()])]),
                     nodes=Src([node("n2", 1)]), clock=clock, wake=lambda uid: None, cap=2.0)
    assert not gate.check(pod()).proceed
    clock.advance(2.0)
    d = gate.check(pod())
    assert d.proceed and d.timed_out and d.behind == ("n2",)
    other = pod(uid="u2", labels={"app": "batch"})
    assert gate.check(other).proceed and gate.waiting() == []


# ---------------------------------------------------------------------------- the publisher
class PatchingClient:
    def __init__(self, nodes: Src, fail=0):
        self.nodes, self.fail = nodes, fail
        self.patches = []
        self.lock = threading.Lock()

    def patch(self, kind, name, body):
        with self.lock:
            if self.fail:
                self.fail -= 1
                raise OSError("connection refused")
            self.patches.append(body)
            n = self.nodes.get(name)
            md = dict(n["metadata"])
            ann = dict(md.get("annotations") or {})
            for k, v in body["metadata"]["annotations"].items():
                if v is None:
                    ann.pop(k, None)
                else:
                    ann[k] = v
            md["annotations"] = ann
            md["resourceVersion"] = str(int(md["resourceVersion"]) + 1)
            new = {**n, "metadata": md}
        self.nodes.put(new)           # the watch echo
        return new


def _until(cond, timeout=5.0):
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_the_publisher_writes_changed_positions_at_most_every_interval():
    nodes = Src([node("n1")])
    client = PatchingClient(nodes)
    pub = AppliedPublisher(client, node_name="n1", nodes=nodes, clock=__import__(
        "shoal.machinery.control.clock", fromlist=["RealClock"]).RealClock(), interval=0.2).start()
    try:
        assert not _until(lambda: client.patches, timeout=0.2)      # nothing before the proxy's first sync
        pub.applied(10)
        assert _until(lambda: published_revision(nodes.get("n1")) == 10)
        for rev in (11, 12, 13):                                     # a burst: the last one wins
            pub.applied(rev)
        assert _until(lambda: published_revision(nodes.get("n1")) == 13)
        assert [p["metadata"]["annotations"][ANN_APPLIED] for p in client.patches] in (["10", "13"],
                                                                                       ["10", "11", "13"])
        pub.applied(13)
        # a Node registered again without the annotation gets it back
        nodes.put({**node("n1"), "metadata": {**node("n1")["metadata"], "uid": "new", "resourceVersion": "1"}})
        assert _until(lambda: published_revision(nodes.get("n1")) == 13)
    finally:
        pub.stop()


def test_a_node_without_a_proxy_removes_a_stale_position_and_writes_nothing_else():
    from shoal.machinery.control.clock import RealClock
    nodes = Src([node("n1", 99)])
    client = PatchingClient(nodes, fail=1)                          # the first attempt fails: retried
    pub = AppliedPublisher(client, node_name="n1", nodes=nodes, clock=RealClock(), interval=0.05).start()
    try:
        pub.absent()
        assert _until(lambda: published_revision(nodes.get("n1")) is None and client.patches)
        assert client.patches == [{"metadata": {"annotations": {ANN_APPLIED: None}}}]
        assert not _until(lambda: len(client.patches) > 1, timeout=0.3)
    finally:
        pub.stop()


# ---------------------------------------------------------------------------- the worker's kill path
class FakeDrainer:
    def __init__(self, decisions):
        self.decisions = list(decisions)
        self.checked, self.forgotten = [], []

    def check(self, pod):
        self.checked.append(pod["metadata"]["uid"])
        return self.decisions.pop(0) if len(self.decisions) > 1 else self.decisions[0]

    def forget(self, uid):
        self.forgotten.append(uid)


def _running_worker(tmp_path, drainer, grace=30):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_agent_worker import _worker
    w = _worker(tmp_path)
    w.ctx.drain = drainer
    # the fake container ignores SIGTERM: its SIGKILL deadline stays in the worker's memory
    w.pod["metadata"]["annotations"] = {"shoal.io/fake-ignore-sigterm": "true"}
    w.sync()
    p = dict(w.pod)
    p["metadata"] = {**p["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z",
                     "deletionGracePeriodSeconds": grace}
    w.set_pod(p)
    return w


def _signals(rt):
    return [c[2] for c in rt.calls if c[0] == "kill"]


def test_the_worker_holds_sigterm_until_the_gate_lets_it_go(tmp_path):
    drainer = FakeDrainer([DrainDecision(False, "node(s) n2 have not applied revision 9", 9, ("n2",),
                                         wake_at=1234.5)])
    w = _running_worker(tmp_path, drainer)
    rt = w.ctx.runtime
    rt.calls.clear()
    assert w.sync() == 1234.5                                    # woken by the gate's deadline at the latest
    assert _signals(rt) == [] and [s.status for s in rt.list()] == ["running"]
    drainer.decisions = [DrainDecision(True, "every node's Service rules include revision 9", 9, waited=3.2)]
    wake = w.sync()
    assert _signals(rt) == [15]                                  # SIGTERM now
    # the wait counted against the grace period: the SIGKILL is due 27 s after SIGTERM, not 30
    assert w.mem.terminating == {"u1-012345678-web-0": w.ctx.clock.now() + 27} and wake == w.ctx.clock.now() + 27
    assert ("Killing", "Stopping container web") in w.ctx.events.seen
    w.ctx.clock.advance(27)
    w.sync()
    assert _signals(rt) == [15, 9]                               # the gate never holds a SIGKILL
    assert len(drainer.checked) == 2
    assert w.done and drainer.forgotten == [w.uid]               # torn down: the gate forgets it


def test_the_worker_warns_when_the_drain_times_out(tmp_path):
    drainer = FakeDrainer([DrainDecision(True, "gave up waiting after 10.0s: node(s) n2 have not applied revision 9",
                                         9, ("n2",), waited=10.0, timed_out=True)])
    w = _running_worker(tmp_path, drainer)
    w.sync()
    assert any(r == "ServiceDrainTimeout" and "n2" in m for r, m in w.ctx.events.seen)
    assert w.mem.terminating == {"u1-012345678-web-0": w.ctx.clock.now() + 20}   # 30 s grace, 10 s spent


def test_a_running_pod_never_asks_the_gate(tmp_path):
    from test_agent_worker import _worker
    w = _worker(tmp_path)
    drainer = FakeDrainer([DrainDecision(False, "x")])
    w.ctx.drain = drainer
    w.sync()
    assert drainer.checked == [] and [s.status for s in w.ctx.runtime.list()] == ["running"]


# ---------------------------------------------------------------------------- the proxy's position
def test_the_proxy_reports_its_applied_position_after_every_sync():
    from shoal.agent.network.runner import CommandError, RecordingRunner
    from shoal.agent.serviceproxy import ServiceProxy

    def respond(argv, stdin):
        if argv[:4] == ["nft", "-t", "-j", "list"]:
            raise CommandError(argv, 1, "Error: No such file or directory")
        return ""
    services = Src([{"metadata": {"namespace": "default", "name": "web", "resourceVersion": "3",
                                  "creationTimestamp": "2024-01-01T00:00:00Z"},
                     "spec": {"clusterIP": "10.43.0.10", "ports": [{"name": "http", "port": 80, "targetPort": 80}]}}])
    slices = Src([slc(rv=50, endpoints=[ep(ready=True, terminating=False)])])
    nodes = Src([{"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0/24"}}])
    proxy = ServiceProxy(node_name="n1", runner=RecordingRunner(respond=respond))
    proxy.attach(services=services, endpointslices=slices, nodes=nodes)
    seen = []
    proxy.on_applied.append(seen.append)
    assert proxy.applied_revision is None
    proxy.sync()
    assert (proxy.applied_revision, seen) == (50, [50])
    slices.put(slc(rv=61, endpoints=[ep()]))                      # not ready any more: the rules change
    proxy.sync()
    assert seen == [50, 61]
    slices.put(slc("other", rv=70, service="nobody"))            # rules unchanged: the position still moves
    stats = proxy.sync()
    assert stats.mode == "unchanged" and seen == [50, 61, 70]


# ---------------------------------------------------------------------------- the proxy's conntrack clean-up
def test_the_proxy_forgets_unanswered_connections_to_addresses_no_slice_lists_any_more():
    from shoal.agent.network.conntrack import RecordingConntrack
    from shoal.agent.network.runner import CommandError, RecordingRunner
    from shoal.agent.serviceproxy import ServiceProxy

    def respond(argv, stdin):
        if argv[:4] == ["nft", "-t", "-j", "list"]:
            raise CommandError(argv, 1, "Error: No such file or directory")
        return ""
    services = Src([{"metadata": {"namespace": "default", "name": "web", "resourceVersion": "3",
                                  "creationTimestamp": "2024-01-01T00:00:00Z"},
                     "spec": {"clusterIP": "10.43.0.10", "ports": [{"name": "http", "port": 80, "targetPort": 80}]}}])
    a, b = ep("ua", "10.244.1.5", ready=True, terminating=False), ep("ub", "10.244.2.6", ready=True, terminating=False)
    slices = Src([slc(rv=50, endpoints=[a, b])])
    nodes = Src([{"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0/24"}}])
    ct = RecordingConntrack()
    proxy = ServiceProxy(node_name="n1", runner=RecordingRunner(respond=respond), conntrack=ct)
    proxy.attach(services=services, endpointslices=slices, nodes=nodes)
    proxy.sync()
    assert ct.calls == []                                        # the first sync knows of nothing gone
    slices.put(slc(rv=51, endpoints=[a, ep("ub", "10.244.2.6")]))   # b terminating: out of the rules, not gone
    proxy.sync()
    assert ct.calls == []                                        # it may still answer: nothing is deleted
    slices.put(slc(rv=52, endpoints=[a]))                        # b's pod is gone
    proxy.sync()
    assert ct.calls == [frozenset({"10.244.2.6"})]
    proxy.sync()
    assert len(ct.calls) == 1                                    # once
