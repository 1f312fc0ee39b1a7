"""Capabilities a backend may lack are protocols of their own (openclaw_billing/store/
capabilities.py); code that needs one refuses clearly a store without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from openclaw_billing.errors import ConfigurationError
from openclaw_billing.store import JsonFileStore
from openclaw_billing.store.capabilities import EventIdTransfer
from openclaw_billing.store.migrate import copy_store
from tests.backends import add_client
from tests.primitives_only import PrimitivesOnly


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
