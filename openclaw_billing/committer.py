"""Group commit: in each worker process, one committer applies the store changes that arrive
together as one batch (:meth:`Store.mutate_batch`: one transaction, one fsync), and answers
each caller once its batch is durable.

There is no timer: while a batch commits, the changes that arrive queue up, and the next
batch takes all of them (at most ``max_batch``). A change that arrives when the committer is
idle is committed at once, alone: nothing waits for company. Each change keeps its own
outcome (a refused charge does not fail the others); a batch the store cannot write fails
each of its callers with the store's error, and none of it is stored. Durability is never
relaxed: every caller is answered after ``mutate_batch`` returned, that is after the commit.

When a batch fails, who is told what:

* a ``BillingError`` raised by ``mutate_batch`` (``StoreUnavailable``: the store is down or
  busy past its lock timeout) means the store could not write the batch, whatever is in it:
  every caller gets it (a 503: retry), none of the batch is stored, nothing is tried again
  (64 more attempts would each wait on the same store);
* any other exception is a change the store could not handle (a bug, a value that slipped
  past the edge's checks): it aborted the batch's transaction, so none of it is stored, and
  one change must not fail the others. The changes are committed again, in order, each alone
  (a batch of one): the poisoned one fails with its exception, every other gets its own
  outcome. If the store becomes unwritable during these (a ``BillingError`` from a batch of
  one), the changes not yet retried fail with it, without more attempts;
* a store that answers a batch with the wrong number of outcomes (a bug) fails each of its
  callers with a ``RuntimeError``: which of its changes were stored is unknown.

Every caller of a batch is answered, whatever goes wrong: a future left unsettled would be a
request that waits forever.

Two committers, chosen by ``OPENCLAW_COMMITTER`` (``bench/`` measures both):

* ``thread`` (the default): a thread of its own drains a queue; async callers await the
  batch's future (one hand-off to that thread and back per request), threads block on it.
* ``loop``: the batch is committed on the event loop's own thread, by a task that drains the
  loop's queue: no hand-off at all, but the loop does nothing else while a batch commits
  (its fsync included). Callers outside an event loop (a host's threads) use the thread
  committer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Literal, Protocol
from weakref import WeakKeyDictionary

from .errors import BillingError
from .store.base import Operation, Outcome, Store

logger = logging.getLogger("openclaw_billing")

#: The most changes one batch takes (TigerBeetle takes 8,190; a batch here is one SQL
#: transaction holding its clients' row locks, so it stays short).
MAX_BATCH = 64

CommitterKind = Literal["thread", "loop"]


class _Settled(Protocol):
    """A thread's or an event loop's future: what a caller waits on."""

    def done(self) -> bool: ...
    def set_result(self, result: Outcome[Any], /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


_Item = tuple[Operation, _Settled]


def commit(store: Store, items: Sequence[_Item]) -> None:
    """Apply one batch and settle each item's future with its outcome (never raises, and
    leaves no future unsettled)."""
    error: BaseException | None = None
    try:
        answers = _answers(store, [op for op, _ in items])
        for (_, future), answer in zip(items, answers, strict=True):
            if future.done():  # a caller that went away (cancelled) is not answered
                continue
            if isinstance(answer, Outcome):
                future.set_result(answer)
            else:
                future.set_exception(answer)
    except BaseException as exc:  # a bug of the committer's: every caller left sees it
        logger.exception("Settling a batch of %d changes failed", len(items))
        error = exc
    finally:
        for _, future in items:
            if not future.done():
                future.set_exception(error or RuntimeError("No answer for this change"))


_Answer = Outcome[Any] | BaseException


def _answers(store: Store, ops: Sequence[Operation]) -> list[_Answer]:
    """Each change's outcome, or the exception its caller gets (rules in the module
    docstring)."""
    try:
        outcomes = store.mutate_batch(ops)
    except BillingError as exc:  # the batch could not be written: none of it is stored
        return [Outcome(error=exc)] * len(ops)
    except Exception as exc:
        if len(ops) == 1:
            logger.error("A change failed", exc_info=exc)
            return [exc]
        logger.warning(
            "A batch of %d changes failed (%s); committing each alone", len(ops), type(exc).__name__
        )
        return _one_by_one(store, ops)
    return _counted(outcomes, len(ops))


def _one_by_one(store: Store, ops: Sequence[Operation]) -> list[_Answer]:
    answers: list[_Answer] = []
    for done, op in enumerate(ops):
        try:
            outcomes = store.mutate_batch([op])
        except BillingError as exc:  # the store cannot write now: the rest would fail too
            return answers + [Outcome(error=exc)] * (len(ops) - done)
        except Exception as exc:  # this change is the one the store cannot handle
            logger.error("A change failed", exc_info=exc)
            answers.append(exc)
        else:
            answers += _counted(outcomes, 1)
    return answers


def _counted(outcomes: Sequence[Outcome[Any]], expected: int) -> list[_Answer]:
    """``outcomes``, if there is one per change; else the error each caller gets."""
    if len(outcomes) == expected:
        return list(outcomes)
    error = RuntimeError(
        f"The store answered {len(outcomes)} outcomes to a batch of {expected} changes: "
        "whether this change was stored is unknown"
    )
    logger.error("%s", error)
    return [error] * expected


class ThreadCommitter:
    """The committer thread of one process (started on first use, again after a fork)."""

    def __init__(self, store: Store, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()

    def submit(self, op: Operation) -> Future[Outcome[Any]]:
        """Queue ``op`` for the next batch; the future gets its outcome once it is durable."""
        future: Future[Outcome[Any]] = Future()
        future.set_running_or_notify_cancel()  # not cancellable: it will be committed
        self._ensure_running()
        self._queue.put((op, future))
        return future

    def run(self, op: Operation) -> Any:
        """Submit ``op`` and wait (blocking) for its result, or raise its refusal."""
        return self.submit(op).result().unwrap()

    async def run_async(self, op: Operation) -> Any:
        """Submit ``op`` and await its result, or raise its refusal."""
        outcome: Outcome[Any] = await asyncio.wrap_future(self.submit(op))
        return outcome.unwrap()

    def _ensure_running(self) -> None:
        thread = self._thread
        if thread is not None and self._pid == os.getpid() and thread.is_alive():
            return
        with self._start_lock:
            thread = self._thread
            if thread is None or self._pid != os.getpid() or not thread.is_alive():
                if self._pid != os.getpid():  # a forked child: the parent's queue is not ours
                    self._queue = queue.SimpleQueue()
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._loop, name="openclaw-committer", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        pending = self._queue
        while True:
            first = pending.get()
            if first is None:
                return
            items = [first]
            while len(items) < self.max_batch:
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    pending.put(None)  # stop after this batch
                    break
                items.append(item)
            commit(self.store, items)

    def close(self) -> None:
        """Stop the thread once the changes already queued are committed."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self._queue.put(None)
            thread.join()
        self._thread = None


class LoopCommitter(ThreadCommitter):
    """Commits on the event loop's thread (see the module docstring); threads outside an
    event loop are served by the inherited thread committer."""

    def __init__(self, store: Store, *, max_batch: int = MAX_BATCH) -> None:
        super().__init__(store, max_batch=max_batch)
        self._loops: WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Item]] = WeakKeyDictionary()

    async def run_async(self, op: Operation) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome[Any]] = loop.create_future()
        pending = self._loops.get(loop)
        if pending is None:
            pending = self._loops[loop] = []
        pending.append((op, future))
        if len(pending) == 1:  # the first of a batch: commit once the loop has run its turn
            loop.call_soon(self._drain, pending)
        outcome = await future
        return outcome.unwrap()

    def _drain(self, pending: list[_Item]) -> None:
        # A drain is scheduled only by the first change of an empty queue: it must leave the
        # queue empty, or schedule itself again (else every later change would wait forever).
        try:
            while pending:
                items = pending[: self.max_batch]
                del pending[: self.max_batch]
                commit(self.store, items)
        finally:
            if pending:  # commit raised (it should not): the rest at the loop's next turn
                asyncio.get_running_loop().call_soon(self._drain, pending)


def new_committer(store: Store, kind: CommitterKind) -> ThreadCommitter:
    return LoopCommitter(store) if kind == "loop" else ThreadCommitter(store)
