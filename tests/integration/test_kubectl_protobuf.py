"""The real kubectl's typed commands against a real (TLS) API server: they send protobuf bodies.

`kubectl create deployment|namespace|configmap|secret|service` POST Kubernetes' protobuf and never
retry as JSON (/work/shared/reference/kubectl-wire-2.md, section 1); drain's fallback DELETE
sends a protobuf DeleteOptions. Each command runs with an empty `--cache-dir` and a private
HOME; the stored objects are read back through the API.
"""
from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from shoal.apiserver import protobuf
from shoal.machinery.api import errors
from shoal.testkit.apiserver import start_test_server

pytestmark = pytest.mark.integration
KUBECTL = "/usr/bin/kubectl"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not Path(KUBECTL).exists():
        pytest.skip(f"{KUBECTL} is not installed")
    tmp = tmp_path_factory.mktemp("kubectl-protobuf")
    srv = start_test_server(tmp, tls=True)
    try:
        yield srv, tmp
    finally:
        srv.stop()


def kubectl(cluster, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    srv, tmp = cluster
    home, cache = tmp / "home", tmp / "cache"
    home.mkdir(exist_ok=True)
    cache.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "NO_COLOR": "1"}
    r = subprocess.run([KUBECTL, "--kubeconfig", str(srv.kubeconfig), "--cache-dir", str(cache), *args],
                       env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stdout}{r.stderr}"
    return r


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def test_create_deployment(cluster):
    srv, _ = cluster
    assert kubectl(cluster, "create", "deployment", "web", "--image=busybox", "--replicas=2").stdout.strip() == \
        "deployment.apps/web created"
    d = srv.client().get("deployments", "web", "default")
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert d["spec"]["template"]["spec"]["containers"][0]["name"] == "busybox"
    assert d["spec"]["strategy"]["type"] == "RollingUpdate"            # sent as {type: ""}: defaulted
    assert d["metadata"]["generation"] == 1
    # --replicas=0 is a pointer zero: kept, not defaulted to 1; --port lands in the template
    kubectl(cluster, "create", "deployment", "idle", "--image=busybox", "--replicas=0", "--port=8080")
    idle = srv.client().get("deployments", "idle", "default")
    assert idle["spec"]["replicas"] == 0
    assert idle["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]


def test_create_namespace_and_objects_in_it(cluster):
    srv, _ = cluster
    assert kubectl(cluster, "create", "namespace", "team").stdout.strip() == "namespace/team created"
    ns = srv.client().get("namespaces", "team")
    assert ns["status"]["phase"] == "Active"
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team"}
    kubectl(cluster, "-n", "team", "create", "configmap", "settings", "--from-literal=mode=fast")
    assert srv.client().get("configmaps", "settings", "team")["data"] == {"mode": "fast"}


def test_create_configmap(cluster, tmp_path):
    srv, _ = cluster
    (tmp_path / "app.conf").write_text("port=80\n")
    (tmp_path / "logo.bin").write_bytes(b"\x89PNG\x00\xff")
    out = kubectl(cluster, "create", "configmap", "c", "--from-literal=a=b",
                  f"--from-file={tmp_path / 'app.conf'}", f"--from-file=logo={tmp_path / 'logo.bin'}")
    assert out.stdout.strip() == "configmap/c created"
    c = srv.client().get("configmaps", "c", "default")
    assert c["data"] == {"a": "b", "app.conf": "port=80\n"}
    assert c["binaryData"] == {"logo": b64(b"\x89PNG\x00\xff")}            # not UTF-8: kubectl's binaryData


def test_create_secret_generic(cluster):
    srv, _ = cluster
    assert kubectl(cluster, "create", "secret", "generic", "s", "--from-literal=a=b",
                   "--from-literal=password=p@ss w0rd").stdout.strip() == "secret/s created"
    s = srv.client().get("secrets", "s", "default")
    assert s["data"] == {"a": b64("b"), "password": b64("p@ss w0rd")}
    assert s["type"] == "Opaque"                                        # sent empty: defaulted
    assert kubectl(cluster, "get", "secret", "s", "-o", "jsonpath={.data.password}").stdout == b64("p@ss w0rd")
    # a second create is the server's AlreadyExists, printed by kubectl
    again = kubectl(cluster, "create", "secret", "generic", "s", "--from-literal=a=b", ok=False)
    assert again.returncode == 1 and 'secrets "s" already exists' in again.stderr


def test_create_secret_docker_registry(cluster):
    srv, _ = cluster
    kubectl(cluster, "create", "secret", "docker-registry", "reg", "--docker-server=registry.example:5000",
            "--docker-username=u", "--docker-password=p")
    s = srv.client().get("secrets", "reg", "default")
    assert s["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(s["data"][".dockerconfigjson"]))
    assert config["auths"]["registry.example:5000"]["auth"] == b64("u:p")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    crt, pem = tmp_path / "tls.crt", tmp_path / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def test_create_secret_tls(cluster, tmp_path):
    srv, _ = cluster
    crt, key = _self_signed(tmp_path)
    kubectl(cluster, "create", "secret", "tls", "web-tls", f"--cert={crt}", f"--key={key}")
    s = srv.client().get("secrets", "web-tls", "default")
    assert s["type"] == "kubernetes.io/tls"
    assert base64.b64decode(s["data"]["tls.crt"]) == crt.read_bytes()
    assert base64.b64decode(s["data"]["tls.key"]) == key.read_bytes()


@pytest.mark.parametrize("args, kind, plural, name", [
    (["create", "configmap", "dry-cm", "--from-literal=k=v"], "ConfigMap", "configmaps", "dry-cm"),
    (["create", "secret", "generic", "dry-s", "--from-literal=k=v"], "Secret", "secrets", "dry-s"),
    (["create", "deployment", "dry-d", "--image=busybox"], "Deployment", "deployments", "dry-d"),
    (["create", "namespace", "dry-ns"], "Namespace", "namespaces", "dry-ns"),
    (["create", "service", "nodeport", "dry-svc", "--tcp=80:8080"], "Service", "services", "dry-svc"),
])
def test_server_dry_run_answers_the_object_and_stores_nothing(cluster, args, kind, plural, name):
    srv, _ = cluster
    before = srv.client().list("namespaces")["metadata"]["resourceVersion"]
    out = json.loads(kubectl(cluster, *args, "--dry-run=server", "-o", "json").stdout)
    assert out["kind"] == kind and out["metadata"]["name"] == name
    assert out["metadata"]["uid"]                                       # the server filled it in
    if kind == "Secret":
        assert out["data"] == {"k": b64("v")} and out["type"] == "Opaque"
    if kind == "ConfigMap":
        assert out["data"] == {"k": "v"}
    if kind == "Deployment":
        assert out["spec"]["strategy"]["type"] == "RollingUpdate"
    if kind == "Service":                   # the values a real create would get, none of them held
        assert out["spec"]["clusterIP"] and out["spec"]["ports"][0]["nodePort"]
        assert srv.store.allocations("clusterip") == {} or out["spec"]["clusterIP"] not in [
            str(ipaddress.IPv4Address(v)) for v in srv.store.allocations("clusterip")]
    with pytest.raises(errors.NotFound):
        srv.client().get(plural, name, None if kind == "Namespace" else "default")
    assert srv.client().list("namespaces")["metadata"]["resourceVersion"] == before    # no write at all


def test_get_and_discovery_list_them(cluster):
    kubectl(cluster, "create", "configmap", "listed", "--from-literal=a=b")
    resources = kubectl(cluster, "api-resources", "--api-group=").stdout
    rows = {line.split()[0]: line.split() for line in resources.splitlines()[1:]}
    assert rows["configmaps"][1:] == ["cm", "v1", "true", "ConfigMap"]
    assert rows["secrets"][1:] == ["v1", "true", "Secret"]
    assert "listed" in kubectl(cluster, "get", "cm").stdout
    assert "listed" in kubectl(cluster, "get", "configmaps/listed", "-o", "name").stdout
    assert "configmap \"listed\" deleted" in kubectl(cluster, "delete", "cm", "listed").stdout


def test_create_service_and_expose(cluster):
    srv, _ = cluster
    c = srv.client()
    assert kubectl(cluster, "create", "service", "clusterip", "s", "--tcp=80:8080").stdout.strip() == \
        "service/s created"
    s = c.get("services", "s", "default")
    assert s["spec"]["ports"] == [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    assert s["spec"]["selector"] == {"app": "s"} and s["metadata"]["labels"] == {"app": "s"}
    assert s["spec"]["type"] == "ClusterIP" and s["status"] == {"loadBalancer": {}}
    assert ipaddress.ip_address(s["spec"]["clusterIP"]) in ipaddress.ip_network("10.43.0.0/16")
    kubectl(cluster, "create", "service", "nodeport", "np", "--tcp=80:8080", "--node-port=30123")
    assert c.get("services", "np", "default")["spec"]["ports"][0]["nodePort"] == 30123
    taken = kubectl(cluster, "create", "service", "nodeport", "np2", "--tcp=80:8080", "--node-port=30123", ok=False)
    assert taken.returncode == 1 and "spec.ports[0].nodePort: Invalid value: 30123: provided port is already " \
                                      "allocated" in taken.stderr
    kubectl(cluster, "create", "service", "clusterip", "hl", "--clusterip=None")
    assert c.get("services", "hl", "default")["spec"]["clusterIPs"] == ["None"]
    # kubectl expose reads the deployment and POSTs JSON (fieldManager=kubectl-expose)
    kubectl(cluster, "create", "deployment", "exp", "--image=busybox", "--port=8080")
    assert kubectl(cluster, "expose", "deployment", "exp", "--port=80", "--target-port=8080").stdout.strip() == \
        "service/exp exposed"
    exp = c.get("services", "exp", "default")
    assert exp["spec"]["ports"] == [{"protocol": "TCP", "port": 80, "targetPort": 8080}]
    assert exp["spec"]["selector"] == {"app": "exp"} and exp["spec"]["type"] == "ClusterIP"
    assert [f["manager"] for f in exp["metadata"].get("managedFields") or []] in ([], ["kubectl-expose"])
    rows = {line.split()[0]: line.split() for line in kubectl(cluster, "get", "svc").stdout.splitlines()}
    assert rows["NAME"] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert rows["np"][1:5] == ["NodePort", c.get("services", "np", "default")["spec"]["clusterIP"], "<none>",
                               "80:30123/TCP"]
    assert rows["hl"][1:5] == ["ClusterIP", "None", "<none>", "<none>"]
    c.create("endpointslices", {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",      # no controllers here
                                "metadata": {"name": "exp-a", "labels": {"kubernetes.io/service-name": "exp"}},
                                "addressType": "IPv4", "ports": [{"port": 8080}],
                                "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}]})
    slices = kubectl(cluster, "get", "endpointslices").stdout.splitlines()
    assert [line.split()[:4] for line in slices] == [["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS"],
                                                     ["exp-a", "IPv4", "8080", "10.244.1.5"]]
    described = kubectl(cluster, "describe", "svc", "exp").stdout
    assert "TargetPort:               8080/TCP" in described and "Type:                     ClusterIP" in described
    assert "Endpoints:                10.244.1.5:8080" in described


def test_apply_a_service_again_and_changed(cluster, tmp_path):
    srv, _ = cluster
    c = srv.client()
    f = tmp_path / "svc.yaml"
    manifest = ("apiVersion: v1\nkind: Service\nmetadata: {name: applied}\nspec:\n  type: NodePort\n"
                "  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n")
    f.write_text(manifest)
    assert kubectl(cluster, "apply", "-f", str(f)).stdout.strip() == "service/applied created"
    first = c.get("services", "applied", "default")
    assert kubectl(cluster, "apply", "-f", str(f)).stdout.strip() == "service/applied unchanged"
    f.write_text(manifest + "  - {name: metrics, port: 9090}\n")
    assert kubectl(cluster, "apply", "-f", str(f)).stdout.strip() == "service/applied configured"
    grown = c.get("services", "applied", "default")
    assert [p["port"] for p in grown["spec"]["ports"]] == [80, 9090]
    assert grown["spec"]["ports"][0]["nodePort"] == first["spec"]["ports"][0]["nodePort"]    # kept
    # dropping a port and the NodePort type: kubectl's strategic patch deletes the port by `port`
    f.write_text(manifest.replace("NodePort", "ClusterIP"))
    assert kubectl(cluster, "apply", "-f", str(f)).stdout.strip() == "service/applied configured"
    back = c.get("services", "applied", "default")
    assert back["spec"]["ports"] == [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    assert back["spec"]["clusterIP"] == first["spec"]["clusterIP"]
    assert not [v for v, k in srv.store.allocations("nodeport").items() if k == "services/default/applied"]


# --- the protobuf wire directly ---------------------------------------------------------------------

def _http(cluster) -> httpx.Client:
    srv, _ = cluster
    ctx = ssl.create_default_context(cafile=srv.tls_files["ca"])
    return httpx.Client(base_url=srv.url, verify=ctx, headers={"Authorization": f"Bearer {srv.admin_token}"})


def _lf(num: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | 0x80 if n else b)
            if not n:
                return bytes(out)
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return protobuf.MAGIC + _lf(1, _lf(1, api_version.encode()) + _lf(2, kind.encode())) + _lf(2, raw)


def test_drain_fallback_delete_with_protobuf_delete_options(cluster):
    srv, _ = cluster
    srv.client().create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
                                 "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, "default")
    with _http(cluster) as h:
        r = h.request("DELETE", "/api/v1/namespaces/default/pods/bare", content=_envelope("v1", "DeleteOptions", b""),
                      headers={"Content-Type": protobuf.MEDIA_TYPE,
                               "Accept": f"{protobuf.MEDIA_TYPE},application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    with pytest.raises(errors.NotFound):
        srv.client().get("pods", "bare", "default")


def test_a_bad_protobuf_body_is_a_400_that_kubectl_would_print(cluster):
    body = _envelope("v1", "ConfigMap", _lf(1, _lf(1, b"x")) + _lf(9, b"?"))
    with _http(cluster) as h:
        r = h.post("/api/v1/namespaces/default/configmaps", content=body,
                   headers={"Content-Type": protobuf.MEDIA_TYPE})
    assert r.status_code == 400
    status = r.json()
    assert status["reason"] == "BadRequest"
    assert "unknown field number 9 at the object's top level" in status["message"]


def test_a_client_that_accepts_only_protobuf_gets_406(cluster):
    with _http(cluster) as h:
        only = h.get("/api/v1/namespaces/default/configmaps", headers={"Accept": protobuf.MEDIA_TYPE})
        either = h.get("/api/v1/namespaces/default/configmaps",
                       headers={"Accept": f"{protobuf.MEDIA_TYPE},application/json"})
    assert only.status_code == 406 and only.json()["reason"] == "NotAcceptable"
    assert either.status_code == 200 and either.json()["kind"] == "ConfigMapList"
