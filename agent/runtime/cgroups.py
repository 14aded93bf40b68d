"""Just enough cgroupfs for the runtime: where the hierarchies are, moving a
process into a group, removing left-over groups, reading the OOM-kill counter.

runc creates and deletes each container's own cgroup (`cgroupsPath` in the
spec, `<cgroup_parent>/<container id>` in every hierarchy); this module is for
what runc does not do: putting the conmon monitors into a group of their own
(`<cgroup_parent>/shoal-monitors`) and cleaning up after a crash.

The machine may run cgroup v1, v2 (unified) or hybrid (v1 controllers plus a
controller-less v2 tree at /sys/fs/cgroup/unified, which is what systemd uses
to track services in hybrid mode — a monitor left in the agent's v2 group
would be killed with the agent's service). `parse_cgroup_mounts` reads
/proc/self/mountinfo, so all three are handled the same way: join the group
in every mounted hierarchy.
"""
from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: str
    version: int                 # 1 or 2
    controllers: tuple[str, ...]  # v1: from the mount options ("memory", "name=systemd"); v2: ()


def parse_cgroup_mounts(mountinfo: str) -> list[Hierarchy]:
    out: list[Hierarchy] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rfields = right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        fstype, super_opts = rfields[0], rfields[2]
        mountpoint = fields[4]
        if fstype == "cgroup2":
            out.append(Hierarchy(mountpoint, 2, ()))
        elif fstype == "cgroup":
            known = {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
                     "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc"}
            ctrls = tuple(o for o in super_opts.split(",") if o in known or o.startswith("name="))
            out.append(Hierarchy(mountpoint, 1, ctrls))
    return out


def cgroup_mode(hierarchies: list[Hierarchy]) -> str:
    v1 = any(h.version == 1 for h in hierarchies)
    v2 = any(h.version == 2 for h in hierarchies)
    return "hybrid" if v1 and v2 else ("v1" if v1 else ("v2" if v2 else "none"))


class Cgroups:
    def __init__(self, hierarchies: list[Hierarchy] | None = None):
        if hierarchies is None:
            with open("/proc/self/mountinfo") as f:
                hierarchies = parse_cgroup_mounts(f.read())
        self.hierarchies = hierarchies
        self.mode = cgroup_mode(hierarchies)
        # Groups join() has made ready (created, cpuset filled in): every container's monitor
        # joins the same group, and making sure again each time was ~20 syscalls per pod.
        self._ready: set[str] = set()

    def _dir(self, h: Hierarchy, rel: str) -> str:
        return os.path.join(h.mountpoint, rel.lstrip("/"))

    def paths(self, rel: str) -> list[str]:
        return [self._dir(h, rel) for h in self.hierarchies]

    def join(self, pid: int, rel: str) -> None:
        """Move pid into `rel` in every hierarchy, creating the group."""
        for h in self.hierarchies:
            d = self._dir(h, rel)
            if d not in self._ready:
                self._prepare(h, rel, d)
            try:
                self._move(pid, d)
            except OSError as e:
                # Removed since it was made ready (ENOENT), or made again by someone else
                # with an empty cpuset (ENOSPC): make it ready once more.
                if e.errno not in (errno.ENOENT, errno.ENOSPC) or d not in self._ready:
                    raise
                self._ready.discard(d)
                self._prepare(h, rel, d)
                self._move(pid, d)

    def _prepare(self, h: Hierarchy, rel: str, d: str) -> None:
        os.makedirs(d, exist_ok=True)
        if h.version == 1 and "cpuset" in h.controllers:
            self._init_cpuset(h, rel)
        self._ready.add(d)

    @staticmethod
    def _move(pid: int, d: str) -> None:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        log.debug("cgroups: pid %d -> %s", pid, d)

    def _init_cpuset(self, h: Hierarchy, rel: str) -> None:
        # A v1 cpuset group starts with empty cpus/mems and refuses tasks until
        # they are copied down from the parent (runc does the same).
        parts = [p for p in rel.strip("/").split("/") if p]
        for i in range(1, len(parts) + 1):
            d = os.path.join(h.mountpoint, *parts[:i])
            parent = os.path.dirname(d)
            for name in ("cpuset.cpus", "cpuset.mems"):
                mine = os.path.join(d, name)
                with open(mine) as f:
                    if f.read().strip():
                        continue
                with open(os.path.join(parent, name)) as f:
                    value = f.read().strip()
                with open(mine, "w") as f:
                    f.write(value)

    def remove(self, rel: str) -> list[str]:
        """rmdir `rel` (and its empty children) in every hierarchy; returns the
        directories that could not be removed (still holding processes)."""
        left: list[str] = []
        for d in self.paths(rel):
            self._ready = {r for r in self._ready if r != d and not r.startswith(d + "/")}
            if not os.path.isdir(d):
                continue
            for root, dirs, _ in os.walk(d, topdown=False):
                for sub in dirs:
                    self._rmdir(os.path.join(root, sub), left)
            self._rmdir(d, left)
        return left

    @staticmethod
    def _rmdir(d: str, left: list[str]) -> None:
        try:
            os.rmdir(d)
            log.debug("cgroups: removed %s", d)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                left.append(d)
            else:
                raise

    def exists(self, rel: str) -> bool:
        return any(os.path.isdir(d) for d in self.paths(rel))

    def oom_kills(self, rel: str) -> int | None:
        """The group's OOM-kill counter (v1 memory.oom_control, v2 memory.events),
        None if the group is gone."""
        for h in self.hierarchies:
            d = self._dir(h, rel)
            if h.version == 1 and "memory" in h.controllers:
                return _read_counter(os.path.join(d, "memory.oom_control"), "oom_kill")
            if h.version == 2 and os.path.exists(os.path.join(h.mountpoint, "cgroup.controllers")):
                n = _read_counter(os.path.join(d, "memory.events"), "oom_kill")
                if n is not None:
                    return n
        return None


def _read_counter(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return None
