"""Builders for Stripe snapshot webhook events as API version 2026-10-28.endive renders them.

Plain dicts, shaped like what Stripe POSTs to a webhook endpoint pinned to the SDK's version:
``{"id": "evt_...", "object": "event", "api_version": ..., "created", "livemode", "type",
"pending_webhooks", "request": {...}, "data": {"object": {...}}}``. Ids are random unless
given; ``created`` is always explicit so tests control ordering.

Where this version keeps things (see docs/STRIPE.md):

- subscription: price at ``items.data[0].price.id``, period at
  ``items.data[0].current_period_start/current_period_end`` (there is no top-level period);
- invoice: subscription at ``parent.subscription_details.subscription``, metadata snapshot at
  ``parent.subscription_details.metadata`` (there is no ``invoice.subscription``), service
  period at ``lines.data[0].period.start/end``. The invoice's own top-level
  ``period_start/period_end`` are, as on Stripe, the *previous* period for a renewal: don't
  use them for the new cycle.

``signed()`` turns an event into the exact bytes and headers Stripe would send.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from typing import Any, Literal, get_args

import stripe

API_VERSION = "2026-10-28.endive"

#: Every event type Stripe sends with a subscription as its object.
SubscriptionEventType = Literal[
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
    "customer.subscription.trial_will_end",
]
InvoiceEventType = Literal["invoice.paid", "invoice.payment_failed"]
SubscriptionStatus = Literal[
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
]

_DAY = 24 * 3600


def new_id(prefix: str) -> str:
    """A random Stripe-looking id: ``new_id("sub_")`` -> ``sub_<24 hex>``."""
    return prefix + secrets.token_hex(12)


def _product_for(price: str) -> str:
    return "prod_" + hashlib.sha256(price.encode()).hexdigest()[:14]


def _metadata(client_id: str | None, plan: str | None) -> dict[str, str]:
    metadata: dict[str, str] = {}
    if client_id is not None:
        metadata["client_id"] = client_id
    if plan is not None:
        metadata["plan"] = plan
    return metadata


def _envelope(
    type_: str,
    obj: dict[str, Any],
    *,
    created: int,
    event_id: str | None,
    livemode: bool,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id or new_id("evt_"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "livemode": livemode,
        "type": type_,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": data,
    }


def price_object(
    price: str, *, amount: int = 2000, created: int = 1_700_000_000, livemode: bool = False
) -> dict[str, Any]:
    """A monthly recurring ``price`` object."""
    return {
        "id": price,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": created,
        "currency": "usd",
        "custom_unit_amount": None,
        "livemode": livemode,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "product": _product_for(price),
        "recurring": {
            "interval": "month",
            "interval_count": 1,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        },
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": amount,
        "unit_amount_decimal": str(amount),
    }


def subscription_object(
    *,
    subscription: str,
    customer: str,
    price: str,
    status: SubscriptionStatus | str,
    period_start: int,
    period_end: int,
    created: int,
    client_id: str | None = None,
    plan: str | None = None,
    cancel_at_period_end: bool = False,
    amount: int = 2000,
    livemode: bool = False,
) -> dict[str, Any]:
    """A ``subscription`` object (one item), e.g. for ``FakeStripe.subscriptions[id]``.

    ``created`` is when the object is rendered (an event's ``created``); the subscription's own
    creation time is taken as ``min(period_start, created)``."""
    started = min(period_start, created)
    canceled = status == "canceled"
    plan_object: dict[str, Any] = {
        "id": price,
        "object": "plan",
        "active": True,
        "amount": amount,
        "amount_decimal": str(amount),
        "billing_scheme": "per_unit",
        "created": started,
        "currency": "usd",
        "interval": "month",
        "interval_count": 1,
        "livemode": livemode,
        "metadata": {},
        "meter": None,
        "nickname": None,
        "product": _product_for(price),
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }
    item: dict[str, Any] = {
        "id": new_id("si_"),
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": started,
        "current_period_end": period_end,
        "current_period_start": period_start,
        "discounts": [],
        "metadata": {},
        "plan": plan_object,
        "price": price_object(price, amount=amount, created=started, livemode=livemode),
        "quantity": 1,
        "subscription": subscription,
        "tax_rates": [],
    }
    return {
        "id": subscription,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": period_start,
        "billing_cycle_anchor_config": None,
        "billing_schedules": [],
        "billing_mode": {
            "flexible": {"proration_discounts": "included"},
            "type": "flexible",
            "updated_at": started,
        },
        "billing_thresholds": None,
        "cancel_at": period_end if cancel_at_period_end else None,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": created if canceled or cancel_at_period_end else None,
        "cancellation_details": {
            "comment": None,
            "feedback": None,
            "reason": "cancellation_requested" if canceled or cancel_at_period_end else None,
        },
        "collection_method": "charge_automatically",
        "created": started,
        "currency": "usd",
        "customer": customer,
        "days_until_due": None,
        "default_payment_method": "pm_" + secrets.token_hex(12),
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": created if canceled else None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": [item],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={subscription}",
        },
        "latest_invoice": new_id("in_"),
        "livemode": livemode,
        "metadata": _metadata(client_id, plan),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": started,
        "status": status,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }


def checkout_session_completed(
    *,
    client_id: str,
    customer: str,
    subscription: str,
    plan: str,
    created: int,
    event_id: str | None = None,
    livemode: bool = False,
    session_id: str | None = None,
    customer_email: str | None = None,
    payment_status: Literal["paid", "unpaid", "no_payment_required"] = "paid",
    amount_total: int = 2000,
    null_metadata: bool = False,
) -> dict[str, Any]:
    """``checkout.session.completed`` for a subscription-mode session opened for ``client_id``
    (``client_reference_id`` and ``metadata.client_id``) that created ``customer`` and
    ``subscription``. ``null_metadata``: the session's metadata is null, as this API version
    allows. The session is ``event["data"]["object"]`` (what a retrieve returns)."""
    sid = session_id or new_id("cs_test_" if not livemode else "cs_live_")
    session: dict[str, Any] = {
        "id": sid,
        "object": "checkout.session",
        "adaptive_pricing": None,
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": "https://example.test/billing/cancel",
        "client_reference_id": client_id,
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": created - 120,
        "currency": "usd",
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer,
        "customer_creation": "always" if customer_email is not None else None,
        "customer_details": {
            "address": None,
            "business_name": None,
            "email": customer_email,
            "individual_name": None,
            "name": None,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": customer_email,
        "discounts": [],
        "expires_at": created - 120 + _DAY,
        "invoice": new_id("in_"),
        "invoice_creation": None,
        "livemode": livemode,
        "locale": None,
        "metadata": None if null_metadata else {"client_id": client_id, "plan": plan},
        "mode": "subscription",
        "origin_context": None,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "always",
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "payment_status": payment_status,
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "complete",
        "submit_type": None,
        "subscription": subscription,
        "success_url": "https://example.test/billing/success",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page",
        "url": None,
        "wallet_options": None,
    }
    return _envelope(
        "checkout.session.completed",
        session,
        created=created,
        event_id=event_id,
        livemode=livemode,
    )


def subscription_event(
    type_: SubscriptionEventType,
    subscription: dict[str, Any],
    *,
    created: int,
    event_id: str | None = None,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``customer.subscription.created/updated/deleted`` carrying a copy of ``subscription``
    (a ``subscription_object``) as it is now: a later change to it is not in the event (a
    deleted event carries status ``"canceled"`` on Stripe). ``previous_attributes`` goes to
    ``data.previous_attributes`` when given (Stripe sends it on ``updated`` events)."""
    if type_ not in get_args(SubscriptionEventType):
        raise ValueError(f"not a subscription event type: {type_!r}")
    return _envelope(
        type_,
        copy.deepcopy(subscription),
        created=created,
        event_id=event_id,
        livemode=subscription["livemode"],
        previous_attributes=previous_attributes,
    )


def invoice_event(
    type_: InvoiceEventType,
    invoice: dict[str, Any],
    *,
    created: int,
    event_id: str | None = None,
) -> dict[str, Any]:
    """``invoice.paid`` or ``invoice.payment_failed`` carrying a copy of ``invoice`` (an
    ``invoice_object``, paid or open after a failed attempt) as it is now."""
    if type_ not in get_args(InvoiceEventType):
        raise ValueError(f"not an invoice event type: {type_!r}")
    return _envelope(
        type_,
        copy.deepcopy(invoice),
        created=created,
        event_id=event_id,
        livemode=invoice["livemode"],
    )


def invoice_object(
    *,
    subscription: str,
    customer: str,
    period_start: int,
    period_end: int,
    created: int,
    paid: bool = True,
    billing_reason: str = "subscription_cycle",
    client_id: str | None = None,
    plan: str | None = None,
    livemode: bool = False,
    price: str | None = None,
    amount: int = 2000,
    null_metadata: bool = False,
    invoice_id: str | None = None,
) -> dict[str, Any]:
    """An ``invoice`` (paid, or open after a failed attempt) for one subscription line whose
    service period is ``period_start..period_end``. ``null_metadata``: the subscription
    details' metadata snapshot is null, as this API version allows."""
    invoice_id = invoice_id or new_id("in_")
    price_id = price or new_id("price_")
    metadata = _metadata(client_id, plan)
    # Stripe's invoice-level period is the usage period just ended (for a first invoice, a
    # zero-length one at creation); the new service period lives on the line.
    if billing_reason == "subscription_create":
        invoice_period = (period_start, period_start)
    else:
        invoice_period = (period_start - (period_end - period_start), period_start)
    line: dict[str, Any] = {
        "id": new_id("il_"),
        "object": "line_item",
        "amount": amount,
        "currency": "usd",
        "description": f"1 \u00d7 {plan or 'Plan'} (at ${amount / 100:.2f} / month)",
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": livemode,
        "metadata": dict(metadata),
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription,
                "subscription_item": new_id("si_"),
            },
            "type": "subscription_item_details",
        },
        "period": {"end": period_end, "start": period_start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price_id, "product": _product_for(price_id)},
            "type": "price_details",
            "unit_amount_decimal": str(amount),
        },
        "quantity": 1,
        "subtotal": amount,
        "taxes": [],
    }
    invoice: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "OpenClaw",
        "account_tax_ids": None,
        "amount_due": amount,
        "amount_overpaid": 0,
        "amount_paid": amount if paid else 0,
        "amount_remaining": 0 if paid else amount,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 1,
        "attempted": True,
        "auto_advance": not paid,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": None,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "usd",
        "custom_fields": None,
        "customer": customer,
        "customer_address": None,
        "customer_email": None,
        "customer_name": None,
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": created,
        "ending_balance": 0,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_fake/test_{invoice_id}",
        "invoice_pdf": f"https://pay.stripe.com/invoice/acct_fake/test_{invoice_id}/pdf",
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": [line],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": livemode,
        "metadata": {},
        "next_payment_attempt": None if paid else created + 3 * _DAY,
        "number": "FAKE-" + secrets.token_hex(3).upper(),
        "on_behalf_of": None,
        "parent": {
            "quote_details": None,
            "subscription_details": {
                "metadata": None if null_metadata else dict(metadata),
                "subscription": subscription,
            },
            "type": "subscription_details",
        },
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": invoice_period[1],
        "period_start": invoice_period[0],
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "paid" if paid else "open",
        "status_transitions": {
            "finalized_at": created,
            "marked_uncollectible_at": None,
            "paid_at": created if paid else None,
            "voided_at": None,
        },
        "subtotal": amount,
        "subtotal_excluding_tax": amount,
        "test_clock": None,
        "total": amount,
        "total_discount_amounts": [],
        "total_excluding_tax": amount,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": created,
    }
    return invoice


def customer_object(
    customer: str | None = None, *, created: int, email: str = "someone@example.test"
) -> dict[str, Any]:
    """A ``customer`` object."""
    return {
        "id": customer or new_id("cus_"),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": created,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "email": email,
        "invoice_prefix": secrets.token_hex(4).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def unknown_event(
    type_: str = "customer.created", *, created: int, event_id: str | None = None
) -> dict[str, Any]:
    """An event of a type the billing code does not handle (a ``customer`` object inside)."""
    return _envelope(
        type_, customer_object(created=created), created=created, event_id=event_id, livemode=False
    )


def customer_deleted_event(
    customer: str, *, created: int, event_id: str | None = None
) -> dict[str, Any]:
    """``customer.deleted``: the customer as it was (a retrieve now answers ``deleted``)."""
    obj = customer_object(customer, created=created - _DAY)
    return _envelope("customer.deleted", obj, created=created, event_id=event_id, livemode=False)


def charge_object(
    charge: str,
    *,
    customer: str | None,
    payment_intent: str | None,
    created: int,
    amount: int = 2000,
    amount_refunded: int = 0,
    disputed: bool = False,
) -> dict[str, Any]:
    """A succeeded card ``charge`` (``refunded`` once ``amount_refunded`` reaches ``amount``)."""
    return {
        "id": charge,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": new_id("txn_"),
        "billing_details": {
            "address": None,
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "calculated_statement_descriptor": "OPENCLAW",
        "captured": True,
        "created": created,
        "currency": "usd",
        "customer": customer,
        "description": "Subscription update",
        "disputed": disputed,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": None,
        "paid": True,
        "payment_intent": payment_intent,
        "payment_method": "pm_" + secrets.token_hex(12),
        "payment_method_details": None,
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": None,
        "refunded": amount_refunded >= amount,
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }


def charge_refunded_event(
    charge: dict[str, Any], *, created: int, event_id: str | None = None
) -> dict[str, Any]:
    """``charge.refunded`` carrying ``charge`` (a ``charge_object``)."""
    return _envelope("charge.refunded", charge, created=created, event_id=event_id, livemode=False)


DisputeEventType = Literal[
    "charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed"
]


def dispute_object(
    dispute: str,
    *,
    charge: str,
    payment_intent: str | None,
    status: str,
    created: int,
    amount: int = 2000,
) -> dict[str, Any]:
    """A card ``dispute`` of ``charge`` (``status``: needs_response, under_review, won, lost,
    ...)."""
    return {
        "id": dispute,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge,
        "created": created,
        "currency": "usd",
        "enhanced_eligibility_types": [],
        "evidence": {
            "access_activity_log": None,
            "billing_address": None,
            "cancellation_policy": None,
            "cancellation_policy_disclosure": None,
            "cancellation_rebuttal": None,
            "customer_communication": None,
            "customer_email_address": None,
            "customer_name": None,
            "customer_purchase_ip": None,
            "customer_signature": None,
            "duplicate_charge_documentation": None,
            "duplicate_charge_explanation": None,
            "duplicate_charge_id": None,
            "enhanced_evidence": {},
            "product_description": None,
            "receipt": None,
            "refund_policy": None,
            "refund_policy_disclosure": None,
            "refund_refusal_explanation": None,
            "service_date": None,
            "service_documentation": None,
            "shipping_address": None,
            "shipping_carrier": None,
            "shipping_date": None,
            "shipping_documentation": None,
            "shipping_tracking_number": None,
            "uncategorized_file": None,
            "uncategorized_text": None,
        },
        "evidence_details": {
            "due_by": created + 7 * _DAY,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
            "submission_method": "not_submitted",
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "network_reason_code": None,
        "payment_intent": payment_intent,
        "payment_method_details": None,
        "reason": "fraudulent",
        "status": status,
    }


def dispute_event(
    type_: DisputeEventType,
    dispute: dict[str, Any],
    *,
    created: int,
    event_id: str | None = None,
) -> dict[str, Any]:
    """``charge.dispute.created/updated/closed`` carrying ``dispute`` (a ``dispute_object``)."""
    if type_ not in get_args(DisputeEventType):
        raise ValueError(f"not a dispute event type: {type_!r}")
    return _envelope(type_, dispute, created=created, event_id=event_id, livemode=False)


def invoice_payment_object(
    *, invoice: str, payment_intent: str, created: int, amount: int = 2000
) -> dict[str, Any]:
    """An ``invoice_payment``: ``payment_intent`` paid ``invoice`` (how a charge leads to the
    invoice, and so to the subscription, in this API version)."""
    return {
        "id": new_id("inpay_"),
        "object": "invoice_payment",
        "amount_paid": amount,
        "amount_requested": amount,
        "created": created,
        "currency": "usd",
        "invoice": invoice,
        "is_default": True,
        "livemode": False,
        "payment": {"payment_intent": payment_intent, "type": "payment_intent"},
        "status": "paid",
        "status_transitions": {"canceled_at": None, "paid_at": created},
    }


def signed_payload(
    payload: str, secret: str, *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Sign an arbitrary body (e.g. invalid JSON) exactly as Stripe does: the bytes to POST and
    the ``Stripe-Signature``/``Content-Type`` headers."""
    # generate_signature_header wants str: given bytes it signs "t.b'...'" without complaint.
    header: str = stripe.WebhookSignature.generate_signature_header(
        payload, secret, timestamp=timestamp
    )
    return payload.encode("utf-8"), {
        "Stripe-Signature": header,
        "Content-Type": "application/json",
    }


def signed(
    event: dict[str, Any], secret: str, *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Serialise ``event`` once and sign that text with the whole ``whsec_...`` secret
    (``t=<timestamp>,v1=<hex HMAC-SHA256 of f"{t}.{body}">``; now unless ``timestamp``)."""
    return signed_payload(json.dumps(event), secret, timestamp=timestamp)
