"""Every storage backend behind one fixture, for the storage contract suite.

The backend sets are named here once, and every test module uses these names
(tests/test_test_layout.py checks that no test spells a list of backends itself):

* :data:`BACKENDS`: every backend;
* :data:`FILE_BACKENDS`: the ones that keep their state in files on this machine;
* :data:`SQL_BACKENDS`: the SQL ones (SQLAlchemy, a versioned schema).

A test for a subset uses the fixture with ``@pytest.mark.parametrize("store_url",
SQL_BACKENDS, indirect=True)``; :func:`file_store_url` is where a file backend keeps a store
in a given directory.

``store_url`` is parametrized over :data:`BACKENDS` (ids ``json``, ``sqlite``, ``postgresql``):

* json -> a fresh file path in ``tmp_path``;
* sqlite -> ``sqlite:///<tmp_path>/billing.db``;
* postgresql -> ``OPENCLAW_TEST_PG_URL`` (default :data:`DEFAULT_PG_URL`) pointed at a fresh
  schema ``t_<hex>`` through ``options=-csearch_path=...``; the schema is dropped afterwards.
  An unreachable server skips those tests, except under ``CI=true``, where it fails them.

``store`` is ``open_store(store_url)`` (closed after); ``reopen(store_url)`` opens another
instance on the same location: what a restart (or another worker) sees. A URL the product does
not support yet raises ``ConfigurationError`` from ``open_store``: that is a failure, never a
skip, so a backend cannot silently drop out of the suite.

A test module uses them by importing the fixture functions (registered under the names
``store_url`` and ``store``, so test parameters do not shadow an import)::

    from tests.backends import store_fixture, store_url_fixture  # noqa: F401
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store import Store, migrate, open_store
from openclaw_billing.store.capabilities import JobStorage
from tests.invariants import check_jobs, check_record
from tests.store_helpers import T0, make_record

__all__ = [
    "BACKENDS",
    "DEFAULT_PG_URL",
    "FILE_BACKENDS",
    "ROW_LOCK_BACKENDS",
    "SQL_BACKENDS",
    "add_client",
    "all_clients",
    "all_jobs",
    "assert_invariants",
    "file_store_url",
    "fresh_pg_url",
    "make_record",
    "reopen",
    "service_unavailable",
    "store_fixture",
    "store_url_fixture",
]

BACKENDS = ["json", "sqlite", "postgresql"]
#: The backends whose store is files in a directory of this machine.
FILE_BACKENDS = ["json", "sqlite"]
#: The SQL backends: one schema (openclaw_billing/store/sql_schema.py), upgraded in place.
SQL_BACKENDS = ["sqlite", "postgresql"]
#: Backends where writers of different rows run at once (row locks, not one write lock).
ROW_LOCK_BACKENDS = ["postgresql"]
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_HOWTO = (
    "start PostgreSQL on 127.0.0.1:5432 (trust auth, database test) or set OPENCLAW_TEST_PG_URL"
)
#: Seconds to wait for the PostgreSQL server before calling it unreachable.
PG_CONNECT_TIMEOUT = 3
#: A DROP SCHEMA blocked by a connection left in a transaction fails instead of hanging.
PG_DROP_LOCK_TIMEOUT = "10s"


# -- PostgreSQL ------------------------------------------------------------------------------


def pg_base_url() -> str:
    """The SQLAlchemy URL of the test server (``OPENCLAW_TEST_PG_URL`` or the default)."""
    return os.environ.get("OPENCLAW_TEST_PG_URL") or DEFAULT_PG_URL


def _libpq_url(url: str) -> str:
    """The same server as a libpq URL psycopg can connect to (no ``+driver``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@functools.cache
def _pg_unreachable(url: str) -> str | None:
    """Why the server at ``url`` cannot be used, or None. Probed once per session."""
    try:
        with psycopg.connect(_libpq_url(url), connect_timeout=PG_CONNECT_TIMEOUT) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def service_unavailable(needed_for: str, message: str) -> NoReturn:
    """A local service a test needs is down: fail under ``CI=true`` (CI must run every test),
    skip with ``message`` (which says how to enable it) elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true requires {needed_for}: {message}", pytrace=False)
    pytest.skip(message)


def _require_pg(url: str) -> None:
    problem = _pg_unreachable(url)
    if problem is None:
        return
    shown = make_url(url).render_as_string(hide_password=True)
    message = f"PostgreSQL at {shown} is unreachable ({problem}); {PG_HOWTO}"
    service_unavailable("the PostgreSQL backend", message)


def _with_search_path(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


@contextmanager
def _pg_schema(base: str) -> Iterator[str]:
    """A fresh, empty schema on the test server for one test; its URL; dropped after."""
    _require_pg(base)
    schema = f"t_{secrets.token_hex(8)}"
    with psycopg.connect(_libpq_url(base), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield _with_search_path(base, schema)
    finally:
        with psycopg.connect(_libpq_url(base), autocommit=True) as conn:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(PG_DROP_LOCK_TIMEOUT)))
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def fresh_pg_url() -> AbstractContextManager[str]:
    """The URL of a fresh, empty schema on the test server, dropped on exit (PostgreSQL
    unreachable: a failure under ``CI=true``, else a skip)."""
    return _pg_schema(pg_base_url())


# -- fixtures --------------------------------------------------------------------------------


def file_store_url(backend: str, directory: Path) -> str:
    """The URL of a store of the file backend ``backend`` (one of :data:`FILE_BACKENDS`) in
    ``directory``."""
    if backend == "json":
        return str(directory / "clients.json")
    if backend == "sqlite":
        return f"sqlite:///{directory}/billing.db"
    raise AssertionError(f"{backend!r} is not one of {FILE_BACKENDS}")


@pytest.fixture(name="store_url", params=BACKENDS, ids=BACKENDS)
def store_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty store of each backend, private to the test."""
    backend: str = request.param
    if backend in FILE_BACKENDS:
        yield file_store_url(backend, tmp_path)
    elif backend == "postgresql":
        with fresh_pg_url() as url:
            yield url
    else:  # pragma: no cover - BACKENDS and this function move together
        raise AssertionError(f"unknown backend {backend!r}")


@pytest.fixture(name="store")
def store_fixture(store_url: str) -> Iterator[Store]:
    """``open_store(store_url)``, closed after the test."""
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()


@contextmanager
def reopen(url: str) -> Iterator[Store]:
    """Another instance on the same location (what a restart, or another worker, sees);
    closed on exit."""
    again = open_store(url)
    try:
        yield again
    finally:
        again.close()


# -- records and invariants ------------------------------------------------------------------


def add_client(
    store: Store, plan: PlanId = PlanId.PRO, *, now: datetime = T0, name: str = "Acme"
) -> tuple[ClientRecord, str]:
    """A client created exactly as the service creates one (random id, a fresh cycle from
    ``now``, the plan's allowance); returns the record and its plaintext key."""
    email = f"{name.lower().replace(' ', '-')}@acmecorp.com"
    return BillingService(store).create_client(name=name, email=email, plan=plan, now=now)


def all_clients(store: Store) -> list[ClientRecord]:
    """Every stored client, in creation order."""
    return migrate.all_clients(store)


def all_jobs(store: Store, jobs_file: Path) -> list[tuple[str, str]]:
    """Every accepted job as (client id, job id): from the store when it keeps them, else
    from the gateway's job file (a store without ``JobStorage``)."""
    if isinstance(store, JobStorage):
        return [
            (job.client_id, job.job_id)
            for record in all_clients(store)
            for job in store.client_jobs(record.client_id)
        ]
    if not jobs_file.exists():
        return []
    lines = (json.loads(line) for line in jobs_file.read_text().splitlines() if line.strip())
    return [(job["client_id"], job["job_id"]) for job in lines]


def assert_invariants(store: Store) -> list[ClientRecord]:
    """docs/ARCHITECTURE.md I1-I3 (``check_record``) on every stored client, and I7-I8
    (``check_jobs``) with its jobs on a store that keeps them; returns the clients."""
    records = all_clients(store)
    for record in records:
        check_record(record)
        if isinstance(store, JobStorage):
            check_jobs(record, store.client_jobs(record.client_id))
    return records
