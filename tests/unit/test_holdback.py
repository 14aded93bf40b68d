"""HoldBack (machinery/control/holdback.py): batches held while the producer is busy, capped by
max_delay, ended at once by a marker (the EventRecorder built on it: test_events.py).
Bounds here are one-sided and generous: a batch may end late on a loaded machine, never
early while touches keep coming."""
import threading
import time

from shoal.machinery.control.holdback import HoldBack


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
