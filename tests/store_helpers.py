"""Helpers for the JSON store tests: records, and the bodies of child processes.

Child processes come from the "forkserver" context with this module preloaded, so starting one
costs milliseconds and never inherits the parent's threads or locks. Every function a child runs
is defined here (importable by name), never in a test module.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import random
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

from openclaw_billing.access import new_client
from openclaw_billing.errors import BillingError
from openclaw_billing.jobs import NewJob
from openclaw_billing.keys import generate_key
from openclaw_billing.models import ChargeResult, ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store import audit_json, files, json_replica
from openclaw_billing.store.base import Charge, Store
from openclaw_billing.store.json_file import JsonFileStore

#: The summary's example instant; every test passes time explicitly.
T0 = datetime(2026, 2, 19, 10, 30, tzinfo=UTC)
CYCLE = timedelta(days=30)
#: Bound on any wait for a child process or a barrier: a hang fails the test, never blocks it.
WAIT = 60.0
CRASH_EXIT = 137
#: The job a crashing charge accepts with it.
CRASH_JOB = NewJob({"prompt": "crash test"})

#: (job_id, outcome, result): outcome is "ok", "limit" or the name of another error.
Outcome = tuple[str, str, ChargeResult | None]


def mp_context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def make_record(
    client_id: str,
    plan: PlanId = PlanId.PRO,
    *,
    allowance: int | None = None,
    now: datetime = T0,
    active: bool = True,
) -> tuple[ClientRecord, str]:
    """A new client record as the service creates it; ``allowance`` overrides the plan's
    credits for a limited plan. Returns the record and its plaintext key."""
    key = generate_key()
    record = new_client(
        client_id=client_id,
        name=f"Client {client_id}",
        email=f"{client_id}@acmecorp.com",
        plan=plan,
        key=key,
        now=now,
    )
    if record.credits_remaining is not None and allowance is not None:
        record.credits_remaining = record.metadata.cycle_allowance = allowance
    record.active = active
    return record, key


def temp_files(path: Path) -> list[Path]:
    """Temp files a write to ``path`` may leave behind (the store sweeps these on open)."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def ledger_ids(record: ClientRecord) -> list[str]:
    return [entry.job_id for entry in record.metadata.cost_log]


# -- charging from threads and processes ---------------------------------------------------


def charge_jobs(
    store: Store, client_id: str, jobs: Sequence[tuple[str, datetime]], cost: float = 0.5
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for job_id, now in jobs:
        try:
            result = store.charge(client_id, job_id, cost, now)
        except BillingError as exc:
            name = "limit" if exc.code == "credit_limit_reached" else type(exc).__name__
            outcomes.append((job_id, name, None))
        else:
            outcomes.append((job_id, "ok", result))
    return outcomes


def charge_in_threads(
    store: Store,
    client_id: str,
    batches: Sequence[Sequence[tuple[str, datetime]]],
    barrier: Barrier | threading.Barrier,
) -> list[Outcome]:
    """One thread per batch, all released together by ``barrier``; the outcomes of all."""
    results: list[list[Outcome]] = [[] for _ in batches]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait(WAIT)
            results[index] = charge_jobs(store, client_id, batches[index])
        except BaseException as exc:  # reported to the caller, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    if errors:
        raise errors[0]
    assert not any(t.is_alive() for t in threads), "a charging thread did not finish"
    return [outcome for batch in results for outcome in batch]


def charge_process(
    path: str,
    client_id: str,
    batches: list[list[tuple[str, datetime]]],
    barrier: Barrier,
    out: Queue[Any],
) -> None:
    """Child: open its own store on ``path`` and charge each batch from its own thread."""
    try:
        store = JsonFileStore(path)
        out.put(("ok", charge_in_threads(store, client_id, batches, barrier)))
    except BaseException:
        out.put(("error", traceback.format_exc()))


def collect(procs: Sequence[BaseProcess], out: Queue[Any]) -> list[Any]:
    """The results ``charge_process`` children put on ``out`` (one each), then join them."""
    results: list[Any] = []
    for _ in procs:
        status, value = out.get(timeout=WAIT)
        assert status == "ok", value
        results.extend(value)
    for proc in procs:
        proc.join(WAIT)
        assert proc.exitcode == 0, proc.exitcode
    return results


# -- holding the lock from another process ---------------------------------------------------


def hold_lock(lock_path: str, held: Event, release: Event) -> None:
    """Child: take the store's ``flock`` as another worker would, until told to let go."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    held.set()
    release.wait(WAIT)
    os.close(fd)


# -- crashing inside the write protocol ------------------------------------------------------


class _Crash:
    """Counts the I/O steps of the store's write protocol and kills the process at one."""

    def __init__(self, crash_at: int) -> None:
        self.crash_at = crash_at
        self.steps: list[str] = []

    def step(self, name: str) -> bool:
        """Record a step; True when the process must die at it."""
        self.steps.append(name)
        return len(self.steps) == self.crash_at


class _CrashingFile:
    def __init__(self, crash: _Crash, handle: Any) -> None:
        self._crash = crash
        self._handle = handle

    def __enter__(self) -> _CrashingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def fileno(self) -> int:
        fd: int = self._handle.fileno()
        return fd

    def write(self, data: bytes) -> int:
        if self._crash.step("write"):
            # Die mid-write with part of the data really in the file.
            self._handle.write(data[: len(data) // 2])
            self._handle.flush()
            os._exit(CRASH_EXIT)
        written: int = self._handle.write(data)
        return written

    def flush(self) -> None:
        if self._crash.step("flush"):
            os._exit(CRASH_EXIT)
        self._handle.flush()


class _CrashingOs:
    """Stands in for ``os`` inside the JSON store's modules (``json_replica``, ``files``)."""

    def __init__(self, crash: _Crash) -> None:
        self._crash = crash

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _maybe_die(self, name: str) -> None:
        if self._crash.step(name):
            os._exit(CRASH_EXIT)

    def fdopen(self, fd: int, mode: str) -> _CrashingFile:
        self._maybe_die("fdopen")  # the temp file exists, nothing written yet
        return _CrashingFile(self._crash, os.fdopen(fd, mode))

    def fsync(self, fd: int) -> None:
        self._maybe_die("fsync")
        os.fsync(fd)

    def replace(self, src: str, dst: str | Path) -> None:
        self._maybe_die("replace")
        os.replace(src, dst)

    def open(self, path: str | Path, flags: int, mode: int = 0o777) -> int:
        self._maybe_die("open")
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        self._maybe_die("close")
        os.close(fd)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        """An append (the journal's, the audit log's): dies half way through, that half on
        disk."""
        if self._crash.step("os.write"):
            os.write(fd, bytes(data[: len(data) // 2]))
            os._exit(CRASH_EXIT)
        return os.write(fd, data)


class _CrashingTempfile:
    def __init__(self, crash: _Crash) -> None:
        self._crash = crash

    def __getattr__(self, name: str) -> Any:
        return getattr(tempfile, name)

    def mkstemp(self, **kwargs: Any) -> tuple[int, str]:
        if self._crash.step("mkstemp"):
            os._exit(CRASH_EXIT)
        return tempfile.mkstemp(**kwargs)


def _hook(crash: _Crash) -> None:
    for module in (json_replica, files):
        module.__dict__["os"] = _CrashingOs(crash)
        module.__dict__["tempfile"] = _CrashingTempfile(crash)


def crash_during_charge(
    path: str, client_id: str, job_id: str, now: datetime, crash_at: int, out: Queue[Any]
) -> None:
    """Child: open the store, then charge one job (with its job fields), dying at I/O step
    ``crash_at`` of the write (0: never). A run that does not die reports the steps it went
    through."""
    store = JsonFileStore(path)  # opened before the hooks: its sweep is not under test here
    crash = _Crash(crash_at)
    _hook(crash)
    result = store.accept(Charge(client_id, job_id, 1.5, now, job=CRASH_JOB))
    out.put((crash.steps, result.charge))


def crash_during_admin_action(
    path: str, client_id: str, now: datetime, crash_at: int, out: Queue[Any]
) -> None:
    """Child: open the store, then add 5 credits as an admin would (the change and its audit
    event), dying at I/O step ``crash_at`` of the store's write or of the audit log's append
    (0: never). A run that does not die reports the steps it went through."""
    store = JsonFileStore(path)
    crash = _Crash(crash_at)
    _hook(crash)
    audit_json.__dict__["os"] = _CrashingOs(crash)
    BillingService(store).add_credits(client_id, 5, "crash test", now=now, source="203.0.113.9")
    out.put(crash.steps)


# -- kill -9 under load ----------------------------------------------------------------------


def kill_after_acks(
    ctx: ForkServerContext,
    forever: Callable[..., None],
    args: tuple[Any, ...],
    rng: random.Random,
    *,
    most: int,
    linger: float,
) -> int:
    """Run ``forever(*args, acked, T0)`` in a child; once it has acknowledged a random number
    (1 to ``most``) of writes, wait up to ``linger`` seconds more (to land anywhere in a later
    write) and kill -9 it. Returns how many writes it acknowledged."""
    # No lock: a child killed while holding a Value's lock would leave every later read of
    # it waiting for ever. One aligned int is written and read whole.
    acked = ctx.Value("i", 0, lock=False)
    writer = ctx.Process(target=forever, args=(*args, acked, T0))
    writer.start()
    target = rng.randint(1, most)
    deadline = time.monotonic() + WAIT
    while acked.value < target:  # bounded polling for progress
        assert writer.is_alive(), writer.exitcode
        assert time.monotonic() < deadline, "the writer made no progress"
        time.sleep(0.001)
    time.sleep(rng.uniform(0, linger))
    writer.kill()
    writer.join(WAIT)
    assert writer.exitcode == -signal.SIGKILL
    return int(acked.value)


def write_forever(path: str, client_id: str, prefix: str, acked: Any, now: datetime) -> None:
    """Child: charge ``prefix-0``, ``prefix-1``, ... (with a small top-up every few jobs) until
    killed; ``acked.value`` is the number of charges that have returned."""
    store = JsonFileStore(path)
    i = 0
    while True:
        store.charge(client_id, f"{prefix}-{i}", 0.25, now)
        i += 1
        acked.value = i
        if i % 7 == 0:
            store.add_credits(client_id, 1, "top-up", now)


def admin_forever(path: str, client_id: str, prefix: str, acked: Any, now: datetime) -> None:
    """Child: add a credit with the reason ``prefix-0``, ``prefix-1``, ... (each an admin action
    with its audit event) until killed; ``acked.value`` counts those that returned."""
    service = BillingService(JsonFileStore(path))
    i = 0
    while True:
        service.add_credits(client_id, 1, f"{prefix}-{i}", now=now, source="203.0.113.9")
        i += 1
        acked.value = i


# -- the original module's file format -------------------------------------------------------


def legacy_record(
    client_id: str,
    key: str,
    plan: PlanId = PlanId.PRO,
    *,
    credits: int | None = 198,
    jobs: Sequence[tuple[str, float]] = (("job-legacy-1", 5.5),),
    adjustments: Sequence[tuple[int, str]] = (),
) -> dict[str, Any]:
    """A client record exactly as the original module wrote it (plaintext ``api_key``)."""
    return {
        "client_id": client_id,
        "name": f"Company {client_id}",
        "email": f"contact@{client_id}.example.com",
        "api_key": key,
        "plan": str(plan),
        "credits_remaining": credits,
        "total_spent": round(sum(cost for _, cost in jobs), 6),
        "created_at": "2026-02-19T10:30:00+00:00",
        "updated_at": "2026-02-19T11:45:00+00:00",
        "active": True,
        "stripe_customer_id": f"cus_{client_id}",
        "stripe_subscription_id": f"sub_{client_id}",
        "billing_cycle_start": "2026-02-19T10:30:00+00:00",
        "billing_cycle_end": "2026-03-21T10:30:00+00:00",
        "metadata": {
            "credit_adjustments": [
                {"timestamp": "2026-02-19T11:00:00+00:00", "amount": amount, "reason": reason}
                for amount, reason in adjustments
            ],
            "cost_log": [
                {"timestamp": "2026-02-19T11:30:00+00:00", "cost": cost, "job_id": job_id}
                for job_id, cost in jobs
            ],
        },
    }


def legacy_bytes(records: Sequence[dict[str, Any]]) -> bytes:
    """The original module's file: an object of client_id -> record, indented as it wrote."""
    return json.dumps({r["client_id"]: r for r in records}, indent=2).encode("utf-8")
