"""Cross-thread and cross-process exclusive lock on a separate, never-replaced lock file.

A ``threading.Lock`` serialises the threads of one process, then ``flock`` on
``<file>.lock`` serialises processes. The lock file is never renamed or deleted, so every
process always locks the same inode. Waiting is bounded: past the timeout the caller gets
``StoreUnavailable`` (503), never a hang and never a 500.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreUnavailable


class FileLock:
    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._thread_lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[None]:
        deadline = time.monotonic() + self.timeout
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise StoreUnavailable()
        try:
            # Opened per hold, not kept: a descriptor inherited across fork() would share the
            # flock with the parent.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                self._acquire(fd, deadline)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            self._thread_lock.release()

    @staticmethod
    def _acquire(fd: int, deadline: float) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        # Contended: wait in the kernel (woken the moment the holder releases, unlike a sleeping
        # poller that keeps missing the window to a busier process), from a helper thread so the
        # wait stays bounded. The helper locks through its own dup of the descriptor (same open
        # file, so the lock is ours), which it alone closes: no descriptor number is reused
        # under it. If we give up first, the helper releases whatever it gets.
        helper_fd = os.dup(fd)
        handoff = threading.Lock()
        acquired = threading.Event()
        abandoned = threading.Event()

        def wait() -> None:
            try:
                fcntl.flock(helper_fd, fcntl.LOCK_EX)
                with handoff:
                    if abandoned.is_set():
                        fcntl.flock(helper_fd, fcntl.LOCK_UN)
                    else:
                        acquired.set()
            except OSError:
                pass
            finally:
                os.close(helper_fd)

        threading.Thread(target=wait, name="openclaw-store-lock", daemon=True).start()
        if acquired.wait(max(0.0, deadline - time.monotonic())):
            return
        with handoff:
            if acquired.is_set():
                return
            abandoned.set()
        raise StoreUnavailable()
