"""The embedded default store: one JSON file, written atomically.

Protocol (see docs/ARCHITECTURE.md, "Storage protocols"):

* every read-modify-write runs under :class:`FileLock` (threads and processes) and re-reads
  the file under that lock, so no update is ever lost to another worker;
* a write goes to a temp file in the same directory, is flushed and fsynced, replaces the
  file with ``os.replace`` and then the directory is fsynced: a crash at any step leaves
  exactly the old or the new file;
* the file is one JSON document laid out with one client per line (see :func:`render`), so a
  write serialises only the client it changed, and a reader that finds the file changed (by
  another worker) parses and validates only the lines that differ from the state it holds;
  a file in any other layout is parsed whole, and the next write lays it out again;
* temp files left by a crash are swept when the store is opened;
* an admin action's audit event is written in the same file write as its change, in the
  header's ``audit_outbox`` (with the id the audit log will give it), and only then appended
  to the audit log (``<file>.audit.jsonl``), under the log's lock held across both writes.
  Events of the outbox that the log lacks (a crash between the two writes, a failed append)
  are appended before any append or read of the log, and when the store is opened, by id,
  so none is lost or written twice (see :mod:`.audit_json`). A charge carries no event: it
  never touches the log;
* a file that does not parse or validate raises :class:`StoreCorrupt` naming the file, and is
  never overwritten;
* a file in the original module's format (plaintext ``api_key``) loads, its keys keep
  working, and the first write migrates it to digests after a backup copy is made.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

from .. import access
from ..audit import AuditEvent, NewAuditEvent
from ..cycles import utcnow
from ..errors import (
    ClientNotFound,
    DuplicateClient,
    StoreUnavailable,
    UnstorableChange,
)
from ..models import ClientRecord
from .audit_json import JsonAuditLog, audit_path
from .base import EVENT_ID_RETENTION, EventOutcome, StripeRef
from .filelock import FileLock
from .files import private_directory, write_atomic
from .json_batch import JsonBatch
from .json_format import (
    EMPTY,
    State,
    client_line,
    line_record,
    parse,
    record_digests,
    render,
    render_meta,
)
from .json_query import overview_of, select_clients
from .mutating import MutatingStore, Staged, apply_event_change, log_cycle_reset
from .query import FIRST_PAGE, ClientQuery, StoreOverview
from .sessions_json import JsonSessionStore, sessions_path

logger = logging.getLogger("openclaw_billing.store")


class JsonFileStore(MutatingStore):
    audit: JsonAuditLog

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 10.0) -> None:
        self.path = Path(path).expanduser().absolute()
        self.location = f"json://{self.path}"
        try:
            private_directory(self.path.parent)
        except OSError as exc:
            raise StoreUnavailable(
                f"Cannot create the store directory {self.path.parent}: {exc}"
            ) from exc
        self._lock = FileLock(self.path.with_name(self.path.name + ".lock"), lock_timeout)
        self.audit = JsonAuditLog(
            audit_path(self.path), lock_timeout=lock_timeout, outbox=lambda: self._current().outbox
        )
        self.sessions = JsonSessionStore(sessions_path(self.path), lock_timeout=lock_timeout)
        self._state: State = EMPTY
        #: The state before ``_state``: a reader that raced a commit may still bring its bytes.
        self._previous: State = EMPTY
        with self._lock.hold():
            self._sweep_temp_files()
            self._current()
        try:  # events a crash left in the outbox; a log that cannot take them now gets them later
            self.audit.catch_up()
        except StoreUnavailable as exc:
            logger.warning("The audit log could not be brought up to date at start: %s", exc)

    # -- reading -----------------------------------------------------------------------------

    def _read_raw(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"Cannot read the billing store {self.path}: {exc}") from exc

    def _current(self) -> State:
        """The file's state now. Parsing is skipped when the bytes are the ones already parsed
        (compared in full, so the cache can never be stale)."""
        raw = self._read_raw()
        for known in (self._state, self._previous):
            if raw == known.raw:
                return known
        state = EMPTY if raw is None else parse(self.path, raw, self._state)
        self._remember(state)
        return state

    def _remember(self, state: State) -> None:
        # Keep the two latest states: an unlocked reader that read the file just before a
        # commit must not evict the committed state (the next read would parse it again).
        if state.raw != self._state.raw:
            self._previous, self._state = self._state, state

    def _sweep_temp_files(self) -> None:
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with suppress(FileNotFoundError):
                stale.unlink()
                logger.warning("Removed a temp file left by an interrupted write: %s", stale)

    # -- writing -----------------------------------------------------------------------------

    def _commit(
        self,
        state: State,
        records: Sequence[ClientRecord] = (),
        *,
        lines: Mapping[str, bytes] | None = None,
        events: dict[str, str] | None = None,
        audit: Sequence[NewAuditEvent] = (),
    ) -> None:
        """Write ``state`` with ``records`` (the clients changed or added; ``lines``: lines
        already rendered and checked for some of them), ``events`` and the ``audit`` events
        put in, in one atomic write; the cache follows only on success.

        Audit events go into the header's outbox, numbered by the audit log, whose lock is
        held from before the numbering until the log has them (see the module docstring)."""
        if not audit:
            self._write_state(state, records, lines or {}, events, state.outbox)
            return
        with self.audit.reserve() as first_id:
            # The log holds every event of the outbox by now: it keeps only the new ones.
            outbox = tuple(
                AuditEvent(id=first_id + n, **event.model_dump()) for n, event in enumerate(audit)
            )
            self._write_state(state, records, lines or {}, events, outbox)

    def _write_state(
        self,
        state: State,
        records: Sequence[ClientRecord],
        checked: Mapping[str, bytes],
        events: dict[str, str] | None,
        outbox: tuple[AuditEvent, ...],
    ) -> None:
        meta_raw = state.meta_raw
        if events is None:
            events = state.events
        if events != state.events or outbox != state.outbox:
            meta_raw = render_meta(events, outbox)
        clients, by_digest = dict(state.clients) if records else state.clients, state.by_digest
        lines, positions = list(state.lines), state.positions
        for record in records:
            cid = record.client_id
            if any(by_digest.get(d) != cid for d in record_digests(record)):
                by_digest = dict(by_digest) if by_digest is state.by_digest else by_digest
                by_digest.update(dict.fromkeys(record_digests(record), cid))
            # Only the changed clients' lines are serialised; the others are the bytes there.
            # The cache holds each record as a reader parses it from its line.
            position = positions.get(cid)
            if position is None:
                positions = {**positions, cid: len(lines)}
                if lines:  # the last line so far gets its comma
                    lines[-1] += b","
                line, clients[cid] = self._checked(record, last=True)
                lines.append(line)
            elif cid in checked:  # rendered and parsed back already (a batch)
                lines[position], clients[cid] = checked[cid], record
            else:
                lines[position], clients[cid] = self._checked(
                    record, last=position == len(lines) - 1
                )
        raw = render(meta_raw, tuple(lines))
        try:
            if state.legacy and state.raw is not None:
                stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
                backup = self.path.with_name(f"{self.path.name}.legacy-backup-{stamp}")
                write_atomic(backup, state.raw)
                logger.warning(
                    "Migrating %s to hashed keys; the original file is kept as %s",
                    self.path,
                    backup,
                )
            write_atomic(self.path, raw)
        except OSError as exc:
            raise StoreUnavailable(f"Cannot write the billing store {self.path}: {exc}") from exc
        self._remember(
            State(raw, clients, by_digest, events, False, tuple(lines), positions, meta_raw, outbox)
        )

    @staticmethod
    def _checked(record: ClientRecord, *, last: bool) -> tuple[bytes, ClientRecord]:
        """The record's line, rendered and then parsed back as every reader parses it, and the
        record as parsed. A record the store could not load again (a value no check caught, a
        bug anywhere) is refused before anything is written: no write can make the file
        unreadable."""
        try:
            line = client_line(record, last=last)
        except ValueError as exc:  # UnicodeEncodeError: a lone surrogate
            problem = f"cannot be written ({type(exc).__name__})"
        else:
            parsed = line_record(line, last=last)
            if parsed is not None:
                return line, parsed
            problem = "would not load"
        logger.error("Refused a change to client %s: its record %s", record.client_id, problem)
        raise UnstorableChange()

    @contextmanager
    def _batch(self, client_ids: Sequence[str]) -> Iterator[Staged]:
        # One lock for the whole file: the batch's clients are locked together.
        with self._lock.hold():
            state = self._current()
            batch = JsonBatch(state, self._checked)
            yield batch
            if batch.records or batch.events:
                self._commit(state, batch.records, lines=batch.lines, audit=batch.events)

    # -- Store API ---------------------------------------------------------------------------

    def create_client(self, record: ClientRecord, *, audit: NewAuditEvent | None = None) -> None:
        with self._lock.hold():
            state = self._current()
            if record.client_id in state.clients or any(
                d in state.by_digest for d in record_digests(record)
            ):
                raise DuplicateClient()
            self._commit(
                state, [record.model_copy(deep=True)], audit=() if audit is None else [audit]
            )

    def get_client(self, client_id: str) -> ClientRecord | None:
        record = self._current().clients.get(client_id)
        return None if record is None else record.model_copy(deep=True)

    def get_client_by_key_digest(self, digest: str, *, ledger: bool = True) -> ClientRecord | None:
        # The whole document is in memory: the full record costs no more than a part.
        state = self._current()
        client_id = state.by_digest.get(digest)
        if client_id is None:
            return None
        return state.clients[client_id].model_copy(deep=True)

    def list_clients(self, query: ClientQuery = FIRST_PAGE) -> tuple[list[ClientRecord], int]:
        page, total = select_clients(self._current().clients.values(), query)
        return [r.model_copy(deep=True) for r in page], total

    def overview(self, now: datetime) -> StoreOverview:
        return overview_of(list(self._current().clients.values()), now)

    def touch_key(self, client_id: str, key_id: str, now: datetime) -> None:
        # A note of use, not an access to the account: no cycle roll, no updated_at.
        with self._lock.hold():
            state = self._current()
            stored = state.clients.get(client_id)
            if stored is None:
                raise ClientNotFound()
            record = stored.model_copy(deep=True)
            if access.touch_key(record, key_id, now):
                self._commit(state, [record])

    def find_client_by_stripe(
        self, *, customer_id: str | None = None, subscription_id: str | None = None
    ) -> ClientRecord | None:
        client_id = self._locate(self._current(), StripeRef(None, subscription_id, customer_id))
        return None if client_id is None else self.get_client(client_id)

    @staticmethod
    def _locate(state: State, ref: StripeRef) -> str | None:
        if ref.client_id is not None and ref.client_id in state.clients:
            return ref.client_id
        for attr, wanted in (
            ("stripe_subscription_id", ref.subscription_id),
            ("stripe_customer_id", ref.customer_id),
        ):
            if wanted is None:
                continue
            for record in state.clients.values():
                if getattr(record, attr) == wanted:
                    return record.client_id
        return None

    def apply_stripe_event(
        self,
        event_id: str,
        ref: StripeRef,
        created: int,
        change: Callable[[ClientRecord], None],
        now: datetime,
        *,
        ordered: bool = True,
    ) -> tuple[EventOutcome, str | None]:
        with self._lock.hold():
            state = self._current()
            if event_id in state.events:
                return EventOutcome.DUPLICATE, None
            client_id = self._locate(state, ref)
            if client_id is None:
                return EventOutcome.UNMATCHED, None
            record = state.clients[client_id].model_copy(deep=True)
            outcome, reset = apply_event_change(record, created, change, now, ordered=ordered)
            horizon = (now - EVENT_ID_RETENTION).isoformat()
            events = {k: v for k, v in state.events.items() if v >= horizon}
            events[event_id] = now.isoformat()
            self._commit(state, [record], events=events)
        if reset is not None:
            log_cycle_reset(client_id, record.metadata.cycle_allowance)
        return outcome, client_id

    def stripe_event_ids(self) -> dict[str, datetime]:
        return {k: datetime.fromisoformat(v) for k, v in self._current().events.items()}

    def import_stripe_event_ids(self, events: dict[str, datetime]) -> None:
        with self._lock.hold():
            state = self._current()
            merged = {k: v.isoformat() for k, v in events.items()} | state.events
            if merged == state.events:
                return
            if not state.clients:
                raise ClientNotFound("Import clients before their Stripe event ids")
            self._commit(state, events=merged)

    def check(self) -> None:
        self._current()
