"""The store lock: bounded waits, no leak after a timeout, and no starved process."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from openclaw_billing.errors import CreditLimitReached, StoreUnavailable
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store.filelock import FileLock
from openclaw_billing.store.json_file import JsonFileStore
from tests.processes import stop

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_timed_out_wait_leaks_no_lock(tmp_path: Path) -> None:
    lock_path = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        lock = FileLock(lock_path, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable), lock.hold():
            pass
        assert 0.25 < time.monotonic() - started < 2
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # the holder's cue to exit; stopped (SIGTERM, SIGKILL) if it does not
        try:
            holder.wait(timeout=10)
        finally:
            stop(holder)
            if holder.stdout is not None:
                holder.stdout.close()
    # The abandoned waiter must not keep the lock: another process and we both get it.
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_RDWR);"
            " fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
            str(lock_path),
        ],
        timeout=10,
        check=False,
    )
    assert other.returncode == 0
    with FileLock(lock_path, timeout=1).hold():
        pass


def _charge_all(path: Path, client_id: str, barrier: Barrier, out: mp.Queue[int]) -> None:
    service = BillingService(JsonFileStore(path))
    barrier.wait(timeout=60)
    wins = 0
    for n in range(80):
        try:
            service.charge(client_id, job_id=f"{mp.current_process().pid}-{n}")
            wins += 1
        except CreditLimitReached:
            pass
    out.put(wins)


@pytest.mark.slow
def test_no_process_is_starved_of_the_lock(tmp_path: Path) -> None:
    """4 processes race for 200 credits with 80 attempts each. With a polling lock one process
    won 0-2 (measured); waiting in the kernel, each wins a fair share."""
    path = tmp_path / "clients.json"
    record, _ = BillingService(JsonFileStore(path)).create_client(
        name="F", email="f@acmecorp.com", plan=PlanId.PRO
    )
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    out: mp.Queue[int] = ctx.Queue()
    procs = [
        ctx.Process(target=_charge_all, args=(path, record.client_id, barrier, out))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    wins = sorted(out.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
    assert sum(wins) == 200
    assert wins[0] >= 20, wins
