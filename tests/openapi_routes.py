"""Every route of the gateway, enumerated from its OpenAPI document, for tests that must cover
routes added later without being edited (R11-R14: auth matrices, object-level authorisation,
mass assignment, input bounds).

The OpenAPI document is the app's own list of routes with what each needs: its security scheme
(``ClientKey`` or ``AdminToken``), path and query parameters and its JSON body's schema.
``app.routes`` would not do: FastAPI keeps included routers there as opaque entries.
A route's sample body is its request schema's first OpenAPI example (each input schema
carries one); a route whose schema has none, or with a path parameter :func:`url` cannot
fill, fails the tests that need one, with a message saying what to add.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

ADMIN_SCHEME = "AdminToken"
CLIENT_SCHEME = "ClientKey"
_REF = "#/components/schemas/"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    schemes: frozenset[str]
    path_params: tuple[str, ...]
    query_params: dict[str, dict[str, Any]]
    #: The component name of the JSON body's schema, or None for no parsed body.
    body_schema: str | None
    #: That schema's first example, if it has one.
    body_example: dict[str, Any] | None = None

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
        assert self.body_example is not None, (
            f"{self}: give {self.body_schema} a valid example "
            '(model_config = ConfigDict(json_schema_extra={"examples": [...]}))'
        )
        return dict(self.body_example)

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


def _first_example(components: dict[str, Any], name: str | None) -> dict[str, Any] | None:
    examples = components.get(name, {}).get("examples") if name is not None else None
    return dict(examples[0]) if examples else None


def operations(app: FastAPI) -> list[Operation]:
    """Every operation of ``app``'s OpenAPI document, in document order."""
    found = []
    document = app.openapi()
    components = document["components"]["schemas"]
    for path, item in document["paths"].items():
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
                    body_schema=(body := _body_schema(operation)),
                    body_example=_first_example(components, body),
                )
            )
    return found


def request_schemas(app: FastAPI) -> dict[str, dict[str, Any]]:
    """The component schemas used as request bodies, by name."""
    components = app.openapi()["components"]["schemas"]
    names = {op.body_schema for op in operations(app) if op.body_schema is not None}
    return {name: components[name] for name in sorted(names)}
