"""Plain factory functions for tests."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from fastapi.testclient import TestClient

from conftest import ADMIN_TOKEN

_seq = itertools.count(1)

JOB_BODY = {
    "project_name": "Feature Build",
    "description": "Add user authentication",
    "task_type": "feature_build",
    "priority": "P1",
}


def create_client(
    http: httpx.Client, plan: str = "pro", *, name: str | None = None, email: str | None = None
) -> dict[str, Any]:
    """Create a client through the admin API (``http``: a ``TestClient``, or an
    ``httpx.Client`` with the base URL of a running gateway); returns the create response
    (with api_key)."""
    n = next(_seq)
    response = http.post(
        "/api/admin/clients",
        headers={"X-Auth-Token": ADMIN_TOKEN},
        json={
            "name": name or f"Client {n}",
            "email": email or f"client{n}@acmecorp.com",
            "plan": plan,
        },
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def create_client_at(base: str, plan: str = "pro") -> dict[str, Any]:
    """:func:`create_client` on the gateway running at ``base``."""
    with httpx.Client(base_url=base) as http:
        return create_client(http, plan)


def submit_job(http: TestClient, api_key: str, **overrides: Any) -> Any:
    return http.post("/api/intake", headers={"X-Client-Key": api_key}, json=JOB_BODY | overrides)
