"""The pure deletion rules (machinery/api/deletion.py): DeleteOptions, the GC finalizers a
DELETE leaves, and what becomes of a dependent."""
import pytest

from shoal.machinery.api import deletion as d
from shoal.machinery.api import errors

ORPHAN, FG = d.ORPHAN_FINALIZER, d.FOREGROUND_FINALIZER


# -- DeleteOptions ----------------------------------------------------------------------------
@pytest.mark.parametrize("opts, want", [
    (None, d.DeleteOptions()),
    ({}, d.DeleteOptions()),
    ({"propagationPolicy": "Orphan"}, d.DeleteOptions(propagation="Orphan")),
    ({"propagationPolicy": "Foreground", "gracePeriodSeconds": 0}, d.DeleteOptions("Foreground", 0)),
    ({"orphanDependents": True}, d.DeleteOptions(propagation="Orphan")),
    ({"orphanDependents": False}, d.DeleteOptions(propagation="Background")),
    ({"preconditions": {"uid": "u1", "resourceVersion": "7"}}, d.DeleteOptions(uid="u1", resource_version="7")),
    ({"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]}, d.DeleteOptions()),   # the caller's
])
def test_delete_options_parse(opts, want):
    assert d.parse_delete_options(opts) == want


@pytest.mark.parametrize("opts, error, message", [
    ({"propagationPolicy": "Sideways"}, errors.Invalid,
     'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "Sideways": supported '
     'values: "Foreground", "Background", "Orphan", "nil"'),
    ({"propagationPolicy": "Orphan", "orphanDependents": False}, errors.Invalid,
     'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Invalid value: "Orphan": orphanDependents and '
     'deletionPropagation cannot be both set'),
    ({"propagationPolicy": 3}, errors.BadRequest, "propagationPolicy: expected a string"),
    ({"orphanDependents": "yes"}, errors.BadRequest, "orphanDependents: expected a boolean"),
    ({"gracePeriodSeconds": True}, errors.BadRequest, "gracePeriodSeconds: expected a 64-bit integer"),
    ({"gracePeriodSeconds": 2 ** 70}, errors.BadRequest, "gracePeriodSeconds: expected a 64-bit integer"),
    ({"preconditions": "u1"}, errors.BadRequest, "preconditions: expected an object"),
    ({"preconditions": {"uid": 5}}, errors.BadRequest, "preconditions.uid: expected a string"),
])
def test_delete_options_refused(opts, error, message):
    with pytest.raises(error) as ei:
        d.parse_delete_options(opts)
    assert message in ei.value.message
    if error is errors.Invalid:
        status = ei.value.status()
        assert status["details"]["kind"] == "DeleteOptions" and status["details"]["group"] == "meta.k8s.io"
        assert status["details"]["causes"][0]["field"] == "propagationPolicy"


# -- the finalizers a DELETE leaves -----------------------------------------------------------
@pytest.mark.parametrize("finalizers, policy, want", [
    ([], None, []),                                      # default Background: nothing to hold it
    ([], "Background", []),
    ([], "Orphan", [ORPHAN]),
    ([], "Foreground", [FG]),
    (["example.com/x"], "Orphan", ["example.com/x", ORPHAN]),
    (["example.com/x"], None, ["example.com/x"]),
    ([ORPHAN], None, [ORPHAN]),                          # a finalizer already there decides
    ([FG], None, [FG]),
    ([ORPHAN, "example.com/x"], None, [ORPHAN, "example.com/x"]),    # unchanged: same order
    ([ORPHAN], "Background", []),                        # an explicit policy overrides it
    ([ORPHAN], "Foreground", [FG]),
    ([FG, "example.com/x"], "Orphan", ["example.com/x", ORPHAN]),
    ([FG], "Foreground", [FG]),
])
def test_gc_finalizers(finalizers, policy, want):
    assert d.gc_finalizers(finalizers, policy) == want


def test_gc_finalizers_default_policy_of_the_kind():
    assert d.gc_finalizers([], None, default="Orphan") == [ORPHAN]
    assert d.default_propagation("Deployment") == "Background"


def test_pending_work_and_finished():
    marked = {"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": [ORPHAN, FG]}}
    assert d.pending_work(marked) == ["orphan", "foreground"]
    assert d.pending_work({"metadata": {"finalizers": [ORPHAN]}}) == []      # not being deleted
    assert not d.finished(marked)
    assert d.finished({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}})
    assert not d.finished({"metadata": {}})


# -- owners -----------------------------------------------------------------------------------
def obj(ns=None, deleting=False, finalizers=()):
    md = {"name": "o", "uid": "u"}
    if ns:
        md["namespace"] = ns
    if deleting:
        md["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    if finalizers:
        md["finalizers"] = list(finalizers)
    return {"metadata": md}


@pytest.mark.parametrize("owner, dep_ns, want", [
    (None, "default", d.DANGLING),
    (obj("default"), "default", d.SOLID),
    (obj("other"), "default", d.DANGLING),                       # another namespace: no owner of it
    (obj("default"), None, d.DANGLING),                          # cluster-scoped dependent, namespaced owner
    (obj(), "default", d.SOLID),                                 # cluster-scoped owner (a Node)
    (obj("default", deleting=True), "default", d.SOLID),        # being deleted still exists
    (obj("default", deleting=True, finalizers=[ORPHAN]), "default", d.SOLID),
    (obj("default", deleting=True, finalizers=[FG]), "default", d.WAITING),
    (obj("default", finalizers=[FG]), "default", d.SOLID),      # not deleting yet
])
def test_owner_state(owner, dep_ns, want):
    assert d.owner_state(owner, dependent_namespace=dep_ns) == want


def ref(uid, block=None):
    r = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": uid, "uid": uid}
    if block is not None:
        r["blockOwnerDeletion"] = block
    return r


S, X, W = d.SOLID, d.DANGLING, d.WAITING


@pytest.mark.parametrize("states, deleting, has_deps, want", [
    ({"a": S}, False, False, d.KEEP),
    ({"a": X}, False, False, d.DependentAction("delete")),
    ({"a": X}, True, False, d.KEEP),                            # already being deleted
    ({"a": S, "b": X}, False, False, d.DependentAction("strip", frozenset({"b"}))),
    ({"a": S, "b": X}, True, False, d.DependentAction("strip", frozenset({"b"}))),
    ({"a": S, "b": W}, False, True, d.DependentAction("strip", frozenset({"b"}))),
    ({"a": S, "b": W, "c": X}, False, True, d.DependentAction("strip", frozenset({"b", "c"}))),
    ({"a": W}, False, True, d.DependentAction("delete", propagation="Foreground")),
    ({"a": W}, False, False, d.DependentAction("delete")),      # a leaf goes by its own policy
    ({"a": W, "b": X}, False, True, d.DependentAction("delete", propagation="Foreground")),
    ({"a": W}, True, True, d.KEEP),
])
def test_plan_dependent(states, deleting, has_deps, want):
    refs = [ref(u) for u in states]
    assert d.plan_dependent(refs, states, deleting=deleting, has_dependents=lambda: has_deps) == want


def test_plan_dependent_unknown_owner_counts_as_solid_and_asks_only_when_needed():
    asked = []

    def has_deps():
        asked.append(1)
        return True
    assert d.plan_dependent([ref("a"), ref("b")], {"b": X}, deleting=False, has_dependents=has_deps) == \
        d.DependentAction("strip", frozenset({"b"}))
    assert d.plan_dependent([ref("a")], {"a": X}, deleting=False, has_dependents=has_deps) == \
        d.DependentAction("delete")
    assert not asked
    assert d.plan_dependent([], {}, deleting=False, has_dependents=has_deps) == d.KEEP
    assert d.plan_dependent([{"kind": "X", "name": "n"}], {}, deleting=False, has_dependents=has_deps) == d.KEEP


def test_blocks_and_reference_edits():
    dep = {"metadata": {"ownerReferences": [ref("a", True), ref("b", False), ref("c")]}}
    assert d.blocks(dep, "a") and not d.blocks(dep, "b") and not d.blocks(dep, "c") and not d.blocks(dep, "z")
    refs = dep["metadata"]["ownerReferences"]
    assert [r["uid"] for r in d.without_owners(refs, {"a", "c"})] == ["b"]
    assert [r.get("blockOwnerDeletion") for r in d.unblock(refs, "a")] == [False, False, None]
    assert [r.get("blockOwnerDeletion") for r in d.unblock(refs, "b")] == [True, False, None]
    assert refs[0]["blockOwnerDeletion"] is True          # the input is left alone


# -- validation of finalizers (machinery/api/models) -------------------------------------------
DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
          "spec": {"selector": {"matchLabels": {"app": "web"}},
                   "template": {"metadata": {"labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}}


def with_meta(**md):
    import copy
    obj = copy.deepcopy(DEPLOY)
    obj["metadata"].update(md)
    return obj


def test_orphan_and_foreground_finalizers_cannot_both_be_set():
    from shoal.machinery.api.models import validate
    with pytest.raises(errors.Invalid) as ei:
        validate("Deployment", with_meta(finalizers=[ORPHAN, FG]))
    assert "metadata.finalizers: Invalid value" in ei.value.message
    assert "finalizer orphan and foregroundDeletion cannot be both set" in ei.value.message
    validate("Deployment", with_meta(finalizers=[ORPHAN, "example.com/x"]))


def test_a_deletion_in_progress_may_lose_finalizers_never_gain_one():
    from shoal.machinery.api.models import validate
    old = validate("Deployment", with_meta(finalizers=["example.com/x", ORPHAN],
                                           deletionTimestamp="2024-01-01T00:00:00Z"))
    validate("Deployment", with_meta(finalizers=["example.com/x"]), old=old)        # removing is fine
    with pytest.raises(errors.Invalid) as ei:
        validate("Deployment", with_meta(finalizers=["example.com/x", ORPHAN, "example.com/y"]), old=old)
    assert ('metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, '
            'found new finalizers []string{"example.com/y"}') in ei.value.message
    not_deleting = validate("Deployment", with_meta())
    validate("Deployment", with_meta(finalizers=[FG]), old=not_deleting)          # before: any
