"""ConfigMap and Secret: decoding, defaults, Kubernetes' validation and update rules."""
from __future__ import annotations

import base64
import json

import pytest

from shoal.machinery.api import errors
from shoal.machinery.api.models import validate

pytestmark = pytest.mark.unit


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def cm(**kw) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}, **kw}


def secret(**kw) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "d"}, **kw}


def invalid(kind: str, obj: dict, old: dict | None = None) -> list[tuple[str, str]]:
    with pytest.raises(errors.Invalid) as e:
        validate(kind, obj, old=old)
    return [(c.field, c.message) for c in e.value.causes]


# --- ConfigMap ----------------------------------------------------------------------------------

def test_configmap_round_trips():
    obj = cm(data={"app.properties": "a=b\n", "K_1": ""}, binaryData={"logo.png": b64(b"\x89PNG")}, immutable=False)
    out = validate("ConfigMap", obj)
    assert out == obj
    assert validate("ConfigMap", out) == out


@pytest.mark.parametrize("key, problem", [
    ("a b", "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"),
    ("a/b", "regex used for validation is '[-._a-zA-Z0-9]+'"),
    (".", "must not be '.'"),
    ("..", "must not be '..'"),
    ("..data", "must not start with '..'"),
    ("k" * 254, "must be no more than 253 characters"),
    ("", "a valid config key"),
    ("a\n", "a valid config key"),
])
def test_config_keys(key, problem):
    causes = invalid("ConfigMap", cm(data={key: "v"}))
    assert any(f == f"data[{key}]" and problem in m for f, m in causes), causes
    causes = invalid("Secret", secret(data={key: b64("v")}))
    assert any(f == f"data[{key}]" and problem in m for f, m in causes), causes


def test_valid_config_keys():
    validate("ConfigMap", cm(data={"k" * 253: "", ".hidden": "", "a..b": "", "-_.x": ""}))


def test_a_key_in_data_and_binary_data():
    assert invalid("ConfigMap", cm(data={"k": "v"}, binaryData={"k": b64("v")})) == [
        ("data[k]", 'Invalid value: "k": duplicate of key present in binaryData')]


def test_configmap_size_counts_data_and_binary_bytes():
    half = 512 * 1024
    validate("ConfigMap", cm(data={"a": "x" * half}, binaryData={"b": b64(b"\0" * half)}))   # exactly 1 MiB
    causes = invalid("ConfigMap", cm(data={"a": "x" * half}, binaryData={"b": b64(b"\0" * (half + 1))}))
    assert causes == [("", "Too long: may not be more than 1048576 bytes (data and binaryData hold 1048577)")]
    # data counts UTF-8 bytes, as Go's len(string) does
    assert invalid("ConfigMap", cm(data={"a": "é" * (half + 1)}))[0][0] == ""


def test_binary_data_must_be_base64():
    with pytest.raises(errors.BadRequest, match=r"binaryData\[b\]: illegal base64 data at input byte 3"):
        validate("ConfigMap", cm(binaryData={"b": "abc!"}))
    with pytest.raises(errors.BadRequest, match="expected a string"):
        validate("ConfigMap", cm(data={"a": 1}))


def test_configmap_immutable():
    old = validate("ConfigMap", cm(data={"a": "1"}, immutable=True))
    # unchanged data with the flag kept: fine (labels may change)
    validate("ConfigMap", dict(old, metadata={**old["metadata"], "labels": {"x": "y"}}), old=old)
    assert invalid("ConfigMap", dict(old, data={"a": "2"}), old=old) == [
        ("data", "Forbidden: field is immutable when `immutable` is set")]
    assert invalid("ConfigMap", dict(old, binaryData={"b": b64("x")}), old=old) == [
        ("binaryData", "Forbidden: field is immutable when `immutable` is set")]
    for unset in ({k: v for k, v in old.items() if k != "immutable"}, dict(old, immutable=False)):
        assert invalid("ConfigMap", unset, old=old) == [
            ("immutable", "Forbidden: field is immutable when `immutable` is set")]
    # a mutable one may become immutable, and change its data at the same time
    mutable = validate("ConfigMap", cm(data={"a": "1"}))
    assert validate("ConfigMap", dict(mutable, data={"a": "2"}, immutable=True), old=mutable)["immutable"] is True


# --- Secret ---------------------------------------------------------------------------------------

def test_secret_defaults_to_opaque_and_keeps_canonical_base64():
    out = validate("Secret", secret(data={"a": b64("b"), "nl": "Yg\n=="}))
    assert out["type"] == "Opaque"
    assert out["data"] == {"a": "Yg==", "nl": "Yg=="}          # Go ignores CR/LF in base64; the bytes are kept


def test_string_data_is_merged_into_data_and_never_stored():
    out = validate("Secret", secret(data={"a": b64("old"), "b": b64("kept")}, stringData={"a": "new", "c": "ç"}))
    assert "stringData" not in out
    assert out["data"] == {"a": b64("new"), "b": b64("kept"), "c": b64("ç")}
    # its keys are checked as data's keys
    assert invalid("Secret", secret(stringData={"bad key": "x"}))[0][0] == "data[bad key]"


def test_secret_data_must_be_base64():
    with pytest.raises(errors.BadRequest) as e:
        validate("Secret", secret(data={"a": "not base64!"}))
    assert e.value.message == ('Secret in version "v1" cannot be handled as a Secret: data[a]: illegal base64 data '
                               'at input byte 3')
    with pytest.raises(errors.BadRequest, match="missing '=' padding"):
        validate("Secret", secret(data={"a": "Yg"}))
    with pytest.raises(errors.BadRequest, match="'=' may only end the data"):
        validate("Secret", secret(data={"a": "Y=g="}))


def test_secret_size():
    validate("Secret", secret(data={"a": b64(b"\0" * (1 << 20))}))
    assert invalid("Secret", secret(data={"a": b64(b"\0" * (1 << 20)), "b": b64("x")})) == [
        ("data", "Too long: may not be more than 1048576 bytes (the data holds 1048577)")]


DOCKER_JSON = json.dumps({"auths": {"r.example": {"auth": b64("u:p")}}})


@pytest.mark.parametrize("type_, data, annotations, expected", [
    ("Opaque", {}, {}, []),
    ("example.com/custom", {}, {}, []),
    ("kubernetes.io/dockerconfigjson", {".dockerconfigjson": DOCKER_JSON}, {}, []),
    ("kubernetes.io/dockerconfigjson", {}, {},
     [("data[.dockerconfigjson]",
       "Required value: a kubernetes.io/dockerconfigjson secret holds its config under .dockerconfigjson")]),
    ("kubernetes.io/dockerconfigjson", {".dockerconfigjson": "{"}, {},
     [("data[.dockerconfigjson]", 'Invalid value: "<secret contents redacted>": not valid JSON: Expecting property '
                                  'name enclosed in double quotes: line 1 column 2 (char 1)')]),
    ("kubernetes.io/dockerconfigjson", {".dockerconfigjson": "[]"}, {},
     [("data[.dockerconfigjson]", 'Invalid value: "<secret contents redacted>": must be a JSON object, not list')]),
    ("kubernetes.io/dockercfg", {".dockercfg": "{}"}, {}, []),
    ("kubernetes.io/dockercfg", {".dockerconfigjson": "{}"}, {},
     [("data[.dockercfg]", "Required value: a kubernetes.io/dockercfg secret holds its config under .dockercfg")]),
    ("kubernetes.io/tls", {"tls.crt": "", "tls.key": ""}, {}, []),          # present, even empty, is enough
    ("kubernetes.io/tls", {"tls.crt": "x"}, {}, [("data[tls.key]", "Required value")]),
    ("kubernetes.io/basic-auth", {"username": ""}, {}, []),
    ("kubernetes.io/basic-auth", {"password": "p"}, {}, []),
    ("kubernetes.io/basic-auth", {}, {}, [("data[username]", "Required value"), ("data[password]", "Required value")]),
    ("kubernetes.io/ssh-auth", {"ssh-privatekey": "k"}, {}, []),
    ("kubernetes.io/ssh-auth", {"ssh-privatekey": ""}, {}, [("data[ssh-privatekey]", "Required value")]),
    ("kubernetes.io/service-account-token", {}, {"kubernetes.io/service-account.name": "default"}, []),
    ("kubernetes.io/service-account-token", {}, {},
     [("metadata.annotations[kubernetes.io/service-account.name]", "Required value")]),
])
def test_well_known_secret_types(type_, data, annotations, expected):
    obj = secret(type=type_, data={k: b64(v) for k, v in data.items()})
    if annotations:
        obj["metadata"]["annotations"] = annotations
    if expected:
        assert invalid("Secret", obj) == expected
    else:
        assert validate("Secret", obj)["type"] == type_


def test_secret_type_is_immutable():
    old = validate("Secret", secret(data={"a": b64("1")}))
    assert invalid("Secret", dict(old, type="example.com/other"), old=old) == [
        ("type", 'Invalid value: "example.com/other": field is immutable')]
    # an absent type is the default, Opaque: no change
    validate("Secret", {k: v for k, v in old.items() if k != "type"}, old=old)


def test_secret_immutable():
    old = validate("Secret", secret(data={"a": b64("1")}, immutable=True))
    validate("Secret", dict(old), old=old)
    assert invalid("Secret", dict(old, stringData={"a": "2"}), old=old) == [
        ("data", "Forbidden: field is immutable when `immutable` is set")]
    assert invalid("Secret", dict(old, immutable=False), old=old) == [
        ("immutable", "Forbidden: field is immutable when `immutable` is set")]
    # stringData equal to the stored bytes changes nothing
    validate("Secret", dict(old, stringData={"a": "1"}), old=old)


def test_names_and_namespaces_as_for_every_object():
    causes = invalid("ConfigMap", cm(metadata={"name": "Bad_Name", "namespace": "d"}))
    assert causes[0][0] == "metadata.name"
    with pytest.raises(errors.BadRequest, match='unknown field "spec"'):
        validate("Secret", secret(spec={}))
