"""The webhook's table of handlers is collected from the handlers' own registrations
(``stripe_billing.base.handles``): one entry per event type, each a method of the webhook."""

from __future__ import annotations

from datetime import datetime

import pytest

from openclaw_billing.store.base import EventOutcome
from openclaw_billing.stripe_billing import HANDLED_EVENTS, HANDLERS, StripeBilling
from openclaw_billing.stripe_billing.base import handles
from openclaw_billing.stripe_billing.objects import StripeEvent
from openclaw_billing.stripe_billing.webhook import handler_table


def test_every_handled_type_has_one_handler_method() -> None:
    assert set(HANDLERS) == HANDLED_EVENTS
    for event_type, name in HANDLERS.items():
        assert callable(getattr(StripeBilling, name)), event_type


def test_two_handlers_for_one_type_are_refused() -> None:
    class Twice:
        @handles("invoice.paid")
        def first(self, event: StripeEvent, now: datetime) -> EventOutcome | None:
            return None

        @handles("invoice.upcoming", "invoice.paid")
        def second(self, event: StripeEvent, now: datetime) -> EventOutcome | None:
            return None

    with pytest.raises(TypeError, match=r"invoice\.paid has two handlers: first, second"):
        handler_table(Twice)
