"""The agent's EventRecorder: events held while the agent keeps emitting, written in order
once it is quiet (or after max_delay), at once on flush; aggregation unchanged."""
import threading
import time

from shoal.machinery.control.clock import RealClock
from shoal.agent.events import EventRecorder

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default", "uid": "u1"}}


class RecordingClient:
    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def create(self, kind, obj, namespace=None):
        with self.lock:
            self.calls.append(("create", obj["reason"], obj["message"], obj["count"]))
        return obj

    def patch(self, kind, name, patch, namespace=None):
        with self.lock:
            self.calls.append(("patch", name, patch["count"]))
        return patch


def recorder(client, **kw):
    return EventRecorder(client, node_name="n1", clock=RealClock(), **kw)


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_a_held_burst_is_written_whole_and_in_order():
    c = RecordingClient()
    r = recorder(c, quiet=0.2, max_delay=30.0)
    try:
        for reason in ("Pulled", "Created", "Started"):
            r.emit(POD, "Normal", reason, f"{reason} container web")
        assert wait_for(lambda: len(c.calls) == 3)
        assert [call[1] for call in c.calls] == ["Pulled", "Created", "Started"]
    finally:
        r.stop()


def test_flush_writes_held_events_at_once():
    c = RecordingClient()
    r = recorder(c, quiet=60.0, max_delay=60.0)    # without the flush nothing would go for a minute
    try:
        r.emit(POD, "Normal", "Started", "Started container web")
        t0 = time.monotonic()
        r.flush(timeout=10.0)
        assert time.monotonic() - t0 < 10.0
        assert c.calls == [("create", "Started", "Started container web", 1)]
    finally:
        r.stop()


def test_a_steady_stream_is_written_after_max_delay_not_never():
    c = RecordingClient()
    r = recorder(c, quiet=0.5, max_delay=0.3)
    stop = threading.Event()

    def steady():
        i = 0
        while not stop.is_set():
            r.emit(POD, "Warning", "Unhealthy", f"probe failed {i}")
            i += 1
            time.sleep(0.02)     # never quiet for 0.5 s

    t = threading.Thread(target=steady, daemon=True)
    t.start()
    try:
        assert wait_for(lambda: len(c.calls) > 0, timeout=10.0), "the stream held every event"
    finally:
        stop.set()
        t.join()
        r.stop()


def test_repeats_in_one_batch_are_aggregated():
    c = RecordingClient()
    r = recorder(c, quiet=0.05)
    try:
        for _ in range(3):
            r.emit(POD, "Warning", "BackOff", "Back-off restarting failed container web")
        r.flush()
        assert c.calls[0][:2] == ("create", "BackOff")
        assert [call[0] for call in c.calls[1:]] == ["patch", "patch"]
        assert [call[2] for call in c.calls[1:]] == [2, 3]
    finally:
        r.stop()


def test_stop_writes_what_is_held():
    c = RecordingClient()
    r = recorder(c, quiet=60.0, max_delay=60.0)
    r.emit(POD, "Normal", "Killing", "Stopping container web")
    r.stop()
    assert c.calls == [("create", "Killing", "Stopping container web", 1)]
