"""Reading a client's jobs for its pages (the operator console's client page and the client
portal's dashboard): the jobs of the current billing cycle, with their status and receipt,
and any older job still open (queued or running, so still holding its credits).

A mixin of :class:`~.service.BillingService`, which gives it ``store``; it reads through the
store's :class:`~.store.capabilities.JobStorage` capability, and answers None for a store
that keeps no jobs (a host's own store: the gateway then keeps them in its job file).
"""

from __future__ import annotations

from .jobs import StoredJob
from .models import ClientRecord
from .plans import PLANS
from .store import Store
from .store.capabilities import JobStorage

#: The longest time to live of any plan's hold: a job created this long before the cycle
#: began may still be open (an older one is past its hold, which the sweeper releases).
LONGEST_HOLD = max(plan.hold_ttl for plan in PLANS.values())


class JobReads:
    """The reads of a client's jobs (``store`` comes from the service)."""

    store: Store

    def recent_jobs(self, record: ClientRecord) -> list[StoredJob] | None:
        """The jobs of ``record``'s current cycle and any older job still open, newest first;
        None when the store keeps no jobs. ``record``'s cycle is taken as it is given (read it
        with ``get_client`` to have it brought up to date)."""
        store = self.store
        if not isinstance(store, JobStorage):
            return None
        start = record.billing_cycle_start
        found = store.client_jobs(record.client_id, start - LONGEST_HOLD)
        return [job for job in reversed(found) if job.created_at >= start or job.status.open]
