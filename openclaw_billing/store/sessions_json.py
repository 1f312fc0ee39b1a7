"""The JSON store's sessions: ``<name>.sessions.json`` beside the store file.

One small JSON document, replaced atomically under its own :class:`FileLock` on each sign-in
and sign-out; read without a lock on every page (a reader sees the old file or the new one,
never a mix). The document is parsed again only when its bytes change.

The file holds digests only. A file that cannot be parsed (edited by hand, a disk fault) is
logged and read as empty: sessions are disposable, so everyone signs in again, and the next
sign-in replaces it.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import StoreUnavailable
from ..sessions import Session, SessionKind, SessionStore, keep_bounded
from .filelock import FileLock
from .files import write_atomic

logger = logging.getLogger("openclaw_billing.store")


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sessions: list[Session]


def sessions_path(store_path: Path) -> Path:
    """Where the sessions of the JSON store at ``store_path`` live (its temporary files never
    match the store's own, which the store sweeps at start)."""
    return store_path.with_name(store_path.stem + ".sessions.json")


class JsonSessionStore(SessionStore):
    def __init__(self, path: Path, *, lock_timeout: float) -> None:
        self.path = path
        self._lock = FileLock(path.with_name(path.name + ".lock"), lock_timeout)
        self._cache_lock = threading.Lock()
        self._raw: bytes | None = None
        self._sessions: dict[str, Session] = {}

    def _read(self) -> dict[str, Session]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreUnavailable(f"Cannot read the sessions file {self.path}: {exc}") from exc
        with self._cache_lock:
            if raw != self._raw:
                try:
                    parsed = _Document.model_validate_json(raw).sessions
                except ValidationError:
                    logger.warning("The sessions file %s is unreadable: read as empty", self.path)
                    parsed = []
                self._raw, self._sessions = raw, {s.digest: s for s in parsed}
            return self._sessions

    def _write(self, sessions: list[Session]) -> None:
        data = _Document(sessions=sessions).model_dump_json().encode("utf-8")
        try:
            write_atomic(self.path, data)  # a temporary file made 0600, renamed into place
        except OSError as exc:
            raise StoreUnavailable(f"Cannot write the sessions file {self.path}: {exc}") from exc

    def create(self, session: Session, now: datetime) -> None:
        with self._lock.hold():
            self._write(keep_bounded(list(self._read().values()), session, now))

    def get(self, digest: str, now: datetime) -> Session | None:
        session = self._read().get(digest)
        return session if session is not None and session.live(now) else None

    def end(self, digest: str) -> None:
        with self._lock.hold():
            sessions = self._read()
            if digest in sessions:
                self._write([s for s in sessions.values() if s.digest != digest])

    def end_subject(self, kind: SessionKind, subject: str) -> int:
        with self._lock.hold():
            sessions = list(self._read().values())
            kept = [s for s in sessions if not (s.kind == kind and s.subject == subject)]
            if len(kept) != len(sessions):
                self._write(kept)
            return len(sessions) - len(kept)
