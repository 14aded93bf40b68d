"""Table tests of the Table / PartialObjectMetadata answers (apiserver.tables): Accept
negotiation as Kubernetes' API server does it, the Table's shape, includeObject, and watch
events (column definitions on the first one only)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from shoal.apiserver import tables
from shoal.machinery.api import errors
from shoal.machinery.api.resources import resolve

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
KUBECTL_GET = ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
               "application/json")
TABLE_V1 = tables.View("Table", "meta.k8s.io/v1")


@pytest.mark.parametrize("accept,target,expected", [
    (None, "list", None),
    ("", "object", None),
    ("application/json", "list", None),
    ("application/json, */*", "object", None),
    ("application/vnd.kubernetes.protobuf,application/json", "object", None),     # typed clients: the object
    (KUBECTL_GET, "list", TABLE_V1),
    (KUBECTL_GET, "object", TABLE_V1),
    (KUBECTL_GET, "watch", TABLE_V1),
    ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", "list", tables.View("Table", "meta.k8s.io/v1beta1")),
    ("*/*;as=Table;v=v1;g=meta.k8s.io", "list", TABLE_V1),
    # the first servable clause decides, q first
    ("application/json,application/json;as=Table;v=v1;g=meta.k8s.io", "list", None),
    ("application/json;q=0.5,application/json;as=Table;v=v1;g=meta.k8s.io", "list", TABLE_V1),
    ("application/json;as=Table;v=v1;g=meta.k8s.io;q=0,application/json", "list", None),
    # clauses shoal cannot serve are skipped
    ("application/json;as=Table;v=v2;g=meta.k8s.io,application/json", "list", None),
    ("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io",
     "list", TABLE_V1),
    ("application/json;as=Widget;v=v1;g=meta.k8s.io,application/json", "object", None),
    ("application/json;as=Table;v=v1;g=example.com,application/json", "object", None),
    # the metadata client
    ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json", "list",
     tables.View("PartialObjectMetadataList", "meta.k8s.io/v1")),
    ("application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io,application/json", "object",
     tables.View("PartialObjectMetadata", "meta.k8s.io/v1")),
    ("application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io,application/json", "watch",
     tables.View("PartialObjectMetadata", "meta.k8s.io/v1")),
])
def test_view_for(accept, target, expected):
    assert tables.view_for(accept, {}, target=target) == expected


@pytest.mark.parametrize("accept,target,message", [
    ("application/json;as=Table;v=v2;g=meta.k8s.io", "list", "only the following media types are accepted"),
    ("application/yaml;as=Table;v=v1;g=meta.k8s.io", "object", "only the following media types are accepted"),
    ("application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io", "list",
     "you requested PartialObjectMetadata, but the requested object is a list"),
    ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", "object",
     "you requested PartialObjectMetadataList, but the requested object is not a list"),
])
def test_view_for_not_acceptable(accept, target, message):
    with pytest.raises(errors.ApiError) as e:
        tables.view_for(accept, {}, target=target)
    assert (e.value.code, e.value.reason) == (406, "NotAcceptable")
    assert e.value.message.startswith(message)


@pytest.mark.parametrize("value,expected", [(None, "Metadata"), ("", "Metadata"), ("Metadata", "Metadata"),
                                            ("Object", "Object"), ("None", "None")])
def test_include_object(value, expected):
    q = {} if value is None else {"includeObject": value}
    assert tables.view_for(KUBECTL_GET, q, target="list").include_object == expected


def test_include_object_refuses_other_values_as_kubernetes_does():
    with pytest.raises(errors.BadRequest) as e:
        tables.view_for(KUBECTL_GET, {"includeObject": "all"}, target="list")
    assert e.value.message == ("Unable to convert to Table as requested: includeObject: Invalid value: \"all\": "
                               "must be 'Metadata', 'Object', 'None', or empty")
    # a plain answer reads no TableOptions
    assert tables.view_for("application/json", {"includeObject": "all"}, target="list") is None


POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1", "resourceVersion": "17",
                    "labels": {"app": "web"}, "creationTimestamp": "2024-05-01T11:55:00Z"},
       "spec": {"containers": [{"name": "web", "image": "nginx"}]},
       "status": {"phase": "Succeeded", "containerStatuses": [
           {"name": "web", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 0,
                                                                                   "reason": "Completed"}}}]}}


def test_list_table_shape():
    t = tables.for_list(TABLE_V1, resolve("pods"), [POD], "42", now=NOW)
    assert list(t) == ["kind", "apiVersion", "metadata", "columnDefinitions", "rows"]
    assert (t["kind"], t["apiVersion"], t["metadata"]) == ("Table", "meta.k8s.io/v1", {"resourceVersion": "42"})
    assert t["columnDefinitions"][0] == {"name": "Name", "type": "string", "format": "name",
                                         "description": t["columnDefinitions"][0]["description"], "priority": 0}
    assert [c["name"] for c in t["columnDefinitions"] if c["priority"] == 1] == ["IP", "Node", "Nominated Node",
                                                                                  "Readiness Gates"]
    (row,) = t["rows"]
    assert row["cells"] == ["web-1", "0/1", "Completed", "0", "5m", "<none>", "<none>", "<none>", "<none>"]
    assert row["conditions"][0]["reason"] == "Succeeded"
    assert row["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": POD["metadata"]}
    empty = tables.for_list(TABLE_V1, resolve("pods"), [], "43", now=NOW)
    assert empty["rows"] == [] and empty["columnDefinitions"]


def test_object_table_and_include_object():
    res = resolve("pods")
    one = tables.for_object(tables.View("Table", "meta.k8s.io/v1beta1", "Object"), res,
                            {k: v for k, v in POD.items() if k not in ("kind", "apiVersion")}, now=NOW)
    assert one["apiVersion"] == "meta.k8s.io/v1beta1" and one["metadata"] == {"resourceVersion": "17"}
    assert one["rows"][0]["object"]["kind"] == "Pod" and one["rows"][0]["object"]["apiVersion"] == "v1"
    none = tables.for_object(tables.View("Table", "meta.k8s.io/v1", "None"), res, POD, now=NOW)
    assert "object" in none["rows"][0] and none["rows"][0]["object"] is None


def test_partial_object_metadata_views():
    res = resolve("pods")
    assert tables.for_object(tables.View("PartialObjectMetadata", "meta.k8s.io/v1"), res, POD) == {
        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": POD["metadata"]}
    lst = tables.for_list(tables.View("PartialObjectMetadataList", "meta.k8s.io/v1"), res, [POD], "9")
    assert lst["kind"] == "PartialObjectMetadataList" and lst["metadata"] == {"resourceVersion": "9"}
    assert lst["items"][0]["metadata"]["name"] == "web-1"


def test_watch_events_carry_column_definitions_on_the_first_event_only():
    conv = tables.WatchConverter(TABLE_V1, resolve("pods"))
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired"}
    lines = [json.dumps({"type": t, "object": o}).encode() for t, o in
             (("ADDED", POD), ("MODIFIED", POD), ("ERROR", status))]
    out = conv.chunk(b"\n".join(lines) + b"\n")
    assert out.endswith(b"\n")
    first, second, err = [json.loads(x) for x in out.splitlines()]
    assert first["type"] == "ADDED" and first["object"]["kind"] == "Table"
    assert first["object"]["columnDefinitions"] and first["object"]["rows"][0]["cells"][0] == "web-1"
    assert second["object"]["kind"] == "Table" and second["object"]["columnDefinitions"] is None
    assert second["object"]["metadata"] == {"resourceVersion": "17"}
    assert err == {"type": "ERROR", "object": status}        # a Status is never converted
    later = json.loads(conv.chunk(lines[0] + b"\n"))
    assert later["object"]["columnDefinitions"] is None


def test_response_media_type():
    r = tables.response(TABLE_V1, {"kind": "Table"}, lambda body: json.dumps(body).encode() + b"\n")
    assert r.media_type == "application/json;as=Table;v=v1;g=meta.k8s.io"
    assert r.body == b'{"kind": "Table"}\n'
