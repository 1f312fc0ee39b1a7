"""The sign-in sessions of the console and the portal (openclaw_billing/sessions.py), on every
backend: stored by digest, ended for every reader at once, bounded per subject, expired ones
gone."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from openclaw_billing.sessions import (
    MAX_SESSIONS_PER_SUBJECT,
    Session,
    SessionKind,
    new_token,
    token_digest,
)
from openclaw_billing.store import JsonFileStore, Store
from openclaw_billing.store.sessions_json import sessions_path
from tests.backends import reopen, store_fixture, store_url_fixture  # noqa: F401
from tests.store_helpers import T0


def session(
    subject: str = "client-1",
    *,
    kind: SessionKind = SessionKind.PORTAL,
    at: datetime = T0,
    minutes: int = 60,
) -> Session:
    return Session(
        digest=token_digest(new_token()),
        kind=kind,
        subject=subject,
        key_id="key_0123456789ab" if kind == SessionKind.PORTAL else None,
        created_at=at,
        expires_at=at + timedelta(minutes=minutes),
    )


def test_a_session_is_found_by_its_digest_until_it_expires(store: Store) -> None:
    opened = session()
    store.sessions.create(opened, T0)
    assert store.sessions.get(opened.digest, T0 + timedelta(minutes=59)) == opened
    assert store.sessions.get(opened.digest, T0 + timedelta(minutes=60)) is None
    assert store.sessions.get(token_digest("never issued"), T0) is None


def test_signing_out_ends_the_session_for_every_instance(store: Store, store_url: str) -> None:
    opened, other = session(), session()
    store.sessions.create(opened, T0)
    store.sessions.create(other, T0)
    with reopen(store_url) as worker:
        assert worker.sessions.get(opened.digest, T0) == opened
        store.sessions.end(opened.digest)
        assert worker.sessions.get(opened.digest, T0) is None
        assert worker.sessions.get(other.digest, T0) == other
    store.sessions.end(opened.digest)  # ending it again changes nothing


def test_ending_a_subject_ends_only_its_sessions_of_that_kind(store: Store) -> None:
    mine = [session("client-1") for _ in range(3)]
    theirs = session("client-2")
    console = session("client-1", kind=SessionKind.CONSOLE)
    for opened in [*mine, theirs, console]:
        store.sessions.create(opened, T0)
    assert store.sessions.end_subject(SessionKind.PORTAL, "client-1") == 3
    assert all(store.sessions.get(s.digest, T0) is None for s in mine)
    assert store.sessions.get(theirs.digest, T0) == theirs
    assert store.sessions.get(console.digest, T0) == console
    assert store.sessions.end_subject(SessionKind.PORTAL, "client-1") == 0


def test_a_subject_keeps_at_most_the_cap_newest_sessions(store: Store) -> None:
    opened = [
        session("client-1", at=T0 + timedelta(seconds=n))
        for n in range(MAX_SESSIONS_PER_SUBJECT + 2)
    ]
    other = session("client-2")
    store.sessions.create(other, T0)
    for one in opened:
        store.sessions.create(one, one.created_at)
    now = opened[-1].created_at
    live = [s for s in opened if store.sessions.get(s.digest, now) is not None]
    assert live == opened[2:]
    assert store.sessions.get(other.digest, now) == other


def test_expired_sessions_are_deleted_when_one_is_created(store: Store, store_url: str) -> None:
    old = session("client-1", minutes=5)
    store.sessions.create(old, T0)
    later = T0 + timedelta(minutes=10)
    store.sessions.create(session("client-2", at=later), later)
    # Gone from the store itself, not only refused by get: a later clock cannot revive it.
    assert store.sessions.end_subject(SessionKind.PORTAL, "client-1") == 0


def test_an_unreadable_sessions_file_is_read_as_empty(tmp_path: Path) -> None:
    """Sessions are disposable: a damaged file signs everyone out, it never stops the store."""
    store = JsonFileStore(tmp_path / "clients.json")
    opened = session()
    store.sessions.create(opened, T0)
    path = sessions_path(store.path)
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text('{"sessions": [{"digest": "not a digest"}]}')
    assert store.sessions.get(opened.digest, T0) is None
    fresh = session()
    store.sessions.create(fresh, T0)
    assert store.sessions.get(fresh.digest, T0) == fresh


@pytest.mark.parametrize("minutes", [0, -5])
def test_a_session_created_expired_is_never_found(store: Store, minutes: int) -> None:
    dead = session(minutes=minutes)
    store.sessions.create(dead, T0)
    assert store.sessions.get(dead.digest, T0) is None
