"""HoldBack (apiserver/holdback.py): batches held while the producer is busy, capped by
max_delay, ended at once by a marker; and the controllers' EventRecorder built on it.
Bounds here are one-sided and generous: a batch may end late on a loaded machine, never
early while touches keep coming."""
import threading
import time

from shoal.machinery.control.holdback import HoldBack
from shoal.machinery.control.events import EventRecorder


def touching(hb, seconds: float, every: float = 0.02) -> threading.Thread:
    def run():
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            hb.touch()
            time.sleep(every)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_batch_is_held_while_touches_keep_coming():
    hb = HoldBack(maxsize=10, quiet=0.5, max_delay=60.0)
    hb.put_nowait("a")
    t0 = time.monotonic()
    th = touching(hb, 1.2)
    hb.put_nowait("b")
    assert hb.next_batch() == ["a", "b"]
    assert time.monotonic() - t0 >= 1.2
    th.join()


def test_max_delay_ends_a_hold_that_would_never_end():
    hb = HoldBack(maxsize=10, quiet=30.0, max_delay=0.2)
    th = touching(hb, 1.0)
    hb.put_nowait("a")
    t0 = time.monotonic()
    assert hb.next_batch() == ["a"]
    assert time.monotonic() - t0 < 20.0
    th.join()


def test_a_marker_ends_the_batch_at_once_and_is_its_last_item():
    hb = HoldBack(maxsize=10, quiet=60.0, max_delay=60.0, ends=lambda item: item is None)
    for item in ("a", "b", None, "c"):
        hb.put_nowait(item)
    t0 = time.monotonic()
    assert hb.next_batch() == ["a", "b", None]
    assert time.monotonic() - t0 < 30.0
    hb.put_nowait(None)
    assert hb.next_batch() == ["c", None]


def test_without_quiet_every_item_is_its_own_batch():
    hb = HoldBack(maxsize=10, quiet=0.0, max_delay=60.0)
    hb.put_nowait("a")
    hb.put_nowait("b")
    assert hb.next_batch() == ["a"]
    assert hb.next_batch() == ["b"]


class RecordingClient:
    def __init__(self):
        self.lock = threading.Lock()
        self.created: list[str] = []

    def create(self, kind, body, namespace=None):
        with self.lock:
            self.created.append(body["reason"])
        return body

    def patch(self, kind, name, patch, namespace=None):
        return patch


POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default", "uid": "u1"}}


def test_controller_events_wait_while_the_cluster_is_busy_then_go_in_order():
    c = RecordingClient()
    rec = EventRecorder(c, "default-scheduler", quiet=0.5, max_delay=60.0)
    rec.start()
    try:
        th = touching(rec, 1.0)
        for reason in ("Scheduled", "Pulled", "Started"):
            rec.event(POD, "Normal", reason, f"{reason} web-1")
        time.sleep(0.6)
        assert c.created == []           # touched every 20 ms: still held
        th.join()
        deadline = time.monotonic() + 10
        while len(c.created) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.created == ["Scheduled", "Pulled", "Started"]
    finally:
        rec.stop()


def test_stopping_the_controller_recorder_writes_what_it_holds():
    c = RecordingClient()
    rec = EventRecorder(c, "controller-manager", quiet=60.0, max_delay=60.0)
    rec.start()
    rec.event(POD, "Normal", "SuccessfulCreate", "Created pod: web-1")
    rec.stop(flush_timeout=10.0)
    assert c.created == ["SuccessfulCreate"]
