"""Watch: exactly-once in-order delivery across reconnects, 410 after compaction, filtering, bookmarks."""
import threading
import time

import httpx
import pytest

from shoal.machinery.api import errors
from shoal.testkit.apiserver import wait_for


def cm_pod(name, labels=None, node=None):
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"app": "w"}},
         "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
    if node:
        p["spec"]["nodeName"] = node
    return p


def test_watch_every_event_exactly_once_in_order_across_reconnects(api):
    c = api.client()
    start_rv = c.list("pods")["metadata"]["resourceVersion"]
    n_writes = 120
    written: list[int] = []

    def writer():
        for i in range(n_writes // 3):
            p = c.create("pods", cm_pod(f"p{i}"))
            written.append(int(p["metadata"]["resourceVersion"]))
            p["metadata"]["labels"]["step"] = "1"
            written.append(int(c.update("pods", p)["metadata"]["resourceVersion"]))
            written.append(int(c.delete("pods", f"p{i}")["metadata"]["resourceVersion"]))

    t = threading.Thread(target=writer)
    t.start()
    seen: list[tuple[str, int]] = []
    rv = start_rv
    deadline = time.time() + 60
    # Reconnect every few events, always from the last resourceVersion seen.
    while len(seen) < n_writes and time.time() < deadline:
        got = 0
        for ev in c.watch("pods", resource_version=rv, timeout_seconds=2):
            seen.append((ev["type"], int(ev["object"]["metadata"]["resourceVersion"])))
            rv = ev["object"]["metadata"]["resourceVersion"]
            got += 1
            if got == 7:
                break
    t.join()
    revs = [r for _, r in seen]
    assert revs == sorted(written), "every write seen exactly once, in revision order"
    assert len(set(revs)) == len(revs)
    assert [ty for ty, _ in seen[:3]] == ["ADDED", "MODIFIED", "DELETED"]


def test_watch_without_resource_version_starts_with_added_for_current_objects(api):
    c = api.client()
    c.create("pods", cm_pod("a"))
    c.create("pods", cm_pod("b"))
    evs = []
    for ev in c.watch("pods", timeout_seconds=1):
        evs.append(ev)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [("ADDED", "a"), ("ADDED", "b")]


def _relabelled(c, pod, times):
    """`pod` after `times` updates (one log row each)."""
    for i in range(times):
        pod["metadata"]["labels"]["i"] = str(i)
        pod = c.update("pods", pod)
    return pod


def test_410_gone_after_compaction(api):
    c = api.client()
    first = _relabelled(c, c.create("pods", cm_pod("a")), 5)
    # Let the watch hub read the log up to the last write before compacting right behind it
    # (in a real server, compaction trails the present by the history window, minutes).
    rv = int(first["metadata"]["resourceVersion"])
    wait_for(lambda: api.app.state.hub.latest >= rv, timeout=10, interval=0.01, what="the watch hub at the last write")
    api.store.compact(revision=rv - 1)
    with pytest.raises(errors.Gone) as ei:
        for _ in c.watch("pods", resource_version="1", timeout_seconds=2):
            pass
    assert ei.value.code == 410
    # From a recent revision the watch still works.
    got = list(c.watch("pods", resource_version=str(int(first["metadata"]["resourceVersion"]) - 1),
                       timeout_seconds=1))
    assert [e["type"] for e in got] == ["MODIFIED"]


def test_compaction_in_chunks_reaches_its_target_and_keeps_the_rest(api, monkeypatch):
    c = api.client()
    p = _relabelled(c, c.create("pods", cm_pod("chunky")), 34)
    latest = int(p["metadata"]["resourceVersion"])
    monkeypatch.setattr(type(api.store), "COMPACT_CHUNK", 5)
    target = latest - 3
    assert api.store.compact(revision=target) == target
    assert api.store.compacted_revision == target
    assert [e.revision for e in api.store.events_after(target)] == [target + 1, target + 2, latest]
    with pytest.raises(errors.Gone):
        api.store.events_after(target - 1)
    assert api.store.compact(revision=target) == target       # nothing left to do: no change


def test_a_compaction_by_another_server_never_hides_events(api):
    """Another server process sharing the database writes and then compacts before this
    server's watch hub has polled the log: a watch from the compacted revision still gets
    every later event (from the log), and one from before it gets 410."""
    from shoal.apiserver.store import Store
    other = Store(api.settings.datastore_url())
    try:
        c = api.client()
        p = c.create("pods", cm_pod("shared"))
        o = other.get("pods", "default", "shared")
        for i in range(6):
            o["metadata"]["labels"]["i"] = str(i)
            o = other.update("pods", o, expected_revision=int(o["metadata"]["resourceVersion"]))
        latest = int(o["metadata"]["resourceVersion"])
        other.compact(revision=latest - 2)
        got = [e["object"]["metadata"]["resourceVersion"]
               for e in c.watch("pods", resource_version=str(latest - 2), timeout_seconds=1)]
        assert got == [str(latest - 1), str(latest)]
        with pytest.raises(errors.Gone):
            list(c.watch("pods", resource_version=p["metadata"]["resourceVersion"], timeout_seconds=1))
    finally:
        other.close()


def test_filtered_watch_sees_binding_as_added_and_unbinding_as_deleted(api):
    c = api.client()
    rv = c.list("pods")["metadata"]["resourceVersion"]
    p = c.create("pods", cm_pod("x"))
    p["spec"]["nodeName"] = "node-a"
    p = c.update("pods", p)
    c.delete("pods", "x", grace_period_seconds=0)
    evs = [(e["type"], e["object"]["metadata"]["name"])
           for e in c.watch("pods", resource_version=rv, field_selector="spec.nodeName=node-a", timeout_seconds=1)]
    assert evs == [("ADDED", "x"), ("DELETED", "x")]


def test_bookmarks_on_request(api):
    c = api.client()
    c.create("pods", cm_pod("a"))
    rv = c.list("pods")["metadata"]["resourceVersion"]
    # Writes to another resource move the revision on; a bookmark tells the watcher.
    c.create("deploy", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                        "spec": {"selector": {"matchLabels": {"a": "b"}},
                                 "template": {"metadata": {"labels": {"a": "b"}},
                                              "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}})
    evs = list(c.watch("pods", resource_version=rv, bookmarks=True, timeout_seconds=3))
    bms = [e for e in evs if e["type"] == "BOOKMARK"]
    assert bms and int(bms[-1]["object"]["metadata"]["resourceVersion"]) > int(rv)
    assert all(e["type"] == "BOOKMARK" for e in evs)


def test_watch_is_newline_delimited_json_over_http(api):
    c = api.client()
    rv = c.list("pods")["metadata"]["resourceVersion"]
    c.create("pods", cm_pod("a"))
    with httpx.stream("GET", api.url + "/api/v1/namespaces/default/pods",
                      params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"},
                      headers={"Authorization": f"Bearer {api.admin_token}"}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.status_code == 200 and len(lines) == 1 and '"type":"ADDED"' in lines[0]


def test_a_write_on_the_loop_reaches_watchers_without_the_pump(api):
    """On SQLite a write made on the event loop reads the log in its commit hook and wakes
    the watchers itself; the pump (stopped here) is only for other writers and errors."""
    hub = api.app.state.hub
    stopped = threading.Event()
    hub._loop.call_soon_threadsafe(lambda: (hub._task.cancel(), stopped.set()))
    assert stopped.wait(5)
    c = api.client()
    rv = c.list("pods")["metadata"]["resourceVersion"]
    got = []

    def watch():
        for ev in c.watch("pods", resource_version=rv, timeout_seconds=10):
            got.append((ev["type"], ev["object"]["metadata"]["name"]))
            return
    t = threading.Thread(target=watch)
    t.start()
    c.create("pods", cm_pod("after-pump"))
    t.join(15)
    assert got == [("ADDED", "after-pump")]


def test_a_signal_wakes_a_waiting_watcher_on_the_next_turn():
    import asyncio

    from shoal.apiserver.watch import WatchHub

    async def main():
        hub = WatchHub(store=None)
        token = hub.changed_token()
        hub._signal()
        await asyncio.wait_for(hub.wait_changed(30, token), 1)     # signalled since: at once
        task = asyncio.ensure_future(hub.wait_changed(30, hub.changed_token()))
        await asyncio.sleep(0)
        assert not task.done()
        hub._signal()
        await asyncio.sleep(0)          # one turn of the loop
        assert task.done()
        await asyncio.wait_for(hub.wait_changed(0.01, hub.changed_token()), 5)   # the timeout
        assert not hub._waiters
    asyncio.run(main())


def test_a_watcher_is_woken_only_by_its_own_resource_or_a_broadcast():
    import asyncio

    from shoal.apiserver.watch import WatchHub

    async def main():
        hub = WatchHub(store=None)
        token = hub.changed_token("pods")
        hub._signal({"events"})
        assert hub.changed_token("pods") == token          # not a change for pods
        pods = asyncio.ensure_future(hub.wait_changed(30, token, "pods"))
        anything = asyncio.ensure_future(hub.wait_changed(30, hub.changed_token()))
        await asyncio.sleep(0)
        hub._signal({"events"})
        await asyncio.sleep(0)
        assert anything.done() and not pods.done()
        hub._signal({"pods", "events"})
        await asyncio.sleep(0)
        assert pods.done()
        token = hub.changed_token("pods")
        pods = asyncio.ensure_future(hub.wait_changed(30, token, "pods"))
        await asyncio.sleep(0)
        hub._signal()                                       # Gone, stop: everyone
        await asyncio.sleep(0)
        assert pods.done() and hub.changed_token("pods") != token
        assert not hub._waiters
    asyncio.run(main())
