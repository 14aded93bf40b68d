"""A real TLS API server on loopback: the pinned join, node identity, refusals."""
from __future__ import annotations

import base64
import ssl

import httpx
import pytest

from shoal.agent.join import JoinError, ensure_credentials, join_cluster
from shoal.machinery.api import errors
from shoal.apiserver import tls
from shoal.machinery.client.rest import Client
from shoal.testkit.apiserver import start_test_server

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_api(tmp_path):
    srv = start_test_server(tmp_path, tls=True, tls_sans=["shoal.test"])
    try:
        yield srv
    finally:
        srv.stop()


def test_join_token_pins_the_served_ca(tls_api, tmp_path):
    assert tls_api.url.startswith("https://")
    pem = httpx.get(tls_api.url + "/cacerts", verify=ssl.create_default_context(cafile=tls_api.tls_files["ca"])).content
    assert pem == open(tls_api.tls_files["ca"], "rb").read()
    assert tls_api.join_token.startswith(f"K10{tls.ca_hash(pem)}::server:")
    assert (tmp_path / "server" / "join-token").read_text().strip() == tls_api.join_token


def test_agent_joins_reuses_and_rejoins_after_rotation(tls_api, tmp_path):
    d = tmp_path / "agent"
    c = join_cluster(tls_api.url, tls_api.join_token, "h1", d)
    c.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "h1"}})
    first = ensure_credentials(tls_api.url, tls_api.join_token, "h1", d)
    assert ensure_credentials(tls_api.url, tls_api.join_token, "h1", d) == first   # reused, not reissued
    # an admin issues h1 a new credential (revoking it): the saved one is now 401, the agent rejoins
    tls_api.client().request("POST", "/shoal/v1/join", body={"nodeName": "h1"})
    with pytest.raises(errors.Unauthorized):
        first.client().get("nodes", "h1")
    again = ensure_credentials(tls_api.url, tls_api.join_token, "h1", d)
    assert again.token != first.token and again.client().get("nodes", "h1")["metadata"]["name"] == "h1"
    # no shared log-endpoint token any more (agents are reached over mutual TLS): none handed out
    assert "apiserverToken" not in (d / "credentials.json").read_text() and "apiserver" not in tls_api.registry.tokens


def test_node_credential_is_scoped(tls_api, tmp_path):
    node = join_cluster(tls_api.url, tls_api.join_token, "h1", tmp_path / "a")
    with pytest.raises(errors.Forbidden):
        node.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "h2"}})
    with pytest.raises(errors.Forbidden):
        node.create("deployments", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                                    "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                                        "metadata": {"labels": {"a": "b"}},
                                        "spec": {"containers": [{"name": "c", "image": "x"}]}}}})


def test_rotated_join_token_keeps_the_pin_and_the_old_one_stops_working(tls_api, tmp_path):
    old = tls_api.join_token
    new = tls_api.client().request("POST", "/shoal/v1/tokens/rotate", body={"role": "join"})["token"]
    assert new.split("::")[0] == old.split("::")[0] and new != old
    with pytest.raises(JoinError, match="rejected the join token"):
        ensure_credentials(tls_api.url, old, "h1", tmp_path / "a")
    assert ensure_credentials(tls_api.url, new, "h1", tmp_path / "b").nodeName == "h1"


def test_wrong_ca_and_plain_http_are_refused(tls_api, tmp_path):
    other = tls.ensure_server_certs(tmp_path / "other", "127.0.0.1", [])
    pin = tls.ca_hash(open(other["ca"], "rb").read())
    secret = tls_api.join_token.split(":")[-1]
    with pytest.raises(JoinError, match="refusing to join"):
        ensure_credentials(tls_api.url, f"K10{pin}::server:{secret}", "h1", tmp_path / "a")
    # a client trusting another CA cannot talk to the server at all
    ca_b64 = base64.b64encode(open(other["ca"], "rb").read()).decode()
    with pytest.raises(Exception) as ei:
        Client(tls_api.url, tls_api.admin_token, ca_data=ca_b64).list("pods")
    assert "CERTIFICATE_VERIFY_FAILED" in str(ei.value) or isinstance(ei.value.__cause__, ssl.SSLError)
    # plain HTTP to the TLS port gets no API answer (the TLS handshake fails; at most a 400)
    try:
        r = httpx.get(tls_api.url.replace("https://", "http://") + "/api/v1/pods",
                      headers={"Authorization": f"Bearer {tls_api.admin_token}"}, timeout=5)
    except httpx.HTTPError:
        pass
    else:
        assert r.status_code == 400 and "items" not in r.text


def test_cacerts_is_404_without_tls(tmp_path):
    srv = start_test_server(tmp_path)
    try:
        assert httpx.get(srv.url + "/cacerts").status_code == 404
        assert srv.join_token.startswith("K10") and "::" not in srv.join_token
    finally:
        srv.stop()
