"""Node identity (issue 17): the join token admits a node name once, and a node's
credential cannot give its Node a pod CIDR (the server assigns it).

A real API server on a temp SQLite file; agents join with `agent.join` as `shoal agent`
does, each with its own data dir (its own node password)."""
from __future__ import annotations

import pytest

from shoal.agent.join import JoinError, NODE_PASSWORD_FILE, ensure_credentials
from shoal.agent.registration import HostInfo, NodeRegistration, host_capacity
from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client
from shoal.machinery.control.clock import FakeClock

pytestmark = pytest.mark.integration

TAKEN = (r"node node-a is already registered and the node password does not match; "
         r"delete the Node \(shoal delete node node-a\) to let a new machine take the name")


def _join(api, name: str, password: str | None = None) -> dict:
    body = {"nodeName": name, **({"nodePassword": password} if password is not None else {})}
    with Client(api.url, api.join_token) as c:
        return c.request("POST", "/shoal/v1/join", body=body)


def _node(name: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec}


def _joined(api, tmp_path, name="node-a", d="a"):
    creds = ensure_credentials(api.url, api.join_token, name, tmp_path / d)
    creds.client().create("nodes", _node(name))
    return creds


def test_a_second_join_without_the_node_password_is_refused_and_changes_nothing(api, tmp_path):
    a = _joined(api, tmp_path)
    for password in (None, "not-the-password-" * 3):
        with pytest.raises(errors.Forbidden, match=TAKEN):
            _join(api, "node-a", password)
    with pytest.raises(JoinError, match=TAKEN):        # another machine's agent (another data dir)
        ensure_credentials(api.url, api.join_token, "node-a", tmp_path / "intruder")
    assert a.client().get("nodes", "node-a")["metadata"]["name"] == "node-a"   # A's credential still answers
    with pytest.raises(errors.Invalid, match="nodePassword"):                 # a new name needs one too
        _join(api, "node-b")


def test_the_same_node_password_rejoins_and_gets_a_new_credential(api, tmp_path):
    a = _joined(api, tmp_path)
    password = (tmp_path / "a" / NODE_PASSWORD_FILE).read_text().strip()
    again = _join(api, "node-a", password)
    assert again["token"] != a.token
    with pytest.raises(errors.Unauthorized):                   # the old credential is revoked, as before
        a.client().get("nodes", "node-a")
    assert Client(api.url, again["token"]).get("nodes", "node-a")["metadata"]["name"] == "node-a"
    # the agent on its kept data dir sees 401 and rejoins with its saved password
    b = ensure_credentials(api.url, api.join_token, "node-a", tmp_path / "a")
    assert b.token not in (a.token, again["token"]) and b.client().get("nodes", "node-a")
    with pytest.raises(errors.Forbidden, match=TAKEN):
        _join(api, "node-a", "not-the-password-" * 3)


def test_deleting_the_node_frees_its_name(api, tmp_path):
    a = _joined(api, tmp_path)
    with pytest.raises(JoinError, match=TAKEN):
        ensure_credentials(api.url, api.join_token, "node-a", tmp_path / "new")
    api.client().delete("nodes", "node-a")
    new = ensure_credentials(api.url, api.join_token, "node-a", tmp_path / "new")
    new.client().create("nodes", _node("node-a"))
    with pytest.raises(errors.Unauthorized):
        a.client().get("nodes", "node-a")
    # now the name is the new machine's: the old one cannot take it back
    with pytest.raises(JoinError, match=TAKEN):
        ensure_credentials(api.url, api.join_token, "node-a", tmp_path / "a")


def test_a_node_cannot_set_its_pod_cidr_but_registers_and_posts_status(api, tmp_path):
    admin = api.client()
    node = ensure_credentials(api.url, api.join_token, "node-a", tmp_path / "a").client()
    admin.create("nodes", _node("node-b", podCIDR="10.244.2.0/24", podCIDRs=["10.244.2.0/24"]))
    with pytest.raises(errors.Forbidden, match=r"spec\.podCIDR"):     # another node's range, at create
        node.create("nodes", _node("node-a", podCIDR="10.244.2.0/24"))
    with pytest.raises(errors.Forbidden, match=r"spec\.podCIDRs"):
        node.create("nodes", _node("node-a", podCIDRs=["10.244.2.0/24"]))
    seen: list[dict] = []
    reg = NodeRegistration(node, node_name="node-a", address="127.0.0.1", clock=FakeClock(),
                           capacity=host_capacity(cpu="2", memory="1Gi"), labels={"tier": "test"},
                           version="0.1.0", runtime_version="fake", lease_duration_seconds=40,
                           vtep_mac=lambda: "aa:bb:cc:dd:ee:ff", kubelet_port=lambda: 10250,
                           on_node=seen.append, host=HostInfo())
    reg.register()                                  # create (no podCIDR), then status
    reg.renew_lease()
    admin.patch("nodes", "node-a", {"spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}})  # IPAM
    reg.register()                                  # exists: labels and annotations patched, then status
    reg.post_status()
    reg.renew_lease()
    assert seen[-1]["spec"]["podCIDR"] == "10.244.1.0/24"
    assert seen[-1]["metadata"]["labels"]["tier"] == "test"
    cur = node.get("nodes", "node-a")
    node.update("nodes", dict(cur, metadata={**cur["metadata"], "labels": {**cur["metadata"]["labels"], "x": "y"}}))
    refused = [
        lambda: node.patch("nodes", "node-a", {"spec": {"podCIDR": "10.244.2.0/24"}}),
        lambda: node.patch("nodes", "node-a", {"spec": {"podCIDRs": ["10.244.2.0/24"]}}, patch_type="strategic"),
        lambda: node.patch("nodes", "node-a", [{"op": "replace", "path": "/spec", "value": {}}], patch_type="json"),
        lambda: node.update("nodes", dict(node.get("nodes", "node-a"), spec={"podCIDR": "10.244.2.0/24"})),
    ]
    for attempt in refused:
        with pytest.raises(errors.Forbidden, match=r"spec\.podCIDR"):
            attempt()
    spec = admin.get("nodes", "node-a")["spec"]
    assert spec["podCIDR"] == "10.244.1.0/24" and spec["podCIDRs"] == ["10.244.1.0/24"]
