"""Field ownership (apiserver/managedfields.py): the FieldsV1 format, SMD's merge, compare and
prune, and Kubernetes' Update/Apply bookkeeping, as tables.

Expected FieldsV1 trees are those a Kubernetes API server writes for the same request (the
create of a Deployment below is what `kubectl create deployment` gets, with shoal's defaults);
the list-merge tables are structured-merge-diff's own vectors."""
from __future__ import annotations

import copy
import json

import pytest

from shoal.apiserver import managedfields as mf
from shoal.machinery.api import errors
from shoal.machinery.api.models import validate

T0, T1, T2 = "2024-05-01T10:00:00Z", "2024-05-01T10:00:01Z", "2024-05-01T10:00:02Z"


def deployment(containers: list[dict] | None = None, **spec) -> dict:
    d = {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": containers or [{"name": "nginx", "image": "nginx:1.27"}]}}}}
    d["spec"].update(spec)
    return d


def stored(obj: dict) -> dict:
    """What the registry stores: validated and defaulted, managedFields kept."""
    mfields = (obj.get("metadata") or {}).get("managedFields")
    out = validate("Deployment", obj)
    if mfields:
        out["metadata"]["managedFields"] = mfields
    return out


def fields(entries: list[dict], manager: str, operation: str = "Apply") -> dict:
    [e] = [e for e in entries if e["manager"] == manager and e["operation"] == operation]
    return e["fieldsV1"]


def P(*parts: str) -> tuple:
    return tuple(parts)


# ------------------------------------------------------------------------------ path elements
@pytest.mark.parametrize("pe,text", [
    (mf.key_pe({"name": "web"}), 'k:{"name":"web"}'),
    (mf.key_pe({"protocol": "TCP", "containerPort": 80}), 'k:{"containerPort":80,"protocol":"TCP"}'),
    (mf.key_pe({"name": "a<b&c>"}), 'k:{"name":"a\\u003cb\\u0026c\\u003e"}'),
    (mf.value_pe("example.com/x"), 'v:"example.com/x"'),
    (mf.field_pe("replicas"), "f:replicas"),
])
def test_path_elements_are_written_as_kubernetes_writes_them(pe, text):
    assert pe == text


@pytest.mark.parametrize("path,text", [
    (P("f:spec", "f:replicas"), ".spec.replicas"),
    (P("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"web"}', "f:image"),
     '.spec.template.spec.containers[name="web"].image'),
    (P("f:ports", 'k:{"containerPort":80,"protocol":"TCP"}'), '.ports[containerPort=80,protocol="TCP"]'),
    (P("f:metadata", "f:finalizers", 'v:"x"'), '.metadata.finalizers[="x"]'),
    (P("f:metadata", "f:labels", "f:app.kubernetes.io/name"), ".metadata.labels.app.kubernetes.io/name"),
])
def test_path_strings(path, text):
    assert mf.path_string(path) == text


def test_keys_sort_as_smd_orders_path_elements():
    keys = ['k:{"name":"b"}', "f:z", ".", 'v:"a"', 'k:{"name":"a"}', "f:a", 'k:{"containerPort":8080,"protocol":"TCP"}',
            'k:{"containerPort":80,"protocol":"UDP"}', 'k:{"containerPort":80,"protocol":"TCP"}']
    assert sorted(keys, key=mf.pe_order) == [
        ".", "f:a", "f:z", 'k:{"containerPort":80,"protocol":"TCP"}', 'k:{"containerPort":80,"protocol":"UDP"}',
        'k:{"containerPort":8080,"protocol":"TCP"}', 'k:{"name":"a"}', 'k:{"name":"b"}', 'v:"a"']


# ------------------------------------------------------------------------------ sets as trees
@pytest.mark.parametrize("paths,tree", [
    ([], {}),
    ([P("f:a")], {"f:a": {}}),
    ([P("f:a", "f:b")], {"f:a": {"f:b": {}}}),
    ([P("f:a"), P("f:a", "f:b")], {"f:a": {".": {}, "f:b": {}}}),
    ([P("f:b"), P("f:a", 'k:{"n":1}'), P("f:a", 'k:{"n":1}', "f:n")],
     {"f:a": {'k:{"n":1}': {".": {}, "f:n": {}}}, "f:b": {}}),
])
def test_trees_round_trip(paths, tree):
    assert mf.paths_tree(paths) == tree
    assert json.dumps(mf.paths_tree(paths)) == json.dumps(tree)       # the order too
    assert mf.tree_paths(tree) == set(paths)


@pytest.mark.parametrize("tree,remove,after", [
    ({"f:a": {".": {}, "f:b": {}}}, [P("f:a")], {"f:a": {"f:b": {}}}),       # the item goes, its field stays
    ({"f:a": {".": {}, "f:b": {}}}, [P("f:a", "f:b")], {"f:a": {}}),          # the member stays, now a leaf
    ({"f:a": {"f:b": {}}, "f:c": {}}, [P("f:a", "f:b")], {"f:c": {}}),        # an empty prefix disappears
    ({"f:a": {"f:b": {}}}, [P("f:a")], {"f:a": {"f:b": {}}}),                  # a prefix is not a member
    ({"f:a": {}}, [P("f:x", "f:y")], {"f:a": {}}),
])
def test_set_remove(tree, remove, after):
    assert mf.set_remove(tree, mf._trie(remove)) == after


def test_set_operations_copy_on_write():
    tree = {"f:a": {"f:b": {}}, "f:c": {"f:d": {}}}
    frozen = copy.deepcopy(tree)
    out = mf.set_add(tree, mf._trie([P("f:a", "f:x")]))
    assert out == {"f:a": {"f:b": {}, "f:x": {}}, "f:c": {"f:d": {}}}
    assert out["f:c"] is tree["f:c"] and tree == frozen
    assert mf.set_add(out, mf._trie([P("f:a", "f:x")])) is out          # already there: the same object
    assert mf.set_remove(out, mf._trie([P("f:q")])) is out


# ------------------------------------------------------------------------------ field sets
def test_create_records_every_field_as_kubernetes_does():
    obj = validate("Deployment", deployment([{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]))
    entries = mf.track_update("Deployment", [], None, obj, manager=mf.Manager("kubectl-create"),
                              api_version="apps/v1", now=T0)
    assert entries == [{
        "manager": "kubectl-create", "operation": "Update", "apiVersion": "apps/v1", "time": T0,
        "fieldsType": "FieldsV1", "fieldsV1": {
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:progressDeadlineSeconds": {}, "f:replicas": {}, "f:revisionHistoryLimit": {}, "f:selector": {},
                "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}},
                               "f:type": {}},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {
                        "f:containers": {'k:{"name":"nginx"}': {
                            ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                            "f:ports": {".": {}, 'k:{"containerPort":80,"protocol":"TCP"}': {
                                ".": {}, "f:containerPort": {}, "f:protocol": {}}},
                            "f:resources": {}, "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
                        "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {},
                        "f:terminationGracePeriodSeconds": {}}}}}}]
    # Kubernetes' key order, not insertion order
    spec = entries[0]["fieldsV1"]["f:spec"]
    assert list(spec) == sorted(spec, key=mf.pe_order)


@pytest.mark.parametrize("config,paths", [
    ({"metadata": {"name": "web", "namespace": "x", "labels": {"a": "1"}}}, {P("f:metadata", "f:labels", "f:a")}),
    ({"spec": {"replicas": 2}}, {P("f:spec", "f:replicas")}),
    ({"spec": {"selector": {"matchLabels": {"a": "1"}}}}, {P("f:spec", "f:selector")}),       # atomic struct
    ({"spec": {"strategy": {}}}, {P("f:spec", "f:strategy")}),                                # empty struct
    ({"spec": {"template": {"spec": {"containers": []}}}}, set()),                            # empty granular list
    ({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": []}]}}}},
     {P("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"a"}'),
      P("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"a"}', "f:name"),
      P("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"a"}', "f:args")}),     # atomic list
    ({"metadata": {"finalizers": ["a/b"]}}, {P("f:metadata", "f:finalizers", 'v:"a/b"')}),
    ({"status": {"replicas": 3}, "spec": {"paused": True}}, {P("f:spec", "f:paused")}),      # status is not applied
])
def test_field_set_of_a_configuration(config, paths):
    config = {"apiVersion": "apps/v1", "kind": "Deployment", **config}
    assert mf._strip(mf.field_set("Deployment", config)) == paths


def test_field_set_refuses_duplicate_and_keyless_items():
    dup = deployment([{"name": "a", "image": "x"}, {"name": "a", "image": "y"}])
    with pytest.raises(mf.SchemaError, match=r'\.spec\.template\.spec\.containers: duplicate entries for key '
                                             r'\[name="a"\]'):
        mf.field_set("Deployment", dup)
    keyless = deployment([{"image": "x"}])
    with pytest.raises(mf.SchemaError, match='omits key field "name"'):
        mf.field_set("Deployment", keyless)


# ------------------------------------------------------------------------------ compare
def test_compare_descends_only_where_objects_differ():
    old = validate("Deployment", deployment())
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    new["metadata"]["labels"]["tier"] = "front"
    del new["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"]
    new["metadata"]["resourceVersion"] = "99"           # server-owned: never anybody's field
    c = mf.compare("Deployment", old, new)
    web = P("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"nginx"}')
    assert c.modified == [web + ("f:image",)]
    assert c.added == [P("f:metadata", "f:labels", "f:tier")]
    assert c.removed == [web + ("f:terminationMessagePath",)]
    assert mf.compare("Deployment", old, copy.deepcopy(old)) == mf.Comparison([], [], [])


def test_compare_in_scope_status_sees_only_the_status():
    old = validate("Deployment", deployment())
    new = copy.deepcopy(old)
    new["status"] = {"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]}
    new["spec"]["replicas"] = 5
    c = mf.compare("Deployment", old, new, scope="status")
    assert sorted(c.added) == sorted([
        P("f:status", "f:replicas"), P("f:status", "f:conditions"),
        P("f:status", "f:conditions", 'k:{"type":"Available"}'),
        P("f:status", "f:conditions", 'k:{"type":"Available"}', "f:type"),
        P("f:status", "f:conditions", 'k:{"type":"Available"}', "f:status")])
    assert c.modified == [] and mf.compare("Deployment", old, new).modified == [P("f:spec", "f:replicas")]


# ------------------------------------------------------------------------------ merge (SMD's vectors)
SET = mf.Node(mf.SET, elem=mf._LEAF_NODE)


@pytest.mark.parametrize("lhs,rhs,out", [
    (["a", "b", "c"], ["a", "b"], ["a", "b", "c"]),
    (["a", "b"], ["b", "a"], ["b", "a"]),
    (["a", "b", "c"], ["c", "d", "e", "f"], ["a", "b", "c", "d", "e", "f"]),
    (["a", "b", "c", "g", "f"], ["c", "d", "e", "f"], ["a", "b", "c", "g", "d", "e", "f"]),
    (["c", "d", "e", "f"], ["a", "c", "e"], ["a", "c", "d", "e", "f"]),
    (["a", "b", "c", "x", "y", "z"], ["d", "e", "f", "x", "y", "z"], ["a", "b", "c", "d", "e", "f", "x", "y", "z"]),
    (["a", "b", "c", "d"], ["d", "e", "f", "a"], ["b", "c", "d", "e", "f", "a"]),
    (["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"], ["1", "b", "2", "h", "3", "e", "4", "k", "l"],
     ["a", "1", "b", "c", "d", "f", "g", "2", "h", "i", "j", "3", "e", "4", "k", "l"]),
    (["a", "b", "b"], ["b"], ["a", "b"]),                 # a live duplicate the configuration names: one
    (["a", "b", "b"], ["a"], ["a", "b", "b"]),
    (["a", "a", "b", "b"], ["b", "c", "d"], ["a", "a", "b", "c", "d"]),
    ([True, False, True], [True], [True, False]),
    ([1, 2, 3.14159], [1, 2, 3], [1, 2, 3.14159, 3]),
])
def test_set_lists_merge_in_smd_order(lhs, rhs, out):
    assert mf._merge_list(SET, lhs, rhs, ()) == out


def test_associative_lists_merge_by_key():
    live = validate("Deployment", deployment([
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
        {"name": "b", "image": "b:1", "args": ["--old", "--flags"]}]))
    config = deployment([
        {"name": "c", "image": "c:1"},
        {"name": "b", "args": ["--new"]},
        {"name": "a", "env": [{"name": "Y", "value": "3"}]}])
    merged = mf.merge("Deployment", live, config)
    cs = merged["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in cs] == ["c", "b", "a"]
    assert cs[1]["args"] == ["--new"] and cs[1]["image"] == "b:1"            # atomic list replaced
    assert cs[2]["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}]
    assert cs[2]["image"] == "a:1"
    assert live["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] == "2"   # inputs untouched


# ------------------------------------------------------------------------------ prune
def test_prune_removes_what_only_the_applier_had():
    live = validate("Deployment", deployment(strategy={"type": "Recreate"}))
    live["metadata"]["labels"]["tier"] = "front"
    last = mf.field_set("Deployment", dict(deployment(strategy={"type": "Recreate"}),
                                           metadata={"name": "web", "labels": {"app": "web", "tier": "front"}}))
    now = mf.field_set("Deployment", deployment())          # tier and strategy dropped
    out = mf.prune("Deployment", live, last, now)
    assert out["metadata"]["labels"] == {"app": "web"}
    assert "strategy" not in out["spec"]          # the struct goes, its unowned defaults with it
    assert out["spec"]["progressDeadlineSeconds"] == 600         # never applied: not the applier's to remove
    # co-owned by another manager: kept
    other = {P("f:metadata", "f:labels", "f:tier")}
    assert mf.prune("Deployment", live, last, now | other)["metadata"]["labels"] == {"app": "web", "tier": "front"}


def test_prune_removes_a_list_item_whose_fields_others_own_but_not_the_item():
    two = [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]
    live = validate("Deployment", deployment(two))
    last = mf.field_set("Deployment", deployment(two))
    now = mf.field_set("Deployment", deployment([{"name": "a", "image": "a:1"}]))
    b = P("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"b"}')
    gone = mf.prune("Deployment", live, last, now | {b + ("f:image",)})
    assert [c["name"] for c in gone["spec"]["template"]["spec"]["containers"]] == ["a"]
    kept = mf.prune("Deployment", live, last, now | {b})          # the item itself is owned: it stays,
    item = kept["spec"]["template"]["spec"]["containers"][1]      # with its key; what only the applier had goes
    assert item["name"] == "b" and "image" not in item and item["imagePullPolicy"] == "IfNotPresent"


# ------------------------------------------------------------------------------ update bookkeeping
def test_an_update_takes_the_fields_it_changes_and_nothing_else():
    live = stored(mf.apply("Deployment", [], None, deployment(), manager="kubectl", api_version="apps/v1", now=T0))
    new = copy.deepcopy(live)
    new["spec"]["replicas"] = 3
    entries = mf.track_update("Deployment", live["metadata"]["managedFields"], live, new,
                              manager=mf.Manager("kubectl", subresource="scale"), api_version="apps/v1", now=T1)
    assert "f:replicas" not in fields(entries, "kubectl")["f:spec"]
    scale = [e for e in entries if e.get("subresource") == "scale"]
    assert scale == [{"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1", "time": T1,
                      "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}, "subresource": "scale"}]
    assert [e["operation"] for e in entries] == ["Apply", "Update"]


def test_an_unchanged_write_returns_the_same_entries():
    live = stored(mf.apply("Deployment", [], None, deployment(), manager="kubectl", api_version="apps/v1", now=T0))
    entries = live["metadata"]["managedFields"]
    assert mf.track_update("Deployment", entries, live, copy.deepcopy(live), manager=mf.Manager("x"),
                           api_version="apps/v1", now=T1) is entries


def test_a_removal_leaves_every_manager_and_empty_entries_go():
    first = stored(mf.apply("Deployment", [], None, deployment(), manager="a", api_version="apps/v1", now=T0))
    live = copy.deepcopy(first)
    live["metadata"]["labels"]["extra"] = "1"
    entries = mf.track_update("Deployment", first["metadata"]["managedFields"], first, live, manager=mf.Manager("b"),
                              api_version="apps/v1", now=T0)
    assert fields(entries, "b", "Update")["f:metadata"]["f:labels"]["f:extra"] == {}
    new = copy.deepcopy(live)
    del new["metadata"]["labels"]
    out = mf.track_update("Deployment", entries, live, new, manager=mf.Manager("c"), api_version="apps/v1", now=T1)
    assert "f:metadata" not in fields(out, "a")
    assert not [e for e in out if e["manager"] == "c"]          # a pure removal gives its writer nothing
    assert not [e for e in out if e["manager"] == "b"]          # b owned nothing else: its entry goes


def test_an_object_without_managed_fields_is_not_tracked_until_applied():
    live = stored(deployment())
    new = copy.deepcopy(live)
    new["spec"]["replicas"] = 4
    assert mf.track_update("Deployment", [], live, new, manager=mf.Manager("x"), api_version="apps/v1",
                           now=T1) == []


def test_more_than_ten_updaters_fold_into_ancient_changes():
    entries = [mf._new_entry(mf.Manager(f"m{i:02d}"), "apps/v1", {f"f:f{i}": {}}, f"2024-05-01T10:00:{i:02d}Z")
               for i in range(12)]
    out = mf.cap_managers(entries)
    assert len(out) == 10
    ancient = [e for e in out if e["manager"] == "ancient-changes"]
    assert len(ancient) == 1 and set(ancient[0]["fieldsV1"]) == {"f:f0", "f:f1", "f:f2"}
    assert {e["manager"] for e in out} == {"ancient-changes", *[f"m{i:02d}" for i in range(3, 12)]}


# ------------------------------------------------------------------------------ apply
def apply(entries, live, config, manager, **kw):
    return mf.apply("Deployment", entries, live, config, manager=manager, api_version="apps/v1",
                    now=kw.pop("now", T1), **kw)


def test_apply_conflicts_name_every_field_and_manager():
    live = stored(apply([], None, deployment(), "kubectl", now=T0))
    other = deployment([{"name": "nginx", "image": "nginx:2"}], replicas=3)
    with pytest.raises(errors.Conflict) as e:
        apply(live["metadata"]["managedFields"], live, other, "other")
    assert e.value.message == ('Apply failed with 2 conflicts: conflicts with "kubectl":\n- .spec.replicas\n'
                               '- .spec.template.spec.containers[name="nginx"].image')
    assert [c.to_dict() for c in e.value.causes] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "kubectl"', "field": ".spec.replicas"},
        {"reason": "FieldManagerConflict", "message": 'conflict with "kubectl"',
         "field": '.spec.template.spec.containers[name="nginx"].image'}]
    # the same values co-own without conflict; force takes the rest over
    co = apply(live["metadata"]["managedFields"], live, deployment(), "other")
    assert fields(co["metadata"]["managedFields"], "other") == fields(co["metadata"]["managedFields"], "kubectl")
    forced = stored(apply(live["metadata"]["managedFields"], live, other, "other", force=True))
    assert forced["spec"]["replicas"] == 3
    assert "f:replicas" not in fields(forced["metadata"]["managedFields"], "kubectl")["f:spec"]


def test_a_conflict_with_an_updater_names_its_version_and_subresource():
    live = stored(apply([], None, deployment(), "kubectl", now=T0))
    new = copy.deepcopy(live)
    new["spec"]["replicas"] = 5
    live2 = dict(new, metadata=dict(new["metadata"], managedFields=mf.track_update(
        "Deployment", live["metadata"]["managedFields"], live, new, manager=mf.Manager("kubectl", subresource="scale"),
        api_version="apps/v1", now=T1)))
    with pytest.raises(errors.Conflict, match=r'^Apply failed with 1 conflict: conflict with "kubectl" with '
                                              r'subresource "scale" using apps/v1: \.spec\.replicas$'):
        apply(live2["metadata"]["managedFields"], live2, deployment(), "kubectl", now=T2)


def test_apply_of_an_unchanged_configuration_changes_nothing():
    live = stored(apply([], None, deployment(), "kubectl", now=T0))
    again = apply(live["metadata"]["managedFields"], live, deployment(), "kubectl", now=T2)
    assert again["metadata"]["managedFields"] == live["metadata"]["managedFields"]      # the time too
    assert stored(again) == live


def test_first_apply_to_an_untracked_object_owns_against_before_first_apply():
    live = stored(deployment())
    with pytest.raises(errors.Conflict, match='conflict with "before-first-apply" using apps/v1: .spec.replicas'):
        apply([], live, deployment(replicas=2), "kubectl-x")
    out = apply([], live, deployment(), "kubectl-x")
    assert {(e["manager"], e["operation"]) for e in out["metadata"]["managedFields"]} == {
        ("kubectl-x", "Apply"), ("before-first-apply", "Update")}


def test_kubectl_takes_over_what_client_side_apply_last_applied():
    csa = deployment()
    csa["metadata"]["annotations"] = {mf.LAST_APPLIED: json.dumps(csa) + "\n"}
    obj = validate("Deployment", csa)
    obj["metadata"]["managedFields"] = mf.track_update("Deployment", [], None, obj,
                                                       manager=mf.Manager("kubectl-client-side-apply"),
                                                       api_version="apps/v1", now=T0)
    live = stored(obj)
    changed = deployment(replicas=2)
    out = apply(live["metadata"]["managedFields"], live, changed, "kubectl")
    assert out["spec"]["replicas"] == 2
    assert out["metadata"]["annotations"][mf.LAST_APPLIED] == mf.last_applied_value(changed)
    assert json.loads(out["metadata"]["annotations"][mf.LAST_APPLIED])["spec"]["replicas"] == 2
    # another manager gets the conflict
    with pytest.raises(errors.Conflict, match='conflict with "kubectl-client-side-apply" using apps/v1: '
                                              '.spec.replicas'):
        apply(live["metadata"]["managedFields"], live, changed, "someone")
    # and kubectl too once the live value is no longer the annotation's
    drifted = copy.deepcopy(live)
    drifted["spec"]["replicas"] = 7
    with pytest.raises(errors.Conflict):
        apply(drifted["metadata"]["managedFields"], drifted, changed, "kubectl")


def test_apply_status_owns_only_the_status():
    live = stored(apply([], None, deployment(), "kubectl", now=T0))
    config = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
              "spec": {"replicas": 9}, "status": {"replicas": 1}}
    out = mf.apply("Deployment", live["metadata"]["managedFields"], live, config, manager="ctl",
                   api_version="apps/v1", now=T1, subresource="status")
    [e] = [e for e in out["metadata"]["managedFields"] if e["manager"] == "ctl"]
    assert e["subresource"] == "status" and e["fieldsV1"] == {"f:status": {"f:replicas": {}}}


@pytest.mark.parametrize("config,message", [
    ({"apiVersion": "v1", "kind": "Deployment"}, "invalid object type: /v1, Kind=Deployment"),
    ({"apiVersion": "apps/v1", "kind": "ReplicaSet"}, "invalid object type: apps/v1, Kind=ReplicaSet"),
    ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"managedFields": []}},
     "metadata.managedFields must be nil"),
    ([], "must be an object"),
])
def test_configurations_that_cannot_be_applied(config, message):
    with pytest.raises(errors.BadRequest, match=message.replace(".", r"\.").replace("/", "/")):
        mf.check_config("Deployment", "apps/v1", config)


# ------------------------------------------------------------------------------ managers and entries
@pytest.mark.parametrize("field_manager,ua,want", [
    (None, "kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07", "kubectl"),
    (None, "OpenAPI-Generator/31.0.0/python", "OpenAPI-Generator"),
    (None, "shoal-agent/node-1", "shoal-agent"),
    (None, None, "unknown"),
    (None, "\x01\x02", "unknown"),
    ("helm", "kubectl/v1.32", "helm"),
    (None, "x" * 200, "x" * 128),
])
def test_request_manager(field_manager, ua, want):
    assert mf.request_manager(field_manager, ua, options="UpdateOptions") == want


@pytest.mark.parametrize("kw,message", [
    (dict(field_manager=None, apply=True), 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                                           'is required for apply patch'),
    (dict(field_manager="x", force="true"), "force: Forbidden: may not be specified for non-apply patch"),
    (dict(field_manager="x" * 129), "fieldManager: Too long: may not be more than 128 bytes"),
    (dict(field_manager="a\tb"), "invalid character U+0009 (at position 1)"),
])
def test_request_manager_refusals(kw, message):
    with pytest.raises(errors.Invalid) as e:
        mf.request_manager(kw.pop("field_manager"), "kubectl/1", options="PatchOptions", **kw)
    assert message in e.value.message and e.value.code == 422


def test_client_entries_are_checked_and_made_canonical():
    raw = [{"manager": "b", "operation": "Update", "apiVersion": "apps/v1", "time": "2024-05-01T12:00:00+02:00",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}, ".": {}},
                                                   "f:metadata": {'k:{"protocol":"TCP","containerPort":80}': {}}}},
           {"manager": "a", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {}}}]
    out = mf.decode_entries(raw)
    assert [e["manager"] for e in out] == ["a", "b"]            # Apply first
    assert out[1]["time"] == "2024-05-01T10:00:00Z"
    assert json.dumps(out[1]["fieldsV1"]) == json.dumps(
        {"f:metadata": {'k:{"containerPort":80,"protocol":"TCP"}': {}}, "f:spec": {".": {}, "f:replicas": {}}})
    assert mf.requested_entries(None, out) is out and mf.requested_entries([], out) == []
    assert mf.requested_entries([{}], out) == []


@pytest.mark.parametrize("entry,field", [
    ({"manager": "m", "operation": "Patch", "apiVersion": "v1", "fieldsType": "FieldsV1"},
     "metadata.managedFields[0].operation"),
    ({"manager": "m", "operation": "Update", "fieldsType": "FieldsV1"}, "metadata.managedFields[0].apiVersion"),
    ({"manager": "m", "operation": "Update", "apiVersion": "v1"}, "metadata.managedFields[0].fieldsType"),
    ({"manager": "m", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
      "fieldsV1": {"spec": {}}}, "metadata.managedFields[0].fieldsV1"),
    ({"manager": "m", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "time": "yesterday"},
     "metadata.managedFields[0].time"),
    ({"manager": "m", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "extra": 1},
     "metadata.managedFields[0].extra"),
])
def test_bad_client_entries_are_refused_by_field(entry, field):
    with pytest.raises(errors.Invalid) as e:
        mf.decode_entries([entry], qualified="Deployment.apps", name="web")
    assert [c.field for c in e.value.causes] == [field]
    assert e.value.message.startswith('Deployment.apps "web" is invalid: ' + field)


def _pod() -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"}, "finalizers": ["x/y"],
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1",
                                              "controller": True}]},
            "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 80},
                                                                                 {"containerPort": 53, "protocol": "UDP"}],
                                     "env": [{"name": "A", "value": "1"}], "args": ["-v"],
                                     "resources": {"limits": {"cpu": "1"}},
                                     "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}],
                     "volumes": [{"name": "data", "emptyDir": {}}], "nodeSelector": {"disk": "ssd"}}}


@pytest.mark.parametrize("kind,obj", [
    ("Deployment", deployment([{"name": "a", "image": "a:1", "ports": [{"containerPort": 8080}]},
                               {"name": "b", "image": "b:1", "env": [{"name": "X", "value": "1"}]}])),
    ("Pod", _pod()),
    ("Node", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
              "spec": {"podCIDRs": ["10.244.1.0/24"], "taints": [{"key": "k", "effect": "NoSchedule"}]}}),
    ("Namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns", "annotations": {"a": "b"}}}),
    ("Lease", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l", "namespace": "x"},
               "spec": {"holderIdentity": "me", "leaseDurationSeconds": 40}}),
])
def test_the_direct_create_tree_is_the_compared_one(kind, obj):
    """created_fields (the fast path every create takes) builds exactly the tree of what
    compare() reports as added against nothing, key order included."""
    obj = validate(kind, obj)
    if kind == "Pod":
        obj["status"] = {"phase": "Pending"}           # server-set, out of scope
    c = mf.compare(kind, None, obj)
    assert not c.removed
    slow = mf.paths_tree(c.added + c.modified)
    fast = mf.created_fields(kind, obj)
    assert json.dumps(fast) == json.dumps(slow)
    status = validate("Pod", _pod())
    status["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    sc = mf.compare("Pod", None, status, scope="status")
    assert json.dumps(mf.created_fields("Pod", status, scope="status")) == json.dumps(
        mf.paths_tree(sc.added + sc.modified))
