"""machinery.control.events.EventRecorder — the one recorder of the agent and the controllers.

The Event each side writes (table), the options (spam filter, aggregation window, host,
eventTime), and the hold: events held while the component keeps busy, written in order
once it is quiet (or after max_delay), at once on flush/stop. Time bounds are one-sided
and generous: a batch may end late on a loaded machine, never early while touches come."""
import threading
import time

import pytest

from shoal.machinery.api import errors
from shoal.machinery.control.clock import FakeClock, RealClock
from shoal.machinery.control.events import EventRecorder, RecordingEvents
from test_holdback import touching

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0      # 2027-01-15T08:00:00Z
POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web-1", "namespace": "default", "uid": "u1", "resourceVersion": "7"}}
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "n1"}}
# What agent/agent.py and controller/manager.py build.
AGENT = dict(host="n1", event_time=True, quiet=0.1, burst=None, aggregate_window=600.0)
CONTROLLER: dict = {}


class RecordingClient:
    """Records creates and patches; `gone` names Events a patch finds deleted."""

    def __init__(self):
        self.calls = []
        self.bodies = []
        self.gone: set[str] = set()
        self.lock = threading.Lock()

    def create(self, kind, body, namespace=None):
        with self.lock:
            self.bodies.append((namespace, body))
            self.calls.append(("create", body["reason"], body["message"], body["count"]))
        return body

    def patch(self, kind, name, patch, namespace=None):
        if name in self.gone:
            raise errors.NotFound(f'events "{name}" not found')
        with self.lock:
            self.calls.append(("patch", name, patch["count"]))
        return patch


def written(rec: EventRecorder, client: RecordingClient) -> list:
    rec.flush(timeout=10.0)
    return client.calls


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


# -- the Event each side writes -----------------------------------------------------------------
@pytest.mark.parametrize("component, options, obj, want_ns, want", [
    ("controller-manager", CONTROLLER, POD, "default", {
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u1",
                           "resourceVersion": "7"},
        "source": {"component": "controller-manager"}, "reportingComponent": "controller-manager"}),
    ("shoal-agent", AGENT, POD, "default", {
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u1",
                           "resourceVersion": "7"},
        "source": {"component": "shoal-agent", "host": "n1"}, "reportingComponent": "shoal-agent",
        "reportingInstance": "n1", "eventTime": "2027-01-15T08:00:00.250000Z"}),
    # a cluster-scoped object: no namespace in the reference, the Event in `default`
    ("shoal-agent", AGENT, NODE, "default", {
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "n1"},
        "source": {"component": "shoal-agent", "host": "n1"}, "reportingComponent": "shoal-agent",
        "reportingInstance": "n1", "eventTime": "2027-01-15T08:00:00.250000Z"}),
])
def test_the_event_written(component, options, obj, want_ns, want):
    c = RecordingClient()
    rec = EventRecorder(c, component, clock=FakeClock(T0 + 0.25), **options).start()
    try:
        rec.event(obj, "Normal", "Started", "Started container web")
        written(rec, c)
    finally:
        rec.stop()
    (ns, body), = c.bodies
    name = obj["metadata"]["name"]
    assert ns == want_ns and body["metadata"]["namespace"] == want_ns
    assert body["metadata"]["name"].startswith(f"{name}.") and int(body["metadata"]["name"][len(name) + 1:], 16) > 0
    common = {"apiVersion": "v1", "kind": "Event", "reason": "Started", "message": "Started container web",
              "type": "Normal", "count": 1, "firstTimestamp": "2027-01-15T08:00:00Z",
              "lastTimestamp": "2027-01-15T08:00:00Z"}
    assert {k: v for k, v in body.items() if k != "metadata"} == {**common, **want}


def test_event_names_are_unique_within_one_instant():
    c = RecordingClient()
    rec = EventRecorder(c, "t", clock=FakeClock(T0)).start()
    try:
        for i in range(20):
            rec.event(POD, "Normal", "Pulled", f"message {i}")
        written(rec, c)
    finally:
        rec.stop()
    names = [b["metadata"]["name"] for _, b in c.bodies]
    assert len(set(names)) == 20


# -- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize("burst, refill, steps, want", [
    # steps: ("e", object) records an event, ("t", seconds) advances the fake clock
    (3, 10, [("e", "a")] * 4, ["a", "a", "a"]),                        # the bucket holds 3
    (3, 10, [("e", "a")] * 3 + [("e", "b")], ["a", "a", "a", "b"]),     # another object: its own bucket
    (3, 10, [("e", "a")] * 4 + [("t", 10), ("e", "a"), ("e", "a")], ["a", "a", "a", "a"]),  # one back per 10 s
    (None, 10, [("e", "a")] * 30, ["a"] * 30),                          # burst=None: no filter
])
def test_spam_filter(burst, refill, steps, want):
    clock = FakeClock(T0)
    c = RecordingClient()
    rec = EventRecorder(c, "t", clock=clock, burst=burst, refill_seconds=refill, quiet=0).start()
    objs = {n: {"kind": "ReplicaSet", "metadata": {"name": f"web-{n}", "namespace": "default", "uid": n}}
            for n in ("a", "b")}
    try:
        for i, (op, arg) in enumerate(steps):
            if op == "t":
                clock.advance(arg)
            else:
                rec.event(objs[arg], "Normal", "SuccessfulCreate", f"Created pod: web-{arg}-{i}")
        written(rec, c)
    finally:
        rec.stop()
    assert [body["involvedObject"]["uid"] for _, body in c.bodies] == want
    assert rec.dropped == sum(1 for op, _ in steps if op == "e") - len(want)


@pytest.mark.parametrize("window, gap, want", [
    (None, 3600.0, ["create", "patch"]),     # the controllers: a remembered series is bumped, however old
    (600.0, 30.0, ["create", "patch"]),      # the agent: within the window, bumped
    (600.0, 601.0, ["create", "create"]),    # the agent: past the window, a new Event
])
def test_aggregation_window(window, gap, want):
    clock = FakeClock(T0)
    c = RecordingClient()
    rec = EventRecorder(c, "t", clock=clock, aggregate_window=window, quiet=0).start()
    try:
        rec.event(POD, "Warning", "BackOff", "Back-off restarting failed container web")
        written(rec, c)
        clock.advance(gap)
        rec.event(POD, "Warning", "BackOff", "Back-off restarting failed container web")
        assert [call[0] for call in written(rec, c)] == want
    finally:
        rec.stop()


def test_a_series_whose_event_is_gone_starts_a_new_one():
    c = RecordingClient()
    rec = EventRecorder(c, "t", clock=FakeClock(T0), quiet=0).start()
    try:
        rec.event(POD, "Warning", "BackOff", "again")
        written(rec, c)
        c.gone.add(c.bodies[0][1]["metadata"]["name"])
        rec.event(POD, "Warning", "BackOff", "again")
        assert [call[0] for call in written(rec, c)] == ["create", "create"]
    finally:
        rec.stop()


def test_repeats_in_one_batch_are_aggregated_and_other_objects_are_not():
    c = RecordingClient()
    rec = EventRecorder(c, "shoal-agent", clock=RealClock(), **{**AGENT, "quiet": 0.05}).start()
    other = {**POD, "metadata": {**POD["metadata"], "name": "web-2", "uid": "u2"}}
    try:
        for _ in range(3):
            rec.event(POD, "Warning", "BackOff", "Back-off restarting failed container web")
        rec.event(other, "Warning", "BackOff", "Back-off restarting failed container web")
        calls = written(rec, c)
        first = c.bodies[0][1]["metadata"]["name"]
        assert calls[1:3] == [("patch", first, 2), ("patch", first, 3)]
        assert [call[0] for call in calls] == ["create", "patch", "patch", "create"]
        assert c.bodies[1][1]["involvedObject"]["name"] == "web-2"
    finally:
        rec.stop()


def test_recording_events_double():
    ev = RecordingEvents()
    ev.event(POD, "Normal", "Scheduled", "Successfully assigned default/web-1 to n1")
    ev.event(NODE, "Normal", "Starting", "Started")
    assert ev.events == [("default/web-1", "Normal", "Scheduled", "Successfully assigned default/web-1 to n1"),
                         ("n1", "Normal", "Starting", "Started")]
    assert ev.reasons() == ["Scheduled", "Starting"]


# -- the hold -----------------------------------------------------------------------------------
@pytest.mark.parametrize("component, options", [("shoal-agent", AGENT), ("controller-manager", CONTROLLER)])
def test_a_held_burst_is_written_whole_and_in_order(component, options):
    c = RecordingClient()
    rec = EventRecorder(c, component, clock=RealClock(), **{**options, "quiet": 0.2, "max_delay": 30.0}).start()
    try:
        for reason in ("Pulled", "Created", "Started"):
            rec.event(POD, "Normal", reason, f"{reason} container web")
        assert wait_for(lambda: len(c.calls) == 3)
        assert [call[1] for call in c.calls] == ["Pulled", "Created", "Started"]
    finally:
        rec.stop()


def test_events_wait_while_the_component_is_busy_then_go_in_order():
    c = RecordingClient()
    rec = EventRecorder(c, "default-scheduler", quiet=0.5, max_delay=60.0).start()
    try:
        th = touching(rec, 1.0)
        for reason in ("Scheduled", "Pulled", "Started"):
            rec.event(POD, "Normal", reason, f"{reason} web-1")
        time.sleep(0.6)
        assert c.calls == []           # touched every 20 ms: still held
        th.join()
        assert wait_for(lambda: len(c.calls) == 3, timeout=10.0)
        assert [call[1] for call in c.calls] == ["Scheduled", "Pulled", "Started"]
    finally:
        rec.stop()


def test_flush_writes_held_events_at_once():
    c = RecordingClient()
    rec = EventRecorder(c, "shoal-agent", **{**AGENT, "quiet": 60.0, "max_delay": 60.0}).start()
    try:
        rec.event(POD, "Normal", "Started", "Started container web")
        t0 = time.monotonic()
        rec.flush(timeout=10.0)
        assert time.monotonic() - t0 < 10.0
        assert c.calls == [("create", "Started", "Started container web", 1)]
    finally:
        rec.stop()


def test_a_steady_stream_is_written_after_max_delay_not_never():
    c = RecordingClient()
    rec = EventRecorder(c, "shoal-agent", **{**AGENT, "quiet": 0.5, "max_delay": 0.3}).start()
    stop = threading.Event()

    def steady():
        i = 0
        while not stop.is_set():
            rec.event(POD, "Warning", "Unhealthy", f"probe failed {i}")
            i += 1
            time.sleep(0.02)     # never quiet for 0.5 s

    t = threading.Thread(target=steady, daemon=True)
    t.start()
    try:
        assert wait_for(lambda: len(c.calls) > 0, timeout=10.0), "the stream held every event"
    finally:
        stop.set()
        t.join()
        rec.stop()


@pytest.mark.parametrize("component, options", [("shoal-agent", AGENT), ("controller-manager", CONTROLLER)])
def test_stop_writes_what_is_held(component, options):
    c = RecordingClient()
    rec = EventRecorder(c, component, **{**options, "quiet": 60.0, "max_delay": 60.0}).start()
    rec.event(POD, "Normal", "Killing", "Stopping container web")
    rec.stop(timeout=10.0)
    assert c.calls == [("create", "Killing", "Stopping container web", 1)]


def test_a_full_queue_drops_and_never_blocks():
    rec = EventRecorder(RecordingClient(), "t", max_pending=2)     # not started: nothing drains the queue
    t0 = time.monotonic()
    for i in range(5):
        rec.event(POD, "Normal", "Pulled", f"m{i}")
    assert time.monotonic() - t0 < 1.0 and rec.dropped == 3
    rec.stop()                                                     # not started: a no-op


# -- the API server's limits ------------------------------------------------------------------------
class LimitingClient(RecordingClient):
    """Answers 429 (Retry-After `retry` s) to every create while `limited`."""

    def __init__(self, retry=2):
        super().__init__()
        self.limited = False
        self.retry = retry
        self.refused = 0

    def create(self, kind, body, namespace=None):
        if self.limited:
            self.refused += 1
            raise errors.TooManyRequests("Too many requests: limit reached on type User for key system:node:n1",
                                         details={"retryAfterSeconds": self.retry})
        return super().create(kind, body, namespace)


def test_429_drops_the_event_and_pauses_writes_until_retry_after():
    clock = FakeClock(T0)
    c = LimitingClient(retry=2)
    rec = EventRecorder(c, "shoal-agent", clock=clock, **{**AGENT, "quiet": 0}).start()
    try:
        c.limited = True
        rec.event(POD, "Normal", "Pulled", "one")
        rec.event(POD, "Normal", "Created", "two")
        rec.event(POD, "Normal", "Started", "three")
        assert written(rec, c) == [] and c.refused == 1       # asked once; the others dropped unasked
        assert rec.dropped == 3
        c.limited = False
        clock.advance(1.0)
        rec.event(POD, "Normal", "Killing", "still paused")
        assert written(rec, c) == [] and rec.dropped == 4
        clock.advance(1.5)                                    # past Retry-After: written again
        rec.event(POD, "Normal", "Killing", "after the pause")
        assert written(rec, c) == [("create", "Killing", "after the pause", 1)]
    finally:
        rec.stop()


def test_a_long_message_is_cut_to_the_servers_limit():
    from shoal.machinery.control.events import MAX_MESSAGE_BYTES, truncate_message
    c = RecordingClient()
    rec = EventRecorder(c, "t", clock=FakeClock(T0), quiet=0).start()
    try:
        rec.event(POD, "Warning", "Failed", "é" * 2000)
        [(_, body)] = [b for b in c.bodies] if written(rec, c) else [(None, None)]
        assert len(body["message"].encode()) <= MAX_MESSAGE_BYTES and body["message"].endswith("...")
    finally:
        rec.stop()
    assert truncate_message("x" * MAX_MESSAGE_BYTES) == "x" * MAX_MESSAGE_BYTES
    assert truncate_message("x" * (MAX_MESSAGE_BYTES + 1)) == "x" * (MAX_MESSAGE_BYTES - 3) + "..."
