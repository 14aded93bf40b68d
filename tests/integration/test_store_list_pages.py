"""`Store.list_range` / `count_range` read a resource's objects as they were at any revision
not yet compacted, a chunk at a time (the basis of consistent list pages, apiserver.listing).

A random history of creates, updates and deletes over a few namespaces and two resources is
written through the real store on a temp SQLite file, and the state after every revision
is recorded beside it; then every revision is read back in chunks of random sizes and must
equal the recorded state: keys in byte order, each value and its resourceVersion.
"""
from __future__ import annotations

import json
import random

import pytest

from shoal.apiserver.store import Store, _merge_chunk
from shoal.machinery.api import errors
from shoal.apiserver.store import FutureRevision


@pytest.fixture
def store(tmp_path):
    st = Store(f"sqlite:///{tmp_path / 'state.db'}", sqlite_synchronous="normal")
    try:
        yield st
    finally:
        st.close()


NAMESPACES = ["a", "a-b", "b", "kube-system"]     # "a-b" sorts before "a/" as bytes: key order, not (ns, name)


def obj(ns: str, name: str, gen: int) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
            "data": {"gen": str(gen)}}


def random_history(st: Store, rnd: random.Random, steps: int) -> dict[int, dict[str, tuple[str, int]]]:
    """Writes `steps` random writes; returns revision -> {key: (data.gen, revision)} of the
    `configmaps` resource after it (a few `secrets` writes are mixed in, as other resources'
    revisions are)."""
    live: dict[str, tuple[str, int]] = {}
    states: dict[int, dict[str, tuple[str, int]]] = {}
    for i in range(steps):
        if rnd.random() < 0.15:
            out = st.create("secrets", {"apiVersion": "v1", "kind": "Secret",
                                        "metadata": {"name": f"s{i}", "namespace": rnd.choice(NAMESPACES)}})
            states[int(out["metadata"]["resourceVersion"])] = dict(live)
            continue
        ns, name = rnd.choice(NAMESPACES), f"cm-{rnd.randrange(12)}"
        key = f"configmaps/{ns}/{name}"
        if key not in live:
            out = st.create("configmaps", obj(ns, name, i))
        elif rnd.random() < 0.3:
            out = st.delete("configmaps", ns, name)
        else:
            cur = st.get("configmaps", ns, name)
            out = st.update("configmaps", obj(ns, name, i), expected_revision=int(cur["metadata"]["resourceVersion"]))
        rev = int(out["metadata"]["resourceVersion"])
        if out is not None and st.get("configmaps", ns, name) is None:
            live.pop(key, None)
        else:
            live[key] = (out["data"]["gen"], rev)
        states[rev] = dict(live)
    return states


def read_all(st: Store, namespace: str | None, revision: int, rnd: random.Random) -> list[tuple[str, str, int]]:
    out, start = [], ""
    while True:
        chunk = st.list_range("configmaps", namespace, start=start, revision=revision, limit=rnd.randint(1, 6))
        assert chunk.revision == revision
        out += [(k, json.loads(v)["data"]["gen"], r) for k, v, r in chunk.rows]
        if chunk.last is None:
            return out
        assert not chunk.rows or chunk.rows[-1][0] <= chunk.last
        start = chunk.last + "\x00"


def expected(state: dict[str, tuple[str, int]], namespace: str | None) -> list[tuple[str, str, int]]:
    prefix = f"configmaps/{namespace}/" if namespace else "configmaps/"
    return sorted((k, g, r) for k, (g, r) in state.items() if k.startswith(prefix))


@pytest.mark.parametrize("seed", range(4))
def test_every_revision_reads_back_as_it_was(store, seed):
    rnd = random.Random(seed)
    states = random_history(store, rnd, 160)
    latest = max(states)
    for rev in sorted(states):
        for namespace in (None, "a", "a-b"):
            assert read_all(store, namespace, rev, rnd) == expected(states[rev], namespace), (rev, namespace)
        assert store.count_range("configmaps", None, start="", revision=rev) == len(states[rev])
    # the newest, asked for by None, and a count from the middle of the range
    assert store.list_range("configmaps", None, limit=1000).revision == latest
    mid = sorted(states[latest])[len(states[latest]) // 2]
    assert store.count_range("configmaps", None, start=mid + "\x00", revision=latest) == \
        sum(1 for k in states[latest] if k > mid)


def test_compacted_and_future_revisions_are_refused(store):
    rnd = random.Random(7)
    states = random_history(store, rnd, 60)
    revs = sorted(states)
    cut = revs[len(revs) // 2]
    store.compact(revision=cut)
    with pytest.raises(errors.Gone):
        store.list_range("configmaps", None, revision=cut - 1)
    with pytest.raises(errors.Gone):
        store.count_range("configmaps", None, start="", revision=cut - 1)
    for rev in revs:
        if rev >= cut:
            assert read_all(store, None, rev, rnd) == expected(states[rev], None)
    with pytest.raises(FutureRevision) as e:
        store.list_range("configmaps", None, revision=revs[-1] + 5)
    assert e.value.current == revs[-1]


def test_rows_written_before_prev_revision_existed_are_gone_not_guessed(store):
    store.create("configmaps", obj("a", "x", 1))
    at = store.current_revision()
    cur = store.get("configmaps", "a", "x")
    store.update("configmaps", obj("a", "x", 2), expected_revision=int(cur["metadata"]["resourceVersion"]))
    with store.engine.begin() as conn:       # as an older server wrote it: no prev_revision
        conn.exec_driver_sql("UPDATE events SET prev_revision = NULL")
    with pytest.raises(errors.Gone):
        store.list_range("configmaps", None, revision=at)
    assert [r[2] for r in store.list_range("configmaps", None).rows] == [at + 1]


@pytest.mark.parametrize("current,before,changed_last,limit,rows,last", [
    # both sources short: everything, and the range is done
    ([("k1", "v", 1)], [("k2", "v", 2)], None, 3, ["k1", "k2"], None),
    # the unchanged rows were cut at k3: nothing past k3 is known
    ([("k1", "v", 1), ("k3", "v", 1)], [("k2", "v", 2), ("k4", "v", 2)], None, 2, ["k1", "k2"], "k2"),
    # the changed keys were cut at k2 (created after the revision: not answered)
    ([("k1", "v", 1), ("k5", "v", 1)], [], "k2", 3, ["k1"], "k2"),
    # more than `limit` merged: the first `limit`, continue after the last of them
    ([("k1", "v", 1), ("k3", "v", 1)], [("k2", "v", 2)], None, 2, ["k1", "k2"], "k2"),
])
def test_merge_of_the_two_sources(current, before, changed_last, limit, rows, last):
    chunk = _merge_chunk(current, before, changed_last, limit, 9)
    assert [r[0] for r in chunk.rows] == rows and chunk.last == last and chunk.revision == 9
