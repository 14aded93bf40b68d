"""ConfigMaps and Secrets on a real API server: CRUD, stringData, immutability, namespace
deletion, and who may touch them (admins; never a node credential, for now)."""
from __future__ import annotations

import base64

import pytest

from shoal.agent.join import ensure_credentials
from shoal.machinery.api import errors
from shoal.testkit.apiserver import wait_for

pytestmark = pytest.mark.integration


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def cm(name: str, ns: str = "default", **kw) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, **kw}


def secret(name: str, ns: str = "default", **kw) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, **kw}


def test_configmap_crud(api):
    c = api.client()
    made = c.create("configmaps", cm("app", data={"app.conf": "port=80\n"}, binaryData={"b": b64("\0\1")}))
    assert made["data"] == {"app.conf": "port=80\n"} and made["binaryData"] == {"b": "AAE="}
    assert made["metadata"]["uid"] and made["metadata"]["resourceVersion"]
    got = c.get("configmaps", "app", "default")
    assert got == made
    got["data"]["more"] = "x"
    updated = c.update("configmaps", got)
    assert updated["data"]["more"] == "x"
    patched = c.patch("configmaps", "app", {"data": {"app.conf": None}}, "default")
    assert patched["data"] == {"more": "x"}
    assert [o["metadata"]["name"] for o in c.list("cm", "default")["items"]] == ["app"]
    c.delete("configmaps", "app", "default")
    with pytest.raises(errors.NotFound, match='configmaps "app" not found'):
        c.get("configmaps", "app", "default")


def test_invalid_configmaps_change_nothing(api):
    c = api.client()
    with pytest.raises(errors.Invalid) as e:
        c.create("configmaps", cm("bad", data={"a b": "x"}, binaryData={"a b": "eA=="}))
    assert {x.field for x in e.value.causes} == {"data[a b]", "binaryData[a b]"}
    with pytest.raises(errors.BadRequest, match=r"binaryData\[k\]: illegal base64"):
        c.create("configmaps", cm("bad", binaryData={"k": "%%%"}))
    with pytest.raises(errors.NotFound):
        c.get("configmaps", "bad", "default")


def test_secret_string_data_is_write_only(api):
    c = api.client()
    made = c.create("secrets", secret("db", stringData={"password": "hunter2"}, data={"user": b64("app")}))
    assert made["data"] == {"user": b64("app"), "password": b64("hunter2")}
    assert made["type"] == "Opaque" and "stringData" not in made
    assert "stringData" not in c.get("secrets", "db", "default")
    # on update and patch too: it replaces the key in data
    got = c.get("secrets", "db", "default")
    got["stringData"] = {"password": "s3cret"}
    assert c.update("secrets", got)["data"]["password"] == b64("s3cret")
    patched = c.patch("secrets", "db", {"stringData": {"token": "t"}}, "default")
    assert patched["data"] == {"user": b64("app"), "password": b64("s3cret"), "token": b64("t")}
    assert "stringData" not in patched


def test_secret_type_is_checked_and_immutable(api):
    c = api.client()
    with pytest.raises(errors.Invalid, match=r"data\[tls.key\]: Required value"):
        c.create("secrets", secret("tls", type="kubernetes.io/tls", data={"tls.crt": b64("c")}))
    made = c.create("secrets", secret("tls", type="kubernetes.io/tls", data={"tls.crt": b64("c"), "tls.key": ""}))
    made["type"] = "Opaque"
    with pytest.raises(errors.Invalid, match='type: Invalid value: "Opaque": field is immutable'):
        c.update("secrets", made)
    assert c.get("secrets", "tls", "default")["type"] == "kubernetes.io/tls"


@pytest.mark.parametrize("kind, make", [("configmaps", lambda: cm("frozen", data={"a": "1"}, immutable=True)),
                                        ("secrets", lambda: secret("frozen", data={"a": b64("1")}, immutable=True))])
def test_immutable_objects_keep_their_data(api, kind, make):
    c = api.client()
    made = c.create(kind, make())
    changed = dict(made, data={"a": "2" if kind == "configmaps" else b64("2")})
    with pytest.raises(errors.Invalid, match="data: Forbidden: field is immutable when `immutable` is set") as e:
        c.update(kind, changed)
    assert e.value.code == 422
    with pytest.raises(errors.Invalid, match="immutable: Forbidden"):
        c.patch(kind, "frozen", {"immutable": False}, "default")
    # metadata still changes; the object can be deleted (and made again with new data)
    labelled = c.patch(kind, "frozen", {"metadata": {"labels": {"v": "1"}}}, "default")
    assert labelled["metadata"]["labels"] == {"v": "1"} and labelled["data"] == made["data"]
    c.delete(kind, "frozen", "default")


def test_namespace_deletion_removes_its_configmaps_and_secrets(api):
    c = api.client()
    c.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    c.create("configmaps", cm("c", "team", data={"a": "b"}))
    c.create("secrets", secret("s", "team", stringData={"a": "b"}))
    c.delete("namespaces", "team")

    def gone():
        try:
            c.get("namespaces", "team")
        except errors.NotFound:
            return True
        return False
    wait_for(gone, timeout=20, what="namespace team deleted")
    assert c.list("configmaps", all_namespaces=True)["items"] == []
    assert c.list("secrets", all_namespaces=True)["items"] == []


def test_a_node_credential_may_not_touch_configmaps_or_secrets(api, tmp_path):
    admin = api.client()
    admin.create("configmaps", cm("c", data={"a": "b"}))
    admin.create("secrets", secret("s", stringData={"password": "p"}))
    creds = ensure_credentials(api.url, api.join_token, "node-a", tmp_path / "agent")
    node = creds.client()
    node.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}})
    for kind, name in (("configmaps", "c"), ("secrets", "s")):
        with pytest.raises(errors.Forbidden, match=f'User "system:node:node-a" cannot get resource "{kind}"'):
            node.get(kind, name, "default")
        with pytest.raises(errors.Forbidden):
            node.list(kind, "default")
        with pytest.raises(errors.Forbidden):
            node.list(kind, all_namespaces=True)
        with pytest.raises(errors.Forbidden):
            node.request("GET", f"/api/v1/namespaces/default/{kind}", params={"watch": "true"})
        with pytest.raises(errors.Forbidden):
            node.create(kind, cm("n") if kind == "configmaps" else secret("n"))
        with pytest.raises(errors.Forbidden):
            node.patch(kind, name, {"metadata": {"labels": {"x": "y"}}}, "default")
        with pytest.raises(errors.Forbidden):
            node.delete(kind, name, "default")
    assert admin.get("secrets", "s", "default")["data"] == {"password": b64("p")}
