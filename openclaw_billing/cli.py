"""The operator CLI, ``openclaw-billing``: move a billing store between backends.

    openclaw-billing migrate --from ~/.openclaw/billing/clients.json --to sqlite:///billing.db
    openclaw-billing export --from postgresql+psycopg://... --to backup.json
    openclaw-billing import --from backup.json --to postgresql+psycopg://...

Every client is copied whole (key digest, plan, credits, current ledger, adjustments, cycle
summaries and the newest summary's ledger), then the processed Stripe event ids, then the audit
log (appended after any events the target has, in order, with new ids); afterwards the counts,
balances and audit events of both sides are compared. A non-empty target is refused unless
``--into-non-empty`` is given (and even then an existing client id is never overwritten).
Stop the gateway first: a store that changes during a copy would not verify.

A source that does not exist (a JSON path or SQLite file that is not there, a PostgreSQL
database without the billing tables) is refused before anything is opened or created, so a
typo never "migrates" an empty store. ``export --force`` replaces an existing file only once
the new export is complete and verified. Errors are one line on stderr and status 1.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from itertools import islice, zip_longest
from pathlib import Path
from typing import Annotated, NamedTuple

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from .audit import AuditLog
from .errors import BillingError, ConfigurationError, DuplicateClient
from .models import ClientRecord
from .store import SQL_SCHEMES, Store, open_store
from .store.audit_json import audit_path
from .store.filelock import private_directory

app = typer.Typer(
    name="openclaw-billing",
    help="Operate an openclaw-billing store.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)
PAGE = 500

Source = Annotated[str, typer.Option("--from", help="Store URL or JSON path to read.")]
Target = Annotated[str, typer.Option("--to", help="Store URL or JSON path to write.")]
IntoNonEmpty = Annotated[
    bool,
    typer.Option("--into-non-empty", help="Allow a target that already holds clients."),
]


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


def _records(store: Store) -> list[ClientRecord]:
    first, total = store.list_clients(limit=PAGE)
    records = list(first)
    while len(records) < total:
        page, _ = store.list_clients(offset=len(records), limit=PAGE)
        if not page:
            break
        records.extend(page)
    return records


def copy_store(source: Store, target: Store, *, into_non_empty: bool = False) -> int:
    """Copy every client and Stripe event id from ``source`` to ``target``, then verify.
    Returns the number of clients copied; raises ``BillingError`` on refusal or mismatch."""
    _, existing = target.list_clients(limit=1)
    if existing and not into_non_empty:
        raise ConfigurationError(
            f"The target {target.location} already holds {existing} clients; "
            "pass --into-non-empty to add to it"
        )
    for _ in source.audit.export():  # a damaged audit log stops the copy before it starts
        pass
    records = _records(source)
    with Progress(
        TextColumn("[bold]copying clients"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("copy", total=len(records))
        for record in records:
            try:
                target.create_client(record)
            except DuplicateClient:
                raise DuplicateClient(
                    f"Client {record.client_id} (or its key) already exists in the target"
                ) from None
            progress.advance(task)
    events = source.stripe_event_ids()
    if events:
        target.import_stripe_event_ids(events)
    verify_copy(source, target, records)
    audited = copy_audit(source.audit, target.audit)
    console.print(f"copied and verified {audited} audit events")
    return len(records)


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
    copied = {r.client_id: r for r in _records(target)}
    for record in records:
        other = copied.get(record.client_id)
        if other is None or fingerprint(other) != fingerprint(record):
            raise ConfigurationError(
                f"Verification failed for client {record.client_id}: the target differs"
            )
    missing = set(source.stripe_event_ids()) - set(target.stripe_event_ids())
    if missing:
        raise ConfigurationError(f"Verification failed: {len(missing)} Stripe event ids missing")


class CliError(Exception):
    """A refusal or failure to report as one line (no traceback), with status 1."""


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
            raise CliError(f"The source {path} does not exist (or is not a file)")
        if path.stat().st_size == 0:
            raise CliError(f"The source {path} is empty: it holds no billing store")
        return
    scheme = url.partition("://")[0]
    if scheme not in SQL_SCHEMES:
        return  # open_store names the unsupported scheme
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CliError(f"The source URL cannot be parsed: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or not Path(database).is_file():
            raise CliError(f"The source SQLite database {database or '(none)'} does not exist")
        # An existing file may still hold no store (an empty file): read its tables below.
    engine = create_engine(parsed)
    try:
        with engine.connect() as conn:
            found = inspect(conn).has_table("openclaw_schema_version")
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CliError(
            f"Cannot read the source {parsed.render_as_string(hide_password=True)}: {reason}"
        ) from None
    finally:
        engine.dispose()
    if not found:
        raise CliError(
            f"The source {parsed.render_as_string(hide_password=True)} holds no billing store "
            "(no openclaw_* tables)"
        )


def _copy(source_url: str, target_url: str, into_non_empty: bool) -> tuple[int, int]:
    """Copy and verify; returns the clients copied and the credits the target holds."""
    check_source_exists(source_url)
    source = open_store(source_url)
    try:
        target = open_store(target_url)
        try:
            count = copy_store(source, target, into_non_empty=into_non_empty)
            total = sum(r.credits_remaining or 0 for r in _records(target))
        finally:
            target.close()
    finally:
        source.close()
    return count, total


def _report(count: int, total: int, location: str) -> None:
    console.print(
        f"[green]copied {count} clients[/green] to {location}; verified digests, plans, "
        f"balances ({total} credits in all) and ledgers",
        soft_wrap=True,
    )


def _fail(exc: BaseException) -> typer.Exit:
    message = exc.message if isinstance(exc, BillingError) else str(exc)
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


#: What a copy can fail with that is reported as one line, not a traceback.
_EXPECTED = (CliError, BillingError, ConfigurationError, OSError, SQLAlchemyError, ValueError)


def _run(source_url: str, target_url: str, into_non_empty: bool) -> None:
    try:
        count, total = _copy(source_url, target_url, into_non_empty)
        location = open_location(target_url)
    except _EXPECTED as exc:
        raise _fail(exc) from None
    _report(count, total, location)


def open_location(url: str) -> str:
    """How a store URL is shown (a JSON path as ``json://``, a password hidden)."""
    path = json_path(url)
    if path is not None:
        return f"json://{path.absolute()}"
    return make_url(url).render_as_string(hide_password=True)


def _version(value: bool) -> None:
    if value:
        try:
            installed = version("openclaw-billing")
        except PackageNotFoundError:
            installed = "unknown (not installed)"
        typer.echo(f"openclaw-billing {installed}")
        raise typer.Exit()


@app.callback()
def cli(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the installed version and exit.",
        ),
    ] = False,
) -> None:
    """Operate an openclaw-billing store: migrate, export and import between backends."""


@app.command()
def migrate(source: Source, target: Target, into_non_empty: IntoNonEmpty = False) -> None:
    """Copy a store to another backend (JSON, SQLite, PostgreSQL), then verify it."""
    _run(source, target, into_non_empty)


Force = Annotated[
    bool,
    typer.Option("--force", help="Replace an existing file (once the new export is verified)."),
]


@app.command("export")
def export_json(source: Source, target: Target, force: Force = False) -> None:
    """Write a store to a new JSON file (a portable backup)."""
    path = json_path(target)
    try:
        if path is None:
            raise CliError(f"export writes a JSON file: {target} is not a path")
        if path.is_dir():
            raise CliError(f"{path} is a directory")
        if path.exists() and not force:
            raise CliError(f"{path} exists; pass --force to replace it")
        check_source_exists(source)
        private_directory(path.parent)
        count, total = _export_replacing(source, path)
    except _EXPECTED as exc:
        raise _fail(exc) from None
    _report(count, total, f"json://{path.absolute()}")


def _export_replacing(source: str, path: Path) -> tuple[int, int]:
    """Export into a fresh file beside ``path``, then move it (and its audit log) over
    ``path``: an existing backup is replaced only by a complete, verified one."""
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.export-", dir=path.parent))
    try:
        fresh = staging / path.name
        count, total = _copy(source, str(fresh), into_non_empty=False)
        fresh_audit, old_audit = audit_path(fresh), audit_path(path)
        if fresh_audit.exists():
            os.replace(fresh_audit, old_audit)
        else:  # the replaced export's audit log belongs to it, not to this one
            old_audit.unlink(missing_ok=True)
        os.replace(fresh, path)
        return count, total
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@app.command("import")
def import_json(source: Source, target: Target, into_non_empty: IntoNonEmpty = False) -> None:
    """Load a JSON store (an export, or the original module's file) into a backend."""
    _run(source, target, into_non_empty)


def main() -> None:
    app()
