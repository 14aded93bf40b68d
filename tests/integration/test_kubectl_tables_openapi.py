"""Tables and OpenAPI against a real API server (TLS, so the real kubectl sends its token):
`kubectl get` prints the server's columns (wide ones with -o wide, rows as `get -w` watches),
`kubectl explain` reads the v3 documents, `kubectl apply` with default validation leaves
validation to the server (an unknown field is refused by name, nothing is stored); and the
same answers at the HTTP level (includeObject, 406, watch Tables, document hashes, ETag)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from shoal.apiserver import openapi
from shoal.testkit.apiserver import start_test_server, wait_for

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (the base image has it)")

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
"""


@pytest.fixture
def api(tmp_path):
    srv = start_test_server(tmp_path, tls=True)
    try:
        yield srv
    finally:
        srv.stop()


class Kubectl:
    """The real kubectl with the server's kubeconfig (CA data and token) and an empty cache."""

    def __init__(self, srv, tmp: Path):
        self.srv, self.tmp = srv, tmp
        self.cache = tmp / "kubectl-cache"

    def argv(self, *args: str) -> list[str]:
        return ["kubectl", "--kubeconfig", str(self.srv.kubeconfig), "--cache-dir", str(self.cache), *args]

    def __call__(self, *args: str, ok: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "KUBECONFIG": str(self.srv.kubeconfig)})
        if ok:
            assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r


@pytest.fixture
def kubectl(api, tmp_path):
    return Kubectl(api, tmp_path)


def http(api, method: str, path: str, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api.admin_token}", **kw.pop("headers", {})}
    return httpx.request(method, api.url + path, headers=headers, verify=ssl.create_default_context(cafile=api.tls_files["ca"]), timeout=30, **kw)


def lines(out: str) -> list[list[str]]:
    """kubectl's table as cells (columns are separated by 3+ spaces; cells hold single spaces)."""
    return [re.split(r"\s{3,}", line.strip()) for line in out.strip().splitlines()]


def make_pod(c, name: str, *, node: str | None = None, ip: str | None = None) -> dict:
    c.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "db"}},
                      "spec": {"containers": [{"name": "db", "image": "busybox"}]}}, namespace="default")
    if node:
        c.bind(name, "default", node)
    if ip:
        pod = c.get("pods", name, "default")
        pod["status"].update(podIP=ip, podIPs=[{"ip": ip}], phase="Running", containerStatuses=[
            {"name": "db", "ready": True, "restartCount": 0, "image": "busybox", "imageID": "",
             "state": {"running": {"startedAt": pod["metadata"]["creationTimestamp"]}}}])
        c.update_status("pods", pod)
    return c.get("pods", name, "default")


# --- kubectl -----------------------------------------------------------------------------------

def test_get_pods_wide_shows_the_wide_columns(api, kubectl):
    c = api.client()
    make_pod(c, "db-0", node="node-a", ip="10.244.1.7")
    make_pod(c, "db-1")
    plain = lines(kubectl("get", "pods").stdout)
    assert plain[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert plain[1][:4] == ["db-0", "1/1", "Running", "0"] and plain[2][:4] == ["db-1", "0/1", "Pending", "0"]
    wide = lines(kubectl("get", "pods", "-o", "wide").stdout)
    assert wide[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE",
                       "READINESS GATES"]
    assert wide[1][0] == "db-0" and wide[1][5:] == ["10.244.1.7", "node-a", "<none>", "<none>"]
    assert wide[2][0] == "db-1" and wide[2][5:] == ["<none>", "<none>", "<none>", "<none>"]
    # the row objects (PartialObjectMetadata) feed -A and --show-labels
    everywhere = lines(kubectl("get", "pods", "-A", "--show-labels").stdout)
    assert everywhere[0][0] == "NAMESPACE" and everywhere[0][-1] == "LABELS"
    assert everywhere[1][0] == "default" and everywhere[1][-1] == "app=db"
    # format "name": the kind prefix of get all
    assert "pod/db-0" in kubectl("get", "all").stdout


def test_get_deployments_shows_ready_and_up_to_date(api, kubectl, tmp_path):
    (tmp_path / "d.yaml").write_text(DEPLOYMENT)
    kubectl("apply", "-f", str(tmp_path / "d.yaml"))
    c = api.client()
    d = c.get("deployments", "web", "default")
    d["status"] = {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1,
                   "observedGeneration": d["metadata"]["generation"]}
    c.update_status("deployments", d)
    out = lines(kubectl("get", "deploy").stdout)
    assert out[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert out[1][:4] == ["web", "1/2", "2", "1"]
    wide = lines(kubectl("get", "deploy", "web", "-o", "wide").stdout)
    assert wide[0][5:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1][5:] == ["web", "nginx:1.27", "app=web"]
    assert lines(kubectl("get", "ns").stdout)[0] == ["NAME", "STATUS", "AGE"]


def test_explain_reads_the_v3_documents(kubectl):
    spec = kubectl("explain", "deployment.spec").stdout
    assert "KIND:       Deployment" in spec and "FIELD: spec <DeploymentSpec>" in spec
    assert "replicas\t<integer>" in spec and "template\t<PodTemplateSpec> -required-" in spec
    assert "Number of desired pods" in spec                   # Kubernetes' words
    ports = kubectl("explain", "pod.spec.containers.ports").stdout
    assert "FIELD: ports <[]ContainerPort>" in ports and "containerPort\t<integer> -required-" in ports
    recursive = kubectl("explain", "pod.spec.containers", "--recursive").stdout
    assert "livenessProbe\t<Probe>" in recursive and "lifecycle" not in recursive   # shoal has no lifecycle
    # the protobuf v2 form is not served: a clear refusal, not a parse error
    v2 = kubectl("explain", "deployment", "--output", "plaintext-openapiv2", ok=False)
    assert v2.returncode != 0 and "NotAcceptable" in v2.stderr


def test_apply_with_default_validation_leaves_it_to_the_server(api, kubectl, tmp_path):
    bad = DEPLOYMENT.replace("        image: nginx:1.27\n", "        image: nginx:1.27\n        imagePullSecretz: x\n")
    (tmp_path / "bad.yaml").write_text(bad)
    r = kubectl("apply", "-f", str(tmp_path / "bad.yaml"), ok=False)
    assert r.returncode == 1
    assert 'strict decoding error: unknown field "spec.template.spec.containers[0].imagePullSecretz"' in r.stderr
    assert api.client().list("deployments", "default")["items"] == []

    (tmp_path / "d.yaml").write_text(DEPLOYMENT)
    assert kubectl("apply", "-f", str(tmp_path / "d.yaml")).stdout.strip() == "deployment.apps/web created"
    assert kubectl("apply", "-f", str(tmp_path / "d.yaml")).stdout.strip() == "deployment.apps/web unchanged"
    (tmp_path / "d2.yaml").write_text(DEPLOYMENT.replace("nginx:1.27", "nginx:1.28"))
    r = kubectl("apply", "-f", str(tmp_path / "d2.yaml"), "-v=6")
    assert r.stdout.strip() == "deployment.apps/web configured"
    # the strategic merge patch was built from the v3 document: no v2 request
    assert "/openapi/v3/apis/apps/v1?hash=" in r.stderr and "/openapi/v2" not in r.stderr
    assert "fieldValidation=Strict" in r.stderr
    containers = api.client().get("deployments", "web", "default")["spec"]["template"]["spec"]["containers"]
    assert [(x["name"], x["image"]) for x in containers] == [("web", "nginx:1.28")]
    # an unknown field on the update path: the same refusal, and nothing changes
    rv = api.client().get("deployments", "web", "default")["metadata"]["resourceVersion"]
    (tmp_path / "bad2.yaml").write_text(DEPLOYMENT.replace("  replicas: 2\n", "  replicas: 2\n  paws: true\n"))
    r = kubectl("apply", "-f", str(tmp_path / "bad2.yaml"), ok=False)
    assert 'unknown field "spec.paws"' in r.stderr
    assert api.client().get("deployments", "web", "default")["metadata"]["resourceVersion"] == rv


def test_get_watch_prints_rows(api, kubectl):
    c = api.client()
    make_pod(c, "first")
    proc = subprocess.Popen(kubectl.argv("get", "pods", "-w"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(line.startswith("first") for line in out), what="the listed row", timeout=30)
        make_pod(c, "second", node="node-a", ip="10.244.2.3")
        wait_for(lambda: any(line.split()[:3] == ["second", "1/1", "Running"] for line in out),
                 what="the watched rows", detail=lambda: "".join(out), timeout=30)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    assert out[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert sum(1 for line in out if line.startswith("NAME")) == 1       # one header: later Tables have none
    assert [line.split()[0] for line in out[1:]][:2] == ["first", "second"]


# --- the same at the HTTP level -----------------------------------------------------------------

def test_tables_over_http(api):
    c = api.client()
    make_pod(c, "p1", node="node-a", ip="10.244.0.9")
    r = http(api, "GET", "/api/v1/namespaces/default/pods", headers={"Accept": TABLE})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json;as=Table;v=v1;g=meta.k8s.io"
    t = r.json()
    assert t["kind"] == "Table" and t["metadata"]["resourceVersion"]
    assert t["rows"][0]["cells"][:3] == ["p1", "1/1", "Running"]
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    one = http(api, "GET", "/api/v1/namespaces/default/pods/p1?includeObject=Object",
               headers={"Accept": TABLE}).json()
    assert one["rows"][0]["object"]["kind"] == "Pod" and one["rows"][0]["object"]["spec"]["nodeName"] == "node-a"
    assert one["metadata"]["resourceVersion"] == c.get("pods", "p1", "default")["metadata"]["resourceVersion"]
    status = http(api, "GET", "/api/v1/namespaces/default/pods/p1/status", headers={"Accept": TABLE}).json()
    assert status["kind"] == "Table"
    beta = http(api, "GET", "/api/v1/nodes", headers={"Accept": "application/json;as=Table;v=v1beta1;g=meta.k8s.io"})
    assert beta.json()["apiVersion"] == "meta.k8s.io/v1beta1" and beta.json()["rows"] == []
    bad = http(api, "GET", "/api/v1/namespaces/default/pods?includeObject=Everything", headers={"Accept": TABLE})
    assert bad.status_code == 400 and "includeObject" in bad.json()["message"]
    no = http(api, "GET", "/api/v1/namespaces/default/pods",
              headers={"Accept": "application/json;as=Table;v=v9;g=meta.k8s.io"})
    assert no.status_code == 406 and no.json()["reason"] == "NotAcceptable"
    plain = http(api, "GET", "/api/v1/namespaces/default/pods/p1",
                 headers={"Accept": "application/vnd.kubernetes.protobuf,application/json"})
    assert plain.json()["kind"] == "Pod"
    meta = http(api, "GET", "/api/v1/namespaces/default/pods",
                headers={"Accept": "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"}).json()
    assert meta["kind"] == "PartialObjectMetadataList" and meta["items"][0]["metadata"]["name"] == "p1"


def test_watch_tables_over_http(api):
    c = api.client()
    rv = c.list("pods", "default")["metadata"]["resourceVersion"]
    events: list[dict] = []

    def watch():
        with httpx.stream("GET", api.url + f"/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"
                          "&timeoutSeconds=5", headers={"Authorization": f"Bearer {api.admin_token}",
                                                        "Accept": TABLE},
                          verify=ssl.create_default_context(cafile=api.tls_files["ca"]), timeout=30) as r:
            for line in r.iter_lines():
                if line:
                    events.append(json.loads(line))
                if len(events) == 2:
                    return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    time.sleep(0.5)
    make_pod(c, "w1")
    make_pod(c, "w2")
    t.join(timeout=20)
    assert [e["type"] for e in events] == ["ADDED", "ADDED"]
    assert [e["object"]["rows"][0]["cells"][0] for e in events] == ["w1", "w2"]
    assert events[0]["object"]["columnDefinitions"] and events[1]["object"]["columnDefinitions"] is None


def test_openapi_documents_over_http(api):
    index = http(api, "GET", "/openapi/v3")
    assert index.status_code == 200
    paths = index.json()["paths"]
    assert set(paths) == {"api/v1", "apis/apps/v1", "apis/coordination.k8s.io/v1", "apis/discovery.k8s.io/v1"}
    url = paths["apis/apps/v1"]["serverRelativeURL"]
    doc = http(api, "GET", url)
    assert doc.status_code == 200 and doc.headers["cache-control"] == "public, immutable"
    assert doc.content == openapi.documents(api.app.state.settings.version).v3_bytes["apis/apps/v1"]
    etag = doc.headers["etag"]
    assert http(api, "GET", "/openapi/v3/apis/apps/v1", headers={"If-None-Match": etag}).status_code == 304
    moved = http(api, "GET", "/openapi/v3/apis/apps/v1?hash=0", follow_redirects=False)
    assert moved.status_code == 301 and moved.headers["location"] == url
    assert http(api, "GET", "/openapi/v3/apis/batch/v1").status_code == 404
    v2 = http(api, "GET", "/openapi/v2", headers={"Accept": "application/json"})
    assert v2.status_code == 200 and v2.json()["swagger"] == "2.0"
    proto = http(api, "GET", "/openapi/v2",
                 headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
    assert proto.status_code == 406 and proto.json()["reason"] == "NotAcceptable"
