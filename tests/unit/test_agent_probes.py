"""Probes (agent.probes) on a fake clock: thresholds, delays, startup gating, executors."""
import http.server
import socket
import threading

import pytest

from shoal.machinery.control.timers import FakeClock, ManualScheduler
from shoal.agent.probes import (FAILURE, LIVENESS, READINESS, STARTUP, SUCCESS, UNKNOWN, ProbeManager, ProbeResult,
                                ProbeSettings, ProbeTarget, ProbeWorker, RealProbeExecutor, RunningContainer)

pytestmark = pytest.mark.unit
T0 = 1_800_000_000.0


# ---------------------------------------------------------------------------- worker bookkeeping
def test_settings_defaults_as_kubernetes():
    s = ProbeSettings.from_spec({"httpGet": {"port": 80}})
    assert (s.initial_delay, s.period, s.timeout, s.success_threshold, s.failure_threshold) == (0, 10, 1, 1, 3)
    s = ProbeSettings.from_spec({"initialDelaySeconds": 5, "periodSeconds": 2, "timeoutSeconds": 3,
                                 "successThreshold": 2, "failureThreshold": 1})
    assert (s.initial_delay, s.period, s.timeout, s.success_threshold, s.failure_threshold) == (5, 2, 3, 2, 1)


def test_initial_results():
    mk = lambda k: ProbeWorker(k, ProbeSettings(), container_id="c", started_at=0).result.result
    assert (mk(LIVENESS), mk(READINESS), mk(STARTUP)) == (SUCCESS, FAILURE, UNKNOWN)


@pytest.mark.parametrize("kind,threshold_kw,seq,published", [
    # failureThreshold 3: two failures keep the previous result, the third flips it
    (LIVENESS, {"failure_threshold": 3}, [FAILURE, FAILURE], [SUCCESS, SUCCESS]),
    (LIVENESS, {"failure_threshold": 3}, [FAILURE, FAILURE, FAILURE], [SUCCESS, SUCCESS, FAILURE]),
    # a success in between resets the run
    (READINESS, {"failure_threshold": 2}, [SUCCESS, FAILURE, SUCCESS, FAILURE, FAILURE],
     [SUCCESS, SUCCESS, SUCCESS, SUCCESS, FAILURE]),
    # successThreshold 2 for readiness
    (READINESS, {"success_threshold": 2}, [SUCCESS, SUCCESS], [FAILURE, SUCCESS]),
    (READINESS, {"success_threshold": 2}, [SUCCESS, FAILURE, SUCCESS], [FAILURE, FAILURE, FAILURE]),
])
def test_thresholds(kind, threshold_kw, seq, published):
    w = ProbeWorker(kind, ProbeSettings(**threshold_kw), container_id="c", started_at=0)
    out = []
    for r in seq:
        w.observe(ProbeResult(r))
        out.append(w.result.result)
    assert out == published


def test_liveness_failure_puts_worker_on_hold():
    w = ProbeWorker(LIVENESS, ProbeSettings(failure_threshold=1), container_id="c", started_at=0)
    assert w.observe(ProbeResult(FAILURE, "HTTP probe failed with statuscode: 500"))
    assert w.on_hold and not w.should_probe(100, started=True)


def test_initial_delay_and_startup_gating():
    w = ProbeWorker(LIVENESS, ProbeSettings(initial_delay=5), container_id="c", started_at=100)
    assert not w.should_probe(104.9, started=True)
    assert w.should_probe(105, started=True)
    assert not w.should_probe(200, started=False)
    s = ProbeWorker(STARTUP, ProbeSettings(), container_id="c", started_at=100)
    assert s.should_probe(100, started=False) and not s.should_probe(100, started=True)


# ---------------------------------------------------------------------------- manager on a fake clock
class ScriptedExecutor:
    """Answers per (container id, kind) from a function of time; records calls."""

    def __init__(self, clock, script):
        self.clock, self.script, self.calls = clock, script, []

    def run(self, kind, probe, target, timeout):
        self.calls.append((self.clock.now(), target.container_id, kind))
        return self.script(kind, self.clock.now())


def make_manager(script, **pod_extra):
    clock = FakeClock(T0)
    sched = ManualScheduler(clock)
    ex = ScriptedExecutor(clock, script)
    changes, events = [], []
    m = ProbeManager(executor=ex, scheduler=sched, clock=clock, on_change=changes.append,
                     on_event=lambda pod, t, reason, msg: events.append((t, reason, msg)))
    pod = {"metadata": {"uid": "u1", "name": "web", "namespace": "default"},
           "spec": {"containers": [{"name": "web", "image": "x", **pod_extra}]}}
    return clock, sched, ex, m, pod, changes, events


def test_liveness_failure_after_threshold_notifies_once_with_message():
    fail_after = T0 + 25

    def script(kind, now):
        if now >= fail_after:
            return ProbeResult(FAILURE, "HTTP probe failed with statuscode: 500")
        return ProbeResult(SUCCESS)

    clock, sched, ex, m, pod, changes, events = make_manager(
        script, livenessProbe={"httpGet": {"port": 8080, "path": "/healthz"}, "periodSeconds": 10,
                               "failureThreshold": 3})
    m.sync_pod(pod, [RunningContainer("web", "c0", T0)], "10.244.0.5")
    assert m.pod_results("u1") == {"c0": {LIVENESS: ProbeResult(SUCCESS)}}
    sched.advance(45)          # probes at 0,10,20 ok; 30,40 fail → still success
    assert changes == [] and m.pod_results("u1")["c0"][LIVENESS].result == SUCCESS
    sched.advance(10)          # third failure at 50
    assert changes == ["u1"]
    r = m.pod_results("u1")["c0"][LIVENESS]
    assert r == ProbeResult(FAILURE, "HTTP probe failed with statuscode: 500")
    assert [e for e in events if e[1] == "Unhealthy"][0] == \
        ("Warning", "Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 500")
    n = len(ex.calls)
    sched.advance(100)         # on hold: no more probes of that container
    assert len(ex.calls) == n and changes == ["u1"]
    # the restarted container gets a fresh worker
    m.sync_pod(pod, [RunningContainer("web", "c1", clock.now())], "10.244.0.5")
    assert "c0" not in m.pod_results("u1")
    assert m.pod_results("u1")["c1"][LIVENESS].result == SUCCESS


def test_readiness_false_until_first_success_and_respects_initial_delay():
    clock, sched, ex, m, pod, changes, events = make_manager(
        lambda k, now: ProbeResult(SUCCESS), readinessProbe={"tcpSocket": {"port": 80}, "initialDelaySeconds": 7,
                                                             "periodSeconds": 5})
    m.sync_pod(pod, [RunningContainer("web", "c0", T0)], "10.244.0.5")
    assert m.pod_results("u1")["c0"][READINESS].result == FAILURE
    sched.advance(6.9)
    assert ex.calls == []
    sched.advance(0.1)
    assert ex.calls == [(T0 + 7, "c0", READINESS)]
    assert changes == ["u1"] and m.pod_results("u1")["c0"][READINESS].result == SUCCESS
    sched.advance(5)
    assert len(ex.calls) == 2 and changes == ["u1"]    # unchanged: no second notification


def test_startup_gates_liveness_and_readiness_then_stops():
    started_at = T0 + 12

    def script(kind, now):
        if kind == STARTUP:
            return ProbeResult(SUCCESS if now >= started_at else FAILURE, "not yet")
        return ProbeResult(SUCCESS)

    clock, sched, ex, m, pod, changes, events = make_manager(
        script, startupProbe={"exec": {"command": ["true"]}, "periodSeconds": 5, "failureThreshold": 10},
        livenessProbe={"exec": {"command": ["true"]}, "periodSeconds": 5},
        readinessProbe={"exec": {"command": ["true"]}, "periodSeconds": 5})
    m.sync_pod(pod, [RunningContainer("web", "c0", T0)], None)
    sched.advance(11)
    assert {k for _, _, k in ex.calls} == {STARTUP}
    sched.advance(30)
    kinds_after = [k for t, _, k in ex.calls if t > T0 + 16]
    assert STARTUP not in kinds_after and LIVENESS in kinds_after and READINESS in kinds_after
    assert m.pod_results("u1")["c0"][READINESS].result == SUCCESS
    assert ("Warning", "Unhealthy", "Startup probe failed: not yet") in events


def test_remove_pod_cancels_workers():
    clock, sched, ex, m, pod, changes, events = make_manager(
        lambda k, now: ProbeResult(SUCCESS), livenessProbe={"tcpSocket": {"port": 80}})
    m.sync_pod(pod, [RunningContainer("web", "c0", T0)], "10.0.0.1")
    sched.advance(1)
    m.remove_pod("u1")
    n = len(ex.calls)
    sched.advance(100)
    assert len(ex.calls) == n and m.pod_results("u1") == {}


def test_executor_exception_reads_as_failure():
    def boom(kind, now):
        raise RuntimeError("socket exploded")
    clock, sched, ex, m, pod, changes, events = make_manager(
        boom, livenessProbe={"tcpSocket": {"port": 80}, "failureThreshold": 1})
    m.sync_pod(pod, [RunningContainer("web", "c0", T0)], "10.0.0.1")
    sched.advance(0)
    assert m.pod_results("u1")["c0"][LIVENESS].message == "probe error: socket exploded"


# ---------------------------------------------------------------------------- real executors on loopback
@pytest.fixture
def http_server():
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = {"/ok": 200, "/redirect": 302, "/fail": 500}.get(self.path, 404)
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"hi")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


def target(port_name=None, port=None):
    c = {"name": "web", "ports": [{"name": "http", "containerPort": port}] if port else []}
    return ProbeTarget({"metadata": {"uid": "u"}}, c, "cid", "127.0.0.1")


@pytest.mark.parametrize("path,result", [("/ok", SUCCESS), ("/redirect", SUCCESS), ("/fail", FAILURE),
                                         ("/missing", FAILURE)])
def test_http_get(http_server, path, result):
    r = RealProbeExecutor().run(LIVENESS, {"httpGet": {"port": http_server, "path": path}}, target(), 1)
    assert r.result == result
    if path == "/fail":
        assert r.message == "HTTP probe failed with statuscode: 500"


def test_http_get_named_port(http_server):
    r = RealProbeExecutor().run(LIVENESS, {"httpGet": {"port": "http", "path": "/ok"}}, target(port=http_server), 1)
    assert r.result == SUCCESS
    r = RealProbeExecutor().run(LIVENESS, {"httpGet": {"port": "nope"}}, target(port=http_server), 1)
    assert r.result == FAILURE and "'nope'" in r.message


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def test_http_get_connection_refused():
    port = free_port()
    r = RealProbeExecutor().run(LIVENESS, {"httpGet": {"port": port, "path": "/healthz"}}, target(), 1)
    assert r.result == FAILURE and r.message.startswith(f'Get "http://127.0.0.1:{port}/healthz": ')


def test_tcp_socket(http_server):
    ex = RealProbeExecutor()
    assert ex.run(READINESS, {"tcpSocket": {"port": http_server}}, target(), 1).result == SUCCESS
    port = free_port()
    r = ex.run(READINESS, {"tcpSocket": {"port": port}}, target(), 1)
    assert r.result == FAILURE and f"127.0.0.1:{port}" in r.message


def test_exec_via_runtime():
    class Rt:
        def __init__(self):
            self.calls = []

        def exec(self, cid, argv, timeout):
            self.calls.append((cid, argv, timeout))
            return (0, b"ok") if argv[0] == "true" else (1, b"bad things\n")
    rt = Rt()
    ex = RealProbeExecutor(rt)
    assert ex.run(LIVENESS, {"exec": {"command": ["true"]}}, target(), 2).result == SUCCESS
    r = ex.run(LIVENESS, {"exec": {"command": ["false"]}}, target(), 2)
    assert r == ProbeResult(FAILURE, "bad things")
    assert rt.calls[0] == ("cid", ["true"], 2)
