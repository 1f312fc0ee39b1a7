"""Usage above a plan's allowance, reported to Stripe as billing meter events.

One job's over-allowance credits become one meter event (``POST /v1/billing/meter_events``)
on the meter named by ``STRIPE_METER_EVENT_NAME``, for the client's Stripe customer, dated at
the settlement, so the usage appears on the customer's next invoice. Sending it again is always
safe:

* the event's ``identifier`` is derived from the client id and the job id alone
  (:func:`meter_identifier`), so a retry after a crash or a lost answer is the same event, and
  Stripe, which keeps identifiers unique for at least 24 hours, records it once: a second send
  is refused as a duplicate, which :meth:`MeterReporter.report_usage` counts as done;
* the SDK's ``Idempotency-Key`` is derived from the identifier and the attempt number; a new
  attempt uses a new key, because Stripe replays a stored 5xx to every retry with the same key
  for 24 hours, and the identifier already keeps the event single.

An attempt is one request: the SDK does not retry it (whatever ``STRIPE_MAX_NETWORK_RETRIES``
says), so that its answer tells whether Stripe may hold the event. A retry's answer says
nothing of an earlier request whose answer was lost; the caller's next attempt is the retry.

Every answer is classified in one place (:func:`classify`) into a :class:`MeterOutcome`:
recorded, already recorded, try again later (no answer, ``409``, ``429``, ``5xx``), or refused
for good (any other ``4xx``, with Stripe's error code kept), and :func:`maybe_recorded` tells
the attempts Stripe may have recorded though its answer did not say so: no answer after the
request may have been sent (a timeout, a connection reset), a ``409`` (a request with the key
still running) and a ``5xx`` (Stripe calls a 500's result indeterminate); not a connection
never made (refused, a name not resolved, a connect timeout), a ``429`` (rate limits run
before Stripe's idempotency layer) nor another ``4xx``. What to do with each (mark the report
sent, back off, or park it for an operator) is the caller's: this module keeps no state.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import stripe
import urllib3

from ..cycles import resolve_now
from ..errors import StripeNotConfigured
from ..safetext import is_one_line
from ..settings import Settings
from .client import get_stripe_client

logger = logging.getLogger("openclaw_billing.stripe")

#: What every identifier of ours starts with (Stripe shows it with the event).
IDENTIFIER_PREFIX = "openclaw_usage_"
#: The longest client, job or customer id a report takes.
MAX_ID_LENGTH = 255
#: The most credits one report carries (a 64-bit integer, what the ledger counts in).
MAX_CREDITS = 2**63 - 1
#: How Stripe words a refused duplicate identifier: its API v1 gives no error code for it, only
#: this message (langfuse and neosync match it in production); API v2 names it with the code.
DUPLICATE_MESSAGE_PREFIX = "An event already exists with identifier"
DUPLICATE_CODE = "duplicate_meter_event"
#: The longest Stripe message kept in a result (for logs and an operator's view).
MAX_MESSAGE_LENGTH = 500


class MeterOutcome(StrEnum):
    """Every end of one attempt to report usage."""

    #: Stripe recorded the event (or replayed that answer to the same attempt).
    REPORTED = "reported"
    #: Stripe already holds an event with this identifier: reported by an earlier attempt.
    ALREADY_REPORTED = "already_reported"
    #: No answer, a conflict, a rate limit or a 5xx: send it again later, as the next attempt.
    RETRY_LATER = "retry_later"
    #: Stripe refused the event (bad request, bad key, no permission): sending it again
    #: changes nothing until an operator fixes the cause.
    FAILED = "failed"


#: The outcomes after which the report is done.
DONE = frozenset({MeterOutcome.REPORTED, MeterOutcome.ALREADY_REPORTED})


@dataclass(frozen=True)
class UsageReport:
    """What one attempt came to, and what Stripe said when it refused."""

    outcome: MeterOutcome
    identifier: str
    #: Stripe's HTTP status (None: no answer, or a success).
    http_status: int | None = None
    #: Stripe's error code, or its error type when it gives no code (``authentication_error``).
    code: str | None = None
    #: Stripe's message, cut to :data:`MAX_MESSAGE_LENGTH`.
    message: str | None = None
    #: Whether Stripe may hold the event though its answer did not say so (see the module's
    #: docstring): only a later answer (a duplicate) or an operator can tell.
    maybe_recorded: bool = False

    @property
    def done(self) -> bool:
        """Whether Stripe holds the event: the report need not be sent again."""
        return self.outcome in DONE


def meter_identifier(client_id: str, job_id: str) -> str:
    """The meter event identifier of a job's usage: the same for every send of that job's
    report, different for every other (client, job) pair, and within Stripe's 100 characters
    whatever the ids' length. A line break separates the two ids (no id holds one), so no
    two pairs share an input."""
    digest = hashlib.sha256(f"{client_id}\n{job_id}".encode()).hexdigest()
    return IDENTIFIER_PREFIX + digest


def idempotency_key(identifier: str, attempt: int) -> str:
    """The ``Idempotency-Key`` of one attempt to send the event ``identifier``."""
    return f"{identifier}-{attempt}"


def is_duplicate_identifier(exc: stripe.StripeError) -> bool:
    """Whether Stripe refused the event because it already holds one with its identifier."""
    if not isinstance(exc, stripe.InvalidRequestError) or exc.http_status != 400:
        return False
    message = exc.user_message or ""
    return exc.code == DUPLICATE_CODE or message.startswith(DUPLICATE_MESSAGE_PREFIX)


def classify(exc: stripe.StripeError) -> MeterOutcome:
    """The outcome of an attempt Stripe answered with an error (or did not answer)."""
    if is_duplicate_identifier(exc):
        return MeterOutcome.ALREADY_REPORTED
    status = exc.http_status
    if status is None or status in (409, 429) or status >= 500:
        return MeterOutcome.RETRY_LATER
    return MeterOutcome.FAILED


#: What the HTTP library (``requests`` on ``urllib3``, as :mod:`.client` builds it) raises,
#: as the cause of a connection error, when no connection was made: nothing was sent.
_NOT_CONNECTED: tuple[type[BaseException], ...] = (
    urllib3.exceptions.NewConnectionError,  # refused, unreachable, a name not resolved
    urllib3.exceptions.ConnectTimeoutError,  # no connection within the timeout
    ConnectionRefusedError,
    # Stripe's certificate refused: the TLS handshake failed before any request was sent.
    ssl.SSLCertVerificationError,
)


def maybe_recorded(exc: stripe.StripeError) -> bool:
    """Whether Stripe may have recorded the event of a request answered with ``exc`` (or
    not answered): see the module's docstring. A connection error counts as never sent only
    when its cause says the connection was never made."""
    status = exc.http_status
    if status is not None:
        return status == 409 or status >= 500
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        cause = pending.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, _NOT_CONNECTED):
            return False
        reason = getattr(cause, "reason", None)
        linked = [cause.__cause__, cause.__context__, reason, *cause.args]
        pending += [c for c in linked if isinstance(c, BaseException)]
    return True


def _error_code(exc: stripe.StripeError) -> str | None:
    if exc.code:
        return str(exc.code)
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None


class MeterReporter:
    """Reports jobs' over-allowance usage to Stripe with the process's ``StripeClient``.

    Built from settings with :meth:`from_settings`, or with any client (tests, host apps).
    Without a client or an event name, reporting is not configured: :meth:`report_usage`
    raises ``StripeNotConfigured`` naming what is missing, and :attr:`configured` is False.
    """

    def __init__(self, client: stripe.StripeClient | None, event_name: str | None) -> None:
        self._client = client
        self.event_name = event_name

    @classmethod
    def from_settings(cls, settings: Settings) -> MeterReporter:
        """``STRIPE_METER_EVENT_NAME`` and the process's client (built only when both the
        event name and ``STRIPE_SECRET_KEY`` are set)."""
        event_name = settings.stripe_meter_event_name
        configured = event_name is not None and settings.stripe_secret_key is not None
        return cls(get_stripe_client(settings) if configured else None, event_name)

    @property
    def configured(self) -> bool:
        return self._client is not None and self.event_name is not None

    def report_usage(
        self,
        client_id: str,
        job_id: str,
        customer_id: str,
        credits: int,
        at: datetime,
        *,
        attempt: int = 1,
    ) -> UsageReport:
        """Report ``credits`` of usage above the allowance by the client's job, settled at
        ``at``, for the Stripe customer ``customer_id``: one meter event whose value is the
        credits. ``attempt`` counts the sends of this report, from 1: an attempt sent again
        with the same number is the same request to Stripe (its answer is replayed), the next
        number a new one. Raises ``ValueError`` for an input out of bounds and
        ``StripeNotConfigured`` when reporting is not configured; every answer of Stripe's,
        and no answer, is a :class:`UsageReport`."""
        event_name, client = self._configuration()
        _check_id("client_id", client_id)
        _check_id("job_id", job_id)
        _check_id("customer_id", customer_id)
        if type(credits) is not int or not 0 < credits <= MAX_CREDITS:
            raise ValueError(f"credits must be a whole number from 1 to {MAX_CREDITS}")
        if type(attempt) is not int or attempt < 1:
            raise ValueError("attempt counts from 1")
        timestamp = int(resolve_now(at).timestamp())
        identifier = meter_identifier(client_id, job_id)
        try:
            client.v1.billing.meter_events.create(
                params={
                    "event_name": event_name,
                    "payload": {"stripe_customer_id": customer_id, "value": str(credits)},
                    "identifier": identifier,
                    "timestamp": timestamp,
                },
                options={
                    "idempotency_key": idempotency_key(identifier, attempt),
                    "max_network_retries": 0,
                },
            )
        except stripe.StripeError as exc:
            return self._refused(identifier, client_id, job_id, exc)
        logger.info("Usage of job %s of %s reported to Stripe", job_id, client_id)
        return UsageReport(MeterOutcome.REPORTED, identifier)

    def _configuration(self) -> tuple[str, stripe.StripeClient]:
        if self.event_name is None:
            raise StripeNotConfigured(
                "Usage is not reported to Stripe: STRIPE_METER_EVENT_NAME is not set"
            )
        if self._client is None:
            raise StripeNotConfigured(
                "Usage is not reported to Stripe: STRIPE_SECRET_KEY is not set"
            )
        return self.event_name, self._client

    @staticmethod
    def _refused(
        identifier: str, client_id: str, job_id: str, exc: stripe.StripeError
    ) -> UsageReport:
        outcome = classify(exc)
        message = (exc.user_message or type(exc).__name__)[:MAX_MESSAGE_LENGTH]
        code = _error_code(exc)
        level = logging.WARNING if outcome is MeterOutcome.FAILED else logging.INFO
        logger.log(
            level,
            "Usage of job %s of %s: %s (Stripe %s %s: %s)",
            job_id,
            client_id,
            outcome.value,
            exc.http_status,
            code,
            message,
        )
        maybe = outcome is not MeterOutcome.FAILED and maybe_recorded(exc)
        return UsageReport(outcome, identifier, exc.http_status, code, message, maybe)


def _check_id(name: str, value: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise ValueError(f"{name} must be 1 to {MAX_ID_LENGTH} characters")
    if not is_one_line(value):
        raise ValueError(f"{name} must be one line of text")
