"""Pin the public surface of client_auth.py: names, signatures and "imports only"."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import client_auth

#: Everything a host gateway needs (gateway.py imports only these, see below).
EXPECTED = [
    "BillingError",
    "BillingService",
    "BodyLimitedRoute",
    "ChargeResult",
    "Charged",
    "ClientCheck",
    "ClientInactive",
    "ClientNotFound",
    "ClientRecord",
    "ConcurrencyLimitReached",
    "ConfigurationError",
    "Conflict",
    "CreditLimitReached",
    "CurrentClient",
    "DeferredClient",
    "ErrorPublic",
    "EscapeControls",
    "FileLock",
    "IllegalTransition",
    "InvalidApiKey",
    "JobNotFound",
    "JobStatePublic",
    "JobStatus",
    "JobStorage",
    "MULTI_LINE",
    "NewJob",
    "NotFound",
    "ONE_LINE",
    "PLANS",
    "PaymentPastDue",
    "QuoteId",
    "Receipt",
    "ReceiptPublic",
    "ServiceDep",
    "StoreUnavailable",
    "StoredJob",
    "SubmitDecision",
    "UtcDatetime",
    "append",
    "appending",
    "can_submit_job",
    "cancel_queued_job",
    "deduct_job_credit",
    "docs_router",
    "ends_torn",
    "get_client_by_api_key",
    "get_rate_limiter",
    "get_service",
    "get_settings",
    "hold_sweeper",
    "install_body_limit",
    "install_error_handlers",
    "open_append",
    "pages_router",
    "private_directory",
    "redact_access_log",
    "refund_job_credit",
    "report_job_outcome",
    "require_client",
    "reserve_job_credit",
    "router",
    "run_billing",
    "set_rate_limiter",
    "set_service",
    "utcnow",
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


def test_only_the_http_packages_import_fastapi() -> None:
    package = Path(client_auth.__file__).parent / "openclaw_billing"
    for path in package.rglob("*.py"):
        if {"api", "web"} & set(path.relative_to(package).parts):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in {"fastapi", "starlette"} for n in names), path


def _package_imports(tree: ast.AST) -> list[str]:
    """Every module of ``openclaw_billing`` an import statement anywhere in ``tree`` names."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [name for name in found if name.split(".")[0] == "openclaw_billing"]


def test_the_facade_is_enough_to_build_a_gateway() -> None:
    """gateway.py, gateway_jobs.py and gateway_jobfile.py, the reference host, import
    everything of the billing module through ``client_auth``: what a host needs is on the
    pinned surface, nothing private."""
    for name in ("gateway.py", "gateway_jobs.py", "gateway_jobfile.py"):
        host = Path(client_auth.__file__).parent / name
        assert _package_imports(ast.parse(host.read_text())) == [], name


def test_the_integration_guide_uses_only_the_facade() -> None:
    """The guide's Python examples import the billing module through ``client_auth`` only."""
    root = Path(client_auth.__file__).parent
    for name in (
        "CLIENT_AUTH_INTEGRATION.md",
        "CLIENT_AUTH_QUICK_START.md",
        "README.md",
        "docs/STRIPE.md",
    ):
        text = (root / name).read_text()
        for block in re.findall(r"^```python\n(.*?)^```", text, re.S | re.M):
            assert _package_imports(ast.parse(block)) == [], f"{name}: {block[:200]}"
