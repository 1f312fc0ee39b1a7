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


#: The concurrency cap the tests' clients get unless a test asks for the plan's (None): jobs
#: stay queued in tests (no runner reports them), so a test about something else is not
#: stopped by the plan's cap (free 1, starter 2, pro 5). The caps are tested on their own.
UNCAPPED = 1_000_000


def create_client(
    http: httpx.Client,
    plan: str = "pro",
    *,
    name: str | None = None,
    email: str | None = None,
    max_active_jobs: int | None = UNCAPPED,
) -> dict[str, Any]:
    """Create a client through the admin API (``http``: a ``TestClient``, or an
    ``httpx.Client`` with the base URL of a running gateway); returns the create response
    (with api_key). ``max_active_jobs``: the client's own cap (None: the plan's)."""
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
    if max_active_jobs is not None:
        policy = http.put(
            f"/api/admin/clients/{body['client_id']}/policy",
            headers={"X-Auth-Token": ADMIN_TOKEN},
            json={
                "rate_limit_per_minute": None,
                "ip_allowlist": [],
                "max_active_jobs": max_active_jobs,
            },
        )
        assert policy.status_code == 200, policy.text
    return body


def create_client_at(
    base: str, plan: str = "pro", *, max_active_jobs: int | None = UNCAPPED
) -> dict[str, Any]:
    """:func:`create_client` on the gateway running at ``base``."""
    with httpx.Client(base_url=base) as http:
        return create_client(http, plan, max_active_jobs=max_active_jobs)


def submit_job(http: TestClient, api_key: str, **overrides: Any) -> Any:
    return http.post("/api/intake", headers={"X-Client-Key": api_key}, json=JOB_BODY | overrides)
