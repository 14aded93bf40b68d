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


class ListWatchClient:
    """Answers LISTs from `lists` in turn, then a watch that ends (or raises `watch_error`)."""

    def __init__(self, lists, watch_error=None):
        self.lists, self.watch_error = list(lists), watch_error
        self.calls = []

    def list(self, kind, **kw):
        self.calls.append(("list", kw))
        return self.lists.pop(0)

    def watch(self, kind, **kw):
        self.calls.append(("watch", kw))
        if self.watch_error is not None:
            raise self.watch_error
        return iter(())


def test_field_selector_narrows_list_and_watch():
    client = ListWatchClient([{"items": [], "metadata": {"resourceVersion": "3"}}])
    inf = Informer(client=client, kind="pods", field_selector="spec.nodeName=n1")
    inf._relist()
    for ev in client.watch("pods", resource_version=inf._rv, **inf._list_kwargs()):
        pass
    assert [(c, kw.get("field_selector"), kw.get("all_namespaces")) for c, kw in client.calls] == [
        ("list", "spec.nodeName=n1", True), ("watch", "spec.nodeName=n1", True)]


def test_on_list_runs_after_each_list_is_applied():
    client = ListWatchClient([{"items": [pod("a", 5), pod("b", 6, uid="u2")], "metadata": {"resourceVersion": "6"}},
                              {"items": [pod("a", 5)], "metadata": {"resourceVersion": "9"}}])
    inf, seen = make()
    inf.client = client
    inf.add_handler(on_list=lambda: seen.append(("listed", sorted(inf.keys()), inf.has_synced())))
    inf._relist()
    inf._relist()      # after 410 Gone: b is gone, a unchanged (no handler call)
    assert seen == [("add", "5"), ("add", "6"), ("listed", ["default/a", "default/b"], True),
                    ("delete", "6"), ("listed", ["default/a"], True)]


def test_cached_objects_carry_no_managed_fields():
    inf, _ = make()
    mf = [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
    sent = pod("a", 5, managedFields=mf)
    inf._handle({"type": "ADDED", "object": sent})
    inf.observe(pod("a", 6, managedFields=mf))
    cached = inf.get("default/a")
    assert "managedFields" not in cached["metadata"] and cached["metadata"]["resourceVersion"] == "6"
    assert sent["metadata"]["managedFields"] == mf          # the caller's object is not changed
