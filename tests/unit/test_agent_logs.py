"""The log endpoint's lookup: which attempt's file answers, and the errors it gives."""
from types import SimpleNamespace

import pytest

from shoal.agent.logs import PodLogs, log_attempts, pick_attempt
from shoal.agent.logserver import LogNotFound, LogRequestInvalid
from shoal.agent.worker import container_id_for

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("attempts, previous, want", [
    ([0], False, 0),
    ([0, 1, 2], False, 2),
    ([0, 1, 2], True, 1),
    ([3, 4], True, 3),
])
def test_pick_attempt(attempts, previous, want):
    assert pick_attempt(attempts, previous=previous, pod="p", container="c") == want


def test_pick_attempt_errors():
    with pytest.raises(LogNotFound, match='container "c" in pod "p" has no log yet'):
        pick_attempt([], previous=False, pod="p", container="c")
    with pytest.raises(LogRequestInvalid, match='previous terminated container "c" in pod "p" not found'):
        pick_attempt([0], previous=True, pod="p", container="c")


def test_log_attempts_sorts_numbers_and_ignores_other_files(tmp_path):
    for f in ("10.log", "9.log", "x.log", "1.txt"):
        (tmp_path / f).write_text("")
    assert log_attempts(tmp_path) == [9, 10]
    assert log_attempts(tmp_path / "missing") == []


class Runtime:
    def __init__(self):
        self.running = set()

    def state(self, cid):
        return SimpleNamespace(status="running" if cid in self.running else "exited")


def test_resolve(tmp_path):
    d = tmp_path / "pods" / "u1" / "logs" / "web"
    d.mkdir(parents=True)
    (d / "0.log").write_text("a\n")
    pods = {("default", "p"): ("u1", {"spec": {"containers": [{"name": "web"}]}})}
    rt = Runtime()
    logs = PodLogs(node_name="n1", data_dir=tmp_path, runtime=rt, find=lambda ns, name: pods.get((ns, name)),
                   stopped=lambda: False)
    with pytest.raises(LogNotFound, match='pod "q" in namespace "default" is not running on node n1'):
        logs.resolve("default", "q", "web", False)
    with pytest.raises(LogNotFound, match='container "db" is not valid for pod "p"'):
        logs.resolve("default", "p", "db", False)
    path, writing = logs.resolve("default", "p", "web", False)
    assert path == d / "0.log" and not writing()
    rt.running.add(container_id_for("u1", "web", 0))
    assert writing()
    (d / "1.log").write_text("b\n")           # a newer attempt began: a follow of 0 ends
    assert not writing()
    path, writing = logs.resolve("default", "p", "web", True)
    assert path == d / "0.log" and not writing()

