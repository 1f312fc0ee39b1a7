"""The JSON store's snapshot: its format, rendering and parsing, the render-and-parse-back
checks of what the store writes, and the original module's format upgraded on load (for
:class:`.json_file.JsonFileStore`; the journal that follows a snapshot is :mod:`.json_journal`).

A snapshot is one JSON document, laid out one client per line and one job per line::

    {"format":"openclaw-billing","version":2,"generation":7,"token":"<hex>","follows":[...],
    "stripe_events":{...},"audit_outbox":[...],"clients":{
    "<client id>":{record},
    ...
    },"jobs":[
    {job},
    ...
    ]}

The first line names the journal that follows the snapshot (``<file>.journal-<generation>``,
whose header repeats ``token``) and, in ``follows``, the point it was compacted from: the
previous snapshot's token and the size of the journal then. A worker that has replayed exactly
that far holds this very state, and takes the new snapshot without parsing it.

Version 1 (the previous release: one document rewritten on every change, no journal, no jobs),
a snapshot of generation 0 (:func:`render_store`) and the original module's format load as
generation 0, which has no journal: the first write compacts them into generation 1 (after a
backup copy of an original-format file). A file that does not parse or validate raises
:class:`StoreCorrupt` naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..audit import AuditEvent
from ..errors import StoreCorrupt
from ..jobs import StoredJob
from ..keys import digest_key, display_prefix
from ..models import ClientRecord, dump_record
from ..plans import PlanId, get_plan
from .audit_json import parse_outbox, render_outbox

FORMAT = "openclaw-billing"
VERSION = 2
#: Versions this release reads (1: the previous release's single document).
READABLE = (1, VERSION)


@dataclass(frozen=True, slots=True)
class Head:
    """A snapshot's first line: which journal follows it, and where it was compacted from."""

    generation: int
    #: Random per snapshot; the journal's header repeats it. None: generation 0, no journal.
    token: str | None
    #: The previous snapshot's token and its journal's size at the compaction, if any.
    follows: tuple[str, int] | None = None


@dataclass(slots=True)
class Snapshot:
    head: Head
    #: Insertion order is creation order.
    clients: dict[str, ClientRecord]
    events: dict[str, str]
    outbox: tuple[AuditEvent, ...]
    jobs: list[StoredJob]
    #: Parsed from the original module's format: backed up before it is first rewritten.
    legacy: bool
    #: Each client's line as in the file (no comma), and the jobs' lines, when the file is in
    #: the written layout: a compaction reuses them.
    lines: dict[str, bytes] = field(default_factory=dict)
    job_lines: list[bytes] = field(default_factory=list)


def _compact(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _loads(raw: bytes) -> Any:
    """Parsed JSON, or None when it does not parse."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


# -- rendering ---------------------------------------------------------------------------------


def client_line(client_id: str, body: bytes) -> bytes:
    """A client's line in a snapshot (without its comma): ``"<id>":{record}``."""
    return _compact(client_id) + b":" + body


def head_line(head: Head) -> bytes:
    follows = None if head.follows is None else list(head.follows)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "generation": head.generation,
        "token": head.token,
        "follows": follows,
    }
    return _compact(doc)[:-1] + b",\n"  # the document goes on


def render_snapshot(
    head: Head,
    events: dict[str, str],
    outbox: Sequence[AuditEvent],
    lines: Sequence[bytes],
    job_lines: Sequence[bytes],
) -> bytes:
    """A whole snapshot (see the module docstring). json.dumps escapes every newline inside
    strings, so each record and job is exactly one line."""
    return b"".join(
        (
            head_line(head),
            b'"stripe_events":' + _compact(events),
            b',"audit_outbox":' + render_outbox(outbox),
            b',"clients":{\n',
            _section(lines),
            b'},"jobs":[\n',
            _section(job_lines),
            b"]}\n",
        )
    )


def _section(lines: Sequence[bytes]) -> bytes:
    """One item per line, each but the last followed by a comma."""
    return b",\n".join(lines) + b"\n" if lines else b""


def render_store(records: Sequence[ClientRecord], events: dict[str, str] | None = None) -> bytes:
    """A snapshot of generation 0 holding ``records`` (and processed Stripe event ids): for
    tools that build a store file directly, such as the benchmarks' seeding. It has no journal;
    the store's first write compacts it into generation 1."""
    lines = [client_line(r.client_id, _compact(dump_record(r))) for r in records]
    return render_snapshot(Head(0, None), events or {}, (), lines, ())


# -- the checks: what is written must load again ----------------------------------------------


def record_body(record: ClientRecord) -> bytes:
    """The record as JSON (raises ``ValueError`` for a lone surrogate)."""
    return _compact(dump_record(record))


def parse_record(item: object) -> ClientRecord | None:
    """The valid, loadable client record of a parsed JSON value, or None."""
    try:
        record = ClientRecord.model_validate(item)
    except ValidationError:
        return None
    return None if record_problem(record) is not None else record


def job_body(job: StoredJob) -> bytes:
    """The job as JSON (raises ``ValueError`` for a lone surrogate): pydantic's serialiser
    writes the same bytes as ``_compact`` of its dump, in less than half the time (a
    compaction renders every job stored since the last one). What a job holds by default
    (no hold, no outcome yet) is left out: the loader fills it in."""
    return job.model_dump_json(exclude_defaults=True).encode()


def parse_job(item: object) -> StoredJob | None:
    try:
        return StoredJob.model_validate(item)
    except ValidationError:
        return None


def record_problem(record: ClientRecord) -> str | None:
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


def record_digests(record: ClientRecord) -> list[str]:
    """Every digest that authenticates as this client: each key's, and the summary field."""
    return list(dict.fromkeys([record.api_key_hash, *(k.digest for k in record.api_keys)]))


# -- parsing -----------------------------------------------------------------------------------


def corrupt(path: Path, problem: str) -> StoreCorrupt:
    return StoreCorrupt(
        f"The billing store {path} {problem}. The file was left untouched: restore it "
        "from a backup, or move it aside to start empty."
    )


def read_head(start: bytes) -> Head | None:
    """The head of a snapshot from its first bytes, or None (not one this release wrote)."""
    end = start.find(b"\n")
    doc = _loads(start[: end - 1] + b"}") if end > 0 and start[end - 1 : end] == b"," else None
    if not isinstance(doc, dict) or set(doc) != {
        "format",
        "version",
        "generation",
        "token",
        "follows",
    }:
        return None
    return _head(doc) if doc["format"] == FORMAT and doc["version"] == VERSION else None


def _head(doc: dict[str, Any]) -> Head | None:
    if not {"generation", "token", "follows"} & set(doc):
        return Head(0, None)  # a document made by hand or by a tool: no journal
    generation, token, follows = doc.get("generation"), doc.get("token"), doc.get("follows")
    if type(generation) is not int or generation < 0:
        return None
    if not (token is None or isinstance(token, str)) or (token is None) != (generation == 0):
        return None
    if follows is None:
        return Head(generation, token)
    if (
        isinstance(follows, list)
        and len(follows) == 2
        and isinstance(follows[0], str)
        and type(follows[1]) is int
    ):
        return Head(generation, token, (follows[0], follows[1]))
    return None


def parse_snapshot(path: Path, raw: bytes) -> Snapshot:
    """The whole snapshot in ``raw``; raises ``StoreCorrupt`` naming ``path``."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise corrupt(path, f"is not valid JSON ({exc})") from None
    if not (isinstance(doc, dict) and "format" in doc):
        items = [_upgrade_legacy(item) for item in _legacy_items(path, doc)]
        snapshot = Snapshot(Head(0, None), {}, {}, (), [], legacy=True)
    else:
        snapshot, items, jobs = _current_format(path, doc)
    for index, item in enumerate(items):
        record = _valid(path, item, index)
        if record.client_id in snapshot.clients:
            raise corrupt(path, f"holds client {record.client_id} twice")
        snapshot.clients[record.client_id] = record
    if not snapshot.legacy:
        snapshot.jobs = _jobs(path, jobs, snapshot.clients)
        _keep_lines(raw, snapshot)
    return snapshot


def _current_format(path: Path, doc: dict[str, Any]) -> tuple[Snapshot, list[Any], list[Any]]:
    version = doc.get("version")
    if doc.get("format") != FORMAT or version not in READABLE:
        raise corrupt(
            path,
            f"has format {doc.get('format')!r} version {version!r}; this release reads "
            f"{FORMAT!r} versions {', '.join(map(str, READABLE))}",
        )
    head = _head(doc) if version == VERSION else Head(0, None)
    if head is None:
        raise corrupt(path, "has a first line (generation, token, follows) that is not valid")
    table = doc.get("clients")
    if not isinstance(table, dict):
        raise corrupt(path, 'has no "clients" object')
    events = doc.get("stripe_events", {})
    if not isinstance(events, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in events.items()
    ):
        raise corrupt(path, 'has a "stripe_events" that is not an object of strings')
    outbox = parse_outbox(doc.get("audit_outbox", []))
    if outbox is None:
        raise corrupt(path, 'has an "audit_outbox" that is not a list of audit events')
    jobs = doc.get("jobs", [])
    if not isinstance(jobs, list):
        raise corrupt(path, 'has a "jobs" that is not a list')
    return Snapshot(head, {}, events, outbox, [], legacy=False), list(table.values()), jobs


def _valid(path: Path, item: object, index: int) -> ClientRecord:
    try:
        record = ClientRecord.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise corrupt(
            path, f"holds an invalid client record (#{index}, {where}: {first['msg']})"
        ) from None
    problem = record_problem(record)
    if problem is not None:
        raise corrupt(path, problem)
    return record


def _jobs(path: Path, items: list[Any], clients: dict[str, ClientRecord]) -> list[StoredJob]:
    jobs: list[StoredJob] = []
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(items):
        job = parse_job(item)
        if job is None:
            raise corrupt(path, f"holds an invalid job (#{index})")
        if job.client_id not in clients or (job.client_id, job.job_id) in seen:
            raise corrupt(path, f"holds job {job.job_id} of client {job.client_id} twice or alone")
        seen.add((job.client_id, job.job_id))
        jobs.append(job)
    return jobs


def _keep_lines(raw: bytes, snapshot: Snapshot) -> None:
    """Take each client's and job's line from a file in the written layout."""
    parts = raw.split(b"\n")
    count, jobs = len(snapshot.clients), len(snapshot.jobs)
    if (
        len(parts) != count + jobs + 5
        or not parts[1].endswith(b',"clients":{')
        or parts[2 + count] != b'},"jobs":['
        or parts[3 + count + jobs :] != [b"]}", b""]
    ):
        return
    lines = dict(zip(snapshot.clients, parts[2 : 2 + count], strict=True))
    if all(line.startswith(_compact(cid) + b":") for cid, line in lines.items()):
        snapshot.lines = {cid: line.removesuffix(b",") for cid, line in lines.items()}
        snapshot.job_lines = [job.removesuffix(b",") for job in parts[3 + count : -2]]


def _legacy_items(path: Path, doc: object) -> list[object]:
    if isinstance(doc, dict) and "clients" in doc:
        doc = doc["clients"]
    if isinstance(doc, list):
        return list(doc)
    if isinstance(doc, dict) and all(isinstance(v, dict) for v in doc.values()):
        return list(doc.values())
    raise corrupt(path, "is valid JSON but not a billing store (unexpected shape)")


def _upgrade_legacy(item: object) -> object:
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
