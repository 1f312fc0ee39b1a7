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

The copying and its verification are :mod:`openclaw_billing.store.migrate` (usable without a
terminal); this module parses the command line and shows progress and results.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import SQLAlchemyError

from .errors import BillingError, ConfigurationError
from .store import migrate as migration
from .store.files import private_directory
from .store.migrate import CopyResult, MigrationError, json_path, open_location

app = typer.Typer(
    name="openclaw-billing",
    help="Operate an openclaw-billing store.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

Source = Annotated[str, typer.Option("--from", help="Store URL or JSON path to read.")]
Target = Annotated[str, typer.Option("--to", help="Store URL or JSON path to write.")]
IntoNonEmpty = Annotated[
    bool,
    typer.Option("--into-non-empty", help="Allow a target that already holds clients."),
]


@contextmanager
def _progress() -> Iterator[migration.Progress]:
    """A progress bar on stderr, shown from the copy's first call of its progress callback
    (a refusal before the copy starts prints only its error line)."""
    bar = Progress(
        TextColumn("[bold]copying clients"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = None

    def advance(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("copy", total=total)
        bar.update(task, completed=done)

    try:
        yield advance
    finally:
        if task is not None:
            bar.stop()


def _report(result: CopyResult, location: str) -> None:
    console.print(f"copied and verified {result.audit_events} audit events")
    console.print(
        f"[green]copied {result.clients} clients[/green] to {location}; verified digests, "
        f"plans, balances ({result.credits} credits in all) and ledgers",
        soft_wrap=True,
    )


def _fail(exc: BaseException) -> typer.Exit:
    message = exc.message if isinstance(exc, BillingError) else str(exc)
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


#: What a copy can fail with that is reported as one line, not a traceback.
_EXPECTED = (MigrationError, BillingError, ConfigurationError, OSError, SQLAlchemyError, ValueError)


def _run(source_url: str, target_url: str, into_non_empty: bool) -> None:
    try:
        with _progress() as progress:
            result = migration.copy(
                source_url, target_url, into_non_empty=into_non_empty, progress=progress
            )
        location = open_location(target_url)
    except _EXPECTED as exc:
        raise _fail(exc) from None
    _report(result, location)


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
            raise MigrationError(f"export writes a JSON file: {target} is not a path")
        if path.is_dir():
            raise MigrationError(f"{path} is a directory")
        if path.exists() and not force:
            raise MigrationError(f"{path} exists; pass --force to replace it")
        migration.check_source_exists(source)
        private_directory(path.parent)
        with _progress() as progress:
            result = migration.export_replacing(source, path, progress=progress)
    except _EXPECTED as exc:
        raise _fail(exc) from None
    _report(result, f"json://{path.absolute()}")


@app.command("import")
def import_json(source: Source, target: Target, into_non_empty: IntoNonEmpty = False) -> None:
    """Load a JSON store (an export, or the original module's file) into a backend."""
    _run(source, target, into_non_empty)


def main() -> None:
    app()
