"""One process's copy of the JSON store: its state in memory, kept up to date with the files
(the snapshot and the journal that follows it), and the writer's side of the protocol: the
append and the compaction (see :mod:`.json_file` for the protocol as a whole).

A :class:`Replica` is shared by the threads of one :class:`~.json_file.JsonFileStore`. Its
mutex guards the state and the position in the files; readers take it to catch up and to look
things up, and copy what they hand out after letting go (what the state holds is never changed
in place). A writer holds the file lock for its whole batch: readers of the process then serve
the state as it stood before the batch (nothing else can be appended meanwhile) and never
replay the writer's own lines, which the writer puts in the state itself once written.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from ..cycles import utcnow
from ..errors import BillingError, StoreCorrupt, StoreUnavailable
from .filelock import FileLock
from .files import append, fsync_directory, install, open_append, write_atomic, write_temp
from .json_format import Head, corrupt, parse_snapshot, read_head
from .json_journal import decode, frame, header, journal_path, journals
from .json_state import ReplayError, State, replay

logger = logging.getLogger("openclaw_billing.store")

#: A journal is compacted into a new snapshot once it is larger than the snapshot, within
#: these bounds: the cost of compactions stays proportional to what was written.
COMPACT_MIN = 1 << 20
COMPACT_MAX = 64 << 20
#: How much of a snapshot's start is read to find its first line.
_HEAD_BYTES = 4096

#: What identifies a snapshot file as read: a compaction replaces it (a new inode), an edit in
#: place changes its size or times.
Signature = tuple[int, int, int, int]
#: A signature no file has: the next catch-up reads the snapshot again.
_STALE: Signature = (-1, -1, -1, -1)


def step(name: str) -> None:
    """Called after each step of a compaction ("temp-written", "renamed", "journal-started",
    "old-removed"). Does nothing; the crash tests stop the process here."""


class JournalDamage(Exception):
    """Damage in the journal, found without the file lock: checked again under it (a writer
    cutting a torn tail off at that moment could look like damage)."""


class Replica:
    def __init__(self, path: Path, lock: FileLock) -> None:
        self.path = path
        self._lock = lock
        self.mutex = threading.RLock()
        self.state = State()
        #: The snapshot read: its generation and token (None: generation 0, no journal).
        self.generation = 0
        self.token: str | None = None
        #: Journal bytes applied (the end of the last complete batch), and that batch's number
        #: (0: the header, -1: none yet).
        self.offset = 0
        self.batch = -1
        self._snapshot: Signature | None = None
        self._snapshot_size = 0
        self._journal = journal_path(path, 0)
        #: (generation, size) of a journal that names another snapshot: not read again as such.
        self._skip: tuple[int, int] | None = None
        #: A batch of this process is being written: its readers do not catch up meanwhile.
        self.writing = False

    # -- reading ---------------------------------------------------------------------------

    def open(self) -> None:
        """Load the store (the caller holds the file lock), and remove old journals."""
        with self.mutex:
            self._catch_up(locked=True)
        if self._snapshot is None and journals(self.path):
            raise corrupt(self.path, "is missing, but journals of it are there")
        self._sweep()

    @contextmanager
    def reading(self, *, escalate: bool = True) -> Iterator[State]:
        """The state, caught up with the files, under the mutex. ``escalate=False``: damage
        found in the journal without the lock leaves the state as it was (no lock is taken)."""
        with self.mutex:
            damaged = False
            try:
                if not self.writing:
                    self._catch_up(locked=False)
            except JournalDamage:
                damaged = escalate
            if not damaged:
                yield self.state
                return
        with self._lock.hold(), self.mutex:
            self._catch_up(locked=True)
            yield self.state

    @contextmanager
    def writer(self) -> Iterator[State]:
        """For the holder of the file lock: the state caught up, for one batch."""
        with self.mutex:
            self._catch_up(locked=True)
            self.writing = True
        try:
            yield self.state
        finally:
            self.writing = False

    def _catch_up(self, *, locked: bool) -> None:
        snapshot = self._stat()
        if snapshot != self._snapshot:
            self._reload(snapshot, locked=locked)
        if self.token is None:
            return  # generation 0 has no journal
        size = _size(self._journal)
        if size == self.offset or self._skip == (self.generation, size):
            return
        if size < self.offset:
            # Cut behind what was applied (a write undone after it was read, a file replaced
            # by hand): read the store again.
            self._reload(snapshot, locked=locked, force=True)
        self._read(None, locked=locked)

    def _stat(self) -> Signature | None:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"Cannot read the billing store {self.path}: {exc}") from exc
        return (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)

    def _reload(self, snapshot: Signature | None, *, locked: bool, force: bool = False) -> None:
        """Take the snapshot now on disk: without parsing it if it was compacted from exactly
        the state held (see :mod:`.json_format`), else parsed whole."""
        if snapshot is None:
            self._take(State(), Head(0, None), None, 0)
            return
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            self._take(State(), Head(0, None), None, 0)
            return
        except OSError as exc:
            raise StoreUnavailable(f"Cannot read the billing store {self.path}: {exc}") from exc
        with handle:
            status = os.fstat(handle.fileno())
            signature = (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
            head = read_head(handle.read(_HEAD_BYTES))
            if not force and head is not None and self._follows(head, locked=locked):
                self._take(self.state, head, signature, status.st_size)
                return
            handle.seek(0)
            raw = handle.read()
        snap = parse_snapshot(self.path, raw)
        try:
            state = State.of(snap, raw)
        except ReplayError as exc:
            raise corrupt(self.path, str(exc)) from None
        self._take(state, snap.head, signature, len(raw))

    def _follows(self, head: Head, *, locked: bool) -> bool:
        """Whether ``head``'s snapshot was compacted from the journal read, at a point this
        replica reaches (reading the rest of that journal, kept until the next compaction)."""
        if head.follows is None or self.token is None or head.generation != self.generation + 1:
            return False
        token, size = head.follows
        if token != self.token:
            return False
        if self.offset < size:
            self._read(size, locked=locked)
        return self.offset == size

    def _take(self, state: State, head: Head, snapshot: Signature | None, size: int) -> None:
        self.state, self.generation, self.token = state, head.generation, head.token
        self.offset, self.batch, self._skip = 0, -1, None
        self._snapshot, self._snapshot_size = snapshot, size
        self._journal = journal_path(self.path, self.generation)

    def _read(self, upto: int | None, *, locked: bool) -> None:
        """Apply the complete batches of the journal after ``offset`` (to ``upto`` at most)."""
        path = self._journal
        try:
            with path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read() if upto is None else handle.read(upto - self.offset)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreUnavailable(f"Cannot read the billing store {path}: {exc}") from exc
        decoded = decode(data, self.batch + 1)
        if decoded.damage is not None:
            if not locked:
                raise JournalDamage()
            problem, at = decoded.damage
            raise _corrupt_journal(path, f"{problem} (byte {self.offset + at})")
        batches = decoded.batches
        if batches and self.batch < 0:
            doc = batches[0][0][0]
            if len(batches[0]) != 1 or (doc["t"], doc.get("generation"), doc.get("token")) != (
                "h",
                self.generation,
                self.token,
            ):
                logger.warning("Ignored %s: its header names another snapshot", path)
                self._skip = (self.generation, self.offset + len(data))
                return
        try:
            replay(self.state, batches[1:] if self.batch < 0 else batches)
        except ReplayError as exc:
            self._snapshot = _STALE  # what was applied of it goes: read everything again
            raise _corrupt_journal(path, str(exc)) from None
        self.offset += decoded.consumed
        self.batch += len(batches)

    # -- writing (the caller holds the file lock and ``writer``) --------------------------------

    def commit(self, entries: Sequence[bytes], install_: Callable[[State], None]) -> None:
        """Append one batch of ``entries`` with one write and one fsync, then ``install_`` its
        changes in the state. The first write of a generation-0 store compacts it first; a
        journal grown past its bound is compacted after. Raises ``StoreUnavailable`` (nothing
        written) when the batch cannot be written."""
        if self.token is None:
            self.compact()
        assert self.token is not None
        number = 1 if self.offset == 0 else self.batch + 1
        data = frame(entries, number)
        if self.offset == 0:
            data = header(self.generation, self.token) + data
        self._write(data)
        with self.mutex:
            install_(self.state)
            self.offset += len(data)
            self.batch = number
        if self.offset > min(max(self._snapshot_size, COMPACT_MIN), COMPACT_MAX):
            try:
                self.compact()
            except BillingError as exc:  # the batch is written: the next write tries again
                logger.warning("Could not compact the billing store %s: %s", self.path, exc)

    def _write(self, data: bytes) -> None:
        path = self._journal
        try:
            fd = open_append(path)
        except OSError as exc:
            raise StoreUnavailable(f"Cannot write the billing store {self.path}: {exc}") from exc
        size = -1
        try:
            size = os.fstat(fd).st_size
            if size < self.offset:
                self._snapshot = _STALE
                raise OSError(f"the journal {path} is shorter than what was read of it")
            if size > self.offset:
                logger.warning(
                    "Cut %d bytes off the end of %s: the torn tail of an interrupted write",
                    size - self.offset,
                    path,
                )
                os.ftruncate(fd, self.offset)
            append(fd, data)
        except OSError as exc:
            if size >= self.offset:
                with suppress(OSError):  # nothing of a failed write stays
                    os.ftruncate(fd, self.offset)
            raise StoreUnavailable(f"Cannot write the billing store {self.path}: {exc}") from exc
        finally:
            os.close(fd)
        if size == 0:
            fsync_directory(path)

    def compact(self) -> None:
        """Write the state as the snapshot of the next generation, then start its journal and
        remove the journals before the previous one (kept for readers still reading it). A
        crash at any step leaves the old snapshot and its journal, or the new snapshot (and
        its journal, or none yet: empty): the same state either way."""
        state = self.state
        generation, token = self.generation + 1, secrets.token_hex(16)
        follows = None if self.token is None else (self.token, self.offset)
        raw = state.render(Head(generation, token, follows))
        try:
            if state.legacy_raw is not None:
                stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
                backup = self.path.with_name(f"{self.path.name}.legacy-backup-{stamp}")
                write_atomic(backup, state.legacy_raw)
                logger.warning(
                    "Migrating %s to hashed keys; the original file is kept as %s",
                    self.path,
                    backup,
                )
            temp = write_temp(self.path, raw)
            step("temp-written")
            install(temp, self.path)
        except OSError as exc:
            raise StoreUnavailable(f"Cannot write the billing store {self.path}: {exc}") from exc
        step("renamed")
        with self.mutex:
            self._take(state, Head(generation, token, follows), self._stat(), len(raw))
            state.legacy_raw = None
        self._start_journal()
        step("journal-started")
        self._sweep()
        step("old-removed")

    def _start_journal(self) -> None:
        assert self.token is not None
        path = self._journal
        data = header(self.generation, self.token)
        try:
            fd = open_append(path)
            try:
                if os.fstat(fd).st_size:
                    logger.warning("Replaced %s, a journal of another snapshot", path)
                    os.ftruncate(fd, 0)
                append(fd, data)
            finally:
                os.close(fd)
            fsync_directory(path)
        except OSError as exc:
            logger.warning("Could not start the journal %s (%s): the next write will", path, exc)
            return
        with self.mutex:
            self.offset, self.batch = len(data), 0

    def _sweep(self) -> None:
        """Remove the journals older than the previous generation's: nobody reads them."""
        for generation, path in journals(self.path).items():
            if generation < self.generation - 1:
                with suppress(FileNotFoundError):
                    path.unlink()


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StoreUnavailable(f"Cannot read the billing store {path}: {exc}") from exc


def _corrupt_journal(path: Path, problem: str) -> StoreCorrupt:
    return StoreCorrupt(
        f"The billing store's journal {path} {problem}. The file was left untouched: restore "
        "the store from a backup, or repair the journal (keep a copy)."
    )
