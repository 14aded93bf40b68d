"""Issue 4 end to end: the agent on a real registry, real runc and a real pod network.

One cluster per module (`agent_fixtures.E2ECluster`): a loopback `docker-registry`
with the busybox test images, the API server with its controllers, and one
`shoal agent` subprocess (crash back-off 1 s doubling to 4 s) whose bridge, VXLAN
device, nft table, pod namespaces, cgroup parent, runc root and data dir all carry a
random tag. Every test makes its own uniquely named objects and deletes them; the
module finalizer removes everything and fails if anything is left on the host.

Waits poll with generous deadlines; no latency is asserted. The crash-loop test
checks lower bounds of the back-off (each wait ≥ the policy's delay), which load
can only lengthen, never shorten.
"""
from __future__ import annotations

import io
import os
import secrets
import signal
import socket
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from agent_fixtures import (NAMESPACE, E2ECluster, container, cstatus, deployment_manifest, host_address, http_probe,
                            is_ready, pod_manifest, wait_for, waiting_reason)

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with E2ECluster(tmp_path_factory.mktemp("agent-real"), backoff_initial=1.0, backoff_max=4.0) as c:
        yield c             # the cluster's exit asserts nothing is left behind on the host


@pytest.fixture
def http():
    with httpx.Client(trust_env=False, timeout=3) as h:
        yield h


def http_text(http, url: str) -> str | None:
    try:
        r = http.get(url)
        return r.text if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def ns_inode(pid: int, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def restarted(n: int):
    def pred(p):
        cs = cstatus(p)
        return cs.get("restartCount", 0) >= n and "running" in (cs.get("state") or {})
    pred.__name__ = f"restartCount >= {n} and running"
    return pred


def running(p):
    return "running" in (cstatus(p).get("state") or {})


# ----------------------------------------------------------------------------------- tests
def test_deployment_by_digest_runs_three_isolated_pods_answering_http(cluster, http):
    c = cluster
    ref = c.refs["web:v1"]
    assert "@sha256:" in ref
    c.client.create("deployments", deployment_manifest("web3", ref, 3, readinessProbe=http_probe(),
                                                       ports=[{"containerPort": 8080}]), NAMESPACE)
    try:
        def all_ready():
            ps = c.pods_with("app=web3")
            return ps if len(ps) == 3 and all(is_ready(p) for p in ps) else None
        pods = wait_for(all_ready, timeout=90, what="3 web3 pods Ready", detail=c.agent_tail)
        ips = [p["status"]["podIP"] for p in pods]
        assert len(set(ips)) == 3
        net_inodes, pid_inodes, mnt_inodes = set(), set(), set()
        for p in pods:
            cs = cstatus(p, "web")
            assert cs["imageID"] == ref, cs
            assert cs["ready"] is True and cs["restartCount"] == 0 and "running" in cs["state"]
            assert p["status"]["hostIP"] == "127.0.0.1"
            assert http_text(http, f"http://{p['status']['podIP']}:8080/") == "version v1\n"
            st = c.running_container(p, "web")
            assert st is not None and cs["containerID"] == f"runc://{st.id}"
            net_inodes.add(ns_inode(st.pid, "net"))
            pid_inodes.add(ns_inode(st.pid, "pid"))
            mnt_inodes.add(ns_inode(st.pid, "mnt"))
            # the container's network namespace is the pod's named one
            assert os.stat(f"/run/netns/{c.netns_of(p)}").st_ino == ns_inode(st.pid, "net")
            # and its main process is PID 1 in a pid namespace of its own
            nspid = next(l for l in Path(f"/proc/{st.pid}/status").read_text().splitlines() if l.startswith("NSpid:"))
            assert nspid.split()[-1] == "1" and int(nspid.split()[1]) == st.pid
        mine = os.getpid()
        assert len(net_inodes) == len(pid_inodes) == len(mnt_inodes) == 3
        assert not net_inodes & {ns_inode(mine, "net")} and not pid_inodes & {ns_inode(mine, "pid")}
    finally:
        c.client.delete("deployments", "web3", NAMESPACE, propagation_policy="Background")
        wait_for(lambda: not c.pods_with("app=web3"), timeout=60, what="web3 pods gone", detail=c.agent_tail)


def test_killed_main_process_is_restarted_with_its_exit_code(cluster):
    c = cluster
    c.create_pod(pod_manifest("killme", [container("web", c.refs["web:v1"], readinessProbe=http_probe())]))
    try:
        pod = c.wait_pod("killme", is_ready, what="Ready")
        st = c.running_container(pod, "web")
        os.kill(st.pid, signal.SIGKILL)          # from the host, as an OOM killer or an operator would
        pod = c.wait_pod("killme", restarted(1))
        cs = cstatus(pod, "web")
        assert cs["restartCount"] == 1
        term = cs["lastState"]["terminated"]
        assert term["exitCode"] == 137 and term["reason"] == "Error", term
        new = c.wait_pod("killme", is_ready, what="Ready again")
        st2 = c.running_container(new, "web")
        assert st2.pid != st.pid and st2.labels["shoal.io/attempt"] == "1"
    finally:
        c.delete_pod_and_wait("killme")


def test_failing_liveness_probe_kills_and_restarts(cluster):
    c = cluster
    c.create_pod(pod_manifest("flaky", [container(
        "web", c.refs["flaky:v1"], env=[{"name": "FAIL_AFTER", "value": "2"}],
        livenessProbe=http_probe(failureThreshold=2))]))
    try:
        pod = c.wait_pod("flaky", restarted(1), timeout=60)
        cs = cstatus(pod, "web")
        assert "terminated" in cs["lastState"]
        unhealthy = c.wait_events("flaky", "Unhealthy",
                                  lambda e: "Liveness probe failed" in e["message"] and "404" in e["message"])
        assert all(e["type"] == "Warning" for e in unhealthy), unhealthy
        c.wait_events("flaky", "Killing", lambda e: "failed liveness probe" in e["message"])
    finally:
        c.delete_pod_and_wait("flaky")


def test_crashing_image_backs_off_with_growing_delays(cluster):
    c = cluster
    c.create_pod(pod_manifest("crash", [container("crash", c.refs["crash:v1"])]))
    try:
        pod = c.wait_pod("crash", lambda p: p["metadata"].get("uid"), what="created")
        attempts: dict[int, tuple[float, float | None]] = {}
        reasons: set[str] = set()

        def watch():
            for s in c.containers_of(pod):
                a = int(s.labels["shoal.io/attempt"])
                if s.started_at:
                    prev = attempts.get(a, (s.started_at, None))
                    attempts[a] = (s.started_at, s.finished_at or prev[1])
            cur = c.get_pod("crash")
            if cur and waiting_reason(cur):
                reasons.add(waiting_reason(cur))
            return 4 in attempts
        wait_for(watch, timeout=60, interval=0.05, what="attempt 4 of the crash container", detail=c.agent_tail)
        # wait between attempt k's exit and attempt k+1's start: at once, then 1 s doubling (max 4 s)
        waits = [attempts[k + 1][0] - attempts[k][1] for k in range(4)]
        policy = [0.0, 1.0, 2.0, 4.0]
        for w, d in zip(waits, policy):
            assert w >= d - 0.05, (waits, policy)
        assert waits[3] > waits[1], waits
        assert "CrashLoopBackOff" in reasons, reasons
        pod = c.get_pod("crash")
        cs = cstatus(pod, "crash")
        assert cs["restartCount"] >= 3 and cs["lastState"]["terminated"]["exitCode"] == 1
        assert cs["lastState"]["terminated"]["reason"] == "Error"
        c.wait_events("crash", "BackOff", lambda e: "Back-off restarting failed container" in e["message"])
    finally:
        c.delete_pod_and_wait("crash")


def test_wrong_digest_gives_image_pull_backoff_and_runs_nothing(cluster):
    c = cluster
    bad = f"{c.registry.host}/web@sha256:{secrets.token_hex(32)}"
    c.create_pod(pod_manifest("baddigest", [container("web", bad)]))
    try:
        messages: dict[str, str] = {}

        def seen_both():
            p = c.get_pod("baddigest")
            w = ((cstatus(p).get("state") or {}).get("waiting") or {}) if p else {}
            if w.get("reason"):
                messages[w["reason"]] = w.get("message", "")
            return {"ErrImagePull", "ImagePullBackOff"} <= set(messages) and p
        pod = wait_for(seen_both, timeout=60, interval=0.05, what="ErrImagePull then ImagePullBackOff",
                       detail=lambda: f"seen {messages}\n{c.agent_tail()}")
        assert "MANIFEST_UNKNOWN" in messages["ErrImagePull"] and bad in messages["ErrImagePull"], messages
        assert messages["ImagePullBackOff"].startswith(f'Back-off pulling image "{bad}": ErrImagePull: '), messages
        assert c.containers_of(pod) == []
        c.wait_events("baddigest", "Failed", lambda e: bad in e["message"])
        assert not is_ready(pod) and pod["status"]["phase"] == "Pending"
    finally:
        c.delete_pod_and_wait("baddigest")


def test_empty_dir_survives_a_container_restart(cluster):
    c = cluster
    c.create_pod(pod_manifest(
        "scratch", [container("box", c.refs["web:v1"], command=["sh", "-c", "echo boot >> /data/boots; exec sleep 3600"],
                              volumeMounts=[{"name": "scratch", "mountPath": "/data"}])],
        volumes=[{"name": "scratch", "emptyDir": {}}]))
    try:
        pod = c.wait_pod("scratch", running)
        st = c.running_container(pod, "box")
        wait_for(lambda: c.runtime.exec(st.id, ["cat", "/data/boots"], 10) == (0, b"boot\n"), what="first boot line")
        os.kill(st.pid, signal.SIGKILL)
        pod = c.wait_pod("scratch", restarted(1))
        st2 = c.running_container(pod, "box")
        wait_for(lambda: c.runtime.exec(st2.id, ["cat", "/data/boots"], 10) == (0, b"boot\nboot\n"),
                 what="the file of attempt 0 seen by attempt 1")
        on_host = c.agent_dir / "pods" / pod["metadata"]["uid"] / "volumes" / "scratch" / "boots"
        assert on_host.read_text() == "boot\nboot\n"
    finally:
        c.delete_pod_and_wait("scratch")
    assert not on_host.parent.exists()          # an emptyDir lives as long as the pod


def test_host_path_file_outlives_the_pod(cluster):
    c = cluster
    host_dir = c.tmp / f"hostpath-{secrets.token_hex(3)}"
    c.create_pod(pod_manifest(
        "writer", [container("box", c.refs["web:v1"],
                             command=["sh", "-c", "echo written by $(hostname) > /out/hello; exec sleep 3600"],
                             volumeMounts=[{"name": "out", "mountPath": "/out"}])],
        volumes=[{"name": "out", "hostPath": {"path": str(host_dir), "type": "DirectoryOrCreate"}}]))
    try:
        pod = c.wait_pod("writer", running)
        wait_for(lambda: (host_dir / "hello").exists(), what="the container's file on the host")
    finally:
        c.delete_pod_and_wait("writer")
    assert (host_dir / "hello").read_text() == "written by writer\n"
    assert c.leftovers(uid=pod["metadata"]["uid"]) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_host_port_answers_on_the_node_address(cluster, http):
    c = cluster
    port = free_port()
    c.create_pod(pod_manifest("published", [container(
        "web", c.refs["web:v2"], readinessProbe=http_probe(),
        ports=[{"containerPort": 8080, "hostPort": port, "protocol": "TCP"}])]))
    try:
        c.wait_pod("published", is_ready)
        addr = host_address() or pytest.skip("no non-loopback IPv4 address on this host")
        assert wait_for(lambda: http_text(http, f"http://{addr}:{port}/"), timeout=20,
                        what=f"an answer on {addr}:{port}") == "version v2\n"
        assert http_text(http, f"http://127.0.0.1:{port}/") is None  # never the host's loopback (issue 17)
    finally:
        c.delete_pod_and_wait("published")
    assert http_text(http, f"http://{addr}:{port}/") is None      # unpublished with the pod


def test_memory_limit_oom_kill_is_reported(cluster):
    c = cluster
    # `tail` holds the newline-free 100 MiB stream in memory: past the 20 MiB limit
    c.create_pod(pod_manifest("hog", [container(
        "hog", c.refs["web:v1"], command=["sh", "-c", "head -c 100m /dev/zero | tail"],
        resources={"limits": {"memory": "20Mi"}})]))
    try:
        pod = c.wait_pod("hog", lambda p: cstatus(p).get("restartCount", 0) >= 1, what="restarted after OOM")
        term = cstatus(pod)["lastState"]["terminated"]
        assert term["reason"] == "OOMKilled" and term["exitCode"] == 137, term
    finally:
        c.delete_pod_and_wait("hog")


def test_agent_kill_9_adopts_running_containers_and_reports_exits_made_meanwhile(cluster):
    c = cluster
    c.create_pod(pod_manifest("stays", [container("web", c.refs["web:v1"], readinessProbe=http_probe())]))
    c.create_pod(pod_manifest("exits", [container(
        "box", c.refs["web:v1"], command=["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 7"])]))
    try:
        stays = c.wait_pod("stays", is_ready)
        c.wait_pod("exits", running)
        st_stay = c.running_container(stays, "web")
        st_exit = c.running_container(c.get_pod("exits"), "box")
        c.kill_agent()
        # while the agent is down: one container exits with 7
        assert c.runtime.exec(st_exit.id, ["touch", "/tmp/go"], 10)[0] == 0
        wait_for(lambda: (c.runtime.state(st_exit.id) or st_exit).status == "stopped", what="exit while down")
        assert c.runtime.state(st_exit.id).exit_code == 7
        assert c.runtime.state(st_stay.id).pid == st_stay.pid          # monitors outlived the agent
        c.start_agent()
        pod = c.wait_pod("exits", lambda p: cstatus(p).get("restartCount") == 1
                         and (cstatus(p).get("lastState") or {}).get("terminated"), what="the exit reported")
        assert cstatus(pod)["lastState"]["terminated"]["exitCode"] == 7
        # give the new agent time to have acted on "stays" if it were going to (relist 0.5 s,
        # probes 1 s): it is Ready again, and still the same process, never restarted
        c.wait_pod("stays", lambda p: is_ready(p) and p["metadata"]["resourceVersion"] != stays["metadata"][
            "resourceVersion"], timeout=30, what="re-reported by the new agent")
        time.sleep(2)
        now = c.get_pod("stays")
        cs = cstatus(now, "web")
        assert cs["restartCount"] == 0 and is_ready(now)
        assert cs["containerID"] == f"runc://{st_stay.id}"
        st = c.runtime.state(st_stay.id)
        assert st.status == "running" and st.pid == st_stay.pid
        assert [s.id for s in c.containers_of(now)] == [st_stay.id]
    finally:
        if c.agent is None or c.agent.poll() is not None:
            c.start_agent()
        c.delete_pod_and_wait("stays")
        c.delete_pod_and_wait("exits")


def test_deleting_the_deployment_sigterms_and_leaves_nothing(cluster):
    c = cluster
    markers = c.tmp / f"markers-{secrets.token_hex(3)}"
    d = deployment_manifest("sleepers", c.refs["sleeper:v1"], 2,
                            command=["sh", "-c", "MARKER=/marker/$(hostname) exec /bin/sleeper-entrypoint"],
                            volumeMounts=[{"name": "marker", "mountPath": "/marker"}])
    d["spec"]["template"]["spec"]["volumes"] = [{"name": "marker", "hostPath": {"path": str(markers),
                                                                                "type": "DirectoryOrCreate"}}]
    c.client.create("deployments", d, NAMESPACE)
    pods = wait_for(lambda: (lambda ps: ps if len(ps) == 2 and all(running(p) for p in ps) else None)(
        c.pods_with("app=sleepers")), what="2 sleepers running", detail=c.agent_tail)
    for p in pods:     # the trap is installed before the first sleep: wait for the greeting
        wait_for(lambda: "sleeping" in _log(c, p), what=f"{p['metadata']['name']} sleeping")
    c.client.delete("deployments", "sleepers", NAMESPACE, propagation_policy="Background")
    wait_for(lambda: not c.pods_with("app=sleepers"), what="sleeper pods gone", detail=c.agent_tail)
    for p in pods:
        name = p["metadata"]["name"]
        assert (markers / name).read_text() == "SIGTERM\n"
        assert c.leftovers(uid=p["metadata"]["uid"]) == []
        assert not (c.agent_dir / "pods" / p["metadata"]["uid"]).exists()


def _log(c, pod) -> str:
    from shoal.agent.runtime.logs import read_log
    path = c.agent_dir / "pods" / pod["metadata"]["uid"] / "logs" / cstatus(pod)["name"] / "0.log"
    try:
        return b"".join(read_log(str(path))).decode(errors="replace")
    except FileNotFoundError:
        return ""


# ----------------------------------------------------------------------------------- unsafe layers
def _evil_layer(kind: str, target_dir: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(name: str, type_=tarfile.REGTYPE, data: bytes = b"", linkname: str = ""):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.size, ti.linkname = type_, 0o644, 1_700_000_000, len(data), linkname
            tf.addfile(ti, io.BytesIO(data) if data else None)
        add("ok.txt", data=b"harmless\n")
        if kind == "dotdot":
            add("../" * 12 + str(target_dir).lstrip("/") + "/dotdot-pwned", data=b"escaped\n")
        else:     # an absolute symlink, then a file written through it
            add("evil", tarfile.SYMTYPE, linkname=str(target_dir))
            add("evil/symlink-pwned", data=b"escaped\n")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["dotdot", "abs-symlink"])
def test_escaping_layer_is_rejected_and_writes_nothing_outside(cluster, kind):
    from shoal.testkit.images import _digest, gzip_bytes, push_image, write_layout
    c = cluster
    target = c.tmp / f"escape-target-{kind}"
    target.mkdir()
    base = c.images["web:v1"]
    base_gz = (base.layout / "blobs" / "sha256" / base.layers[0]["digest"][7:]).read_bytes()
    evil_tar = _evil_layer(kind, target)
    evil_gz = gzip_bytes(evil_tar)
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": [base.layers[0]["diff_id"], _digest(evil_tar)]}}
    layout = c.tmp / f"evil-{kind}"
    write_layout(layout, tag="v1", full_name=f"docker.io/library/evil-{kind}:v1", config=config,
                 layer_blobs=[base_gz, evil_gz])
    digest = push_image(layout, c.registry.url, f"evil-{kind}:v1")
    ref = c.registry.ref(f"evil-{kind}@{digest}")
    name = f"evil-{kind}"
    c.create_pod(pod_manifest(name, [container("box", ref)]))
    try:
        pod = c.wait_pod(name, lambda p: waiting_reason(p) in ("ErrImagePull", "ImagePullBackOff"),
                         what="pull rejected")
        msg = cstatus(pod)["state"]["waiting"].get("message", "")
        assert _digest(evil_gz) in msg or _digest(evil_tar) in msg, msg      # names the layer
        assert c.containers_of(pod) == []
    finally:
        c.delete_pod_and_wait(name)
    assert list(target.iterdir()) == []
    assert not any(p.name.endswith("-pwned") for p in Path("/").iterdir())
    store = c.agent_dir / "images"
    assert not (store / "layers" / "sha256" / _digest(evil_tar)[7:]).exists()
    assert not any(p.name.endswith("-pwned") for p in store.rglob("*"))
    assert list((store / "tmp").iterdir()) == []


def test_tampered_blob_is_rejected_by_digest(cluster):
    """A registry serving a layer whose bytes do not match its digest: ErrImagePull naming both
    digests, and nothing of it kept in the store."""
    from shoal.testkit.images import _digest, gzip_bytes, push_image, write_layout
    c = cluster
    base = c.images["web:v1"]
    base_gz = (base.layout / "blobs" / "sha256" / base.layers[0]["digest"][7:]).read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        data = secrets.token_hex(16).encode()         # a layer no other test shares
        ti = tarfile.TarInfo("unique.txt")
        ti.size, ti.mtime = len(data), 1_700_000_000
        tf.addfile(ti, io.BytesIO(data))
    layer_tar = buf.getvalue()
    layer_gz = gzip_bytes(layer_tar)
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sleep", "3600"]},
              "rootfs": {"type": "layers", "diff_ids": [base.layers[0]["diff_id"], _digest(layer_tar)]}}
    layout = c.tmp / "tampered"
    write_layout(layout, tag="v1", full_name="docker.io/library/tampered:v1", config=config,
                 layer_blobs=[base_gz, layer_gz])
    ref = c.registry.ref(f"tampered@{push_image(layout, c.registry.url, 'tampered:v1')}")
    blob = c.registry.blob_path(_digest(layer_gz))
    evil = gzip_bytes(layer_tar.replace(b"unique.txt", b"swapped.txt"))
    blob.write_bytes(evil)
    c.create_pod(pod_manifest("tampered", [container("box", ref)]))
    try:
        pod = c.wait_pod("tampered", lambda p: waiting_reason(p) in ("ErrImagePull", "ImagePullBackOff"),
                         what="pull rejected")
        msg = cstatus(pod)["state"]["waiting"]["message"]
        assert _digest(layer_gz) in msg and ("mismatch" in msg or "size" in msg), msg
        assert c.containers_of(pod) == []
    finally:
        c.delete_pod_and_wait("tampered")
    store = c.agent_dir / "images"
    assert not (store / "blobs" / "sha256" / _digest(layer_gz)[7:]).exists()
    assert not (store / "blobs" / "sha256" / _digest(evil)[7:]).exists()
    assert not (store / "layers" / "sha256" / _digest(layer_tar)[7:]).exists()
