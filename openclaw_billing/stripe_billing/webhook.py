"""Webhook deliveries: verification at the edge, then one handler per event type.

Each handler is registered where it is written, with :func:`.base.handles`; the table of
handlers (:data:`HANDLERS`) and the handled types (:data:`HANDLED_EVENTS`) are collected from
those marks, so a new event type is one handler (and its test and its line in the docs).

The raw body is verified (``STRIPE_WEBHOOK_SECRET``, 300 s tolerance, future timestamps
refused too) before anything is parsed, and the parse is bounded: a body nested too deeply to
parse, an event ``created`` outside what a datetime holds or later than the signature allows,
is a 400, never a 500. An event is only a pointer: every handler re-retrieves the objects it
names from Stripe and acts on those.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime

import stripe
from pydantic import ValidationError

from ..cycles import resolve_now, utcnow
from ..errors import (
    EventFromTheFuture,
    InvalidPayload,
    InvalidSignature,
    LivemodeMismatch,
    StripeNotConfigured,
)
from ..store.base import EventOutcome
from .base import HANDLES
from .objects import StripeEvent
from .reversals import Reversals
from .sync import SubscriptionSync

logger = logging.getLogger("openclaw_billing.stripe")

WEBHOOK_TOLERANCE = 300
MAX_WEBHOOK_BYTES = 1_000_000

Handler = Callable[[StripeEvent, datetime], EventOutcome | None]


class WebhookMixin(SubscriptionSync, Reversals):
    def verify(
        self, payload: bytes, signature: str | None, *, now: float | None = None
    ) -> StripeEvent:
        """Verify the raw body, then parse it. Raises ``StripeNotConfigured`` without a webhook
        secret and a ``WebhookRejected`` (400) for anything not verified or not usable."""
        secret = self.settings.stripe_webhook_secret
        if secret is None:
            raise StripeNotConfigured(
                "Stripe webhooks are not configured: set STRIPE_WEBHOOK_SECRET"
            )
        if not signature:
            raise InvalidSignature()
        try:
            text = payload.decode("utf-8")
            stripe.WebhookSignature.verify_header(
                text, signature, secret.get_secret_value(), WEBHOOK_TOLERANCE
            )
        except (UnicodeDecodeError, stripe.SignatureVerificationError):
            raise InvalidSignature() from None
        # The SDK reads the first t= and refuses old timestamps only. Every t= must be a
        # plain Unix time (not "²", another script's digits, 40 digits), and none ahead.
        stamps = [p[2:] for p in signature.split(",") if p.startswith("t=")]
        if not stamps or not all(re.fullmatch(r"[0-9]{1,12}", t) for t in stamps):
            raise InvalidSignature()
        current = time.time() if now is None else now
        if max(int(t) for t in stamps) > current + WEBHOOK_TOLERANCE:
            raise InvalidSignature("Stripe-Signature timestamp is in the future")
        try:
            event = StripeEvent.model_validate(json.loads(text))
        except (ValueError, ValidationError, RecursionError):
            # RecursionError: a signed body nested deeper than the parser goes.
            raise InvalidPayload() from None
        if event.created > current + WEBHOOK_TOLERANCE:
            # Applied, it would make every later real event of the client "stale".
            raise EventFromTheFuture()
        key = self.settings.stripe_secret_key
        if key is not None:
            live_key = key.get_secret_value().startswith(("sk_live_", "rk_live_"))
            if event.livemode != live_key:
                raise LivemodeMismatch()
        return event

    def handle(self, event: StripeEvent, *, now: datetime | None = None) -> EventOutcome | None:
        """Apply a verified event exactly once. Returns the outcome, or None for an event that
        changes nothing (a type not handled, or an object of no client's plans: acknowledged
        as ``ignored``)."""
        now = resolve_now(now, utcnow)
        name = HANDLERS.get(event.type)
        if name is None:
            logger.info("Ignored Stripe event %s of type %s", event.id, event.type)
            return None
        handler: Handler = getattr(self, name)
        outcome = handler(event, now)
        shown = outcome.value if outcome else "ignored"
        logger.info("Stripe event %s (%s): %s", event.id, event.type, shown)
        return outcome


def handler_table(cls: type) -> dict[str, str]:
    """Event type -> the name of the method of ``cls`` registered for it with ``handles``.
    Two handlers for one type is a programming error, refused at import."""
    table: dict[str, str] = {}
    for name in dir(cls):
        for event_type in getattr(getattr(cls, name), HANDLES, ()):
            if event_type in table:
                raise TypeError(f"{event_type} has two handlers: {table[event_type]}, {name}")
            table[event_type] = name
    return table


#: The table of handlers: event type -> handler method name.
HANDLERS = handler_table(WebhookMixin)
HANDLED_EVENTS = frozenset(HANDLERS)
