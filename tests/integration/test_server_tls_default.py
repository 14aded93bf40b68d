"""`shoal server` as users start it — no TLS flags — serves HTTPS with its generated CA and
writes a kubeconfig that every client uses as it is (issue 16, "TLS by default"):

- the kubeconfig (at $KUBECONFIG, and <data-dir>/admin.kubeconfig) names an https:// server
  and carries `certificate-authority-data` (the CA in <data-dir>/tls) and the admin token;
- the serving certificate names 127.0.0.1, ::1, localhost and the hostname;
- the real `/usr/bin/kubectl`, the Python `kubernetes` client (`load_kube_config`) and
  shoal's own CLI work with that file and no flags; the controllers (a `shoal controller`
  child reading the admin kubeconfig) and a `shoal agent` joining with the pinned token work;
- plain HTTP only with `--insecure-http` on loopback: refused on 0.0.0.0, `--no-tls` refused;
  and a data dir that served plain HTTP serves HTTPS at its next default start.

Every server here is a `python -m shoal.cli server` process on a free loopback port, stopped
(and its process group killed if need be) by the fixture.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from shoal.machinery.client.rest import Client
from shoal.testkit.apiserver import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
KUBECTL = "/usr/bin/kubectl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`shoal server ARGS` with KUBECONFIG pointing into `home` (the default kubeconfig path)."""

    def __init__(self, tmp: Path, *args: str, port: int | None = None):
        self.home = tmp / "home"
        self.home.mkdir(exist_ok=True)
        self.data = tmp / "data"
        self.port = port or free_port()
        self.kubeconfig = self.home / "kubeconfig"
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HOME": str(self.home),
                    "PYTHONPATH": str(ROOT)}
        self.argv = [sys.executable, "-m", "shoal.cli", "server", "--data-dir", str(self.data),
                     "--listen", f"127.0.0.1:{self.port}", *args]
        self.log = tmp / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "Server":
        started = time.time()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"shoal server exited {self.proc.returncode}:\n{self.log.read_text()}")
            if not self.kubeconfig.exists() or self.kubeconfig.stat().st_mtime < started - 1:
                return False
            with Client.from_kubeconfig(self.kubeconfig, timeout=2) as c:
                return c.request("GET", "/readyz", raw=True) == "ok"
        wait_for(up, timeout=timeout, interval=0.1, what="shoal server to answer through its kubeconfig",
                 tolerate=(Exception,), detail=lambda: self.log.read_text()[-3000:])
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def config(self) -> dict:
        return yaml.safe_load(self.kubeconfig.read_text())

    def shoal(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shoal.cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=60)


@pytest.fixture
def servers(tmp_path):
    made: list[Server] = []

    def make(*args: str, **kw) -> Server:
        s = Server(tmp_path, *args, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


@pytest.fixture
def kubectl_cache(tmp_path):
    d = tmp_path / "kubectl-cache"       # empty: discovery comes from this server, never another's cache
    d.mkdir()
    return d


def kubectl(srv: Server, cache: Path, *args: str) -> subprocess.CompletedProcess:
    if not Path(KUBECTL).exists():
        pytest.skip(f"{KUBECTL} is not installed")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(srv.home), "NO_COLOR": "1"}
    return subprocess.run([KUBECTL, "--kubeconfig", str(srv.kubeconfig), "--cache-dir", str(cache), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_default_server_is_https_with_a_kubeconfig_every_client_uses(servers, kubectl_cache, tmp_path):
    srv = servers().start()          # no TLS flag at all
    ca_pem = (srv.data / "tls" / "ca.crt").read_bytes()

    # the kubeconfig: https, the CA, the admin token — in both places it is written
    for path in (srv.kubeconfig, srv.data / "admin.kubeconfig"):
        cfg = yaml.safe_load(path.read_text())
        cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
        assert cluster["server"] == f"https://127.0.0.1:{srv.port}", path
        assert base64.b64decode(cluster["certificate-authority-data"]) == ca_pem, path
        assert user["token"] == (srv.data / "admin-token").read_text().strip(), path
        assert oct(path.stat().st_mode & 0o777) == "0o600", path

    # the serving certificate: signed by that CA, for every local name of this host
    cert = x509.load_pem_x509_certificate((srv.data / "tls" / "server.crt").read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} | set(sans.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "::1", "localhost", socket.gethostname().lower()} <= names, names

    # plain HTTP is not served on the port
    with pytest.raises(Exception):
        with Client(f"http://127.0.0.1:{srv.port}", "x", timeout=3) as c:
            c.request("GET", "/healthz", raw=True)

    # the real kubectl, with the file and nothing else
    r = kubectl(srv, kubectl_cache, "get", "pods")
    assert r.returncode == 0, r.stderr
    assert "No resources found in default namespace." in r.stdout + r.stderr
    r = kubectl(srv, kubectl_cache, "get", "namespace", "default", "-o", "jsonpath={.metadata.name}")
    assert (r.returncode, r.stdout) == (0, "default"), r.stderr

    # the official Python client, loading the same file
    from kubernetes import client as k8s, config as k8s_config
    api_client = k8s_config.new_client_from_config(config_file=str(srv.kubeconfig))
    with api_client:
        core = k8s.CoreV1Api(api_client)
        assert "default" in [n.metadata.name for n in core.list_namespace().items]
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="from-python")))
    # ... and the process-wide configuration most scripts use (reset afterwards: it is global)
    k8s_config.load_kube_config(config_file=str(srv.kubeconfig))
    try:
        assert k8s.CoreV1Api().read_namespace("from-python").metadata.name == "from-python"
    finally:
        k8s.Configuration.set_default(None)

    # shoal's own CLI: $KUBECONFIG, no flags
    r = srv.shoal("get", "namespaces")
    assert r.returncode == 0 and "from-python" in r.stdout, r.stdout + r.stderr

    # the controllers (a `shoal controller` child on the admin kubeconfig) reconcile over TLS
    with Client.from_kubeconfig(srv.kubeconfig) as c:
        c.create("deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "127.0.0.1:5000/web:v1"}]}}}})
        wait_for(lambda: c.list("replicasets", "default")["items"], timeout=30,
                 what="the controller child to create web's ReplicaSet", detail=lambda: srv.log.read_text()[-3000:])


def test_an_agent_joins_the_default_server_with_the_pinned_token(servers, tmp_path):
    srv = servers().start()
    token = (srv.data / "join-token").read_text().strip()
    ca_pem = (srv.data / "tls" / "ca.crt").read_text()
    assert token.startswith("K10")                                    # the token pins the CA
    agent_dir = tmp_path / "agent"
    # the agent is told only HOST:PORT: https is what it assumes
    cmd = [sys.executable, "-m", "shoal.cli", "agent", "--server", f"127.0.0.1:{srv.port}", "--token", token,
           "--node-name", "hollow-1", "--address", "127.0.0.1", "--data-dir", str(agent_dir), "--fake-runtime",
           "--kubelet-port", "0", "--lease-interval", "0.5"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=srv.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with Client.from_kubeconfig(srv.kubeconfig) as admin:
            wait_for(lambda: admin.get("nodes", "hollow-1"), timeout=30, what="the node to register",
                     tolerate=(Exception,))
        creds = json.loads((agent_dir / "credentials.json").read_text())
        assert creds["server"] == f"https://127.0.0.1:{srv.port}" and creds["ca"] == ca_pem
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out


def test_plain_http_is_refused_off_loopback(servers, tmp_path):
    port = free_port()
    for args, message in (
            (["--insecure-http", "--listen", f"0.0.0.0:{port}"],
             "--insecure-http: plain HTTP is only served on a loopback address (127.0.0.1, ::1, localhost), "
             "not on 0.0.0.0"),
            (["--no-tls", "--listen", f"0.0.0.0:{port}"], "--no-tls was replaced by --insecure-http"),
            (["--no-tls"], "--no-tls was replaced by --insecure-http"),
    ):
        srv = servers(*args)
        r = srv.shoal(*srv.argv[3:])
        assert r.returncode == 2, r.stdout + r.stderr
        assert message in r.stderr
        assert not srv.data.exists() and not srv.kubeconfig.exists()
    with socket.socket() as s:              # nothing was left listening on the port
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_insecure_http_on_loopback_is_for_shoal_only_and_the_next_default_start_is_https(servers, kubectl_cache):
    srv = servers("--insecure-http").start()
    cluster = srv.config()["clusters"][0]["cluster"]
    assert cluster["server"] == f"http://127.0.0.1:{srv.port}" and "certificate-authority-data" not in cluster
    assert not (srv.data / "tls").exists()
    r = srv.shoal("get", "namespaces")
    assert r.returncode == 0 and "default" in r.stdout, r.stdout + r.stderr
    # what --insecure-http's help says: kubectl sends no token over plain HTTP
    r = kubectl(srv, kubectl_cache, "get", "pods")
    assert r.returncode != 0 and "You must be logged in to the server" in r.stderr, r.stdout + r.stderr
    srv.stop()

    again = servers(port=srv.port).start()          # same data dir, no flag: HTTPS from now on
    cfg = again.config()["clusters"][0]["cluster"]
    ca_pem = (again.data / "tls" / "ca.crt").read_bytes()
    assert cfg["server"] == f"https://127.0.0.1:{again.port}"
    assert base64.b64decode(cfg["certificate-authority-data"]) == ca_pem
    from shoal.apiserver.tls import ca_hash
    assert (again.data / "join-token").read_text().startswith(f"K10{ca_hash(ca_pem)}::server:")
    r = again.shoal("get", "namespaces")
    assert r.returncode == 0 and "default" in r.stdout, r.stdout + r.stderr
    # a kubeconfig still naming http:// gets told what is wrong, not "is it running?"
    stale = again.home / "stale.kubeconfig"
    stale.write_text(yaml.safe_dump({**again.config(), "clusters": [
        {"name": "shoal", "cluster": {"server": f"http://127.0.0.1:{again.port}"}}]}))
    r = again.shoal("--kubeconfig", str(stale), "get", "namespaces")
    assert r.returncode == 1
    assert "shoal servers serve HTTPS unless started with --insecure-http" in r.stderr, r.stderr
    again.stop()

    third = servers(port=srv.port).start()          # a restart keeps the CA: kubeconfigs stay valid
    assert (third.data / "tls" / "ca.crt").read_bytes() == ca_pem


def test_ipv6_loopback_listen_writes_a_bracketed_https_url(servers, kubectl_cache):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this host")
    port = free_port()
    srv = servers("--listen", f"[::1]:{port}", port=port).start()
    assert srv.config()["clusters"][0]["cluster"]["server"] == f"https://[::1]:{port}"
    r = srv.shoal("get", "namespaces")
    assert r.returncode == 0 and "default" in r.stdout, r.stdout + r.stderr
    r = kubectl(srv, kubectl_cache, "get", "namespace", "default", "-o", "name")
    assert (r.returncode, r.stdout.strip()) == (0, "namespace/default"), r.stderr
