"""compute_pod_actions (agent.plan): one row per rule."""
import pytest

from shoal.agent.plan import (ConfigFailure, ObservedContainer, PodEvent, PodRuntimeView, PullFailure, StartContainer,
                              compute_pod_actions, counted_exits, next_attempts, spec_hash)
from shoal.agent.probes import FAILURE, LIVENESS, READINESS, STARTUP, SUCCESS, ProbeResult
from shoal.agent.restarts import Backoff

pytestmark = pytest.mark.unit
NOW = 1000.0


def pod(*names, policy="Always", deleting=False, grace=None, tgps=None, image="reg/web:v1", **extra):
    p = {"metadata": {"name": "web-1", "namespace": "default", "uid": "u1"},
         "spec": {"restartPolicy": policy, "nodeName": "n1",
                  "containers": [{"name": n, "image": image, **extra} for n in (names or ("web",))]}}
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    if grace is not None:
        p["metadata"]["deletionGracePeriodSeconds"] = grace
    if tgps is not None:
        p["spec"]["terminationGracePeriodSeconds"] = tgps
    return p


def c(name="web", attempt=0, status="running", p=None, **kw):
    p = p or pod()
    cs = next(x for x in p["spec"]["containers"] if x["name"] == name) if any(
        x["name"] == name for x in p["spec"]["containers"]) else {"name": name}
    kw.setdefault("spec_hash", spec_hash(cs))
    kw.setdefault("id", f"u1-{name}-{attempt}")
    if status == "stopped":
        kw.setdefault("exit_code", 1)
        kw.setdefault("started_at", NOW - 20)
        kw.setdefault("finished_at", NOW - 10)
    return ObservedContainer(name=name, attempt=attempt, status=status, **kw)


def view(*containers, ip="10.244.0.5", terminating=None, leftovers=()):
    return PodRuntimeView("u1", tuple(containers), ip, terminating or {}, tuple(leftovers))


def plan(p, v, **kw):
    kw.setdefault("now", NOW)
    return compute_pod_actions(p, v, **kw)


# ---------------------------------------------------------------------------- first start / sandbox
def test_new_pod_creates_sandbox_and_starts_all_containers_at_attempt_0():
    a = plan(pod("web", "side"), view(ip=None))
    assert a.create_sandbox
    assert a.start == [StartContainer("web", 0), StartContainer("side", 0)]
    assert not a.kill and not a.remove and not a.teardown


def test_waits_for_pod_cidr_before_anything():
    a = plan(pod(), view(ip=None), network_ready=False)
    assert not a.create_sandbox and not a.start
    assert a.waiting["web"].reason == "ContainerCreating"
    assert "podCIDR" in a.waiting["web"].message


def test_adopted_running_pod_recovers_sandbox_without_restarting():
    a = plan(pod(), view(c(), ip=None))
    assert a.create_sandbox and not a.start and not a.kill


def test_running_pod_is_steady():
    a = plan(pod(), view(c()))
    assert not a.has_work and a.wake_at is None


def test_created_but_not_started_container_is_started():
    a = plan(pod(), view(c(status="created", attempt=2)))
    assert a.start == [StartContainer("web", 2, existing_id="u1-web-2")]


# ---------------------------------------------------------------------------- restart policy + back-off
@pytest.mark.parametrize("policy,exit_code,restarts", [
    ("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False), ("OnFailure", 2, True),
    ("Never", 0, False), ("Never", 1, False),
])
def test_exited_container_restart_policy(policy, exit_code, restarts):
    p = pod(policy=policy)
    a = plan(p, view(c(status="stopped", exit_code=exit_code, attempt=3, p=p)))
    assert a.start == ([StartContainer("web", 4)] if restarts else [])
    assert not a.create_sandbox or restarts


def test_crash_loop_back_off_waits_and_wakes_at_expiry():
    bo = Backoff(not_before=NOW + 20, delay=20, exits=3)
    a = plan(pod(), view(c(status="stopped", attempt=2)), backoff={"web": bo})
    assert a.start == []
    assert a.waiting["web"].reason == "CrashLoopBackOff"
    assert a.waiting["web"].message == \
        "back-off 20s restarting failed container=web pod=web-1_default(u1)"
    assert a.wake_at == NOW + 20


def test_back_off_expired_restarts_as_next_attempt():
    bo = Backoff(not_before=NOW - 1, delay=10, exits=2)
    a = plan(pod(), view(c(status="stopped", attempt=2)), backoff={"web": bo})
    assert a.start == [StartContainer("web", 3)]
    assert "web" not in a.waiting


def test_back_off_message_formats_minutes():
    bo = Backoff(not_before=NOW + 300, delay=300, exits=9)
    a = plan(pod(), view(c(status="stopped")), backoff={"web": bo})
    assert "back-off 5m0s restarting" in a.waiting["web"].message


def test_older_attempts_are_removed_previous_kept():
    a = plan(pod(), view(c(attempt=3), c(status="stopped", attempt=2), c(status="stopped", attempt=1),
                         c(status="stopped", attempt=0)))
    assert sorted(a.remove) == ["u1-web-0", "u1-web-1"]
    assert not a.start and not a.kill


def test_synthetic_start_failure_counts_as_an_attempt():
    failed = c(status="stopped", attempt=0, id="", synthetic=True, exit_code=128, reason="StartError")
    a = plan(pod(), view(failed))
    assert a.start == [StartContainer("web", 1)]
    assert a.remove == []


# ---------------------------------------------------------------------------- kills of running containers
def test_liveness_failure_kills_with_grace():
    a = plan(pod(tgps=7), view(c()), probes={"u1-web-0": {LIVENESS: ProbeResult(FAILURE, "HTTP 500")}})
    assert len(a.kill) == 1
    k = a.kill[0]
    assert (k.id, k.signal, k.grace) == ("u1-web-0", "TERM", 7)
    assert k.message == "Container web failed liveness probe, will be restarted"
    assert not a.start


def test_readiness_failure_does_not_kill():
    a = plan(pod(), view(c()), probes={"u1-web-0": {READINESS: ProbeResult(FAILURE), LIVENESS: ProbeResult(SUCCESS)}})
    assert not a.has_work


def test_liveness_result_of_another_attempt_is_ignored():
    a = plan(pod(), view(c(attempt=1)), probes={"u1-web-0": {LIVENESS: ProbeResult(FAILURE)}})
    assert not a.kill


def test_startup_failure_kills():
    a = plan(pod(), view(c()), probes={"u1-web-0": {STARTUP: ProbeResult(FAILURE)}})
    assert a.kill and "startup probe" in a.kill[0].message


def test_changed_image_kills_then_restarts_as_next_attempt():
    old = c(spec_hash=spec_hash({"name": "web", "image": "reg/web:v1"}))
    p2 = pod(image="reg/web:v2")
    a = plan(p2, view(old))
    assert a.kill and a.kill[0].message == "Container web definition changed, will be restarted"
    # once it has stopped, the next plan starts attempt 1 regardless of exit code
    a2 = plan(p2, view(c(status="stopped", exit_code=143, spec_hash=old.spec_hash)))
    assert a2.start == [StartContainer("web", 1)]


def test_container_without_hash_label_is_not_killed():
    a = plan(pod(image="reg/web:v2"), view(c(spec_hash="")))
    assert not a.kill


def test_terminating_container_gets_sigkill_after_deadline_only():
    v_wait = view(c(), terminating={"u1-web-0": NOW + 5})
    a = plan(pod(), v_wait)
    assert not a.kill and a.wake_at == NOW + 5
    a = plan(pod(), view(c(), terminating={"u1-web-0": NOW}))
    assert [(k.id, k.signal) for k in a.kill] == [("u1-web-0", "KILL")]


def test_container_not_in_spec_is_stopped_and_removed():
    a = plan(pod("web"), view(c(), c(name="old", attempt=0), c(name="gone", status="stopped", id="g")))
    assert [k.name for k in a.kill] == ["old"]
    assert a.remove == ["g"]


# ---------------------------------------------------------------------------- image pull back-off
def test_pull_failure_fresh_shows_err_image_pull_then_back_off():
    pf = PullFailure("reg/missing:v1", "ErrImagePull", 'failed to pull "reg/missing:v1": not found',
                     at=NOW, retry_at=NOW + 10, fresh=True)
    a = plan(pod(), view(), pull_failures={"web": pf})
    assert a.waiting["web"].reason == "ErrImagePull" and "not found" in a.waiting["web"].message
    # ErrImagePull stays a second (half the back-off at most), then the pass that shows the back-off
    assert not a.start and a.wake_at == NOW + 1
    shown = PullFailure(**{**pf.__dict__, "fresh": False})
    assert plan(pod(), view(), pull_failures={"web": shown}).waiting["web"].reason == "ErrImagePull"
    a = plan(pod(), view(), pull_failures={"web": shown}, now=NOW + 1)
    assert a.waiting["web"].reason == "ImagePullBackOff" and a.wake_at == NOW + 10
    assert a.waiting["web"].message == ('Back-off pulling image "reg/missing:v1": ErrImagePull: '
                                        'failed to pull "reg/missing:v1": not found')


def test_pull_retried_after_back_off():
    pf = PullFailure("reg/x", "ErrImagePull", "boom", at=NOW - 20, retry_at=NOW - 10)
    assert plan(pod(), view(), pull_failures={"web": pf}).start == [StartContainer("web", 0)]


def test_never_pull_reason_kept():
    pf = PullFailure("reg/x", "ErrImageNeverPull", "image not present with pull policy of Never",
                     at=NOW, retry_at=NOW + 10)
    assert plan(pod(), view(), pull_failures={"web": pf}).waiting["web"].reason == "ErrImageNeverPull"


# ---------------------------------------------------------------------------- config failures
CFG_MSG = "pod default/web-1, container web: subPath x of volume data: a symbolic link"
CFG = ConfigFailure(CFG_MSG, at=NOW - 5, retry_at=NOW + 5)
CFG_DUE = ConfigFailure(CFG_MSG, at=NOW - 20, retry_at=NOW - 10)
CFG_EVENT = PodEvent("Warning", "Failed", f"Error: {CFG_MSG}", f"configerror/web/{CFG_MSG}")


@pytest.mark.parametrize("p,containers,kw,start,waiting,events,wake", [
    # never ran: waits for the retry, whatever the policy (nothing was created, nothing counted)
    (pod(), (), {"config_failures": {"web": CFG}}, [], "CreateContainerConfigError", [CFG_EVENT], NOW + 5),
    (pod(policy="Never"), (), {"config_failures": {"web": CFG}}, [], "CreateContainerConfigError", [CFG_EVENT],
     NOW + 5),
    # the event once per message
    (pod(), (), {"config_failures": {"web": CFG}, "evented": (CFG_EVENT.key,)}, [], "CreateContainerConfigError",
     [], NOW + 5),
    # retry due: the same attempt is tried again, still shown until a config is built
    (pod(), (), {"config_failures": {"web": CFG_DUE}, "evented": (CFG_EVENT.key,)}, [StartContainer("web", 0)],
     "CreateContainerConfigError", [], None),
    (pod(policy="Never"), (), {"config_failures": {"web": CFG_DUE}, "evented": (CFG_EVENT.key,)},
     [StartContainer("web", 0)], "CreateContainerConfigError", [], None),
    # after an exit, the restart's config failed: the next attempt waits, the exit is not counted again
    (pod(), (c(status="stopped", attempt=2),), {"config_failures": {"web": CFG}}, [], "CreateContainerConfigError",
     [CFG_EVENT], NOW + 5),
    (pod(), (c(status="stopped", attempt=2),), {"config_failures": {"web": CFG_DUE}, "evented": (CFG_EVENT.key,)},
     [StartContainer("web", 3)], "CreateContainerConfigError", [], None),
    # a crash-loop back-off that holds comes first: the config is only tried at the restart
    (pod(), (c(status="stopped", attempt=2),),
     {"config_failures": {"web": CFG}, "backoff": {"web": Backoff(NOW + 20, 20, 3)}, "evented": ("backoff/u1-web-2",)},
     [], "CrashLoopBackOff", [], NOW + 20),
    # a pull failure that holds comes first (the pull precedes the config)
    (pod(), (), {"config_failures": {"web": CFG_DUE},
                 "pull_failures": {"web": PullFailure("reg/web:v1", "ErrImageNeverPull", "absent", NOW, NOW + 10)}},
     [], "ErrImageNeverPull", [], NOW + 10),
    # a running container is not about its config any more
    (pod(), (c(),), {"config_failures": {"web": CFG}}, [], None, [], None),
    # no waiting for a deleting pod
    (pod(deleting=True), (), {"config_failures": {"web": CFG}}, [], None, [], None),
])
def test_config_failure_waits_in_create_container_config_error(p, containers, kw, start, waiting, events, wake):
    a = plan(p, view(*containers), **kw)
    assert a.start == start
    assert (a.waiting["web"].reason if "web" in a.waiting else None) == waiting
    if waiting == "CreateContainerConfigError":
        assert a.waiting["web"].message == CFG_MSG
    assert a.events == events and a.wake_at == wake
    assert not a.kill and not a.remove


def test_config_failure_holds_only_its_container():
    a = plan(pod("web", "side"), view(), config_failures={"web": CFG})
    assert a.start == [StartContainer("side", 0)] and set(a.waiting) == {"web"}


# ---------------------------------------------------------------------------- deletion
def test_deleting_pod_sends_sigterm_with_deletion_grace():
    p = pod("web", "side", deleting=True, grace=12, tgps=30)
    a = plan(p, view(c(p=p), c(name="side", p=p)))
    assert {(k.name, k.signal, k.grace) for k in a.kill} == {("web", "TERM", 12), ("side", "TERM", 12)}
    assert not a.teardown and not a.confirm_deletion and not a.start


def test_deleting_pod_default_grace_30():
    a = plan(pod(deleting=True), view(c()))
    assert a.kill[0].grace == 30


def test_deleting_pod_sigkill_after_deadline():
    a = plan(pod(deleting=True), view(c(), terminating={"u1-web-0": NOW - 0.1}))
    assert [(k.signal) for k in a.kill] == ["KILL"]


def test_deleting_pod_with_nothing_live_removes_tears_down_and_confirms():
    a = plan(pod(deleting=True), view(c(status="stopped"), c(status="stopped", attempt=1, id="x")))
    assert sorted(a.remove) == ["u1-web-0", "x"]
    assert a.teardown and a.confirm_deletion and not a.start and not a.kill


def test_deleting_pod_never_restarts_crashed_container():
    a = plan(pod(deleting=True), view(c(status="stopped", exit_code=1)))
    assert not a.start


def test_gone_pod_uses_grace_from_labels_and_does_not_confirm():
    a = plan(None, view(c(grace=3)))
    assert [(k.signal, k.grace) for k in a.kill] == [("TERM", 3)]
    a = plan(None, view(c(status="stopped")))
    assert a.teardown and not a.confirm_deletion and a.remove == ["u1-web-0"]


def test_gone_pod_with_nothing_left_tears_down():
    a = plan(None, view(ip=None))
    assert a.teardown and a.remove == [] and not a.confirm_deletion


def test_finished_pod_does_not_recreate_sandbox():
    p = pod(policy="Never")
    a = plan(p, view(c(status="stopped", exit_code=0, p=p), ip=None))
    assert not a.create_sandbox and not a.has_work


# ---------------------------------------------------------------------------- what the worker gathers
STOPPED0 = c(status="stopped", attempt=0)
SYNTH1 = c(status="stopped", attempt=1, id="u1-web-1", synthetic=True, exit_code=128, reason="StartError")


@pytest.mark.parametrize("p,containers,attempts", [
    (pod("web", "side"), (), {"web": 0, "side": 0}),                        # nothing yet: attempt 0
    (pod(), (c(),), {}),                                                    # running: nothing new
    (pod(), (c(status="created"),), {}),                                    # created: started, not replaced
    (pod(), (c(status="unknown"),), {}),
    (pod(), (c(attempt=3, status="stopped"), c(attempt=2, status="stopped")), {"web": 4}),  # latest + 1
    (pod(), (STOPPED0, SYNTH1), {"web": 2}),                                # a failed start is an attempt
    (pod(policy="Never"), (c(status="stopped"),), {"web": 1}),              # looked up even if never started
    (pod(deleting=True), (), {}),                                           # deleting: nothing starts
    (None, (c(status="stopped"),), {}),                                     # gone
])
def test_next_attempts_are_the_ids_looked_up_for_leftovers(p, containers, attempts):
    assert next_attempts(p, view(*containers)) == attempts


@pytest.mark.parametrize("containers", [
    (), (c(status="stopped", attempt=3), c(status="stopped", attempt=2)), (STOPPED0, SYNTH1),
    (c(status="stopped", exit_code=143, spec_hash="old"),),
])
def test_new_containers_start_as_the_next_attempts(containers):
    p, v = pod(), view(*containers)
    assert {s.name: s.attempt for s in plan(p, v).start} == next_attempts(p, v)


@pytest.mark.parametrize("p,containers,counted", [
    (pod(), (c(status="stopped", attempt=2), c(status="stopped", attempt=1)), {"web": "u1-web-2"}),  # latest only
    (pod(), (c(attempt=1), c(status="stopped", attempt=0)), {}),           # latest live (an older attempt exited)
    (pod(), (c(status="stopped", finished_at=None),), {}),                  # no finish time yet
    (pod(), (STOPPED0, SYNTH1), {"web": "u1-web-1"}),                       # a failed start counts
    (pod(policy="Never"), (c(status="stopped"),), {"web": "u1-web-0"}),     # the policy is the plan's business
    (pod(deleting=True), (c(status="stopped"),), {}),                       # deleting: no restart to delay
    (None, (c(status="stopped"),), {}),
])
def test_counted_exits_are_what_the_back_off_counts(p, containers, counted):
    assert {n: x.id for n, x in counted_exits(p, view(*containers)).items()} == counted


# ---------------------------------------------------------------------------- adopt or clear leftovers
@pytest.mark.parametrize("containers,leftover,adopt,start", [
    # the view lost a running attempt 0: adopted, never started again, and nothing else this pass
    ((), c(attempt=0), ["u1-web-0"], []),
    ((c(status="stopped", attempt=0),), c(attempt=1, id="u1-web-1"), ["u1-web-1"], []),
    # a create that crashed before its start: the start replaces it
    ((), c(status="created", attempt=0), [], [StartContainer("web", 0, replace_leftover=True)]),
    ((c(status="stopped", attempt=0),), c(status="stopped", attempt=1, id="u1-web-1"), [],
     [StartContainer("web", 1, replace_leftover=True)]),
    ((), c(status="unknown", attempt=0), [], [StartContainer("web", 0, replace_leftover=True)]),
    # no leftover: a plain start
    ((), None, [], [StartContainer("web", 0)]),
])
def test_leftover_at_a_next_attempt_is_adopted_or_replaced(containers, leftover, adopt, start):
    a = plan(pod(), view(*containers, leftovers=[leftover] if leftover else []))
    assert a.adopt == adopt and a.start == start
    assert a.has_work


def test_adoption_plans_nothing_else_for_the_pass():
    a = plan(pod("web", "side"), view(ip=None, leftovers=[c(attempt=0)]))
    assert a.adopt == ["u1-web-0"]
    assert not a.create_sandbox and not a.start and not a.kill and not a.remove and not a.waiting


def test_leftover_stays_until_a_start_needs_its_id():
    bo = Backoff(not_before=NOW + 20, delay=20, exits=3)
    a = plan(pod(), view(c(status="stopped", attempt=0), leftovers=[c(status="created", attempt=1, id="u1-web-1")]),
             backoff={"web": bo})
    assert not a.start and not a.adopt and not a.remove and a.waiting["web"].reason == "CrashLoopBackOff"


# ---------------------------------------------------------------------------- sandbox retry
@pytest.mark.parametrize("containers,network_ready,retry_at,sandbox,start,wake", [
    ((), True, NOW + 5, False, [], NOW + 5),                                # held: nothing starts, wake at the retry
    ((), True, NOW, True, [StartContainer("web", 0)], None),                # retry time reached
    ((), True, 0.0, True, [StartContainer("web", 0)], None),                # never failed
    ((c(status="created", attempt=1),), True, NOW + 5, False, [], NOW + 5),  # a created container waits too
    ((c(),), True, NOW + 5, False, [], NOW + 5),                            # adopted running pod: recovery waits
    ((), False, NOW + 5, False, [], None),                                  # no podCIDR: that wait comes first
    ((c(status="stopped", exit_code=0),), True, NOW + 5, False, [], None),  # finished under Never: no sandbox
])
def test_failed_sandbox_is_retried_after_its_retry_time(containers, network_ready, retry_at, sandbox, start, wake):
    p = pod(policy="Never" if any(x.exit_code == 0 for x in containers) else "Always")
    a = plan(p, view(*containers, ip=None), network_ready=network_ready, sandbox_retry_at=retry_at)
    assert (a.create_sandbox, a.start, a.wake_at) == (sandbox, start, wake)


def test_sandbox_retry_time_does_not_matter_with_a_sandbox():
    a = plan(pod(), view(), sandbox_retry_at=NOW + 5)
    assert a.start == [StartContainer("web", 0)] and a.wake_at is None


# ---------------------------------------------------------------------------- back-off events, wake-ups
CRASH_BO = Backoff(not_before=NOW + 20, delay=20, exits=3)
PULL_BO = PullFailure("reg/missing:v1", "ErrImagePull", "not found", at=NOW - 5, retry_at=NOW + 5)


@pytest.mark.parametrize("containers,kw,evented,events", [
    ((c(status="stopped", attempt=2),), {"backoff": {"web": CRASH_BO}}, (),
     [PodEvent("Warning", "BackOff", "Back-off restarting failed container web in pod web-1_default(u1)",
               "backoff/u1-web-2")]),
    ((c(status="stopped", attempt=2),), {"backoff": {"web": CRASH_BO}}, ("backoff/u1-web-2",), []),   # once per exit
    ((), {"pull_failures": {"web": PULL_BO}}, (),
     [PodEvent("Normal", "BackOff", 'Back-off pulling image "reg/missing:v1"', f"pullbackoff/web/{NOW - 5}")]),
    ((), {"pull_failures": {"web": PULL_BO}}, (f"pullbackoff/web/{NOW - 5}",), []),                    # once per failure
    ((), {"pull_failures": {"web": PullFailure(**{**PULL_BO.__dict__, "fresh": True})}}, (), []),  # ErrImagePull: none
    ((c(status="stopped", attempt=2),), {"backoff": {"web": Backoff(NOW - 1, 10, 2)}}, (), []),   # expired: restart
])
def test_back_off_events_once(containers, kw, evented, events):
    a = plan(pod(), view(*containers), evented=evented, **kw)
    assert a.events == events


def test_no_events_for_a_deleting_pod():
    a = plan(pod(deleting=True), view(c(status="stopped")), backoff={"web": CRASH_BO})
    assert a.events == []


@pytest.mark.parametrize("p,containers,terminating,kw,wake", [
    (pod(), (c(),), {}, {}, None),                                           # steady: no timer
    (pod(), (c(status="stopped"),), {}, {"backoff": {"web": CRASH_BO}}, NOW + 20),            # back-off expiry
    (pod(), (), {}, {"pull_failures": {"web": PULL_BO}}, NOW + 5),           # pull retry
    (pod(), (c(),), {"u1-web-0": NOW + 7}, {}, NOW + 7),                     # SIGKILL deadline
    # any terminating container bounds the wake-up, even one the rules do not look at this pass
    (pod(), (c(attempt=1), c(attempt=0, id="old")), {"old": NOW + 3}, {}, NOW + 3),
    (pod(deleting=True), (c(),), {"u1-web-0": NOW + 9}, {}, NOW + 9),
    (pod(), (c(status="stopped"),), {"x": NOW + 30}, {"backoff": {"web": CRASH_BO}}, NOW + 20),  # the earliest
])
def test_wake_at_is_the_earliest_timer(p, containers, terminating, kw, wake):
    assert plan(p, view(*containers, terminating=terminating), **kw).wake_at == wake


@pytest.mark.parametrize("delay,text", [(0.25, "250ms"), (1.5, "1.5s"), (10, "10s"), (80, "1m20s"),
                                        (300, "5m0s")])
def test_back_off_duration_format(delay, text):
    from shoal.agent.plan import _fmt_seconds
    assert _fmt_seconds(delay) == text
