"""The JSON store's journal as a file: a torn last write is ignored and cut off, damage anywhere
else stops the store, a journal of another snapshot is never replayed, and compaction (by size,
or asked for) keeps the state and the files few. Crashes of real processes are in
test_crash.py and test_crash_journal.py."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import pytest

from openclaw_billing.errors import StoreCorrupt
from openclaw_billing.jobs import NewJob
from openclaw_billing.store import json_replica
from openclaw_billing.store.base import Charge
from openclaw_billing.store.json_file import JsonFileStore
from openclaw_billing.store.json_journal import decode, frame, journal_path, journals
from tests.invariants import check_store_file
from tests.store_helpers import T0, ledger_ids, make_record

JOB = NewJob({"prompt": "hello"})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "clients.json"


def charged(path: Path, *job_ids: str) -> JsonFileStore:
    """A store of one client c1 charged for ``job_ids`` (each with its job)."""
    store = JsonFileStore(path)
    store.create_client(make_record("c1")[0])
    for job_id in job_ids:
        store.accept(Charge("c1", job_id, 1.0, T0, job=JOB))
    return store


def jobs_charged(path: Path) -> tuple[list[str], list[str]]:
    """Reopened: the ledger's job ids and the stored jobs' ids of c1."""
    store = JsonFileStore(path)
    record = store.get_client("c1")
    assert record is not None
    return ledger_ids(record), [job.job_id for job in store.client_jobs("c1")]


# -- the decoder -------------------------------------------------------------------------------


def test_decode_applies_whole_batches_only() -> None:
    one = frame([b'{"t":"x","n":1}'], 1)
    two = frame([b'{"t":"x","n":2}', b'{"t":"x","n":3}'], 2)
    assert decode(one + two, 1).consumed == len(one + two)
    for cut in range(1, len(two)):  # any prefix of the last write: ignored, not damage
        decoded = decode(one + two[:cut], 1)
        assert (len(decoded.batches), decoded.consumed, decoded.damage) == (1, len(one), None)
    flipped = bytearray(one + two)
    flipped[len(one) + 20] ^= 1  # the last write's first line fails its checksum
    assert decode(bytes(flipped), 1).damage is None
    flipped = bytearray(one + two)
    flipped[20] ^= 1  # a line followed by a complete batch: damage
    decoded = decode(bytes(flipped), 1)
    assert decoded.batches == []
    assert decoded.damage == ("holds a damaged line", 0)
    assert decode(one + one, 1).damage is not None  # a batch twice: out of sequence
    assert decode(two + one, 2).damage is not None


# -- a torn last write, and damage -------------------------------------------------------------


@pytest.mark.parametrize("cut", [10, 60, -1])
def test_a_torn_last_write_is_ignored_and_cut_off_by_the_next_writer(
    path: Path, cut: int, caplog: pytest.LogCaptureFixture
) -> None:
    store = charged(path, "job-1")
    journal = journal_path(path, 1)
    good = journal.read_bytes()
    torn = frame([b'{"t":"c","id":"c1","job":"job-2"}', b'{"t":"a","events":[]}'], 3)
    journal.write_bytes(good + torn[:cut])
    reader = JsonFileStore(path)  # a start ignores it ...
    assert jobs_charged(path) == (["job-1"], ["job-1"])
    assert journal.read_bytes() == good + torn[:cut]  # ... and leaves the file as it is
    store.check()
    with caplog.at_level(logging.WARNING):
        store.accept(Charge("c1", "job-2", 1.0, T0, job=JOB))  # the next write cuts it off
    assert "torn tail" in caplog.text
    assert journal.read_bytes().startswith(good)
    assert torn[:cut] not in journal.read_bytes()[len(good) :]
    assert jobs_charged(path) == (["job-1", "job-2"], ["job-1", "job-2"])
    record = reader.get_client("c1")
    assert record is not None
    assert ledger_ids(record) == ["job-1", "job-2"]
    check_store_file(path)


@pytest.mark.parametrize("damage", ["checksum", "not json", "out of sequence", "bad record"])
def test_damage_before_the_last_write_stops_the_store(path: Path, damage: str) -> None:
    store = charged(path, "job-1")
    reader = JsonFileStore(path)  # has read the journal so far
    store.add_credits("c1", 5, "goodwill", T0)  # line 3, which the damage hits
    store.charge("c1", "job-2", 1.0, T0)
    store.charge("c1", "job-3", 1.0, T0)
    journal = journal_path(path, 1)
    lines = journal.read_bytes().splitlines(keepends=True)
    if damage == "checksum":
        lines[3] = lines[3].replace(b"goodwill", b"badwill!")
    elif damage == "not json":
        lines[3] = b"%08x {nope\n" % zlib.crc32(b"{nope")
    elif damage == "out of sequence":
        lines.insert(4, lines[3])
    else:
        payload = lines[3][9:-1].replace(b'"credits_remaining":204', b'"credits_remaining":-1')
        assert payload != lines[3][9:-1]
        lines[3] = b"%08x %s\n" % (zlib.crc32(payload), payload)
    bad = b"".join(lines)
    journal.write_bytes(bad)
    with pytest.raises(StoreCorrupt, match=str(journal)):
        JsonFileStore(path)
    with pytest.raises(StoreCorrupt, match=str(journal)):
        reader.check()  # a worker reading those bytes finds it too
    assert journal.read_bytes() == bad  # never repaired behind the operator's back


def test_a_journal_of_another_snapshot_is_not_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot restored from a backup beside a journal of the same generation number (from
    another history): its header names another snapshot, so it is left out, then replaced."""
    here, there = tmp_path / "here" / "clients.json", tmp_path / "there" / "clients.json"
    charged(here, "job-1")
    charged(there, "job-a", "job-b")
    journal_path(here, 1).write_bytes(journal_path(there, 1).read_bytes())
    with caplog.at_level(logging.WARNING):
        store = JsonFileStore(here)
    assert "names another snapshot" in caplog.text
    assert store.get_client("c1") is None  # only the (empty) snapshot of this history
    store.create_client(make_record("c1")[0])
    assert jobs_charged(here) == ([], [])
    assert b"job-a" not in journal_path(here, 1).read_bytes()


def test_a_journal_without_its_snapshot_stops_the_store(path: Path) -> None:
    charged(path, "job-1")
    path.unlink()
    with pytest.raises(StoreCorrupt, match="journals of it"):
        JsonFileStore(path)


# -- compaction --------------------------------------------------------------------------------


def test_the_journal_is_compacted_once_larger_than_the_snapshot(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(json_replica, "COMPACT_MIN", 4096)
    store = charged(path)
    reader = JsonFileStore(path)
    generations = []
    for i in range(60):
        store.accept(Charge("c1", f"job-{i}", 1.0, T0, job=JOB))
        generations.append(store._replica.generation)
        size = journal_path(path, store._replica.generation).stat().st_size
        assert size <= max(4096, path.stat().st_size) + 400
    assert generations[-1] >= 3
    # The current journal and the one before it (for readers still reading it), no older.
    assert sorted(journals(path)) == [generations[-1] - 1, generations[-1]]
    ids = [f"job-{i}" for i in range(60)]
    record = reader.get_client("c1")
    assert record is not None
    assert ledger_ids(record) == ids
    assert [job.job_id for job in reader.client_jobs("c1")] == ids
    assert jobs_charged(path) == (ids, ids)
    check_store_file(path)


def test_a_reader_two_compactions_behind_reads_the_snapshot_whole(path: Path) -> None:
    writer = charged(path, "job-1")
    reader = JsonFileStore(path)
    reader.check()
    for i in range(2, 5):
        writer.charge("c1", f"job-{i}", 1.0, T0)
        writer.compact()
    record = reader.get_client("c1")
    assert record is not None
    assert ledger_ids(record) == ["job-1", "job-2", "job-3", "job-4"]
    assert reader._replica.generation == writer._replica.generation


def test_a_compaction_that_cannot_write_leaves_the_batch_written(
    path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(json_replica, "COMPACT_MAX", 1)  # after every write

    def full_disk(target: Path, data: bytes) -> str:
        raise OSError(28, "No space left on device")

    store = charged(path)
    generation = store._replica.generation
    monkeypatch.setattr(json_replica, "write_temp", full_disk)
    with caplog.at_level(logging.WARNING):
        assert store.charge("c1", "job-1", 1.0, T0).credits_remaining == 199
    assert "Could not compact" in caplog.text
    assert store._replica.generation == generation
    monkeypatch.undo()
    assert jobs_charged(path) == (["job-1"], [])
