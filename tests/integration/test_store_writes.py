"""apiserver.store writes on a temp SQLite file: compare-and-swap, rollback, owner index, log order.

On SQLite the object writes go straight to the sqlite3 driver (`_SqliteOps`); other databases
get the same statements through SQLAlchemy Core (`_CoreOps`). Every test runs both ways — the
Core path on SQLite by making the store believe it is on another dialect — and holds each to the
store's contract: a refused write leaves no trace in the log or the tables."""
import pytest

from shoal.machinery.api import errors
from shoal.apiserver.store import Store

pytestmark = pytest.mark.integration


@pytest.fixture(params=["driver", "core"])
def store(tmp_path, request):
    s = Store(f"sqlite:///{tmp_path}/state.db")
    if request.param == "core":
        s.dialect = "sqlite-via-core"    # every dialect check then takes the SQLAlchemy path
    try:
        yield s
    finally:
        s.close()


def obj(name, uid, owners=(), **extra):
    md = {"name": name, "namespace": "default", "uid": uid}
    if owners:
        md["ownerReferences"] = [{"kind": "ReplicaSet", "name": o, "uid": o} for o in owners]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, **extra}


def log(store):
    return [(e.revision, e.type, e.key) for e in store.events_after(0, limit=1000)]


def test_create_update_delete_log_in_order_with_previous_values(store):
    a = store.create("pods", obj("a", "ua", spec={"v": 1}))
    rev_a = int(a["metadata"]["resourceVersion"])
    b = store.update("pods", dict(a, spec={"v": 2}), expected_revision=rev_a)
    store.delete("pods", "default", "a", expected_uid="ua")
    evs = store.events_after(0)
    assert [(e.type, e.object["spec"]["v"]) for e in evs] == [("ADDED", 1), ("MODIFIED", 2), ("DELETED", 2)]
    assert evs[1].prev["spec"] == {"v": 1} and evs[1].revision == int(b["metadata"]["resourceVersion"])
    assert [e.revision for e in evs] == sorted({e.revision for e in evs})
    assert store.get("pods", "default", "a") is None
    assert [e.revision for e in store.events_after(evs[0].revision, resource="pods")] == \
        [e.revision for e in evs[1:]]


def test_refused_writes_leave_nothing_behind(store):
    a = store.create("pods", obj("a", "ua"))
    before = log(store)
    with pytest.raises(errors.AlreadyExists):
        store.create("pods", obj("a", "other"))
    with pytest.raises(errors.Conflict):
        store.update("pods", dict(a, spec={"stale": True}), expected_revision=int(a["metadata"]["resourceVersion"]) - 1)
    with pytest.raises(errors.NotFound):
        store.update("pods", obj("missing", "um"), expected_revision=1)
    with pytest.raises(errors.Conflict, match="Precondition failed"):
        store.delete("pods", "default", "a", expected_uid="not-its-uid")
    with pytest.raises(errors.Conflict):
        store.delete("pods", "default", "a", expected_revision=int(a["metadata"]["resourceVersion"]) + 7)
    with pytest.raises(errors.NotFound):
        store.delete("pods", "default", "missing")
    assert log(store) == before
    assert store.get("pods", "default", "a") == a
    # and the writer is fine afterwards
    store.update("pods", dict(a, spec={"ok": True}), expected_revision=int(a["metadata"]["resourceVersion"]))
    assert store.get("pods", "default", "a")["spec"] == {"ok": True}


def test_owner_index_follows_creates_updates_and_deletes(store):
    p = store.create("pods", obj("p", "up", owners=["rs1"]))
    assert [o["metadata"]["name"] for _, o in store.dependents("rs1")] == ["p"]
    p = store.update("pods", obj("p", "up", owners=["rs2"]), expected_revision=int(p["metadata"]["resourceVersion"]))
    assert store.dependents("rs1") == [] and [o["metadata"]["name"] for _, o in store.dependents("rs2")] == ["p"]
    store.update("pods", obj("p", "up", owners=["rs2"], spec={"x": 1}),
                 expected_revision=int(p["metadata"]["resourceVersion"]))
    assert [o["spec"] for _, o in store.dependents("rs2")] == [{"x": 1}]
    store.delete("pods", "default", "p")
    assert store.dependents("rs2") == []


def test_a_writer_connection_closed_under_the_store_is_replaced(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/state.db")      # the driver path: it keeps a connection
    try:
        store.create("pods", obj("a", "ua"))
        store._raw_writer.driver_connection.close()
        store.create("pods", obj("b", "ub"))
        assert [k for _, _, k in log(store)] == ["pods/default/a", "pods/default/b"]
    finally:
        store.close()


def test_revisions_of_a_second_store_on_the_same_file_continue_the_log(store, tmp_path):
    store.create("pods", obj("a", "ua"))
    other = Store(f"sqlite:///{tmp_path}/state.db")
    try:
        b = other.create("pods", obj("b", "ub"))
    finally:
        other.close()
    c = store.create("pods", obj("c", "uc"))
    assert int(c["metadata"]["resourceVersion"]) > int(b["metadata"]["resourceVersion"])
    assert [k for _, _, k in log(store)] == ["pods/default/a", "pods/default/b", "pods/default/c"]
