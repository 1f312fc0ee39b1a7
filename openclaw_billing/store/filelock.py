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
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreUnavailable() from None
                time.sleep(delay)
                delay = min(delay * 2, 0.01)
