"""Issue 17 end to end: a private registry (Debian's docker-registry with htpasswd basic
auth), a real agent, real runc.

- a pod without credentials fails to pull, and its status says unauthorized;
- a pod naming a `kubernetes.io/dockerconfigjson` imagePullSecret runs;
- `imagePullPolicy: Always` without the secret fails even with the image on the node
  (IfNotPresent would use it: Kubernetes' behaviour, docs/images.md);
- an agent started with `--registry-auth FILE` pulls without any pod secret.

One cluster (`agent_fixtures.E2ECluster`, with only the sleeper image in its own anonymous
registry) plus the private registry; everything is removed at the end.
"""
from __future__ import annotations

import base64
import json
import os

import pytest

from agent_fixtures import E2ECluster, container, cstatus, pod_manifest, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

USER, PASSWORD = "ci", "s3cret-pw"


class PrivateCluster(E2ECluster):
    """The fixture's cluster; its agent takes extra flags (`--registry-auth`) on a restart."""
    extra_agent_args: list[str] = []

    def agent_argv(self) -> list[str]:
        return super().agent_argv() + self.extra_agent_args


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    pytest.importorskip("bcrypt", reason="htpasswd for docker-registry needs bcrypt hashes")
    from shoal.testkit.images import cached_test_images, push_image, start_registry
    tmp = tmp_path_factory.mktemp("private-registry")
    images = cached_test_images()
    with start_registry(tmp / "private", htpasswd={USER: PASSWORD}) as reg, \
            PrivateCluster(tmp / "cluster", images={"sleeper:v1": images["sleeper:v1"]}) as c:
        push_image(images["sleeper:v1"].layout, reg.url, "team/sleeper:v1", auth=(USER, PASSWORD))
        yield c, reg


def auth_config(host: str) -> dict:
    return {"auths": {f"http://{host}/v2/": {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}


def waiting(pod: dict) -> dict:
    return ((cstatus(pod).get("state") or {}).get("waiting")) or {}


def failed_pull(pod: dict) -> bool:
    return waiting(pod).get("reason") in ("ErrImagePull", "ImagePullBackOff")


def running(pod: dict) -> bool:
    return bool((cstatus(pod).get("state") or {}).get("running"))


def test_private_images_need_credentials(env):
    c, reg = env
    image = reg.ref("team/sleeper:v1")

    c.create_pod(pod_manifest("anonymous", [container("main", image)]))
    pod = c.wait_pod("anonymous", failed_pull, timeout=60, what="ErrImagePull/ImagePullBackOff")
    assert "unauthorized" in waiting(pod)["message"] and reg.host in waiting(pod)["message"], waiting(pod)

    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred", "namespace": "default"},
              "type": "kubernetes.io/dockerconfigjson",
              "data": {".dockerconfigjson": base64.b64encode(json.dumps(auth_config(reg.host)).encode()).decode()}}
    c.client.create("secrets", secret, "default")
    c.create_pod(pod_manifest("with-secret", [container("main", image)], imagePullSecrets=[{"name": "regcred"}]))
    pod = c.wait_pod("with-secret", running, timeout=90, what="running with its imagePullSecret")
    assert cstatus(pod)["imageID"].startswith(f"{reg.host}/team/sleeper@sha256:")

    # the image is on the node now; Always still asks the registry, with this pod's (no) credentials
    c.create_pod(pod_manifest("always-anonymous", [container("main", image, imagePullPolicy="Always")]))
    pod = c.wait_pod("always-anonymous", failed_pull, timeout=60, what="Always without credentials fails")
    assert "unauthorized" in waiting(pod)["message"]
    for name in ("anonymous", "with-secret", "always-anonymous"):
        c.delete_pod_and_wait(name)


def test_an_agent_with_registry_auth_pulls_without_a_pod_secret(env):
    c, reg = env
    node_file = c.tmp / "registry-auth.json"
    node_file.write_text(json.dumps(auth_config(reg.host)))
    node_file.chmod(0o600)
    c.stop_agent()
    c.extra_agent_args = ["--registry-auth", str(node_file)]
    c.start_agent()
    wait_for(c._node_ready, timeout=60, what="the agent back with --registry-auth", detail=c.agent_tail)
    c.create_pod(pod_manifest("node-creds", [container("main", reg.ref("team/sleeper:v1"),
                                                       imagePullPolicy="Always")]))
    c.wait_pod("node-creds", running, timeout=90, what="running with the node's credentials")
    # events are posted asynchronously (the recorder's queue): wait for it, under load too
    wait_for(lambda: any(e["reason"] == "Pulled" and "Successfully pulled" in e["message"]
                         for e in c.events_for("node-creds")), timeout=30,
             what="a Pulled event: pulled from the registry, not taken from the node")
    assert PASSWORD not in c.agent_log.read_text(errors="replace")
    c.delete_pod_and_wait("node-creds")
