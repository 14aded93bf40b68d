"""Which file answers a container-log request: the log endpoint's lookup.

`PodLogs.resolve(namespace, pod, container, previous)` is what `agent.logserver.LogServer`
calls for `GET /containerLogs/{ns}/{pod}/{container}`. It finds the pod's worker by name
(`find`, the worker map), checks the container is in the pod's spec, and picks the attempt:
the newest `<data-dir>/pods/<uid>/logs/<container>/<attempt>.log`, or the one before it
with `previous`. With it comes `still_writing()`, which tells a follow when to stop: the
agent is stopping, a newer attempt has begun, or the attempt's container no longer runs.

Errors (`LogNotFound` → 404, `LogRequestInvalid` → 400) name the pod, container and node.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from shoal.agent.logserver import LogNotFound, LogRequestInvalid
from shoal.agent.worker import container_id_for


def log_attempts(d: Path) -> list[int]:
    """The attempts a container has logs of, oldest first."""
    if not d.is_dir():
        return []
    return sorted(int(f.stem) for f in d.glob("*.log") if f.stem.isdigit())


def pick_attempt(attempts: list[int], *, previous: bool, pod: str, container: str) -> int:
    """The attempt a request is for: the newest, or with `previous` the one before it."""
    if not attempts:
        raise LogNotFound(f'container "{container}" in pod "{pod}" has no log yet (waiting to start)')
    if previous:
        if len(attempts) < 2:
            raise LogRequestInvalid(f'previous terminated container "{container}" in pod "{pod}" not found')
        return attempts[-2]
    return attempts[-1]


class PodLogs:
    def __init__(self, *, node_name: str, data_dir: Path, runtime,
                 find: Callable[[str, str], tuple[str, dict | None] | None], stopped: Callable[[], bool]):
        self.node_name = node_name
        self.data_dir = Path(data_dir)
        self.runtime = runtime
        self._find, self._stopped = find, stopped

    def resolve(self, ns: str, pod: str, container: str, previous: bool) -> tuple[Path, Callable[[], bool]]:
        found = self._find(ns, pod)
        if found is None:
            raise LogNotFound(f'pod "{pod}" in namespace "{ns}" is not running on node {self.node_name}')
        uid, p = found
        names = [c["name"] for c in (p.get("spec") or {}).get("containers") or []] if p else []
        if container not in names:
            raise LogNotFound(f'container "{container}" is not valid for pod "{pod}"')
        d = self.data_dir / "pods" / uid / "logs" / container
        attempts = log_attempts(d)
        attempt = pick_attempt(attempts, previous=previous, pod=pod, container=container)
        if attempt != attempts[-1]:
            return d / f"{attempt}.log", lambda: False

        def writing() -> bool:
            if self._stopped() or (d / f"{attempt + 1}.log").exists():
                return False
            st = self.runtime.state(container_id_for(uid, container, attempt))
            return st is not None and st.status == "running"
        return d / f"{attempt}.log", writing
