"""What some backends can do beyond the :class:`~.base.Store` primitives, as protocols of
their own (as ``limits`` keeps moving-window support apart from its storage base): code that
needs a capability checks for it with ``isinstance`` and refuses clearly when a store lacks it,
so a backend that cannot offer it still implements the whole Store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class EventIdTransfer(Protocol):
    """Hands over the processed Stripe event ids, so that a copy to another backend keeps
    every event applied once (:mod:`.migrate`). The JSON and SQL stores have it."""

    def stripe_event_ids(self) -> dict[str, datetime]:
        """Every remembered Stripe event id and when it was processed."""

    def import_stripe_event_ids(self, events: dict[str, datetime]) -> None:
        """Remember these event ids as processed; ids already known stay."""
