"""The JSON store's state in memory: the snapshot's contents with the journal replayed on top
(for :mod:`.json_replica`), and what a compaction renders of it.

Records and jobs put in the state are never changed afterwards (a change puts a new object):
a reader may copy one outside the lock that guards the containers. The replay applies whole
batches (:func:`replay`); the writer puts the very objects its batch checked
(:meth:`.json_batch.JsonBatch.install`), which are what a replay of its lines builds.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from .. import ledger
from ..audit import AuditEvent
from ..errors import UnstorableChange
from ..jobs import MeterState, StoredJob
from ..models import ClientRecord
from ..outcomes import LEGAL, settle_hold
from .audit_json import parse_outbox
from .json_format import (
    Head,
    Snapshot,
    client_line,
    job_body,
    parse_job,
    parse_record,
    record_body,
    record_digests,
    render_snapshot,
)
from .json_journal import Line, charge_of, settle_of, whole

logger = logging.getLogger("openclaw_billing.store")


class ReplayError(Exception):
    """A journal line that does not apply: what is wrong with it."""


class State:
    """Guarded by the replica's mutex; see the module docstring."""

    def __init__(self) -> None:
        #: Insertion order is creation order.
        self.clients: dict[str, ClientRecord] = {}
        self.by_digest: dict[str, str] = {}
        #: Processed Stripe event ids -> when they were processed (ISO 8601).
        self.events: dict[str, str] = {}
        #: Audit events committed with the latest admin action (see :mod:`.audit_json`).
        self.outbox: tuple[AuditEvent, ...] = ()
        #: Every job, and each client's, in the order they were stored (a job that moves
        #: keeps its place).
        self.jobs: dict[tuple[str, str], StoredJob] = {}
        self.client_jobs: dict[str, dict[str, StoredJob]] = {}
        #: Each job id -> the clients holding a job of that id (ids are unique per client
        #: only) with their rank in ``client_jobs`` (the order a client got its first job),
        #: in that order: ``jobs_by_id`` without a scan (see :meth:`holders`).
        self.job_holders: dict[str, list[tuple[int, str]]] = {}
        self._rank: dict[str, int] = {}
        #: Each client's jobs that hold credits now (the concurrency cap counts them).
        self.holds: dict[str, dict[str, StoredJob]] = {}
        #: The jobs whose usage is still to be reported to Stripe, in the order they settled
        #: (the meter outbox: ``JobStorage.pending_meter_reports``).
        self.meters: dict[tuple[str, str], StoredJob] = {}
        #: Snapshot lines of the clients and jobs unchanged since they were rendered or read:
        #: a compaction renders only the others.
        self.lines: dict[str, bytes] = {}
        self.job_lines: dict[tuple[str, str], bytes] = {}
        #: The original-format file this state was parsed from (backed up before the first
        #: compaction rewrites it), else None.
        self.legacy_raw: bytes | None = None

    @classmethod
    def of(cls, snapshot: Snapshot, raw: bytes) -> State:
        """The state a snapshot holds; raises ``ReplayError`` if two clients share a key."""
        state = cls()
        for record in snapshot.clients.values():
            state.put(record, snapshot.lines.get(record.client_id))
        state.events, state.outbox = snapshot.events, snapshot.outbox
        lines = snapshot.job_lines if len(snapshot.job_lines) == len(snapshot.jobs) else None
        for index, job in enumerate(snapshot.jobs):
            state.add_job(job, None if lines is None else lines[index])
        state.legacy_raw = raw if snapshot.legacy else None
        return state

    # -- changes (the writer's and the replay's) ----------------------------------------------

    def put(self, record: ClientRecord, line: bytes | None) -> None:
        """Create or replace a client (``line``: its snapshot line, None if not rendered)."""
        cid = record.client_id
        digests = record_digests(record)
        for digest in digests:
            owner = self.by_digest.get(digest)
            if owner is not None and owner != cid:
                raise ReplayError(f"holds client {cid} (or one of its keys) twice")
        old = self.clients.get(cid)
        if old is not None:
            for digest in record_digests(old):
                if digest not in digests:
                    del self.by_digest[digest]
        self.by_digest.update(dict.fromkeys(digests, cid))
        self.clients[cid] = record
        if line is None:
            self.lines.pop(cid, None)
        else:
            self.lines[cid] = line

    def add_job(self, job: StoredJob, body: bytes | None = None) -> None:
        key = (job.client_id, job.job_id)
        if key in self.jobs or job.client_id not in self.clients:
            raise ReplayError(f"holds job {job.job_id} of client {job.client_id} twice or alone")
        self._set_job(key, job, body)

    def replace_job(self, job: StoredJob, body: bytes | None = None) -> None:
        """A stored job's new state."""
        key = (job.client_id, job.job_id)
        if key not in self.jobs:
            raise ReplayError(f"moves job {job.job_id} of client {job.client_id}, not stored")
        self._set_job(key, job, body)

    def _set_job(self, key: tuple[str, str], job: StoredJob, body: bytes | None) -> None:
        cid, job_id = key
        if key not in self.jobs:
            self._add_holder(cid, job_id)
        self.jobs[key] = job
        self.client_jobs.setdefault(cid, {})[job_id] = job
        if job.holding:
            self.holds.setdefault(cid, {})[job_id] = job
        elif job_id in self.holds.get(cid, {}):
            del self.holds[cid][job_id]
        if meter_pending(job):
            self.meters[key] = job
        else:
            self.meters.pop(key, None)
        if body is None:
            self.job_lines.pop(key, None)
        else:
            self.job_lines[key] = body

    def active_jobs(self, client_id: str, changed: Iterable[StoredJob] = ()) -> int:
        """How many of the client's jobs hold credits (what the concurrency cap counts), with
        ``changed``: its jobs a batch kept and has not put in the state yet, as they are now."""
        holding = set(self.holds.get(client_id, ()))
        for job in changed:
            if job.holding:
                holding.add(job.job_id)
            else:
                holding.discard(job.job_id)
        return len(holding)

    def _add_holder(self, cid: str, job_id: str) -> None:
        """Index a new job by its id. Holders are kept in the order of ``client_jobs`` (each
        client's first job): by the client's rank there, almost always last."""
        rank = self._rank.setdefault(cid, len(self._rank))
        holders = self.job_holders.setdefault(job_id, [])
        if not holders or holders[-1][0] < rank:
            holders.append((rank, cid))
        else:
            bisect.insort(holders, (rank, cid))

    def holders(self, job_id: str, limit: int) -> list[StoredJob]:
        """The first ``limit`` clients' jobs of this id, in ``client_jobs``'s order."""
        return [self.jobs[(cid, job_id)] for _, cid in self.job_holders.get(job_id, [])[:limit]]

    def add_events(self, add: dict[str, str], horizon: str | None) -> None:
        """Forget the event ids processed before ``horizon``, then add those not known."""
        if horizon is not None:
            self.events = {k: v for k, v in self.events.items() if v >= horizon}
        for event_id, at in add.items():
            self.events.setdefault(event_id, at)

    # -- compaction ----------------------------------------------------------------------------

    def render(self, head: Head) -> bytes:
        """The whole state as a snapshot. Lines not kept are rendered and checked as every
        write is (raises ``UnstorableChange`` if one would not load)."""
        lines = []
        for cid, record in self.clients.items():
            line = self.lines.get(cid)
            if line is None:
                line = self.lines[cid] = client_line(cid, checked_record(record)[0])
            lines.append(line)
        job_lines = []
        for key, job in self.jobs.items():
            line = self.job_lines.get(key)
            if line is None:
                line = self.job_lines[key] = checked_job(job)[0]
            job_lines.append(line)
        return render_snapshot(head, self.events, self.outbox, lines, job_lines)


def meter_pending(job: StoredJob) -> bool:
    """Whether the job's usage is still to be reported to Stripe."""
    meter = None if job.receipt is None else job.receipt.meter
    return meter is not None and meter.state is MeterState.PENDING


def checked_record(record: ClientRecord) -> tuple[bytes, ClientRecord]:
    """The record's JSON, rendered and then parsed back as every reader parses it, and the
    record as parsed. A record the store could not load again (a value no check caught, a bug
    anywhere) is refused before anything is written: no write can make the store unreadable."""
    try:
        body = record_body(record)
    except ValueError as exc:  # UnicodeEncodeError: a lone surrogate
        problem = f"cannot be written ({type(exc).__name__})"
    else:
        parsed = parse_record(_loads(body))
        if parsed is not None and parsed.client_id == record.client_id:
            return body, parsed
        problem = "would not load"
    logger.error("Refused a change to client %s: its record %s", record.client_id, problem)
    raise UnstorableChange()


def checked_job(job: StoredJob) -> tuple[bytes, StoredJob]:
    """The job's JSON and the job as parsed back (see :func:`checked_record`)."""
    try:
        body = job_body(job)
    except ValueError:
        body = b""
    parsed = parse_job(_loads(body)) if body else None
    if parsed is None or parsed != job:
        logger.error("Refused to store job %s of client %s", job.job_id, job.client_id)
        raise UnstorableChange()
    return body, parsed


def _loads(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def replay(state: State, batches: Iterable[Sequence[Line]]) -> None:
    """Apply journal batches to the state, in order (the header batch is the caller's). Raises
    ``ReplayError`` at a line that does not apply; the batches before it are applied."""
    copied: set[str] = set()  # records this replay made: changed in place, no reader has them
    for batch in batches:
        for doc, payload in batch:
            kind = doc["t"]
            if kind == "c":
                _replay_charge(state, doc, copied)
            elif kind == "s":
                _replay_move(state, doc, whole(payload, b"job"), copied)
            elif kind == "r":
                record = parse_record(doc.get("rec"))
                if record is None:
                    raise ReplayError("holds a client record that does not load")
                body = whole(payload, b"rec")
                state.put(record, client_line(record.client_id, body))
                copied.add(record.client_id)
            elif kind in ("j", "u"):
                job = parse_job(doc.get("job"))
                if job is None:
                    raise ReplayError("holds a job that does not load")
                add = state.add_job if kind == "j" else state.replace_job
                add(job, whole(payload, b"job"))
            elif kind == "e":
                _replay_events(state, doc)
            elif kind == "a":
                outbox = parse_outbox(doc.get("events"))
                if outbox is None:
                    raise ReplayError("holds an audit outbox that does not load")
                state.outbox = outbox
            else:
                raise ReplayError(f"holds a line of unknown kind {kind!r}")


def _replay_charge(state: State, doc: dict[str, object], copied: set[str]) -> None:
    charge = charge_of(doc)
    if (
        charge is None
        or charge.client_id not in state.clients
        or (charge.left is not None and charge.left < 0)
    ):
        raise ReplayError("holds a charge that does not apply")
    record = state.clients[charge.client_id]
    if charge.client_id not in copied:
        record = record.model_copy(deep=True)
        copied.add(charge.client_id)
    result = ledger.book_charge(
        record, charge.job_id, charge.cost, charge.at, credits=charge.credits, held=charge.held
    )
    if result.credits_remaining != charge.left:
        raise ReplayError(
            f"holds a charge of client {charge.client_id} that leaves {result.credits_remaining} "
            f"credits, not the {charge.left} written"
        )
    state.put(record, None)
    if charge.job is not None:
        state.add_job(charge.job)


def closed_hold(stored: StoredJob, moved: StoredJob) -> tuple[int, datetime] | None:
    """Whether a move of ``stored`` to ``moved`` closed its hold (the receipt held, then
    settled: :func:`openclaw_billing.outcomes.settle` ran): the credits charged and when, as
    ``outcomes.settle_hold`` was called; else None (the ledger is left as it is)."""
    before, after = stored.receipt, moved.receipt
    if before is None or after is None or not before.held or after.held:
        return None
    if after.charged is None or after.settled_at is None:
        raise ReplayError(f"holds a move of job {moved.job_id} settled at no time")
    return after.charged, after.settled_at


def _replay_move(state: State, doc: dict[str, object], body: bytes, copied: set[str]) -> None:
    move = settle_of(doc)
    key = None if move is None else (move.client_id, move.job.job_id)
    stored = None if key is None else state.jobs.get(key)
    if (
        move is None
        or stored is None
        or move.job.status not in LEGAL.get(stored.status, ())
        or (not move.job.status.open and move.job.receipt is not None and move.job.receipt.held)
    ):
        raise ReplayError("holds a job's move that does not apply")
    cid = move.client_id
    record = state.clients[cid]  # a stored job's client is stored
    closed = closed_hold(stored, move.job)
    if closed is not None:
        if cid not in copied:
            record = record.model_copy(deep=True)
            copied.add(cid)
        settle_hold(record, move.job.job_id, *closed)
    if (record.credits_remaining, record.total_spent) != (move.left, move.spent):
        raise ReplayError(
            f"holds a move of job {move.job.job_id} of client {cid} that leaves "
            f"{record.credits_remaining} credits and {record.total_spent} spent, not the "
            f"{move.left} and {move.spent} written"
        )
    if closed is not None:
        state.put(record, None)
    state.replace_job(move.job, body)


def _replay_events(state: State, doc: dict[str, object]) -> None:
    add, horizon = doc.get("add"), doc.get("horizon")
    if not (
        isinstance(add, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in add.items())
        and (horizon is None or isinstance(horizon, str))
    ):
        raise ReplayError("holds Stripe event ids that do not load")
    state.add_events(add, horizon)
