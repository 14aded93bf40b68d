"""List pagination as Kubernetes does it (apiserver.listing, docs/api.md "Lists"): `limit` and
`continue` on every list, namespaced and of all namespaces; every page read at the first
page's revision; selectors applied before the limit; remainingItemCount; Kubernetes' errors
for bad tokens, compacted revisions and ListOptions; Tables; a watch from a paged list's
resourceVersion; the official Python client's `limit`/`_continue` and real kubectl's
`--chunk-size`, both over TLS."""
from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import threading

import httpx
import pytest

from shoal.testkit.apiserver import start_test_server

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def pod(name: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}


def get(api, path: str, **params) -> httpx.Response:
    return httpx.get(api.url + path, params={k: v for k, v in params.items() if v is not None},
                     headers={"Authorization": f"Bearer {api.admin_token}", **params.pop("headers", {})},
                     timeout=30)


def pages(api, path: str, limit: int, **params) -> list[dict]:
    """Every page of a list (the bodies), following `continue`."""
    out, token = [], None
    while True:
        r = get(api, path, limit=str(limit), **({"continue": token} if token else {}), **params)
        assert r.status_code == 200, r.text
        body = r.json()
        out.append(body)
        token = body["metadata"].get("continue")
        if not token:
            return out


def names(body: dict) -> list[str]:
    return [i["metadata"]["name"] for i in body["items"]]


@pytest.fixture
def filled(api):
    c = api.client()
    for ns in ("team-a", "team-b"):
        c.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for i in range(5):
            c.create("pods", pod(f"p{i}", {"app": "web", "parity": "odd" if i % 2 else "even"}), namespace=ns)
    return c


def test_pages_of_a_namespace_and_of_all_namespaces(api, filled):
    got = pages(api, "/api/v1/namespaces/team-a/pods", 2)
    assert [names(b) for b in got] == [["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert [b["metadata"].get("remainingItemCount") for b in got] == [3, 1, None]
    assert len({b["metadata"]["resourceVersion"] for b in got}) == 1
    assert "continue" not in got[-1]["metadata"]
    every = pages(api, "/api/v1/pods", 3)
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for b in every for i in b["items"]] == \
        [(ns, f"p{i}") for ns in ("team-a", "team-b") for i in range(5)]
    # no limit (or 0, or a negative one): everything at once, as before
    for limit in (None, "0", "-3"):
        body = get(api, "/api/v1/pods", limit=limit).json()
        assert len(body["items"]) == 10 and set(body["metadata"]) == {"resourceVersion"}
    # cluster-scoped kinds page too
    nss = pages(api, "/api/v1/namespaces", 1)
    assert [n for b in nss for n in names(b)] == ["default", "kube-node-lease", "kube-public", "kube-system",
                                                   "team-a", "team-b"]


def test_every_page_is_read_at_the_first_pages_revision(api, filled):
    c = filled
    first = get(api, "/api/v1/namespaces/team-a/pods", limit="2").json()
    rv = first["metadata"]["resourceVersion"]
    # between the pages: one deleted, one changed, one created after the next page's start
    c.delete("pods", "p3", "team-a")
    p2 = c.get("pods", "p2", "team-a")
    p2["metadata"]["labels"]["changed"] = "yes"
    c.update("pods", p2)
    c.create("pods", pod("p2b"), namespace="team-a")
    rest = []
    token = first["metadata"]["continue"]
    while token:
        body = get(api, "/api/v1/namespaces/team-a/pods", limit="2", **{"continue": token}).json()
        assert body["metadata"]["resourceVersion"] == rv
        rest += body["items"]
        token = body["metadata"].get("continue")
    assert [i["metadata"]["name"] for i in rest] == ["p2", "p3", "p4"]       # p3 as it was, no p2b
    assert "changed" not in rest[0]["metadata"]["labels"]
    assert int(rest[0]["metadata"]["resourceVersion"]) <= int(rv)
    # a watch from the list's resourceVersion sees exactly what happened since
    events = [(e["type"], e["object"]["metadata"]["name"])
              for e in c.watch("pods", "team-a", resource_version=rv, timeout_seconds=1)]
    assert events == [("DELETED", "p3"), ("MODIFIED", "p2"), ("ADDED", "p2b")]


def test_selectors_apply_before_the_limit(api, filled):
    got = pages(api, "/api/v1/pods", 2, labelSelector="parity=odd")
    # full pages; keys follow team-b/p3 (p4, not matching), so as in Kubernetes a last, empty page
    assert [[(i["metadata"]["namespace"], i["metadata"]["name"]) for i in b["items"]] for b in got] == \
        [[("team-a", "p1"), ("team-a", "p3")], [("team-b", "p1"), ("team-b", "p3")], []]
    # remainingItemCount is unknown with selectors (Kubernetes leaves it out)
    assert all("remainingItemCount" not in b["metadata"] for b in got)
    got = pages(api, "/api/v1/namespaces/team-b/pods", 1, fieldSelector="metadata.name=p3")
    assert [names(b) for b in got] == [["p3"], []]
    got = pages(api, "/api/v1/namespaces/team-b/pods", 1, fieldSelector="metadata.name=p4")
    assert [names(b) for b in got] == [["p4"]]          # nothing after it: no continue


def test_a_table_page_carries_the_list_metadata(api, filled):
    r = get(api, "/api/v1/namespaces/team-a/pods", limit="2", headers={"Accept": TABLE})
    t = r.json()
    assert r.headers["content-type"].startswith("application/json;as=Table")
    assert t["kind"] == "Table" and [row["cells"][0] for row in t["rows"]] == ["p0", "p1"]
    assert t["metadata"]["remainingItemCount"] == 3 and t["metadata"]["continue"]
    assert list(t) == ["kind", "apiVersion", "metadata", "columnDefinitions", "rows"]
    r2 = get(api, "/api/v1/namespaces/team-a/pods", limit="10", headers={"Accept": TABLE},
             **{"continue": t["metadata"]["continue"]})
    assert [row["cells"][0] for row in r2.json()["rows"]] == ["p2", "p3", "p4"]
    assert "continue" not in r2.json()["metadata"]


def _token(**fields) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()


def test_bad_tokens_and_list_options_answer_as_kubernetes(api, filled):
    for token in ("garbage!", _token(v="other/v1", rv=3, start="x\x00"), _token(v="meta.k8s.io/v1", rv=0,
                  start="x"), _token(v="meta.k8s.io/v1", rv=5, start=""), _token(v="meta.k8s.io/v1", rv=5,
                  start="../../secrets/")):
        r = get(api, "/api/v1/namespaces/team-a/pods", limit="2", **{"continue": token})
        assert r.status_code == 400 and r.json()["message"].startswith(
            "invalid continue token: continue key is not valid"), (token, r.text)
    first = get(api, "/api/v1/pods", limit="1").json()
    r = get(api, "/api/v1/pods", limit="1", resourceVersion="5", **{"continue": first["metadata"]["continue"]})
    assert r.status_code == 400 and r.json()["message"] == \
        "specifying resource version is not allowed when using continue"
    r = get(api, "/api/v1/pods", limit="x")
    assert r.status_code == 400 and "limit" in r.json()["message"]
    r = get(api, "/api/v1/pods", resourceVersionMatch="Exact")
    assert r.status_code == 422 and r.json()["message"] == (
        'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is '
        'forbidden unless resourceVersion is provided')
    r = get(api, "/api/v1/pods", resourceVersion="0", resourceVersionMatch="Exact")
    assert r.status_code == 422 and 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"' in r.json()["message"]
    r = get(api, "/api/v1/pods", resourceVersion="3", resourceVersionMatch="Newest")
    assert r.status_code == 422 and "Unsupported value" in r.json()["message"]
    # a revision not reached yet: Kubernetes' 504 Timeout, retry after a second
    r = get(api, "/api/v1/pods", resourceVersion=str(10**9))
    assert r.status_code == 504 and r.headers["retry-after"] == "1"
    assert r.json()["reason"] == "Timeout" and r.json()["details"]["causes"] == [
        {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]


def test_exact_resource_version_and_compaction(api, filled):
    c = filled
    rv = get(api, "/api/v1/namespaces/team-a/pods").json()["metadata"]["resourceVersion"]
    c.delete("pods", "p0", "team-a")
    assert names(get(api, "/api/v1/namespaces/team-a/pods", resourceVersion=rv,
                     resourceVersionMatch="Exact").json())[0] == "p0"
    # NotOlderThan (the default) of a past revision: the newest
    assert "p0" not in names(get(api, "/api/v1/namespaces/team-a/pods", resourceVersion=rv).json())
    token = get(api, "/api/v1/namespaces/team-a/pods", limit="2").json()["metadata"]["continue"]
    for i in range(3):
        c.create("pods", pod(f"later-{i}"), namespace="team-a")
    api.store.compact(revision=api.store.current_revision() - 1)
    r = get(api, "/api/v1/namespaces/team-a/pods", resourceVersion=rv, resourceVersionMatch="Exact")
    assert r.status_code == 410 and r.json()["message"] == "The resourceVersion for the provided list is too old."
    r = get(api, "/api/v1/namespaces/team-a/pods", limit="2", **{"continue": token})
    assert r.status_code == 410 and r.json()["reason"] == "Expired"
    body = r.json()
    assert body["message"].startswith("The provided continue parameter is too old to display a consistent list")
    # the Status's token goes on at the newest revision from the same key
    fresh = json.loads(base64.urlsafe_b64decode(body["metadata"]["continue"] + "=="))
    assert fresh["rv"] == -1 and fresh["start"] == "p2\x00"
    rest = get(api, "/api/v1/namespaces/team-a/pods", limit="10", **{"continue": body["metadata"]["continue"]})
    assert names(rest.json()) == ["p3", "p4"]          # the first page was p1, p2 (p0 was deleted)
    assert rest.json()["metadata"]["resourceVersion"] == str(api.store.current_revision())


def test_a_list_without_limit_is_consistent_while_it_streams(api):
    """Writes during a long unpaginated list do not show in it: its later chunks are read at
    the first chunk's revision."""
    from shoal.apiserver import listing
    c = api.client()
    n = listing.CHUNK * 2 + 10
    for i in range(n):
        api.store.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": f"cm-{i:04d}", "namespace": "default",
                                                     "uid": f"u{i}", "creationTimestamp": "2025-01-01T00:00:00Z"}})
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set():
            c.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": f"zz-{i:04d}", "namespace": "default"}})
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(3):
            body = get(api, "/api/v1/namespaces/default/configmaps").json()
            rv = int(body["metadata"]["resourceVersion"])
            assert all(int(i["metadata"]["resourceVersion"]) <= rv for i in body["items"])
            exact = get(api, "/api/v1/namespaces/default/configmaps", resourceVersion=str(rv),
                        resourceVersionMatch="Exact").json()
            assert names(body) == names(exact)
    finally:
        stop.set()
        t.join()


# --- real clients over TLS -------------------------------------------------------------------

@pytest.fixture
def tls_api(tmp_path):
    srv = start_test_server(tmp_path, tls=True)
    try:
        c = srv.client()
        for i in range(5):
            c.create("pods", pod(f"web-{i}"), namespace="default")
        yield srv
    finally:
        srv.stop()


def test_python_client_limit_and_continue(tls_api):
    kubernetes = pytest.importorskip("kubernetes")
    from kubernetes import client as k8s, config as k8s_config
    with k8s_config.new_client_from_config(config_file=str(tls_api.kubeconfig)) as ac:
        core = k8s.CoreV1Api(ac)
        got, token, rvs = [], None, set()
        while True:
            kw = {"_continue": token} if token else {}
            lst = core.list_namespaced_pod("default", limit=2, **kw)
            got.append([p.metadata.name for p in lst.items])
            rvs.add(lst.metadata.resource_version)
            token = lst.metadata._continue
            if not token:
                break
            assert lst.metadata.remaining_item_count == 5 - sum(map(len, got))
        assert got == [["web-0", "web-1"], ["web-2", "web-3"], ["web-4"]] and len(rvs) == 1
        every = core.list_pod_for_all_namespaces(limit=4)
        assert len(every.items) == 4 and every.metadata.remaining_item_count == 1
        with pytest.raises(kubernetes.client.ApiException) as e:
            core.list_namespaced_pod("default", limit=2, _continue="not-a-token")
        assert e.value.status == 400


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (the base image has it)")
def test_kubectl_chunk_size_pages(tls_api, tmp_path):
    def kubectl(*args):
        r = subprocess.run(["kubectl", "--kubeconfig", str(tls_api.kubeconfig), "--cache-dir",
                            str(tmp_path / "cache"), *args], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "KUBECONFIG": str(tls_api.kubeconfig)})
        assert r.returncode == 0, r.stderr
        return r
    r = kubectl("get", "pods", "--chunk-size=2", "-v=6")
    rows = [line.split()[0] for line in r.stdout.strip().splitlines()]
    assert rows == ["NAME", "web-0", "web-1", "web-2", "web-3", "web-4"]
    asked = [line for line in r.stderr.splitlines() if "/api/v1/namespaces/default/pods?" in line]
    assert len(asked) == 3 and all("limit=2" in line for line in asked)
    assert sum("continue=" in line for line in asked) == 2
    r = kubectl("get", "pods", "-A", "--chunk-size=2", "-o", "name")
    assert r.stdout.split() == [f"pod/web-{i}" for i in range(5)]
