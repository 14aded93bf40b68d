"""Table tests of the Deployment controller's pure arithmetic (controller/deployment/util.py)."""
import pytest

from shoal.controller.deployment import util as u

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
def test_proportional_scale_up_mid_rollout():
    # Kubernetes' documented example: 10 replicas, maxSurge 3, mid-rollout old 8 / new 5;
    # scaling to 15 (max 18) adds 5 replicas: 3 to the old, 2 to the new ReplicaSet.
    d = deploy(15, surge=3, unavail=2)
    old = rs("old", 8, created=1, desired=10, max_replicas=13)
    new = rs("new", 5, created=2, desired=10, max_replicas=13)
    plan = u.plan_proportional_scale(d, new, [old])
    assert sorted(plan, key=lambda s: s.name) == [u.Scale("new", 7), u.Scale("old", 11)]


def test_proportional_scale_down_to_zero():
    d = deploy(0)
    old, new = rs("old", 4, created=1, desired=8, max_replicas=10), rs("new", 3, created=2, desired=8, max_replicas=10)
    assert sorted(u.plan_proportional_scale(d, new, [old]), key=lambda s: s.name) == [u.Scale("new", 0), u.Scale("old", 0)]


def test_proportional_scale_down_with_leftover_to_largest():
    d = deploy(5, surge=1, unavail=0)  # allowed 6
    old = rs("old", 6, created=1, desired=10, max_replicas=11)
    new = rs("new", 5, created=2, desired=10, max_replicas=11)
    plan = {s.name: s.replicas for s in u.plan_proportional_scale(d, new, [old])}
    assert sum({"old": 6, "new": 5, **plan}.values()) == 6
    assert plan["old"] >= plan["new"]


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
