"""The hold sweeper: a background task in each worker that expires the jobs whose hold
outlived its time to live (see :meth:`.job_actions.JobActions.sweep`), so a runner that died
never leaves a client's credits held, even when no request arrives; then, in the same pass,
sends the usage reports waiting in the meter outbox to Stripe
(:mod:`.stripe_billing.meter_outbox`), so a report left pending while Stripe was down is sent
at a later pass.

Every worker of every instance runs one; they need no coordination: each expiry is one atomic
step that changes a job only while it is still open, so two workers racing on the same job
expire it once (and the meter outbox's reports are safe to send from several workers at
once). A pass that fails (the store is down, a bug) is logged and retried at the next one.

The passes come every ``OPENCLAW_SWEEP_SECONDS`` (30 by default, :mod:`.settings`), with up to
20% jitter, so the workers of an instance started together do not sweep in step.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from .errors import BillingError
from .service import BillingService, get_service
from .settings import get_settings
from .stripe_billing.meter_outbox import MeterSender

logger = logging.getLogger("openclaw_billing")


async def sweep_forever(
    service: Callable[[], BillingService] = get_service, interval: float | None = None
) -> None:
    """Sweep every ``interval`` seconds (None: ``OPENCLAW_SWEEP_SECONDS``) until cancelled."""
    if interval is None:
        interval = get_settings().sweep_seconds
    sender: MeterSender | None = None
    while True:
        await asyncio.sleep(interval * (1 + random.random() / 5))  # noqa: S311 - jitter only
        try:
            current = service()
            if sender is None or sender.service is not current:
                sender = MeterSender.from_settings(current, get_settings())
            await asyncio.to_thread(sweep_pass, current, sender)
        except BillingError as exc:
            logger.warning("The hold sweeper could not run: %s", exc.code)
        except Exception:  # a bug must not stop the worker's sweeping for good
            logger.exception("The hold sweeper's pass failed")


def sweep_pass(service: BillingService, sender: MeterSender) -> None:
    """One pass: sweep until nothing overdue is left (each sweep releases a batch), then send
    the meter outbox's pending reports."""
    while service.sweep():
        pass
    sender.send_pending()


@asynccontextmanager
async def hold_sweeper(
    app: Any = None,
    *,
    service: Callable[[], BillingService] = get_service,
    interval: float | None = None,
) -> AsyncIterator[None]:
    """Run the sweeper for as long as the block (or the app, as its ``lifespan``) lives,
    a pass every ``interval`` seconds (None: ``OPENCLAW_SWEEP_SECONDS``)."""
    task = asyncio.create_task(sweep_forever(service, interval), name="openclaw-hold-sweeper")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
