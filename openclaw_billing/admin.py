"""The admin actions of :class:`~openclaw_billing.service.BillingService`: create a client,
credits, (de)activate, keys, plan and policy, each with its audit event.

Every action hands its event to the store with its change (``Store.mutate(..., audit=...)``,
``Store.create_client(..., audit=...)``): the store writes both in one atomic step, so an
action is either done and recorded, or neither is (``StoreUnavailable``, a 503). The event is
built, and checked by the secret guard, before the store's lock is taken, except where it
depends on the state under the lock (the plan left, the allowlist as stored).

Every change of an existing client is written by :meth:`AdminActions._mutate`, which then drops
the client from this process's key cache (:mod:`openclaw_billing.keycache`): the next request
sees the change.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import EllipsisType
from typing import Self, TypeVar, cast

from pydantic import ValidationError

from .access import new_client, new_key_record
from .audit import ADMIN_ACTOR, MAX_SOURCE_LENGTH, AuditAction, DetailValue, NewAuditEvent
from .committer import ThreadCommitter
from .cycles import resolve_now, utcnow
from .errors import InvalidRequest
from .keycache import KeyCache
from .keys import generate_key
from .models import ApiKeyRecord, ClientRecord
from .net import UNKNOWN_ADDRESS, parse_networks
from .plans import PlanId
from .settings import get_settings
from .store import Store, changes
from .store.base import AuditFor, Mutation
from .store.changes import Change

logger = logging.getLogger("openclaw_billing")

Detail = Mapping[str, DetailValue]
T = TypeVar("T")


class AdminActions:
    """The admin actions; ``source`` (the admin's address) goes into each one's event, and
    :attr:`actor` (``admin``; ``console`` through :meth:`as_actor`) is who did it."""

    store: Store
    key_cache: KeyCache
    #: Commits the changes in batches with the worker's others (see :mod:`.committer`).
    committer: ThreadCommitter
    #: Who the admin actions' events name as the actor.
    actor: str = ADMIN_ACTOR

    def as_actor(self, actor: str) -> Self:
        """The same service, whose admin actions are recorded as done by ``actor`` (the
        console's pages act as ``console``; the API stays ``admin``)."""
        acting = copy.copy(self)
        acting.actor = actor
        return acting

    def create_client(
        self,
        *,
        name: str,
        email: str,
        plan: PlanId,
        now: datetime | None = None,
        source: str = UNKNOWN_ADDRESS,
    ) -> tuple[ClientRecord, str]:
        """Create a client; returns the record and its plaintext key (shown once, never
        stored). ``source`` (the admin's address) goes into the audit event, as in every admin
        action below."""
        now = resolve_now(now, utcnow)
        key = generate_key()
        record = new_client(
            client_id=str(uuid.uuid4()), name=name, email=email, plan=plan, key=key, now=now
        )
        detail = {"plan": plan.value, "key_id": record.api_keys[0].key_id}
        event = self._event(AuditAction.CLIENT_CREATE, record.client_id, source, now, detail)
        self.store.create_client(record, audit=event)
        logger.info("Created client %s (%s) on %s plan", record.client_id, name, plan.value)
        return record, key

    def add_credits(
        self,
        client_id: str,
        amount: int,
        reason: str,
        *,
        now: datetime | None = None,
        source: str = UNKNOWN_ADDRESS,
    ) -> ClientRecord:
        now = resolve_now(now, utcnow)
        detail: Detail = {"amount": amount, "reason": reason}
        audit = self._admin(AuditAction.CLIENT_CREDITS, client_id, source, now, detail)
        record = self._mutate(client_id, now, changes.add_credits(amount, reason, now), audit=audit)
        logger.info("Added %+d credits for %s: %r", amount, client_id, reason)
        return record

    def set_active(
        self,
        client_id: str,
        active: bool,
        *,
        now: datetime | None = None,
        source: str = UNKNOWN_ADDRESS,
    ) -> ClientRecord:
        """(De)activate; done again, it changes nothing but is recorded like the first."""
        now = resolve_now(now, utcnow)
        action = AuditAction.CLIENT_REACTIVATE if active else AuditAction.CLIENT_DEACTIVATE
        audit = self._admin(action, client_id, source, now, {})
        record = self._mutate(client_id, now, changes.set_active(active, now), audit=audit)
        logger.info("%s client %s", "Reactivated" if active else "Deactivated", client_id)
        return record

    # -- keys and access policy ------------------------------------------------------------

    def issue_key(
        self,
        client_id: str,
        *,
        label: str | None = None,
        expires_at: datetime | None = None,
        now: datetime | None = None,
        source: str = UNKNOWN_ADDRESS,
    ) -> tuple[ClientRecord, ApiKeyRecord, str]:
        """Another key for the client; returns the record, the new key's record and the
        plaintext key (shown once, never stored)."""
        now = resolve_now(now, utcnow)
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest("expires_at must be in the future")
        key = generate_key()
        key_record = new_key_record(key, now, label=label)
        key_record.expires_at = expires_at
        detail = {"key_id": key_record.key_id, "expires_at": _iso(expires_at)}
        audit = self._admin(AuditAction.KEY_ISSUE, client_id, source, now, detail)
        change = changes.issue_key(key_record, now)
        with _invalid_request():
            record = self._mutate(client_id, now, change, audit=audit)
        logger.info("Issued key %s for %s", key_record.key_id, client_id)
        return record, key_record, key

    def rotate_key(
        self,
        client_id: str,
        key_id: str,
        *,
        grace: timedelta,
        label: str | None = None,
        now: datetime | None = None,
        source: str = UNKNOWN_ADDRESS,
    ) -> tuple[ClientRecord, ApiKeyRecord, str]:
        """A new key that works at once; the old one keeps working for ``grace``, then stops.
        If the rotation cannot be recorded, nothing changes: the old key never stops with the
        new one unseen."""
        now = resolve_now(now, utcnow)
        key = generate_key()
        key_record = new_key_record(key, now, label=label)
        detail: Detail = {
            "key_id": key_id,
            "new_key_id": key_record.key_id,
            "grace_seconds": int(grace.total_seconds()),
        }
        audit = self._admin(AuditAction.KEY_ROTATE, client_id, source, now, detail)
        change = changes.rotate_key(key_id, key_record, grace, now)
        record = self._mutate(client_id, now, change, audit=audit)
        logger.info(
            "Rotated key %s of %s to %s (grace %ds)",
            key_id,
            client_id,
            key_record.key_id,
            grace.total_seconds(),
        )
        return record, key_record, key

    def revoke_key(
        self,
        client_id: str,
        key_id: str,
        *,
        now: datetime | None = None,
        source: str = UNKNOWN_ADDRESS,
    ) -> ClientRecord:
        """Revoke a key; revoking it again changes nothing but is recorded like the first."""
        now = resolve_now(now, utcnow)
        audit = self._admin(AuditAction.KEY_REVOKE, client_id, source, now, {"key_id": key_id})
        record = self._mutate(client_id, now, changes.revoke_key(key_id, now), audit=audit)
        logger.info("Revoked key %s of %s", key_id, client_id)
        return record

    def set_key_expiry(
        self,
        client_id: str,
        key_id: str,
        expires_at: datetime | None,
        *,
        now: datetime | None = None,
        source: str = UNKNOWN_ADDRESS,
    ) -> ClientRecord:
        """Set (or clear) when a key stops working; a past time is ``InvalidRequest``."""
        now = resolve_now(now, utcnow)
        detail = {"key_id": key_id, "expires_at": _iso(expires_at)}
        audit = self._admin(AuditAction.KEY_EXPIRY, client_id, source, now, detail)
        change = changes.set_key_expiry(key_id, expires_at, now)
        with _invalid_request():
            return self._mutate(client_id, now, change, audit=audit)

    def set_policy(
        self,
        client_id: str,
        *,
        rate_limit_per_minute: int | None,
        ip_allowlist: list[str],
        max_active_jobs: int | EllipsisType | None = ...,
        now: datetime | None = None,
        source: str = UNKNOWN_ADDRESS,
    ) -> ClientRecord:
        """Set the client's rate-limit override and IP allowlist, and its cap of jobs queued
        or running (None: the plan's; ``...``: unchanged) (validated: ``InvalidRequest``)."""
        with _invalid_request():
            parse_networks(ip_allowlist, "ip_allowlist")  # refuse before taking any lock
        now = resolve_now(now, utcnow)
        change = changes.set_policy(
            now,
            rate_limit_per_minute=rate_limit_per_minute,
            ip_allowlist=ip_allowlist,
            max_active_jobs=max_active_jobs,
        )

        def audit(record: ClientRecord) -> NewAuditEvent | None:
            detail: Detail = {
                "rate_limit_per_minute": record.rate_limit_per_minute,
                "ip_allowlist": list(record.ip_allowlist),  # as normalised and stored
                "max_active_jobs": record.max_active_jobs,
            }
            return self._event(AuditAction.CLIENT_POLICY, client_id, source, now, detail)

        with _invalid_request():
            return self._mutate(client_id, now, change, audit=audit)

    def change_plan(
        self,
        client_id: str,
        plan: PlanId,
        *,
        now: datetime | None = None,
        source: str = UNKNOWN_ADDRESS,
    ) -> tuple[PlanId, ClientRecord]:
        """Move the client to ``plan``; returns the plan it left and the record."""
        now = resolve_now(now, utcnow)

        def audit(result: tuple[PlanId, ClientRecord]) -> NewAuditEvent | None:
            detail = {"from": result[0].value, "to": plan.value}  # as it was under the lock
            return self._event(AuditAction.CLIENT_PLAN_CHANGE, client_id, source, now, detail)

        change = changes.change_plan(plan, now)
        left, record = self._mutate(client_id, now, change, audit=audit)
        logger.info("Changed plan of %s from %s to %s", client_id, left.value, plan.value)
        return left, record

    # -- the one write of every change above ---------------------------------------------------

    def _mutate(self, client_id: str, now: datetime, change: Change[T], audit: AuditFor[T]) -> T:
        """``Store.mutate`` through the worker's committer (batched with the changes that
        arrive together), then this process forgets what it cached about the client's keys
        (a revoked key, a deactivated client, a new allowlist or plan is seen by the next
        request, not ``OPENCLAW_KEY_CACHE_SECONDS`` later). Forgotten whatever the outcome:
        a refused change may still have written a due reset, and forgetting costs one read."""
        try:
            return cast(T, self.committer.run(Mutation(client_id, now, change, audit)))
        finally:
            self.key_cache.forget_client(client_id)

    # -- audit events -----------------------------------------------------------------------------

    def _event(
        self,
        action: AuditAction,
        client_id: str | None,
        source: str,
        at: datetime,
        detail: Detail | None,
        *,
        actor: str | None = None,
    ) -> NewAuditEvent | None:
        """The event to record. A detail the secret guard refuses (see
        :mod:`openclaw_billing.audit`), or one holding a secret this process is configured with
        (the admin token, the Stripe keys), is replaced by ``{"detail_refused": true}``; an
        event that cannot be recorded at all (a client id shaped like a key) is None. Both are
        logged as warnings, without the values."""
        if detail and _holds_configured_secret(detail):
            logger.warning("Audit %s: detail refused (holds a configured secret)", action.value)
            detail = {"detail_refused": True}
        address = (source or UNKNOWN_ADDRESS)[:MAX_SOURCE_LENGTH]

        def build(facts: dict[str, DetailValue]) -> NewAuditEvent:
            return NewAuditEvent(
                at=at,
                action=action,
                client_id=client_id,
                actor=actor or self.actor,
                source=address,
                detail=facts,
            )

        try:
            return build(dict(detail or {}))
        except ValidationError as exc:
            logger.warning("Audit %s: detail refused (%s)", action.value, _problems(exc))
            try:
                return build({"detail_refused": True})
            except ValidationError as again:
                logger.warning("Audit %s: not recorded (%s)", action.value, _problems(again))
                return None

    def _admin(
        self, action: AuditAction, client_id: str, source: str, at: datetime, detail: Detail
    ) -> Callable[[object], NewAuditEvent | None]:
        """The audit of an admin action whose event does not depend on the change's result:
        built (and checked) before the store's lock is taken."""
        event = self._event(action, client_id, source, at, detail)
        return lambda _result: event


@contextmanager
def _invalid_request() -> Iterator[None]:
    """The pure rules and the network parser refuse a bad value with ``ValueError`` (a past
    expiry, a malformed network, too many entries): from an admin action, that is the caller's
    input, a 422 ``invalid_request`` with the rule's message."""
    try:
        yield
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _holds_configured_secret(detail: Mapping[str, DetailValue]) -> bool:
    """Whether a detail string contains the admin token or a Stripe secret of the settings
    (these have no recognisable shape, unlike client keys)."""
    configured = get_settings().secrets
    strings = [
        item
        for value in detail.values()
        for item in (value if isinstance(value, list) else [value])
        if isinstance(item, str)
    ]
    return any(secret in item for secret in configured for item in strings)


def _problems(exc: ValidationError) -> str:
    """Where and what, never the input (which may be the very secret refused)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
