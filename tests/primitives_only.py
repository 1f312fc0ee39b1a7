"""A store with every Store primitive and no capability (no Stripe event transfer, no job
storage): each call goes to a JSON store. What a host's own Store implementation may be."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from openclaw_billing.models import ClientRecord
from openclaw_billing.store import ClientQuery, JsonFileStore, Store, StoreOverview
from openclaw_billing.store.base import Operation, Outcome
from openclaw_billing.store.query import FIRST_PAGE


class PrimitivesOnly(Store):
    """A store with every Store primitive and no capability: each call goes to a JSON store."""

    def __init__(self, inner: JsonFileStore) -> None:
        self.inner, self.location, self.audit = inner, "primitives://only", inner.audit
        self.sessions = inner.sessions

    def create_client(self, record: ClientRecord, *, audit: Any = None) -> None:
        self.inner.create_client(record, audit=audit)

    def mutate_batch(self, batch: Sequence[Operation]) -> list[Outcome[Any]]:
        return self.inner.mutate_batch(batch)

    def get_client(self, client_id: str) -> ClientRecord | None:
        return self.inner.get_client(client_id)

    def get_client_by_key_digest(self, digest: str, *, ledger: bool = True) -> ClientRecord | None:
        return self.inner.get_client_by_key_digest(digest, ledger=ledger)

    def list_clients(self, query: ClientQuery = FIRST_PAGE) -> tuple[list[ClientRecord], int]:
        return self.inner.list_clients(query)

    def overview(self, now: datetime) -> StoreOverview:
        return self.inner.overview(now)

    def touch_key(self, *args: Any) -> None:
        self.inner.touch_key(*args)

    def find_client_by_stripe(self, **ids: Any) -> ClientRecord | None:
        return self.inner.find_client_by_stripe(**ids)

    def apply_stripe_event(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.apply_stripe_event(*args, **kwargs)

    def check(self) -> None:
        self.inner.check()
