"""The hold sweeper: a background task in each worker that expires the jobs whose hold
outlived its time to live (see :meth:`.job_actions.JobActions.sweep`), so a runner that died
never leaves a client's credits held, even when no request arrives.

Every worker of every instance runs one; they need no coordination: each expiry is one atomic
step that changes a job only while it is still open, so two workers racing on the same job
expire it once. A pass that fails (the store is down) is logged and retried at the next one.

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

logger = logging.getLogger("openclaw_billing")


async def sweep_forever(
    service: Callable[[], BillingService] = get_service, interval: float | None = None
) -> None:
    """Sweep every ``interval`` seconds (None: ``OPENCLAW_SWEEP_SECONDS``) until cancelled."""
    if interval is None:
        interval = get_settings().sweep_seconds
    while True:
        await asyncio.sleep(interval * (1 + random.random() / 5))  # noqa: S311 - jitter only
        try:
            await asyncio.to_thread(_sweep_all, service())
        except BillingError as exc:
            logger.warning("The hold sweeper could not run: %s", exc.code)


def _sweep_all(service: BillingService) -> None:
    """One pass: sweep until nothing overdue is left (each sweep releases a batch)."""
    while service.sweep():
        pass


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
