"""Pod address allocation from the node's pod CIDR, kept on disk.

Contract: `NodeState` is the agent's record of pod networking on this node — the
node's pod CIDR and, per pod uid, its address, name, netns and host veth.
Every mutation runs under an exclusive `flock` on `<state_dir>/network.lock`
(separate open file descriptions, so it serializes threads of one agent as well
as processes) and is written atomically (temp file, rename), so a crash never
leaves a half-written file and the same uid gets the same IP after an agent
restart (no fsync: see `_write`).

Allocation is round-robin from the address after the last one handed out (as
CNI's host-local does), skipping the network address, the gateway (the first
host address, held by the bridge) and the broadcast address. Round-robin makes
an address that was just freed the *last* one to be reused, which keeps a
stale peer (a client still holding the old pod's IP) from reaching a new pod
straight away.
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Iterator

from shoal.agent.hostfiles import private_dir

STATE_FILE = "network.json"
LOCK_FILE = "network.lock"


class IPExhaustedError(RuntimeError):
    def __init__(self, cidr: str, pod: str):
        super().__init__(f"no free pod address in {cidr} for pod {pod}: every address of the node's podCIDR is allocated")
        self.cidr = cidr


@dataclass
class PodRecord:
    ip: str
    name: str = ""
    netns: str = ""
    veth: str = ""


def gateway_of(cidr: str) -> str:
    """The bridge's address: the first host address of the CIDR."""
    return str(ipaddress.ip_network(cidr, strict=True).network_address + 1)


class NodeState:
    def __init__(self, state_dir: str):
        self.dir = state_dir
        private_dir(state_dir)
        self.path = os.path.join(state_dir, STATE_FILE)
        self.lock_path = os.path.join(state_dir, LOCK_FILE)
        # The file as last read or written, with its identity (inode, mtime, size): every
        # pod start and the host-port sync read the state, and parsing the whole file each
        # time made a burst of N pod starts cost O(N²). Written by rename, so any change,
        # ours or another process's, shows as a new identity.
        self._cached: tuple[tuple[int, int, int], dict] | None = None

    # -- file handling
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self, *, for_change: bool = True) -> dict:
        """The state (call under the lock): a copy the caller may change and `_write`, or
        (for_change=False) the kept one itself, which the caller must not change."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._cached = None
            return {"pod_cidr": None, "last": None, "pods": {}}
        key = _identity(st)
        if self._cached is None or self._cached[0] != key:
            try:
                with open(self.path) as f:
                    data = json.load(f)
                    key = _identity(os.fstat(f.fileno()))
            except FileNotFoundError:         # replaced between the stat and the open
                return self._read(for_change=for_change)
            except json.JSONDecodeError as exc:
                raise RuntimeError(f"network state file {self.path} is corrupt: {exc}") from exc
            data.setdefault("pod_cidr", None)
            data.setdefault("last", None)
            data.setdefault("pods", {})
            self._cached = (key, data)
        return _copy(self._cached[1]) if for_change else self._cached[1]

    def _write(self, data: dict) -> None:
        # Atomic (temp file + rename) but not fsync'd: an agent crash leaves the old or the
        # new file, never half of one, and only a power loss could lose the last write —
        # which also loses every netns and veth the file describes, so the agent makes
        # them again either way. Two fsyncs per pod were ≈ 20 ms under load, serializing
        # the pod workers on this file's lock.
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".network.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                # dumps, not dump: json.dump to a file always takes the pure-Python encoder
                # (only the one-shot dumps uses the C one), ≈ 5× slower for this file.
                f.write(json.dumps(data, separators=(",", ":"), sort_keys=True))
                f.flush()
                key = _identity(os.fstat(f.fileno()))
            os.replace(tmp, self.path)
        except BaseException:
            self._cached = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._cached = (key, _copy(data))

    # -- queries
    def pod_cidr(self) -> str | None:
        with self._locked():
            return self._read(for_change=False)["pod_cidr"]

    def pods(self) -> dict[str, PodRecord]:
        with self._locked():
            return {uid: PodRecord(**rec) for uid, rec in self._read(for_change=False)["pods"].items()}

    def get(self, uid: str) -> PodRecord | None:
        return self.pods().get(uid)

    # -- mutations
    def set_pod_cidr(self, cidr: str) -> str | None:
        """Record the node's pod CIDR; return the previous one."""
        ipaddress.ip_network(cidr, strict=True)
        with self._locked():
            data = self._read()
            old = data["pod_cidr"]
            if old != cidr:
                data["pod_cidr"] = cidr
                data["last"] = None
                self._write(data)
            return old

    def allocate(self, uid: str, *, name: str = "", netns: str = "", veth: str = "") -> PodRecord:
        """The pod's address: its existing one if it has one inside the CIDR,
        else the next free address round-robin. Raises IPExhaustedError."""
        with self._locked():
            data = self._read()
            cidr = data["pod_cidr"]
            if cidr is None:
                raise RuntimeError(f"cannot allocate an address for pod {name or uid}: the node's pod CIDR is not set (ensure_node first)")
            net = ipaddress.ip_network(cidr)
            for other, orec in data["pods"].items():
                clash = [k for k, v in (("netns", netns), ("veth", veth)) if v and other != uid and orec.get(k) == v]
                if clash:
                    raise RuntimeError(
                        f"pod {name or uid} ({uid}) would share {clash[0]} {orec[clash[0]]} with pod "
                        f"{orec.get('name') or other} ({other}); pod uids must differ in their first 12 characters")
            rec = data["pods"].get(uid)
            if rec is not None and ipaddress.ip_address(rec["ip"]) in net:
                changed = False
                for k, v in (("name", name), ("netns", netns), ("veth", veth)):
                    if v and rec.get(k) != v:
                        rec[k] = v
                        changed = True
                if changed:
                    self._write(data)
                return PodRecord(**rec)
            ip = self._next_free(net, data, pod=name or uid)
            rec = asdict(PodRecord(ip=ip, name=name, netns=netns, veth=veth))
            data["pods"][uid] = rec
            data["last"] = ip
            self._write(data)
            return PodRecord(**rec)

    @staticmethod
    def _next_free(net: ipaddress.IPv4Network, data: dict, *, pod: str) -> str:
        used = {r["ip"] for r in data["pods"].values()}
        first = int(net.network_address) + 2          # .0 network, .1 gateway
        last = int(net.broadcast_address) - 1          # broadcast excluded
        if last < first:
            raise IPExhaustedError(str(net), pod)
        start = first
        if data.get("last"):
            prev = int(ipaddress.ip_address(data["last"]))
            if first <= prev <= last:
                start = prev + 1 if prev < last else first
        size = last - first + 1
        for i in range(size):
            cand = first + (start - first + i) % size
            s = str(ipaddress.ip_address(cand))
            if s not in used:
                return s
        raise IPExhaustedError(str(net), pod)

    def free(self, uid: str) -> PodRecord | None:
        with self._locked():
            data = self._read()
            rec = data["pods"].pop(uid, None)
            if rec is not None:
                self._write(data)
            return PodRecord(**rec) if rec else None


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _copy(data: dict) -> dict:
    """A copy deep enough for the mutations above (records are flat dicts of strings)."""
    out = dict(data)
    out["pods"] = {uid: dict(rec) for uid, rec in data["pods"].items()}
    return out
