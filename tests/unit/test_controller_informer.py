"""Informer cache semantics without a server: write-through ordering, deletes, indexes."""
import pytest

from shoal.machinery.control import Informer

pytestmark = pytest.mark.unit


def pod(name, rv, uid="u1", **meta):
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": uid,
                                        "resourceVersion": str(rv), **meta}, "spec": {}}


def make():
    inf = Informer(client=None, kind="pods")
    seen = []
    inf.add_handler(on_add=lambda o: seen.append(("add", o["metadata"]["resourceVersion"])),
                    on_update=lambda a, b: seen.append(("update", b["metadata"]["resourceVersion"])),
                    on_delete=lambda o: seen.append(("delete", o["metadata"]["resourceVersion"])))
    return inf, seen


def test_older_write_through_never_overwrites_newer_watch_state():
    inf, seen = make()
    inf._handle({"type": "ADDED", "object": pod("a", 5)})
    inf._handle({"type": "MODIFIED", "object": pod("a", 7)})
    inf.observe(pod("a", 6))
    assert inf.get("default/a")["metadata"]["resourceVersion"] == "7"
    assert seen == [("add", "5"), ("update", "7")]


def test_write_through_after_deleted_event_does_not_resurrect():
    inf, _ = make()
    inf._handle({"type": "ADDED", "object": pod("a", 5)})
    inf._handle({"type": "DELETED", "object": pod("a", 9, deletionTimestamp="x")})
    inf.observe(pod("a", 8, deletionTimestamp="x"))  # our DELETE's answer, arriving late
    assert inf.get("default/a") is None
    inf._handle({"type": "ADDED", "object": pod("a", 12, uid="u2")})  # same name, new object
    assert inf.get("default/a")["metadata"]["uid"] == "u2"


def test_observe_deleted_tombstone_ignores_late_events_of_that_uid():
    inf, seen = make()
    inf._handle({"type": "ADDED", "object": pod("a", 5)})
    inf.observe_deleted("default/a", "u1")
    inf._handle({"type": "MODIFIED", "object": pod("a", 6)})
    assert inf.get("default/a") is None
    inf._handle({"type": "DELETED", "object": pod("a", 7)})
    assert seen.count(("delete", "5")) == 1


def test_indexes_follow_updates():
    inf, _ = make()
    inf.add_index("node", lambda o: [o["spec"]["nodeName"]] if o["spec"].get("nodeName") else [])
    inf._handle({"type": "ADDED", "object": pod("a", 5)})
    assert inf.by_index("node", "n1") == []
    bound = pod("a", 6)
    bound["spec"]["nodeName"] = "n1"
    inf._handle({"type": "MODIFIED", "object": bound})
    assert [p["metadata"]["name"] for p in inf.by_index("node", "n1")] == ["a"]
    inf._handle({"type": "DELETED", "object": bound})
    assert inf.by_index("node", "n1") == []
