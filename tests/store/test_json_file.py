"""What is the JSON store's own: its file. What every backend does through the Store API is
the contract suite's (tests/store/test_contract.py); here, the file's URL forms, that a read
or a write with nothing to do never touches it, its layout (one client per line, readers that
parse only what changed), its temp files and what a file edited or corrupted behind the
store's back does."""

from __future__ import annotations

import json
import random
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from openclaw_billing.errors import (
    ClientInactive,
    CreditLimitReached,
    DuplicateClient,
    InsufficientCredits,
    StoreCorrupt,
    UnlimitedPlan,
)
from openclaw_billing.models import ClientRecord, dump_record
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store import json_format, open_store
from openclaw_billing.store.json_file import JsonFileStore
from openclaw_billing.store.migrate import all_clients
from tests.invariants import KEY_RE, check_store_file
from tests.store_helpers import CYCLE, T0, ledger_ids, make_record, temp_files


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "billing" / "clients.json"


@pytest.fixture
def store(path: Path) -> JsonFileStore:
    return JsonFileStore(path)


def stamp(path: Path) -> tuple[bytes, int, int]:
    """The file's bytes, mtime and inode (a write replaces the file): what "nothing was
    written" compares."""
    status = path.stat()
    return path.read_bytes(), status.st_mtime_ns, status.st_ino


# -- the file: where, and only when there is something to write ------------------------------


def test_missing_file_is_an_empty_store_and_is_not_created_by_reads(
    store: JsonFileStore, path: Path
) -> None:
    assert store.get_client("nobody") is None
    assert store.get_client_by_key_digest("0" * 64) is None
    assert store.list_clients() == ([], 0)
    store.check()
    assert not path.exists()
    assert store.location == f"json://{path}"


def test_open_store_url_forms(path: Path) -> None:
    assert isinstance(open_store(str(path)), JsonFileStore)
    store = open_store(f"json://{path}")
    assert isinstance(store, JsonFileStore)
    assert store.path == path


def test_a_refused_or_idle_write_leaves_the_file_untouched(
    store: JsonFileStore, path: Path
) -> None:
    """The contract suite checks that these leave every record as it was, on every backend;
    the JSON store does not even rewrite its file."""
    first, _ = make_record("c1", PlanId.FREE)
    store.create_client(first)
    store.create_client(make_record("e1", PlanId.ENTERPRISE)[0])
    store.create_client(make_record("off", active=False)[0])
    for i in range(5):
        store.charge("c1", f"job-{i}", 1.0, T0)
    before = stamp(path)
    same_key = make_record("c2")[0].model_copy(update={"api_key_hash": first.api_key_hash})
    with pytest.raises(DuplicateClient):
        store.create_client(make_record("c1")[0])
    with pytest.raises(DuplicateClient):
        store.create_client(same_key)
    with pytest.raises(CreditLimitReached):
        store.charge("c1", "job-5", 1.0, T0)
    with pytest.raises(ClientInactive):
        store.charge("off", "job-1", 1.0, T0)
    with pytest.raises(InsufficientCredits):
        store.add_credits("c1", -1, "too much", T0)
    with pytest.raises(UnlimitedPlan):
        store.add_credits("e1", 10, "pointless", T0)
    assert stamp(path) == before
    # A replay, an active client set active, a cycle not due for its reset: nothing to write.
    assert store.charge("c1", "job-1", 9.0, T0 + timedelta(minutes=5)).replayed
    assert store.set_active("c1", True, T0 + timedelta(hours=1)).active
    assert store.refresh_cycle("c1", T0 + CYCLE - timedelta(microseconds=1)).credits_remaining == 0
    assert stamp(path) == before
    assert len(store.list_clients()[0]) == 3
    check_store_file(path)


# -- the layout: one client per line, and readers that parse only what changed ---------------


def snapshot(store: JsonFileStore) -> tuple[list[ClientRecord], dict[str, datetime]]:
    return all_clients(store), store.stripe_event_ids()


def client_lines(path: Path) -> list[str]:
    """The client id of each client line of the file, in order (one line per client)."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")[1:-2]
    ids = [next(iter(json.loads(b"{" + line.rstrip(b",") + b"}"))) for line in lines]
    assert ids == list(json.loads(raw)["clients"])  # no client twice, nothing else
    return ids


def test_the_file_is_one_json_document_with_one_client_per_line(
    store: JsonFileStore, path: Path
) -> None:
    for cid in ("c1", "c2", "c3"):
        store.create_client(make_record(cid)[0])
    store.charge("c2", "job-1", 1.0, T0)
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    assert lines[0].startswith(b'{"format":"openclaw-billing","version":1,')
    assert [json.loads(b"{" + line.rstrip(b",") + b"}") for line in lines[1:4]] == [
        {cid: client} for cid, client in json.loads(raw)["clients"].items()
    ]
    assert [line.endswith(b",") for line in lines[1:4]] == [True, True, False]
    assert lines[4:] == [b"}}", b""]


def test_a_reader_parses_only_the_lines_another_worker_changed(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = JsonFileStore(path), JsonFileStore(path)
    for i in range(40):
        writer.create_client(make_record(f"c{i}")[0])
    reader.check()
    parsed: list[bytes] = []
    whole: list[bytes] = []
    line_record = json_format.line_record
    parse_whole = json_format._parse_whole

    # Patched in json_format only: the parser's calls are counted, not the writer's own check
    # of its line (json_file holds its own reference to line_record).
    def spy_line(line: bytes, *, last: bool) -> ClientRecord | None:
        parsed.append(line)
        return line_record(line, last=last)

    def spy_whole(path: Path, raw: bytes) -> object:
        whole.append(raw)
        return parse_whole(path, raw)

    monkeypatch.setattr(json_format, "line_record", spy_line)
    monkeypatch.setattr(json_format, "_parse_whole", spy_whole)
    writer.charge("c7", "job-1", 1.0, T0)
    record = reader.get_client("c7")
    assert record is not None
    assert ledger_ids(record) == ["job-1"]
    assert len(parsed) == 1
    assert b'"c7"' in parsed[0]
    writer.create_client(make_record("new")[0])  # the last line gains a comma, one is added
    assert reader.get_client("new") is not None
    assert len(parsed) == 3
    assert whole == []
    monkeypatch.undo()
    assert snapshot(reader) == snapshot(JsonFileStore(path))


def test_readers_that_parse_changes_agree_with_a_whole_parse(path: Path) -> None:
    """Two workers take turns at every kind of write; after each, the other one's state (built
    from the lines that changed) equals a fresh parse of the whole file."""
    stores = [JsonFileStore(path), JsonFileStore(path)]
    rng = random.Random(20261125)
    ids: list[str] = []
    for step in range(120):
        me, other = stores[step % 2], stores[1 - step % 2]
        action = rng.choice(["create", "charge", "charge", "credits", "active", "events"])
        if action == "create" or not ids:
            ids.append(f"c{step}")
            me.create_client(make_record(ids[-1], rng.choice(list(PlanId)))[0])
        elif action == "charge":
            with suppress(CreditLimitReached, ClientInactive):
                me.charge(rng.choice(ids), f"job-{step}", 0.5, T0)
        elif action == "credits":
            with suppress(UnlimitedPlan):
                me.add_credits(rng.choice(ids), rng.randint(1, 5), "goodwill", T0)
        elif action == "active":
            me.set_active(rng.choice(ids), rng.random() < 0.5, T0)
        else:
            me.import_stripe_event_ids({f"evt_{step}": T0})
        assert snapshot(other) == snapshot(JsonFileStore(path)), (step, action)
        assert client_lines(path) == ids
    check_store_file(path)


def test_a_line_edited_into_nonsense_is_reported_like_any_corrupt_file(path: Path) -> None:
    writer, reader = JsonFileStore(path), JsonFileStore(path)
    for cid in ("c1", "c2", "c3"):
        writer.create_client(make_record(cid)[0])
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


def test_a_file_in_another_layout_loads_and_is_laid_out_on_the_next_write(path: Path) -> None:
    records = [make_record(cid)[0] for cid in ("c1", "c2")]
    doc = {
        "format": "openclaw-billing",
        "version": 1,
        "clients": {r.client_id: dump_record(r) for r in records},
        "stripe_events": {"evt_1": T0.isoformat()},
    }
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc, indent=2))
    store = JsonFileStore(path)
    assert [r.client_id for r in store.list_clients()[0]] == ["c1", "c2"]
    store.charge("c2", "job-1", 1.0, T0)
    assert len(path.read_bytes().split(b"\n")) == 5  # header, 2 clients, closing, end
    assert snapshot(store) == snapshot(JsonFileStore(path))
    assert store.stripe_event_ids() == {"evt_1": T0}


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


def test_the_file_holds_no_plaintext_key(path: Path) -> None:
    service = BillingService(JsonFileStore(path))
    keys = []
    for plan in PlanId:
        record, key = service.create_client(name="Acme", email="a@acmecorp.com", plan=plan, now=T0)
        service.charge(record.client_id, job_id="job-1", now=T0)
        keys.append(key)
    raw = path.read_bytes()
    assert KEY_RE.search(raw) is None
    for key in keys:
        assert key.encode() not in raw
        assert key[len("oc_live_") :].encode() not in raw
        assert service.authenticate(key) is not None
    doc = json.loads(raw)
    assert doc["format"] == "openclaw-billing"
    assert all("api_key" not in record for record in doc["clients"].values())
    check_store_file(path, keys)


def test_check_reports_a_file_corrupted_after_open(store: JsonFileStore, path: Path) -> None:
    store.create_client(make_record("c1")[0])
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
