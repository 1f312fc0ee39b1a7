"""Files and directories the module creates are private whatever the umask: directories 0700
(every missing parent too, so ``~/.openclaw`` is not listable by other users), store files
0600, the SQLite database and its -wal and -shm files included."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from openclaw_billing.plans import PlanId
from openclaw_billing.store import open_store
from tests.backends import FILE_BACKENDS, add_client, file_store_url


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual default: 0644 files, 0755 directories
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_a_new_store_is_private_down_to_its_parents(
    tmp_path: Path, open_umask: None, backend: str
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    state = home / ".openclaw" / "billing"
    store = open_store(file_store_url(backend, state))
    try:
        add_client(store, PlanId.PRO)  # a write: SQLite makes its -wal and -shm files
        assert _mode(home / ".openclaw") == 0o700
        assert _mode(state) == 0o700
        assert _mode(home) == 0o755  # an existing directory is the operator's
        files = sorted(p for p in state.iterdir() if p.is_file())
        assert len(files) >= 2, files
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
        if backend == "sqlite":
            assert {"billing.db-wal", "billing.db-shm"} <= {p.name for p in files}
    finally:
        store.close()
