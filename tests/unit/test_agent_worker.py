"""Pure helpers of the pod worker (process resolution) and the log decoding."""
import pytest

from shoal.agent.interfaces import ContainerState
from shoal.agent.logserver import decode_line
from shoal.agent.interfaces import ContainerSecurity
from shoal.agent.worker import container_security, expand, observed_from_state, resolve_process

pytestmark = pytest.mark.unit
IMG = {"Entrypoint": ["/entry"], "Cmd": ["serve", "--port", "80"], "Env": ["PATH=/bin", "MODE=prod"],
       "WorkingDir": "/app", "User": "www"}


@pytest.mark.parametrize("command,args,argv", [
    (None, None, ["/entry", "serve", "--port", "80"]),            # image defaults
    (["/bin/sh", "-c"], None, ["/bin/sh", "-c"]),                # command drops Entrypoint and Cmd
    (None, ["debug"], ["/entry", "debug"]),                      # args replace Cmd only
    (["/bin/echo"], ["a", "b"], ["/bin/echo", "a", "b"]),
])
def test_command_and_args_over_entrypoint_and_cmd(command, args, argv):
    c = {"name": "c", "command": command, "args": args}
    assert resolve_process(c, IMG)[0] == argv


def test_env_override_order_and_expansion():
    c = {"name": "c", "env": [{"name": "MODE", "value": "dev"}, {"name": "GREETING", "value": "hi $(MODE)"},
                              {"name": "RAW", "value": "$$(MODE) $(NOPE)"}],
         "command": ["/bin/echo", "$(GREETING)"]}
    argv, env, wd, user = resolve_process(c, IMG)
    assert env == ["PATH=/bin", "MODE=dev", "GREETING=hi dev", "RAW=$(MODE) $(NOPE)"]
    assert argv == ["/bin/echo", "hi dev"]
    assert (wd, user) == ("/app", "www")


@pytest.mark.parametrize("csc,psc,user", [
    ({}, {}, "www"), ({"runAsUser": 1000}, {}, "1000"), ({}, {"runAsUser": 5, "runAsGroup": 6}, "5:6"),
    ({"runAsUser": 7}, {"runAsUser": 5}, "7"), ({"runAsGroup": 9}, {}, "www:9"),
])
def test_user_from_security_context(csc, psc, user):
    c = {"name": "c", "securityContext": csc}
    assert resolve_process(c, IMG, {"securityContext": psc})[3] == user


def test_working_dir_defaults():
    assert resolve_process({"name": "c", "workingDir": "/w"}, IMG)[2] == "/w"
    assert resolve_process({"name": "c"}, {"Cmd": ["x"]})[2] == "/"


def test_expand_keeps_unknown_and_escapes():
    assert expand("$(A)-$(B)-$$(A)-$", {"A": "1"}) == "1-$(B)-$(A)-$"


def test_observed_from_state_reads_labels_and_ignores_foreign_containers():
    s = ContainerState(id="x", status="running", labels={"shoal.io/container": "web", "shoal.io/attempt": "3",
                                                          "shoal.io/termination-grace-seconds": "9"}, pid=42)
    oc = observed_from_state(s)
    assert (oc.name, oc.attempt, oc.grace, oc.pid) == ("web", 3, 9, 42)
    assert observed_from_state(ContainerState(id="y", status="running", labels={})) is None


@pytest.mark.parametrize("raw,out", [
    (b"2026-11-22T10:55:38.075067787+00:00 stdout F hi\n", b"hi\n"),
    (b"2026-11-22T10:55:38.075067787+00:00 stderr P part", b"part"),
    (b"2026-11-22T10:55:38Z stdout F \n", b"\n"),
    (b"plain line\n", b"plain line\n"),
])
def test_decode_line(raw, out):
    assert decode_line(raw) == out


# ---------------------------------------------------------------------------- the worker executes the plan
# A PodWorker on the scripted fakes: what it does is what compute_pod_actions planned
# (the decisions have their rows in test_agent_plan.py); these check the execution.
class _Probes:
    def sync_pod(self, pod, running, ip):
        pass

    def pod_results(self, uid):
        return {}

    def remove_pod(self, uid):
        pass


class _Api:
    def __init__(self):
        self.statuses, self.confirmed = [], []

    def write_status(self, pod, status):
        self.statuses.append(status)
        return {**pod, "status": status}

    def confirm_deletion(self, pod):
        self.confirmed.append(pod["metadata"]["uid"])


class _Events:
    def __init__(self):
        self.seen = []

    def event(self, obj, type_, reason, message):
        self.seen.append((reason, message))

    emit = event        # the sink's method by its older name


def _worker(tmp_path, runtime=None, network=None, clock=None):
    from shoal.agent.fakes import FakeImageStore, FakeNetwork, FakeRuntime
    from shoal.agent.restarts import RestartTracker
    from shoal.agent.worker import PodWorker, WorkerContext
    from shoal.machinery.control.clock import FakeClock
    clock = clock or FakeClock()
    if network is None:
        network = FakeNetwork()
        network.ensure_node("10.244.1.0/24")
    ctx = WorkerContext(node_name="n1", host_ip="192.168.5.2", data_dir=tmp_path, images=FakeImageStore(),
                        runtime=runtime or FakeRuntime(clock), network=network, probes=_Probes(),
                        tracker=RestartTracker(), api=_Api(), events=_Events(), clock=clock,
                        sleep=lambda s: None)
    w = PodWorker("u1-0123456789ab", ctx)
    w.set_pod({"metadata": {"name": "web-1", "namespace": "default", "uid": "u1-0123456789ab"},
               "spec": {"nodeName": "n1", "containers": [{"name": "web", "image": "reg/web:v1"}]}})
    return w


def _creates(runtime):
    return [c for c in runtime.calls if c[0] in ("create", "kill", "remove")]


def test_worker_starts_a_new_pod_in_one_sync(tmp_path):
    w = _worker(tmp_path)
    assert w.sync() is None
    assert [s.status for s in w.ctx.runtime.list()] == ["running"]
    assert w.ctx.api.statuses[-1]["phase"] == "Running"


def test_worker_adopts_a_running_container_its_view_lost(tmp_path):
    w1 = _worker(tmp_path)
    w1.sync()
    rt = w1.ctx.runtime
    before = _creates(rt)
    w2 = _worker(tmp_path, runtime=rt, network=w1.ctx.network, clock=w1.ctx.clock)   # knows no container ids
    w2.sync()
    assert _creates(rt) == before                       # not started a second time
    assert w2.mem.ids == {"u1-012345678-web-0"}
    assert w2.ctx.api.statuses[-1]["containerStatuses"][0]["restartCount"] == 0


def test_worker_replaces_a_created_leftover_at_the_id_it_starts(tmp_path):
    w1 = _worker(tmp_path)
    w1.sync()
    rt, cid = w1.ctx.runtime, "u1-012345678-web-0"
    cfg = rt.config(cid)
    rt.kill(cid, 9)
    rt.remove(cid)
    rt.create(cfg)                                      # a create that crashed before its start
    rt.calls.clear()
    w2 = _worker(tmp_path, runtime=rt, network=w1.ctx.network, clock=w1.ctx.clock)
    w2.sync()
    assert _creates(rt) == [("kill", cid, 9), ("remove", cid), ("create", cid)]
    assert rt.state(cid).status == "running"


def test_worker_holds_starts_until_the_sandbox_retry(tmp_path):
    from shoal.agent.fakes import FakeNetwork
    w = _worker(tmp_path, network=FakeNetwork())        # no pod CIDR: reserve_pod fails
    wake = w.sync()
    assert wake == w.ctx.clock.now() + w.ctx.sandbox_retry
    assert ("FailedCreatePodSandBox" in {r for r, _ in w.ctx.events.seen}) and not w.ctx.runtime.list()
    w.ctx.network.ensure_node("10.244.1.0/24")
    assert w.sync() == wake and not w.ctx.runtime.list()  # held until the retry time
    w.ctx.clock.advance(w.ctx.sandbox_retry)
    assert w.sync() is None
    assert [s.status for s in w.ctx.runtime.list()] == ["running"]


def test_worker_acts_on_the_pod_it_planned_for_when_it_goes_away_mid_pass(tmp_path):
    # the watch's DELETE lands while the pass makes the sandbox: the pass still starts the
    # container it planned, for the pod it planned with; the next pass stops what is left
    w = _worker(tmp_path)
    planned = w.pod
    about = []
    w.ctx.events.event = lambda obj, type_, reason, message: about.append((reason, obj))
    setup = w.ctx.network.setup_pod

    def setup_and_gone(uid, name):
        w.set_pod(None)
        return setup(uid, name)
    w.ctx.network.setup_pod = setup_and_gone
    assert w.sync() is None
    assert [r for r, _ in about] == ["Pulling", "Pulled", "Created", "Started", "Killing"]
    assert all(obj is planned for _, obj in about)      # the gone pod's Killing names the last pod seen
    assert not w.ctx.runtime.list() and w.done
    assert w.ctx.api.confirmed == []                    # nothing left to confirm: it is gone already


@pytest.mark.parametrize("csc, psc, expected", [
    ({}, {}, ContainerSecurity()),
    ({"privileged": True, "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}, "readOnlyRootFilesystem": True,
      "allowPrivilegeEscalation": False}, {},
     ContainerSecurity(privileged=True, caps_add=("NET_ADMIN",), caps_drop=("ALL",), readonly_rootfs=True,
                       allow_privilege_escalation=False)),
    ({}, {"runAsNonRoot": True}, ContainerSecurity(run_as_non_root=True)),           # the pod's applies
    ({"runAsNonRoot": False}, {"runAsNonRoot": True}, ContainerSecurity()),          # the container's wins
    ({}, {"fsGroup": 2000, "supplementalGroups": [5, 2000]}, ContainerSecurity(supplemental_groups=(2000, 5))),
    ({"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
     {"seccompProfile": {"type": "Unconfined"}}, ContainerSecurity(seccomp="Localhost", seccomp_localhost="p.json")),
    ({}, {"seccompProfile": {"type": "Unconfined"}}, ContainerSecurity(seccomp="Unconfined")),
])
def test_container_security(csc, psc, expected):
    assert container_security({"securityContext": csc}, {"securityContext": psc}) == expected
