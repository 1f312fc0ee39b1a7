"""The JSON store's audit log: an append-only JSON Lines file beside the store file.

``<store file>.audit.jsonl`` holds one event per line, oldest first, ids 1, 2, 3, ... The file
is only ever appended to: never rewritten, never truncated.

* An append runs under :class:`FileLock` on ``<audit file>.lock`` (threads and processes),
  reads the last complete event line to number the new one, writes the line with one
  ``write`` and fsyncs before returning (the directory too, when the append created the file).
* A crash during an append can leave a final line with no newline: readers ignore it (it was
  never acknowledged), so it never stops the service. The next append ends that line with
  :data:`TORN_SUFFIX` and a newline before writing its own, and readers skip every line that
  ends so. No valid line can: a valid line is a JSON object and ends with ``}``.
* Any other line that is not a valid event, or an id that does not increase, stops reads with
  ``StoreCorrupt`` naming the file, the line and its byte offset. The file is left as it is:
  the operator repairs it out of band. Appends only look at the end of the file, so recording
  goes on meanwhile.

Readers take no lock: a line being appended has no newline yet, so it is ignored like a torn one.

The outbox. An admin action's event must be stored with its change or not at all, and two files
cannot be committed together. So the store commits the event in its own file's atomic write, in
the header's ``audit_outbox``, numbered with the id this log will give it: the store holds this
log's lock (:meth:`JsonAuditLog.reserve`) from before it reads the last id until the event is
appended here, so no other append can take that id. Whatever the outbox holds that this log
lacks (``id`` above the last one here: the process died between the two writes, or the append
failed) is appended, with its own id, by the next append, before any read (``query``,
``export``) and when the store is opened. An event is therefore never lost, and never written
twice: the ids say which events the log already has.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..audit import AuditEvent, AuditLog, AuditQuery, NewAuditEvent
from ..errors import BillingError, StoreCorrupt, StoreUnavailable
from .filelock import FileLock
from .files import append, appending, ends_torn

logger = logging.getLogger("openclaw_billing.store")

#: What an append writes after a torn final line (before the newline) so it is skipped.
TORN_SUFFIX = b" #torn"
#: How much of the file's end is read first to find the last event (lines are < 10 kB).
_TAIL_CHUNK = 64 * 1024
#: Events written per ``write`` + ``fsync`` when importing.
_IMPORT_BATCH = 1000
_FIELDS = frozenset(AuditEvent.model_fields)


def audit_path(store_path: Path) -> Path:
    """Where the audit log of the JSON store at ``store_path`` lives."""
    return store_path.with_name(store_path.name + ".audit.jsonl")


def _line(event: AuditEvent) -> bytes:
    doc = {"id": event.id, **event.model_dump(mode="json", exclude={"id"})}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def render_outbox(events: Sequence[AuditEvent]) -> bytes:
    """The store header's ``audit_outbox``: the events as the log's lines, in a JSON list."""
    return b"[" + b",".join(_line(event)[:-1] for event in events) + b"]"


def parse_outbox(value: object) -> tuple[AuditEvent, ...] | None:
    """The events of a parsed ``audit_outbox`` (ids increasing), or None if it is not one."""
    if not isinstance(value, list):
        return None
    try:
        events = tuple(AuditEvent.model_validate(item) for item in value)
    except ValidationError:
        return None
    if any(a.id >= b.id for a, b in pairwise(events)):
        return None
    return events


@dataclass(slots=True)
class _Tail:
    """The open log under its lock: its descriptor, last id and whether it ends torn."""

    fd: int
    last: int
    torn: bool


class JsonAuditLog(AuditLog):
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock_timeout: float = 10.0,
        outbox: Callable[[], Sequence[AuditEvent]] | None = None,
    ) -> None:
        """``outbox`` returns the store's committed outbox (see the module docstring)."""
        self.path = Path(path).expanduser().absolute()
        self.location = f"jsonl://{self.path}"
        self._lock = FileLock(self.path.with_name(self.path.name + ".lock"), lock_timeout)
        self._outbox = outbox

    # -- errors ------------------------------------------------------------------------------

    def _corrupt(self, line: int, offset: int, problem: str) -> StoreCorrupt:
        return StoreCorrupt(
            f"The audit log {self.path} line {line} (byte {offset}) {problem}. The file was "
            "left untouched: repair or remove that line (keep a copy), or move the file aside."
        )

    # -- appending ---------------------------------------------------------------------------

    def append(self, event: NewAuditEvent) -> AuditEvent:
        return self._append([event])[0]

    def import_events(self, events: Iterable[NewAuditEvent]) -> int:
        count = 0
        iterator = iter(events)
        while batch := list(islice(iterator, _IMPORT_BATCH)):
            count += len(self._append(batch))
        return count

    def _append(self, events: list[NewAuditEvent]) -> list[AuditEvent]:
        with self._locked() as tail:
            pending = self._pending(tail.last)
            first = max([tail.last, *(e.id for e in pending)]) + 1
            stored = [AuditEvent(id=first + n, **e.model_dump()) for n, e in enumerate(events)]
            self._write(tail, [*pending, *stored])
        return stored

    @contextmanager
    def reserve(self) -> Iterator[int]:
        """For the store's commit of events into its outbox: hold the lock, bring the log up to
        date, yield the id the first new event takes; once the block has committed, append the
        outbox. That last append may fail (it is logged): the events are committed in the
        store, and the next append or read adds them. Raises ``StoreUnavailable`` (nothing
        committed) when the log cannot be locked, opened or brought up to date."""
        with self._locked() as tail:
            self._write(tail, self._pending(tail.last))
            yield tail.last + 1
            try:
                self._write(tail, self._pending(tail.last))
            except (OSError, BillingError) as exc:
                logger.warning(
                    "Could not append committed events to the audit log %s (%s); they are "
                    "kept in the store's outbox and appended by the next append or read",
                    self.path,
                    exc,
                )

    def catch_up(self) -> None:
        """Append the events of the store's outbox this log lacks (see the module docstring).
        Takes the lock only when there are some."""
        pending = self._outbox() if self._outbox is not None else ()
        if not pending:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            last = 0
        except OSError as exc:
            raise StoreUnavailable(f"Cannot read the audit log {self.path}: {exc}") from exc
        else:
            try:
                last, _ = self._tail(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        if pending[-1].id > last:
            self._append([])

    def _pending(self, last: int) -> list[AuditEvent]:
        """The committed events of the store's outbox after ``last``, oldest first."""
        if self._outbox is None:
            return []
        return [event for event in self._outbox() if event.id > last]

    @contextmanager
    def _locked(self) -> Iterator[_Tail]:
        """The log, locked and open for appending. OS errors become ``StoreUnavailable``."""
        try:
            with self._lock.hold(), appending(self.path) as (fd, size):
                last, torn = self._tail(fd, size)
                yield _Tail(fd, last, torn)
        except OSError as exc:
            raise StoreUnavailable(f"Cannot write the audit log {self.path}: {exc}") from exc

    def _write(self, tail: _Tail, events: Sequence[AuditEvent]) -> None:
        """Append ``events`` (numbered after ``tail.last``) with one write, and fsync."""
        if not events:
            return
        data = b"".join(_line(e) for e in events)
        if tail.torn:
            logger.warning(
                "Ended a torn line in %s left by an interrupted append (ignored)", self.path
            )
            data = TORN_SUFFIX + b"\n" + data
        append(tail.fd, data)
        tail.last, tail.torn = events[-1].id, False

    def _tail(self, fd: int, size: int) -> tuple[int, bool]:
        """The id of the last complete event line (0 if none) and whether the file ends in a
        torn line. Reads only the end of the file, more only if it holds no event line."""
        if size == 0:
            return 0, False
        torn = ends_torn(fd, size)
        window = _TAIL_CHUNK
        while True:
            start = max(0, size - window)
            chunk = os.pread(fd, size - start, start)
            end = chunk.rfind(b"\n")
            # Complete lines in the window (the first may be cut unless the window starts at 0).
            lines = chunk[: end + 1].split(b"\n")[:-1] if end >= 0 else []
            whole = lines if start == 0 else lines[1:]
            for line in reversed(whole):
                if line.endswith(TORN_SUFFIX):
                    continue
                try:
                    doc = json.loads(line)
                except ValueError:
                    doc = None
                if not isinstance(doc, dict) or type(doc.get("id")) is not int:
                    # Numbering after it would hide the damage: stop until it is repaired.
                    raise StoreCorrupt(
                        f"The audit log {self.path} ends with a damaged line; nothing was "
                        "appended. The file was left untouched: repair or remove that line "
                        "(keep a copy), or move the file aside."
                    )
                return int(doc["id"]), torn
            if start == 0:
                return 0, torn
            window *= 4

    # -- reading -----------------------------------------------------------------------------

    def _documents(self) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(line number, byte offset, parsed line) of every event, oldest first. Raises
        ``StoreCorrupt`` at the first line that is neither an event nor a skipped torn line."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreUnavailable(f"Cannot read the audit log {self.path}: {exc}") from exc
        with handle:
            offset, last_id = 0, 0
            for number, line in enumerate(handle, 1):
                start = offset
                offset += len(line)
                if not line.endswith(b"\n"):
                    return  # the final line of an append cut short (or still being written)
                body = line[:-1]
                if body.endswith(TORN_SUFFIX):
                    continue
                try:
                    doc = json.loads(body)
                except ValueError:
                    raise self._corrupt(number, start, "is not valid JSON") from None
                if not isinstance(doc, dict) or type(doc.get("id")) is not int:
                    raise self._corrupt(number, start, "is not an audit event")
                if doc["id"] <= last_id:
                    raise self._corrupt(
                        number, start, f"has id {doc['id']}, not after the previous {last_id}"
                    )
                last_id = doc["id"]
                yield number, start, doc

    def _validate(self, number: int, offset: int, doc: dict[str, Any]) -> AuditEvent:
        try:
            return AuditEvent.model_validate(doc)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "event"
            problem = f"is not a valid event ({where}: {first['msg']})"
            raise self._corrupt(number, offset, problem) from None

    def export(self) -> Iterator[AuditEvent]:
        self.catch_up()
        for number, offset, doc in self._documents():
            yield self._validate(number, offset, doc)

    def _query(self, wanted: AuditQuery) -> tuple[list[AuditEvent], int]:
        self.catch_up()
        # One pass keeps the newest offset + limit matches. Every line is parsed and checked
        # for shape (a damaged line anywhere stops the read, it is never silently left out);
        # only the page is fully validated, which keeps a long log quick to page through.
        newest: deque[tuple[int, int, dict[str, Any]]] = deque(maxlen=wanted.offset + wanted.limit)
        total = 0
        client_id, since, until = wanted.client_id, wanted.since, wanted.until
        action = None if wanted.action is None else wanted.action.value
        for number, start, doc in self._documents():
            if set(doc) != _FIELDS:
                raise self._corrupt(number, start, "is not an audit event (unexpected fields)")
            if (client_id is not None and doc["client_id"] != client_id) or (
                action is not None and doc["action"] != action
            ):
                continue
            if since is not None or until is not None:
                at = self._at(number, start, doc)
                if (since is not None and at < since) or (until is not None and at >= until):
                    continue
            total += 1
            if newest.maxlen:
                newest.append((number, start, doc))
        page = [self._validate(*found) for found in list(reversed(newest))[wanted.offset :]]
        return page, total

    def _at(self, number: int, offset: int, doc: dict[str, Any]) -> datetime:
        try:
            at = datetime.fromisoformat(doc["at"])
        except (TypeError, ValueError):
            at = None
        if at is None or at.tzinfo is None:
            raise self._corrupt(number, offset, "has no valid timezone-aware time (at)")
        return at
