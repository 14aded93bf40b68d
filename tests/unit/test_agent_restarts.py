"""Restart policy and crash-loop back-off (agent.restarts), with plain numbers as time."""
import pytest

from shoal.agent.restarts import BackoffPolicy, RestartTracker, should_restart

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("policy,exit_code,expected", [
    ("Always", 0, True), ("Always", 1, True), ("Always", 137, True), (None, 0, True),
    ("OnFailure", 0, False), ("OnFailure", 1, True), ("OnFailure", 137, True),
    ("Never", 0, False), ("Never", 1, False),
])
def test_should_restart(policy, exit_code, expected):
    assert should_restart(policy, exit_code) is expected


def crash_sequence(tracker, n, *, start=1000.0, run_for=1.0):
    """Crash n times, each attempt starting as soon as allowed; return (delay, not_before - finished)."""
    out = []
    t = start
    for i in range(n):
        finished = t + run_for
        bo = tracker.record_exit(("uid", "web"), exit_id=f"c{i}", started_at=t, finished_at=finished)
        out.append(bo.delay)
        assert bo.not_before == finished + bo.delay
        t = bo.not_before
    return out


def test_first_restart_at_once_then_doubling_to_cap():
    tr = RestartTracker(BackoffPolicy(initial=10, maximum=300))
    assert crash_sequence(tr, 9) == [0, 10, 20, 40, 80, 160, 300, 300, 300]


def test_configurable_initial_and_max():
    tr = RestartTracker(BackoffPolicy(initial=1, maximum=5))
    assert crash_sequence(tr, 6) == [0, 1, 2, 4, 5, 5]


def test_same_exit_is_counted_once():
    tr = RestartTracker()
    a = tr.record_exit("k", exit_id="c0", started_at=0, finished_at=5)
    b = tr.record_exit("k", exit_id="c0", started_at=0, finished_at=5)
    assert a == b and a.exits == 1
    c = tr.record_exit("k", exit_id="c1", started_at=5, finished_at=6)
    assert c.delay == 10 and c.exits == 2


def test_reset_after_healthy_run():
    tr = RestartTracker(BackoffPolicy(initial=10, maximum=300, reset_after=600))
    crash_sequence(tr, 5)                                    # delay now at 80, next 160
    healthy = tr.record_exit(("uid", "web"), exit_id="long", started_at=10_000, finished_at=10_600)
    assert healthy.delay == 0 and healthy.exits == 1
    nxt = tr.record_exit(("uid", "web"), exit_id="after", started_at=10_600, finished_at=10_601)
    assert nxt.delay == 10


def test_run_just_short_of_reset_keeps_growing():
    tr = RestartTracker(BackoffPolicy(initial=10, maximum=300, reset_after=600))
    crash_sequence(tr, 3)                                    # delays 0, 10, 20 → next 40
    bo = tr.record_exit(("uid", "web"), exit_id="x", started_at=0, finished_at=599.9)
    assert bo.delay == 40


def test_keys_are_independent_and_forget_by_pod():
    tr = RestartTracker()
    tr.record_exit(("a", "web"), exit_id="1", started_at=0, finished_at=1)
    tr.record_exit(("a", "web"), exit_id="2", started_at=1, finished_at=2)
    assert tr.record_exit(("b", "web"), exit_id="1", started_at=0, finished_at=1).delay == 0
    tr.record_exit(("a", "web", "pull"), exit_id="p", started_at=None, finished_at=1)
    tr.forget("a")
    assert tr.get(("a", "web")) is None and tr.get(("a", "web", "pull")) is None
    assert tr.get(("b", "web")) is not None


def test_invalid_policy_is_rejected_with_values():
    with pytest.raises(ValueError, match="initial \\(10\\).*maximum \\(5\\)"):
        BackoffPolicy(initial=10, maximum=5)


def test_pull_back_off_waits_from_the_first_failure():
    tr = RestartTracker(BackoffPolicy(initial=10, maximum=300))
    delays = [tr.record_exit("pull", exit_id=str(i), started_at=None, finished_at=100.0 * i,
                             first_immediate=False).delay for i in range(6)]
    assert delays == [10, 20, 40, 80, 160, 300]
