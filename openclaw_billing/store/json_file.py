"""The embedded default store: one JSON file, written atomically.

Protocol (see DESIGN.md, "Storage"):

* every read-modify-write runs under :class:`FileLock` (threads and processes) and re-reads
  the file under that lock, so no update is ever lost to another worker;
* a write goes to a temp file in the same directory, is flushed and fsynced, replaces the
  file with ``os.replace`` and then the directory is fsynced: a crash at any step leaves
  exactly the old or the new file;
* the file is one JSON document laid out with one client per line (see :func:`_render`), so a
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

import itertools
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import ne
from pathlib import Path

from pydantic import ValidationError

from .. import ledger
from ..audit import AuditEvent, NewAuditEvent
from ..cycles import is_expired, utcnow
from ..errors import (
    ClientNotFound,
    DuplicateClient,
    StoreCorrupt,
    StoreUnavailable,
    UnstorableChange,
)
from ..keys import digest_key, display_prefix
from ..models import ChargeResult, ClientRecord, dump_record
from ..plans import PlanId, get_plan
from . import changes
from .audit_json import JsonAuditLog, audit_path, parse_outbox, render_outbox
from .base import (
    EVENT_ID_RETENTION,
    EventOutcome,
    MutatingStore,
    StripeRef,
    Write,
    apply_event_change,
    log_cycle_reset,
)
from .filelock import FileLock, private_directory

logger = logging.getLogger("openclaw_billing.store")

FORMAT = "openclaw-billing"
VERSION = 1


@dataclass(frozen=True, slots=True)
class _State:
    #: The exact bytes this state was parsed from (None: no file yet).
    raw: bytes | None
    #: Insertion order is creation order.
    clients: dict[str, ClientRecord]
    by_digest: dict[str, str]
    #: Processed Stripe event ids -> when they were processed (ISO 8601).
    events: dict[str, str]
    #: Parsed from the original module's format; the next write migrates it.
    legacy: bool
    #: One line per client, in ``clients`` order, as in the file: ``"<id>":{record}`` followed
    #: by a comma on every line but the last.
    lines: tuple[bytes, ...] = ()
    #: client id -> its index in ``lines`` (shared between states with the same clients).
    positions: dict[str, int] = field(default_factory=dict)
    #: ``events`` and ``outbox`` as rendered into the header (see :func:`_meta`).
    meta_raw: bytes = b"{}"
    #: Audit events committed with a change, the newest admin action's at least; the audit
    #: log is caught up from these (see the module docstring).
    outbox: tuple[AuditEvent, ...] = ()


_EMPTY = _State(None, {}, {}, {}, legacy=False)

#: The layout every write uses: the header line, one ``"<client id>":{record}`` line per client
#: (each but the last followed by a comma), and the closing line. Still one JSON document.
_HEAD = f'{{"format":"{FORMAT}","version":{VERSION},"stripe_events":'.encode()
_OUTBOX = b',"audit_outbox":'
_CLIENTS = b',"clients":{\n'
_TAIL = b"\n}}\n"
#: Above this share of changed lines, a reader parses the file whole (simpler, no slower).
_INCREMENTAL_MAX_SHARE = 0.25


def _compact(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _line(record: ClientRecord, *, last: bool) -> bytes:
    """A client's line in the file (json.dumps escapes every newline inside strings)."""
    line = _compact(record.client_id) + b":" + _compact(dump_record(record))
    return line if last else line + b","


def _lines(records: Sequence[ClientRecord]) -> tuple[bytes, ...]:
    """Every client's line, in order (the last without a comma)."""
    last = len(records) - 1
    return tuple(_line(record, last=i == last) for i, record in enumerate(records))


def _render(meta_raw: bytes, lines: tuple[bytes, ...]) -> bytes:
    return b"".join((_HEAD, meta_raw, _CLIENTS, b"\n".join(lines), _TAIL))


def _meta(events: dict[str, str], outbox: Sequence[AuditEvent]) -> bytes:
    """The header's middle: the Stripe event ids, then the audit outbox unless it is empty."""
    return _compact(events) + (_OUTBOX + render_outbox(outbox) if outbox else b"")


def render_store(records: Sequence[ClientRecord], events: dict[str, str] | None = None) -> bytes:
    """A whole store file holding ``records`` (and processed Stripe event ids), as the store
    writes it: for tools that build a file directly, such as the benchmarks' seeding."""
    return _render(_meta(events or {}, ()), _lines(records))


def _split(raw: bytes) -> tuple[bytes, list[bytes]] | None:
    """The header's middle (:func:`_meta`) and the client lines of a file in :func:`_render`'s
    layout, or None for any other layout. Only the frame is checked: the caller parses the
    lines."""
    head_end = raw.find(b"\n")
    if not (raw.startswith(_HEAD) and raw.endswith(_TAIL)):
        return None
    if head_end < 0 or raw[head_end + 1 - len(_CLIENTS) : head_end + 1] != _CLIENTS:
        return None
    body = raw[head_end + 1 : -len(_TAIL)]
    return raw[len(_HEAD) : head_end + 1 - len(_CLIENTS)], body.split(b"\n") if body else []


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
        self._state: _State = _EMPTY
        #: The state before ``_state``: a reader that raced a commit may still bring its bytes.
        self._previous: _State = _EMPTY
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

    def _current(self) -> _State:
        """The file's state now. Parsing is skipped when the bytes are the ones already parsed
        (compared in full, so the cache can never be stale)."""
        raw = self._read_raw()
        for known in (self._state, self._previous):
            if raw == known.raw:
                return known
        state = _EMPTY if raw is None else self._parse(raw, self._state)
        self._remember(state)
        return state

    def _remember(self, state: _State) -> None:
        # Keep the two latest states: an unlocked reader that read the file just before a
        # commit must not evict the committed state (the next read would parse it again).
        if state.raw != self._state.raw:
            self._previous, self._state = self._state, state

    def _corrupt(self, problem: str) -> StoreCorrupt:
        return StoreCorrupt(
            f"The billing store {self.path} {problem}. The file was left untouched: restore it "
            "from a backup, or move it aside to start empty."
        )

    def _parse(self, raw: bytes, base: _State) -> _State:
        """The state in ``raw``. When ``raw`` is in the written layout, only the lines that
        differ from ``base`` are parsed; anything unexpected there (a new or a changed line
        that does not parse, validate or fit) is left to the whole-file parse, which names the
        problem."""
        split = _split(raw)
        if split is not None:
            state = self._parse_changes(raw, *split, base)
            if state is not None:
                return state
        state = self._parse_whole(raw)
        if split is not None and len(split[1]) == len(state.clients):
            lines = tuple(split[1])  # the file's own lines, in the clients' order
        else:
            lines = _lines(list(state.clients.values()))
        return replace(
            state,
            lines=lines,
            positions={client_id: i for i, client_id in enumerate(state.clients)},
            meta_raw=split[0] if split is not None else _meta(state.events, state.outbox),
        )

    def _parse_changes(
        self, raw: bytes, meta_raw: bytes, lines: list[bytes], base: _State
    ) -> _State | None:
        """``base`` with the lines of ``raw`` that differ from it parsed and put in; None when
        that is not simply possible (see :meth:`_parse`)."""
        if base.raw is None or base.legacy or len(lines) < len(base.lines):
            return None
        changed = list(itertools.compress(range(len(base.lines)), map(ne, lines, base.lines)))
        added = range(len(base.lines), len(lines))
        if len(changed) + len(added) > max(8, len(lines) * _INCREMENTAL_MAX_SHARE):
            return None
        events, outbox = base.events, base.outbox
        if meta_raw != base.meta_raw:
            meta = self._parse_meta(meta_raw)
            if meta is None:
                return None
            events, outbox = meta
        clients = dict(base.clients)
        by_digest = dict(base.by_digest)
        positions = base.positions
        if added:
            positions = dict(positions)
        for i in [*changed, *added]:
            record = self._line_record(lines[i], last=i == len(lines) - 1)
            if record is None:
                return None
            if i < len(base.lines):
                if base.positions.get(record.client_id) != i:  # another client's line
                    return None
                for digest in _digests(clients[record.client_id]):
                    del by_digest[digest]
            elif record.client_id in clients:
                return None
            else:
                positions[record.client_id] = i
            digests = _digests(record)
            if any(by_digest.get(d, record.client_id) != record.client_id for d in digests):
                return None
            clients[record.client_id] = record
            by_digest.update(dict.fromkeys(digests, record.client_id))
        return _State(
            raw, clients, by_digest, events, False, tuple(lines), positions, meta_raw, outbox
        )

    def _parse_meta(self, meta_raw: bytes) -> tuple[dict[str, str], tuple[AuditEvent, ...]] | None:
        """The Stripe event ids and the audit outbox of a header, or None (see :meth:`_parse`)."""
        doc = _loads(b'{"stripe_events":' + meta_raw + b"}")
        if not isinstance(doc, dict) or not set(doc) <= {"stripe_events", "audit_outbox"}:
            return None
        events = self._events(doc["stripe_events"])
        outbox = parse_outbox(doc.get("audit_outbox", []))
        return None if events is None or outbox is None else (events, outbox)

    def _line_record(self, line: bytes, *, last: bool) -> ClientRecord | None:
        """The valid client record of one ``"<id>":{record}`` line (with its comma unless it
        is the last), or None."""
        if not last:
            if not line.endswith(b","):
                return None
            line = line[:-1]
        doc = _loads(b"{" + line + b"}")
        if not isinstance(doc, dict) or len(doc) != 1:
            return None
        [(client_id, item)] = doc.items()
        try:
            record = ClientRecord.model_validate(item)
        except ValidationError:
            return None
        if record.client_id != client_id or self._record_problem(record) is not None:
            return None
        return record

    @staticmethod
    def _events(value: object) -> dict[str, str] | None:
        if isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return value
        return None

    @staticmethod
    def _record_problem(record: ClientRecord) -> str | None:
        """What makes a valid record unfit to load, or None."""
        if record.credits_remaining is not None and record.credits_remaining < 0:
            # I1: never negative. Loading it would serve (or "repair") a broken ledger.
            return (
                f"holds client {record.client_id} with negative credits_remaining "
                f"({record.credits_remaining})"
            )
        if (record.credits_remaining is None) != get_plan(record.plan).unlimited:
            # null credits on a limited plan would run every job unpaid.
            return (
                f"holds client {record.client_id} on the {record.plan.value} plan with "
                f"credits_remaining {record.credits_remaining}"
            )
        return None

    def _parse_whole(self, raw: bytes) -> _State:
        try:
            doc = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
            raise self._corrupt(f"is not valid JSON ({exc})") from None
        legacy = not (isinstance(doc, dict) and "format" in doc)
        events: dict[str, str] = {}
        outbox: tuple[AuditEvent, ...] = ()
        if legacy:
            items = [self._upgrade_legacy(item) for item in self._legacy_items(doc)]
        else:
            if doc.get("format") != FORMAT or doc.get("version") != VERSION:
                raise self._corrupt(
                    f"has format {doc.get('format')!r} version {doc.get('version')!r}; this "
                    f"release reads {FORMAT!r} version {VERSION}"
                )
            table = doc.get("clients")
            if not isinstance(table, dict):
                raise self._corrupt('has no "clients" object')
            items = list(table.values())
            checked = self._events(doc.get("stripe_events", {}))
            if checked is None:
                raise self._corrupt('has a "stripe_events" that is not an object of strings')
            events = checked
            parsed = parse_outbox(doc.get("audit_outbox", []))
            if parsed is None:
                raise self._corrupt('has an "audit_outbox" that is not a list of audit events')
            outbox = parsed
        clients: dict[str, ClientRecord] = {}
        by_digest: dict[str, str] = {}
        for index, item in enumerate(items):
            try:
                record = ClientRecord.model_validate(item)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "record"
                raise self._corrupt(
                    f"holds an invalid client record (#{index}, {where}: {first['msg']})"
                ) from None
            problem = self._record_problem(record)
            if problem is not None:
                raise self._corrupt(problem)
            digests = _digests(record)
            if record.client_id in clients or any(d in by_digest for d in digests):
                raise self._corrupt(f"holds client {record.client_id} (or one of its keys) twice")
            clients[record.client_id] = record
            by_digest.update(dict.fromkeys(digests, record.client_id))
        return _State(raw, clients, by_digest, events, legacy, outbox=outbox)

    def _legacy_items(self, doc: object) -> list[object]:
        if isinstance(doc, dict) and "clients" in doc:
            doc = doc["clients"]
        if isinstance(doc, list):
            return list(doc)
        if isinstance(doc, dict) and all(isinstance(v, dict) for v in doc.values()):
            return list(doc.values())
        raise self._corrupt("is valid JSON but not a billing store (unexpected shape)")

    def _upgrade_legacy(self, item: object) -> object:
        """Map a record of the original module onto this one (plaintext key -> digest)."""
        if not isinstance(item, dict):
            return item  # validation names the problem
        record = dict(item)
        key = record.pop("api_key", None)
        if "api_key_hash" not in record and isinstance(key, str) and key:
            record["api_key_hash"] = digest_key(key)
            record["api_key_prefix"] = display_prefix(key)
        if record.get("plan") == PlanId.ENTERPRISE:
            record["credits_remaining"] = None
        record.setdefault("updated_at", record.get("created_at"))
        record.setdefault("total_spent", 0.0)
        record.setdefault("active", True)
        return record

    def _sweep_temp_files(self) -> None:
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with suppress(FileNotFoundError):
                stale.unlink()
                logger.warning("Removed a temp file left by an interrupted write: %s", stale)

    # -- writing -----------------------------------------------------------------------------

    def _commit(
        self,
        state: _State,
        record: ClientRecord | None,
        *,
        events: dict[str, str] | None = None,
        audit: Sequence[NewAuditEvent] = (),
    ) -> None:
        """Write ``state`` with ``record`` (None: no client changed), ``events`` and the
        ``audit`` events put in, atomically; the cache follows only on success.

        Audit events go into the header's outbox, numbered by the audit log, whose lock is
        held from before the numbering until the log has them (see the module docstring)."""
        if not audit:
            self._write_state(state, record, events, state.outbox)
            return
        with self.audit.reserve() as first_id:
            # The log holds every event of the outbox by now: it keeps only the new ones.
            outbox = tuple(
                AuditEvent(id=first_id + n, **event.model_dump()) for n, event in enumerate(audit)
            )
            self._write_state(state, record, events, outbox)

    def _write_state(
        self,
        state: _State,
        record: ClientRecord | None,
        events: dict[str, str] | None,
        outbox: tuple[AuditEvent, ...],
    ) -> None:
        meta_raw = state.meta_raw
        if events is None:
            events = state.events
        if events != state.events or outbox != state.outbox:
            meta_raw = _meta(events, outbox)
        clients, by_digest = state.clients, state.by_digest
        lines, positions = list(state.lines), state.positions
        if record is not None:
            clients = {**clients, record.client_id: record}
            if any(by_digest.get(d) != record.client_id for d in _digests(record)):
                by_digest = dict(by_digest)
                by_digest.update(dict.fromkeys(_digests(record), record.client_id))
            # Only this client's line is serialised; the others are the bytes already there.
            position = positions.get(record.client_id)
            if position is None:
                positions = {**positions, record.client_id: len(lines)}
                if lines:  # the last line so far gets its comma
                    lines[-1] += b","
                lines.append(self._checked_line(record, last=True))
            else:
                lines[position] = self._checked_line(record, last=position == len(lines) - 1)
        raw = _render(meta_raw, tuple(lines))
        try:
            if state.legacy and state.raw is not None:
                stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
                backup = self.path.with_name(f"{self.path.name}.legacy-backup-{stamp}")
                self._write_atomic(backup, state.raw)
                logger.warning(
                    "Migrating %s to hashed keys; the original file is kept as %s",
                    self.path,
                    backup,
                )
            self._write_atomic(self.path, raw)
        except OSError as exc:
            raise StoreUnavailable(f"Cannot write the billing store {self.path}: {exc}") from exc
        self._remember(
            _State(
                raw, clients, by_digest, events, False, tuple(lines), positions, meta_raw, outbox
            )
        )

    def _checked_line(self, record: ClientRecord, *, last: bool) -> bytes:
        """The record's line, rendered and then parsed back as every reader parses it. A
        record the store could not load again (a value no check caught, a bug anywhere) is
        refused before anything is written: no write can make the file unreadable."""
        try:
            line = _line(record, last=last)
        except ValueError as exc:  # UnicodeEncodeError: a lone surrogate
            problem = f"cannot be written ({type(exc).__name__})"
        else:
            if self._line_record(line, last=last) is not None:
                return line
            problem = "would not load"
        logger.error("Refused a change to client %s: its record %s", record.client_id, problem)
        raise UnstorableChange()

    @staticmethod
    def _write_atomic(target: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        try:
            dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            # The new file is already in place and visible to every reader: reporting failure
            # now would deny a write that happened. Only its durability across a power cut is
            # in doubt, which is worth a warning.
            logger.warning("Could not fsync the directory of %s: %s", target, exc)

    def _check_new_keys(self, state: _State, record: ClientRecord) -> None:
        """A key added to ``record`` must not be another client's (digests are unique)."""
        for digest in _digests(record):
            owner = state.by_digest.get(digest)
            if owner is not None and owner != record.client_id:
                raise DuplicateClient("This key already belongs to another client")

    @contextmanager
    def _edit(self, client_id: str) -> Iterator[tuple[ClientRecord, Write]]:
        with self._lock.hold():
            state = self._current()
            stored = state.clients.get(client_id)
            if stored is None:
                raise ClientNotFound()

            def write(record: ClientRecord | None, event: NewAuditEvent | None) -> None:
                if record is not None:
                    self._check_new_keys(state, record)
                self._commit(state, record, audit=() if event is None else (event,))

            yield stored.model_copy(deep=True), write

    # -- Store API ---------------------------------------------------------------------------

    def create_client(self, record: ClientRecord, *, audit: NewAuditEvent | None = None) -> None:
        with self._lock.hold():
            state = self._current()
            if record.client_id in state.clients or any(
                d in state.by_digest for d in _digests(record)
            ):
                raise DuplicateClient()
            self._commit(
                state, record.model_copy(deep=True), audit=() if audit is None else [audit]
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

    def list_clients(
        self,
        *,
        active: bool | None = None,
        plan: PlanId | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[ClientRecord], int]:
        matching = [
            r
            for r in self._current().clients.values()
            if (active is None or r.active == active) and (plan is None or r.plan == plan)
        ]
        page = [r.model_copy(deep=True) for r in matching[offset : offset + limit]]
        return page, len(matching)

    def refresh_cycle(self, client_id: str, now: datetime) -> ClientRecord:
        # Read path first: only a due reset needs the lock (and it re-checks under it).
        stored = self._current().clients.get(client_id)
        if stored is not None and not is_expired(stored.billing_cycle_end, now):
            return stored.model_copy(deep=True)
        return self.mutate(client_id, now, changes.read)

    def charge(self, client_id: str, job_id: str, cost: float, now: datetime) -> ChargeResult:
        def change(record: ClientRecord) -> tuple[ChargeResult, bool]:
            result = ledger.charge(record, job_id, cost, now)
            return result, not result.replayed

        return self.mutate(client_id, now, change)

    def find_client_by_stripe(
        self, *, customer_id: str | None = None, subscription_id: str | None = None
    ) -> ClientRecord | None:
        client_id = self._locate(self._current(), StripeRef(None, subscription_id, customer_id))
        return None if client_id is None else self.get_client(client_id)

    @staticmethod
    def _locate(state: _State, ref: StripeRef) -> str | None:
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
            self._commit(state, record, events=events)
        if reset is not None:
            log_cycle_reset(record)
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
            self._commit(state, None, events=merged)

    def check(self) -> None:
        self._current()


def _loads(raw: bytes) -> object:
    """Parsed JSON, or None when it does not parse."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _digests(record: ClientRecord) -> list[str]:
    """Every digest that authenticates as this client: each key's, and the summary field."""
    return list(dict.fromkeys([record.api_key_hash, *(k.digest for k in record.api_keys)]))
