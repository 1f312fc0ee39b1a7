"""The audit log: an append-only record of admin actions and authentication failures.

Each event says when (``at``, UTC), what (``action``), about which client (``client_id``, if
any), who (``actor``: ``admin``, ``console``, ``client:<id>``, ``anonymous``, or ``sweeper``
for a hold the sweeper released), from where (``source``, the resolved client address) and a
few non-secret facts (``detail``). The log assigns each event an integer ``id``, strictly
increasing in the order of appends; queries answer newest first.

There is no API to change or delete an event: :class:`AuditLog` has ``append``, ``query``,
``export`` and ``import_events`` (migration) only. Retention is forever; an operator prunes
out of band (see CLIENT_AUTH_INTEGRATION.md, "Audit log").

**No secret is ever stored.** :class:`NewAuditEvent` refuses, at construction:

* any string (client id, actor, source, detail value) containing something that looks like a
  client key (``oc_live_`` and 8 or more hex characters; the 4-hex display prefix
  ``oc_live_1a2b`` is allowed) or a Stripe secret (``sk_live_``, ``sk_test_``, ``rk_...``,
  ``whsec_``);
* any detail key naming a secret: a word ``token``, ``secret``, ``password``, ``passwd``,
  ``passphrase``, ``authorization``, ``credential(s)``, ``cookie`` or ``signature``, or a last
  word ``key`` (``key``, ``api_key``, ``client_key``; ``key_id`` and ``key_prefix`` are fine);
* detail values other than short scalars or short lists of them (bounded size), so a record
  or a request body can never be dumped into the log.

The admin token cannot be recognised by its shape, which is why detail keys naming a secret are
refused and callers pass only facts they chose (amounts, plans, key ids), never request data.

Nothing here imports FastAPI or a storage backend.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from .models import UtcDatetime

__all__ = [
    "ADMIN_ACTOR",
    "ANONYMOUS_ACTOR",
    "CONSOLE_ACTOR",
    "MAX_DETAIL_BYTES",
    "MAX_QUERY_LIMIT",
    "MAX_QUERY_OFFSET",
    "MAX_SOURCE_LENGTH",
    "SWEEPER_ACTOR",
    "AuditAction",
    "AuditEvent",
    "AuditLog",
    "AuditQuery",
    "DetailValue",
    "NewAuditEvent",
    "client_actor",
    "looks_secret",
]


class AuditAction(StrEnum):
    """What happened. The values are stable: they are stored and filtered on."""

    CLIENT_CREATE = "client.create"
    CLIENT_CREDITS = "client.credits"
    CLIENT_DEACTIVATE = "client.deactivate"
    CLIENT_REACTIVATE = "client.reactivate"
    CLIENT_PLAN_CHANGE = "client.plan_change"
    #: A client's rate limit or IP allowlist changed.
    CLIENT_POLICY = "client.policy"
    KEY_ISSUE = "key.issue"
    KEY_ROTATE = "key.rotate"
    KEY_REVOKE = "key.revoke"
    #: A key's expiry was set or changed.
    KEY_EXPIRY = "key.expiry"
    #: A missing, malformed, unknown, revoked or expired client key was presented.
    AUTH_KEY_FAILED = "auth.key_failed"
    #: A wrong or missing admin token was presented.
    AUTH_ADMIN_FAILED = "auth.admin_failed"
    #: A valid key from an address outside the client's IP allowlist.
    AUTH_IP_DENIED = "auth.ip_denied"
    #: Authentication attempts from an address were throttled.
    AUTH_THROTTLED = "auth.throttled"
    #: The operator signed in to the console with the admin token, or signed out.
    CONSOLE_SIGN_IN = "console.sign_in"
    CONSOLE_SIGN_OUT = "console.sign_out"
    #: A client signed in to the portal with one of its keys, or signed out.
    PORTAL_SIGN_IN = "portal.sign_in"
    PORTAL_SIGN_OUT = "portal.sign_out"
    #: A job's runner reported its progress or end (its hold settled when it ended).
    JOB_OUTCOME = "job.outcome"
    #: A client cancelled its queued job (its hold released).
    JOB_CANCEL = "job.cancel"
    #: A job's hold outlived its time to live: released by the sweeper, the job expired.
    JOB_EXPIRE = "job.expire"


ADMIN_ACTOR = "admin"
#: The operator acting through the console's pages (the admin API's actor is ``admin``).
CONSOLE_ACTOR = "console"
ANONYMOUS_ACTOR = "anonymous"
#: A worker's hold sweeper, expiring the holds that outlived their time to live.
SWEEPER_ACTOR = "sweeper"


def client_actor(client_id: str) -> str:
    """The actor of something a client did with its own key."""
    return f"client:{client_id}"


#: Bounds that keep one event small (one line of the JSON log, one row in SQL).
MAX_DETAIL_KEYS = 20
MAX_DETAIL_LIST = 100  # an IP allowlist holds up to 100 entries
MAX_DETAIL_STRING = 500
MAX_DETAIL_BYTES = 8192
MAX_SOURCE_LENGTH = 100
MAX_QUERY_LIMIT = 1000
#: Far beyond any real log; keeps a page request within what every backend can count to.
MAX_QUERY_OFFSET = 1_000_000_000

_SECRET_VALUE = re.compile(r"oc_live_[0-9a-f]{8}|(?:sk|rk)_(?:live|test)_|whsec_", re.IGNORECASE)
_SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "authorization",
        "credential",
        "credentials",
        "cookie",
        "signature",
    }
)
_DETAIL_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ACTOR = re.compile(r"^(?:admin|console|anonymous|sweeper|client:[^\s]{1,100})$")

DetailScalar = str | int | float | bool | None
DetailValue = DetailScalar | list[DetailScalar]


def looks_secret(value: str) -> bool:
    """True when ``value`` contains something shaped like a client key or a Stripe secret."""
    return _SECRET_VALUE.search(value) is not None


def _secret_key_name(name: str) -> bool:
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    return not words or words[-1] == "key" or any(w in _SECRET_WORDS for w in words)


def _no_secret(value: str | None) -> str | None:
    if value is not None and looks_secret(value):
        raise ValueError("looks like a secret (an API key or a Stripe secret); never audited")
    return value


def _check_scalar(key: str, value: object) -> None:
    if isinstance(value, str):
        if len(value) > MAX_DETAIL_STRING:
            raise ValueError(f"detail[{key!r}] is longer than {MAX_DETAIL_STRING} characters")
        if looks_secret(value):
            raise ValueError(f"detail[{key!r}] looks like a secret; never audited")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"detail[{key!r}] is not a finite number")
    elif value is not None and not isinstance(value, bool | int):
        raise ValueError(f"detail[{key!r}] must be a string, number, boolean or null")


class NewAuditEvent(BaseModel):
    """An event to append; the log assigns its ``id``. Refuses secrets (see the module)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: UtcDatetime
    action: AuditAction
    client_id: Annotated[str | None, StringConstraints(min_length=1, max_length=100)] = None
    actor: str = Field(
        max_length=110,
        description='"admin", "console", "client:<id>", "anonymous" or "sweeper".',
    )
    source: str = Field(
        min_length=1,
        max_length=MAX_SOURCE_LENGTH,
        description="The client address the request came from.",
    )
    detail: dict[str, DetailValue] = Field(
        default_factory=dict, description="A few non-secret facts about the action."
    )

    @field_validator("client_id", "source")
    @classmethod
    def _string_no_secret(cls, value: str | None) -> str | None:
        return _no_secret(value)

    @field_validator("actor")
    @classmethod
    def _valid_actor(cls, value: str) -> str:
        if _ACTOR.fullmatch(value) is None:
            raise ValueError(
                'actor must be "admin", "console", "anonymous", "sweeper" or "client:<id>"'
            )
        _no_secret(value)
        return value

    @field_validator("detail")
    @classmethod
    def _small_and_secret_free(cls, detail: dict[str, DetailValue]) -> dict[str, DetailValue]:
        if len(detail) > MAX_DETAIL_KEYS:
            raise ValueError(f"detail has more than {MAX_DETAIL_KEYS} keys")
        for key, value in detail.items():
            if _DETAIL_KEY.fullmatch(key) is None:
                raise ValueError(f"detail key {key!r} must be snake_case, at most 64 characters")
            if _secret_key_name(key):
                raise ValueError(f"detail key {key!r} names a secret; never audited")
            if isinstance(value, list):
                if len(value) > MAX_DETAIL_LIST:
                    raise ValueError(f"detail[{key!r}] has more than {MAX_DETAIL_LIST} items")
                for item in value:
                    _check_scalar(key, item)
            else:
                _check_scalar(key, value)
        if len(json.dumps(detail)) > MAX_DETAIL_BYTES:
            raise ValueError(f"detail is larger than {MAX_DETAIL_BYTES} bytes as JSON")
        return detail


class AuditEvent(NewAuditEvent):
    """A recorded event: what was appended, with the id the log gave it."""

    id: int = Field(ge=1, description="Assigned by the log; strictly increasing.")

    def fact(self) -> NewAuditEvent:
        """The event without its id (what migration copies)."""
        return NewAuditEvent.model_validate(self.model_dump(exclude={"id"}))


@dataclass(frozen=True, kw_only=True)
class AuditQuery:
    """Which events a query asks for (all filters optional; ``since <= at < until``) and
    which page of them, newest first: ``limit`` events after skipping ``offset``."""

    client_id: str | None = None
    action: AuditAction | None = None
    since: datetime | None = None
    until: datetime | None = None
    offset: int = 0
    limit: int = 100

    def check(self) -> None:
        """Raise ``ValueError`` for a page or time range no backend should be asked for."""
        if not 0 <= self.offset <= MAX_QUERY_OFFSET:
            raise ValueError(f"offset must be between 0 and {MAX_QUERY_OFFSET}")
        if not 0 <= self.limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be between 0 and {MAX_QUERY_LIMIT}")
        for name, value in (("since", self.since), ("until", self.until)):
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")


class AuditLog(ABC):
    """Append-only storage of audit events. Safe to share between threads, and between
    processes that open the same location. There is deliberately no update or delete."""

    #: A short, secret-free description of where the events live.
    location: str

    @abstractmethod
    def append(self, event: NewAuditEvent) -> AuditEvent:
        """Record ``event`` durably (it survives a crash once this returns) and return it with
        its id, greater than every id before it. Raises ``StoreUnavailable`` if it cannot."""

    def query(
        self,
        *,
        client_id: str | None = None,
        action: AuditAction | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[AuditEvent], int]:
        """One page of the events that match, newest (highest id) first, and how many match.

        ``since`` is inclusive and ``until`` exclusive (``since <= at < until``); both must be
        timezone-aware. Raises ``ValueError`` for a bad page (see :meth:`AuditQuery.check`)
        and ``StoreCorrupt`` when stored events cannot be read."""
        wanted = AuditQuery(
            client_id=client_id, action=action, since=since, until=until, offset=offset, limit=limit
        )
        wanted.check()
        return self._query(wanted)

    @abstractmethod
    def _query(self, wanted: AuditQuery) -> tuple[list[AuditEvent], int]:
        """What :meth:`query` answers, for a query already checked (each backend's own)."""

    @abstractmethod
    def export(self) -> Iterator[AuditEvent]:
        """Every event, oldest (lowest id) first, streamed (for migration)."""

    @abstractmethod
    def import_events(self, events: Iterable[NewAuditEvent]) -> int:
        """Append ``events`` in the order given (for migration): they get new ids after every
        existing one, their other fields unchanged. Returns how many were appended."""
