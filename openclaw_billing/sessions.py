"""Sign-in sessions of the operator console and the client portal, kept server-side.

A browser signs in once (the admin token, or a client's API key) and then holds a session
cookie: a random token, signed by :mod:`openclaw_billing.web.security`. The store keeps only
the token's SHA-256 digest with what the session is for, so:

* signing out deletes the session: the cookie stops working on every worker and instance at
  once, and a copy of it (a stolen cookie, the browser's back button) is refused;
* a session's lifetime is bounded (``expires_at``) and checked on every request;
* a leaked copy of the store holds no usable session (digests only), like the keys.

Sessions are disposable: they are not migrated between backends or exported, and a sessions
file that cannot be read is started afresh (everyone signs in again) rather than stopping the
service. Each subject keeps at most :data:`MAX_SESSIONS_PER_SUBJECT` live sessions (a new
sign-in past it ends the oldest), and expired ones are deleted when a new one is created, so the
table stays bounded.

Nothing here imports FastAPI or a storage backend.
"""

from __future__ import annotations

import hashlib
import secrets
from abc import ABC, abstractmethod
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from .models import UtcDatetime

#: Live sessions one subject (the operator, or one client) may hold at once.
MAX_SESSIONS_PER_SUBJECT = 20
#: Bytes of randomness in a session token (256 bits).
TOKEN_BYTES = 32

Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class SessionKind(StrEnum):
    """Which side a session opens; a session of one kind is refused by the other."""

    CONSOLE = "console"
    PORTAL = "portal"


#: The subject of every console session: there is one operator identity, the admin token.
CONSOLE_SUBJECT = "admin"


class Session(BaseModel):
    """One signed-in browser. ``subject`` is :data:`CONSOLE_SUBJECT` or a client id;
    ``key_id`` is the key a portal session signed in with (the session ends with the key);
    ``binding`` ties a console session to the admin token it was opened with (a digest of it),
    so changing the token ends every console session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    digest: Digest
    kind: SessionKind
    subject: str = Field(min_length=1, max_length=100)
    key_id: str | None = Field(default=None, pattern=r"^key_[0-9a-f]{12}$")
    binding: str | None = Field(default=None, max_length=64)
    created_at: UtcDatetime
    expires_at: UtcDatetime

    def live(self, now: datetime) -> bool:
        return now < self.expires_at


def new_token() -> str:
    """A fresh session token (URL-safe text); only its digest is stored."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionStore(ABC):
    """Where sessions live: beside the billing store, on the same backend."""

    @abstractmethod
    def create(self, session: Session, now: datetime) -> None:
        """Store a new session; delete expired ones, and the subject's oldest sessions past
        :data:`MAX_SESSIONS_PER_SUBJECT`. Raises ``StoreUnavailable``."""

    @abstractmethod
    def get(self, digest: str, now: datetime) -> Session | None:
        """The live session with this digest, or None (unknown, ended or expired)."""

    @abstractmethod
    def end(self, digest: str) -> None:
        """Delete the session (sign out); ending an unknown session changes nothing."""

    @abstractmethod
    def end_subject(self, kind: SessionKind, subject: str) -> int:
        """Delete every session of ``subject`` of this kind; returns how many there were."""


def keep_bounded(sessions: list[Session], new: Session, now: datetime) -> list[Session]:
    """``sessions`` without expired ones, plus ``new``, without the subject's oldest sessions
    past the cap: what both backends keep after :meth:`SessionStore.create`."""
    live = [s for s in sessions if s.live(now) and s.digest != new.digest]
    mine = sorted(
        (s for s in live if s.kind == new.kind and s.subject == new.subject),
        key=lambda s: s.created_at,
    )
    dropped = {s.digest for s in mine[: max(0, len(mine) + 1 - MAX_SESSIONS_PER_SUBJECT)]}
    return [s for s in live if s.digest not in dropped] + [new]
