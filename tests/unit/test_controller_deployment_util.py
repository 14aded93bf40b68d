"""Table tests of the Deployment controller's pure planning: the arithmetic and the objects it
writes (util.py), and what one sync does (plan.py, rolling.py, recreate.py)."""
import pytest

from shoal.controller.deployment import util as u
from shoal.controller.deployment.plan import plan_sync
from shoal.controller.deployment.recreate import old_pods_running
from shoal.controller.deployment.rolling import plan_rolling

pytestmark = pytest.mark.unit


def deploy(replicas=10, surge="25%", unavail="25%", strategy="RollingUpdate", status_replicas=None, **spec):
    d = {"metadata": {"name": "web", "namespace": "default", "generation": 1},
         "spec": {"replicas": replicas, "strategy": {"type": strategy}, **spec}, "status": {}}
    if strategy == "RollingUpdate":
        d["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavail}
    if status_replicas is not None:
        d["status"]["replicas"] = status_replicas
    return d


def rs(name, replicas, available=None, created=0, desired=None, max_replicas=None, revision=None):
    ann = {}
    if desired is not None:
        ann[u.DESIRED_REPLICAS_ANNOTATION] = str(desired)
    if max_replicas is not None:
        ann[u.MAX_REPLICAS_ANNOTATION] = str(max_replicas)
    if revision is not None:
        ann[u.REVISION_ANNOTATION] = str(revision)
    return {"metadata": {"name": name, "uid": name, "annotations": ann,
                         "creationTimestamp": f"2024-01-01T00:00:{created:02d}Z"},
            "spec": {"replicas": replicas},
            "status": {"replicas": replicas, "availableReplicas": replicas if available is None else available}}


@pytest.mark.parametrize("value,total,round_up,want", [
    ("25%", 10, True, 3), ("25%", 10, False, 2), ("25%", 4, True, 1), ("25%", 4, False, 1),
    ("25%", 1, True, 1), ("25%", 1, False, 0), ("0%", 10, True, 0), ("100%", 7, False, 7),
    ("33%", 3, True, 1), ("33%", 3, False, 0), (2, 10, True, 2), (0, 10, False, 0),
    ("50%", 0, True, 0),
])
def test_scaled_value(value, total, round_up, want):
    assert u.scaled_value(value, total, round_up=round_up) == want


@pytest.mark.parametrize("bad", ["25", "abc%", "x", True, None])
def test_scaled_value_rejects_non_percent_strings(bad):
    with pytest.raises(ValueError, match="percentage"):
        u.scaled_value(bad, 10, round_up=True, field="maxSurge")


@pytest.mark.parametrize("surge,unavail,desired,want", [
    ("25%", "25%", 10, (3, 2)),
    ("25%", "25%", 1, (1, 0)),
    (0, 0, 5, (0, 1)),           # both zero: maxUnavailable becomes 1
    ("0%", "10%", 5, (0, 1)),    # 10% of 5 rounds down to 0 -> both 0 -> (0, 1)
    (1, 0, 3, (1, 0)),
    ("50%", "50%", 3, (2, 1)),
    (0, "100%", 4, (0, 4)),
    (None, None, 10, (3, 2)),    # unset: Kubernetes' defaults, 25% each
    (None, 0, 10, (3, 0)),
])
def test_resolve_fenceposts(surge, unavail, desired, want):
    assert u.resolve_fenceposts(surge, unavail, desired) == want


@pytest.mark.parametrize("d,surge,unavail", [
    (deploy(10), 3, 2),
    (deploy(3, surge=0, unavail=0), 0, 1),
    (deploy(2, surge=0, unavail=5), 0, 2),      # capped at replicas
    (deploy(0), 0, 0),                         # zero replicas: nothing unavailable
    (deploy(5, strategy="Recreate"), 0, 0),
])
def test_max_surge_and_unavailable(d, surge, unavail):
    assert (u.max_surge(d), u.max_unavailable(d)) == (surge, unavail)


# -- the rolling step planner: every state of a 4-replica rollout, maxSurge 1, maxUnavailable 1 ---
D4 = deploy(4, surge=1, unavail=1)


@pytest.mark.parametrize("new,olds,want", [
    # fresh rollout: new RS 0, old 4 available -> scale new to 1 (4+1 = 5 total)
    (rs("new", 0, created=2), [rs("old", 4, created=1)], [u.Scale("new", 1)]),
    # at the surge bound, new not yet available -> old may drop to 3 (min available 3)
    (rs("new", 1, available=0, created=2), [rs("old", 4, created=1)], [u.Scale("old", 3)]),
    # new 1 not available, old 3 -> total 4 < 5 -> scale new up to 2
    (rs("new", 1, available=0, created=2), [rs("old", 3, created=1)], [u.Scale("new", 2)]),
    # new 2 (0 available), old 3: available 3 == min -> nothing may move
    (rs("new", 2, available=0, created=2), [rs("old", 3, created=1)], []),
    # new 2 (2 available), old 3 -> can remove 2 old
    (rs("new", 2, available=2, created=2), [rs("old", 3, created=1)], [u.Scale("old", 1)]),
    # new 4 available, old 1 -> old to 0
    (rs("new", 4, available=4, created=2), [rs("old", 1, created=1)], [u.Scale("old", 0)]),
    # done
    (rs("new", 4, available=4, created=2), [rs("old", 0, created=1)], []),
    # new RS over-scaled (replicas lowered mid-rollout) -> scale new down first
    (rs("new", 6, created=2), [rs("old", 0, created=1)], [u.Scale("new", 4)]),
    # unhealthy old replicas are removed first (both: 6 - 3 min available - 1 new unavailable),
    # healthy ones not at all (available 3 == min available)
    (rs("new", 1, available=0, created=3), [rs("old1", 2, available=0, created=1), rs("old2", 3, created=2)],
     [u.Scale("old1", 0)]),
    # cleanup bounded by maxScaledDown: 5 - 3 - 1 = 1 of old1's 2 unhealthy replicas
    (rs("new", 1, available=0, created=3), [rs("old1", 2, available=0, created=1), rs("old2", 2, created=2)],
     [u.Scale("old1", 1)]),
])
def test_rolling_step(new, olds, want):
    assert u.plan_rolling_step(D4, new, olds) == want


def test_rolling_step_both_zero_surge_and_unavailable_still_progresses():
    d = deploy(3, surge=0, unavail=0)  # resolves to surge 0, unavailable 1
    new, old = rs("new", 0, created=2), rs("old", 3, created=1)
    assert u.plan_rolling_step(d, new, [old]) == [u.Scale("old", 2)]
    assert u.plan_rolling_step(d, new, [rs("old", 2, created=1)]) == [u.Scale("new", 1)]


def test_rolling_step_invariant_simulation():
    """Drive a full rollout with instantly-available pods only at every other step and check
    that the planner never breaks the bounds."""
    d = deploy(10, surge="25%", unavail="25%")
    new, old = rs("new", 0, available=0, created=2), rs("old", 10, created=1)
    for _ in range(50):
        plan = u.plan_rolling_step(d, new, [old])
        for s in plan:
            target = new if s.name == "new" else old
            target["spec"]["replicas"] = s.replicas
            target["status"]["replicas"] = s.replicas
            if s.name == "old":
                target["status"]["availableReplicas"] = min(target["status"]["availableReplicas"], s.replicas)
        assert new["spec"]["replicas"] + old["spec"]["replicas"] <= 10 + 3
        assert new["status"]["availableReplicas"] + old["status"]["availableReplicas"] >= 10 - 2
        if not plan:  # pods of the new RS become available
            if new["status"]["availableReplicas"] == new["spec"]["replicas"] and old["spec"]["replicas"] == 0:
                break
            new["status"]["availableReplicas"] = new["spec"]["replicas"]
    assert (new["spec"]["replicas"], old["spec"]["replicas"]) == (10, 0)


# -- new replica count ----------------------------------------------------------------------
@pytest.mark.parametrize("d,all_counts,new_count,want", [
    (deploy(10), [10, 0], 0, 3),
    (deploy(10), [10, 3], 3, 3),   # at max total
    (deploy(10), [8, 3], 3, 5),
    (deploy(10), [0, 9], 9, 10),   # never above replicas
    (deploy(5, strategy="Recreate"), [0, 0], 0, 5),
])
def test_new_rs_new_replicas(d, all_counts, new_count, want):
    old, new = rs("old", all_counts[0]), rs("new", new_count)
    assert u.new_rs_new_replicas(d, [old, new], new) == want


def test_new_rs_waits_for_old_scale_down_to_take_effect():
    old = rs("old", 7)
    old["status"]["replicas"] = 10  # scaled 10 -> 7, pods not deleted yet
    new = rs("new", 3)
    assert u.new_rs_new_replicas(deploy(10), [old, new], new) == 3
    old["status"]["replicas"] = 7
    assert u.new_rs_new_replicas(deploy(10), [old, new], new) == 6


def test_stale_old_availability_does_not_allow_extra_scale_down():
    d = deploy(4, surge=1, unavail=1)  # min available 3
    old = rs("old", 2, available=4, created=1)  # status from before a 4 -> 2 scale-down
    new = rs("new", 3, available=1, created=2)
    # effective availability 2 + 1 = 3 == min: nothing more may go
    assert u.plan_rolling_step(d, new, [old]) == []


# -- proportional scaling ---------------------------------------------------------------------
def apply(plan, *rss):
    """Sizes after a plan's writes: {name: replicas} over `rss` (None entries skipped)."""
    sizes = {r["metadata"]["name"]: r["spec"]["replicas"] for r in rss if r is not None}
    for s in plan:
        sizes[s.name] = s.replicas
    return sizes


def sized(name, replicas, created, before):
    """A ReplicaSet last sized for Deployment `before` (its desired/max-replicas annotations),
    none of its pods available (as Kubernetes' own fixtures)."""
    return rs(name, replicas, available=0, created=created, desired=u.replicas_of(before),
              max_replicas=u.replicas_of(before) + u.max_surge(before))


def d0(replicas, surge=0):
    """Kubernetes' test Deployment: RollingUpdate with maxSurge/maxUnavailable 0 unless given."""
    return deploy(replicas, surge=surge, unavail=0)


# Every case of Kubernetes' TestScale (pkg/controller/deployment/sync_test.go), re-derived here
# from the rule: (Deployment now, Deployment the ReplicaSets were sized for, new ReplicaSet,
# old ReplicaSets as (name, replicas, creation second)) -> sizes after the scale.
# Derivations: the fraction of a ReplicaSet is round(size * max_now / max_before) - size, rounded
# half away from zero, bounded by what is left to add; the remainder goes to the first in order.
SCALE_CASES = [
    # one active ReplicaSet takes the full count
    ("10 -> 12, one replica set", d0(12), d0(10), ("v1", 10, 2), [], {"v1": 12}),
    ("10 -> 5, one replica set", d0(5), d0(10), ("v1", 10, 2), [], {"v1": 5}),
    # 5 -> 10: v1 3 -> round(3*10/5) = 6, v2 2 -> 4
    ("5 -> 10", d0(10), d0(5), ("v2", 2, 2), [("v1", 3, 1)], {"v2": 4, "v1": 6}),
    # 5 -> 3: v1 round(3*3/5) = 2, v2 round(2*3/5) = 1
    ("5 -> 3", d0(3), d0(5), ("v2", 2, 2), [("v1", 3, 1)], {"v2": 1, "v1": 2}),
    # 9 -> 4: v2 round(8*4/9) = 4 (-4), v1 round(4/9) = 0 (-1, exactly what is left)
    ("9 -> 4", d0(4), d0(9), ("v2", 8, 2), [("v1", 1, 1)], {"v2": 4, "v1": 0}),
    # 7 -> 10: v2 round(30/7) = 4, v3 round(20/7) = 3, v1 round(20/7) = 3
    ("7 -> 10", d0(10), d0(7), ("v3", 2, 2), [("v2", 3, 1), ("v1", 2, 0)], {"v3": 3, "v2": 4, "v1": 3}),
    # 13 -> 8: v2 round(64/13) = 5, v1 round(24/13) = 2, v3 round(16/13) = 1
    ("13 -> 8", d0(8), d0(13), ("v3", 2, 2), [("v2", 8, 1), ("v1", 3, 0)], {"v3": 1, "v2": 5, "v1": 2}),
    # 3 -> 4: every fraction rounds to 0; the leftover goes to the newest of the equals
    ("leftover up: 3 -> 4", d0(4), d0(3), ("v3", 1, 2), [("v2", 1, 1), ("v1", 1, 0)], {"v3": 2, "v2": 1, "v1": 1}),
    # 3 -> 2: likewise, taken from the oldest of the equals
    ("leftover down: 3 -> 2", d0(2), d0(3), ("v3", 1, 2), [("v2", 1, 1), ("v1", 1, 0)], {"v3": 1, "v2": 1, "v1": 0}),
    # no new ReplicaSet, 4 -> 5: v2 (newer) round(2*5/4) = round(2.5) = 3 takes the one replica
    ("no new replica set: 4 -> 5", d0(5), d0(4), None, [("v2", 2, 1), ("v1", 2, 0)], {"v2": 3, "v1": 2}),
    ("6 -> 0", d0(0), d0(6), ("v3", 3, 2), [("v2", 2, 1), ("v1", 1, 0)], {"v3": 0, "v2": 0, "v1": 0}),
    # nothing active: the new ReplicaSet takes it all
    ("0 -> 6, nothing active", d0(6), d0(6), ("v3", 0, 2), [("v2", 0, 1), ("v1", 0, 0)], {"v3": 6, "v2": 0, "v1": 0}),
    # maxSurge 2, 10 -> 20: max 12 -> 22, each of 6 -> 11
    ("with surge: 10 -> 20", d0(20, 2), d0(10, 2), ("v2", 6, 2), [("v1", 6, 1)], {"v2": 11, "v1": 11}),
    # size and surge: max 13 -> 56: v1 round(8*56/13) = 34, v2 round(5*56/13) = 22
    ("size and surge", d0(50, 6), d0(10, 3), ("v2", 5, 2), [("v1", 8, 1)], {"v2": 22, "v1": 34}),
    # template changed too (no new ReplicaSet yet): 10 -> 14: v2 round(9.8) = 10, v1 round(4.2) = 4
    ("size and template", d0(14), d0(10), None, [("v2", 7, 2), ("v1", 3, 1)], {"v2": 10, "v1": 4}),
]


@pytest.mark.parametrize("d,before,new,olds,want", [c[1:] for c in SCALE_CASES], ids=[c[0] for c in SCALE_CASES])
def test_proportional_scale_kubernetes_cases(d, before, new, olds, want):
    new_rs = sized(*new, before) if new else None
    old_rss = [sized(*o, before) for o in olds]
    plan = u.plan_proportional_scale(d, new_rs, old_rss)
    assert apply(plan, new_rs, *old_rss) == want
    # every ReplicaSet active before or after is rewritten, so none is left with a stale
    # desired-replicas (inactive ones are left alone: nothing reads their annotations until they
    # are scaled, which rewrites them)
    assert {s.name for s in plan} == ({r["metadata"]["name"] for r in u.active([new_rs, *old_rss])}
                                      | {name for name, size in want.items() if size})
    assert sum(want.values()) <= (u.replicas_of(d) + u.max_surge(d) if u.replicas_of(d) else 0)


def test_proportional_scale_one_replica_set_failed_to_update_before():
    # 3 x 1 replica sized for 3, scaled to 5; the write of v2 failed (it still says 3) while v3
    # and v1 were written for 5: v2 round(1*5/3) = 2 takes the missing replica, v3/v1 need nothing
    d = d0(5)
    v3, v1 = rs("v3", 2, available=0, created=2, desired=5, max_replicas=5), rs("v1", 1, available=0, desired=5,
                                                                              max_replicas=5)
    v2 = rs("v2", 1, available=0, created=1, desired=3, max_replicas=3)
    assert u.plan_proportional_scale(d, v3, [v2, v1]) == [u.Scale("v2", 2)]


def test_saturated_but_broken_new_replica_set_leaves_old_pods_alone():
    d = deploy(2, surge=1, unavail=1)
    new = rs("v2", 2, available=0, created=2, desired=2, max_replicas=3)
    old = rs("v1", 1, available=1, created=1, desired=2, max_replicas=3)
    assert u.plan_proportional_scale(d, new, [old]) == []


def test_scale_refreshes_a_replica_set_whose_size_does_not_change():
    # The jam of issue 16: a rollout stopped at 4 old / 3 new (5 replicas, maxSurge 2), scaled to
    # 6: the old one takes round(4 * 8/7) = 5, the new one stays at round(3 * 8/7) = 3 — and must
    # still be written, or its desired-replicas 5 makes every later sync a scaling event.
    d = deploy(6, surge="25%", unavail="25%")
    old = rs("old", 4, created=1, desired=5, max_replicas=7)
    new = rs("new", 3, available=0, created=2, desired=5, max_replicas=7)
    plan = u.plan_proportional_scale(d, new, [old])
    assert plan == [u.Scale("old", 5), u.Scale("new", 3)]
    written = {s.name: u.scaled_replicaset({"old": old, "new": new}[s.name], s.replicas, d) for s in plan}
    assert not u.is_scaling_event(d, written["new"], [written["old"]])
    assert u.plan_proportional_scale(d, written["new"], [written["old"]]) == []


def test_single_active_replica_set_of_the_right_size_gets_its_annotations():
    d = deploy(3, surge=1, unavail=0)
    one = rs("one", 3, created=1, desired=5, max_replicas=6)
    assert u.plan_proportional_scale(d, one, [rs("old", 0)]) == [u.Scale("one", 3)]
    fresh = rs("one", 3, created=1, desired=3, max_replicas=4)
    assert u.plan_proportional_scale(d, fresh, [rs("old", 0)]) == []


def test_recreate_keeps_sizes_but_refreshes_annotations():
    d = deploy(4, strategy="Recreate")
    a = rs("a", 2, created=1, desired=3, max_replicas=3)
    b = rs("b", 1, created=2, desired=4, max_replicas=4)
    assert u.plan_proportional_scale(d, b, [a]) == [u.Scale("a", 2)]


def test_proportional_scale_down_with_leftover_to_largest():
    d = deploy(5, surge=1, unavail=0)  # allowed 6
    old = rs("old", 6, created=1, desired=10, max_replicas=11)
    new = rs("new", 5, created=2, desired=10, max_replicas=11)
    sizes = apply(u.plan_proportional_scale(d, new, [old]), new, old)
    assert sum(sizes.values()) == 6 and sizes["old"] >= sizes["new"]


def test_leftover_the_largest_cannot_absorb_goes_on_to_the_next():
    # four ReplicaSets of 1 sized for max 4, scaled to 1 (maxSurge 1: max 2): each fraction is
    # round(1 * 2/4) - 1 = round(0.5) - 1 = 0, so all -2 is left over. Kubernetes takes it from
    # the largest only (clamped at 0: the sum stays 3 > 2); here the next one gives the rest.
    d = deploy(1, surge=1, unavail=0)
    rss = [rs(f"v{i}", 1, created=i, desired=3, max_replicas=4) for i in range(4)]
    sizes = apply(u.plan_proportional_scale(d, rss[-1], rss[:-1]), *rss)
    assert sizes == {"v0": 0, "v1": 0, "v2": 1, "v3": 1}


def test_without_max_replicas_the_deployment_status_is_the_base():
    d = deploy(8, surge=0, unavail=1, status_replicas=4)
    old, new = rs("old", 2, created=1, desired=4), rs("new", 2, created=2, available=0, desired=4)
    assert apply(u.plan_proportional_scale(d, new, [old]), new, old) == {"old": 4, "new": 4}
    d["status"]["replicas"] = 0          # no base at all: nothing proportional, the largest takes it
    assert sum(apply(u.plan_proportional_scale(d, new, [old]), new, old).values()) == 8


def test_size_orderings_break_ties_as_kubernetes():
    same_time = [rs(n, 2, created=5) for n in ("a", "c", "b")]
    assert [r["metadata"]["name"] for r in u.by_size_newer([rs("big", 3, created=1), *same_time])] == \
        ["big", "c", "b", "a"]
    assert [r["metadata"]["name"] for r in u.by_size_older([rs("big", 3, created=1), *same_time])] == \
        ["big", "a", "b", "c"]
    aged = [rs("old", 2, created=1), rs("new", 2, created=3)]
    assert [r["metadata"]["name"] for r in u.by_size_newer(aged)] == ["new", "old"]
    assert [r["metadata"]["name"] for r in u.by_size_older(aged)] == ["old", "new"]


def test_proportional_scale_down_to_zero():
    d = deploy(0)
    old, new = rs("old", 4, created=1, desired=8, max_replicas=10), rs("new", 3, created=2, desired=8, max_replicas=10)
    assert sorted(u.plan_proportional_scale(d, new, [old]), key=lambda s: s.name) == [u.Scale("new", 0), u.Scale("old", 0)]


def test_single_active_rs_takes_all():
    d = deploy(7)
    assert u.plan_proportional_scale(d, rs("new", 3), [rs("old", 0)]) == [u.Scale("new", 7)]


def test_saturated_new_zeroes_old():
    d = deploy(3)
    new = rs("new", 3, available=3, desired=3, created=2)
    old = rs("old", 2, created=1)
    assert u.plan_proportional_scale(d, new, [old]) == [u.Scale("old", 0)]


def test_is_scaling_event():
    d = deploy(5)
    assert u.is_scaling_event(d, rs("new", 3, desired=4), [])
    assert not u.is_scaling_event(d, rs("new", 3, desired=5), [])
    assert not u.is_scaling_event(d, rs("new", 0, desired=4), [])  # inactive RSs do not count
    assert not u.is_scaling_event(d, rs("adopted", 3), [])          # no annotation: not ours to judge


@pytest.mark.parametrize("size,ann,want", [
    (3, (4, 5), (3, "5", "6")),      # the annotations only
    (4, (5, 6), (4, "5", "6")),      # the size only
    (4, (4, 5), (4, "5", "6")),      # both
    (3, (5, 7), (3, "5", "6")),      # max-replicas alone is stale (maxSurge changed)
])
def test_scaled_replicaset(size, ann, want):
    d = deploy(5, surge=1, unavail=0)
    r = rs("x", 3, desired=ann[0], max_replicas=ann[1])
    out = u.scaled_replicaset(r, size, d)
    got = (out["spec"]["replicas"], out["metadata"]["annotations"][u.DESIRED_REPLICAS_ANNOTATION],
           out["metadata"]["annotations"][u.MAX_REPLICAS_ANNOTATION])
    assert got == want
    assert r["spec"]["replicas"] == 3 and r["metadata"]["annotations"][u.DESIRED_REPLICAS_ANNOTATION] == str(ann[0])


def test_scaled_replicaset_nothing_to_write():
    d = deploy(5, surge=1, unavail=0)
    assert u.scaled_replicaset(rs("x", 3, desired=5, max_replicas=6), 3, d) is None
    assert u.replicas_annotations_stale(rs("x", 3, desired=5), d)


# -- what a sync does (plan.plan_sync, rolling.plan_rolling, recreate.plan_recreate) -----------------
def with_template(r, image):
    r["spec"]["template"] = {"metadata": {"labels": {"app": "web", u.POD_TEMPLATE_HASH_LABEL: "h"}},
                             "spec": {"containers": [{"name": "web", "image": image}]}}
    r["metadata"]["annotations"].setdefault(u.REVISION_ANNOTATION, "1")
    return r


def rolled(replicas=4, image="x:2", **kw):
    d = deploy(replicas, template={"metadata": {"labels": {"app": "web"}},
                                   "spec": {"containers": [{"name": "web", "image": image}]}}, **kw)
    d["metadata"]["uid"] = "d-uid"
    d["spec"]["selector"] = {"matchLabels": {"app": "web"}}
    return d


def test_plan_sync_paths():
    d = rolled(4, surge=1, unavail=1)
    old = rs("old", 4, created=1, desired=4, max_replicas=5, revision=1)
    # no ReplicaSet for x:2 yet: create it at the surge bound, and in the same sync scale the old
    # one down as far as maxUnavailable allows (the new one has no available pod)
    p = plan_sync(d, None, [old])
    assert (p.path, p.create, p.scales, p.cleanup) == ("rolling", 1, (u.Scale("old", 3),), False)
    assert p.rollout
    # paused: no ReplicaSet is created, sizes only follow spec.replicas, history is cleaned up
    d["spec"]["paused"] = True
    p = plan_sync(d, None, [old])
    assert (p.path, p.create, p.scales, p.cleanup, p.rollout) == ("paused", None, (), True, False)
    d["spec"]["replicas"] = 6
    assert plan_sync(d, None, [old]).scales == (u.Scale("old", 6),)
    # resumed, but resized since the ReplicaSets were written: a scaling event comes first
    d["spec"]["paused"] = False
    p = plan_sync(d, None, [old])
    assert (p.path, p.create, p.scales) == ("scaling", None, (u.Scale("old", 6),))


def test_plan_rolling_steps_and_cleanup_once_complete():
    d = rolled(4, surge=1, unavail=1)
    new = rs("new", 4, created=2, desired=4, max_replicas=5, revision=2)
    old = rs("old", 1, created=1, desired=4, max_replicas=5, revision=1)
    assert plan_rolling(d, new, [old]) == u.SyncPlan("rolling", scales=(u.Scale("old", 0),))
    old = rs("old", 0, created=1, desired=4, max_replicas=5, revision=1)
    assert plan_rolling(d, new, [old]) == u.SyncPlan("rolling")
    d["status"] = {"replicas": 4, "updatedReplicas": 4, "availableReplicas": 4, "observedGeneration": 1}
    assert plan_rolling(d, new, [old]) == u.SyncPlan("rolling", cleanup=True)


@pytest.mark.parametrize("olds,running,new,want", [
    # old ReplicaSets first go to 0 ...
    ([("a", 2), ("b", 0)], False, None, u.SyncPlan("recreate", scales=(u.Scale("a", 0),))),
    # ... then nothing while their pods run ...
    ([("a", 0)], True, None, u.SyncPlan("recreate")),
    # ... then the new one is created at full size, or scaled there
    ([("a", 0)], False, None, u.SyncPlan("recreate", create=3)),
    ([("a", 0)], False, ("n", 1), u.SyncPlan("recreate", scales=(u.Scale("n", 3),))),
    ([("a", 0)], False, ("n", 3), u.SyncPlan("recreate")),
])
def test_plan_recreate(olds, running, new, want):
    d = rolled(3, strategy="Recreate")
    old_rss = [rs(n, k, created=1, desired=3, max_replicas=3) for n, k in olds]
    new_rs = rs(new[0], new[1], created=2, desired=3, max_replicas=3) if new else None
    assert plan_sync(d, new_rs, old_rss, old_pods_running=running) == want


def test_old_pods_running():
    a = rs("a", 0)
    a["status"]["replicas"] = 0
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Running"}}
    assert old_pods_running([a], {"a": [pod]})
    assert not old_pods_running([a], {"a": [{"metadata": {"name": "p"}, "status": {"phase": "Succeeded"}}]})
    a["status"]["replicas"] = 1      # the ReplicaSet still counts one
    assert old_pods_running([a], {})


def test_new_replicaset_object():
    d = rolled(4, surge=1, unavail=0)
    d["metadata"]["annotations"] = {"team": "a", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    old = with_template(rs("web-old", 4, revision=7), "x:1")
    new = u.new_replicaset(d, [old], 2)
    h = new["metadata"]["labels"][u.POD_TEMPLATE_HASH_LABEL]
    assert new["metadata"]["name"] == u.new_replicaset_name(d) == f"web-{h}"
    assert new["spec"]["selector"]["matchLabels"] == {"app": "web", u.POD_TEMPLATE_HASH_LABEL: h}
    assert new["spec"]["template"]["metadata"]["labels"][u.POD_TEMPLATE_HASH_LABEL] == h
    assert new["spec"]["replicas"] == 2
    assert new["metadata"]["ownerReferences"][0]["uid"] == "d-uid"
    assert new["metadata"]["annotations"] == {"team": "a", u.REVISION_ANNOTATION: "8",
                                              u.DESIRED_REPLICAS_ANNOTATION: "4", u.MAX_REPLICAS_ANNOTATION: "5"}
    assert u.templates_equal(new["spec"]["template"], d["spec"]["template"])


def test_synced_new_replicaset_on_rollback():
    d = rolled(4)
    back = with_template(rs("web-1", 0, revision=1), "x:2")
    back["spec"]["minReadySeconds"] = 0
    synced = u.synced_new_replicaset(d, back, [rs("web-2", 4, revision=2)])
    assert synced["metadata"]["annotations"][u.REVISION_ANNOTATION] == "3"
    assert synced["metadata"]["annotations"][u.REVISION_HISTORY_ANNOTATION] == "1"
    assert back["metadata"]["annotations"][u.REVISION_ANNOTATION] == "1"          # not modified
    assert u.synced_new_replicaset(d, synced, [rs("web-2", 4, revision=2)]) is None
    d["spec"]["minReadySeconds"] = 5
    assert u.synced_new_replicaset(d, synced, [rs("web-2", 4, revision=2)])["spec"]["minReadySeconds"] == 5


def test_revision_history_keeps_the_newest_within_2000_characters():
    d = deploy(1)
    r = rs("web-1", 0, revision=9999)
    r["metadata"]["annotations"][u.REVISION_HISTORY_ANNOTATION] = ",".join(str(1000 + i) for i in range(400))
    u.set_new_rs_annotations(d, r, 10000, exists=True)
    hist = r["metadata"]["annotations"][u.REVISION_HISTORY_ANNOTATION]
    assert len(hist) <= 2000 and hist.endswith(",1399,9999") and not hist.startswith("1000,")
    assert r["metadata"]["annotations"][u.REVISION_ANNOTATION] == "10000"


def test_plan_cleanup():
    d = deploy(1, revisionHistoryLimit=1)
    settled = [rs(f"r{i}", 0, revision=i) for i in (1, 2, 3)]
    assert [r["metadata"]["name"] for r in u.plan_cleanup(d, settled)] == ["r1", "r2"]
    busy = rs("r1", 0, revision=1)
    busy["status"]["replicas"] = 1     # pods still going away
    assert [r["metadata"]["name"] for r in u.plan_cleanup(d, [busy, *settled[1:]])] == ["r2"]
    d["spec"]["revisionHistoryLimit"] = 5
    assert u.plan_cleanup(d, settled) == []


# -- template hashing -------------------------------------------------------------------------
BASE = {"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "registry.local/httpd:1.0",
                                 "ports": [{"containerPort": 80}]}]}}


def test_hash_is_stable_and_short_alphanumeric():
    h = u.compute_hash(BASE)
    assert h == u.compute_hash(BASE)
    assert 1 <= len(h) <= 10 and all(c in "bcdfghjklmnpqrstvwxz2456789" for c in h)


def test_hash_ignores_defaults_and_empty_fields():
    defaulted = {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}, "creationTimestamp": None,
                              "annotations": {}},
                 "spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30,
                          "schedulerName": "default-scheduler", "securityContext": {}, "volumes": [],
                          "containers": [{"name": "web", "image": "registry.local/httpd:1.0", "resources": {},
                                          "imagePullPolicy": "IfNotPresent", "env": None,
                                          "terminationMessagePath": "/dev/termination-log",
                                          "terminationMessagePolicy": "File",
                                          "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}
    assert u.compute_hash(defaulted) == u.compute_hash(BASE)
    assert u.templates_equal(defaulted, BASE)


def test_hash_changes_with_image_and_collision_count():
    other = {"metadata": BASE["metadata"], "spec": {"containers": [dict(BASE["spec"]["containers"][0],
                                                                      image="registry.local/httpd:2.0")]}}
    assert u.compute_hash(other) != u.compute_hash(BASE)
    assert u.compute_hash(BASE, 1) != u.compute_hash(BASE)


def test_probe_defaults_ignored():
    a = {"spec": {"containers": [{"name": "c", "image": "x:1", "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}]}}
    b = {"spec": {"containers": [{"name": "c", "image": "x:1", "readinessProbe": {
        "httpGet": {"path": "/", "port": 80, "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10,
        "successThreshold": 1, "failureThreshold": 3}}]}}
    assert u.compute_hash(a) == u.compute_hash(b)


# -- revisions ------------------------------------------------------------------------------
def test_new_rs_annotations_rollback_keeps_history():
    d = deploy(3)
    d["metadata"]["annotations"] = {"team": "a", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    r = rs("web-1", 0, revision=1)
    assert u.set_new_rs_annotations(d, r, 3, exists=True)
    ann = r["metadata"]["annotations"]
    assert ann[u.REVISION_ANNOTATION] == "3" and ann[u.REVISION_HISTORY_ANNOTATION] == "1" and ann["team"] == "a"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in ann
    assert not u.set_new_rs_annotations(d, r, 3, exists=True)  # idempotent


def test_new_rs_annotations_for_creation_carry_replica_counts():
    d = deploy(4, surge=1, unavail=0)
    r = {"metadata": {"name": "x"}}
    u.set_new_rs_annotations(d, r, 1, exists=False)
    ann = r["metadata"]["annotations"]
    assert (ann[u.REVISION_ANNOTATION], ann[u.DESIRED_REPLICAS_ANNOTATION], ann[u.MAX_REPLICAS_ANNOTATION]) == ("1", "4", "5")


def test_find_new_rs_matches_template_ignoring_hash_label():
    d = deploy(2, template=BASE)
    r_old = rs("web-old", 2, created=1)
    r_old["spec"]["template"] = {"metadata": {"labels": {"app": "web", "pod-template-hash": "x"}},
                                 "spec": {"containers": [{"name": "web", "image": "registry.local/httpd:0.9"}]}}
    r_new = rs("web-new", 0, created=2)
    r_new["spec"]["template"] = {"metadata": {"labels": {"app": "web", "pod-template-hash": "y"}},
                                 "spec": BASE["spec"]}
    assert u.find_new_rs(d, [r_old, r_new])["metadata"]["name"] == "web-new"
    assert u.find_new_rs(d, [r_old]) is None


def test_deployment_complete_and_progressing():
    d = deploy(3)
    d["status"] = {"replicas": 4, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3}
    assert u.deployment_progressing(d, {"replicas": 4, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3})
    assert u.deployment_progressing(d, {"replicas": 3, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3})
    assert not u.deployment_progressing(d, dict(d["status"]))
    assert u.deployment_complete(d, {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3, "observedGeneration": 1})
    assert not u.deployment_complete(d, {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3,
                                         "observedGeneration": 0})
