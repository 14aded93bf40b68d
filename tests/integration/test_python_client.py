"""The official Python `kubernetes` client drives every kind shoal serves (issue 16).

A real API server on a temp SQLite file, over HTTPS with its generated CA; the client is built
from the kubeconfig the server wrote (`config.new_client_from_config`), as a user would.
No controllers: what is checked is the API's semantics as the client sees them.

- `utils.create_from_yaml` of a multi-kind file, and again (409 AlreadyExists for each);
- per kind, through the typed APIs: create / read / replace (and a stale replace: 409) /
  patch with all three patch types (strategic for a dict body, merge by `_content_type`,
  json-patch for a list body) / list by label / delete_collection by label / delete → 404;
- the scale and status subresources of Deployments and ReplicaSets;
- the dynamic client over discovery: every kind found, create/get/patch/replace/delete, its
  server-side apply with a conflict, its watch;
- `watch.Watch().stream` from a resourceVersion, its own reconnection resuming from the last
  event's resourceVersion, and 410 Gone from a compacted one;
- the client's `SharedInformer` (kubernetes.informer): initial list, then events, and its cache;
- errors as `ApiException` with the status and the `Status` body Kubernetes sends.

The existing tests/integration/test_api_kubernetes_client.py covers a Deployment's create,
list and a watch of a scale change over plain HTTP; nothing of it is repeated here.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import yaml

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as k8s, config as k8s_config, utils as k8s_utils, watch as k8s_watch  # noqa: E402
from kubernetes.dynamic import DynamicClient  # noqa: E402
from kubernetes.informer import SharedInformer  # noqa: E402

from shoal.testkit.apiserver import start_test_server, wait_for  # noqa: E402

IMAGE = "127.0.0.1:5000/web:v1"
STATUS_KEYS = ["kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_test_server(tmp_path_factory.mktemp("pyclient"), tls=True)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def api_client(server):
    assert server.url.startswith("https://"), server.url
    with k8s_config.new_client_from_config(config_file=str(server.kubeconfig)) as ac:
        yield ac


@pytest.fixture(scope="module")
def core(api_client):
    return k8s.CoreV1Api(api_client)


@pytest.fixture(scope="module")
def apps(api_client):
    return k8s.AppsV1Api(api_client)


_ns_seq = iter(range(1, 10_000))


@pytest.fixture
def ns(core):
    name = f"py-{next(_ns_seq)}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    return name


def status_of(e: k8s.ApiException) -> dict:
    """The Status body of an ApiException, checked to be shaped as Kubernetes writes it."""
    assert e.body, f"ApiException {e.status} without a body"
    body = json.loads(e.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure", body
    assert body["code"] == e.status, body
    return body


# ------------------------------------------------------------------------------ the kinds
def pod_spec() -> k8s.V1PodSpec:
    return k8s.V1PodSpec(containers=[k8s.V1Container(name="web", image=IMAGE)])


def template(app: str) -> k8s.V1PodTemplateSpec:
    return k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels={"app": app}), spec=pod_spec())


@dataclass
class Kind:
    """How the typed client names one kind's calls: `create_{suffix}`, `read_{suffix}`, ..."""
    kind: str
    api: str                      # CoreV1Api, AppsV1Api, CoordinationV1Api
    suffix: str                   # "namespaced_config_map", "node"
    body: Callable[[str, dict], Any]
    collection: bool = True       # Kubernetes serves deletecollection for it

    @property
    def namespaced(self) -> bool:
        return self.suffix.startswith("namespaced_")


def meta(name: str, labels: dict) -> k8s.V1ObjectMeta:
    return k8s.V1ObjectMeta(name=name, labels=dict(labels))


KINDS = [
    Kind("Namespace", "CoreV1Api", "namespace", lambda n, lb: k8s.V1Namespace(metadata=meta(n, lb)),
         collection=False),
    Kind("Node", "CoreV1Api", "node", lambda n, lb: k8s.V1Node(metadata=meta(n, lb), spec=k8s.V1NodeSpec())),
    Kind("Pod", "CoreV1Api", "namespaced_pod", lambda n, lb: k8s.V1Pod(metadata=meta(n, lb), spec=pod_spec())),
    Kind("Event", "CoreV1Api", "namespaced_event", lambda n, lb: k8s.CoreV1Event(
        metadata=meta(n, lb), involved_object=k8s.V1ObjectReference(kind="Pod", name="somepod", api_version="v1"),
        reason="Tested", message="from the python client", type="Normal")),
    Kind("ConfigMap", "CoreV1Api", "namespaced_config_map",
         lambda n, lb: k8s.V1ConfigMap(metadata=meta(n, lb), data={"key": "value"})),
    Kind("Secret", "CoreV1Api", "namespaced_secret",
         lambda n, lb: k8s.V1Secret(metadata=meta(n, lb), string_data={"password": "s3cret"})),
    Kind("Deployment", "AppsV1Api", "namespaced_deployment", lambda n, lb: k8s.V1Deployment(
        metadata=meta(n, lb), spec=k8s.V1DeploymentSpec(
            replicas=1, selector=k8s.V1LabelSelector(match_labels={"app": n}), template=template(n)))),
    Kind("ReplicaSet", "AppsV1Api", "namespaced_replica_set", lambda n, lb: k8s.V1ReplicaSet(
        metadata=meta(n, lb), spec=k8s.V1ReplicaSetSpec(
            replicas=1, selector=k8s.V1LabelSelector(match_labels={"app": n}), template=template(n)))),
    Kind("Lease", "CoordinationV1Api", "namespaced_lease", lambda n, lb: k8s.V1Lease(
        metadata=meta(n, lb), spec=k8s.V1LeaseSpec(holder_identity="py", lease_duration_seconds=15))),
    Kind("Service", "CoreV1Api", "namespaced_service", lambda n, lb: k8s.V1Service(
        metadata=meta(n, lb), spec=k8s.V1ServiceSpec(selector={"app": n},
                                                     ports=[k8s.V1ServicePort(port=80, target_port=8080)]))),
    Kind("Endpoints", "CoreV1Api", "namespaced_endpoints", lambda n, lb: k8s.V1Endpoints(
        metadata=meta(n, lb), subsets=[k8s.V1EndpointSubset(addresses=[k8s.V1EndpointAddress(ip="10.0.0.1")],
                                                            ports=[k8s.CoreV1EndpointPort(port=8080)])])),
    Kind("EndpointSlice", "DiscoveryV1Api", "namespaced_endpoint_slice", lambda n, lb: k8s.V1EndpointSlice(
        metadata=meta(n, lb), address_type="IPv4", endpoints=[k8s.V1Endpoint(addresses=["10.0.0.1"])],
        ports=[k8s.DiscoveryV1EndpointPort(port=8080)])),
]


def test_every_served_kind_is_here(server):
    """A kind shoal starts serving needs its row in KINDS."""
    from shoal.machinery.api.resources import RESOURCES
    assert {r.kind for r in RESOURCES} == {k.kind for k in KINDS}


class Calls:
    """The typed calls of one kind, in one namespace (or none, for cluster-scoped kinds)."""

    def __init__(self, api_client, kind: Kind, ns: str):
        self.api = getattr(k8s, kind.api)(api_client)
        self.kind, self.ns = kind, ns

    def __call__(self, verb: str, *args, **kw):
        fn = getattr(self.api, f"{verb}_{self.kind.suffix}")
        if self.kind.namespaced:
            if verb in ("create", "list", "delete_collection"):
                return fn(self.ns, *args, **kw)
            return fn(args[0], self.ns, *args[1:], **kw)
        return fn(*args, **kw)


def names(lst) -> list[str]:
    return sorted(o.metadata.name for o in lst.items)


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_typed_crud_every_kind(api_client, ns, kind: Kind):
    call = Calls(api_client, kind, ns)
    a = f"{ns}-a" if not kind.namespaced else "a"
    created = call("create", kind.body(a, {"set": ns}))
    assert type(created).__name__ == type(kind.body(a, {})).__name__
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.name == a
    assert created.metadata.creation_timestamp is not None

    got = call("read", a)
    assert got.metadata.uid == created.metadata.uid

    # replace (PUT) with the current resourceVersion; then again with the stale one: 409 Conflict
    got.metadata.labels["replaced"] = "yes"
    replaced = call("replace", a, got)
    assert replaced.metadata.labels["replaced"] == "yes"
    assert replaced.metadata.resource_version != got.metadata.resource_version
    got.metadata.labels["replaced"] = "twice"
    with pytest.raises(k8s.ApiException) as ei:
        call("replace", a, got)
    st = status_of(ei.value)
    assert ei.value.status == 409 and st["reason"] == "Conflict", st

    # patch: strategic merge (a dict), JSON merge (by content type), JSON patch (a list)
    p = call("patch", a, {"metadata": {"labels": {"smp": "1"}}})
    assert p.metadata.labels["smp"] == "1" and p.metadata.labels["replaced"] == "yes"
    p = call("patch", a, {"metadata": {"labels": {"smp": None, "merge": "2"}}},
             _content_type="application/merge-patch+json")
    assert "smp" not in p.metadata.labels and p.metadata.labels["merge"] == "2"
    p = call("patch", a, [{"op": "add", "path": "/metadata/labels/json", "value": "3"},
                          {"op": "remove", "path": "/metadata/labels/merge"}])
    own = {k: v for k, v in p.metadata.labels.items() if k != "kubernetes.io/metadata.name"}   # a namespace's own
    assert own == {"set": ns, "replaced": "yes", "json": "3"}, p.metadata.labels
    with pytest.raises(k8s.ApiException) as ei:
        call("patch", a, [{"op": "test", "path": "/metadata/labels/json", "value": "not-3"}])
    assert ei.value.status in (409, 422), ei.value.status     # a failed test op changes nothing
    assert call("read", a).metadata.labels["json"] == "3"

    # list by label; delete_collection by label
    b, c = (f"{ns}-b", f"{ns}-c") if not kind.namespaced else ("b", "c")
    call("create", kind.body(b, {"set": ns}))
    call("create", kind.body(c, {"set": f"{ns}-other"}))
    assert names(call("list", label_selector=f"set={ns}")) == sorted([a, b])
    if kind.collection:
        call("delete_collection", label_selector=f"set={ns}")
        assert names(call("list", label_selector=f"set={ns}")) == []
        assert names(call("list", label_selector=f"set={ns}-other")) == [c]
    else:
        for n in (a, b):
            call("delete", n)

    # delete; then the name is gone (a namespace goes Terminating until its contents are removed)
    call("delete", c)
    if kind.kind == "Namespace":
        assert call("read", c).status.phase == "Terminating"
        return
    with pytest.raises(k8s.ApiException) as ei:
        call("read", c)
    st = status_of(ei.value)
    assert ei.value.status == 404 and st["reason"] == "NotFound", st


def test_create_from_yaml_multi_kind(api_client, core, apps, tmp_path):
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "py-multi"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "py-multi"},
         "data": {"color": "blue"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "py-multi"},
         "stringData": {"password": "s3cret"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "py-multi"},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "web", "image": IMAGE}]}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "namespace": "py-multi"},
         "spec": {"containers": [{"name": "web", "image": IMAGE}]}},
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "lock", "namespace": "py-multi"},
         "spec": {"holderIdentity": "me"}},
    ]
    f = tmp_path / "multi.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    created = k8s_utils.create_from_yaml(api_client, str(f))
    flat = [o for group in created for o in (group if isinstance(group, list) else [group])]
    assert [type(o).__name__ for o in flat] == ["V1Namespace", "V1ConfigMap", "V1Secret", "V1Deployment", "V1Pod",
                                                "V1Lease"]
    assert core.read_namespaced_config_map("settings", "py-multi").data == {"color": "blue"}
    secret = core.read_namespaced_secret("creds", "py-multi")
    assert secret.data == {"password": "czNjcmV0"} and secret.type == "Opaque" and not secret.string_data
    d = apps.read_namespaced_deployment("web", "py-multi")
    assert d.spec.replicas == 2 and d.spec.strategy.rolling_update.max_surge == "25%"   # defaulted

    # again: each object refused with 409 AlreadyExists, collected by the client
    with pytest.raises(k8s_utils.FailToCreateError) as ei:
        k8s_utils.create_from_yaml(api_client, str(f))
    excs = ei.value.api_exceptions
    assert [e.status for e in excs] == [409] * len(docs)
    assert [status_of(e)["reason"] for e in excs] == ["AlreadyExists"] * len(docs)

    # apply=True goes through the dynamic client's server-side apply (manager "python-client"). The
    # ConfigMap's data was set by the create (manager "OpenAPI-Generator", the client's User-Agent):
    # changing it is a conflict until forced. (The apply path sends to the `namespace` argument, not
    # to the object's metadata.namespace.)
    docs[1]["data"] = {"color": "green"}
    f.write_text(yaml.safe_dump_all(docs[1:2]))
    with pytest.raises(k8s_utils.FailToCreateError) as ei:
        k8s_utils.create_from_yaml(api_client, str(f), apply=True, namespace="py-multi")
    st = status_of(ei.value.api_exceptions[0])
    assert st["reason"] == "Conflict" and st["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "OpenAPI-Generator" using v1',
         "field": ".data.color"}], st
    k8s_utils.create_from_yaml(api_client, str(f), apply=True, namespace="py-multi", force_conflicts=True)
    assert core.read_namespaced_config_map("settings", "py-multi").data == {"color": "green"}


def test_scale_and_status_subresources(apps, ns):
    for kind in ("deployment", "replica_set"):
        body = KINDS[6 if kind == "deployment" else 7].body("sub", {})
        getattr(apps, f"create_namespaced_{kind}")(ns, body)
        scale = getattr(apps, f"read_namespaced_{kind}_scale")("sub", ns)
        assert isinstance(scale, k8s.V1Scale) and scale.spec.replicas == 1 and scale.status.selector == "app=sub"
        scale = getattr(apps, f"patch_namespaced_{kind}_scale")("sub", ns, {"spec": {"replicas": 3}})
        assert isinstance(scale, k8s.V1Scale) and scale.spec.replicas == 3
        scale.spec.replicas = 2
        scale = getattr(apps, f"replace_namespaced_{kind}_scale")("sub", ns, scale)
        assert scale.spec.replicas == 2
        obj = getattr(apps, f"read_namespaced_{kind}")("sub", ns)
        assert obj.spec.replicas == 2
        # status only through /status; a spec change sent there is not taken
        st = getattr(apps, f"patch_namespaced_{kind}_status")(
            "sub", ns, {"status": {"observedGeneration": 1, "replicas": 0}, "spec": {"replicas": 9}},
            _content_type="application/merge-patch+json")
        assert st.status.observed_generation == 1 and st.spec.replicas == 2
        # and status sent to the object itself is not taken either
        obj = getattr(apps, f"read_namespaced_{kind}")("sub", ns)
        obj.status.observed_generation = 7
        obj = getattr(apps, f"replace_namespaced_{kind}")("sub", ns, obj)
        assert obj.status.observed_generation == 1


# ------------------------------------------------------------------------------ dynamic client
DYNAMIC = [("v1", "Namespace"), ("v1", "Node"), ("v1", "Pod"), ("v1", "Event"), ("v1", "ConfigMap"),
           ("v1", "Secret"), ("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"), ("coordination.k8s.io/v1", "Lease"),
           ("v1", "Service"), ("v1", "Endpoints"), ("discovery.k8s.io/v1", "EndpointSlice")]


def test_dynamic_client_finds_every_kind(api_client):
    assert {k for _, k in DYNAMIC} == {k.kind for k in KINDS}
    dyn = DynamicClient(api_client)
    for api_version, kind in DYNAMIC:
        res = dyn.resources.get(api_version=api_version, kind=kind)
        assert res.kind == kind and res.group_version == api_version
    dep = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert dep.namespaced and "deploy" in dep.short_names
    assert dep.subresources["scale"].kind == "Scale"


def test_dynamic_client_crud_and_watch(api_client, ns):
    dyn = DynamicClient(api_client)
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    listed = cms.get(namespace=ns)
    start_rv = listed.metadata.resourceVersion
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dyn", "labels": {"via": "dynamic"}},
            "data": {"a": "1"}}
    created = cms.create(body=body, namespace=ns)
    assert created.metadata.uid and created.data.a == "1"
    assert cms.get(name="dyn", namespace=ns).metadata.uid == created.metadata.uid
    patched = cms.patch(name="dyn", namespace=ns, body={"data": {"b": "2"}},
                        content_type="application/merge-patch+json")
    assert patched.data.to_dict() == {"a": "1", "b": "2"}
    patched = cms.patch(name="dyn", namespace=ns, body=[{"op": "remove", "path": "/data/a"}],
                        content_type="application/json-patch+json")
    assert patched.data.to_dict() == {"b": "2"}
    full = patched.to_dict()
    full["data"] = {"c": "3"}
    replaced = cms.replace(body=full, namespace=ns)
    assert replaced.data.to_dict() == {"c": "3"}
    assert [o.metadata.name for o in cms.get(namespace=ns, label_selector="via=dynamic").items] == ["dyn"]
    cms.delete(name="dyn", namespace=ns)
    with pytest.raises(k8s.ApiException) as ei:
        cms.get(name="dyn", namespace=ns)
    assert ei.value.status == 404

    seen = [(e["type"], e["object"].metadata.name)
            for e in cms.watch(namespace=ns, resource_version=start_rv, timeout=1)]
    assert seen == [("ADDED", "dyn"), ("MODIFIED", "dyn"), ("MODIFIED", "dyn"), ("MODIFIED", "dyn"),
                    ("DELETED", "dyn")], seen


def test_dynamic_server_side_apply_conflict(api_client, ns):
    dyn = DynamicClient(api_client)
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": ns},
            "data": {"owner": "first", "extra": "x"}}
    cms.server_side_apply(body=body, field_manager="first")
    live = cms.get(name="ssa", namespace=ns)
    assert [(m.manager, m.operation) for m in live.metadata.managedFields] == [("first", "Apply")]
    other = {**body, "data": {"owner": "second"}}
    with pytest.raises(k8s.ApiException) as ei:
        cms.server_side_apply(body=other, field_manager="second")
    st = status_of(ei.value)
    assert ei.value.status == 409 and st["reason"] == "Conflict", st
    assert [c["field"] for c in st["details"]["causes"]] == [".data.owner"], st["details"]
    assert 'conflict with "first"' in st["details"]["causes"][0]["message"], st["details"]
    cms.server_side_apply(body=other, field_manager="second", force_conflicts=True)
    assert cms.get(name="ssa", namespace=ns).data.to_dict() == {"owner": "second", "extra": "x"}
    # "first" no longer sets `extra`: a field only it owned is removed
    cms.server_side_apply(body={**body, "data": {}}, field_manager="first")
    assert cms.get(name="ssa", namespace=ns).data.to_dict() == {"owner": "second"}


# ------------------------------------------------------------------------------ watch
def cm(name: str, **data) -> k8s.V1ConfigMap:
    return k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name), data=data or {"k": "v"})


def test_watch_from_resource_version_and_resume(core, ns):
    core.create_namespaced_config_map(ns, cm("one"))
    rv0 = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, cm("two"))
    core.patch_namespaced_config_map("one", ns, {"data": {"k": "changed"}})
    core.delete_namespaced_config_map("two", ns)

    w = k8s_watch.Watch()
    got = [(e["type"], e["object"].metadata.name, e["object"].data)
           for e in w.stream(core.list_namespaced_config_map, ns, resource_version=rv0, timeout_seconds=1)]
    assert got == [("ADDED", "two", {"k": "v"}), ("MODIFIED", "one", {"k": "changed"}),
                   ("DELETED", "two", {"k": "v"})], got
    # resuming from the last event's resourceVersion gives only what came after
    last = w.resource_version
    core.create_namespaced_config_map(ns, cm("three"))
    got = [(e["type"], e["object"].metadata.name)
           for e in k8s_watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=last,
                                             timeout_seconds=1)]
    assert got == [("ADDED", "three")], got

    # no resourceVersion: the current objects first, as ADDED
    got = sorted((e["type"], e["object"].metadata.name)
                 for e in k8s_watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=1))
    assert got == [("ADDED", "one"), ("ADDED", "three")], got


def test_watch_reconnects_from_the_last_resource_version(core, ns):
    """With no timeout_seconds the Watch reconnects when the server ends a stream, from the last
    event's resourceVersion: nothing is missed, nothing repeated. The server ends each stream after
    1 s here (timeoutSeconds sent under the client's back)."""
    asked: list[str | None] = []

    def short_streams(namespace, **kw):
        asked.append(kw.get("resource_version"))
        return core.list_namespaced_config_map(namespace, timeout_seconds=1, **kw)

    rv0 = core.list_namespaced_config_map(ns).metadata.resource_version
    w = k8s_watch.Watch(return_type=k8s.V1ConfigMap)
    seen: list[tuple[str, str]] = []

    def writer():
        for i in range(4):
            core.create_namespaced_config_map(ns, cm(f"w{i}"))
            time.sleep(0.7)

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.monotonic() + 20
    for e in w.stream(short_streams, ns, resource_version=rv0):
        seen.append((e["type"], e["object"].metadata.name))
        if len(seen) == 4 or time.monotonic() > deadline:
            w.stop()
    t.join()
    assert seen == [("ADDED", f"w{i}") for i in range(4)], seen
    assert len(asked) >= 2, f"the stream was never resumed: {asked}"
    assert asked[0] == rv0 and all(a is not None and int(a) > int(rv0) for a in asked[1:]), asked


def test_watch_from_a_compacted_resource_version_is_410(core, ns, server):
    core.create_namespaced_config_map(ns, cm("old"))
    old_rv = core.list_namespaced_config_map(ns).metadata.resource_version
    for i in range(3):
        core.patch_namespaced_config_map("old", ns, {"data": {"k": str(i)}})
    server.store.compact(revision=int(core.list_namespaced_config_map(ns).metadata.resource_version))
    with pytest.raises(k8s.ApiException) as ei:
        for _ in k8s_watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=old_rv,
                                          timeout_seconds=2):
            pass
    assert ei.value.status == 410, (ei.value.status, ei.value.reason)
    assert "Expired" in (ei.value.reason or "") or "Gone" in (ei.value.reason or ""), ei.value.reason


# ------------------------------------------------------------------------------ informer
def test_shared_informer(core, ns):
    core.create_namespaced_config_map(ns, cm("pre"))
    inf = SharedInformer(list_func=core.list_namespaced_config_map, namespace=ns)
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    for kind in ("ADDED", "MODIFIED", "DELETED"):
        inf.add_event_handler(kind, lambda obj, kind=kind: (lock.acquire(), events.append((kind, obj.metadata.name)),
                                                             lock.release()))
    errors: list = []
    inf.add_event_handler("ERROR", errors.append)
    inf.start()
    try:
        wait_for(lambda: ("ADDED", "pre") in events, timeout=10, what="the initial list's ADDED")
        core.create_namespaced_config_map(ns, cm("new"))
        core.patch_namespaced_config_map("pre", ns, {"data": {"k": "changed"}})
        core.delete_namespaced_config_map("new", ns)
        wait_for(lambda: len(events) >= 4, timeout=10, what="the informer's events", detail=lambda: str(events))
        assert events == [("ADDED", "pre"), ("ADDED", "new"), ("MODIFIED", "pre"), ("DELETED", "new")], events
        assert inf.cache.list_keys() == [f"{ns}/pre"]
        assert inf.cache.get_by_key(f"{ns}/pre").data == {"k": "changed"}
        assert not errors, errors
    finally:
        inf.stop()


# ------------------------------------------------------------------------------ errors
def test_errors_are_kubernetes_status_bodies(core, apps, ns, server):
    # 404: exact bytes, as a Kubernetes API server writes them
    with pytest.raises(k8s.ApiException) as ei:
        apps.read_namespaced_deployment("nope", ns)
    assert ei.value.status == 404 and ei.value.reason == "Not Found"
    assert ei.value.headers["Content-Type"] == "application/json"
    assert ei.value.body == ('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                             '"message":"deployments.apps \\"nope\\" not found","reason":"NotFound",'
                             '"details":{"name":"nope","group":"apps","kind":"deployments"},"code":404}\n')
    with pytest.raises(k8s.ApiException) as ei:
        core.read_namespaced_config_map("nope", ns)
    assert ei.value.body == ('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                             '"message":"configmaps \\"nope\\" not found","reason":"NotFound",'
                             '"details":{"name":"nope","kind":"configmaps"},"code":404}\n')

    # 409 AlreadyExists
    core.create_namespaced_config_map(ns, cm("dup"))
    with pytest.raises(k8s.ApiException) as ei:
        core.create_namespaced_config_map(ns, cm("dup"))
    assert ei.value.status == 409
    assert ei.value.body == ('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                             '"message":"configmaps \\"dup\\" already exists","reason":"AlreadyExists",'
                             '"details":{"name":"dup","kind":"configmaps"},"code":409}\n')

    # 409 Conflict: a stale resourceVersion
    stale = core.read_namespaced_config_map("dup", ns)
    core.patch_namespaced_config_map("dup", ns, {"data": {"k": "newer"}})
    with pytest.raises(k8s.ApiException) as ei:
        core.replace_namespaced_config_map("dup", ns, stale)
    assert ei.value.body == ('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                             '"message":"Operation cannot be fulfilled on configmaps \\"dup\\": the object has been '
                             'modified; please apply your changes to the latest version and try again",'
                             '"reason":"Conflict","details":{"name":"dup","kind":"configmaps"},"code":409}\n')

    # 422 Invalid, with a cause per field
    with pytest.raises(k8s.ApiException) as ei:
        core.create_namespaced_config_map(ns, cm("Bad_Name"))
    st = status_of(ei.value)
    assert ei.value.status == 422 and list(st) == STATUS_KEYS and ei.value.body.endswith("}\n"), ei.value.body
    assert st["reason"] == "Invalid" and st["details"]["name"] == "Bad_Name" and st["details"]["kind"] == "ConfigMap"
    assert st["message"].startswith('ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                    'a lowercase RFC 1123 subdomain must consist of'), st["message"]
    assert [(c["reason"], c["field"]) for c in st["details"]["causes"]] == [("FieldValueInvalid", "metadata.name")]

    body = KINDS[6].body("neg", {})
    body.spec.replicas = -1
    with pytest.raises(k8s.ApiException) as ei:
        apps.create_namespaced_deployment(ns, body)
    st = status_of(ei.value)
    assert ei.value.status == 422 and st["details"]["group"] == "apps" and st["details"]["kind"] == "Deployment"
    assert st["message"] == ('Deployment.apps "neg" is invalid: spec.replicas: Invalid value: -1: '
                             'must be greater than or equal to 0'), st["message"]
    assert [(c["reason"], c["field"]) for c in st["details"]["causes"]] == [("FieldValueInvalid", "spec.replicas")]

    # 401: a wrong token
    cfg = k8s.Configuration()
    cfg.host = server.url
    cfg.ssl_ca_cert = server.tls_files["ca"]
    cfg.api_key = {"authorization": "not-a-token"}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    with k8s.ApiClient(cfg) as ac:
        with pytest.raises(k8s.ApiException) as ei:
            k8s.CoreV1Api(ac).list_namespaced_config_map(ns)
    st = status_of(ei.value)
    assert ei.value.status == 401 and list(st) == ["kind", "apiVersion", "metadata", "status", "message", "reason",
                                                   "code"], ei.value.body
    assert st["reason"] == "Unauthorized" and st["message"].startswith("Unauthorized"), st
