"""Moving a billing store between backends (JSON, SQLite, PostgreSQL), without a terminal.

Every client is copied whole (key digest, plan, credits, current ledger, adjustments, cycle
summaries and the newest summary's ledger), then the jobs stored with the charges (both sides
keep jobs: :class:`~.capabilities.JobStorage`), then the processed Stripe event ids, then the
audit log (appended after any events the target has, in order, with new ids); afterwards the
counts, balances, jobs and audit events of both sides are compared. A non-empty target is
refused unless ``into_non_empty`` is given (and even then an existing client id is never
overwritten).

A source that does not exist is refused before anything is opened or created
(:func:`check_source_exists`). Functions return results and raise :class:`MigrationError` or
``BillingError``; the CLI (:mod:`openclaw_billing.cli`) formats them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from itertools import islice, zip_longest
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..audit import AuditLog
from ..errors import ConfigurationError, DuplicateClient
from ..jobs import StoredJob
from ..models import ClientRecord
from . import SQL_SCHEMES, Store, open_store
from .audit_json import audit_path
from .capabilities import EventIdTransfer, JobStorage
from .json_file import JsonFileStore
from .json_journal import journal_path, journals
from .query import ClientQuery

PAGE = 500
#: Jobs handed to the target's ``import_jobs`` at a time.
JOB_BATCH = 5000

#: Told ``(clients copied, clients in all)`` before the first client and after each.
Progress = Callable[[int, int], None]


class CopyResult(NamedTuple):
    clients: int
    #: The credits the target holds once the copy is verified.
    credits: int
    audit_events: int


class Fingerprint(NamedTuple):
    """What must be identical on both sides after a copy, per client."""

    api_key_hash: str
    plan: str
    active: bool
    credits_remaining: int | None
    total_spent: float
    jobs: tuple[str, ...]
    adjustments: int
    cycles: int
    #: Every key with its state (digest, expiry, revocation): the same keys work the same way.
    keys: tuple[tuple[str, str, str | None, str | None], ...]
    rate_limit_per_minute: int | None
    ip_allowlist: tuple[str, ...]


def fingerprint(record: ClientRecord) -> Fingerprint:
    meta = record.metadata
    return Fingerprint(
        record.api_key_hash,
        record.plan.value,
        record.active,
        record.credits_remaining,
        record.total_spent,
        tuple(e.job_id for e in meta.cost_log),
        len(meta.credit_adjustments),
        len(meta.cycle_history),
        tuple(
            (
                k.key_id,
                k.digest,
                k.expires_at.isoformat() if k.expires_at else None,
                k.revoked_at.isoformat() if k.revoked_at else None,
            )
            for k in record.api_keys
        ),
        record.rate_limit_per_minute,
        tuple(record.ip_allowlist),
    )


def all_clients(store: Store) -> list[ClientRecord]:
    """Every client of ``store``, in creation order, a page at a time."""
    first, total = store.list_clients(ClientQuery(limit=PAGE))
    records = list(first)
    while len(records) < total:
        page, _ = store.list_clients(ClientQuery(offset=len(records), limit=PAGE))
        if not page:
            break
        records.extend(page)
    return records


def copy_store(
    source: Store,
    target: Store,
    *,
    into_non_empty: bool = False,
    progress: Progress | None = None,
) -> tuple[int, int]:
    """Copy every client, Stripe event id and audit event from ``source`` to ``target``, then
    verify. Returns the number of clients and of audit events copied; raises ``BillingError``
    on refusal or mismatch."""
    source_ids, target_ids = event_ids(source), event_ids(target)
    _, existing = target.list_clients(ClientQuery(limit=0))
    if existing and not into_non_empty:
        raise ConfigurationError(
            f"The target {target.location} already holds {existing} clients; "
            "pass --into-non-empty to add to it"
        )
    for _ in source.audit.export():  # a damaged audit log stops the copy before it starts
        pass
    records = all_clients(source)
    if progress is not None:
        progress(0, len(records))
    for done, record in enumerate(records, 1):
        try:
            target.create_client(record)
        except DuplicateClient:
            raise DuplicateClient(
                f"Client {record.client_id} (or its key) already exists in the target"
            ) from None
        if progress is not None:
            progress(done, len(records))
    copy_jobs(source, target, records)
    events = source_ids.stripe_event_ids()
    if events:
        target_ids.import_stripe_event_ids(events)
    verify_copy(source, target, records)
    audited = copy_audit(source.audit, target.audit)
    return len(records), audited


def copy_jobs(source: Store, target: Store, records: list[ClientRecord]) -> int:
    """Copy every job of ``records``' clients (a store without jobs has none to copy; a target
    without them is refused if there are some). Returns how many were copied."""
    if not isinstance(source, JobStorage):
        return 0
    copied = 0
    pending: list[StoredJob] = []
    for record in records:
        pending += source.client_jobs(record.client_id)
        if len(pending) >= JOB_BATCH or (pending and record is records[-1]):
            if not isinstance(target, JobStorage):
                raise ConfigurationError(
                    f"The target {target.location} cannot keep the source's jobs"
                )
            copied += target.import_jobs(pending)
            pending = []
    return copied


def event_ids(store: Store) -> EventIdTransfer:
    """``store`` as an :class:`EventIdTransfer`, or a clear refusal: a copy without the
    processed Stripe event ids would apply a redelivered event a second time."""
    if not isinstance(store, EventIdTransfer):
        raise ConfigurationError(
            f"The store {store.location} cannot hand over its processed Stripe event ids, "
            "so it cannot take part in a copy"
        )
    return store


def copy_audit(source: AuditLog, target: AuditLog) -> int:
    """Append every audit event of ``source`` to ``target``, oldest first, then verify.

    The target numbers them after its own events (ids are re-sequenced; the order and every
    other field are kept). Verified: the target gained exactly the source's count, and its
    newest events equal the source's, one by one. Returns the number copied."""
    _, before = target.query(limit=0)
    copied = target.import_events(event.fact() for event in source.export())
    _, after = target.query(limit=0)
    _, expected = source.query(limit=0)
    if copied != expected or after - before != expected:
        raise ConfigurationError(
            f"Verification failed: {expected} audit events in the source, {after - before} "
            "added to the target"
        )
    added = islice(target.export(), before, None)
    for mine, theirs in zip_longest(source.export(), added):
        if mine is None or theirs is None or mine.fact() != theirs.fact():
            raise ConfigurationError("Verification failed: the target's audit log differs")
    return copied


def verify_copy(source: Store, target: Store, records: list[ClientRecord]) -> None:
    """Every source client is in the target with the same digest, plan, balance and ledger,
    and every Stripe event id came along."""
    copied = {r.client_id: r for r in all_clients(target)}
    for record in records:
        other = copied.get(record.client_id)
        if other is None or fingerprint(other) != fingerprint(record):
            raise ConfigurationError(
                f"Verification failed for client {record.client_id}: the target differs"
            )
    if isinstance(source, JobStorage) and isinstance(target, JobStorage):
        for record in records:
            mine = source.client_jobs(record.client_id)
            if mine != target.client_jobs(record.client_id):
                raise ConfigurationError(
                    f"Verification failed for the jobs of client {record.client_id}"
                )
    missing = set(event_ids(source).stripe_event_ids()) - set(event_ids(target).stripe_event_ids())
    if missing:
        raise ConfigurationError(f"Verification failed: {len(missing)} Stripe event ids missing")


class MigrationError(Exception):
    """A refusal or failure of a copy, in one line (the CLI reports it without a traceback)."""


def json_path(url: str) -> Path | None:
    """The file a JSON store URL (a path, or ``json://``) names; None for a SQL URL."""
    if url.startswith("json://"):
        return Path(url.removeprefix("json://")).expanduser()
    _, sep, _ = url.partition("://")
    return None if sep else Path(url).expanduser()


def check_source_exists(url: str) -> None:
    """Refuse a source that is not there, before anything is opened: opening a store creates
    it (an empty JSON file's directory and lock, an empty SQLite file, the SQL schema)."""
    path = json_path(url)
    if path is not None:
        if not path.is_file():
            raise MigrationError(f"The source {path} does not exist (or is not a file)")
        if path.stat().st_size == 0:
            raise MigrationError(f"The source {path} is empty: it holds no billing store")
        return
    scheme = url.partition("://")[0]
    if scheme not in SQL_SCHEMES:
        return  # open_store names the unsupported scheme
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise MigrationError(f"The source URL cannot be parsed: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or not Path(database).is_file():
            raise MigrationError(
                f"The source SQLite database {database or '(none)'} does not exist"
            )
        # An existing file may still hold no store (an empty file): read its tables below.
    engine = create_engine(parsed)
    try:
        with engine.connect() as conn:
            found = inspect(conn).has_table("openclaw_schema_version")
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise MigrationError(
            f"Cannot read the source {parsed.render_as_string(hide_password=True)}: {reason}"
        ) from None
    finally:
        engine.dispose()
    if not found:
        raise MigrationError(
            f"The source {parsed.render_as_string(hide_password=True)} holds no billing store "
            "(no openclaw_* tables)"
        )


def copy(
    source_url: str,
    target_url: str,
    *,
    into_non_empty: bool = False,
    progress: Progress | None = None,
) -> CopyResult:
    """Copy the store ``source_url`` names into ``target_url``'s, and verify."""
    check_source_exists(source_url)
    source = open_store(source_url)
    try:
        target = open_store(target_url)
        try:
            count, audited = copy_store(
                source, target, into_non_empty=into_non_empty, progress=progress
            )
            total = sum(r.credits_remaining or 0 for r in all_clients(target))
        finally:
            target.close()
    finally:
        source.close()
    return CopyResult(count, total, audited)


def open_location(url: str) -> str:
    """How a store URL is shown (a JSON path as ``json://``, a password hidden)."""
    path = json_path(url)
    if path is not None:
        return f"json://{path.absolute()}"
    return make_url(url).render_as_string(hide_password=True)


def export_replacing(source: str, path: Path, *, progress: Progress | None = None) -> CopyResult:
    """Export into a fresh store beside ``path``, then move it (its snapshot, compacted so that
    it holds everything, its journals and its audit log) over ``path``: an existing backup is
    replaced only by a complete, verified one. Until the snapshot is moved, ``path`` is the
    old export: the new journals name the new snapshot, so they are never replayed on it."""
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.export-", dir=path.parent))
    try:
        fresh = staging / path.name
        result = copy(source, str(fresh), progress=progress)
        JsonFileStore(fresh).compact()
        for old in journals(path).values():
            old.unlink(missing_ok=True)
        for generation, journal in journals(fresh).items():
            os.replace(journal, journal_path(path, generation))
        fresh_audit, old_audit = audit_path(fresh), audit_path(path)
        if fresh_audit.exists():
            os.replace(fresh_audit, old_audit)
        else:  # the replaced export's audit log belongs to it, not to this one
            old_audit.unlink(missing_ok=True)
        os.replace(fresh, path)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)
