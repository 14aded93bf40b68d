"""Wake-ups when conmon writes an exit file: inotify on the runtime's `exits/` dir.

The agent relists the runtime every `relist_interval` (0.5 s) like kubelet's PLEG;
waiting on this too lets it notice a crash within milliseconds, which is most of
the crash → running-again time. Linux-only (inotify through libc); where inotify
is unavailable `wait()` just sleeps for its timeout.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import threading
import time

log = logging.getLogger(__name__)

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100


class ExitWatcher:
    def __init__(self, directory: str):
        self.directory = directory
        self._fd = -1
        self._lock = threading.Lock()
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1")
            wd = libc.inotify_add_watch(fd, directory.encode(), IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)
            if wd < 0:
                os.close(fd)
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
            self._fd = fd
        except (OSError, AttributeError) as e:
            log.warning("exit notifications unavailable (%s): relying on the periodic relist", e)

    def wait(self, timeout: float) -> bool:
        """True when an exit file was written since the last call (or within timeout)."""
        if self._fd < 0:
            time.sleep(timeout)
            return False
        try:
            ready, _, _ = select.select([self._fd], [], [], timeout)
        except (OSError, ValueError):
            return False
        if not ready:
            return False
        with self._lock:
            try:
                while os.read(self._fd, 65536):
                    pass
            except BlockingIOError:
                pass
            except OSError:
                return False
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
