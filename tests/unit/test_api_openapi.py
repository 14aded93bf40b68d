"""The OpenAPI documents (apiserver.openapi): generated from the models shoal decodes with, so
they describe what shoal accepts; named, described and annotated after Kubernetes' schema."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from pydantic import BaseModel

from shoal.apiserver import openapi
from shoal.apiserver.discovery import served_verbs
from shoal.machinery.api import errors, models
from shoal.machinery.api.models import KINDS
from shoal.machinery.api.resources import RESOURCES

pytestmark = pytest.mark.unit

DOCS = openapi.documents("v-test")
SCHEMAS: dict[str, dict] = {}
for _doc in DOCS.v3.values():
    SCHEMAS.update(_doc["components"]["schemas"])


def builder() -> openapi.SchemaBuilder:
    """The class → definition-name map the documents were built with."""
    b = openapi.SchemaBuilder(openapi.reference())
    for info in KINDS.values():
        b.model(info.model, openapi._kind_name(b, info))
    return b


BUILT = builder()


def prop(schema_name: str, *path: str) -> dict:
    """The property at `path`, following references (allOf-wrapped or plain, items, maps)."""
    node = SCHEMAS[schema_name]
    for p in path:
        node = node["properties"][p]
        while True:
            if "allOf" in node:
                node = node["allOf"][0]
            if "$ref" in node:
                node = SCHEMAS[node["$ref"].rsplit("/", 1)[1]]
                continue
            if node.get("type") == "array" and p != path[-1]:
                node = node["items"]
                continue
            break
    return node


def raw_prop(schema_name: str, name: str) -> dict:
    return SCHEMAS[schema_name]["properties"][name]


def test_every_model_field_is_in_its_schema_and_nothing_else():
    assert BUILT.names, "no model was walked"
    for cls, name in BUILT.names.items():
        wire = {f.alias or n for n, f in cls.model_fields.items()}
        assert set(SCHEMAS[name]["properties"]) == wire, name


def test_every_kind_shoal_serves_has_a_schema_with_its_gvk():
    for r in RESOURCES:
        info = KINDS[r.kind]
        name = openapi._kind_name(BUILT, info)
        assert {"group": r.group, "version": r.version, "kind": r.kind} in \
            SCHEMAS[name]["x-kubernetes-group-version-kind"]
        assert SCHEMAS[name + "List"]["properties"]["items"]["items"] == {"$ref": openapi.COMPONENTS + name}


def _pod(spec_extra=None, container_extra=None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox", **(container_extra or {})}],
                     **(spec_extra or {})}}


@pytest.mark.parametrize("schema,manifest", [
    ("io.k8s.api.core.v1.PodSpec", lambda f: _pod(spec_extra={f: "x"})),
    ("io.k8s.api.core.v1.Container", lambda f: _pod(container_extra={f: "x"})),
    ("io.k8s.api.core.v1.Volume", lambda f: _pod(spec_extra={"volumes": [{"name": "v", f: "x"}]})),
    ("io.k8s.api.core.v1.Probe",
     lambda f: _pod(container_extra={"livenessProbe": {"exec": {"command": ["true"]}, f: "x"}})),
    ("io.k8s.api.core.v1.PodSecurityContext", lambda f: _pod(spec_extra={"securityContext": {f: "x"}})),
])
def test_a_field_shoal_refuses_is_not_in_the_document(schema, manifest):
    """Every field Kubernetes has and the document leaves out is one shoal refuses by name."""
    kubernetes = set(openapi.reference()[schema]["properties"])
    ours = set(SCHEMAS[schema]["properties"])
    assert ours <= kubernetes
    left_out = sorted(kubernetes - ours)
    assert left_out, f"shoal accepts every field of {schema}: pick a definition with fields it refuses"
    for field in left_out:
        with pytest.raises(errors.BadRequest) as e:
            models.validate("Pod", manifest(field))
        assert "unknown field" in str(e.value) and field in str(e.value), field


def test_descriptions_and_required_are_kubernetes():
    ref = openapi.reference()
    for cls, name in BUILT.names.items():
        rdef = ref.get(name)
        assert rdef is not None, f"{cls.__name__}: no Kubernetes definition named {name}"
        assert SCHEMAS[name].get("description") == rdef.get("description")
        for field, p in SCHEMAS[name]["properties"].items():      # a shoal-only field has no words
            assert p.get("description") == rdef["properties"].get(field, {}).get("description"), (name, field)
        assert SCHEMAS[name].get("required", []) == [r for r in rdef.get("required", [])
                                                      if r in SCHEMAS[name]["properties"]]
    assert SCHEMAS["io.k8s.api.apps.v1.DeploymentSpec"]["required"] == ["selector", "template"]


@pytest.mark.parametrize("schema,field,expected", [
    ("io.k8s.api.core.v1.PodSpec", "containers",
     {"x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge",
      "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
    ("io.k8s.api.core.v1.Container", "ports",
     {"x-kubernetes-patch-merge-key": "containerPort", "x-kubernetes-patch-strategy": "merge",
      "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["containerPort", "protocol"]}),
    ("io.k8s.api.core.v1.Container", "env",
     {"x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge"}),
    ("io.k8s.api.core.v1.Container", "volumeMounts",
     {"x-kubernetes-patch-merge-key": "mountPath", "x-kubernetes-patch-strategy": "merge"}),
    ("io.k8s.api.core.v1.PodSpec", "volumes",
     {"x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge,retainKeys"}),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", {"x-kubernetes-patch-strategy": "retainKeys"}),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences",
     {"x-kubernetes-patch-merge-key": "uid", "x-kubernetes-patch-strategy": "merge"}),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers",
     {"x-kubernetes-list-type": "set", "x-kubernetes-patch-strategy": "merge"}),
    ("io.k8s.api.core.v1.PodSpec", "tolerations", {"x-kubernetes-list-type": "atomic"}),
])
def test_patch_and_list_extensions_where_kubernetes_has_them(schema, field, expected):
    got = {k: v for k, v in raw_prop(schema, field).items() if k.startswith("x-kubernetes-")}
    assert got.items() >= expected.items()
    assert got == {k: v for k, v in openapi.reference()[schema]["properties"][field].items()
                   if k.startswith("x-kubernetes-")}


def test_types_follow_the_model_annotations():
    assert prop("io.k8s.api.apps.v1.DeploymentSpec", "replicas") == {
        "type": "integer", "format": "int32", "description": raw_prop("io.k8s.api.apps.v1.DeploymentSpec",
                                                                      "replicas")["description"]}
    assert raw_prop("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "generation")["format"] == "int64"
    assert raw_prop("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "creationTimestamp")["allOf"] == [
        {"$ref": openapi.COMPONENTS + openapi.TIME}]
    assert SCHEMAS[openapi.TIME]["format"] == "date-time"
    limits = raw_prop("io.k8s.api.core.v1.ResourceRequirements", "limits")
    assert limits["type"] == "object" and limits["additionalProperties"] == {"$ref": openapi.COMPONENTS +
                                                                             openapi.QUANTITY}
    assert raw_prop("io.k8s.api.core.v1.HTTPGetAction", "port")["allOf"] == [
        {"$ref": openapi.COMPONENTS + openapi.INT_OR_STRING}]
    assert SCHEMAS[openapi.INT_OR_STRING] == {"type": "string", "format": "int-or-string"}
    labels = raw_prop("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "labels")
    assert labels["additionalProperties"] == {"type": "string"}
    assert raw_prop("io.k8s.api.core.v1.Container", "args")["items"] == {"type": "string"}
    if "Secret" in KINDS:
        assert raw_prop("io.k8s.api.core.v1.Secret", "data")["additionalProperties"] == {"type": "string",
                                                                                         "format": "byte"}


class _Inner(BaseModel):
    x: int | None = None


class _Other(BaseModel):
    y: int | None = None


class _Outer(BaseModel):
    a: _Inner | None = None
    b: list[_Inner] | None = None
    c: dict[str, Any] | None = None


def test_builder_names_nested_models_and_refuses_a_name_clash():
    b = openapi.SchemaBuilder({})
    b.model(_Outer, "io.example.v1.Outer")
    assert b.names[_Inner] == "io.example.v1._Inner"         # no Kubernetes name: the owner's package
    assert b.schemas["io.example.v1.Outer"]["properties"]["b"] == {
        "type": "array", "items": {"$ref": openapi.COMPONENTS + "io.example.v1._Inner"}}
    with pytest.raises(ValueError, match="_Other and _Outer both map to the OpenAPI definition io.example.v1.Outer"):
        b.model(_Other, "io.example.v1.Outer")


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_resolves_in_its_own_document():
    for key, doc in DOCS.v3.items():
        names = doc["components"]["schemas"]
        for r in _refs(doc):
            assert r.startswith(openapi.COMPONENTS) and r[len(openapi.COMPONENTS):] in names, (key, r)
    for r in _refs(DOCS.v2):
        assert r.startswith(openapi.DEFINITIONS) and r[len(openapi.DEFINITIONS):] in DOCS.v2["definitions"], r
    assert "allOf" not in json.dumps(DOCS.v2)
    assert DOCS.v2["swagger"] == "2.0" and DOCS.v3["api/v1"]["openapi"] == "3.0.0"


def test_paths_are_the_routes_served_with_gvk_and_kubectls_parameters():
    for r in RESOURCES:
        doc = DOCS.v3[openapi.gv_key(r.group, r.version)]
        root = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
        coll = f"{root}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{root}/{r.plural}"
        item = doc["paths"][coll + "/{name}"]
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        for method in ("get", "put", "patch", "delete"):
            assert item[method]["x-kubernetes-group-version-kind"] == gvk
        patch = item["patch"]
        assert {p["name"] for p in patch["parameters"]} == {"dryRun", "fieldManager", "fieldValidation", "force"}
        assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
        assert {p["name"] for p in item["put"]["parameters"]} == {"dryRun", "fieldManager", "fieldValidation"}
        c = doc["paths"][coll]
        assert {p["name"] for p in c["post"]["parameters"]} == {"dryRun", "fieldManager", "fieldValidation"}
        assert ("delete" in c) == ("deletecollection" in served_verbs(r))
        assert c["get"]["x-kubernetes-action"] == "list"
        for sub in r.subresources:
            assert coll + "/{name}/" + sub in doc["paths"], (r.plural, sub)
        if r.namespaced:
            assert f"{root}/{r.plural}" in doc["paths"]
        ops = [op for p in doc["paths"].values() for m, op in p.items() if m != "parameters"]
        assert all("x-kubernetes-group-version-kind" in op and "x-kubernetes-action" in op for op in ops)
    scale = DOCS.v3["apis/apps/v1"]["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["patch"]["x-kubernetes-group-version-kind"] == {"group": "autoscaling", "version": "v1",
                                                                  "kind": "Scale"}
    op_ids = [op["operationId"] for d in DOCS.v3.values() for p in d["paths"].values()
              for m, op in p.items() if m != "parameters"]
    assert len(op_ids) == len(set(op_ids))
    assert "patchAppsV1NamespacedDeploymentScale" in op_ids and "listCoordinationV1LeaseForAllNamespaces" in op_ids


def test_v2_operations_have_swagger_2_parameters():
    op = DOCS.v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert op["consumes"] == list(openapi.PATCH_TYPES)
    body = op["parameters"][0]
    assert body["in"] == "body" and body["schema"] == {"$ref": openapi.DEFINITIONS + openapi.PATCH}
    fv = next(p for p in op["parameters"] if p["name"] == "fieldValidation")
    assert fv["type"] == "string" and "schema" not in fv
    assert op["responses"]["200"]["schema"] == {"$ref": openapi.DEFINITIONS + "io.k8s.api.apps.v1.Deployment"}


def test_documents_are_built_once_and_hashed():
    assert openapi.documents("v-test") is DOCS
    for key, data in DOCS.v3_bytes.items():
        assert json.loads(data) == DOCS.v3[key]
        assert DOCS.v3_hash[key] == hashlib.sha512(data).hexdigest().upper()
        assert DOCS.index()["paths"][key]["serverRelativeURL"] == f"/openapi/v3/{key}?hash={DOCS.v3_hash[key]}"
    assert set(DOCS.index()["paths"]) == {openapi.gv_key(r.group, r.version) for r in RESOURCES}
    assert DOCS.v2_hash == hashlib.sha512(DOCS.v2_bytes).hexdigest().upper()


def test_missing_reference_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(openapi.importlib.util, "find_spec", lambda name: None)
    openapi.reference.cache_clear()
    try:
        with pytest.raises(openapi.ReferenceMissing, match="kubernetes-validate"):
            openapi.reference()
    finally:
        monkeypatch.undo()
        openapi.reference.cache_clear()
