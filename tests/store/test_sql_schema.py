"""The SQL schema's upgrades in place (``openclaw_billing/store/sql_schema.py``), on every SQL
backend: a database as an earlier release left it opens, keeps its data and its keys work.

Version 1 had one key per client and no per-client policy. Version 3 made every column holding
credits, amounts, counts, Unix times or row ids 64-bit: a real version 2 database (its tables as
release 2 created them, its rows written by the store's own statements) is upgraded, and values
past 2^31 (a Stripe event after January 2038, a large balance, a ledger row id) are stored from
then on. Version 4 added what the operator's reads need: a version 3 database is given its
folded names and emails, each client's jobs of its cycle and the archived ledger rows, and then
answers as the JSON store does on the same data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import BigInteger, Integer, MetaData, create_engine, insert, text

from openclaw_billing.access import new_key_record
from openclaw_billing.errors import StoreUnavailable
from openclaw_billing.jobs import NewJob
from openclaw_billing.keys import digest_key, generate_key
from openclaw_billing.models import ClientRecord
from openclaw_billing.store import ClientQuery, ClientSort, Store, sql_schema
from openclaw_billing.store.base import Charge, StripeRef
from openclaw_billing.store.capabilities import JobStorage
from openclaw_billing.store.json_file import JsonFileStore
from tests import console_data
from tests.backends import (  # noqa: F401 - the fixtures "store" and "store_url"
    SQL_BACKENDS,
    add_client,
    all_clients,
    assert_invariants,
    reopen,
    store_url_fixture,
)
from tests.store_helpers import CYCLE, T0, make_record

#: A Unix time after 2038-01-19 (2^31 seconds): what Stripe sends from then on.
AFTER_2038 = 2**31 + 86_400
BIG_ROW_ID = 3_000_000_000
BIG_BALANCE = 5_000_000_000


def _version_2_tables() -> MetaData:
    """The tables as release 2 created them: this release's, with every 64-bit column back at
    32 bits (the only change of version 3), and, until release 2's store has written its rows,
    version 4's columns (:func:`_drop_version_4` takes them away)."""
    v2 = MetaData()
    for table in sql_schema.metadata_obj.sorted_tables:
        copy = table.to_metadata(v2)
        for column in copy.columns:
            if isinstance(column.type, BigInteger):
                column.type = Integer()
    return v2


@contextmanager
def _release_2(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A store that reads and writes the version 2 database as release 2 did (its statements
    are this release's: only the column types changed)."""
    with monkeypatch.context() as patch:
        patch.setattr(sql_schema, "SCHEMA_VERSION", 2)
        with reopen(url) as store:
            yield store


#: What version 4 added: its indexes, then its columns (table, column).
VERSION_4_INDEXES = (
    "ix_openclaw_clients_name",
    "ix_openclaw_clients_search",
    "ix_openclaw_clients_plan",
    "ix_openclaw_clients_status",
    "ix_openclaw_ledger_day",
)
VERSION_4_COLUMNS = (
    ("openclaw_clients", "name_key"),
    ("openclaw_clients", "email_key"),
    ("openclaw_clients", "cycle_jobs"),
    ("openclaw_ledger", "archived"),
)


#: What version 6 added (charging by outcome): its indexes, then its columns.
VERSION_6_INDEXES = (
    "ix_openclaw_jobs_status",
    "ix_openclaw_jobs_hold",
    "ix_openclaw_jobs_id",
    "ix_openclaw_jobs_meter",
)
VERSION_6_COLUMNS = (
    ("openclaw_clients", "max_active_jobs"),
    ("openclaw_ledger", "credits"),
    ("openclaw_ledger", "held"),
    ("openclaw_cycle_summaries", "credits"),
    ("openclaw_jobs", "status"),
    ("openclaw_jobs", "hold_until"),
    ("openclaw_jobs", "outcome"),
    ("openclaw_jobs", "meter_state"),
)


def _drop_version_6(url: str, *, jobs: bool = True) -> None:
    """Take away what version 6 added (as release 5 left a database; ``jobs``: the jobs
    table is there)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for index in VERSION_6_INDEXES if jobs else ():
            conn.execute(text(f"DROP INDEX {index}"))
        for table, column in VERSION_6_COLUMNS:
            if jobs or table != "openclaw_jobs":
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    engine.dispose()


def _drop_version_4(url: str) -> None:
    """Take away what version 4 added (as release 3 left a database), and what came after."""
    _drop_version_6(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        for index in VERSION_4_INDEXES:
            conn.execute(text(f"DROP INDEX {index}"))
        for table, column in VERSION_4_COLUMNS:
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    engine.dispose()


def _column_types(url: str) -> dict[str, str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name LIKE 'openclaw_%'"
            )
        ).all()
    engine.dispose()
    return {str(name): str(kind) for name, kind in rows}


def _version(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version FROM openclaw_schema_version")).scalar_one()
    engine.dispose()
    return int(version)


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_a_version_2_database_is_upgraded_to_64_bit_columns(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(store_url)
    with engine.begin() as conn:
        _version_2_tables().create_all(conn)
        conn.execute(insert(sql_schema.schema_version).values(version=2))
    engine.dispose()
    later = T0 + CYCLE + timedelta(days=1)
    with _release_2(store_url, monkeypatch) as old:
        record, key = add_client(old)
        client_id = record.client_id
        old.charge(client_id, "job-1", 0.25, T0)
        old.add_credits(client_id, 40, "goodwill", T0)
        old.charge(client_id, "job-2", 1.5, later)  # a new cycle: a summary and cycle_no 1
        old.apply_stripe_event("evt_1", StripeRef(client_id, None, None), 1_700_000_000, _noop, T0)
        if store_url.startswith("postgresql"):
            # The database really is release 2's: a 2038 event does not fit.
            with pytest.raises(StoreUnavailable):
                old.apply_stripe_event(
                    "evt_2038", StripeRef(client_id, None, None), AFTER_2038, _noop, T0
                )
            assert _column_types(store_url)["openclaw_clients.stripe_event_at"] == "integer"
        before = old.get_client(client_id)
    assert before is not None
    for summary in before.metadata.cycle_history:
        summary.credits = None  # version 6's column: a summary written before has none
    _drop_version_4(store_url)
    assert _version(store_url) == 2

    with reopen(store_url) as upgraded:
        assert _version(store_url) == sql_schema.SCHEMA_VERSION
        kept = upgraded.get_client(client_id)
        assert kept == before  # every field, the ledger and the summary included
        found = upgraded.get_client_by_key_digest(digest_key(key))
        assert found is not None
        assert found.client_id == client_id
        assert upgraded.charge(client_id, "job-1", 0.25, later).replayed  # the old cycle's
        assert upgraded.charge(client_id, "job-2", 1.5, later).replayed

        # Values past 2^31 are stored now.
        outcome, _ = upgraded.apply_stripe_event(
            "evt_2038", StripeRef(client_id, None, None), AFTER_2038, _noop, later
        )
        assert outcome.value == "applied"
        if store_url.startswith("postgresql"):
            engine = create_engine(store_url)
            with engine.begin() as conn:
                sequence = conn.execute(
                    text("SELECT pg_get_serial_sequence('openclaw_ledger', 'id')")
                ).scalar_one()
                conn.execute(text(f"ALTER SEQUENCE {sequence} RESTART WITH {BIG_ROW_ID}"))
            engine.dispose()
            types = _column_types(store_url)
            for column in (
                "openclaw_clients.seq",
                "openclaw_clients.credits_remaining",
                "openclaw_clients.stripe_event_at",
                "openclaw_ledger.id",
                "openclaw_credit_adjustments.amount",
                "openclaw_cycle_summaries.jobs",
            ):
                assert types[column] == "bigint", column
        assert not upgraded.charge(client_id, "job-3", 2.0, later).replayed
        big, _ = make_record("big", allowance=BIG_BALANCE, now=later)
        upgraded.create_client(big)
        upgraded.add_credits("big", -1, "correction", later)
        assert_invariants(upgraded)

    with reopen(store_url) as again:  # nothing more to upgrade; everything reads back
        assert _version(store_url) == sql_schema.SCHEMA_VERSION
        final = again.get_client(client_id)
        assert final is not None
        assert final.metadata.stripe_event_at == AFTER_2038
        assert [e.job_id for e in final.metadata.cost_log] == ["job-2", "job-3"]
        assert final.metadata.cycle_history[-1].adjustments[0].amount == 40
        assert again.charge(client_id, "job-3", 2.0, later).replayed
        engine = create_engine(store_url)
        with engine.connect() as conn:
            ids = conn.execute(text("SELECT id FROM openclaw_ledger ORDER BY id")).scalars().all()
        engine.dispose()
        if store_url.startswith("postgresql"):
            assert ids[-1] == BIG_ROW_ID
        assert len(ids) == 3
        stored_big = again.get_client("big")
        assert stored_big is not None
        assert stored_big.credits_remaining == BIG_BALANCE - 1


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_a_version_1_database_is_upgraded_and_its_keys_keep_working(store_url: str) -> None:
    with reopen(store_url) as first:
        record, key = add_client(first)
        first.charge(record.client_id, "job-1", 0.5, T0)
    # Put the database back the way release 1 left it: no key table rows, no policy columns.
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE openclaw_api_keys"))
        conn.execute(text("ALTER TABLE openclaw_clients DROP COLUMN rate_limit_per_minute"))
        conn.execute(text("ALTER TABLE openclaw_clients DROP COLUMN ip_allowlist"))
        conn.execute(text("UPDATE openclaw_schema_version SET version = 1"))
    engine.dispose()
    _drop_version_4(store_url)
    with reopen(store_url) as upgraded:
        stored = upgraded.get_client(record.client_id)
        assert stored is not None
        assert upgraded.get_client_by_key_digest(digest_key(key)) == stored
        [only] = stored.api_keys
        assert only.key_id == f"key_{record.api_key_hash[:12]}"
        assert stored.credits_remaining == 199
        assert stored.total_spent == 0.5
        upgraded.set_policy(record.client_id, T0, rate_limit_per_minute=3, ip_allowlist=[])
        upgraded.issue_key(record.client_id, new_key_record(generate_key(), T0), T0)
    assert _version(store_url) == sql_schema.SCHEMA_VERSION


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_a_version_3_database_is_upgraded_for_the_operators_reads(
    store_url: str, tmp_path: Path
) -> None:
    with reopen(store_url) as first:
        console_data.build(first)
        before = all_clients(first)
    for record in before:
        for summary in record.metadata.cycle_history:
            summary.credits = None  # version 6's column: a summary written before has none
    _drop_version_4(store_url)
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE openclaw_schema_version SET version = 3"))
    engine.dispose()

    reference = JsonFileStore(tmp_path / "reference.json")
    console_data.build(reference)
    with reopen(store_url) as upgraded:
        assert _version(store_url) == sql_schema.SCHEMA_VERSION
        assert all_clients(upgraded) == before
        for query in (
            ClientQuery(search="STRASSE"),
            ClientQuery(search="déjà"),
            ClientQuery(sort=ClientSort.NAME),
            ClientQuery(sort=ClientSort.USAGE),
        ):
            assert _ids(upgraded, query) == _ids(reference, query), query
        # c10's first job is two cycles back: archived by the upgrade, not counted.
        assert upgraded.overview(console_data.NOW) == reference.overview(console_data.NOW)
        upgraded.charge("c07", "new-job", 1.0, console_data.NOW)  # the new columns keep up
        by_usage = ["c02", "c01", "c03", "c04", "c06", "c07", "acme-8", "c09", "c10", "c05"]
        assert _ids(upgraded, ClientQuery(sort=ClientSort.USAGE)) == by_usage


def _ids(store: Store, query: ClientQuery) -> list[str]:
    return [r.client_id for r in store.list_clients(query)[0]]


def _noop(record: ClientRecord) -> None:
    """A Stripe change that changes nothing but the newest event time."""


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_a_version_4_database_gains_the_jobs_table(store_url: str) -> None:
    with reopen(store_url) as first:
        record, _ = add_client(first)
        first.charge(record.client_id, "job-old", 0.5, T0)
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE openclaw_jobs"))
        conn.execute(text("UPDATE openclaw_schema_version SET version = 4"))
    engine.dispose()
    _drop_version_6(store_url, jobs=False)
    with reopen(store_url) as upgraded:
        assert isinstance(upgraded, JobStorage)
        assert upgraded.client_jobs(record.client_id) == []
        charge = Charge(record.client_id, "job-new", 1.0, T0, job=NewJob({"name": "x"}))
        charged = upgraded.accept(charge)
        assert charged.charge.credits_remaining == 198
        assert upgraded.get_job(record.client_id, "job-new") == charged.job
        # The charge made before the upgrade is still known: its id is not charged again.
        assert upgraded.charge(record.client_id, "job-old", 0.5, T0).replayed
    assert _version(store_url) == sql_schema.SCHEMA_VERSION == 6


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_a_version_5_database_gains_holds_and_its_jobs_stay_charged(store_url: str) -> None:
    """Version 6 (charging by outcome): a job stored before is queued with no hold (it was
    charged at intake), so it neither counts against the concurrency cap nor expires; its
    ledger row took one credit; a reservation after the upgrade holds its price."""
    with reopen(store_url) as first:
        record, _ = add_client(first)
        cid = record.client_id
        first.accept(Charge(cid, "job-old", 0.5, T0, job=NewJob({"name": "old"})))
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE openclaw_schema_version SET version = 5"))
    engine.dispose()
    _drop_version_6(store_url)
    with reopen(store_url) as upgraded:
        assert isinstance(upgraded, JobStorage)
        old = upgraded.get_job(cid, "job-old")
        assert old is not None
        assert old.status == "queued"
        assert old.receipt is None
        assert not old.holding
        assert upgraded.expired_holds(T0 + CYCLE * 10, 10) == []
        assert upgraded.pending_meter_reports(10) == []
        stored = upgraded.get_client(cid)
        assert stored is not None
        assert [e.credits for e in stored.metadata.cost_log] == [1]
        assert not stored.metadata.cost_log[0].held
        hold = NewJob({"name": "new"}, price=3)
        charged = upgraded.accept(Charge(cid, "job-new", 0.0, T0, job=hold))
        assert charged.charge.credits_remaining == 199 - 3
        assert charged.job is not None
        assert charged.job.holding
        assert upgraded.get_job(cid, "job-new") == charged.job
    assert _version(store_url) == 6
