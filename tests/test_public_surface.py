"""Pin the public surface of client_auth.py: names, signatures and "imports only"."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import client_auth

EXPECTED = [
    "BillingError",
    "ChargeResult",
    "ClientInactive",
    "ClientNotFound",
    "ClientRecord",
    "CreditLimitReached",
    "CurrentClient",
    "DeferredClient",
    "InvalidApiKey",
    "PaymentPastDue",
    "SubmitDecision",
    "can_submit_job",
    "deduct_job_credit",
    "get_client_by_api_key",
    "install_body_limit",
    "install_error_handlers",
    "refund_job_credit",
    "require_client",
    "router",
]


def test_exports_are_pinned_and_sorted() -> None:
    assert client_auth.__all__ == EXPECTED
    assert sorted(client_auth.__all__) == client_auth.__all__
    for name in EXPECTED:
        assert hasattr(client_auth, name)


def test_contract_signatures() -> None:
    assert str(inspect.signature(client_auth.get_client_by_api_key)) == (
        "(api_key: 'str | None') -> 'ClientRecord | None'"
    )
    assert str(inspect.signature(client_auth.can_submit_job)) == (
        "(client: 'ClientRecord') -> 'SubmitDecision'"
    )
    assert str(inspect.signature(client_auth.deduct_job_credit)) == (
        "(client_id: 'str', job_id: 'str | None' = None, cost: 'float' = 0.0) -> 'ChargeResult'"
    )
    assert str(inspect.signature(client_auth.refund_job_credit)) == (
        "(client_id: 'str', job_id: 'str') -> 'bool'"
    )


def test_client_auth_holds_no_logic() -> None:
    tree = ast.parse(Path(client_auth.__file__).read_text())
    for node in tree.body:
        is_docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        is_import = isinstance(node, ast.Import | ast.ImportFrom)
        is_all = isinstance(node, ast.Assign) and [
            t.id for t in node.targets if isinstance(t, ast.Name)
        ] == ["__all__"]
        assert is_docstring or is_import or is_all, ast.dump(node)


def test_only_the_api_package_imports_fastapi() -> None:
    package = Path(client_auth.__file__).parent / "openclaw_billing"
    for path in package.rglob("*.py"):
        if "api" in path.relative_to(package).parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in {"fastapi", "starlette"} for n in names), path
