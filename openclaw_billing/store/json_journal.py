"""The JSON store's journal: ``<file>.journal-<generation>``, append-only, beside the snapshot
it follows (:mod:`.json_format`); its lines' format, and reading them back.

Each line is ``<crc> <payload>\\n``: the payload is one JSON object and ``crc`` its CRC-32 in 8
hex digits. json.dumps escapes every newline inside strings, so a payload is exactly one line.
Every payload starts with its frame, ``"b":[batch, index, count]``: the lines of one write
(one batch of changes, written with one ``write`` and one ``fsync``) share their batch number,
which goes up by one from write to write, and say how many lines the batch has. Batch 0 is the
header, one line of kind ``h`` naming the journal's generation and its snapshot's token: a
journal whose header does not match its snapshot belongs to another one and is not replayed.

The kinds of line (``"t"``), each a change the replay applies to the state as it stands:

* ``r``: a client record, whole (``rec``): created, or replaced;
* ``c``: a charge, as a delta (client ``id``, ``job`` id, ``cost``, time ``at``, and ``left``:
  the credits after it, checked by the replay); with ``fields`` (and ``rh``, the request hash),
  the job accepted with it, in the same line;
  a reservation (charging by outcome) also has ``cr``, the credits held, ``h``: true, and
  ``rc``, the job's receipt;
* ``j``: a job stored alone (``job``): under an earlier charge, or imported;
* ``s``: a job's move (a report of its progress or end), as a delta: the client ``id``, its
  credits ``left`` and ``spent`` (``total_spent``) after the move, then the job's new state,
  whole (``job``). If the move closed the job's hold (the stored receipt held, the new one
  settled) the replay closes it in the ledger as the writer did
  (:func:`openclaw_billing.outcomes.settle_hold`, at the receipt's ``charged`` and
  ``settled_at``); either way it checks the move is legal and leaves ``left`` and ``spent``.
  A move whose client's cycle rolled first is written as an ``r`` and a ``u`` line instead;
* ``u``: a stored job's new state, whole (``job``): a meter mark, or a move written with its
  client's record whole (an ``r`` line of the same batch; a journal of an earlier release
  writes every move so);
* ``e``: processed Stripe event ids (``add``), the older than ``horizon`` forgotten first;
* ``a``: the audit outbox of the batch's admin actions (``events``, see :mod:`.audit_json`).

Reading (:func:`decode`) applies whole batches only. A write cut short by a crash leaves a last
batch that is incomplete: its last line lacks its newline, or fails its checksum, or lines are
missing. That tail is ignored (it was never acknowledged), and the next writer cuts it off under
the lock before appending. A line that fails its checksum or does not parse but is followed by
a complete batch is damage, not a torn write; so is a line whose checksum holds but whose frame
does not follow on: the store stops with ``StoreCorrupt`` naming the file.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from ..audit import AuditEvent
from ..jobs import StoredJob
from .audit_json import render_outbox
from .json_format import parse_job

FORMAT = "openclaw-billing-journal"
_NAME = re.compile(r"\.journal-(\d{1,18})$")

#: A parsed payload and its bytes.
Line = tuple[dict[str, Any], bytes]


def journal_path(path: Path, generation: int) -> Path:
    """Where the journal of the snapshot ``path`` at ``generation`` lives."""
    return path.with_name(f"{path.name}.journal-{generation}")


def journals(path: Path) -> dict[int, Path]:
    """Every journal file beside the snapshot ``path``, by generation."""
    found: dict[int, Path] = {}
    for candidate in path.parent.glob(f"{path.name}.journal-*"):
        match = _NAME.search(candidate.name)
        if match is not None and candidate.name == journal_path(path, int(match[1])).name:
            found[int(match[1])] = candidate
    return found


def _compact(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- writing -----------------------------------------------------------------------------------


def frame(bodies: Sequence[bytes], batch: int) -> bytes:
    """The lines of one batch: each body (a JSON object beginning ``{"t":``) with the frame put
    in front and its checksum."""
    count = len(bodies)
    out: list[bytes] = []
    for index, body in enumerate(bodies):
        payload = b'{"b":[%d,%d,%d],' % (batch, index, count) + body[1:]
        out.append(b"%08x %s\n" % (zlib.crc32(payload), payload))
    return b"".join(out)


def header(generation: int, token: str) -> bytes:
    """Batch 0: the journal's header line."""
    body = _compact({"t": "h", "format": FORMAT, "generation": generation, "token": token})
    return frame([body], 0)


def record_entry(body: bytes) -> bytes:
    """A client record, whole (``body``: the record's JSON, as the snapshot has it)."""
    return b'{"t":"r","rec":' + body + b"}"


def charge_entry(
    client_id: str,
    job_id: str,
    cost: float,
    at: datetime,
    left: int | None,
    job: StoredJob | None,
    *,
    credits: int = 1,
    held: bool = False,
) -> bytes:
    """A charge, and the job accepted with it (raises ``ValueError`` for a lone surrogate)."""
    doc: dict[str, Any] = {
        "t": "c",
        "id": client_id,
        "job": job_id,
        "cost": cost,
        "at": at.isoformat(),
        "left": left,
    }
    if credits != 1:
        doc["cr"] = credits
    if held:
        doc["h"] = True
    if job is not None:
        doc["fields"], doc["rh"] = job.fields, job.request_hash
        if job.receipt is not None:
            doc["rc"] = job.receipt.model_dump(mode="json", exclude_none=True)
    return _compact(doc)


def job_entry(body: bytes, *, replace: bool = False) -> bytes:
    """A job stored alone, or with ``replace`` a stored job's new state (``body``: the job's
    JSON, as the snapshot has it)."""
    return (b'{"t":"u","job":' if replace else b'{"t":"j","job":') + body + b"}"


def settle_entry(client_id: str, left: int | None, spent: float, body: bytes) -> bytes:
    """A job's move and what it left of its client's credits and spend (``body``: the job's
    JSON, as the snapshot has it; raises ``ValueError`` for a lone surrogate)."""
    head = _compact({"t": "s", "id": client_id, "left": left, "spent": spent})
    return head[:-1] + b',"job":' + body + b"}"


def events_entry(add: dict[str, str], horizon: str | None) -> bytes:
    return _compact({"t": "e", "add": add, "horizon": horizon})


def audit_entry(events: Sequence[AuditEvent]) -> bytes:
    return b'{"t":"a","events":' + render_outbox(events) + b"}"


def whole(payload: bytes, key: bytes) -> bytes:
    """The JSON of the last member of a payload (``rec`` of ``r``, ``job`` of ``j``), as
    written: what a snapshot line of it is."""
    return payload[payload.index(b',"' + key + b'":') + len(key) + 4 : -1]


# -- reading -----------------------------------------------------------------------------------


class ChargeLine(NamedTuple):
    """A ``c`` line, read back."""

    client_id: str
    job_id: str
    cost: float
    at: datetime
    left: int | None
    job: StoredJob | None
    credits: int = 1
    held: bool = False


def charge_of(doc: dict[str, Any]) -> ChargeLine | None:
    """The charge of a ``c`` payload (and the job in it, as stored), or None if malformed."""
    try:
        cid, job_id, cost, left = doc["id"], doc["job"], doc["cost"], doc["left"]
        at = datetime.fromisoformat(doc["at"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (isinstance(cid, str) and isinstance(job_id, str)) or at.tzinfo is None:
        return None
    if type(cost) not in (int, float) or not (left is None or type(left) is int):
        return None
    credits, held = doc.get("cr", 1), doc.get("h", False)
    if type(credits) is not int or credits < 0 or type(held) is not bool:
        return None
    job = None
    if "fields" in doc:
        try:
            job = StoredJob(
                client_id=cid,
                job_id=job_id,
                created_at=at,
                fields=doc["fields"],
                request_hash=doc.get("rh"),
                credits_remaining=left,
                receipt=doc.get("rc"),
            )
        except ValueError:  # pydantic's ValidationError is one
            return None
    return ChargeLine(cid, job_id, float(cost), at, left, job, credits, held)


class SettleLine(NamedTuple):
    """An ``s`` line, read back."""

    client_id: str
    left: int | None
    spent: float
    job: StoredJob


def settle_of(doc: dict[str, Any]) -> SettleLine | None:
    """The move of an ``s`` payload (the job as stored), or None if malformed."""
    cid, left, spent = doc.get("id"), doc.get("left"), doc.get("spent")
    if not isinstance(cid, str) or not (left is None or type(left) is int):
        return None
    if isinstance(spent, bool) or not isinstance(spent, int | float):
        return None
    job = parse_job(doc.get("job"))
    if job is None or job.client_id != cid:
        return None
    return SettleLine(cid, left, float(spent), job)


@dataclass
class Decoded:
    #: The complete batches read, in order.
    batches: list[list[Line]] = field(default_factory=list)
    #: How many bytes they take: where the next batch starts.
    consumed: int = 0
    #: Damage found (not a torn tail): what, and the byte of the data read it starts at.
    damage: tuple[str, int] | None = None


def _payload(line: bytes) -> Line | None:
    """The parsed payload of a line whose checksum holds, or None."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    payload = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
    except ValueError:
        return None
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("t"), str):
        return None
    frame = doc.get("b")
    if not (
        isinstance(frame, list) and len(frame) == 3 and all(type(n) is int for n in frame)
    ) or not (0 <= frame[1] < frame[2]):
        return None
    return doc, payload


def decode(data: bytes, first: int) -> Decoded:
    """The complete batches at the start of ``data`` (journal bytes from a batch boundary),
    the first numbered ``first`` (see the module docstring for what is torn and what is
    damage)."""
    out = Decoded()
    current: list[Line] = []
    pos, expected = 0, first
    while (end := data.find(b"\n", pos)) >= 0:
        start, pos = pos, end + 1
        line = _payload(data[start:end])
        if line is None:
            if _complete_batch_after(data, pos):
                out.damage = ("holds a damaged line", start)
            return out
        batch, index, count = line[0]["b"]
        size = current[0][0]["b"][2] if current else count
        if batch != expected or index != len(current) or count != size:
            out.damage = (f"holds a line out of sequence (batch {batch})", start)
            return out
        current.append(line)
        if index == count - 1:
            out.batches.append(current)
            out.consumed, current, expected = pos, [], expected + 1
    return out


def _complete_batch_after(data: bytes, pos: int) -> bool:
    """Whether a complete, valid batch follows ``pos``: then what came before it is not the
    torn tail of the last write."""
    run: tuple[int, int] | None = None  # (batch, next index) of the run being followed
    while (end := data.find(b"\n", pos)) >= 0:
        line, pos = _payload(data[pos:end]), end + 1
        if line is None:
            run = None
            continue
        batch, index, count = line[0]["b"]
        if index == 0 or (run is not None and run == (batch, index)):
            run = (batch, index + 1)
            if index == count - 1:
                return True
        else:
            run = None
    return False
