"""The fake Stripe's Billing Meter Events: ``POST /v1/billing/meter_events`` as Stripe answers it.

What Stripe documents (API reference, "Create a billing meter event"; the SDK's
``stripe/params/billing/_meter_event_create_params.py`` and ``stripe/billing/_meter_event.py``)
and what integrations in production observe:

* ``event_name`` and ``payload`` are required (400 ``parameter_missing``); ``event_name`` and
  ``identifier`` hold at most 100 characters;
* ``timestamp`` defaults to now and must lie within the past 35 calendar days and at most
  5 minutes in the future (400 on ``timestamp``);
* ``identifier`` defaults to a generated one and is unique within a rolling 24 hours: an event
  whose identifier was accepted in the last 24 hours is refused with a 400
  ``invalid_request_error`` whose only marker is its message, ``An event already exists with
  identifier <id>.`` (no ``code``), with ``Stripe-Should-Retry: false``. langfuse
  (``worker/src/ee/cloudUsageMetering``, from a production rejection) and neosync
  (``backend/services/mgmt/v1alpha1/user-account-service/billing.go``) match that message;
  Stripe's API v2 names the same refusal ``duplicate_meter_event`` (``v2.error.
  duplicate_meter_event`` in stripe/openapi). Stripe keeps identifiers for "at least" 24 hours;
  the fake forgets them after exactly 24 (its clock, :attr:`FakeStripe.now`, can be moved);
* the payload's content (the customer mapping key, the value) is validated asynchronously by
  Stripe and reported through a ``v1.billing.meter.error_report_triggered`` event, not in the
  answer: it is accepted here as it is there;
* the answer is a ``billing.meter_event`` object (checked against the SDK's ``MeterEvent`` by
  ``tests/test_fake_stripe_meters.py``).
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.fake_stripe_errors import StripeRequestError

METER_EVENTS_PATH = "/v1/billing/meter_events"
#: How long an identifier stays taken (Stripe: "a rolling period of at least 24 hours").
IDENTIFIER_WINDOW = 24 * 3600
#: How far back and ahead a timestamp may lie.
MAX_AGE = 35 * 86_400
MAX_AHEAD = 5 * 60
#: The longest ``event_name`` and ``identifier`` (the OpenAPI spec's ``maxLength``).
MAX_LENGTH = 100


def duplicate_message(identifier: str) -> str:
    """Stripe's message for an identifier it already holds."""
    return f"An event already exists with identifier {identifier}."


class MeterEvents:
    """The meter events the fake accepted, and the rules it accepts them by. Called under the
    fake's lock."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        """Every event accepted, oldest first, as answered."""
        self._taken: dict[str, int] = {}  # identifier -> when it was accepted

    def listed(self, identifier: str | None = None) -> list[dict[str, Any]]:
        """The events accepted (with this identifier, when given), oldest first."""
        return [e for e in self.events if identifier is None or e["identifier"] == identifier]

    def create(self, params: dict[str, Any], now: int) -> dict[str, Any]:
        """Accept one event at ``now`` and answer it, or raise ``StripeRequestError`` as Stripe
        refuses it."""
        event_name = _text(params, "event_name", required=True)
        payload = params.get("payload")
        if payload is None or payload == "":
            raise _missing("payload")
        if not isinstance(payload, dict):
            raise StripeRequestError(
                400, "Invalid object", code="parameter_invalid_type", param="payload"
            )
        timestamp = _timestamp(params.get("timestamp"), now)
        identifier = _text(params, "identifier", required=False) or str(uuid.uuid4())
        taken = self._taken.get(identifier)
        if taken is not None and now - taken < IDENTIFIER_WINDOW:
            raise StripeRequestError(
                400, duplicate_message(identifier), headers={"Stripe-Should-Retry": "false"}
            )
        self._taken[identifier] = now
        event = {
            "object": "billing.meter_event",
            "created": now,
            "event_name": event_name,
            "identifier": identifier,
            "livemode": False,
            "payload": payload,
            "timestamp": timestamp,
        }
        self.events.append(event)
        return event


def _missing(param: str) -> StripeRequestError:
    return StripeRequestError(
        400, f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def _text(params: dict[str, Any], param: str, *, required: bool) -> str | None:
    value = params.get(param)
    if value is None or value == "":
        if required:
            raise _missing(param)
        return None
    if not isinstance(value, str):
        raise StripeRequestError(
            400, "Invalid string", code="parameter_invalid_string", param=param
        )
    if len(value) > MAX_LENGTH:
        raise StripeRequestError(
            400,
            f"Invalid string: {value[:20]}...; must be at most {MAX_LENGTH} characters",
            code="string_too_long",
            param=param,
        )
    return value


def _timestamp(value: Any, now: int) -> int:
    if value is None or value == "":
        return now
    try:
        timestamp = int(value)
    except (TypeError, ValueError):
        raise StripeRequestError(
            400,
            f"Invalid integer: {value}",
            code="parameter_invalid_integer",
            param="timestamp",
        ) from None
    if timestamp < now - MAX_AGE:
        raise StripeRequestError(
            400, "Timestamp must be no more than 35 days in the past.", param="timestamp"
        )
    if timestamp > now + MAX_AHEAD:
        raise StripeRequestError(
            400, "Timestamp must be no more than 5 minutes in the future.", param="timestamp"
        )
    return timestamp
