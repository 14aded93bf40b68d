"""Property test of the HTTP API (issue 17): schemathesis generates requests for every
operation of the Kubernetes-style OpenAPI v3 documents the server serves (`/openapi/v3`:
every kind, verb and subresource, 119 operations), and sends them to a real `shoal server`
(its own process, so the generator keeps this one's core) with the admin token.

Half of each operation's examples have every parameter generated; the other half are aimed
at an object of its kind seeded beforehand (namespace `default`, name `fuzz`) and their
bodies at its kind (`aim`: apiVersion, kind, a name; generated from the schemas closed to
unknown fields, as shoal's decoding is), so that bodies generated from the real component
schemas get past the type check to validation and storage (422s, and creates,
updates, patches and deletes that succeed). The rest of the run, to MIN_REQUESTS, comes from
the operations cheapest to generate.

It must show:
- at least MIN_REQUESTS generated requests, counted, every one answered;
- no answer of 5xx (one exception, Kubernetes' own answer: 504 "Too large resource version"
  for a list at a resourceVersion the server has not reached, `listing.too_large`);
- a refused request (4xx), and any dry run, changes nothing: no log row is written for its
  object while it runs (the server's revision log, read at the end; the key of an item path,
  or of the name a create body gives; writes of concurrent accepted requests on that key, and
  the server's own work after an accepted delete of it, excepted).

Budget (docs/api.md "Fuzzing"): generation is the cost — a Pod body takes 100-200 ms of
hypothesis-jsonschema, a query 1-5 ms — so each operation gets up to MAX_EXAMPLES examples
within SECONDS_PER_OPERATION (at least MIN_EXAMPLES whatever they cost) before the top-up;
requests go out on SENDERS threads beside the generator (the client's lean `httpconn`), all
in this one process. The 5xx the run (and probing around it) found are pinned in
test_api_fuzz_findings.py.
"""
from __future__ import annotations

import json
import queue
import resource
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urlencode, urlsplit

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, Verbosity, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

from shoal.machinery.client.httpconn import Connection, Disconnected  # noqa: E402
from shoal.testkit.apiserver import ServerSubprocess  # noqa: E402

MIN_REQUESTS = 10_000
MAX_EXAMPLES = 150
MIN_EXAMPLES = 6
SECONDS_PER_OPERATION = 0.16
SENDERS = 4


class Enough(Exception):
    """Stops an operation's generation (its budget is spent)."""


@dataclass
class Sent:
    method: str
    path: str
    status: int
    reason: str
    keys: tuple[str, ...]        # the object keys (`store.object_key`) the request may write
    dry_run: bool
    started: float
    ended: float


@dataclass
class Run:
    sent: list[Sent] = field(default_factory=list)
    errors: list[tuple] = field(default_factory=list)       # answers of 5xx
    failures: list[tuple] = field(default_factory=list)     # no answer at all
    lock: threading.Lock = field(default_factory=threading.Lock)


def object_keys(method: str, path: str, body) -> tuple[str, ...]:
    """The store keys a request names: `<plural>/<namespace>/<name>` of an item path (any
    subresource), or of a create's `metadata.name`."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    rest = parts[2:] if parts[0] == "api" else parts[3:]      # after /api/v1 or /apis/<group>/<version>
    ns = ""
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) >= 3:
        ns, rest = rest[1], rest[2:]
    elif len(rest) >= 1 and rest[0] == "namespaces":
        rest = ["namespaces", *rest[1:]]
    if not rest:
        return ()
    plural = rest[0]
    if len(rest) >= 2:
        return (f"{plural}/{ns}/{rest[1]}",)
    if method == "POST" and isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        name = body["metadata"].get("name")
        if isinstance(name, str) and name:
            return (f"{plural}/{'' if plural == 'namespaces' else ns}/{name}",)
    return ()


def encode(case) -> tuple[bytes | None, dict[str, str]]:
    if case.body is None or case.body.__class__.__name__ == "NotSet":
        return None, {}
    try:
        content = json.dumps(case.body).encode()
    except (TypeError, ValueError):
        content = str(case.body).encode()
    media = case.media_type or "application/json"
    return content, {"Content-Type": "application/json" if "*" in media else media}


def sender(srv, work: "queue.Queue", run: Run) -> None:
    """Send queued cases on one keep-alive connection (the client's lean `httpconn`: httpx's
    Python cost per request, in this process beside the generator, doubled the run)."""
    url = urlsplit(srv.url)
    conn = Connection(url.hostname, url.port, timeout=30)
    headers = {"Authorization": f"Bearer {srv.admin_token}"}
    try:
        while True:
            case = work.get()
            if case is None:
                return
            try:
                conn = send(conn, headers, case, run)
            except Exception as e:  # noqa: BLE001 — a transport failure is a finding too
                conn.close()
                conn = Connection(url.hostname, url.port, timeout=30)
                content, _ = encode(case)
                with run.lock:
                    run.failures.append((case.method, case.formatted_path, repr(e), len(content or b""),
                                         (content or b"")[:200]))
            finally:
                work.task_done()
    finally:
        conn.close()


def send(conn: Connection, auth: dict, case, run: Run) -> Connection:
    """One request; returns the connection to use next (a new one after a watch or a close)."""
    params = {k: v for k, v in dict(case.query or {}).items() if v is not None}
    params["timeoutSeconds"] = "1"          # a watch (or a log follow) ends by itself
    content, headers = encode(case)
    method, path = case.method.upper(), case.formatted_path
    target = path + "?" + urlencode([(k, str(v).lower() if isinstance(v, bool) else str(v))
                                     for k, v in params.items()])
    watch = any(str(params.get(k, "")).lower() in ("true", "1") for k in ("watch", "follow"))
    started = time.time()
    if watch and content is None:     # the stream's head is the answer; the stream is not waited for
        r = conn.stream(method, target, {**auth, **headers})
        status, body = r.status, (r.read() if r.status >= 400 else b"")
        conn.close()
        conn = Connection(conn.host, conn.port, timeout=30)
    else:
        try:
            resp = conn.request(method, target, content, {**auth, **headers})
        except Disconnected:
            # the server closed the kept-alive connection while it idled (uvicorn: after 5 s),
            # before this request: sent once more on a new one, as the API client does
            conn.close()
            resp = conn.request(method, target, content, {**auth, **headers})
        status, body = resp.status, resp.body
        if resp.will_close:
            conn.close()
    ended = time.time()
    reason = ""
    if status >= 400:
        try:
            reason = json.loads(body).get("reason", "")
        except (ValueError, AttributeError):
            reason = body[:200].decode(errors="replace")
    dry = "dryRun" in params or (isinstance(case.body, dict) and bool(case.body.get("dryRun")))
    with run.lock:
        run.sent.append(Sent(method, path, status, reason, object_keys(method, path, case.body), dry, started, ended))
        if status >= 500 and not (status == 504 and reason == "Timeout" and b"Too large resource version" in body):
            run.errors.append((method, path, params, status, body[:400]))
    return conn


def operations(srv, *, closed: bool = False) -> list:
    """The operations of the server's OpenAPI v3 documents. `closed`: every object schema that
    lists its properties gets `additionalProperties: false` — what shoal's strict decoding
    enforces (an unknown field is a 400) and Kubernetes' documents leave unsaid — so that the
    bodies generated from it are made of known fields and reach validation."""
    headers = {"Authorization": f"Bearer {srv.admin_token}"}
    index = httpx.get(srv.url + "/openapi/v3", headers=headers, timeout=30).json()
    ops = []
    for ref in index["paths"].values():
        doc = httpx.get(srv.url + ref["serverRelativeURL"], headers=headers, timeout=30).json()
        if closed:
            for schema in doc.get("components", {}).get("schemas", {}).values():
                _close(schema)
        ops += [r.ok() for r in schemathesis.openapi.from_dict(doc).get_all_operations()]
    return ops


def _close(schema) -> None:
    stack = [schema]
    while stack:
        s = stack.pop()
        if isinstance(s, dict):
            if isinstance(s.get("properties"), dict) and "additionalProperties" not in s:
                s["additionalProperties"] = False
            stack.extend(s.values())
        elif isinstance(s, list):
            stack.extend(s)


def pinned(op) -> dict | None:
    """Path parameters naming the seeded object of `op`'s kind (`seed`), for the half of its
    examples that must reach an existing namespace and object ({} for a cluster-scoped
    collection: only its body is `aim`ed); None when it has neither path parameters nor a body."""
    names = {p.name for p in op.path_parameters}
    if not names and op.method not in ("post", "put"):
        return None
    return {k: v for k, v in (("namespace", "default"), ("name", SEED_NAME)) if k in names}


def aim(op, case) -> None:
    """Point a generated body at the operation's kind, so that it gets past the type check
    to validation and storage: the operation's apiVersion and kind (the schemas leave them
    free strings), a name (or generateName) where a create needs one, the pinned name on an
    update, the path's namespace, no stale resourceVersion. Everything else stays as generated."""
    body = case.body
    gvk = op.definition.raw.get("x-kubernetes-group-version-kind") or {}
    if not isinstance(body, dict) or not gvk:
        return
    body["apiVersion"] = f"{gvk['group']}/{gvk['version']}" if gvk.get("group") else gvk["version"]
    body["kind"] = gvk["kind"]
    md = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    body["metadata"] = md
    md.pop("resourceVersion", None)
    if op.method == "post" and not md.get("name") and not md.get("generateName"):
        md["generateName"] = "fuzz-"
    if op.method == "put" and "name" in (case.path_parameters or {}):
        md["name"] = case.path_parameters["name"]
    if "namespace" in md and "namespace" in (case.path_parameters or {}):
        md["namespace"] = case.path_parameters["namespace"]


def generate(op, work: "queue.Queue", *, examples: int, seconds: float, minimum: int,
             path_parameters: dict | None = None, mode: GenerationMode = GenerationMode.POSITIVE
             ) -> tuple[int, float]:
    """Queue up to `examples` generated cases of `op` (`path_parameters` fixed, if given, and
    their bodies `aim`ed); stop after `seconds` once `minimum` are queued. Returns (queued,
    seconds spent)."""
    state = {"n": 0, "stop": False}
    t0 = time.monotonic()

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(op.as_strategy(mode, path_parameters=path_parameters) if path_parameters else op.as_strategy(mode))
    def one(case):
        if state["stop"]:
            raise Enough
        if path_parameters is not None:
            aim(op, case)
        work.put(case)
        state["n"] += 1
        if state["n"] >= minimum and time.monotonic() - t0 > seconds:
            state["stop"] = True
            raise Enough

    try:
        one()
    except Enough:
        pass
    except Unsatisfiable:       # negative mode: nothing of this operation can be made invalid
        pass
    return state["n"], time.monotonic() - t0


SEED_NAME = "fuzz"
SEEDS = [
    ("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SEED_NAME}}),
    ("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": SEED_NAME}}),
    ("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": SEED_NAME}, "data": {"k": "v"}}),
    ("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SEED_NAME}, "stringData": {"k": "v"}}),
    ("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": SEED_NAME},
              "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}),
    ("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SEED_NAME},
                  "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}),
    ("endpoints", {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": SEED_NAME}}),
    ("events", {"apiVersion": "v1", "kind": "Event", "metadata": {"name": SEED_NAME},
                "involvedObject": {"kind": "Pod", "name": SEED_NAME, "namespace": "default"}}),
    ("deployments", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": SEED_NAME},
                     "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                         "metadata": {"labels": {"a": "b"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}),
    ("replicasets", {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": SEED_NAME},
                     "spec": {"selector": {"matchLabels": {"a": "c"}}, "template": {
                         "metadata": {"labels": {"a": "c"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}),
    ("leases", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": SEED_NAME}}),
    ("endpointslices", {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": SEED_NAME}, "addressType": "IPv4", "endpoints": []}),
]


def seed(srv) -> None:
    """One object named SEED_NAME of every kind (namespaced ones in `default`), for the
    examples aimed at existing objects to update, patch and delete."""
    c = srv.client()
    for plural, obj in SEEDS:
        c.create(plural, obj, namespace=None if plural in ("namespaces", "nodes") else "default")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerSubprocess(tmp_path_factory.mktemp("fuzz"), ["--insecure-http", "--no-controller"])
    try:
        yield srv
    finally:
        srv.stop()


def test_generated_requests_never_answer_5xx_and_refusals_change_nothing(server):
    t_start = time.monotonic()
    ops = operations(server)
    closed = operations(server, closed=True)       # the same operations, for the aimed examples
    assert len(ops) > 100 and len(closed) == len(ops), "every kind, verb and subresource of the v3 documents"
    seed(server)
    work: queue.Queue = queue.Queue(maxsize=256)
    run = Run()
    threads = [threading.Thread(target=sender, args=(server, work, run), daemon=True) for _ in range(SENDERS)]
    for t in threads:
        t.start()
    cost: dict[int, float] = {}
    queued = 0
    for i, op in enumerate(ops):
        # half the budget with every parameter generated, half aimed at the seeded objects
        n, spent = generate(op, work, examples=MAX_EXAMPLES // 2, seconds=SECONDS_PER_OPERATION / 2,
                            minimum=MIN_EXAMPLES // 2)
        if pinned(op) is not None:       # an aimed create is the likeliest to be stored: a few more of them
            m, more = generate(closed[i], work, examples=MAX_EXAMPLES // 2, seconds=SECONDS_PER_OPERATION / 2,
                               minimum=MIN_EXAMPLES if op.method == "post" else MIN_EXAMPLES // 2,
                               path_parameters=pinned(op))
            n, spent = n + m, spent + more
        queued += n
        cost[i] = spent / max(n, 1)
    first_pass = queued
    # the rest from the third of the operations cheapest to generate (schemathesis' negative mode
    # would cost 30 ms an example there: most of what it draws fails its own filters)
    cheap = sorted(cost, key=cost.get)[: max(1, len(ops) // 3)]
    while queued < MIN_REQUESTS:
        for i in cheap:
            n, _ = generate(closed[i], work, examples=MAX_EXAMPLES, seconds=SECONDS_PER_OPERATION,
                            minimum=MIN_EXAMPLES, path_parameters=pinned(ops[i]))
            queued += n
            if queued >= MIN_REQUESTS:
                break
    generated = time.monotonic() - t_start
    work.join()
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t_start
    by_status: dict[int, int] = {}
    for s in run.sent:
        by_status[s.status] = by_status.get(s.status, 0) + 1
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(f"\nfuzz: {len(run.sent)} requests ({first_pass} over all {len(ops)} operations, the rest over the "
          f"{len(cheap)} cheapest) generated in {generated:.1f} s, all answered in {elapsed:.1f} s (this process's "
          f"CPU {cpu.ru_utime + cpu.ru_stime:.1f} s); answers {dict(sorted(by_status.items()))}")

    assert len(run.sent) + len(run.failures) == queued
    assert not run.failures, run.failures[:5]
    assert len(run.sent) >= MIN_REQUESTS, f"only {len(run.sent)} requests were sent"
    assert not run.errors, run.errors[:5]
    # bodies generated from the schemas reach validation and storage, not only the decoder
    writes_ok = sum(1 for s in run.sent if s.method != "GET" and s.status < 300)
    assert by_status.get(422, 0) > 100 and by_status.get(201, 0) > 20 and writes_ok > 50, by_status

    # refused requests and dry runs wrote nothing for their objects while they ran
    db = sqlite3.connect(f"file:{server.data_dir / 'state.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, ts FROM events").fetchall()
    finally:
        db.close()
    writes: dict[str, list[float]] = {}
    for key, ts in rows:
        writes.setdefault(key, []).append(ts)
    # Writes a refused request cannot have made: another accepted request on the same key at the
    # same time (the senders run in parallel), or the server's own work after an accepted
    # DELETE of it (a namespace's termination, a collector's job).
    accepted: dict[str, list[Sent]] = {}
    for s in run.sent:
        if s.status < 400 and not s.dry_run and s.method != "GET":
            for k in s.keys:
                accepted.setdefault(k, []).append(s)

    def explained(k: str, ts: float) -> bool:
        return any(a.started <= ts <= a.ended or (a.method == "DELETE" and a.started <= ts)
                   for a in accepted.get(k, ()))

    changed = [(s.method, s.path, s.status, s.reason) for s in run.sent
               if (s.status >= 400 or s.dry_run) and any(s.started <= ts <= s.ended and not explained(k, ts)
                                                          for k in s.keys for ts in writes.get(k, ()))]
    assert not changed, changed[:5]
    checked = sum(1 for s in run.sent if (s.status >= 400 or s.dry_run) and s.keys)
    assert checked > 1000, f"only {checked} refused requests named an object to check"
