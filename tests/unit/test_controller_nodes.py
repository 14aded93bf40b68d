"""Node lifecycle decisions with a fake clock, eviction delays, and the pod CIDR allocator."""
import pytest

from shoal.controller.nodeipam import next_free_subnet, node_cidrs
from shoal.controller.nodelifecycle import (UNREACHABLE_TAINT, HeartbeatTracker, eviction_delay, evictions_allowed,
                                            plan_node)
from shoal.machinery.api.times import format_time
from shoal.machinery.control import FakeClock

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0


def node(taints=(), ready="True"):
    return {"metadata": {"name": "n1"}, "spec": {"taints": list(taints)},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}


def pod(name="p", tolerations=(), annotations=None):
    return {"metadata": {"name": name, "namespace": "default", "uid": name, "annotations": annotations or {}},
            "spec": {"nodeName": "n1", "tolerations": list(tolerations)}}


def unreachable(effect, at):
    return {"key": UNREACHABLE_TAINT, "effect": effect, "timeAdded": format_time(at)}


def test_fresh_node_needs_nothing_and_requeues_at_grace_expiry():
    plan = plan_node(node(), [pod()], now=T0 + 3, probe_time=T0, grace=8, default_eviction_delay=5)
    assert not plan.set_unknown and plan.taints is None and plan.evict == []
    assert plan.requeue_after == pytest.approx(5.05)


def test_stale_node_goes_unknown_and_tainted_but_pods_wait():
    plan = plan_node(node(), [pod()], now=T0 + 9, probe_time=T0, grace=8, default_eviction_delay=5)
    assert plan.set_unknown
    assert {(t["key"], t["effect"]) for t in plan.taints} == {(UNREACHABLE_TAINT, "NoSchedule"),
                                                              (UNREACHABLE_TAINT, "NoExecute")}
    assert plan.evict == [] and plan.requeue_after == pytest.approx(5.05)


def test_eviction_after_delay_from_taint_time():
    tainted = node([unreachable("NoSchedule", T0 + 9), unreachable("NoExecute", T0 + 9)], ready="Unknown")
    early = plan_node(tainted, [pod()], now=T0 + 13, probe_time=T0, grace=8, default_eviction_delay=5)
    assert not early.set_unknown and early.taints is None and early.evict == []
    late = plan_node(tainted, [pod("a"), pod("b")], now=T0 + 14, probe_time=T0, grace=8, default_eviction_delay=5)
    assert [p["metadata"]["name"] for p in late.evict] == ["a", "b"]


@pytest.mark.parametrize("p,want", [
    (pod(), 5.0),
    (pod(annotations={"shoal.io/eviction-delay-seconds": "2"}), 2.0),
    (pod(annotations={"shoal.io/eviction-delay-seconds": "soon"}), 5.0),
    (pod(tolerations=[{"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute",
                       "tolerationSeconds": 30}]), 30.0),
    (pod(tolerations=[{"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute"}]), None),
    (pod(tolerations=[{"operator": "Exists"}]), None),
    (pod(tolerations=[{"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]), 5.0),
    (pod(tolerations=[{"key": UNREACHABLE_TAINT, "operator": "Exists", "tolerationSeconds": 0}],
         annotations={"shoal.io/eviction-delay-seconds": "9"}), 0.0),
])
def test_eviction_delay(p, want):
    assert eviction_delay(p, 5.0) == want


def test_per_pod_delays_and_forever_toleration():
    tainted = node([unreachable("NoSchedule", T0), unreachable("NoExecute", T0)], ready="Unknown")
    pods = [pod("quick", annotations={"shoal.io/eviction-delay-seconds": "1"}),
            pod("forever", tolerations=[{"key": UNREACHABLE_TAINT, "operator": "Exists"}]), pod("default")]
    plan = plan_node(tainted, pods, now=T0 + 2, probe_time=T0 - 10, grace=8, default_eviction_delay=5)
    assert [p["metadata"]["name"] for p in plan.evict] == ["quick"]
    assert plan.requeue_after == pytest.approx(3.05)


def test_recovered_node_loses_only_its_unreachable_taints():
    other = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    tainted = node([other, unreachable("NoSchedule", T0), unreachable("NoExecute", T0)], ready="Unknown")
    plan = plan_node(tainted, [pod()], now=T0 + 20, probe_time=T0 + 19, grace=8, default_eviction_delay=5)
    assert plan.taints == [other] and plan.evict == [] and not plan.set_unknown


def test_heartbeat_tracker_uses_observation_time_with_fake_clock():
    clock, hb = FakeClock(T0), HeartbeatTracker()
    hb.first_seen("n1", clock.now())
    clock.advance(3)
    hb.observe("n1", "2024-01-01T00:00:00.000000Z", clock.now())
    assert hb.probe_time("n1") == T0 + 3
    clock.advance(4)
    hb.observe("n1", "2024-01-01T00:00:00.000000Z", clock.now())  # same renewTime: not a heartbeat
    assert hb.probe_time("n1") == T0 + 3
    hb.observe("n1", "2024-01-01T00:00:04.000000Z", clock.now())
    assert hb.probe_time("n1") == T0 + 7
    hb.first_seen("n1", clock.now() + 100)  # does not override a real observation
    assert hb.probe_time("n1") == T0 + 7


# -- CIDR allocation ------------------------------------------------------------------------------
@pytest.mark.parametrize("cluster,used,prefix,want", [
    ("10.244.0.0/16", set(), 24, "10.244.0.0/24"),
    ("10.244.0.0/16", {"10.244.0.0/24", "10.244.1.0/24"}, 24, "10.244.2.0/24"),
    ("10.244.0.0/16", {"10.244.0.0/24", "10.244.2.0/24"}, 24, "10.244.1.0/24"),   # freed hole reused first
    ("10.244.0.0/16", {"10.244.0.0/23"}, 24, "10.244.2.0/24"),                   # overlap counts
    ("10.244.0.0/16", {"garbage"}, 24, "10.244.0.0/24"),
    ("10.0.0.0/30", set(), 31, "10.0.0.0/31"),
    ("10.0.0.0/30", {"10.0.0.0/31", "10.0.0.2/31"}, 31, None),                    # exhausted
])
def test_next_free_subnet(cluster, used, prefix, want):
    assert next_free_subnet(cluster, used, prefix=prefix) == want


def test_next_free_subnet_rejects_mask_larger_than_cluster():
    with pytest.raises(ValueError, match="/8 is larger than the cluster CIDR 10.244.0.0/16"):
        next_free_subnet("10.244.0.0/16", set(), prefix=8)


def test_all_256_subnets_then_none():
    used: set[str] = set()
    for _ in range(256):
        used.add(next_free_subnet("10.244.0.0/16", used))
    assert len(used) == 256 and next_free_subnet("10.244.0.0/16", used) is None


def test_node_cidrs():
    assert node_cidrs({"spec": {"podCIDR": "10.244.3.0/24"}}) == ["10.244.3.0/24"]
    assert node_cidrs({"spec": {}}) == []


@pytest.mark.parametrize("stale,total,want", [
    (1, 3, True), (2, 3, False), (1, 1, True), (2, 2, True), (54, 100, True), (55, 100, False), (100, 100, False),
])
def test_full_disruption_guard(stale, total, want):
    assert evictions_allowed(stale, total) is want


def test_no_eviction_in_full_disruption_but_still_tainted():
    tainted = node([unreachable("NoSchedule", T0), unreachable("NoExecute", T0)])
    plan = plan_node(tainted, [pod()], now=T0 + 60, probe_time=T0, grace=8, default_eviction_delay=5,
                     allow_evictions=False)
    assert plan.set_unknown and plan.evict == [] and plan.requeue_after == 1.0
