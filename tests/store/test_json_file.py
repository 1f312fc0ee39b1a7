"""What is the JSON store's own: its files. What every backend does through the Store API is
the contract suite's (tests/store/test_contract.py); here, the URL forms, that a read or a
write with nothing to do never touches a file, the snapshot's layout (one client and one job
per line), the journal's (one checksummed line per change, a charge as a delta), readers that
read only the journal's new bytes, temp files, and formats of earlier releases. The journal's
torn tails, damage and compaction are in test_json_journal.py."""

from __future__ import annotations

import json
import random
import zlib
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from openclaw_billing.errors import (
    ClientInactive,
    CreditLimitReached,
    DuplicateClient,
    InsufficientCredits,
    StoreCorrupt,
    UnlimitedPlan,
)
from openclaw_billing.jobs import NewJob, StoredJob
from openclaw_billing.models import ClientRecord, dump_record
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store import json_format, json_journal, json_replica, open_store
from openclaw_billing.store.base import Charge
from openclaw_billing.store.json_file import JsonFileStore
from openclaw_billing.store.json_journal import journal_path
from openclaw_billing.store.migrate import all_clients
from tests.invariants import KEY_RE, check_store_file
from tests.store_helpers import CYCLE, T0, ledger_ids, make_record, temp_files

JOB = NewJob({"prompt": "hello"}, request_hash="r" * 64)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "billing" / "clients.json"


@pytest.fixture
def store(path: Path) -> JsonFileStore:
    return JsonFileStore(path)


def stamp(*paths: Path) -> list[tuple[bytes, int, int]]:
    """Each file's bytes, mtime and inode: what "nothing was written" compares."""
    return [(p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in paths]


def journal_lines(store: JsonFileStore) -> list[dict[str, Any]]:
    """The payloads of the store's current journal, each line's checksum verified."""
    raw = journal_path(store.path, store._replica.generation).read_bytes()
    docs = []
    for line in raw.splitlines():
        crc, payload = line.split(b" ", 1)
        assert int(crc, 16) == zlib.crc32(payload)
        docs.append(json.loads(payload))
    return docs


def snapshot(store: JsonFileStore) -> tuple[list[ClientRecord], dict[str, datetime], list[Any]]:
    jobs = [store.client_jobs(r.client_id) for r in all_clients(store)]
    return all_clients(store), store.stripe_event_ids(), jobs


# -- the files: where, and only when there is something to write -----------------------------


def test_missing_file_is_an_empty_store_and_is_not_created_by_reads(
    store: JsonFileStore, path: Path
) -> None:
    assert store.get_client("nobody") is None
    assert store.get_client_by_key_digest("0" * 64) is None
    assert store.list_clients() == ([], 0)
    assert store.get_job("nobody", "job-1") is None
    store.check()
    assert sorted(p.name for p in path.parent.iterdir()) == ["clients.json.lock"]
    assert store.location == f"json://{path}"


def test_open_store_url_forms(path: Path) -> None:
    assert isinstance(open_store(str(path)), JsonFileStore)
    store = open_store(f"json://{path}")
    assert isinstance(store, JsonFileStore)
    assert store.path == path


def test_a_refused_or_idle_write_leaves_the_files_untouched(
    store: JsonFileStore, path: Path
) -> None:
    """The contract suite checks that these leave every record as it was, on every backend;
    the JSON store does not even touch its files."""
    first, _ = make_record("c1", PlanId.FREE)
    store.create_client(first)
    store.create_client(make_record("e1", PlanId.ENTERPRISE)[0])
    store.create_client(make_record("off", active=False)[0])
    for i in range(5):
        store.charge("c1", f"job-{i}", 1.0, T0)
    files = [path, journal_path(path, 1)]
    before = stamp(*files)
    same_key = make_record("c2")[0].model_copy(update={"api_key_hash": first.api_key_hash})
    with pytest.raises(DuplicateClient):
        store.create_client(make_record("c1")[0])
    with pytest.raises(DuplicateClient):
        store.create_client(same_key)
    with pytest.raises(CreditLimitReached):
        store.accept(Charge("c1", "job-5", 1.0, T0, job=JOB))
    with pytest.raises(ClientInactive):
        store.charge("off", "job-1", 1.0, T0)
    with pytest.raises(InsufficientCredits):
        store.add_credits("c1", -1, "too much", T0)
    with pytest.raises(UnlimitedPlan):
        store.add_credits("e1", 10, "pointless", T0)
    assert stamp(*files) == before
    # A replay, an active client set active, a cycle not due for its reset: nothing to write.
    assert store.charge("c1", "job-1", 9.0, T0 + timedelta(minutes=5)).replayed
    assert store.set_active("c1", True, T0 + timedelta(hours=1)).active
    assert store.refresh_cycle("c1", T0 + CYCLE - timedelta(microseconds=1)).credits_remaining == 0
    assert store.import_jobs([]) == 0
    assert stamp(*files) == before
    assert len(store.list_clients()[0]) == 3
    check_store_file(path)


# -- the layout: the snapshot and its journal ------------------------------------------------


def test_the_first_write_starts_a_snapshot_and_its_journal(
    store: JsonFileStore, path: Path
) -> None:
    store.create_client(make_record("c1")[0])
    head = json_format.read_head(path.read_bytes())
    assert head is not None
    assert (head.generation, head.follows) == (1, None)
    assert json.loads(path.read_bytes())["clients"] == {}  # the client is in the journal
    header, create = journal_lines(store)
    assert header == {
        "b": [0, 0, 1],
        "t": "h",
        "format": "openclaw-billing-journal",
        "generation": 1,
        "token": head.token,
    }
    assert (create["b"], create["t"], create["rec"]["client_id"]) == ([1, 0, 1], "r", "c1")
    for p in (path, journal_path(path, 1)):
        assert p.stat().st_mode & 0o777 == 0o600


def test_a_charge_is_one_small_line_with_its_job(store: JsonFileStore) -> None:
    store.create_client(make_record("c1")[0])
    for i in range(30):  # a history that a charge's line does not carry
        store.charge("c1", f"old-{i}", 0.5, T0)
    at = T0 + timedelta(minutes=3, microseconds=5)
    store.accept(Charge("c1", "job-1", 1.25, at, job=JOB))
    line = journal_lines(store)[-1]
    assert line == {
        "b": [32, 0, 1],
        "t": "c",
        "id": "c1",
        "job": "job-1",
        "cost": 1.25,
        "at": at.isoformat(),
        "left": 169,
        "fields": {"prompt": "hello"},
        "rh": "r" * 64,
    }
    # A batch is one write: its lines share a batch number and say how many they are.
    store.mutate_batch([Charge("c1", f"b-{i}", 0.5, at) for i in range(3)])
    assert [d["b"] for d in journal_lines(store)[-3:]] == [[33, 0, 3], [33, 1, 3], [33, 2, 3]]


def test_the_snapshot_is_one_document_with_one_client_and_one_job_per_line(
    store: JsonFileStore, path: Path
) -> None:
    for cid in ("c1", "c2", "c3"):
        store.create_client(make_record(cid)[0])
    store.accept(Charge("c2", "job-1", 1.0, T0, job=JOB))
    store.accept(Charge("c3", "job-1", 1.0, T0, job=JOB))
    store.compact()
    raw = path.read_bytes()
    doc = json.loads(raw)
    lines = raw.split(b"\n")
    assert lines[0].startswith(b'{"format":"openclaw-billing","version":2,"generation":2,')
    assert lines[1].startswith(b'"stripe_events":{}')
    assert lines[1].endswith(b'"clients":{')
    assert [json.loads(b"{" + line.rstrip(b",") + b"}") for line in lines[2:5]] == [
        {cid: client} for cid, client in doc["clients"].items()
    ]
    assert lines[5] == b'},"jobs":['
    assert [json.loads(line.rstrip(b",")) for line in lines[6:8]] == doc["jobs"]
    assert [job["client_id"] for job in doc["jobs"]] == ["c2", "c3"]
    assert lines[8:] == [b"]}", b""]
    assert [d["t"] for d in journal_lines(store)] == ["h"]  # a fresh, empty journal
    assert snapshot(JsonFileStore(path)) == snapshot(store)


def test_a_reader_reads_only_the_new_bytes_of_the_journal(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = JsonFileStore(path), JsonFileStore(path)
    for i in range(40):
        writer.create_client(make_record(f"c{i}")[0])
    reader.check()
    read: list[bytes] = []
    parsed: list[bytes] = []
    decode, parse = json_journal.decode, json_format.parse_snapshot

    def spy_decode(data: bytes, first: int) -> Any:
        read.append(data)
        return decode(data, first)

    def spy_parse(at: Path, raw: bytes) -> Any:
        parsed.append(raw)
        return parse(at, raw)

    monkeypatch.setattr(json_replica, "decode", spy_decode)
    monkeypatch.setattr(json_replica, "parse_snapshot", spy_parse)
    writer.accept(Charge("c7", "job-1", 1.0, T0, job=JOB))
    record = reader.get_client("c7")
    assert record is not None
    assert ledger_ids(record) == ["job-1"]
    assert reader.get_job("c7", "job-1") is not None
    (data,) = read
    assert data.count(b"\n") == 1
    assert b'"t":"c"' in data
    assert len(data) < 400
    reader.get_client("c7")  # nothing new: nothing read
    assert len(read) == 1
    # A compaction by the writer: the reader, caught up, takes the new snapshot unparsed.
    writer.compact()
    writer.charge("c8", "job-1", 1.0, T0)
    record = reader.get_client("c8")
    assert record is not None
    assert ledger_ids(record) == ["job-1"]
    assert parsed == []
    # Behind by one write at the compaction: it reads the rest of the old journal first.
    writer.charge("c9", "job-1", 1.0, T0)
    writer.compact()
    assert reader.get_client("c9") is not None
    assert parsed == []
    monkeypatch.undo()
    assert snapshot(reader) == snapshot(JsonFileStore(path))


def test_readers_that_catch_up_agree_with_a_fresh_open(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers take turns at every kind of write, compacting often; after each, the other
    one's state (caught up from the journal, or a snapshot taken) equals a fresh open's."""
    monkeypatch.setattr(json_replica, "COMPACT_MIN", 6000)
    stores = [JsonFileStore(path), JsonFileStore(path)]
    rng = random.Random(20261125)
    ids: list[str] = []
    actions = ["create", "charge", "charge", "job", "credits", "active", "events", "import"]
    for step in range(160):
        me, other = stores[step % 2], stores[1 - step % 2]
        action = rng.choice(actions)
        if action == "create" or not ids:
            ids.append(f"c{step}")
            me.create_client(make_record(ids[-1], rng.choice(list(PlanId)))[0])
        elif action in ("charge", "job"):
            job = JOB if action == "job" else None
            with suppress(CreditLimitReached, ClientInactive):
                me.accept(Charge(rng.choice(ids), f"job-{step % 50}", 0.5, T0, job=job))
        elif action == "credits":
            with suppress(UnlimitedPlan):
                me.add_credits(rng.choice(ids), rng.randint(1, 5), "goodwill", T0)
        elif action == "active":
            me.set_active(rng.choice(ids), rng.random() < 0.5, T0)
        elif action == "import":
            cid = rng.choice(ids)
            me.import_jobs([StoredJob(client_id=cid, job_id=f"old-{step}", created_at=T0)])
        else:
            me.import_stripe_event_ids({f"evt_{step}": T0})
        assert snapshot(other) == snapshot(JsonFileStore(path)), (step, action)
    assert stores[0]._replica.generation > 3  # it did compact, many times
    check_store_file(path)


# -- earlier formats -------------------------------------------------------------------------


def previous_release(records: list[ClientRecord], events: dict[str, str]) -> bytes:
    """A file as the previous release wrote it: version 1, one document, one client per line."""
    head = b'{"format":"openclaw-billing","version":1,"stripe_events":'
    lines = b",\n".join(
        json.dumps(r.client_id).encode() + b":" + json.dumps(dump_record(r)).encode()
        for r in records
    )
    return head + json.dumps(events).encode() + b',"clients":{\n' + lines + b"\n}}\n"


@pytest.mark.parametrize("layout", ["previous release", "indented"])
def test_a_file_of_an_earlier_layout_loads_and_the_first_write_compacts_it(
    path: Path, layout: str
) -> None:
    records = [make_record(cid)[0] for cid in ("c1", "c2")]
    events = {"evt_1": T0.isoformat()}
    if layout == "indented":
        doc = {
            "format": "openclaw-billing",
            "version": 1,
            "clients": {r.client_id: dump_record(r) for r in records},
            "stripe_events": events,
        }
        raw = json.dumps(doc, indent=2).encode()
    else:
        raw = previous_release(records, events)
    path.parent.mkdir(parents=True)
    path.write_bytes(raw)
    store = JsonFileStore(path)
    assert [r.client_id for r in store.list_clients()[0]] == ["c1", "c2"]
    assert path.read_bytes() == raw  # reads leave it alone
    store.charge("c2", "job-1", 1.0, T0)
    assert json.loads(path.read_bytes())["version"] == 2
    assert len(path.read_bytes().split(b"\n")) == 7  # head, meta, 2 clients, jobs, end
    assert snapshot(store) == snapshot(JsonFileStore(path))
    assert store.stripe_event_ids() == {"evt_1": T0}
    assert list(path.parent.glob("*.legacy-backup-*")) == []  # only the original format's


def test_a_file_of_a_later_version_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"format":"openclaw-billing","version":3,"clients":{}}')
    with pytest.raises(StoreCorrupt, match="versions 1, 2"):
        JsonFileStore(path)


# -- temp files, plaintext keys, a file changed behind the store's back -----------------------


def test_stale_temp_files_are_swept_on_open(store: JsonFileStore, path: Path) -> None:
    store.create_client(make_record("c1")[0])
    good = path.read_bytes()
    stale = [
        path.parent / ".clients.json.abc123.tmp",
        path.parent / ".clients.json.legacy-backup-20260219T103000000000Z.xyz.tmp",
    ]
    for p in stale:
        p.write_bytes(b'{"format": "openclaw-billing", "trunc')
    unrelated = [path.parent / ".other.json.abc.tmp", path.parent / "clients.json.tmp"]
    for p in unrelated:
        p.write_bytes(b"keep me")
    JsonFileStore(path)
    assert temp_files(path) == []
    assert all(p.read_bytes() == b"keep me" for p in unrelated)
    assert path.read_bytes() == good


def test_the_files_hold_no_plaintext_key(path: Path) -> None:
    service = BillingService(JsonFileStore(path))
    keys = []
    for plan in PlanId:
        record, key = service.create_client(name="Acme", email="a@acmecorp.com", plan=plan, now=T0)
        service.charge(record.client_id, job_id="job-1", now=T0)
        keys.append(key)
    service.store.compact()  # type: ignore[attr-defined]
    for raw in (path.read_bytes(), journal_path(path, 1).read_bytes()):
        assert KEY_RE.search(raw) is None
        for key in keys:
            assert key.encode() not in raw
            assert key[len("oc_live_") :].encode() not in raw
    for key in keys:
        assert service.authenticate(key) is not None
    doc = json.loads(path.read_bytes())
    assert doc["format"] == "openclaw-billing"
    assert all("api_key" not in record for record in doc["clients"].values())
    check_store_file(path, keys)


def test_check_reports_a_file_corrupted_after_open(store: JsonFileStore, path: Path) -> None:
    store.create_client(make_record("c1")[0])
    store.compact()
    store.check()
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(StoreCorrupt, match=str(path)):
        store.check()
    with pytest.raises(StoreCorrupt):
        store.charge("c1", "job-1", 1.0, T0)
    assert path.read_bytes() == good[: len(good) // 2]
    path.write_bytes(good)
    store.check()
    assert store.charge("c1", "job-1", 1.0, T0).credits_remaining == 199


def test_a_snapshot_line_edited_into_nonsense_is_reported_like_any_corrupt_file(
    path: Path,
) -> None:
    writer, reader = JsonFileStore(path), JsonFileStore(path)
    for cid in ("c1", "c2", "c3"):
        writer.create_client(make_record(cid)[0])
    writer.compact()
    reader.check()
    raw = path.read_bytes()
    bad = raw.replace(b'"credits_remaining":200', b'"credits_remaining":-5', 1)
    assert bad != raw
    path.write_bytes(bad)
    with pytest.raises(StoreCorrupt, match="negative credits_remaining"):
        reader.check()
    with pytest.raises(StoreCorrupt):
        writer.charge("c1", "job-1", 1.0, T0)
    assert path.read_bytes() == bad


def test_a_job_is_rendered_as_json_dumps_would_and_a_lone_surrogate_is_refused() -> None:
    """``job_body`` uses pydantic's serialiser for speed: the same bytes as ``json.dumps`` of
    the job's dump (the snapshot's format), and a ``ValueError`` where the text cannot be
    encoded, as before."""
    job = StoredJob(
        client_id="c1",
        job_id="j1",
        created_at=T0,
        fields={"name": 'héllo ✓ "quoted" \\ \n tab\t', "empty": ""},
        request_hash="h" * 64,
        credits_remaining=5,
    )
    dump = job.model_dump(mode="json", exclude_defaults=True)
    dumped = json.dumps(dump, ensure_ascii=False, separators=(",", ":"))
    assert json_format.job_body(job) == dumped.encode("utf-8")
    with pytest.raises(ValueError, match="surrogates not allowed"):
        json_format.job_body(job.model_copy(update={"fields": {"x": "\ud800"}}))
