"""JsonFileStore through the Store API, one behaviour per test, time passed explicitly."""

from __future__ import annotations

import json
import random
import stat
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from openclaw_billing.errors import (
    ClientInactive,
    ClientNotFound,
    CreditLimitReached,
    DuplicateClient,
    InsufficientCredits,
    StoreCorrupt,
    UnlimitedPlan,
)
from openclaw_billing.keys import digest_key
from openclaw_billing.models import ClientRecord, dump_record
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store import json_format, open_store
from openclaw_billing.store.json_file import JsonFileStore
from tests.invariants import KEY_RE, check_record, check_store_file
from tests.store_helpers import CYCLE, T0, ledger_ids, make_record, temp_files


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "billing" / "clients.json"


@pytest.fixture
def store(path: Path) -> JsonFileStore:
    return JsonFileStore(path)


def stamp(path: Path) -> tuple[bytes, int]:
    """The file's bytes and mtime: what "nothing was written" compares."""
    return path.read_bytes(), path.stat().st_mtime_ns


# -- create / get / list ---------------------------------------------------------------------


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


def test_create_then_get_by_id_and_by_key_digest(store: JsonFileStore) -> None:
    record, key = make_record("c1")
    store.create_client(record)
    assert store.get_client("c1") == record
    assert store.get_client_by_key_digest(digest_key(key)) == record
    assert store.get_client_by_key_digest(digest_key(key + "0")) is None
    assert store.get_client("c2") is None


def test_list_filters_paginates_and_keeps_creation_order(store: JsonFileStore, path: Path) -> None:
    ids_and_plans = [
        ("m", PlanId.PRO),
        ("b", PlanId.FREE),
        ("z", PlanId.PRO),
        ("a", PlanId.ENTERPRISE),
        ("k", PlanId.PRO),
    ]
    for client_id, plan in ids_and_plans:
        store.create_client(make_record(client_id, plan)[0])
    store.set_active("z", False, T0)
    store.charge("b", "job-1", 1.0, T0)  # an update keeps the client's place

    def ids(
        *,
        active: bool | None = None,
        plan: PlanId | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[str], int]:
        records, total = store.list_clients(active=active, plan=plan, offset=offset, limit=limit)
        return [r.client_id for r in records], total

    assert ids() == (["m", "b", "z", "a", "k"], 5)
    assert ids(offset=1, limit=2) == (["b", "z"], 5)
    assert ids(offset=4, limit=10) == (["k"], 5)
    assert ids(offset=9) == ([], 5)
    assert ids(limit=0) == ([], 5)
    assert ids(plan=PlanId.PRO) == (["m", "z", "k"], 3)
    assert ids(plan=PlanId.PRO, offset=1, limit=1) == (["z"], 3)
    assert ids(active=False) == (["z"], 1)
    assert ids(active=True, plan=PlanId.PRO) == (["m", "k"], 2)
    assert ids(plan=PlanId.STARTER) == ([], 0)
    # The order survives a reopen (and another instance).
    page, _ = JsonFileStore(path).list_clients()
    assert [r.client_id for r in page] == ["m", "b", "z", "a", "k"]


def test_duplicate_id_or_key_is_refused_and_writes_nothing(
    store: JsonFileStore, path: Path
) -> None:
    first, _ = make_record("c1")
    store.create_client(first)
    before = stamp(path)
    same_id, _ = make_record("c1", PlanId.FREE)
    with pytest.raises(DuplicateClient):
        store.create_client(same_id)
    same_key = make_record("c2")[0].model_copy(update={"api_key_hash": first.api_key_hash})
    with pytest.raises(DuplicateClient):
        store.create_client(same_key)
    assert stamp(path) == before
    assert store.list_clients()[1] == 1


def test_unknown_client_raises_not_found_for_every_write(store: JsonFileStore) -> None:
    store.create_client(make_record("c1")[0])
    with pytest.raises(ClientNotFound):
        store.charge("nope", "job", 0.0, T0)
    with pytest.raises(ClientNotFound):
        store.add_credits("nope", 1, "x", T0)
    with pytest.raises(ClientNotFound):
        store.set_active("nope", False, T0)
    with pytest.raises(ClientNotFound):
        store.refresh_cycle("nope", T0 + 2 * CYCLE)


# -- charge ----------------------------------------------------------------------------------


def test_charge_decrements_and_logs(store: JsonFileStore, path: Path) -> None:
    store.create_client(make_record("c1")[0])
    at = T0 + timedelta(hours=1)
    result = store.charge("c1", "job-1", 5.5, at)
    assert result == ("c1", "job-1", 5.5, at, 199, False)
    result = store.charge("c1", "job-2", 0.25, at + timedelta(seconds=1))
    assert result.credits_remaining == 198
    record = JsonFileStore(path).get_client("c1")
    assert record is not None
    assert record.credits_remaining == 198
    assert record.total_spent == 5.75
    assert record.updated_at == at + timedelta(seconds=1)
    assert [(e.job_id, e.cost, e.timestamp) for e in record.metadata.cost_log] == [
        ("job-1", 5.5, at),
        ("job-2", 0.25, at + timedelta(seconds=1)),
    ]
    check_store_file(path)


def test_replayed_job_id_charges_once_and_returns_the_first_result(
    store: JsonFileStore, path: Path
) -> None:
    store.create_client(make_record("c1")[0])
    first = store.charge("c1", "job-1", 2.0, T0)
    store.charge("c1", "job-2", 1.0, T0)
    before = stamp(path)
    again = store.charge("c1", "job-1", 9.0, T0 + timedelta(minutes=5))
    assert again.replayed
    assert (again.job_id, again.cost, again.charged_at) == (first.job_id, 2.0, first.charged_at)
    assert again.credits_remaining == 198  # now, after job-2
    assert stamp(path) == before
    record = store.get_client("c1")
    assert record is not None
    assert ledger_ids(record) == ["job-1", "job-2"]
    assert record.total_spent == 3.0


def test_job_charged_just_before_a_reset_is_still_recognised_after_it(
    store: JsonFileStore, path: Path
) -> None:
    store.create_client(make_record("c1")[0])
    end = T0 + CYCLE
    first = store.charge("c1", "job-edge", 3.0, end - timedelta(seconds=1))
    again = store.charge("c1", "job-edge", 3.0, end + timedelta(seconds=1))  # rolls the cycle
    assert again.replayed
    assert again.charged_at == first.charged_at
    assert again.credits_remaining == 200  # the new cycle's allowance, nothing charged
    record = store.get_client("c1")
    assert record is not None
    assert record.metadata.cost_log == []
    assert len(record.metadata.cycle_history) == 1
    assert [e.job_id for e in record.metadata.cycle_history[0].entries] == ["job-edge"]
    check_store_file(path)


def test_credit_limit_raises_and_writes_nothing(store: JsonFileStore, path: Path) -> None:
    store.create_client(make_record("c1", PlanId.FREE)[0])
    for i in range(5):
        assert store.charge("c1", f"job-{i}", 1.0, T0).credits_remaining == 4 - i
    before = stamp(path)
    with pytest.raises(CreditLimitReached):
        store.charge("c1", "job-5", 1.0, T0)
    assert stamp(path) == before
    record = store.get_client("c1")
    assert record is not None
    assert record.credits_remaining == 0
    assert len(record.metadata.cost_log) == 5
    assert "job-5" not in ledger_ids(record)
    check_store_file(path)


def test_inactive_client_is_not_charged(store: JsonFileStore, path: Path) -> None:
    store.create_client(make_record("c1", active=False)[0])
    before = stamp(path)
    with pytest.raises(ClientInactive):
        store.charge("c1", "job-1", 1.0, T0)
    assert stamp(path) == before


def test_enterprise_is_never_decremented_but_is_logged(store: JsonFileStore, path: Path) -> None:
    store.create_client(make_record("e1", PlanId.ENTERPRISE)[0])
    for i in range(25):
        result = store.charge("e1", f"job-{i}", 2.0, T0 + timedelta(minutes=i))
        assert result.credits_remaining is None
        assert not result.replayed
    assert store.charge("e1", "job-3", 2.0, T0).replayed
    record = store.refresh_cycle("e1", T0 + CYCLE + timedelta(seconds=1))
    assert record.credits_remaining is None
    summary = record.metadata.cycle_history[0]
    assert (summary.jobs, summary.spend, summary.allowance, summary.credits_left) == (
        25,
        50.0,
        None,
        None,
    )
    assert record.total_spent == 50.0
    check_store_file(path)


# -- add_credits / set_active ----------------------------------------------------------------


def test_add_credits(store: JsonFileStore, path: Path) -> None:
    store.create_client(make_record("c1", PlanId.STARTER)[0])
    store.create_client(make_record("e1", PlanId.ENTERPRISE)[0])
    record = store.add_credits("c1", 25, "promotional credit", T0)
    assert record.credits_remaining == 75
    record = store.add_credits("c1", -70, "correction", T0)
    assert record.credits_remaining == 5
    before = stamp(path)
    with pytest.raises(InsufficientCredits):
        store.add_credits("c1", -6, "too much", T0)
    with pytest.raises(UnlimitedPlan):
        store.add_credits("e1", 10, "pointless", T0)
    assert stamp(path) == before
    record = store.add_credits("c1", -5, "to zero", T0)
    assert record.credits_remaining == 0
    stored = JsonFileStore(path).get_client("c1")
    assert stored is not None
    assert [(a.amount, a.reason) for a in stored.metadata.credit_adjustments] == [
        (25, "promotional credit"),
        (-70, "correction"),
        (-5, "to zero"),
    ]
    check_store_file(path)


def test_set_active_writes_only_a_change(store: JsonFileStore, path: Path) -> None:
    store.create_client(make_record("c1")[0])
    before = stamp(path)
    assert store.set_active("c1", True, T0 + timedelta(hours=1)).active
    assert stamp(path) == before
    later = T0 + timedelta(hours=2)
    record = store.set_active("c1", False, later)
    assert not record.active
    assert record.updated_at == later
    stored = JsonFileStore(path).get_client("c1")
    assert stored is not None
    assert not stored.active
    assert store.set_active("c1", True, later).active
    assert store.charge("c1", "job-1", 0.0, later).credits_remaining == 199


# -- cycles ----------------------------------------------------------------------------------


def test_refresh_cycle_resets_exactly_once(store: JsonFileStore, path: Path) -> None:
    store.create_client(make_record("c1")[0])
    store.add_credits("c1", 10, "bonus", T0)
    for i in range(3):
        store.charge("c1", f"job-{i}", 1.0, T0)
    assert store.refresh_cycle("c1", T0 + CYCLE - timedelta(microseconds=1)).credits_remaining == (
        207
    )
    end = T0 + CYCLE
    record = store.refresh_cycle("c1", end)
    assert (record.billing_cycle_start, record.billing_cycle_end) == (end, end + CYCLE)
    assert record.credits_remaining == 200
    assert record.metadata.cost_log == []
    assert record.metadata.credit_adjustments == []
    after = stamp(path)
    again = store.refresh_cycle("c1", end + timedelta(days=1))
    assert again.metadata.cycle_history == record.metadata.cycle_history
    assert stamp(path) == after  # nothing due: nothing written
    (summary,) = again.metadata.cycle_history
    assert (summary.start, summary.end) == (T0, end)
    assert (summary.allowance, summary.jobs, summary.spend, summary.credits_left) == (
        200,
        3,
        3.0,
        207,
    )
    assert [a.amount for a in summary.adjustments] == [10]
    check_store_file(path)


def test_long_expired_cycle_jumps_to_the_current_cycle(store: JsonFileStore, path: Path) -> None:
    store.create_client(make_record("c1")[0])
    store.charge("c1", "job-1", 1.0, T0)
    now = T0 + timedelta(days=100)
    record = store.refresh_cycle("c1", now)
    assert record.billing_cycle_start == T0 + 3 * CYCLE
    assert record.billing_cycle_end == T0 + 4 * CYCLE
    assert record.billing_cycle_start <= now < record.billing_cycle_end
    assert len(record.metadata.cycle_history) == 1
    assert record.credits_remaining == 200
    check_store_file(path)


def test_cycle_history_keeps_entries_only_in_the_newest_summary(
    store: JsonFileStore, path: Path
) -> None:
    store.create_client(make_record("c1")[0])
    for cycle in range(3):
        start = T0 + cycle * CYCLE
        for i in range(cycle + 1):
            store.charge("c1", f"c{cycle}-job-{i}", 1.0, start + timedelta(hours=i))
    record = store.refresh_cycle("c1", T0 + 3 * CYCLE)
    history = record.metadata.cycle_history
    assert [s.jobs for s in history] == [1, 2, 3]
    assert [len(s.entries) for s in history] == [0, 0, 3]
    assert [e.job_id for e in history[-1].entries] == ["c2-job-0", "c2-job-1", "c2-job-2"]
    # A job from two cycles back is no longer remembered; from one back it is.
    assert store.charge("c1", "c2-job-1", 1.0, T0 + 3 * CYCLE).replayed
    assert not store.charge("c1", "c1-job-0", 1.0, T0 + 3 * CYCLE).replayed
    check_record(record)
    check_store_file(path)


# -- copies, sharing, the file itself --------------------------------------------------------


def test_returned_records_are_copies(store: JsonFileStore, path: Path) -> None:
    record, key = make_record("c1")
    store.create_client(record)
    record.credits_remaining = 10_000  # the caller's object, after the create
    store.charge("c1", "job-1", 1.0, T0)
    before = stamp(path)
    for got in (
        store.get_client("c1"),
        store.get_client_by_key_digest(digest_key(key)),
        store.list_clients()[0][0],
        store.refresh_cycle("c1", T0),
        store.add_credits("c1", 1, "x", T0),
        store.set_active("c1", True, T0),
    ):
        assert got is not None
        got.credits_remaining = -1
        got.active = False
        got.metadata.cost_log.clear()
        got.metadata.credit_adjustments.clear()
    fresh = store.get_client("c1")
    assert fresh is not None
    assert fresh.credits_remaining == 200
    assert fresh.active
    assert ledger_ids(fresh) == ["job-1"]
    assert len(fresh.metadata.credit_adjustments) == 1
    assert stamp(path)[0] != before[0]  # only the add_credits wrote
    check_store_file(path)


def test_two_instances_on_one_path_see_each_others_writes(path: Path) -> None:
    a = JsonFileStore(path)
    b = JsonFileStore(path)
    a.create_client(make_record("c1")[0])
    assert b.get_client("c1") is not None
    b.charge("c1", "job-b", 1.0, T0)
    a.charge("c1", "job-a", 1.0, T0)
    assert b.charge("c1", "job-a", 1.0, T0).replayed
    b.create_client(make_record("c2")[0])
    assert [r.client_id for r in a.list_clients()[0]] == ["c1", "c2"]
    record = a.get_client("c1")
    assert record is not None
    assert ledger_ids(record) == ["job-b", "job-a"]
    assert record.credits_remaining == 198
    check_store_file(path)


# -- the layout: one client per line, and readers that parse only what changed ---------------


def snapshot(store: JsonFileStore) -> tuple[list[ClientRecord], dict[str, datetime]]:
    return store.list_clients(limit=10_000)[0], store.stripe_event_ids()


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


def test_files_are_private(store: JsonFileStore, path: Path) -> None:
    store.create_client(make_record("c1")[0])
    store.charge("c1", "job-1", 1.0, T0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lock = path.with_name(path.name + ".lock")
    assert stat.S_IMODE(lock.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


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
