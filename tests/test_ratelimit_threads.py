"""The in-process (``memory://``) rate-limit storage used from many threads at once.

A key check runs on the event loop's thread and in the thread pool. ``limits``' memory storage
is not safe for that: two threads that both find its expiry timer stopped start the same new
timer, and one of them gets ``RuntimeError: threads can only be started once``, which reached
a client as a 500 in the multi-worker test. The limiter makes the storage's calls take turns.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from limits.storage.memory import MemoryStorage

from openclaw_billing.errors import RateLimited
from openclaw_billing.ratelimit import RateLimiter

THREADS = 8


def _in_threads(work: Callable[[], None], threads: int = THREADS) -> list[BaseException]:
    """Run ``work`` in ``threads`` threads released together; the exceptions they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait(timeout=10)
        try:
            work()
        except BaseException as exc:  # every failure is the test's answer
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return errors


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch every microsecond, not every 5 ms: races show at once."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_the_memory_storage_is_called_by_one_thread_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inside = 0
    most = 0
    count = threading.Lock()

    def watched(name: str) -> Callable[..., Any]:
        original = getattr(MemoryStorage, name)

        def call(self: MemoryStorage, *args: Any, **kwargs: Any) -> Any:
            nonlocal inside, most
            with count:
                inside += 1
                most = max(most, inside)
            try:
                time.sleep(0.001)  # a wide window for another thread to come in
                return original(self, *args, **kwargs)
            finally:
                with count:
                    inside -= 1

        return call

    for name in ("acquire_entry", "get_moving_window"):
        monkeypatch.setattr(MemoryStorage, name, watched(name))
    limiter = RateLimiter("memory://")

    def hits() -> None:
        for _ in range(20):
            limiter.hit_client("c-1", 1_000_000)

    assert _in_threads(hits) == []
    assert most == 1


@pytest.mark.usefixtures("fast_switching")
def test_many_threads_hitting_one_client_never_raise() -> None:
    limiter = RateLimiter("memory://")
    # Small enough that refusals happen too; the storage's timer stops every 10 ms.
    per_minute = 2_000
    refused = 0

    def hits() -> None:
        nonlocal refused
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                limiter.hit_client("c-1", per_minute)
            except RateLimited:
                refused += 1

    assert _in_threads(hits, threads=16) == []
    assert refused > 0  # the window filled up
    with pytest.raises(RateLimited):  # and stays full: no hit was lost
        limiter.hit_client("c-1", per_minute)
