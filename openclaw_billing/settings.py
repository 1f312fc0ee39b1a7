"""Settings from the environment (pydantic-settings), validated, built lazily and cached.

Nothing here runs at import: call :func:`get_settings`. Tests and host apps call
``get_settings.cache_clear()`` after changing the environment.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .branding import LogoRefused, read_logo
from .net import IPNetwork, parse_networks
from .safetext import ONE_LINE

#: Values copied from examples; a gateway that sells access must not run with any of them.
PLACEHOLDER_SECRETS = frozenset(
    {
        "your-secret-admin-token",
        "changethis",
        "changeme",
        "change-me",
        "secret",
        "admin",
        "password",
        "token",
    }
)
MIN_ADMIN_TOKEN_LENGTH = 16
MIN_SESSION_SECRET_LENGTH = 32
#: Request body cap (``OPENCLAW_MAX_BODY_BYTES``): default 128 KiB, allowed 1 KiB to 64 MiB. The
#: default fits the largest valid job (a 20,000-character description) even when every
#: character is sent as a 6-byte ``\uXXXX`` escape, as ``json.dumps`` writes non-ASCII text.
DEFAULT_MAX_BODY_BYTES = 128 * 1024
MIN_MAX_BODY_BYTES = 1024
MAX_MAX_BODY_BYTES = 64 * 1024 * 1024

#: A hold's time to live set for every plan (``OPENCLAW_HOLD_TTL_SECONDS``): 1 s to 30 days.
MIN_HOLD_TTL_SECONDS = 1
MAX_HOLD_TTL_SECONDS = 30 * 24 * 3600
#: Seconds between two passes of each worker's hold sweeper (``OPENCLAW_SWEEP_SECONDS``).
DEFAULT_SWEEP_SECONDS = 30.0
MIN_SWEEP_SECONDS = 1.0
MAX_SWEEP_SECONDS = 3600.0

DEFAULT_STATE_DIR = Path("~/.openclaw")
DEFAULT_BILLING_DB = str(DEFAULT_STATE_DIR / "billing" / "clients.json")
DEFAULT_JOBS_FILE = str(DEFAULT_STATE_DIR / "gateway" / "jobs.jsonl")


class Settings(BaseSettings):
    """Every setting, with the environment variable that sets it."""

    model_config = SettingsConfigDict(
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        frozen=True,
        # A rejected secret must never be echoed into a log or a terminal.
        hide_input_in_errors=True,
    )

    admin_token: Annotated[SecretStr | None, Field(validation_alias="OPENCLAW_ADMIN_TOKEN")] = None
    billing_db: Annotated[str, Field(validation_alias="OPENCLAW_BILLING_DB", min_length=1)] = (
        DEFAULT_BILLING_DB
    )
    gateway_port: Annotated[
        int, Field(validation_alias="OPENCLAW_GATEWAY_PORT", ge=1, le=65535)
    ] = 18789
    jobs_file: Annotated[str, Field(validation_alias="OPENCLAW_JOBS_FILE", min_length=1)] = (
        DEFAULT_JOBS_FILE
    )
    #: How long a request waits for the store's lock before it answers 503.
    store_lock_timeout: Annotated[
        float, Field(validation_alias="OPENCLAW_STORE_LOCK_TIMEOUT", gt=0, le=300)
    ] = 10.0
    #: The largest request body in bytes (413 ``payload_too_large`` above it); the Stripe
    #: webhook keeps its own 1 MB cap (``openclaw_billing.api.bodylimit``).
    max_body_bytes: Annotated[
        int,
        Field(
            validation_alias="OPENCLAW_MAX_BODY_BYTES",
            ge=MIN_MAX_BODY_BYTES,
            le=MAX_MAX_BODY_BYTES,
        ),
    ] = DEFAULT_MAX_BODY_BYTES
    stripe_secret_key: Annotated[SecretStr | None, Field(validation_alias="STRIPE_SECRET_KEY")] = (
        None
    )
    stripe_webhook_secret: Annotated[
        SecretStr | None, Field(validation_alias="STRIPE_WEBHOOK_SECRET")
    ] = None
    stripe_price_starter: Annotated[str | None, Field(validation_alias="STRIPE_PRICE_STARTER")] = (
        None
    )
    stripe_price_pro: Annotated[str | None, Field(validation_alias="STRIPE_PRICE_PRO")] = None
    stripe_api_base: Annotated[str | None, Field(validation_alias="STRIPE_API_BASE")] = None
    #: The ``event_name`` of the Stripe billing meter that usage above a plan's allowance is
    #: reported to, as meter events (:mod:`.stripe_billing.meters`). Unset: not reported.
    stripe_meter_event_name: Annotated[
        str | None,
        Field(
            validation_alias="STRIPE_METER_EVENT_NAME",
            min_length=1,
            max_length=100,
            pattern=ONE_LINE,
        ),
    ] = None
    #: Where rate-limit counters live: ``memory://`` (per worker process) or
    #: ``redis://host:port/db`` (shared by every worker and instance). Checked at start.
    rate_limit_storage: Annotated[str, Field(validation_alias="OPENCLAW_RATE_LIMIT_STORAGE")] = (
        "memory://"
    )
    #: Prefix of every rate-limit counter's key, so several gateways can share one Redis.
    rate_limit_key_prefix: Annotated[
        str,
        Field(
            validation_alias="OPENCLAW_RATE_LIMIT_KEY_PREFIX", pattern=r"^[A-Za-z0-9_.:-]{1,64}$"
        ),
    ] = "openclaw"
    #: Failed key or token checks allowed per client address in a moving window (``limits``
    #: notation, e.g. ``20/minute``); past it every auth attempt from the address gets 429.
    auth_failure_limit: Annotated[str, Field(validation_alias="OPENCLAW_AUTH_FAILURE_LIMIT")] = (
        "20/minute"
    )
    #: Proxies whose ``X-Forwarded-For`` is believed (comma-separated IPs or CIDRs). Empty: the
    #: TCP peer is the client address and ``X-Forwarded-For`` is ignored.
    trusted_proxies: Annotated[str, Field(validation_alias="OPENCLAW_TRUSTED_PROXIES")] = ""
    #: Threads per worker process that run authentication and charging (the store and the
    #: job file). Few threads serve more requests: CPython threads contend for the GIL.
    billing_threads: Annotated[
        int, Field(validation_alias="OPENCLAW_BILLING_THREADS", ge=1, le=64)
    ] = 2
    #: Who commits the worker's store changes in batches (see :mod:`.committer`): a thread of
    #: its own (``thread``) or the event loop's thread (``loop``).
    committer: Annotated[
        Literal["thread", "loop"], Field(validation_alias="OPENCLAW_COMMITTER")
    ] = "thread"
    #: How long a worker believes what the store said about a key (seconds; 0: never, read
    #: the store on every request): the bound on how late a revocation, deactivation or policy
    #: change made by another worker or instance is seen (see :mod:`.keycache`).
    key_cache_seconds: Annotated[
        float,
        Field(validation_alias="OPENCLAW_KEY_CACHE_SECONDS", ge=0, le=60, allow_inf_nan=False),
    ] = 1.0
    #: A hold's time to live in seconds for every plan, in place of each plan's own
    #: (``Plan.hold_ttl``, 24 hours): for drills and tests of a runner that dies, which
    #: cannot wait a day. Unset (the default): each plan's. See :attr:`hold_ttl`.
    hold_ttl_seconds: Annotated[
        int | None,
        Field(
            validation_alias="OPENCLAW_HOLD_TTL_SECONDS",
            ge=MIN_HOLD_TTL_SECONDS,
            le=MAX_HOLD_TTL_SECONDS,
        ),
    ] = None
    #: Seconds between two passes of each worker's hold sweeper (see :mod:`.sweeper`): at
    #: most this long (plus up to 20% jitter) after a hold's time to live, it is released.
    sweep_seconds: Annotated[
        float,
        Field(
            validation_alias="OPENCLAW_SWEEP_SECONDS",
            ge=MIN_SWEEP_SECONDS,
            le=MAX_SWEEP_SECONDS,
            allow_inf_nan=False,
        ),
    ] = DEFAULT_SWEEP_SECONDS
    #: Where clients reach this gateway; default checkout and portal return URLs derive from it.
    public_url: Annotated[str, Field(validation_alias="OPENCLAW_PUBLIC_URL", min_length=1)] = (
        "http://localhost:18789"
    )
    checkout_success_url: Annotated[
        str | None, Field(validation_alias="OPENCLAW_CHECKOUT_SUCCESS_URL")
    ] = None
    checkout_cancel_url: Annotated[
        str | None, Field(validation_alias="OPENCLAW_CHECKOUT_CANCEL_URL")
    ] = None
    portal_return_url: Annotated[
        str | None, Field(validation_alias="OPENCLAW_PORTAL_RETURN_URL")
    ] = None
    stripe_max_network_retries: Annotated[
        int, Field(validation_alias="STRIPE_MAX_NETWORK_RETRIES", ge=0, le=10)
    ] = 2
    #: Seconds per Stripe request attempt (the SDK's own default is 80).
    stripe_timeout: Annotated[
        float, Field(validation_alias="STRIPE_TIMEOUT_SECONDS", gt=0, le=120)
    ] = 20.0

    #: Signs the console's and the portal's session cookies and the job quotes (see
    #: :attr:`signing_secret`). Unset: derived from the admin token (so changing the token signs
    #: everyone out and voids every quote); neither set: the pages and quoting answer 503.
    session_secret: Annotated[
        SecretStr | None, Field(validation_alias="OPENCLAW_SESSION_SECRET")
    ] = None
    #: How long a console or portal session lasts after sign-in, in minutes (then sign in again).
    session_minutes: Annotated[
        int, Field(validation_alias="OPENCLAW_SESSION_MINUTES", ge=5, le=7 * 24 * 60)
    ] = 8 * 60
    #: The product name the console and the portal show (white-label).
    brand_name: Annotated[
        str,
        Field(
            validation_alias="OPENCLAW_BRAND_NAME",
            min_length=1,
            max_length=60,
            pattern=ONE_LINE,
        ),
    ] = "OpenClaw"
    #: The logo the console and the portal show (white-label): a PNG, JPEG, SVG or WebP file
    #: of at most 512 KB, checked when the settings are built (see :mod:`.branding`).
    brand_logo: Annotated[Path | None, Field(validation_alias="OPENCLAW_BRAND_LOGO")] = None

    @property
    def success_url(self) -> str:
        return self.checkout_success_url or (
            f"{self.public_url.rstrip('/')}/api/billing/return"
            "?checkout=success&session_id={CHECKOUT_SESSION_ID}"
        )

    @property
    def cancel_url(self) -> str:
        base = self.public_url.rstrip("/")
        return self.checkout_cancel_url or f"{base}/api/billing/return?checkout=cancel"

    @property
    def return_url(self) -> str:
        base = self.public_url.rstrip("/")
        return self.portal_return_url or f"{base}/api/billing/return?portal=done"

    @property
    def hold_ttl(self) -> timedelta | None:
        """The time to live of every hold (``OPENCLAW_HOLD_TTL_SECONDS``), or None: each
        plan's own."""
        seconds = self.hold_ttl_seconds
        return None if seconds is None else timedelta(seconds=seconds)

    @property
    def signing_secret(self) -> bytes | None:
        """The key that signs what the gateway hands out and reads back (session cookies,
        CSRF tokens, quote ids): ``OPENCLAW_SESSION_SECRET``, else derived from the admin token
        (HMAC); None with neither: there is no default secret. Each use signs under its own
        salt or purpose, so what one signs never verifies as another's."""
        if self.session_secret is not None:
            return self.session_secret.get_secret_value().encode("utf-8")
        if self.admin_token is not None:
            token = self.admin_token.get_secret_value().encode("utf-8")
            return hmac.new(token, b"openclaw-billing/session-secret", hashlib.sha256).digest()
        return None

    @property
    def secrets(self) -> tuple[str, ...]:
        """The configured secrets that have no recognisable shape (unlike client keys): the
        admin token and the Stripe keys. Never logged, audited or echoed."""
        values = (
            self.admin_token,
            self.stripe_secret_key,
            self.stripe_webhook_secret,
            self.session_secret,
        )
        return tuple(v.get_secret_value() for v in values if v is not None and v.get_secret_value())

    @field_validator(
        "admin_token", "stripe_secret_key", "stripe_webhook_secret", "session_secret", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator(
        "stripe_price_starter",
        "stripe_price_pro",
        "stripe_api_base",
        "stripe_meter_event_name",
        "checkout_success_url",
        "checkout_cancel_url",
        "portal_return_url",
        "hold_ttl_seconds",
        mode="before",
    )
    @classmethod
    def _blank_str_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("brand_logo", mode="before")
    @classmethod
    def _blank_path_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("brand_logo")
    @classmethod
    def _readable_logo(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        path = value.expanduser().absolute()  # a later change of directory changes nothing
        try:
            read_logo(path)
        except LogoRefused as exc:
            raise ValueError(f"OPENCLAW_BRAND_LOGO: {exc}") from None
        return path

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_proxies(cls, value: str) -> str:
        parse_networks(value, "OPENCLAW_TRUSTED_PROXIES")
        return value

    @field_validator("auth_failure_limit")
    @classmethod
    def _valid_auth_failure_limit(cls, value: str) -> str:
        try:
            items = parse_many(value)
        except ValueError:
            items = []
        if len(items) != 1 or items[0].amount < 1:
            raise ValueError(
                "OPENCLAW_AUTH_FAILURE_LIMIT must be one limit such as 20/minute or "
                "10 per 5 minutes"
            )
        return value

    @field_validator("session_secret")
    @classmethod
    def _refuse_weak_session_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SESSION_SECRET_LENGTH:
            raise ValueError(
                f"OPENCLAW_SESSION_SECRET must be at least {MIN_SESSION_SECRET_LENGTH} "
                "characters, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if value is not None and value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("OPENCLAW_SESSION_SECRET is a placeholder; generate a real one")
        return value

    @cached_property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        # Parsed once per settings object, not on every request that resolves an address.
        return parse_networks(self.trusted_proxies, "OPENCLAW_TRUSTED_PROXIES")

    @field_validator("admin_token")
    @classmethod
    def _refuse_weak_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value()
        if token.strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError(
                "OPENCLAW_ADMIN_TOKEN is a placeholder from the docs; generate a real one, e.g. "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if len(token) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                f"OPENCLAW_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LENGTH} characters"
            )
        return value


@cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
