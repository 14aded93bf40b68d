"""`shoal up` as a new user runs it — no TLS flags — is an HTTPS cluster end to end (issue 16):
the kubeconfig it writes carries the cluster CA, the embedded agent joined by the pinned token
and trusts that CA (its saved credential says so), and the official Python client, loading
the kubeconfig as it is, runs a Deployment whose pod the real agent starts with runc and
whose log comes back through the API server.

One isolated cluster (`userpath_fixtures.start_up_cluster`: its own registry, bridge, CIDR
and ports); `stop_up_cluster` fails the test on anything left behind.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from shoal.testkit.apiserver import wait_for
from tests.e2e.userpath_fixtures import up_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture
def cluster():
    with up_cluster("shoal-tls-") as c:
        yield c


def test_shoal_up_is_https_and_the_python_client_runs_a_pod(cluster):
    ca_pem = (cluster.data_dir / "server" / "tls" / "ca.crt").read_bytes()
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    assert cfg["server"] == f"https://127.0.0.1:{cluster.api_port}"
    assert base64.b64decode(cfg["certificate-authority-data"]) == ca_pem

    # the embedded agent went through the join as a remote one does: pinned CA, then TLS
    creds = json.loads((cluster.data_dir / "agent" / "credentials.json").read_text())
    assert creds["server"] == f"https://127.0.0.1:{cluster.api_port}" and creds["ca"] == ca_pem.decode()

    from kubernetes import client as k8s, config as k8s_config
    with k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api_client:
        core, apps = k8s.CoreV1Api(api_client), k8s.AppsV1Api(api_client)
        # read raw: the typed V1NodeSystemInfo wants fields (kubeProxyVersion, systemUUID) the agent leaves out
        nodes = json.loads(core.list_node(_preload_content=False).data)["items"]
        assert len(nodes) == 1 and {"type": "Ready", "status": "True"}.items() <= next(
            c for c in nodes[0]["status"]["conditions"] if c["type"] == "Ready").items()
        apps.create_namespaced_deployment("default", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "tls-web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "tls-web"}},
                     "template": {"metadata": {"labels": {"app": "tls-web"}},
                                  "spec": {"terminationGracePeriodSeconds": 2,
                                           "containers": [{"name": "web", "image": cluster.images["sleeper:v1"],
                                                           "command": ["sh", "-c",
                                                                       "echo hello over tls; exec sleep 3600"]}]}}}})

        def running():
            pods = core.list_namespaced_pod("default", label_selector="app=tls-web").items
            return [p for p in pods if p.status.phase == "Running" and p.status.pod_ip]
        pod = wait_for(running, timeout=120, interval=0.5, what="the tls-web pod Running",
                       detail=cluster.log_tail)[0]
        # logs travel API server → agent's log endpoint → back over the client's TLS connection
        log = wait_for(lambda: core.read_namespaced_pod_log(pod.metadata.name, "default") or None, timeout=30,
                       what="the pod's log", tolerate=(k8s.ApiException,))
        assert log == "hello over tls\n", log
        apps.delete_namespaced_deployment("tls-web", "default")
