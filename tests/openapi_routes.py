"""Every route of the gateway, enumerated from its OpenAPI document, for tests that must cover
routes added later without being edited (R11-R14: auth matrices, object-level authorisation,
mass assignment, input bounds).

The OpenAPI document is the app's own list of routes with what each needs: its security scheme
(``ClientKey`` or ``AdminToken``), path and query parameters and its JSON body's schema.
``app.routes`` would not do: FastAPI keeps included routers there as opaque entries.
A route added without a sample body (:data:`SAMPLE_BODIES`) or with a path parameter
:func:`url` cannot fill fails the tests that need one, with a message saying what to add.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

ADMIN_SCHEME = "AdminToken"
CLIENT_SCHEME = "ClientKey"
_REF = "#/components/schemas/"

#: A valid body per request schema (the smallest that passes validation).
SAMPLE_BODIES: dict[str, dict[str, Any]] = {
    "ClientCreate": {"name": "Sample Co", "email": "sample@acmecorp.com", "plan": "free"},
    "CreditsAdd": {"credits": 5, "reason": "sample"},
    "CheckoutRequest": {"plan": "starter"},
    "PortalRequest": {},
    "JobCreate": {"project_name": "Sample", "description": "A sample job"},
    "KeyCreate": {"label": "sample"},
    "KeyRotate": {"grace_seconds": 0},
    "KeyExpiry": {"expires_at": None},
    "PlanChange": {"plan": "starter"},
    "PolicyUpdate": {"rate_limit_per_minute": None, "ip_allowlist": []},
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    schemes: frozenset[str]
    path_params: tuple[str, ...]
    query_params: dict[str, dict[str, Any]]
    #: The component name of the JSON body's schema, or None for no parsed body.
    body_schema: str | None

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCHEME in self.schemes or self.path.startswith("/api/admin")

    @property
    def is_client(self) -> bool:
        return CLIENT_SCHEME in self.schemes

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def sample_body(self) -> dict[str, Any] | None:
        if self.body_schema is None:
            return None
        assert self.body_schema in SAMPLE_BODIES, (
            f"{self}: add a valid {self.body_schema} to tests/openapi_routes.py SAMPLE_BODIES"
        )
        return dict(SAMPLE_BODIES[self.body_schema])

    def url(self, **ids: str) -> str:
        """The path with its parameters filled from ``ids`` (``client_id=...``, ...)."""
        missing = [name for name in self.path_params if name not in ids]
        assert not missing, f"{self}: give a value for {missing} (tests/openapi_routes.py)"
        return self.path.format(**{name: ids[name] for name in self.path_params})


def _body_schema(operation: dict[str, Any]) -> str | None:
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return None
    for candidate in [schema, *schema.get("anyOf", [])]:
        ref = candidate.get("$ref", "")
        if ref.startswith(_REF):
            return str(ref.removeprefix(_REF))
    raise AssertionError(f"a request body without a named schema: {schema}")


def operations(app: FastAPI) -> list[Operation]:
    """Every operation of ``app``'s OpenAPI document, in document order."""
    found = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            params = operation.get("parameters", [])
            schemes = {name for req in operation.get("security", []) for name in req}
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    schemes=frozenset(schemes),
                    path_params=tuple(p["name"] for p in params if p["in"] == "path"),
                    query_params={p["name"]: p["schema"] for p in params if p["in"] == "query"},
                    body_schema=_body_schema(operation),
                )
            )
    return found


def request_schemas(app: FastAPI) -> dict[str, dict[str, Any]]:
    """The component schemas used as request bodies, by name."""
    components = app.openapi()["components"]["schemas"]
    names = {op.body_schema for op in operations(app) if op.body_schema is not None}
    return {name: components[name] for name in sorted(names)}
