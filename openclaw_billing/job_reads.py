"""Reading a client's jobs for its pages (the operator console's client page and the client
portal's dashboard): the jobs of the current billing cycle, with their status and receipt,
and any older job still open (queued or running, so still holding its credits); and how many
of its jobs hold credits now (its usage, the admin's client detail, the console).

A mixin of :class:`~.service.BillingService`, which gives it ``store``; it reads through the
store's :class:`~.store.capabilities.JobStorage` capability. For a store that keeps no jobs
(a host's own store: the gateway then keeps them in its job file) the recent jobs are None and
the jobs holding credits are counted in the ledger.
"""

from __future__ import annotations

from datetime import timedelta

from .jobs import StoredJob
from .ledger import open_holds
from .models import ClientRecord
from .plans import PLANS
from .store import Store
from .store.capabilities import JobStorage

#: The longest time to live of any plan's hold: a job created this long before the cycle
#: began may still be open (an older one is past its hold, which the sweeper releases).
LONGEST_HOLD = max(plan.hold_ttl for plan in PLANS.values())


class JobReads:
    """The reads of a client's jobs (``store`` and ``hold_ttl`` come from the service)."""

    store: Store
    hold_ttl: timedelta | None

    def active_jobs(self, record: ClientRecord) -> int:
        """How many of ``record``'s jobs hold credits now (queued or running): what its
        concurrency cap counts, asked of the store (``JobStorage.active_jobs``: the very count
        its reservation step checks the cap with). A store that keeps no jobs (a host's own)
        has its holds in the ledger only: they are counted there
        (:func:`.ledger.open_holds`)."""
        store = self.store
        if isinstance(store, JobStorage):
            return store.active_jobs(record.client_id)
        return open_holds(record)

    def recent_jobs(self, record: ClientRecord) -> list[StoredJob] | None:
        """The jobs of ``record``'s current cycle and any older job still open, newest first;
        None when the store keeps no jobs. ``record``'s cycle is taken as it is given (read it
        with ``get_client`` to have it brought up to date)."""
        store = self.store
        if not isinstance(store, JobStorage):
            return None
        start = record.billing_cycle_start
        found = store.client_jobs(record.client_id, start - self._longest_hold())
        return [job for job in reversed(found) if job.created_at >= start or job.status.open]

    def _longest_hold(self) -> timedelta:
        """The longest a job may hold its price: the plans' longest time to live, or the one
        set for every plan (``OPENCLAW_HOLD_TTL_SECONDS``) when longer."""
        return max(LONGEST_HOLD, self.hold_ttl or LONGEST_HOLD)
