"""Issue 17: a node reads the Secrets its pods reference, and nothing else (Kubernetes' Node
authorizer graph), and its agent pulls with them.

A real API server on a temp SQLite file; nodes join with `agent.join` as `shoal agent` does.
The agent tests run hollow agents (agent.fakes: a `private*` repository needs a docker-config
imagePullSecret)."""
from __future__ import annotations

import base64
import json
import time

import pytest

from shoal.agent.fakes import FakeImageStore
from shoal.agent.join import ensure_credentials
from shoal.machinery.api import errors

from agent_harness import AgentHarness, wait

pytestmark = pytest.mark.integration

NO_RELATIONSHIP = "no relationship found between node 'node-a' and this object"
ONLY_GET = "can only get individual resources of this type"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def docker_secret(name: str, ns: str = "default", user: str = "ci", password: str = "pw") -> dict:
    cfg = {"auths": {"reg.example.com": {"auth": b64(f"{user}:{password}")}}}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
            "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64(json.dumps(cfg))}}


def pod(name: str, ns: str = "default", node: str | None = "node-a", secrets: tuple[str, ...] = ()) -> dict:
    spec: dict = {"containers": [{"name": "web", "image": "reg.example.com/private-web:v1"}]}
    if node:
        spec["nodeName"] = node
    if secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in secrets]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def joined(api, tmp_path, name: str):
    creds = ensure_credentials(api.url, api.join_token, name, tmp_path / name)
    c = creds.client()
    c.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    return c


def forbidden(fn, reason: str) -> str:
    with pytest.raises(errors.Forbidden) as err:
        fn()
    assert err.value.message.endswith(": " + reason), err.value.message
    return err.value.message


@pytest.fixture
def cluster(api, tmp_path):
    admin = api.client()
    admin.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    for ns, name in (("default", "regcred"), ("default", "other"), ("team", "regcred"), ("team", "teamcred")):
        admin.create("secrets", docker_secret(name, ns))
    return admin, joined(api, tmp_path, "node-a"), joined(api, tmp_path, "node-b")


def test_a_node_gets_exactly_the_secrets_its_pods_reference(cluster):
    admin, a, b = cluster
    admin.create("pods", pod("web", secrets=("regcred",)))
    admin.create("pods", pod("elsewhere", node="node-b", secrets=("other",)))
    admin.create("pods", pod("pending", node=None, secrets=("other",)))
    assert a.get("secrets", "regcred", "default")["data"][".dockerconfigjson"]
    msg = forbidden(lambda: a.get("secrets", "other", "default"), NO_RELATIONSHIP)
    assert msg.startswith('secrets "other" is forbidden: User "system:node:node-a" cannot get resource "secrets" '
                          'in API group "" in the namespace "default"')
    assert b.get("secrets", "other", "default")                        # node-b's pod references it
    forbidden(lambda: b.get("secrets", "regcred", "default"), "no relationship found between node 'node-b' "
                                                               "and this object")
    # a secret that does not exist: refused the same way unless referenced (then: not found)
    forbidden(lambda: a.get("secrets", "no-such", "default"), NO_RELATIONSHIP)
    admin.create("pods", pod("dangling", secrets=("no-such",)))
    with pytest.raises(errors.NotFound):
        a.get("secrets", "no-such", "default")
    forbidden(lambda: a.get("configmaps", "regcred", "default"), NO_RELATIONSHIP)


def test_a_pod_in_another_namespace_naming_the_same_secret_grants_only_its_own(cluster):
    admin, a, _ = cluster
    admin.create("pods", pod("team-web", ns="team", secrets=("regcred",)))
    assert a.get("secrets", "regcred", "team")["metadata"]["namespace"] == "team"
    forbidden(lambda: a.get("secrets", "regcred", "default"), NO_RELATIONSHIP)
    forbidden(lambda: a.get("secrets", "teamcred", "team"), NO_RELATIONSHIP)


def test_a_node_never_lists_watches_or_writes_secrets(cluster):
    admin, a, _ = cluster
    admin.create("pods", pod("web", secrets=("regcred",)))
    forbidden(lambda: a.list("secrets", "default"), ONLY_GET)
    forbidden(lambda: a.list("secrets", all_namespaces=True), ONLY_GET)
    forbidden(lambda: a.list("secrets", "default", field_selector="metadata.name=regcred"), ONLY_GET)
    forbidden(lambda: a.request("GET", "/api/v1/namespaces/default/secrets", params={"watch": "true"}), ONLY_GET)
    before = admin.get("secrets", "regcred", "default")
    for name in ("regcred", "no-such"):       # the same answer whether the secret exists or not
        forbidden(lambda: a.patch("secrets", name, {"metadata": {"labels": {"x": "y"}}}, "default"), ONLY_GET)
        forbidden(lambda: a.update("secrets", dict(before, metadata=dict(before["metadata"], name=name))), ONLY_GET)
        forbidden(lambda: a.delete("secrets", name, "default"), ONLY_GET)
    forbidden(lambda: a.create("secrets", docker_secret("new")), ONLY_GET)
    assert admin.get("secrets", "regcred", "default") == before


def test_binding_grants_and_deletion_revokes(cluster):
    admin, a, _ = cluster
    admin.create("pods", pod("web", node=None, secrets=("regcred",)))
    forbidden(lambda: a.get("secrets", "regcred", "default"), NO_RELATIONSHIP)
    admin.request("POST", "/api/v1/namespaces/default/pods/web/binding",
                  body={"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-a"}})
    assert a.get("secrets", "regcred", "default")
    admin.delete("pods", "web", "default", grace_period_seconds=0)
    wait("pod web gone", lambda: not admin.list("pods", "default")["items"])
    forbidden(lambda: a.get("secrets", "regcred", "default"), NO_RELATIONSHIP)


def test_the_graph_reads_one_namespace_and_stays_cheap(cluster, api):
    """Rough cost: the decision reads the pods of the secret's namespace (an indexed range),
    so pods in other namespaces cost nothing; 300 pods in the same one stay well under
    the request budget."""
    admin, a, _ = cluster
    admin.create("pods", pod("web", ns="team", secrets=("regcred",)))
    for i in range(300):
        admin.create("pods", pod(f"filler-{i}", node="node-b", secrets=("teamcred",)))
    t0 = time.perf_counter()
    for _ in range(20):
        a.get("secrets", "regcred", "team")
    per_get_team = (time.perf_counter() - t0) / 20
    t0 = time.perf_counter()
    for _ in range(20):
        forbidden(lambda: a.get("secrets", "regcred", "default"), NO_RELATIONSHIP)
    per_get_default = (time.perf_counter() - t0) / 20
    print(f"node get secret: {per_get_team * 1000:.1f} ms (1 pod in its namespace), "
          f"{per_get_default * 1000:.1f} ms (301 pods in its namespace)")
    assert per_get_default < 0.5, "a node's secret get must not scan like a cluster-wide list"


# ------------------------------------------------------------------ the agent pulls with them
def test_the_agent_pulls_with_the_pods_secret_and_names_a_missing_one(tmp_path):
    with AgentHarness(tmp_path) as h:
        images = FakeImageStore()
        h.admin.create("secrets", docker_secret("regcred"))
        h.start_agent("node-1", images=images)
        h.assign_cidr("node-1")
        private = [{"name": "web", "image": "reg.example.com/private-web:v1"}]
        h.create_pod("with-secret", "node-1", containers=private, imagePullSecrets=[{"name": "regcred"}])
        wait("with-secret running", lambda: (h.cstatus("with-secret").get("state") or {}).get("running"))
        (ref, secrets), = [(r, s) for r, s in images.pull_secrets if s]
        assert ref == "reg.example.com/private-web:v1"
        assert [(s.label, s.type) for s in secrets] == [("default/regcred", "kubernetes.io/dockerconfigjson")]
        assert json.loads(secrets[0].data[".dockerconfigjson"])["auths"]["reg.example.com"]["auth"] == b64("ci:pw")

        h.create_pod("missing-secret", "node-1", containers=[{"name": "web", "image": "reg.example.com/private-x:v1"}],
                     imagePullSecrets=[{"name": "nope"}])

        def waiting():
            w = (h.cstatus("missing-secret").get("state") or {}).get("waiting") or {}
            return w if w.get("reason") in ("ErrImagePull", "ImagePullBackOff") else None
        w = wait("missing-secret waiting on its pull", waiting)
        assert "unauthorized" in w["message"]
        assert "imagePullSecrets not read: default/nope: not found" in w["message"]
        wait("the FailedToRetrieveImagePullSecret warning", lambda: any(
            r == "FailedToRetrieveImagePullSecret" and "default/nope: not found" in m
            for _, r, m in h.events("missing-secret")))
        # the secret appears: the next pull (after the back-off) uses it and the pod runs
        h.admin.create("secrets", docker_secret("nope"))
        wait("missing-secret running once its secret exists",
             lambda: (h.cstatus("missing-secret").get("state") or {}).get("running"), timeout=30)
