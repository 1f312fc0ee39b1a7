"""Processes the tests start: stopped with SIGTERM then SIGKILL, and none left behind.

SIGINT is never used to stop a child. A suite started with SIGINT ignored (``nohup``, a
background job of a non-interactive shell, some CI runners) passes that disposition on to every
child, so a child that was meant to stop on SIGINT would keep running.

:func:`leftovers` lists the processes still running below the test session (children,
grandchildren, and, once :func:`adopt_orphans` has run, orphans of those that died first, such
as a worker whose master was killed). ``conftest.py`` checks it after every test and at the end
of the session. It reads ``/proc`` (Linux), as the rest of the suite assumes Linux.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How long a process gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
#: Long-lived helpers of the ``multiprocessing`` module, started once per session on purpose.
_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    state: str
    cmdline: str

    @property
    def running(self) -> bool:
        return self.state not in ("Z", "X")

    @property
    def helper(self) -> bool:
        return any(name in self.cmdline for name in _HELPERS)


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(pid, parent pid, state) of a process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return pid, int(fields[1]), fields[0]


def _info(pid: int, ppid: int, state: str) -> ProcessInfo:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        raw = b""
    return ProcessInfo(pid, ppid, state, raw.replace(b"\0", b" ").decode(errors="replace").strip())


def descendants(root: int | None = None) -> list[ProcessInfo]:
    """Every process below ``root`` (this process by default), found by parent ids."""
    root = os.getpid() if root is None else root
    children: dict[int, list[tuple[int, int, str]]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (row := _stat(int(name))) is not None:
            children.setdefault(row[1], []).append(row)
    found: list[ProcessInfo] = []
    stack = [root]
    while stack:
        for row in children.get(stack.pop(), ()):
            found.append(_info(*row))
            stack.append(row[0])
    return found


def helper_pids() -> set[int]:
    """The multiprocessing helpers: not leftovers, but the processes they start are."""
    return {p.pid for p in descendants() if p.helper}


def leftovers(ignore: Iterable[int] = (), settle: float = 0.0) -> list[ProcessInfo]:
    """Running processes below this one, except ``ignore`` and multiprocessing's helpers.

    ``settle``: how long to wait for them to finish exiting first. A server's workers, orphaned
    to this session when their master stops, can still be on their way out (their command line
    already gone) for a moment after the master was reaped."""
    skip = set(ignore)
    deadline = time.monotonic() + settle
    while True:
        left = [p for p in descendants() if p.running and not p.helper and p.pid not in skip]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def kill_all(processes: Iterable[ProcessInfo], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM each process, then SIGKILL whatever still runs after ``timeout``."""
    pids = [p.pid for p in processes]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if (row := _stat(pid)) is not None and row[2] not in "ZX"]
        if not alive:
            return
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = STOP_TIMEOUT
) -> None:
    """Stop a child: SIGTERM, wait, then SIGKILL. With ``start_new_session=True`` the child
    leads its own process group, and whatever of that group is left (workers, a script's
    commands) is killed too."""
    group = _own_group(proc)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if group is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def run_in_group(
    args: list[str], *, timeout: float, cwd: Path, **popen: Any
) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run ``args`` in a process group of its own, its output read as text (``stdout`` piped;
    ``stderr`` as ``popen`` says), and stop what is left of the group when it ends or at
    ``timeout``: a hanging grandchild never outlives it. Returns the run (what it printed so
    far, on a timeout) and whether it timed out."""
    proc = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, text=True, start_new_session=True, **popen
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        stop(proc)
        out, err = proc.communicate()
    finally:
        stop(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), timed_out


def _own_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> int | None:
    try:
        group = os.getpgid(proc.pid)
    except ProcessLookupError:
        return None
    return group if group == proc.pid and group != os.getpgrp() else None


def adopt_orphans() -> bool:
    """Make this process the reaper of its descendants' orphans (Linux ``prctl``), so that a
    grandchild whose parent died is still found below it. False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def describe(processes: Iterable[ProcessInfo]) -> str:
    return "; ".join(f"pid {p.pid} ({p.cmdline[:120]})" for p in processes)
