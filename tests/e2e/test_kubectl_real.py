"""The real `kubectl` (/usr/bin/kubectl) against `shoal up`, as a new user runs it (issue 16).

One isolated `shoal up` cluster for the module (`userpath_fixtures.start_up_cluster`: its own
registry holding the busybox test images, its own bridge, CIDR and ports, a real agent running
pods with runc). kubectl reads the kubeconfig `shoal up` wrote, unchanged: it must point at an
https:// server, carry the CA data and the admin token (client-go sends no bearer token over
plain http, so a plain-http kubeconfig makes every command 401).

The base image's kubectl is the gcloud "kubectl-dispatcher": it asks the server's /version and
runs its built-in 1.32 for minor "32". Every invocation gets the module's own HOME and an empty
`--cache-dir`, so discovery and OpenAPI are always fetched from this server, never from another
cluster's cache.

Setup that is not under test (namespaces, base deployments) goes through shoal's own client;
every check of "nothing changed" reads resourceVersions through it too. Tests run in file
order and `drain` comes last: it cordons the only node.

Every test is a promise of docs/kubectl.md; a failing test means the server does not keep it.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from shoal.machinery.api.errors import NotFound
from shoal.machinery.client.rest import Client
from shoal.testkit.apiserver import wait_for
from tests.e2e.userpath_fixtures import UpCluster, up_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

KUBECTL = "/usr/bin/kubectl"


# ------------------------------------------------------------------------------ the harness
class Kubectl:
    """Runs /usr/bin/kubectl against the cluster with a private HOME and discovery cache."""

    def __init__(self, cluster: UpCluster, home: Path):
        self.cluster = cluster
        self.home = home
        self.cache = home / "kube-cache"
        self.workdir = home / "files"
        self.workdir.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
                "KUBECONFIG": str(self.cluster.kubeconfig), "KUBECACHEDIR": str(self.cache),
                "NO_COLOR": "1", "LANG": "C.UTF-8"}

    def argv(self, *args: str) -> list[str]:
        return [KUBECTL, "--cache-dir", str(self.cache), *args]

    def run(self, *args: str, check: bool = True, timeout: float = 90,
            input: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(self.argv(*args), env=self.env(), input=input, capture_output=True, text=True,
                           timeout=timeout, cwd=self.workdir)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {r.returncode}\nstdout:\n{r.stdout}\n"
                                 f"stderr:\n{r.stderr}")
        return r

    def fails(self, *args: str, timeout: float = 90, input: str | None = None) -> subprocess.CompletedProcess:
        r = self.run(*args, check=False, timeout=timeout, input=input)
        assert r.returncode != 0, (f"kubectl {' '.join(args)} was expected to fail, but exited 0\n"
                                   f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        return r

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=self.workdir)

    def file(self, name: str, docs: list[dict] | dict) -> str:
        """Write manifest(s) as YAML under the work dir; returns the path."""
        docs = docs if isinstance(docs, list) else [docs]
        p = self.workdir / name
        p.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return str(p)


class Lines:
    """The stdout of a running process, line by line, with a deadline per wait."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.q: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def until(self, pred, *, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if pred(line):
                return line
        err = ""
        if self.proc.poll() is not None and self.proc.stderr is not None:
            err = self.proc.stderr.read()
        raise AssertionError(f"no line with {what} within {timeout:g} s; lines seen: {self.seen}\nstderr: {err}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cluster():
    with up_cluster("shoal-kc-") as c:
        yield c


@pytest.fixture(scope="module")
def kubectl(cluster: UpCluster):
    home = cluster.data_dir / "kubectl-home"
    home.mkdir()
    return Kubectl(cluster, home)


@pytest.fixture(scope="module")
def api(cluster: UpCluster):
    with Client.from_kubeconfig(cluster.kubeconfig) as c:
        yield c


@pytest.fixture(scope="module")
def node(api: Client) -> str:
    nodes = api.list("nodes")["items"]
    assert len(nodes) == 1, [n["metadata"]["name"] for n in nodes]
    return nodes[0]["metadata"]["name"]


def image(cluster: UpCluster, ref: str) -> str:
    """A test image by tag in the cluster's registry ("web:v1" -> 127.0.0.1:P/web:v1)."""
    return f"{cluster.registry}/{ref}"


def namespace(api: Client, name: str) -> str:
    api.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def deployment(name: str, img: str, replicas: int = 1, **spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"terminationGracePeriodSeconds": 5,
                                           "containers": [{"name": "web", "image": img}]}},
                     **spec}}


def available(api: Client, ns: str, name: str, replicas: int, *, timeout: float = 60) -> dict:
    def done():
        d = api.get("deployments", name, ns)
        st = d.get("status") or {}
        ok = (st.get("observedGeneration", 0) >= d["metadata"]["generation"]
              and st.get("updatedReplicas") == replicas and st.get("availableReplicas") == replicas
              and st.get("replicas") == replicas)
        return d if ok else None
    return wait_for(done, timeout=timeout, interval=0.2, what=f"deployment {ns}/{name} with {replicas} available",
                    detail=lambda: explain_pods(api, ns, f"app={name}"))


def explain_pods(api: Client, ns: str, selector: str) -> str:
    """What a failed wait shows: each pod's phase, node and container states, and the events."""
    lines = []
    for p in api.list("pods", ns, label_selector=selector)["items"]:
        st = p.get("status") or {}
        lines.append(f"pod {p['metadata']['name']}: phase={st.get('phase')} node={p['spec'].get('nodeName')} "
                     f"deleting={bool(p['metadata'].get('deletionTimestamp'))} "
                     f"containers={json.dumps([c.get('state') for c in st.get('containerStatuses') or []])}")
    for e in api.list("events", ns)["items"][-15:]:
        lines.append(f"event {e['involvedObject'].get('name')}: {e.get('reason')}: {e.get('message')}")
    return "\n".join(lines)


def live_pods(api: Client, ns: str, selector: str) -> list[dict]:
    return [p for p in api.list("pods", ns, label_selector=selector)["items"]
            if not p["metadata"].get("deletionTimestamp")]


def rv(api: Client, path: str) -> str:
    return api.request("GET", path)["metadata"]["resourceVersion"]


def exists(api: Client, path: str) -> bool:
    try:
        api.request("GET", path)
        return True
    except NotFound:
        return False


# ------------------------------------------------------------------------------ TLS, token
def test_kubeconfig_is_tls_with_ca_and_token(cluster: UpCluster, kubectl: Kubectl):
    """`shoal up` writes a kubeconfig kubectl can use as is: https, the CA, the token."""
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    server = cfg["clusters"][0]["cluster"]["server"]
    assert server.startswith("https://"), (
        f"shoal up wrote a plain-http kubeconfig ({server}): kubectl sends no bearer token over http")
    assert cfg["clusters"][0]["cluster"].get("certificate-authority-data"), cfg["clusters"][0]
    assert cfg["users"][0]["user"].get("token"), "no token in the kubeconfig"
    v = json.loads(kubectl.run("version", "-o", "json").stdout)
    assert v["serverVersion"]["major"] == "1" and v["serverVersion"]["minor"] == "32", v
    r = kubectl.run("get", "namespace", "default", "-o", "jsonpath={.metadata.name}")
    assert r.stdout == "default"


def test_wrong_token_is_refused(cluster: UpCluster, kubectl: Kubectl):
    r = kubectl.fails("get", "pods", "--token", "not-a-token")
    assert "Unauthorized" in r.stderr or "must be logged in" in r.stderr, r.stderr


# ------------------------------------------------------------------------------ apply
def test_apply_created_configured_unchanged(cluster: UpCluster, kubectl: Kubectl, api: Client):
    ns = namespace(api, "kc-apply")
    d = deployment("web", image(cluster, "web:v1"))
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"color": "blue"}}
    path = kubectl.file("apply.yaml", [d, cm])
    out = kubectl.run("apply", "-n", ns, "-f", path).stdout
    assert "deployment.apps/web created" in out and "configmap/settings created" in out, out
    live = api.get("deployments", "web", ns)
    assert "kubectl.kubernetes.io/last-applied-configuration" in live["metadata"].get("annotations", {})
    cm_path = f"/api/v1/namespaces/{ns}/configmaps/settings"
    cm_rv = rv(api, cm_path)

    out = kubectl.run("apply", "-n", ns, "-f", path).stdout
    assert "deployment.apps/web unchanged" in out and "configmap/settings unchanged" in out, out
    # nothing written: the ConfigMap (no controller writes it) keeps its resourceVersion, the
    # Deployment its generation (its status moves on with the rollout)
    assert rv(api, cm_path) == cm_rv
    assert api.get("deployments", "web", ns)["metadata"]["generation"] == live["metadata"]["generation"]

    d["metadata"]["labels"]["tier"] = "front"
    cm["data"] = {"color": "green"}
    path = kubectl.file("apply.yaml", [d, cm])
    out = kubectl.run("apply", "-n", ns, "-f", path).stdout
    assert "deployment.apps/web configured" in out and "configmap/settings configured" in out, out
    assert api.get("deployments", "web", ns)["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert api.request("GET", f"/api/v1/namespaces/{ns}/configmaps/settings")["data"] == {"color": "green"}
    available(api, ns, "web", 1)


def test_apply_unknown_field_is_refused_by_name(cluster: UpCluster, kubectl: Kubectl, api: Client):
    """Default validation (Strict): the server names the unknown field; nothing is created."""
    ns = namespace(api, "kc-strict")
    d = deployment("typo", image(cluster, "web:v1"))
    d["spec"]["replicass"] = 2
    r = kubectl.fails("apply", "-n", ns, "-f", kubectl.file("typo.yaml", d))
    assert "replicass" in r.stderr, r.stderr
    assert not exists(api, f"/apis/apps/v1/namespaces/{ns}/deployments/typo")
    # with validation turned off or to warnings (fieldValidation=Ignore|Warn) the server drops
    # the field, as Kubernetes does, but always says so: kubectl prints the Warning header
    for validate, name in (("--validate=false", "typo-ignore"), ("--validate=warn", "typo-warn")):
        d["metadata"]["name"] = name
        r = kubectl.run("apply", "-n", ns, validate, "-f", kubectl.file(f"{name}.yaml", d))
        assert 'Warning: unknown field "spec.replicass"' in r.stderr, (validate, r.stderr)
        stored = api.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
        assert "replicass" not in stored["spec"]


def test_apply_server_side_conflict_and_field_removal(cluster: UpCluster, kubectl: Kubectl, api: Client):
    ns = namespace(api, "kc-ssa")
    d = deployment("ssa", image(cluster, "web:v1"))
    d["metadata"]["labels"]["tier"] = "front"
    out = kubectl.run("apply", "--server-side", "-n", ns, "-f", kubectl.file("ssa.yaml", d)).stdout
    assert "deployment.apps/ssa serverside-applied" in out, out
    live = kubectl.json("get", "-n", ns, "deployment", "ssa", "--show-managed-fields")
    managers = {(m["manager"], m["operation"]) for m in live["metadata"].get("managedFields", [])}
    assert ("kubectl", "Apply") in managers, live["metadata"].get("managedFields")

    # another manager applying a different value of a field "kubectl" owns: 409, nothing changes
    # (an apply configuration names only the fields its manager cares about)
    other = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ssa"}, "spec": {"replicas": 2}}
    r = kubectl.fails("apply", "--server-side", "--field-manager=other", "-n", ns,
                      "-f", kubectl.file("ssa-other.yaml", other))
    assert "conflict" in r.stderr.lower() and ".spec.replicas" in r.stderr and '"kubectl"' in r.stderr, r.stderr
    after = api.get("deployments", "ssa", ns)      # (its status moves on with the rollout)
    assert after["metadata"]["generation"] == live["metadata"]["generation"] and after["spec"]["replicas"] == 1
    assert {m["manager"] for m in after["metadata"]["managedFields"]} == {m["manager"] for m in
                                                                         live["metadata"]["managedFields"]}
    # --force-conflicts takes the field over
    kubectl.run("apply", "--server-side", "--force-conflicts", "--field-manager=other", "-n", ns,
                "-f", kubectl.file("ssa-other.yaml", other))
    assert api.get("deployments", "ssa", ns)["spec"]["replicas"] == 2

    # a field dropped from the applied configuration is removed (kubectl owns it alone)
    del d["metadata"]["labels"]["tier"]
    del d["spec"]["replicas"]          # now owned by "other": kubectl gives it up, the value stays
    kubectl.run("apply", "--server-side", "-n", ns, "-f", kubectl.file("ssa.yaml", d))
    live = api.get("deployments", "ssa", ns)
    assert live["metadata"]["labels"] == {"app": "ssa"}, live["metadata"]["labels"]
    assert live["spec"]["replicas"] == 2
    available(api, ns, "ssa", 2)


# ------------------------------------------------------------------------------ typed create (protobuf bodies)
def test_create_namespace_deployment_configmap_secret(cluster: UpCluster, kubectl: Kubectl, api: Client):
    out = kubectl.run("create", "namespace", "kc-create").stdout
    assert "namespace/kc-create created" in out, out
    ns = "kc-create"
    out = kubectl.run("create", "deployment", "made", "-n", ns, f"--image={image(cluster, 'web:v1')}",
                      "--replicas=1").stdout
    assert "deployment.apps/made created" in out, out
    out = kubectl.run("create", "configmap", "cfg", "-n", ns, "--from-literal=a=b").stdout
    assert "configmap/cfg created" in out, out
    out = kubectl.run("create", "secret", "generic", "pw", "-n", ns, "--from-literal=password=s3cret").stdout
    assert "secret/pw created" in out, out

    d = api.get("deployments", "made", ns)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == image(cluster, "web:v1")
    assert d["spec"]["selector"] == {"matchLabels": {"app": "made"}}
    assert api.request("GET", f"/api/v1/namespaces/{ns}/configmaps/cfg")["data"] == {"a": "b"}
    s = api.request("GET", f"/api/v1/namespaces/{ns}/secrets/pw")
    assert base64.b64decode(s["data"]["password"]) == b"s3cret" and s["type"] == "Opaque", s
    # an existing name: AlreadyExists, as Kubernetes words it
    r = kubectl.fails("create", "configmap", "cfg", "-n", ns, "--from-literal=a=c")
    assert 'configmaps "cfg" already exists' in r.stderr, r.stderr
    available(api, ns, "made", 1)


# ------------------------------------------------------------------------------ get, describe, explain
@pytest.fixture(scope="module")
def shown(cluster: UpCluster, api: Client):
    """A rolled-out deployment `show` (2 replicas) to look at."""
    ns = namespace(api, "kc-get")
    api.create("deployments", deployment("show", image(cluster, "web:v1"), 2), ns)
    available(api, ns, "show", 2)
    return ns


def header_and_rows(out: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, "no output"
    # columns are separated by two or more spaces (NOMINATED NODE has one inside)
    split = lambda line: re.split(r"\s{2,}", line.strip())
    return split(lines[0]), [split(line) for line in lines[1:]]


def test_get_wide_tables(kubectl: Kubectl, shown: str, node: str, cluster: UpCluster):
    head, rows = header_and_rows(kubectl.run("get", "-n", shown, "deployments", "-o", "wide").stdout)
    assert head == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"], head
    assert rows[0][:4] == ["show", "2/2", "2", "2"] and rows[0][5:] == ["web", image(cluster, "web:v1"), "app=show"], rows

    head, rows = header_and_rows(kubectl.run("get", "-n", shown, "pods", "-o", "wide").stdout)
    assert head[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"], head
    assert len(rows) == 2 and all(r[1] == "1/1" and r[2] == "Running" and r[6] == node for r in rows), rows

    head, rows = header_and_rows(kubectl.run("get", "-n", shown, "replicasets").stdout)
    assert head == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"], head
    assert rows[0][0].startswith("show-") and rows[0][1:4] == ["2", "2", "2"], rows

    head, rows = header_and_rows(kubectl.run("get", "nodes", "-o", "wide").stdout)
    assert head[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"] and "INTERNAL-IP" in head, head
    assert rows[0][0] == node and rows[0][1] == "Ready", rows

    out = kubectl.run("get", "-n", shown, "deploy,rs", "--show-kind").stdout
    assert "deployment.apps/show" in out and "replicaset.apps/show-" in out, out
    out = kubectl.run("get", "deployments", "-A", "--show-labels").stdout
    assert any(line.split()[:2] == [shown, "show"] and "app=show" in line for line in out.splitlines()), out


def test_get_yaml_json_jsonpath_and_not_found(kubectl: Kubectl, shown: str):
    y = yaml.safe_load(kubectl.run("get", "-n", shown, "deployment", "show", "-o", "yaml").stdout)
    assert y["kind"] == "Deployment" and y["apiVersion"] == "apps/v1" and y["status"]["availableReplicas"] == 2
    j = kubectl.json("get", "-n", shown, "pods", "-l", "app=show")
    assert j["kind"] == "List" and len(j["items"]) == 2 and all(p["kind"] == "Pod" for p in j["items"]), j.keys()
    out = kubectl.run("get", "-n", shown, "pods", "-l", "app=show", "-o",
                      "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}").stdout
    assert out.split() == ["Running", "Running"], out
    out = kubectl.run("get", "-n", shown, "deployment", "show", "-o", "jsonpath={.spec.replicas}").stdout
    assert out == "2"
    out = kubectl.run("get", "-n", shown, "deployments", "-o", "name").stdout
    assert out == "deployment.apps/show\n", out
    out = kubectl.run("get", "-n", shown, "deployments", "-o",
                      "custom-columns=NAME:.metadata.name,IMAGE:.spec.template.spec.containers[0].image").stdout
    assert out.split() == ["NAME", "IMAGE", "show", image(kubectl.cluster, "web:v1")], out
    node = kubectl.json("get", "-n", shown, "pods")["items"][0]["spec"]["nodeName"]
    out = kubectl.run("get", "pods", "-A", f"--field-selector=spec.nodeName={node},metadata.namespace={shown}",
                      "-o", "name").stdout
    assert len(out.split()) == 2 and all(n.startswith("pod/show-") for n in out.split()), out
    assert kubectl.run("get", "pods", "-A", "--field-selector=spec.nodeName=nosuchnode").stderr.strip() == \
        "No resources found"
    r = kubectl.fails("get", "-n", shown, "deployment", "nope")
    assert r.stderr.strip() == 'Error from server (NotFound): deployments.apps "nope" not found', r.stderr


def test_get_watch(kubectl: Kubectl, api: Client, shown: str):
    # a list watch: it resumes from the list's resourceVersion, so no change can fall between the two
    # (a named get watches from "0" and kubectl skips that watch's first event)
    lines = Lines(kubectl.popen("get", "-n", shown, "deployments", "-l", "app=show", "-w", "--request-timeout=30s",
                                "-o", "jsonpath={.metadata.labels.watched}{\"|\"}{.metadata.name}{\"\\n\"}"))
    try:
        lines.until(lambda line: line == "|show", timeout=20, what="the initial state")
        api.patch("deployments", "show", {"metadata": {"labels": {"watched": "yes"}}}, shown)
        lines.until(lambda line: line == "yes|show", timeout=20, what="the label change")
    finally:
        lines.stop()


def test_describe(kubectl: Kubectl, api: Client, shown: str, node: str):
    out = kubectl.run("describe", "-n", shown, "deployment", "show").stdout
    for want in ("Name:                   show", f"Namespace:              {shown}",
                 "Replicas:               2 desired | 2 updated | 2 total | 2 available | 0 unavailable",
                 "StrategyType:           RollingUpdate", "RollingUpdateStrategy:  25% max unavailable, 25% max surge",
                 "NewReplicaSet:", "Events:", "ScalingReplicaSet"):
        assert want in out, f"{want!r} not in describe output:\n{out}"
    pod = live_pods(api, shown, "app=show")[0]["metadata"]["name"]
    out = kubectl.run("describe", "-n", shown, "pod", pod).stdout
    for want in (rf"Name:\s+{pod}\n", rf"Node:\s+{node}/127.0.0.1\n", r"Status:\s+Running\n",
                 r"Controlled By:\s+ReplicaSet/show-", r"Ready:\s+True\n", r"Ready\s+True",
                 r"Normal\s+Scheduled\s+.*default-scheduler", r"Normal\s+Started\s"):
        assert re.search(want, out), f"{want!r} not in describe pod output:\n{out}"


def test_explain(kubectl: Kubectl):
    out = kubectl.run("explain", "deployment.spec").stdout
    assert "GROUP:      apps" in out and "KIND:       Deployment" in out and "VERSION:    v1" in out, out
    assert "FIELD: spec <DeploymentSpec>" in out, out
    for field in ("replicas\t<integer>", "selector\t<LabelSelector> -required-", "template\t<PodTemplateSpec> -required-",
                  "strategy\t<DeploymentStrategy>", "paused\t<boolean>"):
        assert field in out, f"{field!r} not in:\n{out}"
    out = kubectl.run("explain", "pod.spec.containers.image").stdout
    assert "FIELD: image <string>" in out, out
    r = kubectl.fails("explain", "deployment.spec.nosuchfield")
    assert "nosuchfield" in r.stderr, r.stderr


# ------------------------------------------------------------------------------ rollout
def test_rollout_status_history_undo_pause_resume_restart(cluster: UpCluster, kubectl: Kubectl, api: Client):
    ns = namespace(api, "kc-rollout")
    api.create("deployments", deployment("roll", image(cluster, "web:v1"), 2), ns)
    out = kubectl.run("rollout", "status", "-n", ns, "deployment/roll", "--timeout=90s").stdout
    assert 'deployment "roll" successfully rolled out' in out, out

    out = kubectl.run("set", "image", "-n", ns, "deployment/roll", f"web={image(cluster, 'web:v2')}").stdout
    assert "deployment.apps/roll image updated" in out, out
    kubectl.run("rollout", "status", "-n", ns, "deployment/roll", "--timeout=90s")
    head, rows = header_and_rows(kubectl.run("rollout", "history", "-n", ns, "deployment/roll").stdout.split(
        "\n", 1)[1])
    assert head == ["REVISION", "CHANGE-CAUSE"] and [r[0] for r in rows] == ["1", "2"], rows
    out = kubectl.run("rollout", "history", "-n", ns, "deployment/roll", "--revision=1").stdout
    assert image(cluster, "web:v1") in out, out

    out = kubectl.run("rollout", "undo", "-n", ns, "deployment/roll").stdout
    assert "deployment.apps/roll rolled back" in out, out
    kubectl.run("rollout", "status", "-n", ns, "deployment/roll", "--timeout=90s")
    d = available(api, ns, "roll", 2)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == image(cluster, "web:v1")
    _, rows = header_and_rows(kubectl.run("rollout", "history", "-n", ns, "deployment/roll").stdout.split("\n", 1)[1])
    assert [r[0] for r in rows] == ["2", "3"], rows      # revision 1's ReplicaSet was reused as 3

    out = kubectl.run("rollout", "pause", "-n", ns, "deployment/roll").stdout
    assert "deployment.apps/roll paused" in out, out
    rs_before = {r["metadata"]["name"] for r in api.list("replicasets", ns)["items"]}
    kubectl.run("set", "image", "-n", ns, "deployment/roll", f"web={image(cluster, 'web:v2')}")
    time.sleep(2)     # the controller would have made the new ReplicaSet by now, were it not paused
    assert {r["metadata"]["name"] for r in api.list("replicasets", ns)["items"]} == rs_before
    assert all(p["spec"]["containers"][0]["image"] == image(cluster, "web:v1") for p in live_pods(api, ns, "app=roll"))
    out = kubectl.run("rollout", "resume", "-n", ns, "deployment/roll").stdout
    assert "deployment.apps/roll resumed" in out, out
    kubectl.run("rollout", "status", "-n", ns, "deployment/roll", "--timeout=90s")
    available(api, ns, "roll", 2)
    assert all(p["spec"]["containers"][0]["image"] == image(cluster, "web:v2") for p in live_pods(api, ns, "app=roll"))

    old = {p["metadata"]["name"] for p in live_pods(api, ns, "app=roll")}
    out = kubectl.run("rollout", "restart", "-n", ns, "deployment/roll").stdout
    assert "deployment.apps/roll restarted" in out, out
    kubectl.run("rollout", "status", "-n", ns, "deployment/roll", "--timeout=90s")
    d = available(api, ns, "roll", 2)
    assert "kubectl.kubernetes.io/restartedAt" in d["spec"]["template"]["metadata"]["annotations"]
    wait_for(lambda: not (old & {p["metadata"]["name"] for p in live_pods(api, ns, "app=roll")}), timeout=30,
             what="every pod replaced by the restart")


def test_scale_during_rollout_then_set_image_completes(cluster: UpCluster, kubectl: Kubectl, api: Client):
    """The issue's jam: set image, scale while it rolls, set image again; the last rollout completes
    with exactly the wanted replicas, every older ReplicaSet at 0."""
    ns = namespace(api, "kc-scale")
    api.create("deployments", deployment("grow", image(cluster, "web:v1"), 2, minReadySeconds=2), ns)
    available(api, ns, "grow", 2)
    kubectl.run("set", "image", "-n", ns, "deployment/grow", f"web={image(cluster, 'web:v2')}")
    out = kubectl.run("scale", "-n", ns, "deployment/grow", "--replicas=5").stdout
    assert "deployment.apps/grow scaled" in out, out
    time.sleep(1)
    last = cluster.images["web:v1"]          # by digest: a third pod template
    kubectl.run("set", "image", "-n", ns, "deployment/grow", f"web={last}")
    r = kubectl.run("rollout", "status", "-n", ns, "deployment/grow", "--timeout=120s", check=False)
    rss = api.list("replicasets", ns)["items"]
    summary = [(x["metadata"]["name"], x["spec"]["replicas"], x["metadata"]["annotations"]) for x in rss]
    assert r.returncode == 0 and "successfully rolled out" in r.stdout, f"{r.stdout}\n{r.stderr}\n{summary}"
    available(api, ns, "grow", 5)
    current = [x for x in rss if x["spec"]["template"]["spec"]["containers"][0]["image"] == last]
    assert len(current) == 1 and current[0]["spec"]["replicas"] == 5, summary
    assert all(x["spec"]["replicas"] == 0 for x in rss if x not in current), summary
    for x in rss:
        assert x["metadata"]["annotations"].get("deployment.kubernetes.io/desired-replicas") == "5", summary
    pods = live_pods(api, ns, "app=grow")
    assert len(pods) == 5 and all(p["spec"]["containers"][0]["image"] == last for p in pods)


# ------------------------------------------------------------------------------ diff, dry-run
def test_diff_and_every_server_dry_run_change_nothing(cluster: UpCluster, kubectl: Kubectl, api: Client):
    ns = namespace(api, "kc-dry")
    d = deployment("dry", image(cluster, "web:v1"))
    kubectl.run("apply", "-n", ns, "-f", kubectl.file("dry.yaml", d))
    available(api, ns, "dry", 1)
    kubectl.run("create", "configmap", "keep", "-n", ns, "--from-literal=a=b")
    pod = live_pods(api, ns, "app=dry")[0]["metadata"]["name"]
    paths = {"deployment": f"/apis/apps/v1/namespaces/{ns}/deployments/dry",
             "pod": f"/api/v1/namespaces/{ns}/pods/{pod}",
             "configmap": f"/api/v1/namespaces/{ns}/configmaps/keep"}
    time.sleep(1)         # the controllers' status writes settle
    before = {k: rv(api, p) for k, p in paths.items()}
    rs_before = {x["metadata"]["name"]: x["metadata"]["resourceVersion"] for x in api.list("replicasets", ns)["items"]}

    def unchanged(after: str) -> None:
        now = {k: rv(api, p) for k, p in paths.items()}
        assert now == before, f"after {after}: resourceVersions {before} -> {now}"
        rs_now = {x["metadata"]["name"]: x["metadata"]["resourceVersion"] for x in api.list("replicasets", ns)["items"]}
        assert rs_now == rs_before, f"after {after}: ReplicaSets {rs_before} -> {rs_now}"

    changed = json.loads(json.dumps(d))
    changed["spec"]["replicas"] = 3
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = image(cluster, "web:v2")
    path = kubectl.file("dry-changed.yaml", changed)
    r = kubectl.run("diff", "-n", ns, "-f", path, check=False)
    assert r.returncode == 1, f"kubectl diff exited {r.returncode} (1 = differences)\n{r.stdout}\n{r.stderr}"
    assert "-  replicas: 1" in r.stdout and "+  replicas: 3" in r.stdout and "web:v2" in r.stdout, r.stdout
    unchanged("kubectl diff")
    r = kubectl.run("diff", "--server-side", "-n", ns, "-f", path, check=False)
    assert r.returncode == 1 and "+  replicas: 3" in r.stdout, f"{r.stdout}\n{r.stderr}"
    unchanged("kubectl diff --server-side")

    out = kubectl.run("apply", "-n", ns, "--dry-run=server", "-f", path, "-o", "jsonpath={.spec.replicas}").stdout
    assert out == "3", out
    unchanged("apply --dry-run=server")
    out = kubectl.run("apply", "--server-side", "-n", ns, "--dry-run=server", "-f", path).stdout
    assert "serverside-applied (server dry run)" in out, out
    unchanged("apply --server-side --dry-run=server")
    out = kubectl.run("scale", "-n", ns, "deployment/dry", "--replicas=4", "--dry-run=server").stdout
    assert "deployment.apps/dry scaled (server dry run)" in out, out
    unchanged("scale --dry-run=server")
    out = kubectl.run("set", "image", "-n", ns, "deployment/dry", f"web={image(cluster, 'web:v2')}",
                      "--dry-run=server").stdout
    assert "image updated (server dry run)" in out, out
    unchanged("set image --dry-run=server")
    out = kubectl.run("label", "-n", ns, "deployment/dry", "dry=run", "--dry-run=server").stdout
    assert "labeled (server dry run)" in out, out
    out = kubectl.run("annotate", "-n", ns, "pod", pod, "dry=run", "--dry-run=server").stdout
    assert "annotated (server dry run)" in out, out
    out = kubectl.run("patch", "-n", ns, "deployment", "dry", "-p", '{"spec":{"replicas":6}}', "--dry-run=server",
                      "-o", "jsonpath={.spec.replicas}").stdout
    assert out == "6", out
    # (kubectl 1.32 prints "patched" here without its dry-run suffix; the check is the object's)
    out = kubectl.run("patch", "-n", ns, "configmap", "keep", "--type=json",
                      "-p", '[{"op":"replace","path":"/data/a","value":"z"}]', "--dry-run=server",
                      "-o", "jsonpath={.data.a}").stdout
    assert out == "z", out
    unchanged("label/annotate/patch --dry-run=server")
    out = kubectl.run("create", "deployment", "ghost", "-n", ns, f"--image={image(cluster, 'web:v1')}",
                      "--dry-run=server").stdout
    assert "deployment.apps/ghost created (server dry run)" in out, out
    out = kubectl.run("create", "configmap", "ghost", "-n", ns, "--from-literal=a=b", "--dry-run=server").stdout
    assert "configmap/ghost created (server dry run)" in out, out
    assert not exists(api, f"/apis/apps/v1/namespaces/{ns}/deployments/ghost")
    assert not exists(api, f"/api/v1/namespaces/{ns}/configmaps/ghost")
    out = kubectl.run("delete", "-n", ns, "deployment", "dry", "--dry-run=server").stdout
    assert 'deployment.apps "dry" deleted (server dry run)' in out, out
    out = kubectl.run("delete", "-n", ns, "pod", pod, "--dry-run=server").stdout
    assert f'pod "{pod}" deleted (server dry run)' in out, out
    out = kubectl.run("delete", "-n", ns, "configmaps", "--all", "--dry-run=server").stdout
    assert 'configmap "keep" deleted (server dry run)' in out, out
    unchanged("delete --dry-run=server")
    time.sleep(1)
    unchanged("a second look")
    d_live = api.get("deployments", "dry", ns)
    assert not d_live["metadata"].get("deletionTimestamp") and d_live["spec"]["replicas"] == 1


# ------------------------------------------------------------------------------ cascading delete
def test_delete_cascade_orphan_foreground_background(cluster: UpCluster, kubectl: Kubectl, api: Client):
    ns = namespace(api, "kc-cascade")
    for name in ("orph", "fore", "back"):
        api.create("deployments", deployment(name, image(cluster, "web:v1"), 2), ns)
    for name in ("orph", "fore", "back"):
        available(api, ns, name, 2)

    def rs_of(name: str) -> list[dict]:
        return api.list("replicasets", ns, label_selector=f"app={name}")["items"]

    # orphan: the deployment goes, its ReplicaSet and pods stay, no longer owned
    orph_uid = api.get("deployments", "orph", ns)["metadata"]["uid"]
    out = kubectl.run("delete", "-n", ns, "deployment", "orph", "--cascade=orphan").stdout
    assert 'deployment.apps "orph" deleted' in out, out
    time.sleep(3)       # give the garbage collector every chance to (wrongly) collect them
    rss = rs_of("orph")
    assert len(rss) == 1 and rss[0]["spec"]["replicas"] == 2, [x["metadata"] for x in rss]
    assert all(o["uid"] != orph_uid for o in rss[0]["metadata"].get("ownerReferences", [])), rss[0]["metadata"]
    assert len(live_pods(api, ns, "app=orph")) == 2

    # foreground: when kubectl's wait ends (the deployment is gone), its dependents are gone already
    out = kubectl.run("delete", "-n", ns, "deployment", "fore", "--cascade=foreground", "--wait=false").stdout
    assert 'deployment.apps "fore" deleted' in out, out
    try:
        mid = api.get("deployments", "fore", ns)
    except NotFound:
        mid = None
    assert mid is not None, "the foreground-deleted deployment vanished at once, before its dependents"
    assert mid["metadata"].get("deletionTimestamp") and "foregroundDeletion" in mid["metadata"].get("finalizers", []), \
        mid["metadata"]
    kubectl.run("wait", "-n", ns, "--for=delete", "deployment/fore", "--timeout=60s")
    assert rs_of("fore") == [], "ReplicaSet left after its foreground-deleted owner went"
    assert api.list("pods", ns, label_selector="app=fore")["items"] == [], "pods left after the foreground deletion"

    # background (the default): the deployment goes at once; the collector removes the rest after
    out = kubectl.run("delete", "-n", ns, "deployment", "back").stdout
    assert 'deployment.apps "back" deleted' in out, out
    wait_for(lambda: not rs_of("back") and not api.list("pods", ns, label_selector="app=back")["items"],
             timeout=60, what="the background-deleted deployment's ReplicaSet and pods gone")
    # the orphans are still there, untouched
    assert len(rs_of("orph")) == 1 and len(live_pods(api, ns, "app=orph")) == 2


# ------------------------------------------------------------------------------ logs
def test_logs_follow(cluster: UpCluster, kubectl: Kubectl, api: Client):
    ns = namespace(api, "kc-logs")
    out = kubectl.run("run", "ticker", "-n", ns, f"--image={image(cluster, 'web:v1')}", "--command", "--",
                      "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.5; done").stdout
    assert "pod/ticker created" in out, out
    kubectl.run("wait", "-n", ns, "--for=condition=Ready", "pod/ticker", "--timeout=60s")
    lines = Lines(kubectl.popen("logs", "-n", ns, "-f", "pod/ticker"))
    try:
        first = lines.until(lambda line: line.startswith("tick "), timeout=15, what="a tick")
        n = int(first.split()[1])
        lines.until(lambda line: line == f"tick {n + 3}", timeout=15, what=f"tick {n + 3} (following)")
    finally:
        lines.stop()
    out = kubectl.run("logs", "-n", ns, "ticker", "--tail=2").stdout
    assert len(out.splitlines()) == 2 and all(x.startswith("tick ") for x in out.splitlines()), out
    r = kubectl.fails("logs", "-n", ns, "ticker", "-c", "nosuch")
    assert "nosuch" in r.stderr, r.stderr


# ------------------------------------------------------------------------------ drain (last: cordons the node)
def test_drain_cordons_and_evicts(cluster: UpCluster, kubectl: Kubectl, api: Client, node: str):
    ns = namespace(api, "kc-drain")
    api.create("deployments", deployment("drained", image(cluster, "web:v1"), 1), ns)
    api.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
                        "spec": {"terminationGracePeriodSeconds": 2,
                                 "containers": [{"name": "web", "image": image(cluster, "web:v1")}]}}, ns)
    available(api, ns, "drained", 1)
    kubectl.run("wait", "-n", ns, "--for=condition=Ready", "pod/bare", "--timeout=60s")
    before = {p["metadata"]["name"] for p in api.list("pods", all_namespaces=True,
                                                      field_selector=f"spec.nodeName={node}")["items"]
              if not p["metadata"].get("deletionTimestamp")}
    try:
        r = kubectl.run("drain", node, "--ignore-daemonsets", "--force", "--delete-emptydir-data",
                        "--grace-period=5", "--timeout=120s", timeout=150)
        assert f"node/{node} cordoned" in r.stdout and f"node/{node} drained" in r.stdout, r.stdout
        assert "pod/bare evicted" in r.stdout or "pod/bare deleted" in r.stdout, r.stdout
        assert api.get("nodes", node)["spec"].get("unschedulable") is True
        left = {p["metadata"]["name"] for p in api.list("pods", all_namespaces=True,
                                                       field_selector=f"spec.nodeName={node}")["items"]}
        assert not (before & left), f"pods still on the drained node: {before & left}"
        assert not exists(api, f"/api/v1/namespaces/{ns}/pods/bare")
        # the deployment's replacement waits: the only node is cordoned
        wait_for(lambda: [p for p in live_pods(api, ns, "app=drained") if not p["spec"].get("nodeName")],
                 timeout=30, what="a pending replacement pod for `drained`")
        out = kubectl.run("uncordon", node).stdout
        assert f"node/{node} uncordoned" in out, out
        available(api, ns, "drained", 1)
    finally:
        kubectl.run("uncordon", node, check=False)
