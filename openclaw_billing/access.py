"""Who may use an account: its API keys (issue, rotate, revoke, expire, last use), its IP
allowlist, its rate-limit override and an admin's plan change, as pure transitions of one
client record.

Stores run these inside their atomic step (``Store.mutate_batch``), exactly like the
billing transitions of :mod:`openclaw_billing.ledger`. Each validates before it mutates.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from types import EllipsisType

from . import cycles, ledger
from .errors import AlreadyOnPlan, KeyNotFound, KeyRevoked, SubscriptionExists, TooManyKeys
from .keys import digest_key, display_prefix
from .models import ApiKeyRecord, ClientMetadata, ClientRecord
from .net import parse_networks
from .plans import PlanId, get_plan

#: Usable (not revoked, not expired) keys a client may hold at once.
MAX_USABLE_KEYS = 10
#: ``last_used_at`` is written at most this often per key, not on every request.
KEY_TOUCH_INTERVAL = timedelta(seconds=60)
#: The longest grace a rotation may give the old key.
MAX_ROTATION_GRACE = timedelta(days=30)
MAX_LABEL_LENGTH = 100
MAX_ALLOWLIST_ENTRIES = 100


def new_key_record(key: str, now: datetime, *, label: str | None = None) -> ApiKeyRecord:
    """The stored form of a freshly generated key: its digest and display prefix only."""
    return ApiKeyRecord(
        key_id=f"key_{secrets.token_hex(6)}",
        digest=digest_key(key),
        prefix=display_prefix(key),
        label=label,
        created_at=now,
    )


def new_client(
    *, client_id: str, name: str, email: str, plan: PlanId, key: str, now: datetime
) -> ClientRecord:
    """A new client as the service creates it: ``plan``'s full allowance, its first cycle
    from ``now``, ``key`` (plaintext, never stored) its one key. The one constructor of a new
    record: the service, the bench seeder and the test helpers all start from it."""
    start, end = cycles.first_cycle(now)
    allowance = get_plan(plan).jobs_per_month
    key_record = new_key_record(key, now)
    return ClientRecord(
        client_id=client_id,
        name=name,
        email=email,
        api_key_hash=key_record.digest,
        api_key_prefix=key_record.prefix,
        plan=plan,
        credits_remaining=allowance,
        total_spent=0.0,
        created_at=now,
        updated_at=now,
        active=True,
        billing_cycle_start=start,
        billing_cycle_end=end,
        metadata=ClientMetadata(cycle_allowance=allowance),
        api_keys=[key_record],
    )


def find_key(record: ClientRecord, key_id: str) -> ApiKeyRecord:
    for key in record.api_keys:
        if key.key_id == key_id:
            return key
    raise KeyNotFound()


def _add(record: ClientRecord, key: ApiKeyRecord, now: datetime, *, replacing: str | None) -> None:
    usable = [k for k in record.api_keys if k.usable(now) and k.key_id != replacing]
    if len(usable) >= MAX_USABLE_KEYS:
        raise TooManyKeys()
    record.api_keys.append(key)
    # The summary's single-key fields name the newest key.
    record.api_key_hash, record.api_key_prefix = key.digest, key.prefix
    record.updated_at = now


def issue_key(record: ClientRecord, key: ApiKeyRecord, now: datetime) -> None:
    """Add another key; every key draws on the client's one balance."""
    _add(record, key, now, replacing=None)


def rotate_key(
    record: ClientRecord, key_id: str, new: ApiKeyRecord, grace: timedelta, now: datetime
) -> None:
    """Add ``new`` and let the old key work until ``now + grace`` (0: stops at once). An
    earlier expiry the old key already had is kept."""
    old = find_key(record, key_id)
    if not old.usable(now):
        raise KeyRevoked()
    if not timedelta(0) <= grace <= MAX_ROTATION_GRACE:
        raise ValueError(f"grace must be between 0 and {MAX_ROTATION_GRACE}")
    _add(record, new, now, replacing=key_id)
    ends = now + grace
    if old.expires_at is None or ends < old.expires_at:
        old.expires_at = ends


def revoke_key(record: ClientRecord, key_id: str, now: datetime) -> bool:
    """Stop a key at once. Revoking a revoked key changes nothing (returns False)."""
    key = find_key(record, key_id)
    if key.revoked_at is not None:
        return False
    key.revoked_at = now
    record.updated_at = now
    return True


def set_key_expiry(
    record: ClientRecord, key_id: str, expires_at: datetime | None, now: datetime
) -> None:
    """Set (or clear, with None) when a usable key stops working; it must be in the future."""
    key = find_key(record, key_id)
    if not key.usable(now):
        raise KeyRevoked()
    if expires_at is not None and expires_at <= now:
        raise ValueError("expires_at must be in the future")
    key.expires_at = expires_at
    record.updated_at = now


def touch_due(last_used_at: datetime | None, now: datetime) -> bool:
    """Whether a key last used at ``last_used_at`` is due to have ``now`` written as its last
    use (at most once per ``KEY_TOUCH_INTERVAL``)."""
    return last_used_at is None or now - last_used_at >= KEY_TOUCH_INTERVAL


def touch_key(record: ClientRecord, key_id: str, now: datetime) -> bool:
    """Note a use of the key; True when ``last_used_at`` was due for a write."""
    key = find_key(record, key_id)
    if not touch_due(key.last_used_at, now):
        return False
    key.last_used_at = now
    return True


#: The largest cap of jobs queued or running an admin may give a client.
MAX_ACTIVE_JOBS = 1_000_000


def set_policy(
    record: ClientRecord,
    now: datetime,
    *,
    rate_limit_per_minute: int | None,
    ip_allowlist: list[str],
    max_active_jobs: int | EllipsisType | None = ...,
) -> bool:
    """Set the client's rate-limit override (None: the plan's) and IP allowlist (empty: any
    address), and its cap of jobs queued or running (None: the plan's; ``...``: unchanged).
    Entries are normalised (``10.0.0.1`` -> ``10.0.0.1/32``)."""
    if len(ip_allowlist) > MAX_ALLOWLIST_ENTRIES:
        raise ValueError(f"at most {MAX_ALLOWLIST_ENTRIES} allowlist entries")
    networks = [str(n) for n in parse_networks(ip_allowlist, "ip_allowlist")]
    cap = record.max_active_jobs if max_active_jobs is ... else max_active_jobs
    if cap is not None and (type(cap) is not int or not 1 <= cap <= MAX_ACTIVE_JOBS):
        raise ValueError(f"max_active_jobs is 1 to {MAX_ACTIVE_JOBS}, or null for the plan's")
    if (record.rate_limit_per_minute, record.ip_allowlist, record.max_active_jobs) == (
        rate_limit_per_minute,
        networks,
        cap,
    ):
        return False
    record.rate_limit_per_minute = rate_limit_per_minute
    record.ip_allowlist = networks
    record.max_active_jobs = cap
    record.updated_at = now
    return True


def admin_change_plan(record: ClientRecord, plan: PlanId, now: datetime) -> None:
    """An operator moves a client to ``plan`` (an enterprise deal, a courtesy upgrade) within
    the current cycle, with the same rule as a prorated Stripe change: the difference of the
    allowances is a logged credit adjustment, never below zero. A client with a live Stripe
    subscription changes plan through Stripe, or the next webhook would undo this."""
    if plan == record.plan:
        raise AlreadyOnPlan()
    live = record.metadata.subscription_status not in (None, "canceled", "incomplete_expired")
    if record.stripe_subscription_id is not None and live:
        raise SubscriptionExists(
            "The client's plan is managed by its Stripe subscription; change it in Stripe"
        )
    ledger.change_plan(record, plan, record.billing_cycle_start, record.billing_cycle_end, now)
