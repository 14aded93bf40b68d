"""`DryRunStore` against the real `Store` on a temp SQLite file: for every write and every way
it can fail, the dry run raises what the real write raises (type and message) and answers
what it answers — and leaves the log untouched."""
import pytest

from shoal.apiserver.dryrun import READS, REFUSED, WRITES, DryRunStore
from shoal.apiserver.store import MAX_OBJECT_BYTES, Store
from shoal.machinery.api import errors


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/state.db")
    try:
        yield s
    finally:
        s.close()


def obj(name, uid="u1", **extra):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": uid},
            **extra}


def outcome(fn):
    try:
        return "ok", fn()
    except errors.ApiError as e:
        return type(e).__name__, e.message


def test_every_instance_attribute_is_classified(store):
    public = {n for n in vars(store) if not n.startswith("_")} | {n for n in dir(Store) if not n.startswith("_")}
    assert not public - READS - WRITES - REFUSED


@pytest.mark.parametrize("case", ["create-new", "create-taken", "create-huge", "update", "update-stale",
                                  "update-missing", "update-huge", "delete", "delete-missing", "delete-uid",
                                  "delete-stale", "delete-batch"])
def test_dry_run_answers_as_the_real_write(store, case):
    live = store.create("pods", obj("p", spec={"a": 1}))
    rv = int(live["metadata"]["resourceVersion"])
    dry = DryRunStore(store)
    huge = {"blob": "x" * (MAX_OBJECT_BYTES + 1)}
    calls = {
        "create-new": lambda s: s.create("pods", obj("q")),
        "create-taken": lambda s: s.create("pods", obj("p")),
        "create-huge": lambda s: s.create("pods", obj("q", spec=huge)),
        "update": lambda s: s.update("pods", obj("p", spec={"a": 2}), expected_revision=rv),
        "update-stale": lambda s: s.update("pods", obj("p", spec={"a": 2}), expected_revision=rv - 1),
        "update-missing": lambda s: s.update("pods", obj("zz"), expected_revision=rv),
        "update-huge": lambda s: s.update("pods", obj("p", spec=huge), expected_revision=rv),
        "delete": lambda s: s.delete("pods", "default", "p", expected_revision=rv),
        "delete-missing": lambda s: s.delete("pods", "default", "zz"),
        "delete-uid": lambda s: s.delete("pods", "default", "p", expected_uid="other"),
        "delete-stale": lambda s: s.delete("pods", "default", "p", expected_revision=rv - 1),
        "delete-batch": lambda s: s.delete_batch("pods", [("default", "p", rv), ("default", "zz", rv)]),
    }
    before = store.current_revision()
    got_dry = outcome(lambda: calls[case](dry))
    assert store.current_revision() == before and store.get("pods", "default", "p") == live
    got_real = outcome(lambda: calls[case](store))
    assert got_dry[0] == got_real[0], (got_dry, got_real)
    if got_dry[0] != "ok":
        assert got_dry[1] == got_real[1]
        return
    strip = lambda o: {**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}}  # noqa
    if case.startswith("delete-batch"):
        assert [strip(o) for o in got_dry[1]] == [strip(o) for o in got_real[1]]
    else:
        assert strip(got_dry[1]) == strip(got_real[1])
    # The revision a dry run answers: none for a create, the stored one for an update or delete.
    if case == "create-new":
        assert "resourceVersion" not in got_dry[1]["metadata"]
    elif case in ("update", "delete"):
        assert got_dry[1]["metadata"]["resourceVersion"] == str(rv)
