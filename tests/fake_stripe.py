"""A fake Stripe API on a loopback port, for driving the real stripe-python SDK in tests.

Point the SDK at it with
``stripe.StripeClient("sk_test_fake", base_addresses={"api": fake.base_url}, ...)``.
It speaks what the SDK speaks: form-encoded POST bodies in bracket notation
(``line_items[0][price]=...``), GET parameters in the query string, ``Authorization: Bearer``,
``Idempotency-Key``, and JSON errors ``{"error": {"type", "message", "code", "param"}}`` with
the HTTP status that picks the SDK's exception class.

Routes: ``POST /v1/checkout/sessions``, ``GET /v1/checkout/sessions/<id>``,
``POST /v1/billing_portal/sessions``, ``POST /v1/billing/meter_events``
(:mod:`tests.fake_stripe_meters`), and ``GET`` of ``/v1/subscriptions/<id>``,
``/v1/invoices/<id>``, ``/v1/customers/<id>``, ``/v1/charges/<id>``, ``/v1/disputes/<id>`` and
``/v1/invoice_payments?payment[payment_intent]=...`` (from settable dicts of the same names).
Anything else answers 404 like Stripe's "Unrecognized request URL". A session's hosted
Checkout page is served at its path (``/c/pay/<id>``) on the fake's host, where a browser can
pay (:mod:`tests.fake_stripe_pages`).

Where the code depends on it, it behaves as Stripe does: a deleted customer
(``deleted_customers``) is "No such customer" (400 ``resource_missing``) to Checkout and the
portal and ``{"deleted": true}`` to a retrieve; a reused idempotency key with other parameters
is a 400 ``idempotency_error``; a 5xx answered to a request with a key is kept and replayed for
that key; with ``portal_configured = False`` the portal refuses as for an account that never
saved its portal settings. Faults are injected with :meth:`FakeStripe.fail_next` (an error
answer) and :meth:`FakeStripe.drop_next` (the connection closes with no answer, before or after
the request ran), for any route or one path. Every object it serves is checked against the
SDK's own definitions by ``tests/test_stripe_contract.py``.

The server speaks HTTP/1.0, so every connection closes after its response: no keep-alive
socket outlives a test (pytest turns ResourceWarnings into errors).

Manual use: ``python -m tests.fake_stripe --port 12111`` serves until Ctrl-C and prints one
line per request.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import parse_qsl, urlsplit

import httpx

from tests.fake_stripe_errors import StripeRequestError, error_body
from tests.fake_stripe_meters import METER_EVENTS_PATH, MeterEvents
from tests.fake_stripe_pages import CHECKOUT_PATH, checkout_page, success_location
from tests.stripe_events import (
    checkout_session_completed,
    customer_object,
    signed,
    subscription_event,
    subscription_object,
)

API_VERSION = "2026-10-28.endive"
"""The API version stripe-python 16.1 pins (``stripe.api_version``)."""

_KEY_RE = re.compile(r"^(?:sk|rk)_test_\S+$")
_SEGMENTS_RE = re.compile(r"\[([^\]]*)\]")
_CHECKOUT_MODES = ("payment", "setup", "subscription")

Params = dict[str, Any]
"""Decoded request parameters: nested dicts and lists whose leaves are strings."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (recorded before any fault or auth check)."""

    method: str
    path: str
    params: Params
    headers: dict[str, str]  # names lower-cased
    idempotency_key: str | None
    replayed: bool
    status: int  # the HTTP status the fake answered with (0: dropped before it ran)
    dropped: bool = False  # the connection closed with no answer (see ``drop_next``)


@dataclass
class _Fault:
    status: int
    body: dict[str, Any]
    should_retry: bool | None
    remaining: int
    stored: bool
    #: Only requests whose path starts with this count (None: every request).
    path: str | None = None
    #: Close the connection with no answer instead ...
    drop: bool = False
    #: ... after the request ran (its result is kept, as Stripe keeps it; the answer is lost).
    executed: bool = False


@dataclass
class _Stored:
    """An idempotent result Stripe would keep: what was asked and what was answered."""

    method: str
    path: str
    params: Params
    status: int
    body: dict[str, Any]


@dataclass
class _Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False
    #: A page for a browser instead of a JSON body (the hosted Checkout page).
    html: str | None = None
    #: Close the connection without writing anything (an injected connection drop).
    dropped: bool = False


def decode_params(pairs: list[tuple[str, str]]) -> Params:
    """Turn form pairs in Stripe's bracket notation back into nested structures.

    ``line_items[0][price]=p`` -> ``{"line_items": [{"price": "p"}]}``,
    ``metadata[client_id]=x`` -> ``{"metadata": {"client_id": "x"}}``; ``a[]=x`` appends.
    Values stay strings (``true``/``false`` included). A dict whose keys are exactly
    ``"0".."n-1"`` becomes a list (the SDK always indexes arrays).
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        base, _, rest = key.partition("[")
        segments = [base, *_SEGMENTS_RE.findall("[" + rest)] if rest else [base]
        node = root
        for segment in segments[:-1]:
            child = node.get(segment)
            if not isinstance(child, dict):
                child = {}
                node[segment] = child
            node = child
        last = segments[-1]
        node[str(len(node)) if last == "" else last] = value
    return cast(Params, _listify(root))


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v) for k, v in value.items()}
    if converted and set(converted) == {str(i) for i in range(len(converted))}:
        return [converted[str(i)] for i in range(len(converted))]
    return converted


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeStripe) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout after ``delay``) leaves a broken pipe: not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "FakeStripe/1.0"

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        pass

    def _dispatch(self) -> None:
        fake = cast(_Server, self.server).fake
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8") if length else ""
        pairs = parse_qsl(split.query, keep_blank_values=True)
        if body:
            pairs += parse_qsl(body, keep_blank_values=True)
        headers = {name.lower(): value for name, value in self.headers.items()}
        response = fake._handle(self.command, split.path, decode_params(pairs), headers)
        if response.dropped:
            self.close_connection = True
            return
        if response.html is None:
            payload = json.dumps(response.body, indent=2).encode("utf-8")
            content_type = "application/json"
        else:
            payload, content_type = response.html.encode("utf-8"), "text/html; charset=utf-8"
        self.send_response(response.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", _new_id("req_"))
        self.send_header("Stripe-Version", headers.get("stripe-version", API_VERSION))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class FakeStripe:
    """A fake Stripe API server on ``127.0.0.1`` (random port unless given), in a daemon thread.

    Use as a context manager; the server starts on construction and stops on exit/``close()``.
    """

    secret_key: str = "sk_test_fake"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.verbose = verbose
        self.webhook_url = webhook_url
        """Where simulated payments deliver their signed events, as Stripe would."""
        self.webhook_secret = webhook_secret
        self._session_params: dict[str, Params] = {}
        self.events: dict[str, dict[str, Any]] = {}
        """Events produced by simulated payments, by id (``POST /_fake/events/<id>/resend``)."""
        self.deliveries: list[tuple[str, int]] = []
        """(event id, the webhook's HTTP status) for every delivery made."""
        self.requests: list[RecordedRequest] = []
        self.subscriptions: dict[str, dict[str, Any]] = {}
        """Objects served by ``GET /v1/subscriptions/<id>``; set them freely."""
        self.invoices: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.deleted_customers: set[str] = set()
        """Customer ids Stripe no longer has: "No such customer" to Checkout and the portal."""
        self.charges: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.invoice_payments: list[dict[str, Any]] = []
        self.portal_configured = True
        """False: the account never saved its customer-portal settings."""
        self.checkout_sessions: dict[str, dict[str, Any]] = {}
        """Checkout Sessions created so far, by id (``GET /v1/checkout/sessions/<id>``)."""
        self.portal_sessions: dict[str, dict[str, Any]] = {}
        self.meter_events = MeterEvents()
        """Billing meter events accepted so far (``meter_events.events``; also
        ``GET /_fake/billing/meter_events``)."""
        self.prices: set[str] | None = None
        """When set, Checkout rejects any other price id with Stripe's "No such price"."""
        self.now: Callable[[], int] = lambda: int(time.time())
        """The clock behind ``created``; replace it to pin timestamps."""
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._delay = 0.0
        self._closing = threading.Event()
        self._idempotent: dict[tuple[str, str], _Stored] = {}
        self._server = _Server((host, port), self)
        bound_host, bound_port = self._server.server_address[:2]
        self.base_url = f"http://{bound_host!s}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeStripe:{bound_port}",
            daemon=True,
        )
        self._thread.start()

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and close the listening socket (idempotent); wakes any delayed request."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- test controls ---------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        error_type: str = "api_error",
        message: str = "An unknown error occurred (injected by FakeStripe).",
        code: str | None = None,
        count: int = 1,
        should_retry: bool | None = None,
        stored: bool | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (any route, or those whose path starts with
        ``path``; before auth) with ``status`` and a Stripe error body. ``stored`` (default:
        for a 5xx): as Stripe does once execution began, the answer is kept for the request's
        Idempotency-Key and replayed to every retry with that key; otherwise nothing is stored
        and a retry with the same key runs for real (a failure before Stripe executed
        anything). ``should_retry`` sends
        ``Stripe-Should-Retry``, which the SDK obeys over its own status rules."""
        with self._lock:
            self._faults.append(
                _Fault(
                    status=status,
                    body=error_body(error_type, message, code=code),
                    should_retry=should_retry,
                    remaining=count,
                    stored=status >= 500 if stored is None else stored,
                    path=path,
                )
            )

    def drop_next(self, count: int = 1, *, path: str | None = None, executed: bool = False) -> None:
        """Close the connection of the next ``count`` requests (any route, or those whose path
        starts with ``path``) without answering: the client sees a connection error. With
        ``executed``, each request runs first and its result is kept for its Idempotency-Key
        (Stripe did the work; only the answer was lost), so a retry with that key gets it."""
        with self._lock:
            fault = _Fault(0, {}, None, count, False, path=path, drop=True, executed=executed)
            self._faults.append(fault)

    def delay(self, seconds: float) -> None:
        """Hold every following response for ``seconds`` (0 turns it off); ``close()`` cuts
        a pending delay short."""
        self._delay = seconds

    def requests_to(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        """Recorded requests with this method (any case) whose path starts with the prefix."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == method.upper() and r.path.startswith(path_prefix)
            ]

    # --- request handling (server threads) -------------------------------------------------

    def _handle(self, method: str, path: str, params: Params, headers: dict[str, str]) -> _Response:
        if path.startswith("/_fake/"):
            return self._simulate(method, path, params)
        if path.startswith(CHECKOUT_PATH):
            return self._hosted_checkout(method, path.removeprefix(CHECKOUT_PATH))
        if self._delay > 0:
            self._closing.wait(self._delay)
        key = headers.get("idempotency-key") if method == "POST" else None
        with self._lock:
            response = self._respond(method, path, params, headers, key)
            self.requests.append(
                RecordedRequest(
                    method=method,
                    path=path,
                    params=params,
                    headers=headers,
                    idempotency_key=key,
                    replayed=response.replayed,
                    status=response.status,
                    dropped=response.dropped,
                )
            )
        if key is not None:
            response.headers["Idempotency-Key"] = key
        if self.verbose:
            replay = " (idempotent replay)" if response.replayed else ""
            print(f"{method} {path} -> {response.status}{replay}", file=sys.stderr, flush=True)
        return response

    def _respond(
        self,
        method: str,
        path: str,
        params: Params,
        headers: dict[str, str],
        key: str | None,
    ) -> _Response:
        """Runs under the lock: idempotent replays, faults, auth, then the route."""
        api_key = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if key is not None and (api_key, key) in self._idempotent:
            return self._replay(self._idempotent[(api_key, key)], method, path, params, key)
        fault = self._take_fault(path)
        if fault is not None and not fault.executed:
            if fault.drop:
                return _Response(0, {}, dropped=True)
            extra: dict[str, str] = {}
            if fault.should_retry is not None:
                extra["Stripe-Should-Retry"] = "true" if fault.should_retry else "false"
            if fault.stored and key is not None:
                self._idempotent[(api_key, key)] = _Stored(
                    method, path, params, fault.status, fault.body
                )
            return _Response(fault.status, fault.body, extra)
        response = self._execute(method, path, params, headers, key)
        response.dropped = fault is not None  # it ran; the answer is lost
        return response

    def _take_fault(self, path: str) -> _Fault | None:
        """The first injected fault this request counts against (runs under the lock)."""
        for i, fault in enumerate(self._faults):
            if fault.path is None or path.startswith(fault.path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[i]
                return fault
        return None

    def _execute(
        self, method: str, path: str, params: Params, headers: dict[str, str], key: str | None
    ) -> _Response:
        """Auth, then the route; a success is kept for its Idempotency-Key."""
        auth = headers.get("authorization", "")
        api_key = auth.removeprefix("Bearer ").strip()
        if not auth.startswith("Bearer ") or not _KEY_RE.match(api_key):
            shown = api_key[:8] + "*" * (len(api_key) - 12) + api_key[-4:]
            if len(api_key) <= 12:
                shown = "*" * len(api_key)
            return _Response(
                401,
                error_body(
                    "authentication_error",
                    f"Invalid API Key provided: {shown}"
                    if api_key
                    else "You did not provide an API key.",
                ),
            )

        try:
            status, body = self._route(method, path, params)
        except StripeRequestError as err:
            # Stripe keeps no idempotent result for a request that failed validation.
            return _Response(err.status, err.body, err.headers)
        if key is not None:
            self._idempotent[(api_key, key)] = _Stored(method, path, params, status, body)
        return _Response(status, body)

    @staticmethod
    def _replay(stored: _Stored, method: str, path: str, params: Params, key: str) -> _Response:
        if (stored.method, stored.path, stored.params) != (method, path, params):
            return _Response(
                400,
                error_body(
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same "
                    "parameters they were first used with. Try using a key other than "
                    f"'{key}' if you meant to execute a different request.",
                ),
            )
        return _Response(stored.status, stored.body, {"Idempotent-Replayed": "true"}, replayed=True)

    # --- simulation (not Stripe's API: what a customer or Stripe's scheduler would do) --------

    def _simulate(self, method: str, path: str, params: Params) -> _Response:
        """``POST /_fake/checkout/sessions/<id>/pay``: the customer pays; ``POST
        /_fake/events/<id>/resend``: Stripe redelivers an event; ``GET
        /_fake/billing/meter_events[?identifier=...]``: the meter events accepted, oldest first.
        No auth, like a browser."""
        parts = path.strip("/").split("/")
        if method == "GET" and parts[1:] == ["billing", "meter_events"]:
            with self._lock:
                accepted = self.meter_events.listed(params.get("identifier"))
            return _Response(200, {"object": "list", "data": accepted, "has_more": False})
        if method == "POST" and parts[1:3] == ["checkout", "sessions"] and parts[-1] == "pay":
            events = self._pay_and_deliver(parts[3])
            if events is None:
                return _Response(404, error_body("invalid_request_error", "No such session"))
            return _Response(200, {"events": [e["id"] for e in events]})
        if method == "POST" and parts[1] == "events" and parts[-1] == "resend":
            found = self.events.get(parts[2])
            if found is None:
                return _Response(404, error_body("invalid_request_error", "No such event"))
            self._deliver_later(found)
            return _Response(200, {"events": [found["id"]]})
        return _Response(404, error_body("invalid_request_error", f"No fake route {path}"))

    def _pay_and_deliver(
        self, session_id: str, *, open_only: bool = False
    ) -> list[dict[str, Any]] | None:
        """The customer pays the session (None: no such session; ``open_only``: nothing
        happens to a session already complete); its events are delivered to ``webhook_url``
        moments later, as Stripe does."""
        with self._lock:
            session = self.checkout_sessions.get(session_id)
            if session is None:
                return None
            if open_only and session["status"] != "open":
                return []
            events = self.pay(session, self._session_params[session_id])
        for event in events:
            self._deliver_later(event)
        return events

    def _hosted_checkout(self, method: str, session_id: str) -> _Response:
        """The session's hosted Checkout page (``GET``); paying on it (``POST``) pays an open
        session and sends the browser to its ``success_url``, as Stripe does."""
        with self._lock:
            session = self.checkout_sessions.get(session_id)
            params = self._session_params.get(session_id, {})
        if session is None:
            return _Response(404, {}, html="<!doctype html><title>No such checkout</title>")
        if method == "POST":
            self._pay_and_deliver(session_id, open_only=True)
            return _Response(303, {}, {"Location": success_location(session)}, html="")
        price = (params.get("line_items") or [{}])[0].get("price", "")
        return _Response(200, {}, html=checkout_page(session, price))

    def pay(self, session: dict[str, Any], params: Params) -> list[dict[str, Any]]:
        """Complete a subscription-mode session: a customer and an active subscription for its
        price, for one month from now. Returns ``checkout.session.completed`` and
        ``customer.subscription.created``, as Stripe would send them."""

        now = self.now()
        customer = session.get("customer") or _new_id("cus_")
        subscription = _new_id("sub_")
        price = params["line_items"][0]["price"]
        meta = params.get("subscription_data", {}).get("metadata") or params.get("metadata") or {}
        client_id, plan = meta.get("client_id"), meta.get("plan")
        start, end = now, now + 30 * 86_400
        if customer not in self.customers:
            self.customers[customer] = customer_object(
                customer, created=now, email=session.get("customer_email") or "x@example.test"
            )
        self.subscriptions[subscription] = subscription_object(
            subscription=subscription,
            customer=customer,
            price=price,
            status="active",
            period_start=start,
            period_end=end,
            created=now,
            client_id=client_id,
            plan=plan,
        )
        session.update(
            customer=customer, subscription=subscription, status="complete", payment_status="paid"
        )
        events = [
            checkout_session_completed(
                client_id=session.get("client_reference_id") or client_id or "",
                customer=customer,
                subscription=subscription,
                plan=plan or "",
                created=now,
            ),
            subscription_event(
                "customer.subscription.created", self.subscriptions[subscription], created=now
            ),
        ]
        for event in events:
            self.events[event["id"]] = event
        return events

    def _deliver_later(self, event: dict[str, Any]) -> None:
        if not (self.webhook_url and self.webhook_secret):
            return
        threading.Thread(target=self._deliver, args=(event,), daemon=True).start()

    def _deliver(self, event: dict[str, Any]) -> None:
        assert self.webhook_url is not None
        assert self.webhook_secret is not None
        payload, headers = signed(event, self.webhook_secret)
        try:
            status = httpx.post(self.webhook_url, content=payload, headers=headers, timeout=30)
            status_code = status.status_code
        except httpx.TransportError:
            status_code = 0
        self.deliveries.append((event["id"], status_code))
        if self.verbose:
            line = f"webhook {event['type']} {event['id']} -> {status_code}"
            print(line, file=sys.stderr, flush=True)

    def _route(self, method: str, path: str, params: Params) -> tuple[int, dict[str, Any]]:
        if method == "POST" and path == "/v1/checkout/sessions":
            return 200, self._create_checkout_session(params)
        if method == "GET" and path.startswith("/v1/checkout/sessions/"):
            return 200, self._lookup(
                self.checkout_sessions,
                path.removeprefix("/v1/checkout/sessions/"),
                "checkout.session",
            )
        if method == "POST" and path == "/v1/billing_portal/sessions":
            return 200, self._create_portal_session(params)
        if method == "POST" and path == METER_EVENTS_PATH:
            return 200, self.meter_events.create(params, self.now())
        for prefix, objects, name in (
            ("/v1/subscriptions/", self.subscriptions, "subscription"),
            ("/v1/invoices/", self.invoices, "invoice"),
            ("/v1/charges/", self.charges, "charge"),
            ("/v1/disputes/", self.disputes, "dispute"),
        ):
            if method == "GET" and path.startswith(prefix):
                return 200, self._lookup(objects, path.removeprefix(prefix), name)
        if method == "GET" and path.startswith("/v1/customers/"):
            customer = path.removeprefix("/v1/customers/")
            if customer in self.deleted_customers:
                return 200, {"id": customer, "object": "customer", "deleted": True}
            return 200, self._lookup(self.customers, customer, "customer")
        if method == "GET" and path == "/v1/invoice_payments":
            return 200, self._list_invoice_payments(params)
        raise StripeRequestError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
        )

    @staticmethod
    def _lookup(store: dict[str, dict[str, Any]], object_id: str, name: str) -> dict[str, Any]:
        found = store.get(object_id)
        if found is None:
            raise StripeRequestError(
                404, f"No such {name}: '{object_id}'", code="resource_missing", param="id"
            )
        return found

    def _list_invoice_payments(self, params: Params) -> dict[str, Any]:
        payment = params.get("payment") or {}
        intent = payment.get("payment_intent") if isinstance(payment, dict) else None
        found = [
            p
            for p in self.invoice_payments
            if intent is None or p["payment"].get("payment_intent") == intent
        ]
        return {"object": "list", "data": found, "has_more": False, "url": "/v1/invoice_payments"}

    def _check_customer(self, customer: Any) -> None:
        if customer in self.deleted_customers:
            raise StripeRequestError(
                400, f"No such customer: '{customer}'", code="resource_missing", param="customer"
            )

    def _create_checkout_session(self, params: Params) -> dict[str, Any]:
        if "payment_method_types" in params:
            raise StripeRequestError(
                400,
                "Received unknown parameter: payment_method_types",
                code="parameter_unknown",
                param="payment_method_types",
            )
        mode = params.get("mode")
        if mode is None:
            raise StripeRequestError(
                400, "Missing required param: mode.", code="parameter_missing", param="mode"
            )
        if mode not in _CHECKOUT_MODES:
            raise StripeRequestError(
                400,
                f"Invalid mode: must be one of {', '.join(_CHECKOUT_MODES)}",
                code="parameter_invalid_string",
                param="mode",
            )
        self._check_customer(params.get("customer"))
        if params.get("customer") and params.get("customer_email"):
            raise StripeRequestError(
                400,
                "You may only specify one of these parameters: customer, customer_email.",
                param="customer_email",
            )
        line_items = params.get("line_items")
        if mode == "subscription" and not line_items:
            raise StripeRequestError(
                400,
                "You must provide at least one recurring price in `subscription` mode when "
                "using prices.",
                code="parameter_missing",
                param="line_items",
            )
        if line_items is not None and not isinstance(line_items, list):
            raise StripeRequestError(
                400, "Invalid array", code="parameter_invalid_type", param="line_items"
            )
        for i, item in enumerate(line_items or []):
            if not isinstance(item, dict) or not (item.get("price") or item.get("price_data")):
                raise StripeRequestError(
                    400,
                    f"You must specify either `price` or `price_data` in `line_items[{i}]`.",
                    code="parameter_missing",
                    param=f"line_items[{i}]",
                )
            price = item.get("price")
            if price is not None and self.prices is not None and price not in self.prices:
                raise StripeRequestError(
                    400,
                    f"No such price: '{price}'",
                    code="resource_missing",
                    param=f"line_items[{i}][price]",
                )
            if "quantity" not in item:
                raise StripeRequestError(
                    400,
                    f"Quantity is required. Add `quantity` to `line_items[{i}]`.",
                    code="parameter_missing",
                    param=f"line_items[{i}][quantity]",
                )
        metadata = params.get("metadata", {})
        if not isinstance(metadata, dict):
            raise StripeRequestError(
                400, "Invalid object", code="parameter_invalid_type", param="metadata"
            )
        session_id = _new_id("cs_test_")
        created = self.now()
        session: dict[str, Any] = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": None,
            "amount_total": None,
            "automatic_tax": {
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": created,
            "currency": None,
            "custom_fields": [],
            "custom_text": {
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            "customer": params.get("customer"),
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "expires_at": created + 24 * 3600,
            "invoice": None,
            "livemode": False,
            "metadata": metadata,
            "mode": mode,
            "payment_intent": None,
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "setup_intent": None,
            "shipping_options": [],
            "status": "open",
            "subscription": None,
            "success_url": params.get("success_url"),
            "ui_mode": params.get("ui_mode", "hosted_page"),
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        self.checkout_sessions[session_id] = session
        self._session_params[session_id] = params
        return session

    def _create_portal_session(self, params: Params) -> dict[str, Any]:
        customer = params.get("customer")
        if not customer:
            raise StripeRequestError(
                400,
                "Missing required param: customer.",
                code="parameter_missing",
                param="customer",
            )
        self._check_customer(customer)
        if not self.portal_configured and "configuration" not in params:
            raise StripeRequestError(
                400,
                "No configuration provided and your test mode default configuration has not "
                "been created. Provide a configuration or create your default by saving your "
                "customer portal settings in test mode at "
                "https://dashboard.stripe.com/test/settings/billing/portal.",
            )
        session_id = _new_id("bps_")
        session: dict[str, Any] = {
            "id": session_id,
            "object": "billing_portal.session",
            "configuration": params.get("configuration", "bpc_fake_default"),
            "created": self.now(),
            "customer": customer,
            "flow": None,
            "livemode": False,
            "locale": params.get("locale"),
            "on_behalf_of": None,
            "return_url": params.get("return_url"),
            "url": f"https://billing.stripe.com/p/session/{session_id}",
        }
        self.portal_sessions[session_id] = session
        return session


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake Stripe API until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--webhook-url", help="deliver simulated events here, signed")
    parser.add_argument("--webhook-secret", help="the whsec_ secret to sign them with")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)  # stops as Ctrl-C does (SIGINT may be ignored)
    with FakeStripe(
        host=args.host,
        port=args.port,
        verbose=True,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
    ) as fake:
        try:  # the banner inside: a stop sent as soon as it is read lands in this block
            print(f"Fake Stripe on {fake.base_url} (any sk_test_/rk_test_ key); Ctrl-C stops it")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping")


if __name__ == "__main__":
    main()
