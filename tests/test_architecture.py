"""The import direction of ``openclaw_billing``, read from the source with ``ast``.

* no cycle between modules (an import inside a function counts: it runs too);
* no import inside a function, except where the backend factory loads the optional SQL driver
  lazily (the JSON default never loads SQLAlchemy);
* the pure rule modules never import the store, the service or the API;
* the store never imports the service (nor the API or the CLI);
* the CLI never imports the API.

Imports under ``if TYPE_CHECKING:`` are for the type checker only and do not count. A package
is not a dependency of its own modules' importers (``store.base`` does not depend on
``store/__init__``): only the module an import names is.
"""

from __future__ import annotations

import ast
import graphlib
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "openclaw_billing"
ROOT = "openclaw_billing"

#: The only imports inside a function: the backend factory's lazy load of the SQL backend.
LAZY_DRIVER_IMPORTS = {
    ("openclaw_billing.store", "open_store", "openclaw_billing.store.sql"),
    ("openclaw_billing.store", "__getattr__", "openclaw_billing.store.sql"),
}


#: Pure rules: transitions and values, no I/O, no orchestration.
PURE = [
    "ledger",
    "access",
    "jobs",
    "outcomes",
    "plans",
    "cycles",
    "keys",
    "models",
    "safetext",
    "net",
]
STORE = ["store"]
SERVICE = [
    "service",
    "admin",
    "charges",
    "job_actions",
    "job_contract",
    "job_reads",
    "sweeper",
    "quotes",
    "reports",
    "committer",
]
API = ["api", "web"]
CLI = ["cli"]


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    #: The enclosing function's name, or None at module level.
    function: str | None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package modules an import statement loads (the most specific module named)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        is_package = MODULES[module].name == "__init__.py"
        base = module.split(".") if is_package else module.split(".")[:-1]
        if node.level:
            base = base[: len(base) - (node.level - 1)]
            source = ".".join([*base, *([node.module] if node.module else [])])
        else:
            source = node.module or ""
        names = [
            f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names
        ]
    found: list[str] = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name.split(".")[0] == ROOT and name != module and name not in found:
            found.append(name)
    return found


def _imports(module: str) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for rest in child.orelse:
                    visit(rest, function)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.extend(Import(module, t, function) for t in _targets(module, child))
                if function is not None and not _targets(module, child):
                    found.append(Import(module, "<outside the package>", function))
            inner = (
                child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else None
            )
            visit(child, inner or function)

    visit(ast.parse(MODULES[module].read_text()), None)
    return found


IMPORTS = [imp for module in MODULES for imp in _imports(module)]


def _in(module: str, parts: list[str]) -> bool:
    return any(module == f"{ROOT}.{p}" or module.startswith(f"{ROOT}.{p}.") for p in parts)


def test_the_reader_sees_every_module_and_their_imports() -> None:
    """Guards the test itself: a reader that found nothing would pass every rule below."""
    assert {f"{ROOT}.ledger", f"{ROOT}.store.sql", f"{ROOT}.api.routes"} <= set(MODULES)
    edges = {(i.importer, i.imported) for i in IMPORTS}
    assert (f"{ROOT}.service", f"{ROOT}.store") in edges
    assert (f"{ROOT}.api.routes", f"{ROOT}.api.deps") in edges
    assert (f"{ROOT}.access", f"{ROOT}.ledger") in edges


def test_no_cycles() -> None:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for imp in IMPORTS:
        graph[imp.importer].add(imp.imported)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(reversed(exc.args[1]))}")


def test_no_import_inside_a_function() -> None:
    allowed = LAZY_DRIVER_IMPORTS
    inside = {(i.importer, i.function, i.imported) for i in IMPORTS if i.function is not None}
    assert inside - allowed == set()


@pytest.mark.parametrize(
    ("importers", "forbidden"),
    [
        (PURE, STORE + SERVICE + API + CLI + ["stripe_billing"]),
        (STORE, SERVICE + API + CLI + ["stripe_billing"]),
        (CLI, API),
    ],
    ids=["pure-rules", "store", "cli"],
)
def test_import_direction(importers: list[str], forbidden: list[str]) -> None:
    wrong = [
        f"{i.importer} imports {i.imported}"
        for i in IMPORTS
        if _in(i.importer, importers) and _in(i.imported, forbidden)
    ]
    assert wrong == []
