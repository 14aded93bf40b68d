"""Table tests for kubectl's rollout status rule, history, undo target selection and the watch loop."""
from __future__ import annotations

import pytest

from shoal.machinery.api import errors
from shoal.machinery.api.podtemplate import CHANGE_CAUSE_ANNOTATION, REVISION_ANNOTATION
from shoal.cli import rollout as ro

pytestmark = pytest.mark.unit


def deploy(*, gen=2, observed=2, replicas=3, updated=3, total=3, available=3, reason=None, name="web"):
    d = {"metadata": {"name": name, "generation": gen, "uid": "u-1", "resourceVersion": "10"},
         "spec": {"replicas": replicas},
         "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                    "availableReplicas": available}}
    if reason:
        d["status"]["conditions"] = [{"type": "Progressing", "status": "False", "reason": reason}]
    return d


W = 'Waiting for deployment "web" rollout to finish: '


@pytest.mark.parametrize("d,message,done,error", [
    (deploy(gen=3, observed=2), "Waiting for deployment spec update to be observed...", False, None),
    (deploy(gen=3, observed=2, reason="ProgressDeadlineExceeded"),
     "Waiting for deployment spec update to be observed...", False, None),  # generation is checked first
    (deploy(reason="ProgressDeadlineExceeded", updated=1), "", False,
     'deployment "web" exceeded its progress deadline'),
    (deploy(updated=1, total=4), W + "1 out of 3 new replicas have been updated...", False, None),
    (deploy(updated=0, total=0, available=0), W + "0 out of 3 new replicas have been updated...", False, None),
    (deploy(updated=3, total=5, available=2), W + "2 old replicas are pending termination...", False, None),
    (deploy(updated=3, total=3, available=1), W + "1 of 3 updated replicas are available...", False, None),
    (deploy(), 'deployment "web" successfully rolled out', True, None),
    (deploy(reason="NewReplicaSetAvailable"), 'deployment "web" successfully rolled out', True, None),
    (deploy(replicas=0, updated=0, total=0, available=0), 'deployment "web" successfully rolled out', True, None),
])
def test_rollout_status_message(d, message, done, error):
    assert tuple(ro.rollout_status_message(d)) == (message, done, error)


def test_missing_replicas_defaults_to_one():
    d = deploy(updated=0, total=0, available=0)
    del d["spec"]["replicas"]
    assert ro.rollout_status_message(d).message == W + "0 out of 1 new replicas have been updated..."


def rs(name, revision, *, owner="u-1", controller=True, cause=None, image="web:v1", hash_="h"):
    ann = {REVISION_ANNOTATION: str(revision)} if revision is not None else {}
    if cause:
        ann[CHANGE_CAUSE_ANNOTATION] = cause
    return {"metadata": {"name": name, "annotations": ann,
                         "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": owner,
                                              "controller": controller}]},
            "spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": hash_}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


def test_history_only_controlled_replicasets_in_revision_order():
    d = deploy()
    got = ro.history(d, [rs("b", 2, cause="kubectl set image"), rs("a", 1), rs("x", 5, owner="other"),
                         rs("y", 6, controller=False), rs("z", None)])
    assert [(r.number, r.change_cause) for r in got] == [(1, ""), (2, "kubectl set image")]


def test_rollback_target_previous_and_explicit():
    d = deploy()
    sets = [rs("a", 1, image="v1"), rs("b", 2, image="v2"), rs("c", 3, image="v3")]
    assert ro.rollback_target(d, sets).number == 2
    assert ro.rollback_target(d, sets, 1).replicaset["metadata"]["name"] == "a"
    with pytest.raises(ro.RollbackError, match="unable to find specified revision 7"):
        ro.rollback_target(d, sets, 7)
    with pytest.raises(ro.RollbackError, match='no rollout history found for deployment "web"'):
        ro.rollback_target(d, [])
    with pytest.raises(ro.RollbackError, match="no previous revision"):
        ro.rollback_target(d, sets[:1])


class ScriptedClient:
    """Answers list with `initial`, then each watch call with the next scripted batch of events."""

    def __init__(self, initial, batches):
        self.initial, self.batches, self.watch_calls = initial, list(batches), []

    def list(self, kind, namespace=None, **kw):
        return {"items": [self.initial] if self.initial else [], "metadata": {"resourceVersion": "10"}}

    def watch(self, kind, namespace=None, **kw):
        self.watch_calls.append(kw)
        batch = self.batches.pop(0) if self.batches else []
        if isinstance(batch, Exception):
            raise batch
        yield from batch


def ev(d, t="MODIFIED"):
    return {"type": t, "object": d}


def test_watch_rollout_prints_each_distinct_message_once_and_finishes():
    seen = []
    c = ScriptedClient(deploy(gen=3, observed=2),
                       [[ev(deploy(gen=3, observed=3, updated=1)), ev(deploy(gen=3, observed=3, updated=1)),
                         {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                         ev(deploy(gen=3, observed=3, updated=3, available=2)), ev(deploy(gen=3, observed=3))]])
    st = ro.watch_rollout(c, "web", "default", timeout=None, emit=seen.append)
    assert st.done
    assert seen == ["Waiting for deployment spec update to be observed...",
                    W + "1 out of 3 new replicas have been updated...",
                    W + "2 of 3 updated replicas are available...",
                    'deployment "web" successfully rolled out']
    assert c.watch_calls[0]["resource_version"] == "10"
    assert c.watch_calls[0]["field_selector"] == "metadata.name=web"


def test_watch_rollout_reconnects_from_last_rv_and_relists_after_gone():
    d1 = deploy(updated=1)
    d1["metadata"]["resourceVersion"] = "15"
    c = ScriptedClient(deploy(updated=0), [[ev(d1)], errors.Gone("too old"), [ev(deploy())]])
    st = ro.watch_rollout(c, "web", "default", timeout=None, emit=lambda m: None)
    assert st.done
    assert [k["resource_version"] for k in c.watch_calls] == ["10", "15", "10"]


def test_watch_rollout_deadline_exceeded_and_deleted_and_timeout():
    c = ScriptedClient(deploy(updated=1), [[ev(deploy(updated=1, reason="ProgressDeadlineExceeded"))]])
    st = ro.watch_rollout(c, "web", "default", timeout=None, emit=lambda m: None)
    assert st.error == 'deployment "web" exceeded its progress deadline' and not st.done
    c = ScriptedClient(deploy(updated=1), [[ev(deploy(updated=1), "DELETED")]])
    with pytest.raises(errors.NotFound, match='deployments.apps "web" not found'):
        ro.watch_rollout(c, "web", "default", timeout=None, emit=lambda m: None)
    with pytest.raises(errors.NotFound):
        ro.watch_rollout(ScriptedClient(None, []), "web", "default", timeout=None, emit=lambda m: None)
    clock = iter([0.0, 0.5, 100.0, 200.0])
    c = ScriptedClient(deploy(updated=1), [[], []])
    with pytest.raises(ro.RolloutTimeout):
        ro.watch_rollout(c, "web", "default", timeout=60, emit=lambda m: None, monotonic=lambda: next(clock))
    assert c.watch_calls[0]["timeout_seconds"] == pytest.approx(59.5)


def test_no_watch_returns_first_status():
    seen = []
    st = ro.watch_rollout(ScriptedClient(deploy(updated=1), []), "web", "default", timeout=None,
                          emit=seen.append, watch=False)
    assert not st.done and seen == [W + "1 out of 3 new replicas have been updated..."]
