"""Charging, as the service does it: a charge checked at the edge (:meth:`charge_of`),
committed through the worker's committer with the changes that arrive together (:meth:`charge`
for threads, :meth:`accept` for the gateway's intake), and the refund of a job that could not
be queued. The rules are :func:`openclaw_billing.jobs.accept` and
:func:`openclaw_billing.ledger.charge`, applied by the store in one atomic step.

A mixin of :class:`~.service.BillingService` (as :mod:`.admin` and :mod:`.job_actions`, which
builds on it to reserve a job's price).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import datetime, timedelta

from .admin import AdminActions
from .cycles import resolve_now, utcnow
from .errors import ClientNotFound
from .jobs import Charged, NewJob
from .models import ChargeResult
from .safetext import is_one_line
from .store.base import Charge

logger = logging.getLogger("openclaw_billing")

#: Bounds on what a caller may pass for a job (the ledger is the record of money).
MAX_JOB_ID_LENGTH = 200
MAX_JOB_COST = 1_000_000.0


class ChargeActions(AdminActions):
    """The charge actions (``store`` and ``committer`` come from
    :class:`~.admin.AdminActions`)."""

    #: How long every job reserved through this service holds its price (None: each plan's
    #: own time to live); set by the service from ``OPENCLAW_HOLD_TTL_SECONDS``.
    hold_ttl: timedelta | None = None

    def charge(
        self,
        client_id: str,
        *,
        job_id: str | None = None,
        cost: float = 0.0,
        now: datetime | None = None,
        key_id: str | None = None,
    ) -> ChargeResult:
        """Atomic check-and-charge of one job (see ``Store.charge``), committed with the
        changes that arrive together (see :mod:`.committer`). ``key_id``: the key the caller
        was authenticated with, checked again in the charge's atomic step."""
        charge = self.charge_of(client_id, job_id=job_id, cost=cost, now=now, key_id=key_id)
        return self.settled(self.committer.run(charge)).charge

    async def accept(self, charge: Charge) -> Charged:
        """Charge a job and store it in one atomic step (see ``Store.accept``), committed with
        the changes that arrive together; for async callers (the gateway's intake). A
        ``charge.now`` without a time zone raises ``ValueError`` (see :meth:`charge_of`)."""
        resolve_now(charge.now, utcnow)
        return self.settled(await self.committer.run_async(charge))

    def charge_of(
        self,
        client_id: str,
        *,
        job_id: str | None = None,
        cost: float = 0.0,
        now: datetime | None = None,
        job: NewJob | None = None,
        key_id: str | None = None,
    ) -> Charge:
        """A charge checked at the edge: ``job_id`` (a new UUID when None) and ``cost`` within
        their bounds and ``now`` (the current time when None) with a time zone
        (``ValueError``), ``client_id`` one line (else ``ClientNotFound``). A reserved job
        without a time to live of its own gets :attr:`hold_ttl`, when one is set."""
        job_id = job_id if job_id is not None else str(uuid.uuid4())
        if not isinstance(job_id, str) or not 0 < len(job_id) <= MAX_JOB_ID_LENGTH:
            raise ValueError(f"job_id must be 1 to {MAX_JOB_ID_LENGTH} characters")
        if not is_one_line(job_id):
            raise ValueError("job_id must be one line without control characters")
        try:
            amount = float(cost)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"cost must be a number between 0 and {MAX_JOB_COST}") from None
        if not 0 <= amount <= MAX_JOB_COST:  # also refuses NaN and infinity
            raise ValueError(f"cost must be between 0 and {MAX_JOB_COST}")
        if not isinstance(client_id, str) or not is_one_line(client_id):
            raise ClientNotFound()  # no stored client has such an id (SQL cannot hold a NUL)
        at = resolve_now(now, utcnow)
        if job is not None and job.price is not None and job.hold_ttl is None and self.hold_ttl:
            job = replace(job, hold_ttl=self.hold_ttl)
        return Charge(client_id, job_id, amount, at, job=job, key_id=key_id)

    @staticmethod
    def settled(charged: Charged) -> Charged:
        """The summary's log line of a charge that was made (a replay logs nothing)."""
        result = charged.charge
        if result.replayed:
            pass
        elif result.credits_remaining is None:
            logger.info(
                "Logged job for %s (unlimited plan): job submission %s",
                result.client_id,
                result.job_id,
            )
        else:
            logger.info(
                "Deducted credit for %s: job submission %s", result.client_id, result.job_id
            )
        return charged

    def refund(self, client_id: str, job_id: str, *, now: datetime | None = None) -> bool:
        """Give back the credit of a charged job that could not be queued."""
        refunded = self.store.refund(client_id, job_id, resolve_now(now, utcnow))
        if refunded:
            logger.warning("Refunded credit for %s: job %s was not queued", client_id, job_id)
        return refunded
