"""docs/ARCHITECTURE.md invariants, checked against what a store file holds."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from openclaw_billing.models import ClientRecord
from openclaw_billing.store.json_file import JsonFileStore
from openclaw_billing.store.json_journal import journals
from openclaw_billing.store.migrate import all_clients

KEY_RE = re.compile(rb"oc_live_[0-9a-f]{32}")


def records_of(path: Path) -> list[ClientRecord]:
    return all_clients(JsonFileStore(path))


def check_record(record: ClientRecord) -> None:
    """I1 (never negative), I2 (allowance + adjustments - charged - held == remaining, for the
    current and every summarised cycle: each ledger entry takes its credits, held or charged)
    and I3 (unique job ids in the ledger)."""
    meta = record.metadata
    job_ids = [e.job_id for e in meta.cost_log]
    assert len(job_ids) == len(set(job_ids)), f"duplicate job ids for {record.client_id}"
    if record.credits_remaining is None:
        return
    assert record.credits_remaining >= 0, record.client_id
    allowance = meta.cycle_allowance
    assert allowance is not None
    adjustments = sum(a.amount for a in meta.credit_adjustments)
    charged = sum(e.credits for e in meta.cost_log if not e.held)
    held = sum(e.credits for e in meta.cost_log if e.held)
    assert allowance + adjustments - charged - held == record.credits_remaining, record.client_id
    for past in meta.cycle_history:
        if past.allowance is None or past.credits_left is None:
            continue
        adj = sum(a.amount for a in past.adjustments)
        taken = past.jobs if past.credits is None else past.credits
        assert past.allowance + adj - taken == past.credits_left, record.client_id


def check_store_file(path: Path, keys: Iterable[str] = ()) -> list[ClientRecord]:
    """I6 (parses), I1-I3 per client, I5 (no plaintext key in the snapshot or its journals)."""
    raw = path.read_bytes()
    json.loads(raw)
    keys = list(keys)
    for stored in (raw, *(p.read_bytes() for p in journals(path).values())):
        assert KEY_RE.search(stored) is None, "a plaintext key is stored"
        for key in keys:
            assert key.encode() not in stored
    records = records_of(path)
    for record in records:
        check_record(record)
    return records
