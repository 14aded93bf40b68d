"""The protobuf body decoder: kubectl's real bytes, the omitempty rules, the special types,
and every way a body can be wrong (a 400 naming what and where, never another exception)."""
from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.apiserver import protobuf
from shoal.apiserver.protobuf_schema import MESSAGES
from shoal.machinery.api import errors
from shoal.machinery.api.models import validate

pytestmark = pytest.mark.unit

# Bodies kubectl 1.32.4 sent (captured from the wire): `create deployment web --image=busybox
# --replicas=2`, `create namespace x`, `create configmap c --from-literal=a=b`, `create secret
# generic s --from-literal=a=b`, `create secret docker-registry reg --docker-server=r.example
# --docker-username=u --docker-password=p`.
KUBECTL = {
    "deployment": "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412af010a1f0a0377656212001a0022002a00320038"
                  "0042005a0a0a036170701203776562127e0802120c0a0a0a0361707012037765621a640a1c0a0012001a0022002a0032"
                  "00380042005a0a0a036170701203776562124412260a0762757379626f78120762757379626f782a0042006a00720080"
                  "0100880100900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a00280038001a"
                  "0c0800100018002000280038001a002200",
    "namespace": "6b3873000a0f0a02763112094e616d65737061636512190a110a017812001a0022002a0032003800420012001a020a001a"
                 "002200",
    "configmap": "6b3873000a0f0a0276311209436f6e6669674d6170121b0a110a016312001a0022002a0032003800420012060a01611201"
                 "621a002200",
    "secret": "6b3873000a0c0a0276311206536563726574121d0a110a017312001a0022002a0032003800420012060a01611201621a001a"
              "002200",
    "docker-registry": "6b3873000a0c0a02763112065365637265741291010a130a0372656712001a0022002a00320038004200125a0a11"
                       "2e646f636b6572636f6e6669676a736f6e12457b226175746873223a7b22722e6578616d706c65223a7b2275736572"
                       "6e616d65223a2275222c2270617373776f7264223a2270222c2261757468223a2264547077227d7d7d1a1e6b756265"
                       "726e657465732e696f2f646f636b6572636f6e6669676a736f6e1a002200",
}


# --- a small encoder, as Go's writes: every field given is written, zero or not --------------

def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def vf(num: int, v: int) -> bytes:
    return varint(num << 3) + varint(v)


def lf(num: int, payload: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def sf(num: int, s: str) -> bytes:
    return lf(num, s.encode())


def entry(num: int, key: str, value: bytes) -> bytes:
    return lf(num, sf(1, key) + lf(2, value))


def envelope(api_version: str, kind: str, raw: bytes, *, encoding: str = "", content_type: str = "") -> bytes:
    return (protobuf.MAGIC + lf(1, sf(1, api_version) + sf(2, kind)) + lf(2, raw) + sf(3, encoding)
            + sf(4, content_type))


def meta(name: str, **extra: bytes) -> bytes:
    """ObjectMeta as Go writes it: the non-pointer fields always, empty when unset."""
    return lf(1, sf(1, name) + sf(2, "") + sf(3, "") + sf(4, "") + sf(5, "") + sf(6, "") + vf(7, 0) + lf(8, b"")
              + b"".join(extra.values()))


def bad(raw: bytes) -> str:
    with pytest.raises(errors.BadRequest) as e:
        protobuf.decode(raw)
    return e.value.message


# --- kubectl's own bodies ------------------------------------------------------------------------

def test_kubectl_create_bodies_decode_to_the_json_kubectl_would_send():
    # What `kubectl create ... --dry-run=client -o json` prints, less `creationTimestamp: null`
    # (a null field is an absent one to shoal's decoder).
    assert protobuf.decode(bytes.fromhex(KUBECTL["deployment"])) == {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "busybox", "image": "busybox", "resources": {}}]}},
                 "strategy": {}},
        "status": {}}
    assert protobuf.decode(bytes.fromhex(KUBECTL["namespace"])) == {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": {}, "status": {}}
    assert protobuf.decode(bytes.fromhex(KUBECTL["configmap"])) == {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}
    # Secret data travels as raw bytes; JSON has them base64. The empty type is omitted.
    assert protobuf.decode(bytes.fromhex(KUBECTL["secret"])) == {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "Yg=="}}
    reg = protobuf.decode(bytes.fromhex(KUBECTL["docker-registry"]))
    assert reg["type"] == "kubernetes.io/dockerconfigjson"
    assert base64.b64decode(reg["data"][".dockerconfigjson"]).startswith(b'{"auths":{"r.example"')


def test_kubectl_bodies_pass_validation_as_their_json_does():
    dep = protobuf.decode(bytes.fromhex(KUBECTL["deployment"]))
    dep["metadata"]["namespace"] = "default"
    out = validate("Deployment", dep)
    assert out["spec"]["strategy"]["type"] == "RollingUpdate"      # `strategy: {type: ""}` was defaulted
    assert validate("Secret", dict(protobuf.decode(bytes.fromhex(KUBECTL["secret"])),
                                   metadata={"name": "s", "namespace": "d"}))["type"] == "Opaque"
    validate("Secret", dict(protobuf.decode(bytes.fromhex(KUBECTL["docker-registry"])),
                            metadata={"name": "reg", "namespace": "d"}))


# --- omitempty, pointers, special types ----------------------------------------------------------

def test_zero_values_are_absent_unless_go_would_write_them():
    # replicas is a pointer: 0 is 0; minReadySeconds (omitempty) 0 is absent; paused false absent
    spec = vf(1, 0) + vf(5, 0) + vf(7, 0) + lf(4, sf(1, ""))
    out = protobuf.decode(envelope("apps/v1", "Deployment", meta("d") + lf(2, spec)))
    assert out["spec"] == {"replicas": 0, "strategy": {}}
    assert out["metadata"] == {"name": "d"}                         # "" strings, generation 0, zero time
    # immutable is *bool: an explicit false stays; a map value keeps its empty string
    cm = protobuf.decode(envelope("v1", "ConfigMap", meta("c") + entry(2, "k", b"") + vf(4, 0)))
    assert cm["immutable"] is False and cm["data"] == {"k": ""}
    # DeleteOptions.gracePeriodSeconds is a pointer: 0 means "now"
    assert protobuf.decode(envelope("v1", "DeleteOptions", vf(1, 0)))["gracePeriodSeconds"] == 0


def test_secret_bytes_become_base64_and_empty_bytes_stay_empty():
    raw = meta("s") + entry(2, "bin", bytes(range(256))) + entry(2, "empty", b"") + sf(3, "Opaque")
    out = protobuf.decode(envelope("v1", "Secret", raw))
    assert base64.b64decode(out["data"]["bin"]) == bytes(range(256))
    assert out["data"]["empty"] == ""


def test_time_and_micro_time():
    created = lf(8, vf(1, 1714564800) + vf(2, 5_000_000))          # 2024-05-01T12:00:00.005Z
    out = protobuf.decode(envelope("v1", "Namespace", lf(1, sf(1, "n") + created)))
    assert out["metadata"]["creationTimestamp"] == "2024-05-01T12:00:00Z"   # Time has second precision
    zero_time = lf(8, vf(1, -62135596800))                           # Go's zero time, written out: null
    assert "creationTimestamp" not in protobuf.decode(envelope("v1", "Namespace", lf(1, sf(1, "n") + zero_time)))[
        "metadata"]
    lease = lf(2, sf(1, "node-1") + lf(4, vf(1, 1714564800) + vf(2, 123456000)))
    out = protobuf.decode(envelope("coordination.k8s.io/v1", "Lease", meta("l") + lease))
    assert out["spec"] == {"holderIdentity": "node-1", "renewTime": "2024-05-01T12:00:00.123456Z"}


def test_int_or_string_quantity_and_inlined_structs():
    rolling = lf(2, vf(1, 1) + sf(3, "25%")) + lf(1, vf(1, 0) + vf(2, 0))   # maxSurge "25%", maxUnavailable 0
    probe = lf(1, lf(2, sf(1, "/healthz") + lf(2, vf(1, 1) + sf(3, "http")))) + vf(4, 3)
    limits = entry(1, "cpu", sf(1, "500m")) + entry(1, "memory", sf(1, "128Mi"))
    container = sf(1, "c") + sf(2, "busybox") + lf(8, limits) + lf(10, probe)
    volume = sf(1, "scratch") + lf(2, lf(2, sf(1, "") + lf(2, sf(1, "1Gi"))))   # Volume{volumeSource{emptyDir}}
    pod_spec = lf(1, volume) + lf(2, container)
    tmpl = lf(3, lf(1, b"") + lf(2, pod_spec))
    out = protobuf.decode(envelope("apps/v1", "Deployment", meta("d") + lf(2, tmpl + lf(4, lf(2, rolling)))))
    spec = out["spec"]
    assert spec["strategy"] == {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    ps = spec["template"]["spec"]
    assert ps["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}]
    c = ps["containers"][0]
    assert c["resources"] == {"limits": {"cpu": "500m", "memory": "128Mi"}}
    assert c["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 3}
    assert spec["template"]["metadata"] == {}


def test_repeated_scalars_plain_and_packed():
    plain = vf(4, 1000) + vf(4, 2000)
    packed = lf(4, varint(3000) + varint(4000))
    spec = lf(2, sf(1, "c")) + lf(14, plain + packed)
    out = protobuf.decode(envelope("v1", "Pod", meta("p") + lf(2, spec)))
    assert out["spec"]["securityContext"] == {"supplementalGroups": [1000, 2000, 3000, 4000]}


def test_negative_integers_are_twos_complement_varints():
    out = protobuf.decode(envelope("apps/v1", "Deployment", meta("d") + lf(2, vf(1, -1))))
    assert out["spec"]["replicas"] == -1
    with pytest.raises(errors.Invalid):                               # then refused by validation, 422
        validate("Deployment", dict(out, metadata={"name": "d", "namespace": "x"}))


def test_drain_delete_options_with_an_empty_object():
    out = protobuf.decode(envelope("v1", "DeleteOptions", b""))
    assert out == {"apiVersion": "v1", "kind": "DeleteOptions"}
    assert validate("DeleteOptions", out) == {"apiVersion": "v1", "kind": "DeleteOptions"}


def test_binding_and_scale():
    binding = protobuf.decode(envelope("v1", "Binding", meta("p") + lf(2, sf(1, "Node") + sf(3, "node-1"))))
    assert binding == {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
                       "target": {"kind": "Node", "name": "node-1"}}
    scale = protobuf.decode(envelope("autoscaling/v1", "Scale", meta("web") + lf(2, vf(1, 3)) + lf(3, vf(1, 0))))
    assert scale["spec"] == {"replicas": 3} and scale["status"] == {"replicas": 0}   # status.replicas: no omitempty


def test_a_message_field_sent_twice_merges_as_in_go():
    raw = lf(1, sf(1, "n") + entry(11, "a", b"1")) + lf(1, entry(11, "b", b"2"))
    assert protobuf.decode(envelope("v1", "Namespace", raw))["metadata"] == {"name": "n",
                                                                             "labels": {"a": "1", "b": "2"}}


# --- what shoal does not support is refused by the same validation as JSON ----------------------

def test_kubernetes_fields_shoal_does_not_serve_are_refused_by_name():
    container = sf(1, "c") + sf(2, "busybox") + vf(16, 1)            # stdin: true
    pod = meta("p") + lf(2, lf(2, container))
    out = protobuf.decode(envelope("v1", "Pod", pod))
    assert out["spec"]["containers"][0]["stdin"] is True
    with pytest.raises(errors.BadRequest, match=r'unknown field "spec.containers\[0\].stdin"'):
        validate("Pod", dict(out, metadata={"name": "p", "namespace": "d"}))
    # a stdin: false that Go always writes is no field at all
    quiet = protobuf.decode(envelope("v1", "Pod", meta("p") + lf(2, lf(2, sf(1, "c") + sf(2, "b") + vf(16, 0)))))
    assert quiet["spec"]["containers"][0] == {"name": "c", "image": "b"}


def test_configmap_and_secret_references_in_pods_stay_refused():
    # pods cannot consume ConfigMaps or Secrets yet: a volume or env reference is an unknown field
    cm_volume = sf(1, "cfg") + lf(2, lf(19, lf(1, sf(1, "app-config"))))   # volumeSource.configMap.name
    env = sf(1, "PASSWORD") + lf(3, lf(2, lf(1, sf(1, "db")) + sf(2, "password")))  # valueFrom.secretKeyRef
    pod = meta("p") + lf(2, lf(1, cm_volume) + lf(2, sf(1, "c") + sf(2, "busybox") + lf(7, env)))
    out = protobuf.decode(envelope("v1", "Pod", pod))
    assert out["spec"]["volumes"] == [{"name": "cfg", "configMap": {"name": "app-config"}}]
    with pytest.raises(errors.BadRequest) as e:
        validate("Pod", dict(out, metadata={"name": "p", "namespace": "d"}))
    assert 'unknown field "spec.volumes[0].configMap"' in e.value.message
    assert 'unknown field "spec.containers[0].env[0].valueFrom"' in e.value.message


# --- malformed bodies ----------------------------------------------------------------------------

def test_unknown_field_numbers_are_named_with_their_place():
    msg = bad(envelope("apps/v1", "Deployment", meta("d") + lf(2, vf(99, 1))))
    assert "unknown field number 99 at spec" in msg and "apps.v1.DeploymentSpec" in msg
    assert "unknown field number 15 at the object's top level" in bad(envelope("v1", "ConfigMap", vf(15, 1)))
    assert "in the envelope" in bad(protobuf.MAGIC + lf(7, b""))
    assert "an entry of metadata.labels" in bad(envelope("v1", "Namespace", lf(1, lf(11, sf(1, "a") + sf(3, "x")))))


@pytest.mark.parametrize("raw, words", [
    (b'{"kind": "Pod"}', "does not start with Kubernetes' protobuf prefix"),
    (protobuf.MAGIC + b"\x0a", "truncated varint"),
    (protobuf.MAGIC + b"\x12\x05ab", "claims 5 bytes, 2 remain"),
    (protobuf.MAGIC + b"\x12" + b"\xff" * 11, "varint longer than 10 bytes"),
    (envelope("v1", "ConfigMap", b"\x0b"), "unsupported wire type 3"),
    (envelope("v1", "ConfigMap", meta("c") + vf(2, 5)), "data (offset"),
    (envelope("apps/v1", "Deployment", lf(2, sf(1, "x"))), "spec.replicas (offset"),
    (envelope("v1", "ConfigMap", lf(1, lf(1, b"\xff\xfe"))), "metadata.name (offset"),
    (envelope("apps/v1", "Deployment", lf(2, vf(1, 1 << 40))), "does not fit in an int32"),
    (envelope("v1", "ReplicationController", b""), 'no kind "ReplicationController" of version "v1"'),
    (envelope("v1", "", b""), "names no kind"),
    (envelope("apps/v1", "Deployment", lf(2, lf(4, lf(2, lf(2, vf(1, 7)))))), "IntOrString type 7"),
    (envelope("v1", "Namespace", lf(1, lf(8, vf(1, 1 << 62)))), "not a time between the years 1 and 9999"),
    (envelope("v1", "Namespace", lf(1, lf(8, sf(1, "x")))), "a Time has seconds (1) and nanos (2)"),
])
def test_malformed_bodies_are_400_with_what_is_wrong(raw, words):
    msg = bad(raw)
    assert msg.startswith("the protobuf request body cannot be decoded: ")
    assert words in msg, msg


def test_non_utf8_string_names_the_problem():
    assert "is not valid UTF-8" in bad(envelope("v1", "ConfigMap", lf(1, lf(1, b"\xff\xfe"))))


def test_an_encoded_inner_object_is_415():
    with pytest.raises(errors.UnsupportedMediaType, match="gzip"):
        protobuf.decode(envelope("v1", "ConfigMap", b"", encoding="gzip"))
    with pytest.raises(errors.UnsupportedMediaType, match="application/json"):
        protobuf.decode(envelope("v1", "ConfigMap", b"{}", content_type="application/json"))


_CORPUS = [bytes.fromhex(h) for h in KUBECTL.values()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(_CORPUS) - 1), pos=st.integers(0, 400), byte=st.integers(0, 255),
       cut=st.booleans())
def test_corrupted_bodies_never_raise_anything_but_api_errors(which, pos, byte, cut):
    raw = bytearray(_CORPUS[which])
    pos %= len(raw)
    if cut:
        raw = raw[:pos]
    else:
        raw[pos] = byte
    try:
        out = protobuf.decode(bytes(raw))
    except (errors.BadRequest, errors.UnsupportedMediaType) as e:
        assert e.message
        return
    assert isinstance(out, dict) and out["kind"]


# --- negotiation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("accept, only", [
    (None, False), ("", False), ("*/*", False), ("application/json", False),
    ("application/vnd.kubernetes.protobuf,application/json", False),          # kubectl's typed client
    ("application/vnd.kubernetes.protobuf, */*", False),                      # kubectl top
    ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json", False),
    ("application/vnd.kubernetes.protobuf", True),
    ("application/vnd.kubernetes.protobuf;stream=watch", True),
    ("application/vnd.kubernetes.protobuf, application/vnd.kubernetes.protobuf;as=Table", True),
])
def test_accepts_only_protobuf(accept, only):
    assert protobuf.accepts_only_protobuf(accept) is only


def test_check_accept_raises_406():
    scope = {"headers": [(b"accept", b"application/vnd.kubernetes.protobuf")]}
    with pytest.raises(errors.ApiError) as e:
        protobuf.check_accept(scope)
    assert e.value.code == 406 and e.value.reason == "NotAcceptable"
    protobuf.check_accept({"headers": [(b"accept", b"application/json")]})
    protobuf.check_accept({"headers": []})


@pytest.mark.parametrize("ct, yes", [
    ("application/vnd.kubernetes.protobuf", True), ("application/vnd.kubernetes.protobuf; charset=x", True),
    ("Application/Vnd.Kubernetes.Protobuf", True), ("application/json", False), (None, False),
    ("application/vnd.kubernetes.protobuf;stream=watch", True),
])
def test_is_protobuf(ct, yes):
    assert protobuf.is_protobuf(ct) is yes


# --- the table ---------------------------------------------------------------------------------------

def test_every_type_in_the_table_is_decodable():
    scalars = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float"}
    specials = set(protobuf._SPECIALS)
    for msg, fields in MESSAGES.items():
        for num, (name, typ, flags) in fields.items():
            assert typ in scalars or typ in specials or typ in MESSAGES, f"{msg}.{name} ({num}): {typ}"
            assert set(flags) <= set("rmki"), f"{msg}.{name}: {flags}"
            assert bool(name) != ("i" in flags), f"{msg}.{name}: only inlined fields have no JSON name"
    for root in protobuf.ROOTS.values():
        assert root in MESSAGES


def test_the_table_matches_shoals_models_field_names():
    """Every JSON name the models accept is in the table under the same parent, so nothing
    shoal serves is undecodable from protobuf (a model field missing here would be a field
    typed kubectl commands could never set)."""
    from shoal.machinery.api.models import KINDS
    from shoal.machinery.api.models.codec import unwrap_type as _unwrap
    import typing
    from pydantic import BaseModel

    def json_names(message: str) -> dict[str, str]:
        names: dict[str, str] = {}
        for name, typ, flags in MESSAGES[message].values():
            if "i" in flags:
                names.update(json_names(typ))
            else:
                names[name] = typ
        return names

    def walk(model: type[BaseModel], message: str, path: str) -> None:
        names = json_names(message)
        for attr, f in model.model_fields.items():
            wire = f.alias or attr
            if wire in ("apiVersion", "kind") and not path:
                continue
            assert wire in names, f"{path}{wire}: not in Kubernetes' {message}"
            tp = _unwrap(f.annotation)
            while typing.get_origin(tp) in (list, dict):
                tp = _unwrap(typing.get_args(tp)[-1])
            if isinstance(tp, type) and issubclass(tp, BaseModel) and names[wire] in MESSAGES:
                walk(tp, names[wire], f"{path}{wire}.")

    for (api_version, kind), message in protobuf.ROOTS.items():
        if kind in KINDS and kind != "Binding":
            walk(KINDS[kind].model, message, "")

