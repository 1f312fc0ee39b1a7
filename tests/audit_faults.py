"""Faults injected into a store's two writes of an admin action: the change, and its audit event.

* :func:`audit_refused`: the audit log cannot take an event. JSON: a directory stands where its
  file should be (the log cannot be opened); SQL: a trigger refuses every insert into
  ``openclaw_audit_log`` (on PostgreSQL an error raised by the trigger, on SQLite a
  ``RAISE(ABORT)``), after the change's own statements ran in the same transaction.
* :func:`change_refused`: the change cannot be written. JSON: the append to the store's journal
  fails as a full disk would (``ENOSPC``); SQL: a trigger refuses every insert into and update
  of ``openclaw_clients``.

Both undo themselves on exit, so a test can retry the action on the repaired store.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine

from openclaw_billing.store import Store, json_replica
from openclaw_billing.store.audit_json import audit_path
from openclaw_billing.store.json_file import JsonFileStore

__all__ = ["audit_refused", "change_refused"]

_PG_FUNCTION = (
    "CREATE OR REPLACE FUNCTION openclaw_test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
)


@contextmanager
def _trigger(url: str, table: str, events: tuple[str, ...]) -> Iterator[None]:
    """SQL: triggers that refuse ``events`` (``INSERT``, ``UPDATE``) on ``table``."""
    engine = create_engine(url)
    names = [f"openclaw_test_refuse_{table}_{event.lower()}" for event in events]
    try:
        with engine.begin() as conn:
            for name, event in zip(names, events, strict=True):
                if engine.dialect.name == "postgresql":
                    conn.exec_driver_sql(_PG_FUNCTION)
                    conn.exec_driver_sql(
                        f"CREATE TRIGGER {name} BEFORE {event} ON {table} "
                        "FOR EACH ROW EXECUTE FUNCTION openclaw_test_refuse()"
                    )
                else:
                    conn.exec_driver_sql(
                        f"CREATE TRIGGER {name} BEFORE {event} ON {table} "
                        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                    )
        yield
        with engine.begin() as conn:
            for name in names:
                suffix = f" ON {table}" if engine.dialect.name == "postgresql" else ""
                conn.exec_driver_sql(f"DROP TRIGGER {name}{suffix}")
    finally:
        engine.dispose()


@contextmanager
def audit_refused(store: Store, url: str) -> Iterator[None]:
    """The store's audit log refuses every event while the block runs."""
    if not isinstance(store, JsonFileStore):
        with _trigger(url, "openclaw_audit_log", ("INSERT",)):
            yield
        return
    path = audit_path(store.path)
    aside = path.with_name(path.name + ".aside")
    if path.exists():
        os.replace(path, aside)
    path.mkdir()
    try:
        yield
    finally:
        path.rmdir()
        if aside.exists():
            os.replace(aside, path)


@contextmanager
def change_refused(store: Store, url: str) -> Iterator[None]:
    """The store refuses to write any client while the block runs."""
    if not isinstance(store, JsonFileStore):
        with _trigger(url, "openclaw_clients", ("INSERT", "UPDATE")):
            yield
        return

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json_replica, "append", disk_full)
        yield
