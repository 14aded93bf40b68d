"""Event TTL (Kubernetes' --event-ttl): the server deletes Events that last happened longer ago
than the TTL, in batches, each with a DELETED watch event; fresher Events stay.

Two ways: the sweep itself on a temp SQLite store with an injected clock (exact ages, small
batches), and the real server's timer with a short TTL and interval, seen through a watch."""
import threading
import time

import pytest

from shoal.apiserver.registry import Registry, event_last_seen
from shoal.apiserver.settings import Settings
from shoal.apiserver.store import Store
from shoal.machinery.api.times import format_time

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0


def event(name, *, created=None, last=None, event_time=None, series_last=None, ns="default"):
    md = {"name": name, "namespace": ns, "uid": f"u-{name}"}
    if created is not None:
        md["creationTimestamp"] = format_time(created)
    ev = {"apiVersion": "v1", "kind": "Event", "metadata": md, "reason": "Test",
          "involvedObject": {"kind": "Pod", "name": "p", "namespace": ns}}
    if last is not None:
        ev["lastTimestamp"] = format_time(last)
    if event_time is not None:
        ev["eventTime"] = format_time(event_time)
    if series_last is not None:
        ev["series"] = {"count": 2, "lastObservedTime": format_time(series_last)}
    return ev


@pytest.mark.parametrize("ev,want", [
    (event("a", created=100.0), 100.0),
    (event("a", created=100.0, last=200.0), 200.0),                      # a repeat moved it forward
    (event("a", created=300.0, last=200.0), 200.0),                      # posted late: its own account wins
    (event("a", created=100.0, event_time=150.0), 150.0),
    (event("a", created=100.0, event_time=150.0, series_last=250.0), 250.0),
    (event("a"), None),
    ({"metadata": {"name": "a", "creationTimestamp": "not a time"}, "lastTimestamp": None}, None),
])
def test_event_last_seen_prefers_the_events_own_last_occurrence(ev, want):
    assert event_last_seen(ev) == want


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/state.db")
    try:
        yield s
    finally:
        s.close()


def test_sweep_deletes_expired_events_in_batches_with_deleted_watch_events(store):
    clock = [NOW]
    reg = Registry(store, Settings(event_ttl=3600.0), clock=lambda: clock[0])
    reg.EVENT_TTL_BATCH = 3       # several pages, and pages that mix old and fresh
    old = [f"old-{i}" for i in range(7)]
    fresh = [f"fresh-{i}" for i in range(5)]
    for i, name in enumerate(old):
        store.create("events", event(name, created=NOW - 7200 - i, ns="default" if i % 2 else "kube-system"))
    for name in fresh:
        store.create("events", event(name, created=NOW - 7200, last=NOW - 60))
    store.create("events", event("no-time"))                     # nothing to age by: kept
    store.create("pods", {"apiVersion": "v1", "kind": "Pod",      # other kinds are never touched
                          "metadata": {"name": "p", "namespace": "default", "uid": "up",
                                       "creationTimestamp": format_time(NOW - 86400)}})
    before = store.current_revision()

    assert reg.expire_events() == len(old)

    left = sorted(o["metadata"]["name"] for o in store.list("events")[0])
    assert left == sorted(fresh + ["no-time"])
    assert store.get("pods", "default", "p") is not None
    deleted = [e for e in store.events_after(before)]
    assert {e.type for e in deleted} == {"DELETED"}
    assert sorted(e.object["metadata"]["name"] for e in deleted) == sorted(old)
    assert all(e.resource == "events" for e in deleted)
    # the DELETED events carry the last value at its new revision, as every delete's do
    assert all(e.object["metadata"]["resourceVersion"] == str(e.revision) for e in deleted)

    # nothing more to do until the fresh ones age past the TTL
    assert reg.expire_events() == 0
    clock[0] = NOW - 60 + 3600 + 1
    assert reg.expire_events() == len(fresh)
    assert [o["metadata"]["name"] for o in store.list("events")[0]] == ["no-time"]


def test_delete_batch_skips_objects_that_moved_or_went(store):
    a = store.create("events", event("a", created=NOW))
    b = store.create("events", event("b", created=NOW))
    c = store.create("events", event("c", created=NOW))
    b2 = store.update("events", dict(b, reason="Again"), expected_revision=int(b["metadata"]["resourceVersion"]))
    store.delete("events", "default", "c")
    out = store.delete_batch("events", [("default", "a", int(a["metadata"]["resourceVersion"])),
                                        ("default", "b", int(b["metadata"]["resourceVersion"])),
                                        ("default", "c", int(c["metadata"]["resourceVersion"]))])
    assert [o["metadata"]["name"] for o in out] == ["a"]
    assert store.get("events", "default", "a") is None
    assert store.get("events", "default", "b")["metadata"]["resourceVersion"] == b2["metadata"]["resourceVersion"]
    assert store.delete_batch("events", []) == []


def test_server_expires_old_events_on_its_timer(tmp_path):
    from shoal.testkit.apiserver import start_test_server
    srv = start_test_server(tmp_path, event_ttl=30.0, event_ttl_interval=0.2)
    try:
        c = srv.client()
        rv = c.list("events", "default")["metadata"]["resourceVersion"]
        seen: list[tuple[str, str]] = []
        done = threading.Event()

        def watch():
            for ev in c.watch("events", "default", resource_version=rv, timeout_seconds=20):
                seen.append((ev["type"], ev["object"]["metadata"]["name"]))
                if ("DELETED", "old") in seen:
                    done.set()
                    return

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        now = time.time()
        body = {"apiVersion": "v1", "kind": "Event", "reason": "Test",
                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}}
        c.create("events", dict(body, metadata={"name": "old"}, firstTimestamp=format_time(now - 3600),
                                lastTimestamp=format_time(now - 3600)))
        c.create("events", dict(body, metadata={"name": "fresh"}, lastTimestamp=format_time(now)))
        assert done.wait(15), f"no DELETED event for the expired Event; saw {seen}"
        assert [o["metadata"]["name"] for o in c.list("events", "default")["items"]] == ["fresh"]
        assert ("DELETED", "fresh") not in seen
    finally:
        srv.stop()
