"""One worker thread per network namespace, and the namespace syscalls it makes.

pyroute2 >= 0.9 keeps its socket per *thread*, and a netlink socket belongs to
the netns its creating thread was in. `setns(CLONE_NEWNET)` is per-thread, so
each namespace gets one `NsWorker` thread that entered it once and owns an
`IPRoute` there: calls are serialized per namespace (which also makes the
wrapper safe for concurrent pod workers) and cost a queue hop, not a fork.
pyroute2's own `IPRoute(netns=...)` forks a helper per socket (≈10 ms).

The worker also makes the namespace's plain rtnetlink socket (`rtnl.Rtnl`) on its
thread, inside the namespace; callers then use that socket from their own thread.

`NsWorker.create` makes a namespace the way iproute2 does — unshare, then a bind
mount of /proc/self/task/TID/ns/net on /run/netns/NAME — but from the worker
thread, which stays there to serve the pod-side calls that follow; no forked
child. A thread parked in a namespace keeps it alive: close the worker before
removing the namespace.
"""
from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, cast

from shoal.agent.network.netlink import NetlinkOpError
from shoal.agent.network.rtnl import Rtnl

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2


class NsWorker:
    """One thread parked in a namespace, owning an IPRoute opened there; and the namespace's
    plain rtnetlink socket, made there and then used from any thread (`rtnl`)."""

    def __init__(self, path: str | None, libc: Any):
        self.path = path
        self._libc = libc
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
        self._local = threading.local()
        self._rtnl: Rtnl | None = None      # made (and assigned) on this worker's thread only
        # name -> ifindex seen in this namespace (plain dict operations, from any thread). Looking
        # a link up decodes its whole RTM_NEWLINK answer, the largest CPU cost of a pod's setup.
        self.indexes: dict[str, int] = {}

    def _enter(self) -> None:
        if not getattr(self._local, "entered", False):
            if self.path is not None:
                _setns_thread(self._libc, self.path)
            self._local.entered = True

    def _ipr(self):
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            self._enter()
            from pyroute2 import IPRoute
            ipr = IPRoute()
            self._local.ipr = ipr
        return ipr

    def rtnl(self) -> "Rtnl":
        """This namespace's plain rtnetlink socket, for any thread. It is made on the worker's
        thread, inside the namespace, and keeps that namespace for good (a netlink socket's
        namespace is fixed when it is made), so the requests of a pod's setup need no hand-over
        to the namespace's thread — each was two thread switches, and under load a wait for the
        GIL on each side. `Rtnl` serializes its requests."""
        r = self._rtnl
        if r is None:
            if getattr(self._local, "entered", False):
                r = self._make_rtnl()        # we are the namespace's thread (an IPRoute call's fn)
            else:
                r = self._pool.submit(self._make_rtnl).result()
        return r

    def _make_rtnl(self) -> "Rtnl":
        """On the worker's thread only, so the socket is made once and inside the namespace."""
        if self._rtnl is None:
            self._enter()
            self._rtnl = Rtnl()
        return self._rtnl

    def call(self, fn: Callable[[Any], Any]) -> Any:
        return self._pool.submit(lambda: fn(self._ipr())).result()

    def call_raw(self, fn: Callable[["Rtnl"], Any]) -> Any:
        """fn(rtnl) on the calling thread, with the namespace's socket (no IPRoute)."""
        return fn(self.rtnl())

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run fn inside the namespace without an IPRoute (sysctl writes)."""
        def job():
            self._enter()
            return fn()
        return self._pool.submit(job).result()

    def create(self) -> None:
        """Make a new namespace from inside the worker thread and bind-mount it on
        `path`; the thread then stays in it, ready for the pod-side calls."""
        libc, path = self._libc, cast(str, self.path)     # only a named namespace's worker creates

        def job():
            if libc.unshare(CLONE_NEWNET) != 0:
                raise NetlinkOpError(ctypes.get_errno(), f"unshare a network namespace for {path}")
            self._local.entered = True    # even if the mount fails: never reuse this thread elsewhere
            src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
            if libc.mount(src, path.encode(), b"none", MS_BIND, None) != 0:
                raise NetlinkOpError(ctypes.get_errno(), f"bind-mount network namespace on {path}")
            self._make_rtnl()             # the pod's requests follow at once: their socket, made in it
        self._pool.submit(job).result()

    def close(self) -> None:
        def shut():
            ipr = getattr(self._local, "ipr", None)
            if ipr is not None:
                ipr.close()
                self._local.ipr = None
        try:
            self._pool.submit(shut).result()
        finally:
            self._pool.shutdown(wait=True)
            r, self._rtnl = self._rtnl, None
            if r is not None:
                r.close()


def load_libc():
    """libc with errno kept, for unshare, setns and mount."""
    return ctypes.CDLL(None, use_errno=True)


def _setns_thread(libc: Any, path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise NetlinkOpError(e, f"setns into {path}")
    finally:
        os.close(fd)
