"""Logs across a real 2-host `shoal lab` (issue 17): each host's agent joined from its own
network namespace address, got a serving certificate for exactly that address, and serves its
pods' logs to the API server — in the control plane's namespace — over mutual TLS only.
"""
from __future__ import annotations

import os

import pytest
from cryptography import x509

from shoal.apiserver import tls

from lab_fixtures import LabHandle, is_ready, wait, web_deployment

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, runc, cgroups)"),
]


@pytest.fixture(scope="module")
def lab():
    h = LabHandle.start(2)
    try:
        yield h
    finally:
        h.close()


def test_each_hosts_certificate_names_the_address_it_joined_from(lab):
    for host in lab.plan.hosts:
        cert = x509.load_pem_x509_certificate(open(f"{host.data_dir}/tls/serving.crt", "rb").read())
        assert cert.subject.rfc4514_string() == f"CN=system:node:{host.name}"
        assert tls.cert_sans(cert) == [host.ip], (host.name, tls.cert_sans(cert))
        ca = x509.load_pem_x509_certificate(open(f"{lab.plan.server_dir}/tls/ca.crt", "rb").read())
        cert.verify_directly_issued_by(ca)


def test_logs_of_pods_on_every_host_through_the_api_server(lab):
    lab.client.create("deployments", web_deployment(lab.images["web:v1"], replicas=2, name="logweb"), "default")
    pods = wait("2 ready logweb pods", lambda: (lambda ps: ps if len(ps) == 2 else None)(
        [p for p in lab.pods("app=logweb") if is_ready(p)]), 120)
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["h1", "h2"]
    for p in pods:
        text = "".join(lab.client.logs(p["metadata"]["name"], "default"))
        assert "serving /www on port 8080" in text, (p["spec"]["nodeName"], text)
        cli = lab.shoal("logs", p["metadata"]["name"], check=True)          # the CLI, the same way
        assert "serving /www on port 8080" in cli.stdout
    lab.client.delete("deployments", "logweb", "default")


def test_another_host_cannot_read_an_agents_log_endpoint(lab):
    h1, h2 = lab.plan.hosts[0], lab.plan.hosts[1]
    port = lab.client.get("nodes", h1.name)["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    url = f"https://{h1.ip}:{port}/healthz"
    # no client certificate: no TLS session, no answer
    p = lab.host_exec(h2.name, ["curl", "-sS", "-k", "--max-time", "10", url])
    assert p.returncode != 0 and "ok" not in p.stdout, (p.returncode, p.stdout, p.stderr)
    # h2's own serving certificate (signed by the cluster CA) is not a client certificate
    p = lab.host_exec(h2.name, ["curl", "-sS", "-k", "--max-time", "10", "--cert", f"{h2.data_dir}/tls/serving.crt",
                                "--key", f"{h2.data_dir}/tls/serving.key", url])
    assert p.returncode != 0 and "ok" not in p.stdout, (p.returncode, p.stdout, p.stderr)
    # plain HTTP gets nothing either
    p = lab.host_exec(h2.name, ["curl", "-sS", "--max-time", "10", f"http://{h1.ip}:{port}/healthz"])
    assert "ok" not in p.stdout, (p.returncode, p.stdout)
