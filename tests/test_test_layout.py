"""The test suite's own rules, read from its source with ``ast``.

* The backend sets are named once, in tests/backends.py (``BACKENDS``, ``FILE_BACKENDS``,
  ``SQL_BACKENDS``): no other test module spells a list, tuple, set or dict of backend names,
  so adding a backend (or moving one between sets) is one edit and no test is left behind.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests import backends

TESTS = Path(__file__).resolve().parent
NAMED_HERE = TESTS / "backends.py"
BACKEND_NAMES = frozenset(backends.BACKENDS)


def _backend_names(nodes: list[ast.expr | None]) -> bool:
    """Whether ``nodes`` are one or more string literals, each the name of a backend."""
    return bool(nodes) and all(
        isinstance(node, ast.Constant) and node.value in BACKEND_NAMES for node in nodes
    )


def spelled_backend_sets(source: str) -> list[int]:
    """The lines of ``source`` where a literal collection of backend names starts: a list,
    tuple or set of them, or a dict keyed by them."""
    lines: list[int] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            elements: list[ast.expr | None] = list(node.elts)
        elif isinstance(node, ast.Dict):
            elements = list(node.keys)
        else:
            continue
        if _backend_names(elements):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_check_finds_a_spelled_set_and_passes_a_named_one() -> None:
    spelled = """
import pytest
LOCAL = ("json", "sqlite")
URLS = {"json": "clients.json", "sqlite": "billing.db"}
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_x(store_url): ...
"""
    assert spelled_backend_sets(spelled) == [3, 4, 5]
    named = """
import pytest
from tests.backends import SQL_BACKENDS
KINDS = ["path", "json-url", "sqlite"]  # not a set of backends: other kinds too
@pytest.mark.parametrize("store_url", SQL_BACKENDS, indirect=True)
def test_x(store_url): assert store_url.startswith("sqlite")
"""
    assert spelled_backend_sets(named) == []


def test_the_backend_sets_are_named_once() -> None:
    modules = sorted(p for p in TESTS.rglob("*.py") if p != NAMED_HERE)
    assert len(modules) > 40
    spelled = {
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in modules
        for line in spelled_backend_sets(path.read_text(encoding="utf-8"))
    }
    assert spelled == set(), "use BACKENDS, FILE_BACKENDS or SQL_BACKENDS of tests/backends.py"
    assert set(backends.FILE_BACKENDS) | set(backends.SQL_BACKENDS) == BACKEND_NAMES
