"""The agent's worker map without a server or a runtime: what wakes a pod worker, adoption
order, orphans; and the per-uid dispatcher on the floor's WorkQueue."""
import threading
import time
from types import SimpleNamespace

import pytest

from shoal.agent.dispatch import PodDispatcher, PodWorkers
from shoal.agent.interfaces import ContainerState
from shoal.agent.plan import LABEL_POD_UID
from shoal.machinery.control import FakeClock
from shoal.machinery.control.clock import RealClock

pytestmark = pytest.mark.unit


class FakeWorker:
    def __init__(self, uid):
        self.uid, self.pod, self.last_pod = uid, None, None
        self.ids: set[str] = set()
        self.done = False
        self.echo_status = None
        self.mem = SimpleNamespace(pod_net=None)

    def set_pod(self, pod):
        self.pod = pod
        if pod is not None:
            self.last_pod = pod

    def is_own_status_echo(self, pod):
        return self.echo_status is not None and pod.get("status") == self.echo_status

    def add_container_ids(self, ids):
        self.ids.update(ids)

    def sync(self):
        return None


class Runtime:
    def __init__(self, states=(), fail=False):
        self.states, self.fail = list(states), fail

    def list(self):
        if self.fail:
            raise OSError("runc list: exit 1")
        return list(self.states)


class Network:
    def __init__(self, uids=()):
        self.uids = list(uids)

    def pods(self):
        return self.uids


def pod(name, uid, node="n1", **status):
    return {"metadata": {"name": name, "namespace": "default", "uid": uid, "resourceVersion": "1"},
            "spec": {"nodeName": node, "containers": [{"name": "web"}]}, "status": status}


def container(cid, uid, status="running", exit_code=None):
    return ContainerState(id=cid, status=status, labels={LABEL_POD_UID: uid}, exit_code=exit_code)


def make(tmp_path, runtime=None, network=None):
    pw = PodWorkers(node_name="n1", make_worker=FakeWorker, runtime=runtime or Runtime(), network=network or Network(),
                    data_dir=tmp_path, clock=FakeClock(), threads=0)
    return pw


def woken(pw) -> list[str]:
    """The uids waiting in the dispatcher's queue (drained)."""
    q, out = pw.dispatcher._queue, []
    while (k := q.get(block=False)) is not None:
        out.append(k)
        q.done(k)
    return sorted(out)


def test_first_list_wakes_nothing_until_the_runtime_was_relisted(tmp_path):
    rt = Runtime([container("c1", "u1")])
    pw = make(tmp_path, rt)
    pw.on_add(pod("a", "u1"))
    pw.on_add(pod("b", "u2"))
    assert woken(pw) == []                       # a sync now would not know c1 (adoption)
    pw.on_list()
    assert pw.worker("u1").ids == {"c1"}         # seeded before any wake
    assert woken(pw) == ["u1", "u2"]


def test_a_failed_adoption_is_retried_by_the_periodic_relist(tmp_path):
    rt = Runtime([container("c1", "u1")], fail=True)
    pw = make(tmp_path, rt)
    pw.on_add(pod("a", "u1"))
    pw.on_list()
    pw.on_update(pod("a", "u1"), dict(pod("a", "u1"), spec={"nodeName": "n1", "containers": []}))
    assert woken(pw) == []
    rt.fail = False
    pw.relist()
    assert pw.worker("u1").ids == {"c1"} and woken(pw) == ["u1"]


def test_relist_before_the_first_list_decides_nothing(tmp_path):
    pw = make(tmp_path, Runtime([container("c9", "orphan")]))
    pw.relist()
    pw.housekeeping()
    assert pw.uids() == [] and woken(pw) == []


def test_after_adoption_changes_wake_and_own_status_echoes_do_not(tmp_path):
    pw = make(tmp_path)
    pw.on_list()
    pw.on_add(pod("a", "u1"))
    assert woken(pw) == ["u1"]
    pw.worker("u1").echo_status = {"phase": "Running"}
    pw.on_update(pod("a", "u1"), pod("a", "u1", phase="Running"))
    assert woken(pw) == []
    pw.on_delete(pod("a", "u1"))
    assert pw.worker("u1").pod is None and woken(pw) == ["u1"]


def test_a_pod_not_bound_here_is_gone(tmp_path):
    pw = make(tmp_path)
    pw.on_list()
    pw.on_add(pod("a", "u1"))
    pw.on_update(pod("a", "u1"), pod("a", "u1", node="n2"))
    assert pw.worker("u1").pod is None


def test_a_name_reused_by_a_new_pod_ends_the_old_one(tmp_path):
    pw = make(tmp_path)
    pw.on_list()
    pw.on_add(pod("a", "u1"))
    woken(pw)
    pw.on_update(pod("a", "u1"), pod("a", "u2"))
    assert pw.worker("u1").pod is None and pw.worker("u2").pod["metadata"]["uid"] == "u2"
    assert woken(pw) == ["u1", "u2"]
    assert pw.find("default", "a")[0] == "u2"


def test_runtime_relist_wakes_on_change_only_and_adopts_orphans(tmp_path):
    rt = Runtime([container("c1", "u1")])
    pw = make(tmp_path, rt)
    pw.on_add(pod("a", "u1"))
    pw.on_list()
    woken(pw)
    pw.relist()
    assert woken(pw) == []                       # nothing changed
    rt.states = [container("c1", "u1", "exited", 1), container("c9", "orphan")]
    pw.relist()
    assert woken(pw) == ["orphan", "u1"]
    assert pw.worker("orphan").pod is None and pw.worker("orphan").ids == {"c9"}
    rt.states = []
    pw.relist()
    assert woken(pw) == ["orphan", "u1"]         # their containers are gone: a change too


def test_housekeeping_gives_network_state_and_pod_dirs_without_a_pod_a_worker(tmp_path):
    (tmp_path / "pods" / "dir-only").mkdir(parents=True)
    pw = make(tmp_path, network=Network(["net-only"]))
    pw.on_list()
    assert sorted(pw.uids()) == ["dir-only", "net-only"]
    assert woken(pw) == ["dir-only", "net-only"]


def test_a_finished_worker_is_dropped_and_not_revived_by_a_late_echo(tmp_path):
    pw = make(tmp_path)
    pw.on_list()
    pw.on_add(pod("a", "u1"))
    pw.worker("u1").done = True
    assert pw.sync("u1") is None
    assert pw.worker("u1") is None and pw.find("default", "a") is None
    pw.on_update(pod("a", "u1"), pod("a", "u1", phase="Succeeded"))
    assert pw.worker("u1") is None


def test_sandboxed_lists_wanted_pods_with_a_network(tmp_path):
    pw = make(tmp_path)
    pw.on_list()
    pw.on_add(pod("a", "u1"))
    pw.on_add(pod("b", "u2"))
    pw.worker("u1").mem.pod_net = object()
    assert [uid for uid, _ in pw.sandboxed()] == ["u1"]


# ---------------------------------------------------------------------------- the dispatcher
def test_dispatcher_one_sync_per_uid_and_a_wake_during_a_sync_runs_it_again():
    active, calls, lock = {}, [], threading.Lock()
    release = threading.Event()

    def sync(uid):
        with lock:
            active[uid] = active.get(uid, 0) + 1
            assert active[uid] == 1
            calls.append(uid)
        if len(calls) == 1:
            release.wait(2)
        with lock:
            active[uid] -= 1
        return None

    d = PodDispatcher(sync, clock=RealClock(), threads=4)
    try:
        d.wake("u1")
        time.sleep(0.05)
        d.wake("u1")            # while it runs: once more afterwards, never beside it
        d.wake("u1")
        release.set()
        deadline = time.monotonic() + 2
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert calls == ["u1", "u1"]
    finally:
        d.stop()


def test_dispatcher_runs_a_uid_again_at_the_time_its_sync_asks_for():
    clock = RealClock()
    runs = []

    def sync(uid):
        runs.append(time.monotonic())
        return clock.now() + 0.1 if len(runs) == 1 else None

    d = PodDispatcher(sync, clock=clock, threads=2)
    try:
        d.wake("u1")
        deadline = time.monotonic() + 2
        while len(runs) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(runs) == 2 and 0.08 < runs[1] - runs[0] < 1.0
    finally:
        d.stop()
