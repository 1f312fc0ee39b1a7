"""The fake Stripe's hosted Checkout page, for tests that drive a browser through an upgrade.

Stripe sends the customer to ``https://checkout.stripe.com/c/pay/<session id>``; the fake
serves its own page at that path on its host (``GET``), and paying there (``POST`` of the
page's form) does what ``POST /_fake/checkout/sessions/<id>/pay`` does, then sends the browser
to the session's ``success_url`` with ``{CHECKOUT_SESSION_ID}`` filled in, as Stripe does. Its
"Back" link is the session's ``cancel_url``. The page is plain HTML with no script or style.
"""

from __future__ import annotations

from html import escape
from typing import Any

#: Where Stripe's hosted Checkout pages are (the path keeps the session id last).
CHECKOUT_PATH = "/c/pay/"


def success_location(session: dict[str, Any]) -> str:
    """The session's ``success_url`` as Stripe redirects to it once paid."""
    return str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])


def checkout_page(session: dict[str, Any], price: str) -> str:
    """The page of an open Checkout Session: what is bought, for whom, a "Pay" button and a
    "Back" link; a session no longer open says so, with no button."""
    session_id = escape(session["id"])
    email = escape(session.get("customer_email") or "the customer")
    if session["status"] == "open":
        action = (
            f'<form method="post" action="{CHECKOUT_PATH}{session_id}">'
            '<button type="submit">Pay and subscribe</button></form>'
        )
    else:
        action = f'<p data-status="{escape(session["status"])}">This checkout is complete.</p>'
    back = ""
    if session.get("cancel_url"):
        back = f'<p><a href="{escape(session["cancel_url"])}">Back</a></p>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Checkout (fake Stripe)</title></head><body><main>"
        "<h1>Checkout (fake Stripe)</h1>"
        f'<p>Subscribe {email} to <strong data-price="{escape(price)}">{escape(price)}</strong>'
        f" (session <code>{session_id}</code>).</p>{action}{back}</main></body></html>"
    )
