"""Capabilities a backend may lack are protocols of their own (openclaw_billing/store/
capabilities.py); code that needs one refuses clearly a store without it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from openclaw_billing.errors import ConfigurationError
from openclaw_billing.models import ClientRecord
from openclaw_billing.store import ClientQuery, JsonFileStore, Store, StoreOverview
from openclaw_billing.store.base import Operation, Outcome
from openclaw_billing.store.capabilities import EventIdTransfer
from openclaw_billing.store.migrate import copy_store
from openclaw_billing.store.query import FIRST_PAGE
from tests.backends import add_client


class PrimitivesOnly(Store):
    """A store with every Store primitive and no capability: each call goes to a JSON store."""

    def __init__(self, inner: JsonFileStore) -> None:
        self.inner, self.location, self.audit = inner, "primitives://only", inner.audit

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


def test_a_store_with_the_primitives_only_is_a_store_but_cannot_be_copied(tmp_path: Path) -> None:
    source = PrimitivesOnly(JsonFileStore(tmp_path / "source.json"))
    add_client(source)  # every primitive the service needs is there
    assert not isinstance(source, EventIdTransfer)
    target = JsonFileStore(tmp_path / "target.json")
    assert isinstance(target, EventIdTransfer)
    for a, b in ((source, target), (target, source)):
        with pytest.raises(ConfigurationError, match="cannot hand over its processed Stripe"):
            copy_store(a, b)
    assert target.list_clients() == ([], 0)  # refused before anything was copied
