"""Apply: the three-way merge rule, created/configured/unchanged, conflicts, per-document errors."""
from __future__ import annotations

import io
import json

import pytest

from shoal.machinery.api import errors
from shoal.cli import apply as ap
from shoal.cli.main import main
from cli_fakeapi import FakeApi

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("live,manifest,last,expected", [
    # the server's defaults and metadata survive
    ({"a": 1, "d": 9}, {"a": 1}, {"a": 1}, {"a": 1, "d": 9}),
    # a manifest field wins
    ({"a": 1}, {"a": 2}, {"a": 1}, {"a": 2}),
    # a field dropped from the manifest since last time is removed
    ({"a": 1, "b": 2}, {"a": 1}, {"a": 1, "b": 2}, {"a": 1}),
    # a field never in a manifest (set by someone else, e.g. scale) stays
    ({"a": 1, "replicas": 5}, {"a": 1}, {"a": 1}, {"a": 1, "replicas": 5}),
    # explicit null deletes
    ({"a": 1, "b": 2}, {"a": 1, "b": None}, {}, {"a": 1}),
    # nested dicts recurse
    ({"s": {"x": 1, "dflt": True}}, {"s": {"x": 2}}, {"s": {"x": 1}}, {"s": {"x": 2, "dflt": True}}),
    # keyed lists merge item by item, keeping defaults inside items, in manifest order
    ({"containers": [{"name": "a", "image": "1", "imagePullPolicy": "IfNotPresent"}, {"name": "b", "image": "x"}]},
     {"containers": [{"name": "b", "image": "y"}, {"name": "a", "image": "2"}]}, {},
     {"containers": [{"name": "b", "image": "y"}, {"name": "a", "image": "2", "imagePullPolicy": "IfNotPresent"}]}),
    # ...and an item dropped from the manifest goes
    ({"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "x"}]},
     {"containers": [{"name": "a", "image": "1"}]}, {}, {"containers": [{"name": "a", "image": "1"}]}),
    # plain lists are replaced
    ({"args": ["a", "b"]}, {"args": ["c"]}, {}, {"args": ["c"]}),
])
def test_merge_for_apply(live, manifest, last, expected):
    assert ap.merge_for_apply(live, manifest, last) == expected


def test_desired_object_sets_namespace_and_last_applied():
    m = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 1}}
    d = ap.desired_object(m, "shop")
    assert d["metadata"]["namespace"] == "shop"
    la = d["metadata"]["annotations"][ap.LAST_APPLIED]
    assert la.endswith("\n") and json.loads(la)["metadata"] == {"annotations": {}, "name": "web", "namespace": "shop"}
    assert "namespace" not in m["metadata"]  # input untouched
    ns = ap.desired_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "namespace": "y"}}, "d")
    assert "namespace" not in ns["metadata"]


DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
          "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                   "template": {"metadata": {"labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "web", "image": "web:v1"}]}}}}


def test_apply_object_created_unchanged_configured_and_server_defaults_ignored():
    api = FakeApi()
    assert ap.apply_object(api, DEPLOY, "default") == "created"
    # the server fills defaults and status: still unchanged
    k = ("Deployment", "default", "web")
    api.objects[k]["spec"]["strategy"] = {"type": "RollingUpdate"}
    api.objects[k]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    api.objects[k]["status"] = {"replicas": 2}
    assert ap.apply_object(api, DEPLOY, "default") == "unchanged"
    assert not [c for c in api.calls if c[0] == "update"]
    changed = json.loads(json.dumps(DEPLOY))
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "web:v2"
    assert ap.apply_object(api, changed, "default") == "configured"
    live = api.objects[k]
    assert live["spec"]["template"]["spec"]["containers"][0] == {"name": "web", "image": "web:v2",
                                                                 "imagePullPolicy": "IfNotPresent"}
    assert live["spec"]["strategy"] == {"type": "RollingUpdate"}
    # drift on a field the manifest sets is corrected
    api.objects[k]["spec"]["replicas"] = 7
    assert ap.apply_object(api, changed, "default") == "configured"
    assert api.objects[k]["spec"]["replicas"] == 2


def test_apply_object_retries_on_conflict():
    api = FakeApi()
    ap.apply_object(api, DEPLOY, "default")
    real_update = api.update
    bumps = {"n": 0}

    def racing_update(kind, obj, **kw):
        if bumps["n"] == 0:  # someone else writes first: our resourceVersion is stale
            bumps["n"] += 1
            api.patch(kind, "web", {"metadata": {"labels": {"other": "x"}}})
        return real_update(kind, obj, **kw)
    api.update = racing_update
    changed = json.loads(json.dumps(DEPLOY))
    changed["spec"]["replicas"] = 4
    assert ap.apply_object(api, changed, "default") == "configured"
    live = api.objects[("Deployment", "default", "web")]
    assert live["spec"]["replicas"] == 4 and live["metadata"]["labels"]["other"] == "x"


def run(argv, api, stdin=None):
    out, err = io.StringIO(), io.StringIO()
    rc = main(argv, stdout=out, stderr=err, stdin=stdin or io.StringIO(""), client_factory=lambda ctx: api)
    return rc, out.getvalue(), err.getvalue()


MULTI = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "BAD IMAGE"}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: shop}
spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: s}
"""


def test_run_apply_orders_namespaces_first_and_reports_each_bad_document(tmp_path):
    f = tmp_path / "app.yaml"
    f.write_text(MULTI)
    api = FakeApi()
    api.invalid["web"] = errors.Invalid(
        'Deployment.apps "web" is invalid', causes=[
            errors.Cause("spec.template.spec.containers[0].image", 'Invalid value: "BAD IMAGE": not a valid image'),
            errors.Cause("spec.replicas", "spec.replicas: Invalid value: -1: must be >= 0")])
    rc, out, err = run(["apply", "-f", str(f)], api)
    assert rc == 1
    assert out.splitlines() == ["namespace/shop created", "pod/p created"]
    assert err.splitlines() == [
        f'error: {f}: document 1 (Deployment/web): spec.template.spec.containers[0].image: Invalid value: '
        f'"BAD IMAGE": not a valid image',
        f"error: {f}: document 1 (Deployment/web): spec.replicas: Invalid value: -1: must be >= 0",
        f'error: {f}: document 4 (ReplicationController/s): kind: Unsupported value: "ReplicationController": no '
        f'such kind is served by shoal',
    ]
    assert [c[1] for c in api.calls if c[0] == "create"] == ["Namespace", "Deployment", "Pod"]
    assert ("Deployment", "shop", "web") not in api.objects
    rc, out, err = run(["apply", "-f", str(f)], api)
    assert out.splitlines() == ["namespace/shop unchanged", "pod/p unchanged"]


def test_run_apply_namespace_flag_conflict_and_stdin():
    api = FakeApi()
    doc = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\nspec: {containers: [{name: c, image: x}]}\n"
    rc, out, err = run(["apply", "-n", "b", "-f", "-"], api, stdin=io.StringIO(doc))
    assert rc == 1 and "the namespace from the provided object \"a\" does not match the namespace \"b\"" in err
    rc, out, err = run(["apply", "-f", "-"], api, stdin=io.StringIO(doc.replace("namespace: a", "namespace: b")))
    assert (rc, out) == (0, "pod/p created\n")
    rc, out, err = run(["-n", "c", "apply", "-f", "-"], api, stdin=io.StringIO(doc.replace(", namespace: a", "")))
    assert rc == 0 and ("Pod", "c", "p") in api.objects


def test_run_apply_yaml_syntax_error_exits_nonzero_and_applies_the_rest(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  b: [\n---\n"
                 "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n")
    api = FakeApi()
    rc, out, err = run(["apply", "-f", str(f)], api)
    assert rc == 1 and out == "namespace/ok created\n"
    assert err.startswith(f"error: {f}: document 1: line 6, column 1: invalid YAML")
