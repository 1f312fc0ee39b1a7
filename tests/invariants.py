"""docs/ARCHITECTURE.md invariants, checked against what a store file holds."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from openclaw_billing.jobs import StoredJob
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


def check_jobs(record: ClientRecord, jobs: Iterable[StoredJob]) -> None:
    """I7 (every held ledger entry of the cycle is the hold of an open job, for its
    reservation) and I8 (a settled receipt: charged + released == reserved, the charge within
    the reservation and ``max_credits``, the reservation within ``max_credits``)."""
    by_id = {job.job_id: job for job in jobs}
    for entry in record.metadata.cost_log:
        if not entry.held:
            continue
        job = by_id.get(entry.job_id)
        assert job is not None, f"a hold without its job: {entry.job_id}"
        assert job.holding, f"a hold of a job no longer open: {entry.job_id}"
        assert job.receipt is not None
        assert job.receipt.reserved == entry.credits, entry.job_id
    for job in by_id.values():
        receipt = job.receipt
        if receipt is None:
            continue  # charged at intake, before charging by outcome
        cap = receipt.max_credits
        assert cap is None or receipt.reserved <= cap, job.job_id
        if receipt.held:
            assert receipt.released is None, job.job_id
            continue
        charged, released = receipt.charged, receipt.released
        assert charged is not None, job.job_id
        assert released is not None, job.job_id
        assert charged + released == receipt.reserved, job.job_id
        assert cap is None or charged <= cap, job.job_id


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
