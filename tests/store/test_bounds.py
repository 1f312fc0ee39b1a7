"""Nothing the store accepts can stop it from loading, on every backend (tests/backends.py):
boundary values pushed through the service are stored, read back equal and survive a restart;
the values a store could not hold are refused before anything is written.

The JSON store also renders and parses back every record before it commits: a record that
would not load (a bug anywhere, a value no check caught) is refused with 422
``unstorable_change`` and the file is left as it was."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gateway
from openclaw_billing.access import new_key_record
from openclaw_billing.charges import MAX_JOB_COST, MAX_JOB_ID_LENGTH
from openclaw_billing.errors import BalanceTooLarge, ClientNotFound, StoreCorrupt, UnstorableChange
from openclaw_billing.keys import generate_key
from openclaw_billing.ledger import MAX_CREDIT_BALANCE
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.safetext import CONTROLS
from openclaw_billing.service import BillingService
from openclaw_billing.store import Store, json_format
from openclaw_billing.store.base import StripeRef
from openclaw_billing.store.json_file import JsonFileStore
from tests.backends import (  # noqa: F401 - the fixtures "store" and "store_url"
    add_client,
    all_clients,
    assert_invariants,
    make_record,
    reopen,
    store_fixture,
    store_url_fixture,
)
from tests.store_helpers import T0

#: The last instant a request may give (api/schemas.py) and the last Python can represent.
LATEST = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
END_OF_TIME = datetime.max.replace(tzinfo=UTC)
INT64_MAX = 2**63 - 1

#: Single-line text as the API accepts it: any character but the refused ones, the widest
#: (4-byte UTF-8) included.
one_line = st.characters(exclude_categories=["Cs"], exclude_characters=[*"\x00\t\n\r"]).filter(
    lambda c: not any(c in s for s in _refused_characters())
)


def _refused_characters() -> list[str]:
    import re

    pattern = re.compile(f"[{CONTROLS}]")
    return [chr(c) for c in range(0x0, 0x2070) if pattern.match(chr(c))]


def _text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(one_line, min_size=1, max_size=max_size).filter(lambda t: t.strip() == t)


@st.composite
def _scenario(draw: st.DrawFn) -> dict[str, object]:
    return {
        "name": draw(st.one_of(_text(200), st.just("😀" * 200))),
        "reason": draw(st.one_of(_text(500), st.just("\U0010fffd" * 500))),
        "label": draw(_text(100)),
        "credits": draw(st.sampled_from([1, 999_999, 1_000_000, -1])),
        "cost": draw(st.sampled_from([0.0, 5e-324, 0.1, 999_999.999999, MAX_JOB_COST])),
        "job_id": draw(st.one_of(_text(MAX_JOB_ID_LENGTH), st.just("j" * MAX_JOB_ID_LENGTH))),
        "expires_at": draw(
            st.sampled_from([LATEST, datetime(1970, 1, 1, tzinfo=UTC), T0 + timedelta(days=1)])
        ),
        "created": draw(st.sampled_from([0, 2**31 - 1, 2**31, 2**32 + 1, INT64_MAX])),
    }


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=_scenario())
def test_boundary_values_are_stored_and_survive_a_restart(
    store: Store, store_url: str, scenario: dict[str, object]
) -> None:
    service = BillingService(store)
    name, reason, label = str(scenario["name"]), str(scenario["reason"]), str(scenario["label"])
    record, _ = service.create_client(name=name, email="ops@acmecorp.com", plan=PlanId.PRO, now=T0)
    cid = record.client_id
    now = T0 + timedelta(hours=1)
    service.add_credits(cid, int(str(scenario["credits"])), reason, now=now)
    charged = service.charge(cid, job_id=str(scenario["job_id"]), cost=float(str(scenario["cost"])))
    assert not charged.replayed
    expires = scenario["expires_at"]
    assert isinstance(expires, datetime)
    if expires > T0:
        service.issue_key(cid, label=label, expires_at=expires, now=T0)
    created = int(str(scenario["created"]))
    outcome, _ = store.apply_stripe_event(
        f"evt_{created}_{cid}", StripeRef(cid, None, None), created, _noop, now
    )
    assert outcome.value == "applied"
    stored = store.get_client(cid)
    assert stored is not None
    assert stored.name == name
    assert stored.metadata.stripe_event_at == created
    with reopen(store_url) as again:
        assert again.get_client(cid) == stored
        assert_invariants(again)
        # The cycle rolls at the end of time without overflowing, and still loads.
        rolled = again.refresh_cycle(cid, END_OF_TIME)
        assert rolled.billing_cycle_end == END_OF_TIME
    with reopen(store_url) as last:
        assert last.get_client(cid) == rolled


def _noop(record: ClientRecord) -> None:
    """A Stripe change that changes nothing but the newest event time."""


def test_the_balance_is_capped_below_what_every_backend_stores(store: Store) -> None:
    big, _ = make_record("big", allowance=MAX_CREDIT_BALANCE - 5)
    store.create_client(big)
    assert store.add_credits("big", 5, "to the cap", T0).credits_remaining == MAX_CREDIT_BALANCE
    with pytest.raises(BalanceTooLarge):
        store.add_credits("big", 1, "past the cap", T0)
    assert store.add_credits("big", -1_000_000, "correction", T0).credits_remaining == (
        MAX_CREDIT_BALANCE - 1_000_000
    )
    assert_invariants(store)


def test_a_cycle_that_ends_near_the_end_of_time_rolls_and_loads(
    store: Store, store_url: str
) -> None:
    record, _ = make_record("late", now=datetime(9999, 11, 1, tzinfo=UTC))
    store.create_client(record)
    rolled = store.refresh_cycle("late", datetime(9999, 12, 31, 23, 0, tzinfo=UTC))
    assert rolled.billing_cycle_start == datetime(9999, 12, 31, tzinfo=UTC)
    assert rolled.billing_cycle_end == END_OF_TIME
    store.charge("late", "job-late", 1.0, datetime(9999, 12, 31, 23, 30, tzinfo=UTC))
    with reopen(store_url) as again:
        assert again.get_client("late") == store.get_client("late")


def test_charge_refuses_what_no_backend_stores(store: Store) -> None:
    """Host apps call ``deduct_job_credit`` directly: the same bounds as the API, and a client
    id with a NUL byte is not found (PostgreSQL answered 503 store_unavailable)."""
    service = BillingService(store)
    record, _ = add_client(store)
    for job_id in ("a\x00b", "a\nb", "a\u2028b", "a\ud800b", "", "j" * (MAX_JOB_ID_LENGTH + 1)):
        with pytest.raises(ValueError, match="job_id"):
            service.charge(record.client_id, job_id=job_id, cost=1.0)
    for cost in (float("inf"), float("nan"), -0.5, MAX_JOB_COST * 2, 10**400, "x", None):
        with pytest.raises(ValueError, match="cost"):
            service.charge(record.client_id, job_id="job-1", cost=cost)  # type: ignore[arg-type]
    for client_id in ("a\x00b", "\u2028", "a\ud800"):
        with pytest.raises(ClientNotFound):
            service.charge(client_id, job_id="job-1", cost=1.0)
    stored = store.get_client(record.client_id)
    assert stored is not None
    assert stored.metadata.cost_log == []


# -- the JSON store parses every record back before it commits -----------------------------

_MINUS_23_59 = timezone(-timedelta(hours=23, minutes=59))


def _poison_credits(record: ClientRecord) -> None:
    record.credits_remaining = 2**63  # past a BIGINT; assignment is not validated


def _poison_spend(record: ClientRecord) -> None:
    record.total_spent = float("inf")


def _poison_expiry(record: ClientRecord) -> None:
    # The bug of issue 11: a valid time that is the year 10000 in UTC.
    record.api_keys[0].expires_at = datetime(9999, 12, 31, 23, 59, 59, tzinfo=_MINUS_23_59)


def _poison_name(record: ClientRecord) -> None:
    record.name = "x\ud800"  # cannot be written as UTF-8


@pytest.mark.parametrize(
    "poison",
    [_poison_credits, _poison_spend, _poison_expiry, _poison_name],
    ids=lambda f: f.__name__,
)
def test_a_record_that_would_not_load_is_never_written(tmp_path: Path, poison: object) -> None:
    path = tmp_path / "clients.json"
    store = JsonFileStore(path)
    record, _ = add_client(store)
    before = path.read_bytes()
    ref = StripeRef(record.client_id, None, None)
    with pytest.raises(UnstorableChange):
        store.apply_stripe_event("evt_poison", ref, 1, poison, T0)  # type: ignore[arg-type]
    assert path.read_bytes() == before
    assert store.get_client(record.client_id) == record
    again = JsonFileStore(path)  # the file still loads, without the change
    assert again.get_client(record.client_id) == record
    assert "evt_poison" not in again.stripe_event_ids()
    again.issue_key(record.client_id, new_key_record(generate_key(), T0), T0)  # still writable


def test_a_change_the_loader_would_refuse_is_a_422_over_http(
    env: Path, monkeypatch: pytest.MonkeyPatch, admin_headers: dict[str, str]
) -> None:
    """Whatever the loader refuses (here a check made to refuse one name), the write is
    refused first: a 422, the file as it was, the gateway still starts."""
    path = env / "clients.json"
    refuse = json_format.record_problem

    def problem(record: ClientRecord) -> str | None:
        return "holds a poisoned name" if record.name == "poison" else refuse(record)

    monkeypatch.setattr(json_format, "record_problem", problem)
    with TestClient(gateway.create_app()) as http:
        ok = http.post(
            "/api/admin/clients", json={"name": "Acme", "email": "a@b.co"}, headers=admin_headers
        )
        assert ok.status_code == 201, ok.text
        before = path.read_bytes()
        reply = http.post(
            "/api/admin/clients", json={"name": "poison", "email": "a@b.co"}, headers=admin_headers
        )
        assert reply.status_code == 422, reply.text
        assert reply.json()["code"] == "unstorable_change"
        assert path.read_bytes() == before
        listed = http.get("/api/admin/clients", headers=admin_headers)
        assert listed.json()["total"] == 1
    assert len(all_clients(JsonFileStore(path))) == 1


def test_a_file_holding_a_time_past_the_year_9999_in_utc_is_corrupt_not_a_crash(
    tmp_path: Path,
) -> None:
    """What release 1 wrote for the issue's example: a clear StoreCorrupt (the gateway prints
    it and refuses to start), not an OverflowError and a traceback."""
    path = tmp_path / "clients.json"
    store = JsonFileStore(path)
    record, _ = add_client(store)
    store.compact()  # the client in the snapshot
    doc = json.loads(path.read_bytes())
    doc["clients"][record.client_id]["api_keys"][0]["expires_at"] = "9999-12-31T23:59:59-23:59"
    path.write_text(json.dumps(doc))
    with pytest.raises(StoreCorrupt, match="expires_at"):
        JsonFileStore(path)
