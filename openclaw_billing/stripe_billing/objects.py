"""The parts of Stripe's objects the billing code reads, validated at the edge.

Only the fields used, at API version ``2026-10-28.endive``; everything else is ignored. Every
field the version declares nullable is accepted as null. Unix times are bounded to what a
``datetime`` holds (year 1970 to 9999), ids to printable ASCII, so nothing Stripe (or a signed
payload) sends can fail later, deeper in, as a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

#: 9999-12-31T23:59:59Z, the last second a ``datetime`` holds.
MAX_UNIX_TIME = 253_402_300_799

UnixTime = Annotated[int, Field(ge=0, le=MAX_UNIX_TIME)]
StripeId = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
#: An enum value of Stripe's (a status, a billing reason): lower-case words and underscores.
#: The SDK types them as "one of these, or another string", so a value added by a later API
#: version is accepted, but never one that could carry a control character into the store.
StripeEnum = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]


def _expanded_id(value: Any) -> Any:
    # An expandable field is an id, or the object itself when expanded.
    if isinstance(value, dict) and "id" in value:
        return value["id"]
    return value


#: An expandable reference (``customer``, ``subscription``, ...): the id either way.
Ref = Annotated[StripeId, BeforeValidator(_expanded_id)]


def as_datetime(seconds: int) -> datetime:
    """A bounded Unix time (``UnixTime``) as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


def client_id_of(value: str | None) -> str | None:
    """A client id named by Stripe data (``client_reference_id``, ``metadata.client_id``), if
    it can be one: 1 to 100 printable characters; anything else names no client."""
    if value is None or not 0 < len(value) <= 100 or not value.isprintable():
        return None
    return value


# -- the event envelope ---------------------------------------------------------------------


class _EventObject(_Loose):
    id: StripeId | None = None
    object: str | None = None


class _EventData(_Loose):
    object: _EventObject


class StripeEvent(_Loose):
    id: StripeId
    type: Annotated[str, Field(min_length=1, max_length=100)]
    created: UnixTime
    livemode: bool
    data: _EventData


# -- retrieved objects ----------------------------------------------------------------------


class _Price(_Loose):
    id: StripeId


class _Item(_Loose):
    price: _Price
    current_period_start: UnixTime
    current_period_end: UnixTime


class _Items(_Loose):
    data: list[_Item] = Field(min_length=1)


class Subscription(_Loose):
    id: StripeId
    customer: Ref
    status: StripeEnum
    metadata: dict[str, str] | None = None
    items: _Items

    def client_hint(self) -> str | None:
        return client_id_of((self.metadata or {}).get("client_id"))

    def item_for(self, price: str | None) -> _Item:
        """The item of ``price`` (the one that maps to the plan), else the first."""
        return next((i for i in self.items.data if i.price.id == price), self.items.data[0])


class CheckoutSession(_Loose):
    id: StripeId
    client_reference_id: str | None = None
    customer: Ref | None = None
    subscription: Ref | None = None
    metadata: dict[str, str] | None = None
    #: ``open``, ``complete`` (paid, or no payment due) or ``expired``.
    status: StripeEnum | None = None

    def client_hint(self) -> str | None:
        return client_id_of(self.client_reference_id) or client_id_of(
            (self.metadata or {}).get("client_id")
        )


class _Period(_Loose):
    start: UnixTime
    end: UnixTime


class _ItemDetails(_Loose):
    subscription: Ref | None = None
    proration: bool = False


class _LineParent(_Loose):
    subscription_item_details: _ItemDetails | None = None


class _PriceDetails(_Loose):
    price: Ref | None = None


class _Pricing(_Loose):
    price_details: _PriceDetails | None = None


class _Line(_Loose):
    period: _Period
    parent: _LineParent | None = None
    pricing: _Pricing | None = None


class _Lines(_Loose):
    data: list[_Line] = Field(default_factory=list)


class _SubscriptionDetails(_Loose):
    subscription: Ref | None = None
    metadata: dict[str, str] | None = None


class _InvoiceParent(_Loose):
    subscription_details: _SubscriptionDetails | None = None


#: The invoices that pay for a period of service (not a proration of a change).
PERIOD_INVOICES = frozenset({"subscription_create", "subscription_cycle"})


class Invoice(_Loose):
    id: StripeId
    status: StripeEnum | None = None
    customer: Ref | None = None
    billing_reason: StripeEnum | None = None
    parent: _InvoiceParent | None = None
    lines: _Lines = Field(default_factory=_Lines)

    @property
    def subscription(self) -> str | None:
        details = self.parent.subscription_details if self.parent else None
        return details.subscription if details else None

    def service_period(self) -> tuple[int, int] | None:
        """The period of service this invoice pays for: its subscription's non-proration
        lines (the invoice's own ``period_start/end`` is the period before, for a renewal)."""
        periods = [
            (line.period.start, line.period.end)
            for line in self.lines.data
            if line.parent is not None
            and line.parent.subscription_item_details is not None
            and line.parent.subscription_item_details.subscription == self.subscription
            and not line.parent.subscription_item_details.proration
        ]
        return max(periods, key=lambda p: p[1]) if periods else None

    def prices(self) -> list[str]:
        return [
            line.pricing.price_details.price
            for line in self.lines.data
            if line.pricing and line.pricing.price_details and line.pricing.price_details.price
        ]


class Customer(_Loose):
    id: StripeId
    deleted: bool | None = None


class Charge(_Loose):
    id: StripeId
    amount: Annotated[int, Field(ge=0)]
    amount_refunded: Annotated[int, Field(ge=0)] = 0
    refunded: bool = False
    customer: Ref | None = None
    payment_intent: Ref | None = None

    @property
    def fully_refunded(self) -> bool:
        return self.refunded or self.amount_refunded >= self.amount > 0


class Dispute(_Loose):
    id: StripeId
    charge: Ref
    status: StripeEnum


class InvoicePayment(_Loose):
    invoice: Ref


class InvoicePaymentList(_Loose):
    data: list[InvoicePayment] = Field(default_factory=list)
