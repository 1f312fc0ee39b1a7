"""The audit log: the storage contract on every backend, the JSON file's crash rules, the admin
route, the events each admin action records, the secret guard and migration."""

from __future__ import annotations

import json
import threading
import traceback
from collections import Counter
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import create_engine, select
from typer.testing import CliRunner

import gateway
from conftest import ADMIN_TOKEN
from openclaw_billing.audit import (
    ADMIN_ACTOR,
    ANONYMOUS_ACTOR,
    AuditAction,
    AuditEvent,
    AuditLog,
    NewAuditEvent,
    client_actor,
)
from openclaw_billing.cli import app as cli_app
from openclaw_billing.errors import StoreCorrupt, StoreUnavailable
from openclaw_billing.keys import generate_key
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService, get_service, set_service
from openclaw_billing.settings import get_settings
from openclaw_billing.store import Store, open_store
from openclaw_billing.store.audit_json import TORN_SUFFIX, JsonAuditLog, audit_path
from openclaw_billing.store.audit_sql import SqlAuditLog, audit_rows
from openclaw_billing.store.json_file import JsonFileStore
from tests.backends import reopen, store_fixture, store_url_fixture  # noqa: F401
from tests.factories import create_client
from tests.store_helpers import WAIT, mp_context

T0 = datetime(2026, 2, 19, 10, 30, tzinfo=UTC)
runner = CliRunner()


def new_event(n: int = 0, **overrides: Any) -> NewAuditEvent:
    fields: dict[str, Any] = {
        "at": T0 + timedelta(minutes=n),
        "action": AuditAction.CLIENT_CREDITS,
        "client_id": "c1",
        "actor": ADMIN_ACTOR,
        "source": "203.0.113.7",
        "detail": {"amount": n, "reason": f"adjustment {n}"},
    }
    return NewAuditEvent(**(fields | overrides))


def ids(events: list[AuditEvent]) -> list[int]:
    return [e.id for e in events]


def seed(log: AuditLog) -> list[AuditEvent]:
    """Ten events: clients c1/c2 alternating, create/credits/deactivate cycling, a minute
    apart from T0."""
    actions = [AuditAction.CLIENT_CREATE, AuditAction.CLIENT_CREDITS, AuditAction.CLIENT_DEACTIVATE]
    return [
        log.append(new_event(n, client_id=f"c{n % 2 + 1}", action=actions[n % 3]))
        for n in range(10)
    ]


# -- the storage contract, on every backend --------------------------------------------------


def test_append_numbers_events_and_query_answers_newest_first(store: Store) -> None:
    appended = seed(store.audit)
    assert ids(appended) == list(range(1, 11))
    page, total = store.audit.query()
    assert total == 10
    assert page == list(reversed(appended))
    assert page[0].fact() == new_event(
        9, client_id="c2", action=AuditAction.CLIENT_CREATE
    )  # fields stored exactly, time included


def test_filters_and_pages(store: Store) -> None:
    appended = seed(store.audit)
    newest_first = list(reversed(appended))

    def query(**filters: Any) -> tuple[list[int], int]:
        page, total = store.audit.query(**filters)
        return ids(page), total

    c1 = [e.id for e in newest_first if e.client_id == "c1"]
    assert query(client_id="c1") == (c1, 5)
    credits = [e.id for e in newest_first if e.action == AuditAction.CLIENT_CREDITS]
    assert query(action=AuditAction.CLIENT_CREDITS) == (credits, 3)
    both = [e.id for e in newest_first if e.client_id == "c2" and e.action == "client.create"]
    assert query(client_id="c2", action=AuditAction.CLIENT_CREATE) == (both, len(both))
    assert query(client_id="nobody") == ([], 0)
    # since is inclusive, until exclusive: minutes 3, 4, 5, 6.
    window = {"since": T0 + timedelta(minutes=3), "until": T0 + timedelta(minutes=7)}
    assert query(**window) == ([e.id for e in newest_first[3:7]], 4)
    assert query(since=T0 + timedelta(minutes=8)) == ([e.id for e in newest_first[:2]], 2)
    assert query(until=T0 + timedelta(minutes=1)) == ([appended[0].id], 1)
    # Pages: newest first, total unaffected, past the end empty.
    assert query(limit=3) == ([e.id for e in newest_first[:3]], 10)
    assert query(offset=3, limit=3) == ([e.id for e in newest_first[3:6]], 10)
    assert query(offset=9, limit=3) == ([appended[0].id], 10)
    assert query(offset=10, limit=3) == ([], 10)
    assert query(limit=0) == ([], 10)
    assert query(client_id="c1", offset=1, limit=2) == (c1[1:3], 5)


def test_bad_queries_are_refused(store: Store) -> None:
    seed(store.audit)
    for bad in ({"offset": -1}, {"limit": -1}, {"limit": 1001}, {"since": T0.replace(tzinfo=None)}):
        with pytest.raises(ValueError, match=r"offset|limit|timezone"):
            store.audit.query(**bad)


def test_events_survive_a_restart_and_numbering_continues(store: Store, store_url: str) -> None:
    before = seed(store.audit)
    with reopen(store_url) as again:
        assert list(again.audit.export()) == before
        later = again.audit.append(new_event(99))
    assert later.id > before[-1].id
    page, total = store.audit.query(limit=1)
    assert (page, total) == ([later], 11)


def test_export_is_oldest_first_and_import_appends_in_order(store: Store, tmp_path: Path) -> None:
    appended = seed(store.audit)
    assert list(store.audit.export()) == appended
    other = JsonFileStore(tmp_path / "other.json")
    existing = other.audit.append(new_event(50, client_id="c9"))
    copied = other.audit.import_events(e.fact() for e in store.audit.export())
    assert copied == 10
    exported = list(other.audit.export())
    assert exported[0] == existing
    assert [e.fact() for e in exported[1:]] == [e.fact() for e in appended]
    assert ids(exported) == list(range(1, 12))  # re-numbered after the target's own
    # And into this backend, behind its own events.
    assert store.audit.import_events(e.fact() for e in exported) == 11
    _, total = store.audit.query(limit=0)
    assert total == 21


def test_the_log_has_no_way_to_change_or_delete_an_event(store: Store) -> None:
    methods = {name for name in dir(AuditLog) if not name.startswith("_")}
    assert methods == {"append", "query", "export", "import_events"}
    # What a backend adds appends too: inside the store's own step (the SQL transaction,
    # the JSON store's outbox), or what that outbox holds.
    added = {name for name in dir(type(store.audit)) if not name.startswith("_")} - methods
    assert added <= {"insert", "reserve", "catch_up"}
    event = store.audit.append(new_event())
    with pytest.raises(ValidationError):
        event.detail = {}  # type: ignore[misc]  # frozen: a returned event is not a handle


@pytest.mark.slow
def test_concurrent_appends_from_two_processes_are_all_kept_with_unique_ids(
    store_url: str,
) -> None:
    threads, per_thread = 6, 40
    open_store(store_url).close()  # schema created once, before the race
    ctx = mp_context()
    barrier = ctx.Barrier(2 * threads)
    out: Queue[Any] = ctx.Queue()
    procs = [
        ctx.Process(target=append_process, args=(store_url, p, threads, per_thread, barrier, out))
        for p in range(2)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        status, value = out.get(timeout=WAIT * 2)
        assert status == "ok", value
    for proc in procs:
        proc.join(WAIT)
        assert proc.exitcode == 0
    with reopen(store_url) as store:
        events = list(store.audit.export())
        _, total = store.audit.query(limit=0)
    expected = 2 * threads * per_thread
    assert total == len(events) == expected
    assert len({e.id for e in events}) == expected
    assert ids(events) == sorted(ids(events))
    writers = Counter((e.detail["proc"], e.detail["thread"]) for e in events)
    assert writers == Counter({(p, t): per_thread for p in range(2) for t in range(threads)})
    for p in range(2):  # each writer's events in the order it appended them
        for t in range(threads):
            mine = [
                e.detail["n"] for e in events if e.detail["proc"] == p and e.detail["thread"] == t
            ]
            assert mine == list(range(per_thread))
    if not store_url.startswith("postgresql"):  # a sequence may skip numbers; these never do
        assert ids(events) == list(range(1, expected + 1))


def append_process(
    url: str, proc: int, threads: int, per_thread: int, barrier: Barrier, out: Queue[Any]
) -> None:
    """Child: open the store, then append from ``threads`` threads released together."""
    try:
        store = open_store(url)
        failures: list[str] = []

        def work(thread: int) -> None:
            try:
                barrier.wait(WAIT)
                for n in range(per_thread):
                    detail = {"proc": proc, "thread": thread, "n": n}
                    store.audit.append(new_event(n, detail=detail))
            except BaseException:
                failures.append(traceback.format_exc())

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(WAIT * 2)
        store.close()
        out.put(("error", failures[0]) if failures else ("ok", None))
    except BaseException:
        out.put(("error", traceback.format_exc()))


# -- the secret guard ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "detail",
    [
        {"reason": f"customer sent {generate_key()}"},
        {"reason": "oc_live_0123456789abcdef"},  # a truncated key is still most of a secret
        {"reason": "OC_LIVE_0123456789ABCDEF0123456789ABCDEF"},
        {"note": ["fine", generate_key()]},
        {"stripe": "sk_live_51Habc"},
        {"hook": "whsec_abc"},
        {"token": "anything"},
        {"key": "anything"},
        {"api_key": "anything"},
        {"admin_token": "anything"},
        {"client_secret": "x"},
        {"password": "x"},
        {"x_authorization": "x"},
        {"nested": {"a": 1}},
        {"Bad-Key": 1},
        {"reason": "x" * 501},
        {f"k{n}": n for n in range(21)},
        {"items": list(range(101))},
        {f"k{n}": "x" * 450 for n in range(20)},  # over 8 kB in all
        {"ratio": float("nan")},
    ],
)
def test_the_guard_refuses_secrets_and_unbounded_details(detail: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        new_event(detail=detail)


@pytest.mark.parametrize(
    "fields",
    [
        {"client_id": generate_key()},
        {"source": generate_key()},
        {"actor": f"client:{generate_key()}"},
        {"actor": "root"},
        {"actor": "client:"},
        {"source": ""},
    ],
)
def test_the_guard_checks_every_string_field(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        new_event(**fields)


def test_facts_that_are_not_secrets_pass() -> None:
    detail = {
        "key_id": "key_0123456789ab",
        "key_prefix": "oc_live_1a2b",  # the 4-hex display prefix
        "grace_seconds": 60,
        "ip_allowlist": [f"2001:db8:{n:x}::/48" for n in range(100)],  # a full allowlist
        "rate_limit_per_minute": None,
        "active": False,
        "amount": -5,
        "cost": 1.25,
        "keyring_note": "key words inside other words are fine",
    }
    event = new_event(detail=detail, actor=client_actor("c1"))
    assert event.detail == detail
    assert new_event(actor=ANONYMOUS_ACTOR, client_id=None).client_id is None


def test_record_audit_drops_a_refused_detail_but_keeps_the_event(
    service: BillingService, caplog: pytest.LogCaptureFixture
) -> None:
    key = generate_key()
    event = service.record_audit(
        AuditAction.AUTH_KEY_FAILED,
        actor=ANONYMOUS_ACTOR,
        source="198.51.100.4",
        detail={"presented": key},
    )
    assert event is not None
    assert event.detail == {"detail_refused": True}
    assert "detail refused" in caplog.text
    assert key not in caplog.text
    # What cannot be recorded without a secret is not recorded, and does not raise.
    assert (
        service.record_audit(AuditAction.CLIENT_CREATE, client_id=key, actor="admin", source="x")
        is None
    )
    assert key not in caplog.text
    assert service.audit_events() == ([event], 1)


def test_record_audit_raises_when_the_log_cannot_be_written(service: BillingService) -> None:
    assert isinstance(service.store, JsonFileStore)
    audit_path(service.store.path).mkdir()  # a directory where the file should be
    with pytest.raises(StoreUnavailable):
        service.record_audit(AuditAction.CLIENT_CREATE, actor=ADMIN_ACTOR, source="x")


# -- the JSON Lines file ---------------------------------------------------------------------


def test_the_json_log_is_a_private_file_beside_the_store(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "clients.json")
    assert isinstance(store.audit, JsonAuditLog)
    store.audit.append(new_event())
    path = tmp_path / "clients.json.audit.jsonl"
    assert path.stat().st_mode & 0o777 == 0o600
    (line,) = path.read_bytes().splitlines()
    assert json.loads(line)["id"] == 1


def test_a_torn_final_line_is_ignored_then_closed_off_never_rewritten(
    env: Path, store_path: Path, admin_headers: dict[str, str]
) -> None:
    store = JsonFileStore(store_path)
    seed(store.audit)
    path = audit_path(store_path)
    good = path.read_bytes()
    torn = _line(11)[:37]  # an append cut short by a crash: no newline
    path.write_bytes(good + torn)
    # The service starts and answers; reads ignore the torn line and change nothing.
    with TestClient(gateway.create_app()) as http:
        assert http.get("/health").status_code == 200
        answer = http.get("/api/admin/audit", headers=admin_headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["total"] == 10
    assert path.read_bytes() == good + torn
    # The next append ends the torn line so readers skip it, and takes the next id.
    event = store.audit.append(new_event(11))
    assert event.id == 11
    raw = path.read_bytes()
    assert raw.startswith(good + torn)  # appended to, never rewritten
    assert raw[len(good) :].splitlines()[0] == torn + TORN_SUFFIX
    page, total = store.audit.query(limit=2)
    assert (ids(page), total) == ([11, 10], 11)
    assert len(list(store.audit.export())) == 11


def test_a_complete_event_without_its_newline_is_not_counted(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "clients.json")
    seed(store.audit)
    path = audit_path(store.path)
    path.write_bytes(path.read_bytes() + _line(11).rstrip(b"\n"))  # only the newline missing
    assert store.audit.query(limit=0) == ([], 10)
    assert store.audit.append(new_event(12)).id == 11  # the unacknowledged line is skipped
    assert ids(list(store.audit.export())) == list(range(1, 12))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: [*lines[:3], b"{not json", *lines[4:]], "line 4 .*not valid JSON"),
        (lambda lines: [*lines[:3], b"\x00" * 40, *lines[4:]], "line 4 .*not valid JSON"),
        (lambda lines: [*lines[:3], b'{"id": "4"}', *lines[4:]], "line 4 .*not an audit event"),
        (lambda lines: lines[:3] + lines[2:], "line 4 .*has id 3, not after the previous 3"),
        (lambda lines: [*lines[:2], lines[3], lines[2], *lines[4:]], "line 4 .*not after"),
        (lambda lines: [*lines[:3], b"", *lines[3:]], "line 4"),
    ],
    ids=["garbage", "nul-bytes", "wrong-shape", "duplicate", "out-of-order", "blank"],
)
def test_a_damaged_line_in_the_middle_stops_reads_and_is_left_alone(
    tmp_path: Path, damage: Any, message: str
) -> None:
    store = JsonFileStore(tmp_path / "clients.json")
    seed(store.audit)
    path = audit_path(store.path)
    damaged = b"\n".join(damage(path.read_bytes().splitlines())) + b"\n"
    path.write_bytes(damaged)
    for read in (lambda: store.audit.query(), lambda: list(store.audit.export())):
        with pytest.raises(StoreCorrupt, match=message) as caught:
            read()
        assert str(path) in str(caught.value)
    assert path.read_bytes() == damaged
    # Recording goes on (appends look only at the end); the damage stays for the operator.
    store.audit.append(new_event(20))
    assert path.read_bytes().startswith(damaged)
    with pytest.raises(StoreCorrupt):
        store.audit.query()


def test_a_field_that_does_not_validate_stops_reads(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "clients.json")
    seed(store.audit)
    path = audit_path(store.path)
    lines = path.read_bytes().splitlines()
    doc = json.loads(lines[9])
    doc["action"] = "client.erase"
    lines[9] = json.dumps(doc).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(StoreCorrupt, match=r"line 10 .*action"):
        store.audit.query()


def test_a_damaged_last_line_refuses_appends_and_is_left_alone(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "clients.json")
    seed(store.audit)
    path = audit_path(store.path)
    damaged = path.read_bytes() + b"garbage\n"
    path.write_bytes(damaged)
    with pytest.raises(StoreCorrupt, match="ends with a damaged line"):
        store.audit.append(new_event(11))
    assert path.read_bytes() == damaged


def test_a_long_run_of_torn_lines_still_finds_the_last_id(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "clients.json")
    seed(store.audit)
    path = audit_path(store.path)
    filler = (b"x" * 1000 + TORN_SUFFIX + b"\n") * 200  # 200 kB: past the first tail window
    path.write_bytes(path.read_bytes() + filler)
    assert store.audit.append(new_event(11)).id == 11
    assert ids(store.audit.query(limit=2)[0]) == [11, 10]


def _line(n: int) -> bytes:
    event = AuditEvent(id=n, **new_event(n).model_dump())
    return json.dumps(event.model_dump(mode="json")).encode() + b"\n"


# -- the SQL table ---------------------------------------------------------------------------


def test_the_sql_log_is_a_table_in_the_same_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/billing.db"
    store = open_store(url)
    assert isinstance(store.audit, SqlAuditLog)
    store.audit.append(new_event(1))
    store.close()
    engine = create_engine(url)
    with engine.connect() as conn:
        (row,) = conn.execute(select(audit_rows)).all()
    engine.dispose()
    assert (row.id, row.action, row.detail) == (
        1,
        "client.credits",
        {"amount": 1, "reason": "adjustment 1"},
    )


# -- the admin route and the events admin actions record -------------------------------------


def test_each_admin_action_records_one_event(
    http: TestClient, admin_headers: dict[str, str], service: BillingService
) -> None:
    created = create_client(http, "starter", max_active_jobs=None)
    cid = created["client_id"]
    page, total = service.audit_events()
    assert total == 1
    (create,) = page
    assert create.action == AuditAction.CLIENT_CREATE
    assert (create.client_id, create.actor, create.source) == (cid, "admin", "testclient")
    record = service.get_client(cid)
    assert create.detail == {"plan": "starter", "key_id": record.api_keys[0].key_id}

    steps = [
        ("PUT", f"/api/admin/clients/{cid}/credits", {"credits": 7, "reason": "goodwill"}),
        ("DELETE", f"/api/admin/clients/{cid}", None),
        ("POST", f"/api/admin/clients/{cid}/reactivate", None),
    ]
    # X-Forwarded-For from a peer that is not a trusted proxy is not believed.
    forged = admin_headers | {"X-Forwarded-For": "198.51.100.99"}
    for method, url, body in steps:
        answer = http.request(method, url, headers=forged, json=body)
        assert answer.status_code == 200, answer.text
    page, total = service.audit_events()
    assert total == 4
    credits, deactivate, reactivate = reversed(page[:3])
    assert (credits.action, credits.detail) == (
        AuditAction.CLIENT_CREDITS,
        {"amount": 7, "reason": "goodwill"},
    )
    assert (deactivate.action, deactivate.detail) == (AuditAction.CLIENT_DEACTIVATE, {})
    assert (reactivate.action, reactivate.detail) == (AuditAction.CLIENT_REACTIVATE, {})
    for event in page:
        assert (event.client_id, event.actor, event.source) == (cid, "admin", "testclient")
    assert ids(page) == sorted(ids(page), reverse=True)


def test_refused_admin_actions_record_nothing(
    http: TestClient, admin_headers: dict[str, str], service: BillingService
) -> None:
    created = create_client(http, "enterprise", max_active_jobs=None)
    cid = created["client_id"]
    refused = [
        http.put(
            f"/api/admin/clients/{cid}/credits",
            headers=admin_headers,
            json={"credits": 5, "reason": "x"},
        ),
        http.put(
            "/api/admin/clients/nobody/credits",
            headers=admin_headers,
            json={"credits": 5, "reason": "x"},
        ),
        http.delete("/api/admin/clients/nobody", headers=admin_headers),
        http.post("/api/admin/clients", headers=admin_headers, json={"name": "", "email": "x"}),
        http.post("/api/admin/clients", headers={"X-Auth-Token": "wrong"}, json={}),
    ]
    assert [r.status_code for r in refused] == [409, 404, 404, 422, 401]
    events, _ = service.audit_events()
    # The create, and the wrong token (an authentication failure, not an admin action).
    assert [e.action for e in events] == [AuditAction.AUTH_ADMIN_FAILED, AuditAction.CLIENT_CREATE]


def test_the_audit_route_filters_and_pages(
    http: TestClient, admin_headers: dict[str, str], service: BillingService
) -> None:
    for n in range(12):
        service.record_audit(
            AuditAction.CLIENT_CREDITS if n % 3 else AuditAction.AUTH_ADMIN_FAILED,
            client_id=None if n % 3 == 0 else f"c{n % 2}",
            actor=ADMIN_ACTOR if n % 3 else ANONYMOUS_ACTOR,
            source="192.0.2.1",
            detail={"n": n},
            now=T0 + timedelta(hours=n),
        )

    def get(**params: Any) -> dict[str, Any]:
        answer = http.get("/api/admin/audit", headers=admin_headers, params=params)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def ns(body: dict[str, Any]) -> list[int]:
        return [e["detail"]["n"] for e in body["events"]]

    everything = get()
    assert (everything["total"], everything["offset"], everything["limit"]) == (12, 0, 100)
    assert ns(everything) == list(range(11, -1, -1))
    first = everything["events"][-1]
    assert set(first) == {"id", "at", "action", "client_id", "actor", "source", "detail"}
    assert (first["action"], first["actor"], first["client_id"]) == (
        "auth.admin_failed",
        "anonymous",
        None,
    )
    assert first["at"] == "2026-02-19T10:30:00+00:00"
    assert ns(get(action="auth.admin_failed")) == [9, 6, 3, 0]
    assert ns(get(client_id="c1")) == [11, 7, 5, 1]
    assert ns(get(client_id="c1", action="client.credits", limit=2)) == [11, 7]
    page = get(limit=5, offset=5)
    assert (ns(page), page["total"], page["offset"], page["limit"]) == ([6, 5, 4, 3, 2], 12, 5, 5)
    # ISO 8601 with Z, an offset (encoded) or no zone (UTC); since inclusive, until exclusive.
    assert ns(get(since="2026-02-19T12:30:00Z", until="2026-02-19T15:30:00Z")) == [4, 3, 2]
    assert ns(get(since="2026-02-19T13:30:00+01:00", until="2026-02-19T15:30:00")) == [4, 3, 2]
    assert get(since="2026-02-20T00:00:00Z")["total"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"action": "client.erase"},
        {"since": "yesterday"},
        {"until": "2026-13-01T00:00:00Z"},
        {"limit": 0},
        {"limit": 1001},
        {"offset": -1},
        {"offset": 10**12},
        {"client_id": ""},
        {"client_id": "x" * 101},
        {"since": "2026-02-20T00:00:00Z", "until": "2026-02-19T00:00:00Z"},
    ],
)
def test_bad_filters_are_422(
    http: TestClient, admin_headers: dict[str, str], params: dict[str, Any]
) -> None:
    answer = http.get("/api/admin/audit", headers=admin_headers, params=params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] in {"validation_error", "invalid_request"}


@pytest.mark.parametrize("headers", [{}, {"X-Auth-Token": "wrong"}, {"X-Client-Key": "k"}])
def test_the_audit_route_needs_the_admin_token(http: TestClient, headers: dict[str, str]) -> None:
    answer = http.get("/api/admin/audit", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == "invalid_admin_token"


def test_a_damaged_log_answers_503_not_500(
    http: TestClient, admin_headers: dict[str, str], store_path: Path
) -> None:
    create_client(http, max_active_jobs=None)
    path = audit_path(store_path)
    path.write_bytes(b"{oops\n" + path.read_bytes())
    answer = http.get("/api/admin/audit", headers=admin_headers)
    assert answer.status_code == 503
    assert answer.json()["code"] == "store_unavailable"


# -- no secret is ever stored ----------------------------------------------------------------


def test_no_secret_reaches_the_audit_log(
    store_url: str, monkeypatch: pytest.MonkeyPatch, env: Path, admin_headers: dict[str, str]
) -> None:
    monkeypatch.setenv("OPENCLAW_BILLING_DB", store_url)
    get_settings.cache_clear()
    set_service(None)
    with TestClient(gateway.create_app()) as http:
        created = create_client(http, max_active_jobs=None)
        cid, key = created["client_id"], created["api_key"]
        wrong = key[:-1] + ("1" if key.endswith("0") else "0")
        calls = [
            ("GET", "/api/billing/usage", {"X-Client-Key": wrong}, None),
            ("GET", "/api/billing/usage", {"X-Client-Key": key}, None),
            ("GET", "/api/admin/clients", {"X-Auth-Token": ADMIN_TOKEN + "x"}, None),
            (
                "PUT",
                f"/api/admin/clients/{cid}/credits",
                admin_headers,
                {"credits": 3, "reason": f"for {key}"},
            ),
            (
                "PUT",
                f"/api/admin/clients/{cid}/credits",
                admin_headers,
                {"credits": 2, "reason": ADMIN_TOKEN},
            ),
            ("DELETE", f"/api/admin/clients/{cid}", admin_headers, None),
            ("POST", f"/api/admin/clients/{cid}/reactivate", admin_headers, None),
            ("GET", f"/api/admin/clients/{key}", admin_headers, None),
        ]
        for method, url, headers, body in calls:
            assert http.request(method, url, headers=headers, json=body).status_code < 500
        service = get_service()
        # What deps records for authentication failures, with hostile input in the detail.
        for detail in ({"presented": key}, {"header": ADMIN_TOKEN}, {"token": "t"}):
            service.record_audit(
                AuditAction.AUTH_KEY_FAILED,
                actor=ANONYMOUS_ACTOR,
                source="testclient",
                detail=detail,
            )
        events, total = service.audit_events()
        raw = _raw_audit(service.store, store_url)
        set_service(None)
    # create, 2 credits, deactivate, reactivate, the 2 failed checks over HTTP, 3 recorded here
    assert total == 10, [e.action for e in events]
    failed = [e for e in events if e.action in {"auth.key_failed", "auth.admin_failed"}][3:]
    assert [e.detail for e in reversed(failed)] == [{"key_prefix": wrong[:12]}, {}]
    assert [e.detail for e in events[:3]] == [{"detail_refused": True}] * 3
    credits = [e for e in events if e.action == AuditAction.CLIENT_CREDITS]
    assert [e.detail for e in credits] == [{"detail_refused": True}] * 2
    assert key not in raw
    assert key[8:] not in raw
    assert ADMIN_TOKEN not in raw
    assert raw.count("detail_refused") == 5


def _raw_audit(store: Store, url: str) -> str:
    """The audit log as stored: the file's bytes, or every row of the table."""
    if isinstance(store, JsonFileStore):
        return audit_path(store.path).read_text()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return "\n".join(repr(tuple(row)) for row in conn.execute(select(audit_rows)))
    finally:
        engine.dispose()


# -- migration -------------------------------------------------------------------------------


def test_migration_copies_the_audit_log_in_order(store_url: str, env: Path) -> None:
    source = env / "source.json"
    json_store = JsonFileStore(source)
    service = BillingService(json_store)
    record, _ = service.create_client(name="A", email="a@acmecorp.com", plan=PlanId.PRO)
    (created,) = json_store.audit.export()  # the creation, recorded with the client
    appended = [created, *seed(json_store.audit)]
    with reopen(store_url) as target:  # the target already holds an event: kept, first
        own = target.audit.append(new_event(77, client_id="elsewhere"))
    result = runner.invoke(cli_app, ["migrate", "--from", str(source), "--to", store_url])
    assert result.exit_code == 0, result.output
    assert "copied and verified 11 audit events" in result.output
    with reopen(store_url) as target:
        events = list(target.audit.export())
    assert events[0] == own
    assert [e.fact() for e in events[1:]] == [e.fact() for e in appended]
    assert ids(events) == sorted(ids(events))
    with reopen(store_url) as target:
        assert target.get_client(record.client_id) is not None
    # And back to a new JSON file.
    backup = env / "backup.json"
    result = runner.invoke(cli_app, ["export", "--from", store_url, "--to", str(backup)])
    assert result.exit_code == 0, result.output
    assert [e.fact() for e in JsonFileStore(backup).audit.export()] == [e.fact() for e in events]


def test_a_damaged_source_log_fails_the_migration(env: Path) -> None:
    source = env / "source.json"
    store = JsonFileStore(source)
    BillingService(store).create_client(name="A", email="a@acmecorp.com", plan=PlanId.PRO)
    seed(store.audit)
    path = audit_path(source)
    path.write_bytes(b"{oops\n" + path.read_bytes())
    target = f"sqlite:///{env}/billing.db"
    result = runner.invoke(cli_app, ["migrate", "--from", str(source), "--to", target])
    assert result.exit_code == 1
    assert "audit log" in result.output
    assert "line 1" in result.output
    with reopen(target) as opened:  # refused before anything was copied
        assert opened.list_clients() == ([], 0)
