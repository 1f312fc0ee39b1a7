"""The JSON store's state in memory: the snapshot's contents with the journal replayed on top
(for :mod:`.json_replica`), and what a compaction renders of it.

Records and jobs put in the state are never changed afterwards (a change puts a new object):
a reader may copy one outside the lock that guards the containers. The replay applies whole
batches (:func:`replay`); the writer puts the very objects its batch checked
(:meth:`.json_batch.JsonBatch.install`), which are what a replay of its lines builds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence

from .. import ledger
from ..audit import AuditEvent
from ..errors import UnstorableChange
from ..jobs import StoredJob
from ..models import ClientRecord
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
from .json_journal import Line, charge_of, whole

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
        self.jobs: dict[tuple[str, str], StoredJob] = {}
        #: Each client's jobs, and every job, in the order they were stored.
        self.client_jobs: dict[str, list[StoredJob]] = {}
        self.job_list: list[StoredJob] = []
        #: Snapshot lines of the clients unchanged since they were rendered or read, and of
        #: ``job_list``'s first jobs: a compaction renders only the others.
        self.lines: dict[str, bytes] = {}
        self.job_lines: list[bytes] = []
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
        for job in snapshot.jobs:
            state.add_job(job)
        if len(snapshot.job_lines) == len(snapshot.jobs):
            state.job_lines = list(snapshot.job_lines)
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
        self.jobs[key] = job
        self.client_jobs.setdefault(job.client_id, []).append(job)
        self.job_list.append(job)
        if body is not None and len(self.job_lines) == len(self.job_list) - 1:
            self.job_lines.append(body)

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
        for job in self.job_list[len(self.job_lines) :]:
            self.job_lines.append(checked_job(job)[0])
        return render_snapshot(head, self.events, self.outbox, lines, self.job_lines)


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
            elif kind == "r":
                record = parse_record(doc.get("rec"))
                if record is None:
                    raise ReplayError("holds a client record that does not load")
                body = whole(payload, b"rec")
                state.put(record, client_line(record.client_id, body))
                copied.add(record.client_id)
            elif kind == "j":
                job = parse_job(doc.get("job"))
                if job is None:
                    raise ReplayError("holds a job that does not load")
                state.add_job(job, whole(payload, b"job"))
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
    result = ledger.book_charge(record, charge.job_id, charge.cost, charge.at)
    if result.credits_remaining != charge.left:
        raise ReplayError(
            f"holds a charge of client {charge.client_id} that leaves {result.credits_remaining} "
            f"credits, not the {charge.left} written"
        )
    state.put(record, None)
    if charge.job is not None:
        state.add_job(charge.job)


def _replay_events(state: State, doc: dict[str, object]) -> None:
    add, horizon = doc.get("add"), doc.get("horizon")
    if not (
        isinstance(add, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in add.items())
        and (horizon is None or isinstance(horizon, str))
    ):
        raise ReplayError("holds Stripe event ids that do not load")
    state.add_events(add, horizon)
