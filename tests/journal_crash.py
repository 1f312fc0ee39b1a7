"""Bodies of the child processes that crash the JSON store's journal and its compaction
(tests/store/test_crash_journal.py). Like tests/store_helpers.py, every function a child runs
is defined in a module, never in a test module."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from openclaw_billing.jobs import NewJob
from openclaw_billing.store import json_replica
from openclaw_billing.store.base import Charge
from openclaw_billing.store.json_file import JsonFileStore
from tests.store_helpers import CRASH_EXIT

#: The steps of a compaction, in order (see ``json_replica.step``).
COMPACTION_STEPS = ["temp-written", "renamed", "journal-started", "old-removed"]
#: The largest batch the child writes.
MOST_PER_BATCH = 4


def job_fields(job_id: str) -> NewJob:
    return NewJob({"prompt": f"work for {job_id}"}, request_hash=f"h-{job_id}")


def batch_of(client_ids: list[str], prefix: str, n: int, now: datetime) -> list[Charge]:
    """Batch ``n`` of the child: 1 to :data:`MOST_PER_BATCH` charges, each with its job."""
    size = 1 + n % MOST_PER_BATCH
    ids = [f"{prefix}-{n}-{i}" for i in range(size)]
    return [
        Charge(client_ids[(n + i) % len(client_ids)], job_id, 0.25, now, job=job_fields(job_id))
        for i, job_id in enumerate(ids)
    ]


def charge_jobs_forever(
    path: str,
    client_ids: list[str],
    prefix: str,
    acks: str,
    compact_bytes: int,
    acked: Any,
    now: datetime,
) -> None:
    """Child: batches of charges with their jobs until killed, compacting whenever the journal
    passes ``compact_bytes``. Once a batch has returned, its job ids are appended to ``acks``
    and fsynced (what the child told its callers was done); ``acked.value`` counts batches."""
    json_replica.COMPACT_MIN = json_replica.COMPACT_MAX = compact_bytes
    store = JsonFileStore(path)
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    n = 0
    while True:
        batch = batch_of(client_ids, prefix, n, now)
        outcomes = store.mutate_batch(batch)
        if any(o.error is not None for o in outcomes):
            os._exit(3)  # the test would see no progress: a refusal is a bug here
        os.write(fd, "".join(f"{op.job_id}\n" for op in batch).encode())
        os.fsync(fd)
        n += 1
        acked.value = n


def die_in_compaction(path: str, client_id: str, job_id: str, at_step: str, now: datetime) -> None:
    """Child: charge one job (with its job fields) with every write compacting, and die at the
    compaction's step ``at_step``: after the charge's line is written, before it returned."""

    def step(name: str) -> None:
        if name == at_step:
            os._exit(CRASH_EXIT)

    json_replica.COMPACT_MAX = 1
    json_replica.step = step
    JsonFileStore(path).accept(Charge(client_id, job_id, 0.25, now, job=job_fields(job_id)))
    os._exit(0)  # not reached: every step of the compaction runs


def acked_ids(acks: Path) -> list[str]:
    """The job ids the child acknowledged (an ack cut short by the kill is not one)."""
    if not acks.exists():
        return []
    raw = acks.read_bytes()
    return raw[: raw.rfind(b"\n") + 1].decode().split()
