"""Domain errors. Each carries the HTTP status and the stable machine code it maps to.

The HTTP layer (``openclaw_billing.api``) translates them into one JSON shape::

    BillingError
     ├── InvalidApiKey            401 invalid_api_key
     │    └── ClientInactive      401 invalid_api_key (same body: never tell which)
     ├── InvalidAdminToken        401 invalid_admin_token
     ├── CreditLimitReached       402 credit_limit_reached
     ├── PaymentPastDue           402 payment_past_due
     ├── SubscriptionPaused       402 subscription_paused
     ├── PaymentDisputed          402 payment_disputed
     ├── IpNotAllowed             403 ip_not_allowed
     ├── WebhookRejected          400 invalid_webhook (and subclasses with their own code)
     │    └── EventFromTheFuture  400 event_from_the_future
     ├── PayloadTooLarge          413 payload_too_large
     ├── PlanNotPurchasable       422 plan_not_purchasable
     ├── InvalidRequest           422 invalid_request
     │    ├── UnstorableChange    422 unstorable_change (the store could not read it back)
     │    └── InvalidQuote        422 invalid_quote (forged, malformed, another's, other job)
     ├── ClientNotFound           404 client_not_found
     ├── KeyNotFound              404 key_not_found
     ├── NotFound                 404 not_found
     ├── RateLimited              429 rate_limited (with Retry-After and headers)
     ├── ConcurrencyLimitReached  429 concurrency_limit_reached (with Retry-After)
     ├── JobNotFound              404 job_not_found
     ├── Conflict                 409 conflict (and subclasses with their own code)
     │    ├── DuplicateClient     409 duplicate_client
     │    ├── InsufficientCredits 409 insufficient_credits
     │    ├── BalanceTooLarge     409 balance_too_large
     │    ├── UnlimitedPlan       409 unlimited_plan
     │    ├── AlreadyOnPlan       409 already_on_plan
     │    ├── SubscriptionExists  409 subscription_exists
     │    ├── NoStripeCustomer    409 no_stripe_customer
     │    ├── KeyRevoked          409 key_revoked
     │    ├── IllegalTransition   409 illegal_transition
     │    ├── AmbiguousJobId      409 ambiguous_job_id
     │    ├── TooManyKeys         409 too_many_keys
     │    └── QuoteExpired        409 quote_expired
     ├── StripeRequestFailed      502 stripe_error
     ├── StripeNotConfigured      503 stripe_not_configured
     ├── AdminTokenNotConfigured  503 admin_token_not_configured
     ├── QuotesNotConfigured      503 quotes_not_configured
     └── StoreUnavailable         503 store_unavailable
          └── StoreCorrupt        503 store_unavailable (and refuses to start the service)

``ConfigurationError`` is not an HTTP error: it stops the service at start.
"""

from __future__ import annotations


class BillingError(Exception):
    """Base of every error the billing module raises on purpose."""

    status_code: int = 500
    code: str = "billing_error"
    message: str = "Billing error"
    #: Response headers the HTTP layer sends with the error (e.g. ``Retry-After``).
    headers: dict[str, str] | None = None

    def __init__(
        self, message: str | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        if message is not None:
            self.message = message
        if headers is not None:
            self.headers = headers
        super().__init__(self.message)


class InvalidApiKey(BillingError):
    """Missing, malformed, unknown or inactive client key: one identical answer for all."""

    status_code = 401
    code = "invalid_api_key"
    message = "Invalid or inactive API key"


class ClientInactive(InvalidApiKey):
    """The client was deactivated; over HTTP this is indistinguishable from a bad key."""


class InvalidAdminToken(BillingError):
    status_code = 401
    code = "invalid_admin_token"
    message = "Invalid admin token"


class CreditLimitReached(BillingError):
    status_code = 402
    code = "credit_limit_reached"
    message = "Monthly job limit reached"


class PaymentPastDue(BillingError):
    status_code = 402
    code = "payment_past_due"
    message = "Subscription payment is past due; update the payment method in the billing portal"


class SubscriptionPaused(BillingError):
    status_code = 402
    code = "subscription_paused"
    message = "The subscription is paused; resume it in the billing portal"


class PaymentDisputed(BillingError):
    status_code = 402
    code = "payment_disputed"
    message = "A payment of the subscription is disputed; no job is accepted until it closes"


class WebhookRejected(BillingError):
    """A Stripe webhook delivery that is not verified or not usable: nothing changes."""

    status_code = 400
    code = "invalid_webhook"
    message = "Webhook rejected"


class InvalidSignature(WebhookRejected):
    code = "invalid_signature"
    message = "Missing or invalid Stripe-Signature"


class InvalidPayload(WebhookRejected):
    code = "invalid_payload"
    message = "Webhook payload is not a valid Stripe event"


class EventFromTheFuture(WebhookRejected):
    """An event ``created`` later than the signature tolerance allows: applied, it would make
    every later real event of the client "stale"."""

    code = "event_from_the_future"
    message = "The event's created time is in the future"


class LivemodeMismatch(WebhookRejected):
    code = "livemode_mismatch"
    message = "Event livemode does not match the Stripe key's mode"


class InvalidRequest(BillingError):
    """A well-formed request whose values do not make sense together (e.g. a past expiry)."""

    status_code = 422
    code = "invalid_request"
    message = "Invalid request"


class UnstorableChange(InvalidRequest):
    """A change whose result the store could not read back (defence in depth: inputs are
    bounded at the edge, so this means a value slipped through). Nothing was written."""

    code = "unstorable_change"
    message = "The change was refused: the billing store could not read its result back"


class InvalidQuote(InvalidRequest):
    """A quote id that cannot be honoured for this job: not one this gateway signed (or
    altered, or signed under a secret since changed), malformed, another client's, or for
    another task type or priority. The message says which, never anything of the secret."""

    code = "invalid_quote"
    message = "The quote id is not valid for this job; ask for a new quote"


class PayloadTooLarge(BillingError):
    status_code = 413
    code = "payload_too_large"
    message = "Request body too large"


class PlanNotPurchasable(BillingError):
    status_code = 422
    code = "plan_not_purchasable"
    message = "This plan cannot be bought through checkout"


class ClientNotFound(BillingError):
    status_code = 404
    code = "client_not_found"
    message = "Client not found"


class NotFound(BillingError):
    status_code = 404
    code = "not_found"
    message = "Not found"


class RateLimited(BillingError):
    """Too many requests: a client over its per-minute limit, or an address past the limit of
    failed key or token checks. Carries ``Retry-After`` (whole seconds, at least 1)."""

    status_code = 429
    code = "rate_limited"
    message = "Rate limit exceeded; retry after the number of seconds in Retry-After"


class ConcurrencyLimitReached(BillingError):
    """As many of the client's jobs are queued or running as its plan (or its own cap)
    allows. Carries ``Retry-After``: a job ending frees a place."""

    status_code = 429
    code = "concurrency_limit_reached"
    message = (
        "Too many jobs queued or running for this plan; retry when one has ended "
        "(after the seconds in Retry-After)"
    )
    #: Seconds a refused client is told to wait: jobs run for minutes.
    RETRY_AFTER_SECONDS = 30

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(self.RETRY_AFTER_SECONDS)})


class JobNotFound(BillingError):
    status_code = 404
    code = "job_not_found"
    message = "Job not found"


class Conflict(BillingError):
    status_code = 409
    code = "conflict"
    message = "Conflict"


class IllegalTransition(Conflict):
    """A job reported into a state it cannot reach from where it is (a finished job's other
    end, a running job cancelled by its client)."""

    code = "illegal_transition"
    message = "The job cannot make this transition"


class AmbiguousJobId(Conflict):
    code = "ambiguous_job_id"
    message = "Several clients have a job with this id: name the client (client_id)"


class DuplicateClient(Conflict):
    code = "duplicate_client"
    message = "A client with this id or key already exists"


class InsufficientCredits(Conflict):
    code = "insufficient_credits"
    message = "A negative adjustment may not take credits below zero"


class BalanceTooLarge(Conflict):
    code = "balance_too_large"
    message = "An adjustment may not take credits above the largest balance"


class UnlimitedPlan(Conflict):
    code = "unlimited_plan"
    message = "The client's plan is unlimited; credits do not apply"


class AlreadyOnPlan(Conflict):
    code = "already_on_plan"
    message = "The client is already on this plan"


class SubscriptionExists(Conflict):
    code = "subscription_exists"
    message = (
        "The client already has a subscription; change its plan in the billing portal "
        "(POST /api/billing/portal)"
    )


class NoStripeCustomer(Conflict):
    code = "no_stripe_customer"
    message = "The client has no Stripe customer yet; complete a checkout first"


class QuoteExpired(Conflict):
    code = "quote_expired"
    message = "The quote has expired; ask for a new quote (POST /api/billing/quote)"


class StripeRequestFailed(BillingError):
    status_code = 502
    code = "stripe_error"
    message = "The request to Stripe failed; try again shortly"


class StripeNotConfigured(BillingError):
    status_code = 503
    code = "stripe_not_configured"
    message = "Stripe is not configured on this gateway"


class AdminTokenNotConfigured(BillingError):
    status_code = 503
    code = "admin_token_not_configured"
    message = "Admin routes are disabled: set OPENCLAW_ADMIN_TOKEN"


class QuotesNotConfigured(BillingError):
    """No secret to sign quotes with: quoting is refused rather than signed with a default."""

    status_code = 503
    code = "quotes_not_configured"
    message = (
        "Quotes need a signing secret: set OPENCLAW_SESSION_SECRET "
        "(or OPENCLAW_ADMIN_TOKEN, from which one is derived)"
    )


class StoreUnavailable(BillingError):
    status_code = 503
    code = "store_unavailable"
    message = "The billing store is busy or unavailable; retry shortly"


class StoreCorrupt(StoreUnavailable):
    """The store file does not parse or validate. It is never overwritten."""


class ConfigurationError(Exception):
    """A setting is missing or wrong; raised at start, before any request is served."""


class KeyNotFound(BillingError):
    status_code = 404
    code = "key_not_found"
    message = "The client has no API key with this id"


class KeyRevoked(Conflict):
    code = "key_revoked"
    message = "The key is revoked or expired; issue a new key instead"


class TooManyKeys(Conflict):
    code = "too_many_keys"
    message = "The client has the most usable keys allowed; revoke one first"


class IpNotAllowed(BillingError):
    """The client's IP allowlist does not hold the request's address (after a valid key)."""

    status_code = 403
    code = "ip_not_allowed"
    message = "Requests from this address are not allowed for this client"
