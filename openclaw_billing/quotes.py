"""Job quotes: the price of a job, promised for a while (issue 15, "charge by outcome").

A quote prices a job by the client's plan (:meth:`~.plans.Plan.price`, by task type and
priority; 1 credit by default) and hands back a **quote id**: a signed, self-contained token
that binds the client, the task type, the priority, the price in credits and the expiry. No
store holds quotes: :func:`honour` checks the signature and the binding and returns the price,
so the intake can reserve exactly what was quoted, even if the plan's prices changed since.

* **Validity.** :data:`QUOTE_TTL` (15 minutes) from the quote, to the second: a quote id is
  honoured while ``now`` is before its ``expires_at``; at and after it, ``409 quote_expired``.
* **Signature.** itsdangerous (HMAC-SHA256) under ``Settings.signing_secret``: the secret of
  the session cookies (``OPENCLAW_SESSION_SECRET``, else derived from ``OPENCLAW_ADMIN_TOKEN``)
  with a salt of its own, so a quote never verifies as a cookie or a cookie as a quote. With
  neither setting there is no default: quoting answers ``503 quotes_not_configured``.
  Changing the secret voids every outstanding quote (``422 invalid_quote``).
* **What it binds.** A digest of the client id (so every quote id has the same bounded length,
  whatever the id), the task type, the priority, the credits and the expiry. A quote id is no
  secret: it is useless to another client, and its fields can be read but not changed.
* **Time** comes from the caller (the service resolves it with :func:`.cycles.resolve_now`,
  which refuses a time without a zone), so tests freeze the clock.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal, cast, get_args

from itsdangerous import BadData, URLSafeSerializer
from pydantic import StringConstraints

from .cycles import resolve_now, utcnow
from .errors import InvalidQuote, InvalidRequest, QuoteExpired, QuotesNotConfigured
from .models import ClientRecord
from .plans import MAX_JOB_CREDITS, Plan, get_plan
from .settings import Settings, get_settings

#: How long a quote is honoured after it is made.
QUOTE_TTL: Final = timedelta(minutes=15)

#: A job's task type and priority, as the job body has them (the quote body takes the same).
TASK_TYPE_PATTERN: Final = r"^[a-z][a-z0-9_]{0,49}$"
DEFAULT_TASK_TYPE: Final = "feature_build"
Priority = Literal["P0", "P1", "P2", "P3"]
PRIORITIES: Final[tuple[str, ...]] = get_args(Priority)
DEFAULT_PRIORITY: Final = "P2"

#: Every quote id starts with this (it names the format: a later one gets another prefix).
QUOTE_ID_PREFIX: Final = "oc_quote_"
#: The longest quote id read (the ones made here are about 150 characters).
MAX_QUOTE_ID_LENGTH: Final = 512
#: What a quote id may look like at the edge: one line of URL-safe characters.
QUOTE_ID_PATTERN: Final = rf"^{QUOTE_ID_PREFIX}[A-Za-z0-9_.-]+$"
#: A quote id in a request body (for the intake's ``quote_id``).
QuoteId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_QUOTE_ID_LENGTH, pattern=QUOTE_ID_PATTERN),
]

_SALT: Final = "openclaw-billing.quote"
_FORMAT: Final = 1
_TASK_TYPE = re.compile(TASK_TYPE_PATTERN)
_QUOTE_ID = re.compile(QUOTE_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class Quote:
    quote_id: str
    #: The price of the job in credits (what the intake reserves with this quote id).
    credits: int
    task_type: str
    priority: Priority
    #: When the quote stops being honoured (UTC, whole seconds).
    expires_at: datetime


def quote_secret(settings: Settings) -> bytes:
    """The key quotes are signed with; raises :class:`QuotesNotConfigured` without one."""
    secret = settings.signing_secret
    if secret is None:
        raise QuotesNotConfigured()
    return secret


def make_quote(
    client_id: str,
    plan: Plan,
    task_type: str,
    priority: str,
    now: datetime,
    *,
    secret: bytes | None = None,
) -> Quote:
    """The price of a job of ``task_type`` and ``priority`` for ``client_id`` on ``plan``,
    with its quote id, valid for :data:`QUOTE_TTL` from ``now``. ``secret``: the signing key
    (by default the settings', :func:`quote_secret`). A task type or priority a job cannot
    have is ``InvalidRequest``."""
    if not isinstance(task_type, str) or not _TASK_TYPE.match(task_type):
        raise InvalidRequest(f"task_type must match {TASK_TYPE_PATTERN}")
    if priority not in PRIORITIES:
        raise InvalidRequest(f"priority must be one of {', '.join(PRIORITIES)}")
    checked = cast(Priority, priority)
    now = resolve_now(now)
    credits = plan.price(task_type, priority)
    expires = int((now + QUOTE_TTL).timestamp())
    payload = [_FORMAT, _client_digest(client_id), task_type, priority, credits, expires]
    token = QUOTE_ID_PREFIX + _serializer(secret).dumps(payload)
    return Quote(token, credits, task_type, checked, datetime.fromtimestamp(expires, UTC))


def honour(
    quote_id: str,
    client_id: str,
    task_type: str,
    priority: str,
    now: datetime,
    *,
    secret: bytes | None = None,
) -> int:
    """The credits ``quote_id`` promised for this job of ``client_id``: raises
    :class:`InvalidQuote` for a quote id that is malformed, not signed here (or altered), of
    another client, or for another task type or priority, and :class:`QuoteExpired` from its
    ``expires_at`` on."""
    now = resolve_now(now)
    quoted = _read(quote_id, secret)
    digest, quoted_type, quoted_priority, credits, expires = quoted
    if digest != _client_digest(client_id):
        raise InvalidQuote("The quote id was made for another client; ask for your own quote")
    if task_type != quoted_type:
        raise InvalidQuote(
            f"The quote is for task type {quoted_type!r} and this job's task type differs; "
            "ask for a quote for this job"
        )
    if priority != quoted_priority:
        raise InvalidQuote(
            f"The quote is for priority {quoted_priority} and this job's priority differs; "
            "ask for a quote for this job"
        )
    if now.timestamp() >= expires:
        expired_at = datetime.fromtimestamp(expires, UTC).isoformat()
        raise QuoteExpired(
            f"The quote expired at {expired_at}; ask for a new quote (POST /api/billing/quote)"
        )
    return credits


def _read(quote_id: object, secret: bytes | None) -> tuple[str, str, str, int, int]:
    """The fields a quote id binds, once its shape and signature are checked."""
    if (
        not isinstance(quote_id, str)
        or len(quote_id) > MAX_QUOTE_ID_LENGTH
        or not _QUOTE_ID.match(quote_id)
    ):
        raise InvalidQuote(
            f"The quote id is malformed: {QUOTE_ID_PREFIX} and at most "
            f"{MAX_QUOTE_ID_LENGTH} URL-safe characters, as POST /api/billing/quote answers it"
        )
    try:
        payload = _serializer(secret).loads(quote_id.removeprefix(QUOTE_ID_PREFIX))
    except BadData:
        raise InvalidQuote(
            "The quote id is not one this gateway issued, or it was altered; ask for a new quote"
        ) from None
    match payload:
        case [1, str(digest), str(kind), str(priority), int(credits), int(expires)] if (
            0 < credits <= MAX_JOB_CREDITS
        ):
            return digest, kind, priority, credits, expires
    # Signed here but not in this format: a format of another release.
    raise InvalidQuote("The quote id is of a format this gateway does not read; ask for a new one")


def _serializer(secret: bytes | None) -> URLSafeSerializer:
    key = quote_secret(get_settings()) if secret is None else secret
    return URLSafeSerializer(key, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256})


def _client_digest(client_id: str) -> str:
    return hashlib.sha256(client_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class QuoteActions:
    """The service's quote actions (mixed into :class:`~.service.BillingService`): nothing is
    read from or written to the store, the client's record says its plan."""

    def quote(
        self,
        client: ClientRecord,
        task_type: str = DEFAULT_TASK_TYPE,
        priority: str = DEFAULT_PRIORITY,
        *,
        now: datetime | None = None,
    ) -> Quote:
        """The price of a job for ``client`` on its plan now, with its quote id (see
        :func:`make_quote`). Raises ``QuotesNotConfigured`` without a signing secret."""
        at = resolve_now(now, utcnow)
        return make_quote(client.client_id, get_plan(client.plan), task_type, priority, at)

    def honour_quote(
        self,
        quote_id: str,
        client_id: str,
        task_type: str,
        priority: str,
        *,
        now: datetime | None = None,
    ) -> int:
        """The credits ``quote_id`` promised for this job (see :func:`honour`): what the
        intake reserves. Raises ``InvalidQuote`` or ``QuoteExpired``."""
        return honour(quote_id, client_id, task_type, priority, resolve_now(now, utcnow))
