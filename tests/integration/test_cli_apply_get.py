"""The CLI against a real API server (temp SQLite): apply, get, describe, delete, errors."""
from __future__ import annotations

import json
import socket

import pytest
import yaml

from shoal.machinery.api import errors
from shoal.machinery.client.rest import write_kubeconfig
from cli_helpers import shoal, shoal_in_thread, wait_until

pytestmark = pytest.mark.integration

APP = """\
# the application: a namespace and a deployment in it
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: 127.0.0.1:5000/web:v1
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
"""


def test_apply_created_unchanged_configured_and_drift(api, tmp_path):
    f = tmp_path / "app.yaml"
    f.write_text(APP)
    r = shoal(api, "apply", "-f", str(f))
    assert (r.rc, r.out, r.err) == (0, "namespace/shop created\ndeployment.apps/web created\n", "")
    # the server filled in defaults (strategy, protocol, probe timings...): still unchanged
    r = shoal(api, "apply", "-f", str(f))
    assert (r.rc, r.out) == (0, "namespace/shop unchanged\ndeployment.apps/web unchanged\n")
    f.write_text(APP.replace("web:v1", "web:v2"))
    r = shoal(api, "apply", "-f", str(f))
    assert r.out == "namespace/shop unchanged\ndeployment.apps/web configured\n"
    live = api.client().get("deploy", "web", "shop")
    c = live["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "127.0.0.1:5000/web:v2" and c["ports"][0]["protocol"] == "TCP"
    assert live["metadata"]["generation"] == 2
    # someone scales; a manifest that sets replicas puts them back, one that omits them leaves them
    assert shoal(api, "scale", "deploy/web", "--replicas", "5", "-n", "shop").out == "deployment.apps/web scaled\n"
    assert api.client().get("deploy", "web", "shop")["spec"]["replicas"] == 5
    assert shoal(api, "apply", "-f", str(f)).out.endswith("deployment.apps/web configured\n")
    assert api.client().get("deploy", "web", "shop")["spec"]["replicas"] == 2
    f.write_text(APP.replace("web:v1", "web:v2").replace("  replicas: 2\n", ""))
    assert shoal(api, "apply", "-f", str(f)).out.endswith("deployment.apps/web configured\n")  # annotation changed
    shoal(api, "scale", "deploy/web", "--replicas", "4", "-n", "shop")
    assert shoal(api, "apply", "-f", str(f)).out.endswith("deployment.apps/web unchanged\n")
    assert api.client().get("deploy", "web", "shop")["spec"]["replicas"] == 4


BAD = """\
apiVersion: v1
kind: Namespace
metadata: {name: good}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  replicas: -1
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec:
      containers:
      - name: web
        image: busybox
        imagePullPolicy: Sometimes
---
apiVersion: v1
kind: Pod
metadata: {name: typo}
spec:
  containers:
  - name: web
    image: busybox
    colour: blue
"""


def test_apply_bad_document_names_file_document_field_and_creates_nothing(api, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    r = shoal(api, "apply", "-f", str(f))
    assert r.rc == 1
    assert r.out == "namespace/good created\n"
    lines = r.err.splitlines()
    prefix = f"error: {f}: document 2 (Deployment/broken): "
    assert len(lines) == 3, r.err
    assert sorted(ln.split(": ")[3] for ln in lines[:2]) == [
        "spec.replicas", "spec.template.spec.containers[0].imagePullPolicy"], r.err
    assert all(ln.startswith(prefix) for ln in lines[:2]) and "Sometimes" in r.err
    assert lines[2].startswith(f"error: {f}: document 3 (Pod/typo): ")
    assert 'unknown field "spec.containers[0].colour"' in lines[2]
    with pytest.raises(errors.NotFound):
        api.client().get("deploy", "broken", "default")
    with pytest.raises(errors.NotFound):
        api.client().get("pods", "typo", "default")
    # a YAML syntax error: file, document and line; the rest still applies
    f.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: ok2}\n---\napiVersion: v1\nkind: Pod\n"
                 "metadata:\n  name: p\n  labels: {a: [}\n")
    r = shoal(api, "apply", "-f", str(f))
    assert r.rc == 1 and r.out == "namespace/ok2 created\n"
    assert r.err.startswith(f"error: {f}: document 2: line 9, column ")
    # local checks: unknown kind, missing name
    r = shoal(api, "apply", "-f", "-", stdin="apiVersion: v1\nkind: ReplicationController\nmetadata: {name: s}\n---\n"
                                            "apiVersion: v1\nkind: Pod\nmetadata: {labels: {a: b}}\n")
    assert r.rc == 1 and r.err.splitlines() == [
        'error: <stdin>: document 1 (ReplicationController/s): kind: Unsupported value: "ReplicationController": no '
        'such kind is served by shoal',
        "error: <stdin>: document 2 (Pod/?): metadata.name: Required value"]


def test_get_tables_formats_and_errors(api, tmp_path):
    f = tmp_path / "app.yaml"
    f.write_text(APP)
    shoal(api, "apply", "-f", str(f))
    c = api.client()
    c.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "labels": {"tier": "x"}},
                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    r = shoal(api, "get", "deploy", "-n", "shop")
    assert r.out.splitlines()[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert r.out.splitlines()[1].split()[:4] == ["web", "0/2", "0", "0"]
    r = shoal(api, "get", "deployments.apps", "-n", "shop", "-o", "wide")
    assert r.out.splitlines()[1].split()[5:] == ["web", "127.0.0.1:5000/web:v1", "app=web"]
    r = shoal(api, "get", "po", "-A")
    assert r.out.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert r.out.splitlines()[1].split()[:4] == ["default", "solo", "0/1", "Pending"]
    r = shoal(api, "get", "deploy/web", "-n", "shop", "-o", "yaml")
    obj = yaml.safe_load(r.out)
    assert obj["kind"] == "Deployment" and obj["spec"]["strategy"]["type"] == "RollingUpdate"
    r = shoal(api, "get", "ns", "-o", "json")
    names = [i["metadata"]["name"] for i in json.loads(r.out)["items"]]
    assert "shop" in names and "default" in names
    assert shoal(api, "get", "pods", "-o", "name", "-l", "tier=x").out == "pod/solo\n"
    assert shoal(api, "get", "pods", "--field-selector", "metadata.name=solo", "-o", "name").out == "pod/solo\n"
    r = shoal(api, "get", "rs", "-n", "shop")
    assert (r.rc, r.out, r.err) == (0, "", "No resources found in shop namespace.\n")
    r = shoal(api, "get", "deploy", "nope")
    assert (r.rc, r.err) == (1, 'error: deployments.apps "nope" not found\n')
    r = shoal(api, "get", "gadgets")
    assert (r.rc, r.err) == (1, 'error: the server doesn\'t have a resource type "gadgets"\n')


def test_get_nodes_wide_and_describe_node_and_pod_events(api):
    c = api.client()
    node = c.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
                              "spec": {"podCIDR": "10.244.3.0/24"}})
    node["status"] = {"conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}],
                      "addresses": [{"type": "InternalIP", "address": "192.168.77.2"}],
                      "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                      "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                      "nodeInfo": {"kubeletVersion": "shoal-0.1.0", "osImage": "Debian GNU/Linux 12",
                                   "kernelVersion": "6.1.0", "containerRuntimeVersion": "runc://1.1.5",
                                   "operatingSystem": "linux", "architecture": "amd64"}}
    c.update_status("nodes", node)
    pod = c.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"},
                            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}]}})
    c.create("events", {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "p1.1"}, "type": "Warning",
                        "reason": "BackOff", "message": "Back-off restarting failed container c",
                        "source": {"component": "shoal-agent"}, "count": 1,
                        "firstTimestamp": pod["metadata"]["creationTimestamp"],
                        "lastTimestamp": pod["metadata"]["creationTimestamp"],
                        "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default",
                                           "uid": pod["metadata"]["uid"]}})
    r = shoal(api, "get", "nodes", "-o", "wide")
    assert r.out.splitlines()[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP",
                                             "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME",
                                             "POD-CIDR", "PODS"]
    row = r.out.splitlines()[1]
    assert row.split()[:2] == ["node-a", "Ready"] and "192.168.77.2" in row and "Debian GNU/Linux 12" in row
    assert row.split()[-2:] == ["10.244.3.0/24", "1"]
    r = shoal(api, "describe", "node", "node-a")
    assert "PodCIDR:" in r.out and "10.244.3.0/24" in r.out and "Non-terminated Pods:" in r.out
    assert "(1 in total)" in r.out and "InternalIP:  192.168.77.2" in r.out
    r = shoal(api, "describe", "pod/p1")
    assert r.rc == 0 and "Node:" in r.out and "node-a" in r.out
    assert "Warning  BackOff" in r.out and "shoal-agent  Back-off restarting failed container c" in r.out


def test_delete_waits_and_reports(api, tmp_path):
    f = tmp_path / "app.yaml"
    f.write_text(APP)
    shoal(api, "apply", "-f", str(f))
    r = shoal(api, "delete", "deployment", "web", "-n", "shop")
    assert (r.rc, r.out) == (0, 'deployment.apps "web" deleted\n')
    with pytest.raises(errors.NotFound):
        api.client().get("deploy", "web", "shop")
    r = shoal(api, "delete", "deploy/web", "-n", "shop")
    assert (r.rc, r.err) == (1, 'error: deployments.apps "web" not found\n')
    shoal(api, "apply", "-f", str(f))
    r = shoal(api, "delete", "-f", str(f))
    assert r.rc == 0 and r.out == 'deployment.apps "web" deleted\nnamespace "shop" deleted\n'


def test_get_watch_prints_changes(api):
    c = api.client()
    c.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "first"},
                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    t, out, err, box = shoal_in_thread(api, "get", "pods", "-w", "--request-timeout", "10s")
    wait_until(lambda: "first" in out.text(), what="the initial table")
    c.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "second"},
                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    wait_until(lambda: "second" in out.text(), what="the watch row for the new pod")
    c.delete("pods", "second")
    t.join(30)
    assert not t.is_alive() and box["rc"] == 0
    lines = out.text().splitlines()
    assert lines[0].split()[:3] == ["NAME", "READY", "STATUS"]
    assert [ln.split()[0] for ln in lines[1:]][:2] == ["first", "second"]
    # widths only grow (Go's RememberWidths): later rows never cut into earlier columns
    assert lines[2].index("Pending") >= lines[0].index("STATUS")


def test_unreachable_and_unauthorized(api, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    kc = tmp_path / "down.kubeconfig"
    write_kubeconfig(kc, server=f"http://127.0.0.1:{port}", token="x")
    r = shoal(api, "get", "pods", kubeconfig=kc)
    assert (r.rc, r.err) == (1, f"error: cannot reach the API server at http://127.0.0.1:{port}: is it running? "
                                f"(shoal up / shoal server)\n")
    kc2 = tmp_path / "wrong.kubeconfig"
    write_kubeconfig(kc2, server=api.url, token="not-the-token")
    r = shoal(api, "get", "pods", kubeconfig=kc2)
    assert r.rc == 1 and r.err.startswith("error: You must be logged in to the server (Unauthorized)")
    assert str(kc2) in r.err
    r = shoal(api, "version")
    assert r.rc == 0 and "Server Version: v1." in r.out
