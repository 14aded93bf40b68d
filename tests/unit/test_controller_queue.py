"""Work queue semantics: de-duplication, one key one worker, delays and back-off."""
import threading
import time

import pytest

from shoal.machinery.control import FakeClock, RateLimiter, Result, WorkQueue
from shoal.machinery.control.manager import Controller

pytestmark = pytest.mark.unit


def test_dedupe():
    q = WorkQueue()
    for k in ("a", "b", "a", "a"):
        q.add(k)
    assert len(q) == 2
    assert [q.get(block=False), q.get(block=False), q.get(block=False)] == ["a", "b", None]


def test_key_is_not_handed_out_twice_while_processing():
    q = WorkQueue()
    q.add("a")
    assert q.get(block=False) == "a"
    q.add("a")  # changed while being processed
    assert q.get(block=False) is None  # ...but not given to a second worker
    q.done("a")
    assert q.get(block=False) == "a"  # requeued once done
    q.done("a")
    assert q.get(block=False) is None


def test_add_after_with_fake_clock_and_earliest_wins():
    clock = FakeClock()
    q = WorkQueue(clock=clock)
    q.add_after("a", 10)
    q.add_after("a", 3)
    q.add_after("a", 20)
    assert q.get(block=False) is None
    clock.advance(3)
    assert q.get(block=False) == "a"
    q.done("a")
    clock.advance(30)
    assert q.get(block=False) is None  # superseded entries do not fire again


def test_rate_limited_backoff_grows_and_forget_resets():
    clock = FakeClock()
    q = WorkQueue(clock=clock, rate_limiter=RateLimiter(base=1, cap=5))
    delays = []
    for _ in range(5):
        q.add_rate_limited("k")
        waited = 0
        while q.get(block=False) is None:
            clock.advance(0.5)
            waited += 0.5
        q.done("k")
        delays.append(waited)
    assert delays == [1, 2, 4, 5, 5]
    q.forget("k")
    assert q.rate_limiter.when("k") == 1


def test_shutdown_wakes_blocked_getters():
    q = WorkQueue()
    out = []
    t = threading.Thread(target=lambda: out.append(q.get()))
    t.start()
    time.sleep(0.05)
    q.shut_down()
    t.join(2)
    assert out == [None] and not t.is_alive()


class Recorder:
    def __init__(self, results):
        self.results = list(results)
        self.calls = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def reconcile(self, key):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.calls.append(key)
            r = self.results.pop(0) if self.results else Result()
            if isinstance(r, Exception):
                raise r
            time.sleep(0.01)
            return r
        finally:
            with self.lock:
                self.active -= 1


def test_controller_error_means_backoff_retry_and_success_forgets():
    clock = FakeClock()
    rec = Recorder([RuntimeError("boom"), RuntimeError("boom"), Result()])
    c = Controller("t", rec, clock=clock, rate_limiter=RateLimiter(base=1, cap=10))
    c.enqueue("k")
    assert c.process_one(block=False)
    assert c.queue.rate_limiter.failures("k") == 1
    assert not c.process_one(block=False)  # waiting out its back-off
    clock.advance(1)
    assert c.process_one(block=False)
    clock.advance(2)
    assert c.process_one(block=False)
    assert rec.calls == ["k", "k", "k"] and c.queue.rate_limiter.failures("k") == 0


def test_controller_requeue_after():
    clock = FakeClock()
    rec = Recorder([Result(requeue_after=7)])
    c = Controller("t", rec, clock=clock)
    c.enqueue("k")
    c.process_one(block=False)
    clock.advance(6.9)
    assert not c.process_one(block=False)
    clock.advance(0.2)
    assert c.process_one(block=False)


def test_one_key_never_in_two_workers():
    rec = Recorder([])
    c = Controller("t", rec, workers=4)
    c.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            c.enqueue("same")
            time.sleep(0.001)
    finally:
        c.stop()
    assert rec.max_active == 1 and len(rec.calls) > 5

