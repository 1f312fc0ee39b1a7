"""Durable writes to local files, shared by the JSON store, its audit log and the gateway's
jobs file.

* :func:`write_atomic` replaces a file whole: temp file in the same directory, flushed and
  fsynced, ``os.replace``, then the directory fsynced. A crash at any step leaves exactly the
  old or the new file.
* :func:`appending` and :func:`append` add lines to an append-only JSON Lines file: opened
  ``O_APPEND`` (mode 0600 whatever the umask, a wider file narrowed), written whole and fsynced
  before returning; the directory is fsynced when the append created the file.
* :func:`fsync_directory` makes a file created or renamed in a directory survive a power cut.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

logger = logging.getLogger("openclaw_billing.store")


def fsync_directory(path: Path) -> None:
    """fsync the directory holding ``path``. A failure is only a warning: the file is already in
    place and visible to every reader, so reporting failure would deny a write that happened;
    only its durability across a power cut is in doubt."""
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        logger.warning("Could not fsync the directory of %s: %s", path, exc)


def write_atomic(target: Path, data: bytes) -> None:
    """Replace ``target`` with ``data``, all or nothing (see the module docstring)."""
    install(write_temp(target, data), target)


def write_temp(target: Path, data: bytes) -> str:
    """The first half of :func:`write_atomic`: ``data`` in a temp file beside ``target``
    (``.<name>.<random>.tmp``, mode 0600), flushed and fsynced; returns its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def install(tmp: str, target: Path) -> None:
    """The second half of :func:`write_atomic`: the temp file replaces ``target``, then the
    directory is fsynced."""
    try:
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(target)


def open_append(path: Path) -> int:
    """A descriptor of ``path`` for appending, the file 0600 (created so, or narrowed:
    ``os.open``'s mode is filtered by the umask, ``fchmod``'s is not)."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o777 != 0o600:
            os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


@contextmanager
def appending(path: Path) -> Iterator[tuple[int, int]]:
    """``path`` open for appending (see :func:`open_append`) and its size; once closed, the
    directory is fsynced if the file was new (empty)."""
    fd = open_append(path)
    try:
        size = os.fstat(fd).st_size
        yield fd, size
    finally:
        os.close(fd)
    if size == 0:
        fsync_directory(path)


def ends_torn(fd: int, size: int) -> bool:
    """Whether a file of ``size`` bytes ends in a torn line (an append cut short by a crash)."""
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def append(fd: int, data: bytes) -> None:
    """Write ``data`` whole at the end of ``fd`` (opened ``O_APPEND``), then fsync."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def private_directory(path: Path) -> None:
    """Create ``path`` and every missing parent with mode 0700 (``mkdir(parents=True)`` gives
    the parents the umask's mode: 0755, so ``~/.openclaw`` was listable by everyone). A
    directory that already exists keeps its mode: it is the operator's."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process made it first
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (a file another program then
    opens, such as a SQLite database, whose own journal files take the same mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
