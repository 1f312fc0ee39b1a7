"""The suite holds wherever it runs: with SIGINT ignored, and without leaving processes behind.

Both run a nested pytest in a subprocess, as a CI runner or ``nohup`` would start the suite.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.processes import _stat, run_in_group
from tests.server import REPO_ROOT

#: Tests that start servers and stop them again.
SERVER_TESTS = ("tests/test_fake_stripe.py::test_standalone_server_prints_requests",)


def run_pytest(args: list[str], *, cwd: Path, timeout: float = 120) -> tuple[int, str]:
    """``pytest args`` started as a background job of a shell is: with SIGINT ignored (the
    disposition every process it starts inherits). Returns its status and output."""
    command = " ".join([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args])
    done, timed_out = run_in_group(
        ["bash", "-c", f"trap '' INT; exec {command} </dev/null"],
        timeout=timeout,
        cwd=cwd,
        stderr=subprocess.STDOUT,
    )
    return (-1 if timed_out else done.returncode), done.stdout


def test_servers_stop_when_the_suite_runs_with_sigint_ignored() -> None:
    status, out = run_pytest(list(SERVER_TESTS), cwd=REPO_ROOT)
    assert status == 0, out
    assert f"{len(SERVER_TESTS)} passed" in out


LEAKY_TESTS = """
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_leaves_a_child_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    (HERE / "child.pid").write_text(str(child.pid))


def test_leaves_an_orphan_running() -> None:
    # bash exits at once; its background sleep is orphaned (re-parented to the session).
    out = subprocess.run(
        ["bash", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
        capture_output=True, text=True, check=True,
    ).stdout
    (HERE / "orphan.pid").write_text(out.strip())


def test_a_clean_test_passes() -> None:
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


def test_a_test_that_leaves_a_process_running_fails_and_the_process_is_stopped(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent(LEAKY_TESTS))
    # The repository's conftest.py as a plugin: the guard under test, nothing else of the suite.
    status, out = run_pytest(
        ["-p", "conftest", "--rootdir", str(tmp_path), str(tmp_path / "test_leaky.py")],
        cwd=REPO_ROOT,
    )
    assert status == 1, out
    assert "2 errors" in out, out  # the two leaky tests, in their teardown
    assert "the test left processes running" in out
    for name in ("child.pid", "orphan.pid"):
        pid = int((tmp_path / name).read_text())
        assert f"pid {pid} " in out, out
        state = _stat(pid)
        assert state is None or state[2] in ("Z", "X"), f"{name}: {state} still runs"
