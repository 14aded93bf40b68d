"""Rollouts converge after any interleaving of scale / set image / pause / resume / undo.

The real `DeploymentController.reconcile` (so the pure planners in plan.py, rolling.py,
recreate.py and util.py, through the thin executor in sync.py) runs against a simulated
world: an in-memory API for Deployments and ReplicaSets (uid, resourceVersion with
compare-and-swap, generation, status only through /status), caches fed by every write as a
perfect watch would, and a ReplicaSet controller + pods played by the test (`World`).
Hypothesis draws the Deployment's shape and a sequence of user actions interleaved with
controller syncs, ReplicaSet syncs and pods turning Ready, then lets the world settle.

Checked after every Deployment sync:
  - the ReplicaSets' spec.replicas sum to at most replicas + maxSurge (so does each one);
  - every active ReplicaSet carries desired-replicas = replicas and max-replicas =
    replicas + maxSurge (a stale one would make every later sync a "scaling event": the jam
    of issue 16).
Checked once settled (resumed, all pods Ready), within a bounded number of rounds:
  - exactly one ReplicaSet has the current template; it has spec.replicas pods, all
    available; every other ReplicaSet is at 0 with no pods;
  - the status is complete (Progressing NewReplicaSetAvailable), revisions are unique, the
    new ReplicaSet holds the highest one and the Deployment carries it; no more old
    ReplicaSets than revisionHistoryLimit.
"""
from __future__ import annotations

import copy
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.cli import rollout as ro
from shoal.controller import indexes
from shoal.controller.deployment import DeploymentController
from shoal.controller.deployment import util as u
from shoal.machinery.api import errors, podtemplate
from shoal.machinery.api.objects import controller_ref, get_condition, key_of, name_of, uid_of
from shoal.machinery.api.times import format_time
from shoal.machinery.control import FakeClock, Informer
from shoal.machinery.control.events import RecordingEvents

pytestmark = pytest.mark.unit

NS = "default"


class FakeApi:
    """The part of the API the Deployment controller calls (`get`, `create`, `update`,
    `update_status`, `delete` of deployments and replicasets), in memory, with the server's
    bookkeeping: uid, a global resourceVersion checked on update (409 when stale), generation
    bumped on spec changes, status written only through /status, creationTimestamp from the
    clock. `on_write(kind, obj)` / `on_delete(kind, obj)` play the watch."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.objs: dict[tuple[str, str], dict] = {}
        self.rv = itertools.count(1)
        self.uids = itertools.count(1)
        self.writes = 0
        self.on_write = lambda kind, obj: None
        self.on_delete = lambda kind, obj: None

    def _stored(self, kind: str, name: str) -> dict:
        try:
            return self.objs[(kind, name)]
        except KeyError:
            raise errors.NotFound(f'{kind} "{name}" not found') from None

    def _commit(self, kind: str, obj: dict) -> dict:
        obj["metadata"]["resourceVersion"] = str(next(self.rv))
        self.objs[(kind, name_of(obj))] = obj
        self.writes += 1
        self.on_write(kind, copy.deepcopy(obj))
        return copy.deepcopy(obj)

    def get(self, kind: str, name: str, namespace: str | None = None, *, subresource: str | None = None) -> dict:
        return copy.deepcopy(self._stored(kind, name))

    def create(self, kind: str, obj: dict, namespace: str | None = None) -> dict:
        obj = copy.deepcopy(obj)
        md = obj["metadata"]
        if (kind, md["name"]) in self.objs:
            raise errors.AlreadyExists(f'{kind} "{md["name"]}" already exists')
        md.update(namespace=NS, uid=f"uid-{next(self.uids)}", generation=1,
                  creationTimestamp=format_time(self.clock.now()))
        obj.setdefault("status", {})
        return self._commit(kind, obj)

    def update(self, kind: str, obj: dict, *, subresource: str | None = None) -> dict:
        cur = self._stored(kind, name_of(obj))
        if obj["metadata"].get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise errors.Conflict(f"{kind} {name_of(obj)}: the object has been modified")
        new = copy.deepcopy(cur)
        if subresource == "status":
            new["status"] = copy.deepcopy(obj.get("status") or {})
        else:
            for k, empty in (("labels", {}), ("annotations", {}), ("ownerReferences", [])):
                new["metadata"][k] = copy.deepcopy(obj["metadata"].get(k) or empty)
            if obj.get("spec") != cur.get("spec"):
                new["spec"] = copy.deepcopy(obj["spec"])
                new["metadata"]["generation"] += 1
        return self._commit(kind, new)

    def update_status(self, kind: str, obj: dict) -> dict:
        return self.update(kind, obj, subresource="status")

    def delete(self, kind: str, name: str, namespace: str | None = None, *, propagation_policy: str | None = None,
               preconditions_uid: str | None = None) -> dict:
        cur = self._stored(kind, name)
        if preconditions_uid and uid_of(cur) != preconditions_uid:
            raise errors.Conflict(f"{kind} {name}: uid precondition failed")
        del self.objs[(kind, name)]
        self.writes += 1
        self.on_delete(kind, cur)
        return cur


def template(image: str) -> dict:
    return {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": image}]}}


class World:
    """A Deployment `web`, the real controller, and a ReplicaSet controller + pods played here.
    Pods are plain objects in the pod cache (what Recreate reads); they start not Ready."""

    def __init__(self, *, replicas: int, strategy: dict, history: int, lag: bool = False):
        self.clock = FakeClock()
        self.api = FakeApi(self.clock)
        self.dep_inf = Informer(self.api, "deployments")   # never started: fed by the fake watch below
        self.rs_inf = Informer(self.api, "replicasets")
        self.pod_inf = Informer(self.api, "pods")
        indexes.ensure(self.rs_inf, indexes.NAMESPACE)
        indexes.ensure(self.dep_inf, indexes.NAMESPACE)
        indexes.ensure(self.pod_inf, indexes.CONTROLLER)
        self.infs = {"deployments": self.dep_inf, "replicasets": self.rs_inf}
        # The watch: every write reaches the caches, at once or (lag) when `deliver` says so.
        # The controller's own writes are in its caches at once either way (Informer.observe).
        self.lag = lag
        self.pending: list[tuple[str, str, dict]] = []
        self.api.on_write = lambda kind, obj: self._watch("write", kind, obj)
        self.api.on_delete = lambda kind, obj: self._watch("delete", kind, obj)
        self.conflicts = 0
        self.events = RecordingEvents()
        self.ctl = DeploymentController(self.api, deployments=self.dep_inf, replicasets=self.rs_inf,
                                        pods=self.pod_inf, events=self.events, clock=self.clock)
        self.pods: dict[str, list[dict]] = {}        # ReplicaSet uid -> its pods
        self.images = itertools.count(2)
        self.pod_names = itertools.count(1)
        self.history: list[str] = []
        self.api.create("deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "strategy": strategy,
                     "revisionHistoryLimit": history, "progressDeadlineSeconds": 600,
                     "template": template("registry.local/web:1")}})

    # -- reading --------------------------------------------------------------------------------
    @property
    def d(self) -> dict:
        return self.api.get("deployments", "web")

    def rss(self) -> list[dict]:
        return sorted((copy.deepcopy(o) for (k, _), o in self.api.objs.items() if k == "replicasets"), key=name_of)

    def describe(self) -> str:
        d = self.d
        rows = [f"deployment replicas={d['spec']['replicas']} paused={d['spec'].get('paused', False)} "
                f"image={d['spec']['template']['spec']['containers'][0]['image']} status={d.get('status')}"]
        for rs in self.rss():
            ann = rs["metadata"].get("annotations") or {}
            pods = self.pods.get(uid_of(rs), [])
            rows.append(f"  {name_of(rs)} rev={ann.get(u.REVISION_ANNOTATION)} "
                        f"image={rs['spec']['template']['spec']['containers'][0]['image']} "
                        f"spec={rs['spec']['replicas']} desired={ann.get(u.DESIRED_REPLICAS_ANNOTATION)} "
                        f"max={ann.get(u.MAX_REPLICAS_ANNOTATION)} status={rs.get('status')} "
                        f"pods={len(pods)} ready={sum(p['ready'] for p in pods)}")
        return "\n".join([*self.history[-40:], *rows])

    # -- users (what kubectl sends) ---------------------------------------------------------------
    def _edit(self, fn) -> None:
        d = self.d
        fn(d)
        self.api.update("deployments", d)

    def scale(self, n: int) -> None:
        self._edit(lambda d: d["spec"].__setitem__("replicas", n))

    def set_image(self) -> None:
        image = f"registry.local/web:{next(self.images)}"
        self._edit(lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("image", image))

    def pause(self, paused: bool) -> None:
        self._edit(lambda d: d["spec"].__setitem__("paused", paused))

    def undo(self) -> None:
        """`rollout undo`: the previous revision's template. (kubectl refuses it while paused, on
        the client side; the API takes the template change, and so does this world.)"""
        d = self.d
        try:
            target = ro.rollback_target(d, self.rss(), 0)
        except ro.RollbackError:
            return
        self._edit(lambda d: d["spec"].__setitem__(
            "template", podtemplate.without_hash_label(target.replicaset["spec"]["template"])))

    # -- the control plane ------------------------------------------------------------------------
    def sync_deployment(self) -> None:
        """One reconcile. A stale cache can make a write conflict: the manager retries the key
        later, and so does this world (the next sync); the invariants hold after whole syncs."""
        try:
            self.ctl.reconcile(f"{NS}/web")
        except (errors.Conflict, errors.NotFound):
            assert self.lag, "a write conflicted although every cache was current"
            self.conflicts += 1
            return
        self.check_after_sync()

    def sync_replicaset(self, rs: dict) -> None:
        """The ReplicaSet controller: create missing pods (not Ready), delete the surplus
        (not Ready first, then the newest), report status."""
        rs = self.api.get("replicasets", name_of(rs))
        pods = self.pods.setdefault(uid_of(rs), [])
        want = rs["spec"]["replicas"]
        while len(pods) < want:
            n = next(self.pod_names)
            pod = {"metadata": {"name": f"{name_of(rs)}-{n}", "namespace": NS, "uid": f"pod-{n}",
                                "resourceVersion": str(next(self.api.rv)),
                                "ownerReferences": [{"kind": "ReplicaSet", "name": name_of(rs), "uid": uid_of(rs),
                                                     "controller": True}]},
                   "status": {"phase": "Running"}, "ready": False, "seq": n}
            pods.append(pod)
            self.pod_inf.observe(pod)
        if len(pods) > want:
            pods.sort(key=lambda p: (p["ready"], -p["seq"]))
            for p in pods[:len(pods) - want]:
                self.pod_inf.observe_deleted(key_of(p), uid_of(p))
            del pods[:len(pods) - want]
        ready = sum(p["ready"] for p in pods)
        status = {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                  "availableReplicas": ready, "observedGeneration": rs["metadata"]["generation"]}
        if status != rs.get("status"):
            rs["status"] = status
            self.api.update_status("replicasets", rs)

    def make_ready(self, k: int) -> None:
        waiting = [p for pods in self.pods.values() for p in pods if not p["ready"]]
        if waiting:
            waiting[k % len(waiting)]["ready"] = True

    def _watch(self, what: str, kind: str, obj: dict) -> None:
        if what == "delete" and kind == "replicasets":
            for p in self.pods.pop(uid_of(obj), []):            # the garbage collector
                self.pod_inf.observe_deleted(key_of(p), uid_of(p))
        self.pending.append((what, kind, obj))
        if not self.lag:
            self.deliver(len(self.pending))

    def deliver(self, n: int) -> None:
        """The oldest `n` watch events reach the caches."""
        for what, kind, obj in self.pending[:n]:
            if what == "write":
                self.infs[kind].observe(obj)
            else:
                self.infs[kind].observe_deleted(key_of(obj), uid_of(obj))
        del self.pending[:n]

    def step(self, action: tuple) -> None:
        self.clock.advance(1)
        self.history.append(repr(action))
        kind = action[0]
        if kind == "scale":
            self.scale(action[1])
        elif kind == "image":
            self.set_image()
        elif kind == "pause":
            self.pause(True)
        elif kind == "resume":
            self.pause(False)
        elif kind == "undo":
            self.undo()
        elif kind == "sync":
            self.sync_deployment()
        elif kind == "rs":
            rss = self.rss()
            if rss:
                self.sync_replicaset(rss[action[1] % len(rss)])
        elif kind == "ready":
            self.make_ready(action[1])
        elif kind == "deliver":
            self.deliver(action[1])
        elif kind == "tick":      # a round of everything: the rollout moves on between user actions
            self.deliver(len(self.pending) if not self.lag else action[1])
            self.sync_deployment()
            for rs in self.rss():
                self.sync_replicaset(rs)
            for _ in range(action[1]):
                self.make_ready(0)

    def settle(self, rounds: int = 200) -> int:
        """Resume, then sync everything and let every pod become Ready until nothing is written."""
        if self.d["spec"].get("paused"):
            self.pause(False)
        for i in range(rounds):
            before = self.api.writes
            self.clock.advance(1)
            self.deliver(len(self.pending))
            self.sync_deployment()
            for rs in self.rss():
                self.sync_replicaset(rs)
            for pods in self.pods.values():
                for p in pods:
                    p["ready"] = True
            for rs in self.rss():
                self.sync_replicaset(rs)
            self.deliver(len(self.pending))
            self.sync_deployment()
            if self.api.writes == before:
                return i
        raise AssertionError(f"no convergence after {rounds} rounds\n{self.describe()}")

    # -- invariants -------------------------------------------------------------------------------
    def check_after_sync(self) -> None:
        """Against the Deployment as the controller saw it (its cache): only the controller
        writes ReplicaSet specs and annotations, so the stored ones are what it decided."""
        d, rss = self.dep_inf.get(f"{NS}/web"), self.rss()
        bound = u.replicas_of(d) + u.max_surge(d)
        total = u.spec_replicas_sum(rss)
        assert total <= bound, f"ReplicaSets sum to {total} > replicas + maxSurge = {bound}\n{self.describe()}"
        for rs in u.active(rss):
            ann = rs["metadata"].get("annotations") or {}
            assert (ann.get(u.DESIRED_REPLICAS_ANNOTATION), ann.get(u.MAX_REPLICAS_ANNOTATION)) == (
                str(u.replicas_of(d)), str(bound)), f"stale replica annotations on {name_of(rs)}\n{self.describe()}"

    def check_converged(self) -> None:
        d, rss = self.d, self.rss()
        want = u.replicas_of(d)
        why = f"\n{self.describe()}"
        current = [rs for rs in rss if u.templates_equal(rs["spec"]["template"], d["spec"]["template"])]
        assert len(current) == 1, "not exactly one ReplicaSet with the current template" + why
        [new] = current
        assert all(controller_ref(rs)["uid"] == uid_of(d) for rs in rss)
        assert new["spec"]["replicas"] == want and new["status"]["availableReplicas"] == want, why
        assert len(self.pods.get(uid_of(new), [])) == want, why
        for rs in rss:
            if rs is not new:
                assert rs["spec"]["replicas"] == 0 and not self.pods.get(uid_of(rs)), f"{name_of(rs)} not at 0" + why
        st_ = d["status"]
        assert (st_["replicas"], st_["updatedReplicas"], st_["availableReplicas"]) == (want, want, want), why
        assert st_["observedGeneration"] == d["metadata"]["generation"], why
        assert get_condition(st_, u.PROGRESSING)["reason"] == u.NEW_RS_AVAILABLE_REASON, why
        assert get_condition(st_, u.AVAILABLE)["status"] == "True", why
        if want > 0:   # an inactive ReplicaSet's annotations are not read: scaling it up rewrites them
            ann = new["metadata"]["annotations"]
            assert (ann[u.DESIRED_REPLICAS_ANNOTATION], ann[u.MAX_REPLICAS_ANNOTATION]) == (
                str(want), str(want + u.max_surge(d))), why
        revisions = [u.revision_of(rs) for rs in rss]
        assert len(set(revisions)) == len(revisions) and u.revision_of(new) == max(revisions), why
        assert d["metadata"]["annotations"][u.REVISION_ANNOTATION] == str(u.revision_of(new)), why
        assert len(rss) - 1 <= u.revision_history_limit(d), why


# -- strategies --------------------------------------------------------------------------------
fencepost = st.one_of(st.integers(0, 3), st.sampled_from(["0%", "10%", "25%", "50%", "100%"]))


@st.composite
def strategies(draw) -> dict:
    if draw(st.integers(0, 4)) == 0:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": draw(fencepost),
                                                       "maxUnavailable": draw(fencepost)}}


user_actions = st.one_of(
    st.tuples(st.just("scale"), st.integers(0, 12)),
    st.sampled_from([("image",), ("pause",), ("resume",), ("undo",)]),
)
control_actions = st.one_of(
    st.just(("sync",)),
    st.tuples(st.just("rs"), st.integers(0, 20)),
    st.tuples(st.just("ready"), st.integers(0, 100)),
    st.tuples(st.just("deliver"), st.integers(1, 4)),
    st.tuples(st.just("tick"), st.integers(0, 4)),
)
actions = st.lists(st.one_of(user_actions, control_actions, control_actions), min_size=4, max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replicas=st.integers(0, 10), strategy=strategies(), history=st.integers(0, 3), lag=st.booleans(),
       mid_rollout=st.booleans(), steps=actions)
def test_rollouts_converge_after_any_interleaving(replicas, strategy, history, lag, mid_rollout, steps):
    w = World(replicas=replicas, strategy=strategy, history=history, lag=lag)
    w.settle()
    w.check_converged()
    if mid_rollout:       # start where issue 16 bit: a rollout stopped at its bounds, new pods not Ready
        w.set_image()
        run_to_bounds(w)
    for action in steps:
        w.step(action)
    w.settle()
    w.check_converged()


# -- the interleavings of issue 16, spelled out -----------------------------------------------------
def rolling(surge, unavailable):
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}


def run_to_bounds(w: World) -> None:
    """Sync everything without any pod becoming Ready, until nothing moves."""
    for _ in range(20):
        w.sync_deployment()
        for rs in w.rss():
            w.sync_replicaset(rs)


def sizes(w: World) -> dict[str, tuple[int, str, str]]:
    out = {}
    for rs in w.rss():
        ann = rs["metadata"]["annotations"]
        out[rs["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]] = (
            rs["spec"]["replicas"], ann[u.DESIRED_REPLICAS_ANNOTATION], ann[u.MAX_REPLICAS_ANNOTATION])
    return out


def test_set_image_then_scale_then_set_image_completes():
    w = World(replicas=5, strategy=rolling("25%", "25%"), history=10)   # surge 2, unavailable 1
    w.settle()
    w.set_image()
    run_to_bounds(w)
    assert sizes(w) == {"1": (4, "5", "7"), "2": (3, "5", "7")}
    w.scale(6)    # max 8: round(4 * 8/7) = 5 for the old ReplicaSet, round(3 * 8/7) = 3 for the new one
    w.sync_deployment()
    assert sizes(w) == {"1": (5, "6", "8"), "2": (3, "6", "8")}   # the new one's annotations refreshed too
    w.set_image()
    w.settle()
    w.check_converged()
    assert sizes(w)["3"] == (6, "6", "8")


def test_paused_deployment_scales_proportionally_but_does_not_roll():
    w = World(replicas=10, strategy=rolling(3, 2), history=10)
    w.settle()
    w.set_image()
    run_to_bounds(w)
    assert sizes(w) == {"1": (8, "10", "13"), "2": (5, "10", "13")}
    w.pause(True)
    w.set_image()                    # no ReplicaSet for it while paused
    w.scale(15)                      # max 18: 8 -> round(8 * 18/13) = 11, 5 -> round(5 * 18/13) = 7
    for _ in range(3):
        w.sync_deployment()
    assert sizes(w) == {"1": (11, "15", "18"), "2": (7, "15", "18")}
    w.settle()                       # resumes
    w.check_converged()
    assert sizes(w)["3"] == (15, "15", "18")


def test_undo_mid_rollout_returns_to_the_old_replicaset_with_a_new_revision():
    w = World(replicas=4, strategy=rolling(1, 1), history=10)
    w.settle()
    w.set_image()
    run_to_bounds(w)
    w.undo()
    w.settle()
    w.check_converged()
    [rs1] = [rs for rs in w.rss() if rs["spec"]["replicas"]]
    ann = rs1["metadata"]["annotations"]
    assert rs1["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1")
    assert (ann[u.REVISION_ANNOTATION], ann[u.REVISION_HISTORY_ANNOTATION]) == ("3", "1")
