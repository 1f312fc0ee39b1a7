"""Group commit (openclaw_billing/committer.py): the changes that arrive while a batch commits
go together into the next one; each keeps its own outcome; nobody is answered before the
batch is durable; a lone change is committed at once; batches are bounded; a change the
store cannot handle fails alone; a store that miscounts its outcomes fails each caller at once
and leaves the committer working; what would poison a batch is refused at the edge."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

import pytest

from openclaw_billing.committer import LoopCommitter, ThreadCommitter
from openclaw_billing.errors import CreditLimitReached, StoreUnavailable
from openclaw_billing.jobs import Charged, NewJob
from openclaw_billing.models import ClientRecord
from openclaw_billing.plans import PlanId
from openclaw_billing.service import BillingService
from openclaw_billing.store import Store
from openclaw_billing.store.base import Charge, Mutation, Operation, Outcome
from tests.backends import BACKENDS, SQL_BACKENDS, add_client, store_fixture, store_url_fixture  # noqa: F401
from tests.store_helpers import T0

SECOND = timedelta(seconds=1)
T1 = T0 + timedelta(hours=1)


def limited(store: Store, name: str, *, credits: int) -> ClientRecord:
    """A client on a limited plan with ``credits`` left."""
    record, _ = add_client(store, PlanId.STARTER, name=name)
    assert record.credits_remaining is not None
    return store.add_credits(
        record.client_id, credits - record.credits_remaining, "test allowance", T0 + SECOND
    )


class Gate:
    """Wraps a store's ``mutate_batch``: once :meth:`arm` ed, records each batch's size and
    holds the first batch until :meth:`open` (so others can queue up behind it); ``fail``:
    what each batch raises instead; ``answer``: rewrites what each batch returns."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.armed = False
        self.sizes: list[int] = []
        self.entered = threading.Event()
        self._open = threading.Event()
        self.fail: BaseException | None = None
        self.answer: Callable[[list[Outcome[Any]]], list[Outcome[Any]]] | None = None
        self._inner = store.mutate_batch

    def arm(self) -> None:
        self.armed = True

    def __call__(self, batch: Sequence[Operation]) -> list[Outcome[Any]]:
        if not self.armed:
            return self._inner(batch)
        self.sizes.append(len(batch))
        self.entered.set()
        assert self._open.wait(timeout=30)
        if self.fail is not None:
            raise self.fail
        outcomes = self._inner(batch)
        return outcomes if self.answer is None else self.answer(outcomes)

    def open(self) -> None:
        self._open.set()

    def queue(self, committer: ThreadCommitter, ops: Sequence[Operation]) -> list[Future[Any]]:
        """Arm; submit the first of ``ops``, and the others once its batch is held (so they
        queue up behind it); their futures, none answered yet."""
        self.arm()
        first, *rest = ops
        futures = [committer.submit(first)]
        assert self.entered.wait(timeout=30)
        return futures + [committer.submit(op) for op in rest]


@pytest.fixture
def gate(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate(store)
    monkeypatch.setattr(store, "mutate_batch", gate)
    yield gate
    gate.open()


def _charges(client_id: str, count: int, *, prefix: str = "job") -> list[Charge]:
    return [Charge(client_id, f"{prefix}-{n}", 1.0, T1 + n * SECOND) for n in range(count)]


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_changes_that_arrive_during_a_commit_share_the_next_batch(store: Store, gate: Gate) -> None:
    client = limited(store, "A", credits=100)
    committer = ThreadCommitter(store)
    futures = gate.queue(committer, _charges(client.client_id, 6))
    assert not any(f.done() for f in futures)  # nobody is answered before the batch is durable
    gate.open()
    results = [f.result(timeout=30).unwrap() for f in futures]
    assert gate.sizes == [1, 5]  # alone at once, then everyone who arrived meanwhile
    assert [r.charge.credits_remaining for r in results] == [99, 98, 97, 96, 95, 94]
    committer.close()


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_each_change_keeps_its_own_outcome(store: Store, gate: Gate) -> None:
    rich = limited(store, "Rich", credits=10).client_id
    poor = limited(store, "Poor", credits=1).client_id
    committer = ThreadCommitter(store)
    ops = [
        Charge(rich, "first", 0.0, T1),  # held: the others queue up behind it
        Charge(poor, "p-1", 1.0, T1),
        Charge(poor, "p-2", 1.0, T1),  # refused: the one credit went to p-1
        Charge(rich, "r-1", 1.0, T1, job=NewJob({"name": "kept"})),
        Charge("no-such-client", "x", 1.0, T1),
    ]
    blocker, *futures = gate.queue(committer, ops)
    gate.open()
    blocker.result(timeout=30)
    outcomes = [f.result(timeout=30) for f in futures]
    assert gate.sizes == [1, 4]
    assert outcomes[0].unwrap().charge.credits_remaining == 0
    assert isinstance(outcomes[1].error, CreditLimitReached)
    kept = outcomes[2].unwrap()
    assert kept.job is not None
    assert kept.job.fields == {"name": "kept"}
    assert outcomes[3].error is not None
    assert outcomes[3].error.code == "client_not_found"
    record = store.get_client(poor)
    assert record is not None
    assert [e.job_id for e in record.metadata.cost_log] == ["p-1"]
    committer.close()


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_a_batch_that_cannot_be_written_fails_each_caller(store: Store, gate: Gate) -> None:
    client = limited(store, "A", credits=10).client_id
    committer = ThreadCommitter(store)
    gate.arm()
    gate.fail = StoreUnavailable()
    futures = [committer.submit(op) for op in _charges(client, 3)]
    gate.open()
    for future in futures:
        with pytest.raises(StoreUnavailable):
            future.result(timeout=30).unwrap()
    assert sum(gate.sizes) == 3  # a store that cannot write is not asked again for each
    gate.fail = None
    # The committer goes on: the next change is committed.
    assert committer.run(Charge(client, "after", 1.0, T1)).charge.credits_remaining == 9
    committer.close()


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_a_bug_in_a_batch_reaches_its_callers_and_the_committer_goes_on(
    store: Store, gate: Gate
) -> None:
    client = limited(store, "A", credits=10).client_id
    committer = ThreadCommitter(store)
    gate.arm()
    gate.fail = RuntimeError("a bug")
    future = committer.submit(Charge(client, "one", 1.0, T1))
    gate.open()
    with pytest.raises(RuntimeError, match="a bug"):
        future.result(timeout=30)
    gate.fail = None
    assert committer.run(Charge(client, "two", 1.0, T1)).charge.replayed is False
    committer.close()


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_batches_are_bounded(store: Store, gate: Gate) -> None:
    client = limited(store, "A", credits=1000).client_id
    committer = ThreadCommitter(store, max_batch=8)
    futures = gate.queue(committer, _charges(client, 30))
    gate.open()
    assert [f.result(timeout=30).unwrap().charge.credits_remaining for f in futures] == list(
        range(999, 969, -1)
    )
    assert gate.sizes == [1, 8, 8, 8, 5]
    committer.close()


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_the_loop_committer_commits_a_turn_of_the_loop_together(store: Store, gate: Gate) -> None:
    client = limited(store, "A", credits=5).client_id
    committer = LoopCommitter(store)
    gate.arm()
    gate.open()

    async def burst() -> list[Charged | BaseException]:
        calls = [committer.run_async(op) for op in _charges(client, 8)]
        results: list[Charged | BaseException] = await asyncio.gather(
            *calls, return_exceptions=True
        )
        return results

    results = asyncio.run(burst())
    assert gate.sizes == [8]  # on the loop's thread: one batch, no thread involved
    charged = [r for r in results if isinstance(r, Charged)]
    assert [r.charge.credits_remaining for r in charged] == [4, 3, 2, 1, 0]
    assert all(isinstance(r, CreditLimitReached) for r in results[5:])


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_a_caller_that_goes_away_is_still_committed(store: Store) -> None:
    client = limited(store, "A", credits=5).client_id
    committer = LoopCommitter(store)

    async def cancel_one() -> Charged:
        leaving = asyncio.ensure_future(committer.run_async(Charge(client, "gone", 1.0, T1)))
        staying = asyncio.ensure_future(committer.run_async(Charge(client, "here", 1.0, T1)))
        await asyncio.sleep(0)  # both queued
        leaving.cancel()
        charged: Charged = await staying
        return charged

    assert asyncio.run(cancel_one()).charge.credits_remaining == 3
    # The charge of the request that went away was made: a retry with its id replays it.
    assert store.charge(client, "gone", 1.0, T1).replayed


@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_threads_charging_through_the_service_sell_exactly_the_credits(store: Store) -> None:
    client = limited(store, "A", credits=50).client_id
    service = BillingService(store)
    start = threading.Barrier(16, timeout=30)
    answers: list[Future[bool]] = []

    def buyer(n: int, done: Future[bool]) -> None:
        start.wait()
        try:
            for k in range(10):
                service.charge(client, job_id=f"t{n}-{k}", cost=1.0)
        except CreditLimitReached:
            done.set_result(False)
        else:
            done.set_result(True)

    threads = []
    for n in range(16):
        answers.append(Future())
        threads.append(threading.Thread(target=buyer, args=(n, answers[-1])))
        threads[-1].start()
    for thread in threads:
        thread.join(timeout=60)
    record = store.get_client(client)
    assert record is not None
    assert record.credits_remaining == 0
    assert len(record.metadata.cost_log) == 50
    service.close()


# -- one change the store cannot handle, a store that miscounts -------------------------------


def _bug(record: ClientRecord) -> tuple[None, bool]:
    raise RuntimeError("a bug in a change")


#: Changes that make ``mutate_batch`` raise something other than a refusal (a BillingError):
#: a charge whose time has no zone (compared with stored times), a change with a bug.
POISONS: dict[str, tuple[Callable[[str], Operation], type[Exception]]] = {
    "naive-now": (lambda cid: Charge(cid, "naive", 1.0, T1.replace(tzinfo=None)), TypeError),
    "bug": (lambda cid: Mutation(cid, T1, _bug), RuntimeError),
}


@pytest.mark.parametrize("poison", sorted(POISONS))
@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_a_change_the_store_cannot_handle_fails_alone(
    store: Store, gate: Gate, poison: str
) -> None:
    rich = limited(store, "Rich", credits=10).client_id
    poor = limited(store, "Poor", credits=1).client_id
    make_poison, raised = POISONS[poison]
    committer = ThreadCommitter(store)
    ops = [
        Charge(rich, "first", 0.0, T1),  # held: the others queue up behind it
        Charge(rich, "r-1", 1.0, T1),
        make_poison(rich),
        Charge(poor, "p-1", 1.0, T1),
        Charge(poor, "p-2", 1.0, T1),  # refused: the one credit went to p-1
        Charge(rich, "r-2", 1.0, T1, job=NewJob({"name": "kept"})),
    ]
    blocker, *futures = gate.queue(committer, ops)
    gate.open()
    assert blocker.result(timeout=30).unwrap().charge.credits_remaining == 9
    assert futures[0].result(timeout=30).unwrap().charge.credits_remaining == 8
    with pytest.raises(raised):
        futures[1].result(timeout=30)
    assert futures[2].result(timeout=30).unwrap().charge.credits_remaining == 0
    assert isinstance(futures[3].result(timeout=30).error, CreditLimitReached)
    kept = futures[4].result(timeout=30).unwrap()
    assert kept.charge.credits_remaining == 7
    assert kept.job is not None
    assert kept.job.fields == {"name": "kept"}
    # The batch failed as a whole, then each of its changes was committed alone.
    assert gate.sizes == [1, 5, 1, 1, 1, 1, 1]
    for client, charged in ((rich, ["first", "r-1", "r-2"]), (poor, ["p-1"])):
        record = store.get_client(client)
        assert record is not None
        assert [e.job_id for e in record.metadata.cost_log] == charged
    committer.close()


#: Stores that answer a batch with one outcome too few, or one too many.
MISCOUNTS: dict[str, Callable[[list[Outcome[Any]]], list[Outcome[Any]]]] = {
    "too-few": lambda outcomes: outcomes[:-1],
    "too-many": lambda outcomes: [*outcomes, *outcomes[:1]],
}


@pytest.mark.parametrize("miscount", sorted(MISCOUNTS))
@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_a_store_that_miscounts_fails_every_caller_of_the_thread_committer(
    store: Store, gate: Gate, miscount: str
) -> None:
    client = limited(store, "A", credits=100).client_id
    committer = ThreadCommitter(store)
    gate.answer = MISCOUNTS[miscount]
    futures = gate.queue(committer, _charges(client, 6))
    gate.open()
    for future in futures:  # promptly: none is left waiting
        with pytest.raises(RuntimeError, match="outcomes to a batch of"):
            future.result(timeout=10)
    assert gate.sizes == [1, 5]
    gate.answer = None
    # The committer goes on.
    assert committer.run(Charge(client, "after", 1.0, T1)).charge.replayed is False
    committer.close()


@pytest.mark.parametrize("miscount", sorted(MISCOUNTS))
@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_a_store_that_miscounts_fails_every_caller_of_the_loop_committer(
    store: Store, gate: Gate, miscount: str
) -> None:
    client = limited(store, "A", credits=100).client_id
    committer = LoopCommitter(store, max_batch=2)
    gate.arm()
    gate.open()
    gate.answer = MISCOUNTS[miscount]

    async def burst() -> tuple[list[Any], Charged]:
        calls = [committer.run_async(op) for op in _charges(client, 5)]
        failed = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
        gate.answer = None
        # The loop's queue was left empty: the next change is committed.
        after = await asyncio.wait_for(committer.run_async(Charge(client, "after", 1.0, T1)), 10)
        return failed, after

    failed, after = asyncio.run(burst())
    assert all(isinstance(r, RuntimeError) for r in failed), failed
    assert gate.sizes == [2, 2, 1, 1]
    assert after.charge.replayed is False


# -- what never reaches a batch ---------------------------------------------------------------


@pytest.mark.parametrize(
    "job",
    [
        {"fields": {"name": "a\x00b"}},
        {"fields": {"name": "a\ud800b"}},
        {"fields": {"name": "\udcff"}},
        {"fields": {"na\x00me": "value"}},
        {"fields": {"na\udfffme": "value"}},
        {"fields": {"name": "value"}, "request_hash": "ab\x00cd"},
        {"fields": {"name": "value"}, "request_hash": "\ud83d"},
    ],
    ids=repr,
)
def test_a_job_with_a_nul_or_a_lone_surrogate_is_refused(job: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="NUL or lone surrogate"):
        NewJob(**job)


def test_a_job_of_any_valid_text_is_taken() -> None:
    text = "Line one\n\tline two \u00e9\u4e2d\U0001f600"
    assert NewJob({"description": text}, request_hash="h" * 64).fields["description"] == text


@pytest.mark.parametrize("store_url", BACKENDS, indirect=True)
def test_a_charge_at_a_time_without_a_zone_is_refused(store: Store) -> None:
    client = limited(store, "A", credits=10).client_id
    service = BillingService(store)
    naive = T1.replace(tzinfo=None)
    with pytest.raises(ValueError, match="time zone"):
        service.charge(client, job_id="one", now=naive)
    with pytest.raises(ValueError, match="time zone"):
        service.charge_of(client, job_id="one", now=naive)
    with pytest.raises(ValueError, match="time zone"):
        asyncio.run(service.accept(Charge(client, "one", 1.0, naive)))
    record = store.get_client(client)
    assert record is not None
    assert record.metadata.cost_log == []
    # With its zone, the same charge is made.
    assert service.charge(client, job_id="one", now=T1).credits_remaining == 9
    service.close()
