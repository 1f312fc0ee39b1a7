"""What every part of the Stripe handling shares: the service, the settings, the client, reads
of Stripe's objects (the source of truth; an event's copy is only a pointer to them), and how
a Stripe object is traced to the client it belongs to."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import stripe
from pydantic import BaseModel, ValidationError

from .. import ledger
from ..errors import InvalidPayload, StripeNotConfigured
from ..models import ClientRecord
from ..service import BillingService
from ..settings import Settings
from ..store.base import EventOutcome, StripeRef
from .client import is_missing, stripe_failure

logger = logging.getLogger("openclaw_billing.stripe")

M = TypeVar("M", bound=BaseModel)
H = TypeVar("H", bound=Callable[..., Any])

#: The attribute :func:`handles` puts on a handler: the event types it handles.
HANDLES = "stripe_event_types"


def handles(*types: str) -> Callable[[H], H]:
    """Registers a webhook handler (a method ``(self, event, now) -> EventOutcome | None``)
    for these event types, where it is written: the webhook's table of handlers and the
    handled event types are collected from these marks (:mod:`.webhook`)."""

    def mark(handler: H) -> H:
        setattr(handler, HANDLES, types)
        return handler

    return mark


class StripeBase:
    """The service, the settings and the client, and the reads every handler uses."""

    def __init__(
        self, service: BillingService, settings: Settings, client: stripe.StripeClient | None
    ) -> None:
        self.service = service
        self.settings = settings
        self._client = client

    @property
    def client(self) -> stripe.StripeClient:
        if self._client is None:
            raise StripeNotConfigured()
        return self._client

    def _read(self, what: str, fetch: Callable[[], Any], model: type[M]) -> M | None:
        """``fetch()`` an object from Stripe and validate it; None when Stripe has no such
        object. Stripe failing is a 502 (the event is redelivered); an object that is not as
        the pinned API version renders it is a 400, never a 500."""
        try:
            found = fetch()
        except stripe.StripeError as exc:
            if is_missing(exc):
                logger.warning("Stripe has no %s", what)
                return None
            raise stripe_failure(f"{what.split()[0]} retrieve", exc) from exc
        try:
            return model.model_validate(found.to_dict())
        except (ValidationError, RecursionError):
            raise InvalidPayload(f"Stripe's {what.split()[0]} is not usable") from None

    # -- tracing an object to its client ------------------------------------------------------

    def _client_for(
        self, *, subscription: str | None, customer: str | None, hint: str | None
    ) -> ClientRecord | None:
        """The client a Stripe object belongs to: the one linked to the subscription, else
        the one linked to the customer, else the client that Stripe's own object names
        (``hint``: retrieved metadata or ``client_reference_id``). An event's own copy of the
        metadata is never used."""
        store = self.service.store
        if subscription is not None:
            found = store.find_client_by_stripe(subscription_id=subscription)
            if found is not None:
                return found
        if customer is not None:
            found = store.find_client_by_stripe(customer_id=customer)
            if found is not None:
                return found
        if hint is not None:
            return store.get_client(hint)
        return None

    def _apply(
        self,
        event_id: str,
        record: ClientRecord,
        created: int,
        change: Callable[[ClientRecord], None],
        now: datetime,
        *,
        ordered: bool = True,
    ) -> EventOutcome:
        """Apply ``change`` to the client as event ``event_id`` (see
        ``Store.apply_stripe_event``; ``ordered=False``: a change that is right whenever it
        arrives, never stale)."""
        ref = StripeRef(record.client_id, None, None)
        # The client's event clock never runs ahead of ours: an event dated in the future (a
        # skewed clock, a crafted payload within the signature's tolerance) counts as now, so
        # the real events that follow it are never "stale".
        created = min(created, int(now.timestamp()))
        apply = self.service.store.apply_stripe_event
        try:
            outcome, _ = apply(event_id, ref, created, change, now, ordered=ordered)
        finally:
            # Like an admin action's: this process's next request sees what the event changed
            # (a plan, a status), not OPENCLAW_KEY_CACHE_SECONDS later.
            self.service.key_cache.forget_client(record.client_id)
        return outcome

    # -- a customer Stripe no longer has ------------------------------------------------------

    def _forget_customer(self, record: ClientRecord, customer: str, now: datetime) -> None:
        """Stripe answered "No such customer" for the client's customer (deleted, or a test-mode
        id after a switch to live keys): unlink it, as ``customer.deleted`` does, so the next
        checkout creates a new customer. Applied like an event of Stripe's (one atomic store
        step, an id of its own) that is never stale and moves no event clock."""
        logger.warning("Stripe has no customer %s of %s: unlinked", customer, record.client_id)
        event_id = f"openclaw_customer_missing_{uuid.uuid4().hex}"
        unlink = functools.partial(unlink_customer, customer=customer, now=now)
        self._apply(event_id, record, 0, unlink, now, ordered=False)


def unlink_customer(record: ClientRecord, customer: str, now: datetime) -> None:
    """The customer is gone, and with it every subscription it had (Stripe cancels them): the
    link goes, and a client whose subscription was on it goes back to Free."""
    if record.stripe_customer_id != customer:
        return
    record.stripe_customer_id = None
    record.updated_at = now
    if record.stripe_subscription_id is not None:
        record.metadata.subscription_status = "canceled"
        ledger.return_to_free(record, now)
