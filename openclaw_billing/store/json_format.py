"""The JSON store's file format: rendering, splitting, parsing, and the original module's
format upgraded on load (for :class:`.json_file.JsonFileStore`).

The file is one JSON document laid out with one client per line (see :func:`render`), so a
write serialises only the client it changed, and a reader that finds the file changed parses
and validates only the lines that differ from the state it holds (:func:`parse`); a file in
any other layout is parsed whole, and the next write lays it out again. A file that does not
parse or validate raises :class:`StoreCorrupt` naming the file.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from operator import ne
from pathlib import Path

from pydantic import ValidationError

from ..audit import AuditEvent
from ..errors import StoreCorrupt
from ..keys import digest_key, display_prefix
from ..models import ClientRecord, dump_record
from ..plans import PlanId, get_plan
from .audit_json import parse_outbox, render_outbox

FORMAT = "openclaw-billing"
VERSION = 1


@dataclass(frozen=True, slots=True)
class State:
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
    #: ``events`` and ``outbox`` as rendered into the header (see :func:`render_meta`).
    meta_raw: bytes = b"{}"
    #: Audit events committed with a change, the newest admin action's at least; the audit
    #: log is caught up from these (see the module docstring).
    outbox: tuple[AuditEvent, ...] = ()


EMPTY = State(None, {}, {}, {}, legacy=False)

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


def client_line(record: ClientRecord, *, last: bool) -> bytes:
    """A client's line in the file (json.dumps escapes every newline inside strings)."""
    line = _compact(record.client_id) + b":" + _compact(dump_record(record))
    return line if last else line + b","


def client_lines(records: Sequence[ClientRecord]) -> tuple[bytes, ...]:
    """Every client's line, in order (the last without a comma)."""
    last = len(records) - 1
    return tuple(client_line(record, last=i == last) for i, record in enumerate(records))


def render(meta_raw: bytes, lines: tuple[bytes, ...]) -> bytes:
    return b"".join((_HEAD, meta_raw, _CLIENTS, b"\n".join(lines), _TAIL))


def render_meta(events: dict[str, str], outbox: Sequence[AuditEvent]) -> bytes:
    """The header's middle: the Stripe event ids, then the audit outbox unless it is empty."""
    return _compact(events) + (_OUTBOX + render_outbox(outbox) if outbox else b"")


def render_store(records: Sequence[ClientRecord], events: dict[str, str] | None = None) -> bytes:
    """A whole store file holding ``records`` (and processed Stripe event ids), as the store
    writes it: for tools that build a file directly, such as the benchmarks' seeding."""
    return render(render_meta(events or {}, ()), client_lines(records))


def split_frame(raw: bytes) -> tuple[bytes, list[bytes]] | None:
    """The header's middle (:func:`render_meta`) and the client lines of a file in :func:`render`'s
    layout, or None for any other layout. Only the frame is checked: the caller parses the
    lines."""
    head_end = raw.find(b"\n")
    if not (raw.startswith(_HEAD) and raw.endswith(_TAIL)):
        return None
    if head_end < 0 or raw[head_end + 1 - len(_CLIENTS) : head_end + 1] != _CLIENTS:
        return None
    body = raw[head_end + 1 : -len(_TAIL)]
    return raw[len(_HEAD) : head_end + 1 - len(_CLIENTS)], body.split(b"\n") if body else []


def corrupt(path: Path, problem: str) -> StoreCorrupt:
    return StoreCorrupt(
        f"The billing store {path} {problem}. The file was left untouched: restore it "
        "from a backup, or move it aside to start empty."
    )


def parse(path: Path, raw: bytes, base: State) -> State:
    """The state in ``raw``. When ``raw`` is in the written layout, only the lines that
    differ from ``base`` are parsed; anything unexpected there (a new or a changed line
    that does not parse, validate or fit) is left to the whole-file parse, which names the
    problem."""
    split = split_frame(raw)
    if split is not None:
        state = _parse_changes(raw, *split, base)
        if state is not None:
            return state
    state = _parse_whole(path, raw)
    if split is not None and len(split[1]) == len(state.clients):
        lines = tuple(split[1])  # the file's own lines, in the clients' order
    else:
        lines = client_lines(list(state.clients.values()))
    return replace(
        state,
        lines=lines,
        positions={client_id: i for i, client_id in enumerate(state.clients)},
        meta_raw=split[0] if split is not None else render_meta(state.events, state.outbox),
    )


def _parse_changes(raw: bytes, meta_raw: bytes, lines: list[bytes], base: State) -> State | None:
    """``base`` with the lines of ``raw`` that differ from it parsed and put in; None when
    that is not simply possible (see :func:`parse`)."""
    if base.raw is None or base.legacy or len(lines) < len(base.lines):
        return None
    changed = list(itertools.compress(range(len(base.lines)), map(ne, lines, base.lines)))
    added = range(len(base.lines), len(lines))
    if len(changed) + len(added) > max(8, len(lines) * _INCREMENTAL_MAX_SHARE):
        return None
    events, outbox = base.events, base.outbox
    if meta_raw != base.meta_raw:
        meta = _parse_meta(meta_raw)
        if meta is None:
            return None
        events, outbox = meta
    clients = dict(base.clients)
    by_digest = dict(base.by_digest)
    positions = base.positions
    if added:
        positions = dict(positions)
    for i in [*changed, *added]:
        record = line_record(lines[i], last=i == len(lines) - 1)
        if record is None:
            return None
        if i < len(base.lines):
            if base.positions.get(record.client_id) != i:  # another client's line
                return None
            for digest in record_digests(clients[record.client_id]):
                del by_digest[digest]
        elif record.client_id in clients:
            return None
        else:
            positions[record.client_id] = i
        digests = record_digests(record)
        if any(by_digest.get(d, record.client_id) != record.client_id for d in digests):
            return None
        clients[record.client_id] = record
        by_digest.update(dict.fromkeys(digests, record.client_id))
    return State(raw, clients, by_digest, events, False, tuple(lines), positions, meta_raw, outbox)


def _parse_meta(meta_raw: bytes) -> tuple[dict[str, str], tuple[AuditEvent, ...]] | None:
    """The Stripe event ids and the audit outbox of a header, or None (see :func:`parse`)."""
    doc = _loads(b'{"stripe_events":' + meta_raw + b"}")
    if not isinstance(doc, dict) or not set(doc) <= {"stripe_events", "audit_outbox"}:
        return None
    events = _events(doc["stripe_events"])
    outbox = parse_outbox(doc.get("audit_outbox", []))
    return None if events is None or outbox is None else (events, outbox)


def line_record(line: bytes, *, last: bool) -> ClientRecord | None:
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
    if record.client_id != client_id or record_problem(record) is not None:
        return None
    return record


def _events(value: object) -> dict[str, str] | None:
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return value
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


def _parse_whole(path: Path, raw: bytes) -> State:
    try:
        doc = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise corrupt(path, f"is not valid JSON ({exc})") from None
    legacy = not (isinstance(doc, dict) and "format" in doc)
    events: dict[str, str] = {}
    outbox: tuple[AuditEvent, ...] = ()
    if legacy:
        items = [_upgrade_legacy(item) for item in _legacy_items(path, doc)]
    else:
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise corrupt(
                path,
                f"has format {doc.get('format')!r} version {doc.get('version')!r}; this "
                f"release reads {FORMAT!r} version {VERSION}",
            )
        table = doc.get("clients")
        if not isinstance(table, dict):
            raise corrupt(path, 'has no "clients" object')
        items = list(table.values())
        checked = _events(doc.get("stripe_events", {}))
        if checked is None:
            raise corrupt(path, 'has a "stripe_events" that is not an object of strings')
        events = checked
        parsed = parse_outbox(doc.get("audit_outbox", []))
        if parsed is None:
            raise corrupt(path, 'has an "audit_outbox" that is not a list of audit events')
        outbox = parsed
    clients: dict[str, ClientRecord] = {}
    by_digest: dict[str, str] = {}
    for index, item in enumerate(items):
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
        digests = record_digests(record)
        if record.client_id in clients or any(d in by_digest for d in digests):
            raise corrupt(path, f"holds client {record.client_id} (or one of its keys) twice")
        clients[record.client_id] = record
        by_digest.update(dict.fromkeys(digests, record.client_id))
    return State(raw, clients, by_digest, events, legacy, outbox=outbox)


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


def _loads(raw: bytes) -> object:
    """Parsed JSON, or None when it does not parse."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


def record_digests(record: ClientRecord) -> list[str]:
    """Every digest that authenticates as this client: each key's, and the summary field."""
    return list(dict.fromkeys([record.api_key_hash, *(k.digest for k in record.api_keys)]))
