"""Liveness, readiness and startup probes with Kubernetes' semantics.

Shape (kubelet's prober): one `ProbeWorker` per (container id, probe kind)
keeps the threshold bookkeeping; `ProbeManager` creates and retires workers as
containers come and go, ticks them through an injected `Scheduler`, runs the
probe through a `ProbeExecutor`, and stores results in a `ResultsCache` that
calls `on_change(pod_uid)` only when a result actually changes — that wakes the
pod worker, which re-plans (liveness failure → kill) and re-renders status
(readiness → Ready condition).

Semantics (kubelet's worker.doProbe):
- defaults: initialDelaySeconds 0, periodSeconds 10, timeoutSeconds 1,
  successThreshold 1, failureThreshold 3;
- initial results: readiness Failure (not ready until the first success),
  liveness Success, startup Unknown;
- nothing is probed before initialDelaySeconds after the container started;
- while a startup probe has not succeeded, liveness and readiness are not run;
  once it has, the startup worker stops probing;
- a result is only published after `successThreshold` successes or
  `failureThreshold` failures in a row; after a published liveness/startup
  failure the worker holds (no more probes) until the container is replaced;
- every failed probe emits a Warning `Unhealthy` event,
  e.g. `Liveness probe failed: HTTP probe failed with statuscode: 500`.

Executors: httpGet (to the pod IP unless `host` is set; 200–399 is success),
tcpSocket (a connect within the timeout), exec (`Runtime.exec`, exit 0 is
success). The hollow agent swaps in `agent.fakes.FakeProbeExecutor`.
"""
from __future__ import annotations

import http.client
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

from shoal.machinery.api.defaults import (DEFAULT_PROBE_FAILURE_THRESHOLD, DEFAULT_PROBE_PERIOD_SECONDS,
                                         DEFAULT_PROBE_SUCCESS_THRESHOLD, DEFAULT_PROBE_TIMEOUT_SECONDS)
from shoal.machinery.control.clock import Clock

log = logging.getLogger(__name__)

SUCCESS, FAILURE, UNKNOWN = "success", "failure", "unknown"
LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"
KINDS = (STARTUP, LIVENESS, READINESS)
SPEC_FIELD = {LIVENESS: "livenessProbe", READINESS: "readinessProbe", STARTUP: "startupProbe"}
TITLE = {LIVENESS: "Liveness", READINESS: "Readiness", STARTUP: "Startup"}
INITIAL = {LIVENESS: SUCCESS, READINESS: FAILURE, STARTUP: UNKNOWN}


@dataclass(frozen=True)
class ProbeResult:
    result: str           # success | failure | unknown
    message: str = ""


@dataclass(frozen=True)
class ProbeSettings:
    initial_delay: float = 0
    period: float = DEFAULT_PROBE_PERIOD_SECONDS
    timeout: float = DEFAULT_PROBE_TIMEOUT_SECONDS
    success_threshold: int = DEFAULT_PROBE_SUCCESS_THRESHOLD
    failure_threshold: int = DEFAULT_PROBE_FAILURE_THRESHOLD

    @classmethod
    def from_spec(cls, probe: Mapping) -> "ProbeSettings":
        def num(key: str, default: int) -> int:
            v = probe.get(key)
            return default if not v else max(1, int(v))
        return cls(initial_delay=max(0, int(probe.get("initialDelaySeconds") or 0)),
                   period=num("periodSeconds", DEFAULT_PROBE_PERIOD_SECONDS),
                   timeout=num("timeoutSeconds", DEFAULT_PROBE_TIMEOUT_SECONDS),
                   success_threshold=num("successThreshold", DEFAULT_PROBE_SUCCESS_THRESHOLD),
                   failure_threshold=num("failureThreshold", DEFAULT_PROBE_FAILURE_THRESHOLD))


class ProbeWorker:
    """Threshold bookkeeping for one probe of one container (no I/O)."""

    def __init__(self, kind: str, settings: ProbeSettings, *, container_id: str, started_at: float):
        self.kind = kind
        self.settings = settings
        self.container_id = container_id
        self.started_at = started_at
        self.result = ProbeResult(INITIAL[kind])
        self._last_raw: str | None = None
        self._run = 0
        self.on_hold = False

    def should_probe(self, now: float, *, started: bool) -> bool:
        if self.on_hold:
            return False
        if now - self.started_at < self.settings.initial_delay:
            return False
        if self.kind == STARTUP:
            return not started
        return started

    def observe(self, raw: ProbeResult) -> bool:
        """Feed one probe outcome; return True when the published result changed."""
        if raw.result == self._last_raw:
            self._run += 1
        else:
            self._last_raw, self._run = raw.result, 1
        if raw.result == FAILURE and self._run < self.settings.failure_threshold:
            return False
        if raw.result == SUCCESS and self._run < self.settings.success_threshold:
            return False
        if raw.result == UNKNOWN:
            return False
        changed = raw.result != self.result.result
        # keep the newest message even when the result is unchanged (the Killing reason quotes it)
        self.result = raw
        if self.kind in (LIVENESS, STARTUP) and raw.result == FAILURE:
            self.on_hold, self._run = True, 0
        return changed


@dataclass(frozen=True)
class ProbeTarget:
    pod: Mapping
    container: Mapping      # the container spec
    container_id: str
    pod_ip: str | None


class ProbeExecutor(Protocol):
    def run(self, kind: str, probe: Mapping, target: ProbeTarget, timeout: float) -> ProbeResult: ...


class ResultsCache:
    """(container id, kind) → result; `set` reports whether anything changed."""

    def __init__(self):
        self._lock = threading.Lock()
        self._d: dict[tuple[str, str], ProbeResult] = {}

    def set(self, container_id: str, kind: str, r: ProbeResult) -> bool:
        with self._lock:
            old = self._d.get((container_id, kind))
            self._d[(container_id, kind)] = r
            return old is None or old.result != r.result

    def get(self, container_id: str, kind: str) -> ProbeResult | None:
        with self._lock:
            return self._d.get((container_id, kind))

    def for_container(self, container_id: str) -> dict[str, ProbeResult]:
        with self._lock:
            return {k: v for (cid, k), v in self._d.items() if cid == container_id}

    def drop(self, container_id: str) -> None:
        with self._lock:
            for key in [k for k in self._d if k[0] == container_id]:
                del self._d[key]


@dataclass(frozen=True)
class RunningContainer:
    name: str
    id: str
    started_at: float


class ProbeManager:
    """Owns the probe workers of every pod on the node."""

    def __init__(self, *, executor: ProbeExecutor, scheduler, clock: Clock,
                 on_change: Callable[[str], None],
                 on_event: Callable[[Mapping, str, str, str], None] | None = None):
        self.executor = executor
        self.scheduler = scheduler
        self.clock = clock
        self.on_change = on_change
        self.on_event = on_event or (lambda pod, etype, reason, msg: None)
        self.results = ResultsCache()
        self._lock = threading.Lock()
        # pod uid -> {(container id, kind): (worker, timer)}
        self._pods: dict[str, dict[tuple[str, str], list]] = {}
        self._targets: dict[str, ProbeTarget] = {}

    # -- lifecycle driven by the pod worker ------------------------------------------
    def sync_pod(self, pod: Mapping, running: list[RunningContainer], pod_ip: str | None) -> None:
        """Make the workers match the pod's running containers (called on every pod sync)."""
        uid = pod["metadata"]["uid"]
        specs = {c["name"]: c for c in (pod.get("spec") or {}).get("containers") or []}
        want: dict[tuple[str, str], tuple[RunningContainer, Mapping]] = {}
        for rc in running:
            cspec = specs.get(rc.name)
            if not cspec:
                continue
            for kind in KINDS:
                if cspec.get(SPEC_FIELD[kind]):
                    want[(rc.id, kind)] = (rc, cspec)
        to_start = []
        with self._lock:
            cur = self._pods.setdefault(uid, {})
            for key in list(cur):
                if key not in want:
                    _, timer = cur.pop(key)
                    timer.cancel()
                    self.results.drop(key[0])
            for key, (rc, cspec) in want.items():
                self._targets[rc.id] = ProbeTarget(pod, cspec, rc.id, pod_ip)
                if key in cur:
                    continue
                kind = key[1]
                w = ProbeWorker(kind, ProbeSettings.from_spec(cspec[SPEC_FIELD[kind]]),
                                container_id=rc.id, started_at=rc.started_at)
                cur[key] = [w, None]
                to_start.append((uid, key, w))
            live_ids = {rc.id for rc in running}
            for cid in [c for c, t in self._targets.items() if t.pod["metadata"]["uid"] == uid and c not in live_ids]:
                del self._targets[cid]
        for uid_, key, w in to_start:
            self.results.set(w.container_id, w.kind, w.result)
            first = max(self.clock.now(), w.started_at + w.settings.initial_delay)
            self._schedule(uid_, key, first)

    def remove_pod(self, uid: str) -> None:
        with self._lock:
            cur = self._pods.pop(uid, {})
            for (cid, _), (_, timer) in cur.items():
                if timer:
                    timer.cancel()
                self.results.drop(cid)
                self._targets.pop(cid, None)

    def pod_results(self, uid: str) -> dict[str, dict[str, ProbeResult]]:
        with self._lock:
            keys = list(self._pods.get(uid, {}))
        out: dict[str, dict[str, ProbeResult]] = {}
        for cid, kind in keys:
            r = self.results.get(cid, kind)
            if r is not None:
                out.setdefault(cid, {})[kind] = r
        return out

    # -- ticking ------------------------------------------------------------------------
    def _schedule(self, uid: str, key: tuple[str, str], at: float) -> None:
        with self._lock:
            entry = self._pods.get(uid, {}).get(key)
            if entry is None:
                return
            entry[1] = self.scheduler.call_at(at, lambda: self._tick(uid, key, at))

    def _tick(self, uid: str, key: tuple[str, str], due: float) -> None:
        with self._lock:
            entry = self._pods.get(uid, {}).get(key)
            target = self._targets.get(key[0])
        if entry is None or target is None:
            return
        w: ProbeWorker = entry[0]
        now = self.clock.now()
        startup = self.results.get(w.container_id, STARTUP)
        has_startup = bool(target.container.get("startupProbe"))
        started = (not has_startup) or (startup is not None and startup.result == SUCCESS)
        if w.should_probe(now, started=started):
            probe = target.container[SPEC_FIELD[w.kind]]
            try:
                raw = self.executor.run(w.kind, probe, target, w.settings.timeout)
            except Exception as e:  # an executor bug must read as a failed probe, not a dead worker
                raw = ProbeResult(FAILURE, f"probe error: {e}")
            if raw.result == FAILURE:
                self.on_event(target.pod, "Warning", "Unhealthy",
                              f"{TITLE[w.kind]} probe failed: {raw.message}".rstrip())
            changed = w.observe(raw)
            stored_changed = self.results.set(w.container_id, w.kind, w.result)
            if changed or stored_changed:
                self.on_change(uid)
        if w.kind == STARTUP and started:
            return      # startup succeeded: this worker is done
        nxt = max(due + w.settings.period, self.clock.now())
        self._schedule(uid, key, nxt)


# ------------------------------------------------------------------------------ executors
def _resolve_port(port, container: Mapping) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"port {port!r} is not a number and no container port of {container.get('name')!r} "
                     f"is named so")


class RealProbeExecutor:
    """httpGet / tcpSocket / exec against a real pod."""

    def __init__(self, runtime=None):
        self.runtime = runtime

    def run(self, kind: str, probe: Mapping, target: ProbeTarget, timeout: float) -> ProbeResult:
        if probe.get("httpGet") is not None:
            return self.http_get(probe["httpGet"], target, timeout)
        if probe.get("tcpSocket") is not None:
            return self.tcp_socket(probe["tcpSocket"], target, timeout)
        if probe.get("exec") is not None:
            return self.exec(probe["exec"], target, timeout)
        return ProbeResult(UNKNOWN, "probe has no handler (httpGet, tcpSocket or exec)")

    def http_get(self, h: Mapping, target: ProbeTarget, timeout: float) -> ProbeResult:
        host = h.get("host") or target.pod_ip
        try:
            port = _resolve_port(h.get("port"), target.container)
        except ValueError as e:
            return ProbeResult(FAILURE, str(e))
        path = h.get("path") or "/"
        if not path.startswith("/"):
            path = "/" + path
        scheme = (h.get("scheme") or "HTTP").upper()
        url = f"{scheme.lower()}://{host}:{port}{path}"
        if not host:
            return ProbeResult(FAILURE, f'Get "{url}": the pod has no IP yet')
        headers = {"User-Agent": "shoal-probe/1.0", "Accept": "*/*"}
        for hd in h.get("httpHeaders") or []:
            headers[hd["name"]] = hd["value"]
        cls = http.client.HTTPSConnection if scheme == "HTTPS" else http.client.HTTPConnection
        kw = {}
        if scheme == "HTTPS":   # kubelet does not verify probe certificates either
            import ssl
            kw["context"] = ssl._create_unverified_context()
        conn = cls(host, port, timeout=timeout, **kw)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read(10 * 1024)
            if 200 <= resp.status < 400:
                return ProbeResult(SUCCESS, body.decode(errors="replace"))
            return ProbeResult(FAILURE, f"HTTP probe failed with statuscode: {resp.status}")
        except socket.timeout:
            return ProbeResult(FAILURE, f'Get "{url}": context deadline exceeded '
                                        f'(Client.Timeout exceeded while awaiting headers)')
        except OSError as e:
            return ProbeResult(FAILURE, f'Get "{url}": {e.strerror or e}')
        except http.client.HTTPException as e:
            return ProbeResult(FAILURE, f'Get "{url}": {type(e).__name__}: {e}')
        finally:
            conn.close()

    def tcp_socket(self, t: Mapping, target: ProbeTarget, timeout: float) -> ProbeResult:
        host = t.get("host") or target.pod_ip
        try:
            port = _resolve_port(t.get("port"), target.container)
        except ValueError as e:
            return ProbeResult(FAILURE, str(e))
        if not host:
            return ProbeResult(FAILURE, f"dial tcp :{port}: the pod has no IP yet")
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return ProbeResult(SUCCESS)
        except socket.timeout:
            return ProbeResult(FAILURE, f"dial tcp {host}:{port}: i/o timeout")
        except OSError as e:
            return ProbeResult(FAILURE, f"dial tcp {host}:{port}: connect: {e.strerror or e}")

    def exec(self, e: Mapping, target: ProbeTarget, timeout: float) -> ProbeResult:
        argv = list(e.get("command") or [])
        if not argv:
            return ProbeResult(FAILURE, "exec probe has no command")
        if self.runtime is None:
            return ProbeResult(UNKNOWN, "no runtime to exec in")
        try:
            code, out = self.runtime.exec(target.container_id, argv, timeout)
        except TimeoutError:
            return ProbeResult(FAILURE, f"command {argv!r} timed out after {timeout:g}s")
        except Exception as ex:
            return ProbeResult(FAILURE, f"exec of {argv!r} in container {target.container_id} failed: {ex}")
        text = out.decode(errors="replace") if isinstance(out, (bytes, bytearray)) else str(out)
        if code == 0:
            return ProbeResult(SUCCESS, text)
        return ProbeResult(FAILURE, text.strip() or f"command {argv!r} exited with {code}")
