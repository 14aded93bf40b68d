"""The node agent against a real API server, on the scripted fakes (no root)."""
import time

import pytest

from shoal.agent.fakes import FakeNetwork, FakeRuntime
from shoal.agent.plan import LABEL_POD_UID
from shoal.machinery.api.times import parse_time

from agent_harness import AgentHarness, wait

pytestmark = pytest.mark.integration


@pytest.fixture
def h(tmp_path):
    with AgentHarness(tmp_path) as harness:
        yield harness


def running(h, name, container="web"):
    cs = h.cstatus(name, container)
    return cs if "running" in (cs.get("state") or {}) else None


# ---------------------------------------------------------------------------- node and lease
def test_node_registers_with_capacity_labels_and_lease_renews(h):
    n = h.start_agent("node-1")
    node = h.admin.get("nodes", "node-1")
    md, st = node["metadata"], node["status"]
    assert md["labels"]["kubernetes.io/hostname"] == "node-1"
    assert md["labels"]["kubernetes.io/os"] == "linux" and md["labels"]["kubernetes.io/arch"] == "amd64"
    assert md["annotations"]["shoal.io/underlay-ip"] == "127.0.0.1"
    assert md["annotations"]["shoal.io/vtep-mac"].startswith("02:")
    assert int(st["capacity"]["cpu"]) >= 1 and st["capacity"]["memory"].endswith("Ki")
    assert st["capacity"]["pods"] == "110" and st["allocatable"] == st["capacity"]
    assert {"type": "InternalIP", "address": "127.0.0.1"} in st["addresses"]
    assert {"type": "Hostname", "address": "node-1"} in st["addresses"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    assert st["nodeInfo"]["kubeletVersion"].startswith("shoal-")
    assert st["daemonEndpoints"]["kubeletEndpoint"]["Port"] == n.agent.logserver.port

    first = h.admin.get("leases", "node-1", "kube-node-lease")["spec"]
    assert first["holderIdentity"] == "node-1" and first["leaseDurationSeconds"] == 40
    assert first["renewTime"].endswith("Z") and len(first["renewTime"].split(".")[1]) == 7   # micro + Z
    wait("the lease to be renewed", lambda: parse_time(
        h.admin.get("leases", "node-1", "kube-node-lease")["spec"]["renewTime"]) > parse_time(first["renewTime"]))


def test_pod_cidr_gates_sandboxes_and_peers_are_synced(h):
    n1 = h.start_agent("node-1")
    h.create_pod("early", "node-1")
    # no CIDR yet: the pod waits in ContainerCreating and nothing runs
    wait("ContainerCreating", lambda: (h.cstatus("early").get("state") or {}).get("waiting", {}).get("reason")
         == "ContainerCreating")
    assert n1.runtime.list() == [] and not n1.agent.network_ready
    h.assign_cidr("node-1", "10.244.7.0/24")
    cs = wait("the pod to run", lambda: running(h, "early"))
    assert cs["ready"] is True
    assert h.pod("early")["status"]["podIP"].startswith("10.244.7.")
    assert ("ensure_node", "10.244.7.0/24") in n1.network.calls

    n2 = h.start_agent("node-2", address="127.0.0.2")
    h.assign_cidr("node-2", "10.244.8.0/24")
    peers = wait("node-1 to see node-2 as a peer", lambda: n1.network.peers)
    assert [(p.node, p.underlay_ip, p.pod_cidr) for p in peers] == [("node-2", "127.0.0.2", "10.244.8.0/24")]
    assert peers[0].vtep_mac == h.admin.get("nodes", "node-2")["metadata"]["annotations"]["shoal.io/vtep-mac"]
    wait("node-2 to see node-1", lambda: [p.node for p in n2.network.peers] == ["node-1"])


# ---------------------------------------------------------------------------- running pods
def test_pod_goes_running_ready_with_ip_events_and_logs(h):
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    h.create_pod("web", "node-1", containers=[{
        "name": "web", "image": "reg/web:v1", "command": ["/bin/httpd"], "args": ["-f", "-p", "$(PORT)"],
        "env": [{"name": "PORT", "value": "8080"}],
        "readinessProbe": {"httpGet": {"port": 8080, "path": "/"}, "periodSeconds": 1}}])
    wait("Ready", lambda: h.pod("web")["status"].get("phase") == "Running" and h.cstatus("web").get("ready"))
    st = h.pod("web")["status"]
    assert st["podIP"].startswith("10.244.1.") and st["hostIP"] == "127.0.0.1"
    cs = st["containerStatuses"][0]
    assert cs["restartCount"] == 0 and cs["containerID"].startswith("runc://")
    assert cs["imageID"].startswith("reg/web@sha256:")
    cid = cs["containerID"].removeprefix("runc://")
    cfg = n.runtime.config(cid)
    assert cfg.argv == ["/bin/httpd", "-f", "-p", "8080"] and "PORT=8080" in cfg.env
    assert cfg.netns_path and cfg.log_path.endswith("/logs/web/0.log")
    reasons = [r for _, r, _ in wait("events", lambda: h.events("web") if len(h.events("web")) >= 4 else None)]
    assert reasons[:4] == ["Pulling", "Pulled", "Created", "Started"]
    assert "".join(h.admin.logs("web", "default")) == "started web attempt 0: /bin/httpd -f -p 8080\n"


def test_crash_restarts_with_restart_count_last_state_and_previous_log(h):
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    h.create_pod("web", "node-1")
    cs0 = wait("running", lambda: running(h, "web"))
    n.runtime.crash(cs0["containerID"].removeprefix("runc://"), exit_code=3)
    cs = wait("restart", lambda: (c := running(h, "web")) and c["restartCount"] == 1 and c)
    t = cs["lastState"]["terminated"]
    assert t["exitCode"] == 3 and t["reason"] == "Error" and t["containerID"] == cs0["containerID"]
    assert cs["containerID"] != cs0["containerID"]
    assert "".join(h.admin.logs("web", "default", previous=True)) == "started web attempt 0: /bin/sh\n"
    assert "".join(h.admin.logs("web", "default")) == "started web attempt 1: /bin/sh\n"


def test_crash_loop_back_off_grows(h):
    import re
    h.start_agent("node-1", backoff_initial=0.3, backoff_max=2.4)
    h.assign_cidr("node-1")
    h.create_pod("crash", "node-1", annotations={"shoal.io/fake-exit-after-seconds": "0",
                                                 "shoal.io/fake-exit-code": "2"})
    delays = []          # back-off delays announced in the waiting state, in the order seen

    def seen_enough():
        cs = h.cstatus("crash")
        msg = (cs.get("state") or {}).get("waiting", {}).get("message", "")
        m = re.match(r"back-off ([\d.]+)(ms|s) restarting failed container=web pod=crash_default\(", msg)
        if m:
            d = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
            if not delays or delays[-1] != d:
                delays.append(d)
        return cs.get("restartCount", 0) >= 5 and len(delays) >= 3 and cs

    cs = wait("five restarts in CrashLoopBackOff", seen_enough, timeout=60, interval=0.02)
    assert cs["lastState"]["terminated"]["exitCode"] == 2
    assert delays == sorted(delays) and delays[-1] > delays[0], delays
    assert set(delays) <= {0.3, 0.6, 1.2, 2.4}, delays
    evs = h.events("crash")
    assert any(r == "BackOff" and m.startswith("Back-off restarting failed container web in pod crash_default(")
               for _, r, m in evs)
    assert h.pod("crash")["status"]["phase"] == "Running"


def test_restart_policy_never_leaves_pod_failed(h):
    h.start_agent("node-1")
    h.assign_cidr("node-1")
    h.create_pod("job", "node-1", restartPolicy="Never",
                 annotations={"shoal.io/fake-exit-after-seconds": "0", "shoal.io/fake-exit-code": "1"})
    wait("Failed", lambda: h.pod("job")["status"].get("phase") == "Failed")
    t = h.cstatus("job")["state"]["terminated"]
    assert t["exitCode"] == 1 and t["reason"] == "Error" and h.cstatus("job")["restartCount"] == 0


def test_oom_killed_reported(h):
    h.start_agent("node-1")
    h.assign_cidr("node-1")
    h.create_pod("hog", "node-1", restartPolicy="Never",
                 annotations={"shoal.io/fake-exit-after-seconds": "0", "shoal.io/fake-oom": "true"})
    wait("Failed", lambda: h.pod("hog")["status"].get("phase") == "Failed")
    t = h.cstatus("hog")["state"]["terminated"]
    assert (t["exitCode"], t["reason"]) == (137, "OOMKilled")


def test_liveness_failure_kills_and_restarts(h):
    h.start_agent("node-1")
    h.assign_cidr("node-1")
    h.create_pod("sick", "node-1", annotations={"shoal.io/fake-unhealthy-after-seconds": "0.5"}, containers=[{
        "name": "web", "image": "reg/web:v1",
        "livenessProbe": {"httpGet": {"port": 8080, "path": "/healthz"}, "periodSeconds": 1, "failureThreshold": 2}}])
    cs = wait("restart by liveness", lambda: (c := h.cstatus("sick")) and c.get("restartCount", 0) >= 1 and c,
              timeout=60)
    assert cs["lastState"]["terminated"]["exitCode"] == 143      # SIGTERM
    evs = wait("events", lambda: (e := h.events("sick")) and any(r == "Killing" for _, r, _ in e) and e)
    assert ("Warning", "Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 500") in evs
    assert ("Normal", "Killing", "Container web failed liveness probe, will be restarted") in evs


def test_missing_image_err_image_pull_then_back_off(h):
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    h.create_pod("bad", "node-1", containers=[{"name": "web", "image": "reg/missing-app:v1"}])
    seen = set()

    def reasons():
        r = (h.cstatus("bad").get("state") or {}).get("waiting", {}).get("reason")
        if r:
            seen.add(r)
        return "ImagePullBackOff" in seen and seen
    wait("ImagePullBackOff", reasons)
    # ErrImagePull first, for a moment of its own (the agent's next pass shows the back-off);
    # ContainerCreating may come before it, as in Kubernetes, when a pass reports its sandbox
    # before the pull has failed (a poll sees it on a loaded machine)
    assert seen - {"ContainerCreating"} == {"ErrImagePull", "ImagePullBackOff"}, seen
    assert n.runtime.list() == []
    evs = wait("pull events", lambda: (e := h.events("bad")) and any(r == "BackOff" for _, r, _ in e) and e)
    assert any(r == "Failed" and 'Failed to pull image "reg/missing-app:v1"' in m for _, r, m in evs)
    assert ("Normal", "BackOff", 'Back-off pulling image "reg/missing-app:v1"') in evs


def test_own_status_writes_do_not_wake_the_pod_worker(h):
    """The agent's status write comes back through its pod watch; like kubelet it does not sync
    the pod again for that, only for changes made by others."""
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    h.create_pod("quiet", "node-1")
    wait("Running", lambda: h.cstatus("quiet").get("ready"))
    uid = h.pod("quiet")["metadata"]["uid"]
    synced = []
    real = n.agent.dispatcher._sync
    n.agent.dispatcher._sync = lambda u: (synced.append((time.monotonic(), u)), real(u))[1]

    def passes():
        return [u for _, u in synced].count(uid)

    # settle: the start's own follow-ups (the relist seeing the container run) are done
    since = time.monotonic()
    wait("no pass for half a second",
         lambda: time.monotonic() - max([since] + [t for t, _ in synced]) > 0.5, timeout=10)
    del synced[:]
    # a status-only change by someone else is acted on (the worker writes its own view back) ...
    pod = h.pod("quiet")
    pod["status"]["conditions"] = [dict(c, status="False") if c["type"] == "Ready" else c
                                   for c in pod["status"]["conditions"]]
    h.admin.update_status("pods", pod)
    wait("the agent's own Ready condition back", lambda: h.cstatus("quiet").get("ready") and
         all(c["status"] == "True" for c in h.pod("quiet")["status"]["conditions"] if c["type"] == "Ready"))
    # ... in one pass; the echo of the write that pass made gets none
    time.sleep(1.0)
    n_after_fix = passes()
    assert n_after_fix == 1, synced
    # a change to the pod itself is
    h.admin.patch("pods", "quiet", {"metadata": {"labels": {"touched": "yes"}}}, "default")
    wait("a pass after the label change", lambda: passes() > n_after_fix)


def test_start_error_reported_and_retried(h):
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    h.create_pod("nostart", "node-1", annotations={"shoal.io/fake-start-error": "exec: no such file"})
    cs = wait("StartError", lambda: (c := h.cstatus("nostart")) and c.get("restartCount", 0) >= 1 and c)
    t = (cs["lastState"] or cs["state"]).get("terminated") or cs["state"].get("terminated")
    assert t["reason"] == "StartError" and "exec: no such file" in t["message"] and t["exitCode"] == 128
    assert n.runtime.list() == [] or all(s.status != "running" for s in n.runtime.list())


class _SlowFlakyNetwork(FakeNetwork):
    """setup_pod takes a while and fails `failures` times first; records when it ends."""

    def __init__(self, failures: int = 0):
        super().__init__()
        self.failures = failures
        self.done_at: list[float] = []

    def setup_pod(self, pod_uid, pod_name):
        time.sleep(0.2)
        if self.failures > 0:
            self.failures -= 1
            raise OSError(f"netlink: no room for pod {pod_name}")
        pn = super().setup_pod(pod_uid, pod_name)
        self.done_at.append(time.monotonic())
        return pn


class _TimedRuntime(FakeRuntime):
    def __init__(self):
        super().__init__()
        self.created_at: list[float] = []

    def create(self, cfg):
        self.created_at.append(time.monotonic())
        super().create(cfg)


def test_container_runs_only_after_its_pod_network_is_made(h):
    net, rt = _SlowFlakyNetwork(), _TimedRuntime()
    h.start_agent("node-1", network=net, runtime=rt)
    h.assign_cidr("node-1")
    h.create_pod("web", "node-1")
    wait("running", lambda: running(h, "web"))
    # the network is made beside the container's preparation, but the container itself
    # is created only once it is done
    assert len(net.done_at) == 1 and len(rt.created_at) == 1
    assert rt.created_at[0] >= net.done_at[0]
    assert h.pod("web")["status"]["podIP"] == net.setup_pod(h.pod("web")["metadata"]["uid"], "web").ip


def test_pod_network_failure_is_reported_and_retried_without_a_container(h):
    net, rt = _SlowFlakyNetwork(failures=1), _TimedRuntime()
    h.start_agent("node-1", network=net, runtime=rt, sandbox_retry=0.5)
    h.assign_cidr("node-1")
    h.create_pod("web", "node-1")
    wait("the sandbox failure event", lambda: any(r == "FailedCreatePodSandBox" for _, r, _ in h.events("web")))
    msg = next(m for _, r, m in h.events("web") if r == "FailedCreatePodSandBox")
    assert "no room for pod web" in msg
    cs = wait("running after the retry", lambda: running(h, "web"))
    # no container was made while the network was failing, and the container did not fail
    assert len(rt.created_at) == 1 and rt.created_at[0] >= net.done_at[0]
    assert cs["restartCount"] == 0 and not cs.get("lastState")
    assert not any(r == "Failed" for _, r, _ in h.events("web"))


def test_empty_dir_volume_and_host_path(h, tmp_path):
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    hp = tmp_path / "host-data"
    pod = h.create_pod("vol", "node-1", containers=[{
        "name": "web", "image": "reg/web:v1",
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"},
                         {"name": "data", "mountPath": "/data", "readOnly": True}]}],
        volumes=[{"name": "scratch", "emptyDir": {}},
                 {"name": "data", "hostPath": {"path": str(hp), "type": "DirectoryOrCreate"}}])
    cs = wait("running", lambda: running(h, "vol"))
    uid = pod["metadata"]["uid"]
    mounts = {m.destination: m for m in n.runtime.config(cs["containerID"].removeprefix("runc://")).mounts}
    assert mounts["/scratch"].source == str(n.data_dir / "pods" / uid / "volumes" / "scratch")
    assert mounts["/data"].source == str(hp) and "ro" in mounts["/data"].options and hp.is_dir()
    assert mounts["/etc/hosts"].source.endswith("etc-hosts")
    (n.data_dir / "pods" / uid / "volumes" / "scratch" / "keep").write_text("x")
    n.runtime.crash(cs["containerID"].removeprefix("runc://"))
    wait("restart", lambda: (c := running(h, "vol")) and c["restartCount"] == 1)
    assert (n.data_dir / "pods" / uid / "volumes" / "scratch" / "keep").read_text() == "x"
    h.admin.delete("pods", "vol", "default")
    wait("pod gone", lambda: h.gone("vol"))
    wait("pod dir removed", lambda: not (n.data_dir / "pods" / uid).exists())
    assert hp.is_dir()


def test_empty_dir_is_writable_by_any_user_and_owned_by_the_fs_group(h):
    import stat
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    pod = h.create_pod("fsg", "node-1", containers=[{
        "name": "web", "image": "reg/web:v1", "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
        volumes=[{"name": "scratch", "emptyDir": {}}],
        securityContext={"runAsUser": 1000, "fsGroup": 2000, "supplementalGroups": [3000]})
    cs = wait("running", lambda: running(h, "fsg"))
    d = n.data_dir / "pods" / pod["metadata"]["uid"] / "volumes" / "scratch"
    st = d.stat()
    assert stat.S_IMODE(st.st_mode) == 0o2777 and st.st_gid == 2000
    cfg = n.runtime.config(cs["containerID"].removeprefix("runc://"))
    assert cfg.security.supplemental_groups == (2000, 3000)
    plain = h.create_pod("plain", "node-1", containers=[{
        "name": "web", "image": "reg/web:v1", "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
        volumes=[{"name": "scratch", "emptyDir": {}}])
    wait("running", lambda: running(h, "plain"))
    d2 = n.data_dir / "pods" / plain["metadata"]["uid"] / "volumes" / "scratch"
    assert stat.S_IMODE(d2.stat().st_mode) == 0o777


def test_host_ports_published(h):
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    pod = h.create_pod("hp", "node-1", containers=[{"name": "web", "image": "reg/web:v1",
                                                    "ports": [{"containerPort": 80, "hostPort": 8080}]}])
    wait("host port", lambda: n.network.host_ports)
    hp = n.network.host_ports[0]
    assert (hp.pod_uid, hp.host_port, hp.container_port, hp.protocol) == (pod["metadata"]["uid"], 8080, 80, "TCP")
    h.admin.delete("pods", "hp", "default")
    wait("host port withdrawn", lambda: h.gone("hp") and n.network.host_ports == [])


# ---------------------------------------------------------------------------- deletion
def test_deleted_pod_is_stopped_gracefully_then_confirmed(h):
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    pod = h.create_pod("web", "node-1", terminationGracePeriodSeconds=1,
                       annotations={"shoal.io/fake-ignore-sigterm": "true"})
    cs = wait("running", lambda: running(h, "web"))
    cid = cs["containerID"].removeprefix("runc://")
    h.admin.delete("pods", "web", "default")
    wait("the pod object to be gone", lambda: h.gone("web"))
    kills = [c for c in n.runtime.calls if c[0] == "kill" and c[1] == cid]
    assert [k[2] for k in kills][:2] == [15, 9]          # SIGTERM ignored, SIGKILL after the grace period
    assert ("remove", cid) in n.runtime.calls and n.runtime.list() == []
    assert ("teardown_pod", pod["metadata"]["uid"]) in n.network.calls
    assert pod["metadata"]["uid"] not in n.network.pods()
    assert not (n.data_dir / "pods" / pod["metadata"]["uid"]).exists()


# ---------------------------------------------------------------------------- agent restarts
def test_agent_restart_adopts_running_containers_without_restarting(h):
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    h.create_pod("web", "node-1")
    h.create_pod("crashy", "node-1")
    wait("running", lambda: running(h, "web") and running(h, "crashy"))
    crashy = running(h, "crashy")
    n.runtime.crash(crashy["containerID"].removeprefix("runc://"), exit_code=4)
    wait("crashy restarted", lambda: (c := running(h, "crashy")) and c["restartCount"] == 1)
    before = {s.id: s.pid for s in n.runtime.running()}
    ip_before = h.pod("web")["status"]["podIP"]
    n.agent.stop()
    calls_before = len(n.runtime.calls)
    # while the agent is down, crashy's process exits: the new agent must report it
    crashy_now = running(h, "crashy")["containerID"].removeprefix("runc://")
    n.runtime.crash(crashy_now, exit_code=7)
    n2 = h.start_agent("node-1", runtime=n.runtime, network=n.network, images=n.images)
    cs = wait("crashy's exit reported and restarted",
              lambda: (c := running(h, "crashy")) and c["restartCount"] == 2 and c)
    assert cs["lastState"]["terminated"]["exitCode"] == 7
    web = running(h, "web")
    web_id = web["containerID"].removeprefix("runc://")
    assert web["restartCount"] == 0 and n2.runtime.state(web_id).pid == before[web_id]
    assert not [c for c in n2.runtime.calls[calls_before:] if c[1] == web_id]    # never touched
    assert h.pod("web")["status"]["podIP"] == ip_before


def test_pod_deleted_while_agent_down_is_cleaned_up_on_start(h):
    n = h.start_agent("node-1")
    h.assign_cidr("node-1")
    pod = h.create_pod("web", "node-1")
    h.create_pod("stays", "node-1")
    wait("running", lambda: running(h, "web") and running(h, "stays"))
    n.agent.stop()
    # the node is "cut off": the pod is force-deleted from the API server meanwhile
    h.admin.delete("pods", "web", "default", grace_period_seconds=0)
    assert h.gone("web")
    uid = pod["metadata"]["uid"]
    assert any(s.labels[LABEL_POD_UID] == uid for s in n.runtime.running())
    n2 = h.start_agent("node-1", runtime=n.runtime, network=n.network, images=n.images)
    wait("stale containers removed", lambda: not any(s.labels[LABEL_POD_UID] == uid for s in n2.runtime.list()))
    wait("network torn down", lambda: uid not in n2.network.pods())
    wait("pod dir removed", lambda: not (n2.data_dir / "pods" / uid).exists())
    assert running(h, "stays")["restartCount"] == 0
