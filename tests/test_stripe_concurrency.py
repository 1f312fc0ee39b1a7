"""R17 and R21 under real uvicorn workers, with the real SDK talking to a local fake Stripe."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ADMIN_TOKEN
from tests.factories import JOB_BODY, create_client_at
from tests.fake_stripe import FakeStripe
from tests.server import running_gateway
from tests.stripe_events import signed, subscription_event, subscription_object
from tests.test_stripe import DAY, PRICES, WEBHOOK_SECRET, stripe_settings


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, FakeStripe]]:
    with (
        FakeStripe() as fake,
        running_gateway(tmp_path, workers=2, extra_env=stripe_settings(fake)) as base,
    ):
        yield base, fake


def _created(
    fake: FakeStripe, client_id: str, plan: str, start: int
) -> tuple[dict[str, Any], tuple[bytes, dict[str, str]]]:
    """A new ``plan`` subscription of ``client_id`` at Stripe (the fake), and its
    ``customer.subscription.created`` delivery, signed."""
    obj = subscription_object(
        subscription="sub_" + client_id.replace("-", "")[:20],
        customer="cus_" + client_id.replace("-", "")[:20],
        price=PRICES[plan],
        status="active",
        period_start=start,
        period_end=start + 30 * DAY,
        created=start,
        client_id=client_id,
        plan=plan,
    )
    fake.subscriptions[obj["id"]] = obj
    event = subscription_event("customer.subscription.created", obj, created=start)
    return obj, signed(event, WEBHOOK_SECRET)


def _detail(base: str, client_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(
        f"{base}/api/admin/clients/{client_id}", headers={"X-Auth-Token": ADMIN_TOKEN}
    ).json()
    return body


@pytest.mark.slow
def test_r17_one_event_delivered_20_times_at_once_is_applied_once(
    gateway: tuple[str, FakeStripe],
) -> None:
    base, fake = gateway
    client = create_client_at(base, "free")
    now = int(time.time())
    _, (payload, headers) = _created(fake, client["client_id"], "pro", now)
    barrier = threading.Barrier(20)
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def deliver() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            barrier.wait(timeout=30)
            response = http.post("/api/billing/webhook", content=payload, headers=headers)
            with lock:
                results.append((response.status_code, response.json().get("outcome", "")))

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert Counter(status for status, _ in results) == {200: 20}
    assert Counter(outcome for _, outcome in results) == {"applied": 1, "duplicate": 19}
    detail = _detail(base, client["client_id"])
    assert (detail["plan"], detail["credits_remaining"]) == ("pro", 200)
    assert len(detail["metadata"]["cycle_history"]) == 1


@pytest.mark.slow
def test_r21_an_upgrade_during_a_burst_is_granted_once(gateway: tuple[str, FakeStripe]) -> None:
    base, fake = gateway
    client = create_client_at(base, "free")
    now = int(time.time())
    obj, (body, signature) = _created(fake, client["client_id"], "starter", now)
    created = httpx.post(f"{base}/api/billing/webhook", content=body, headers=signature)
    assert created.status_code == 200
    assert _detail(base, client["client_id"])["credits_remaining"] == 50

    obj["items"]["data"][0]["price"]["id"] = PRICES["pro"]
    updated = subscription_event("customer.subscription.updated", obj, created=now + 1)
    payload, headers = signed(updated, WEBHOOK_SECRET)
    barrier = threading.Barrier(41)
    statuses: list[int] = []
    lock = threading.Lock()

    def intake() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            barrier.wait(timeout=30)
            response = http.post(
                "/api/intake", headers={"X-Client-Key": client["api_key"]}, json=JOB_BODY
            )
            with lock:
                statuses.append(response.status_code)

    def upgrade() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            barrier.wait(timeout=30)
            for _ in range(3):  # Stripe retries too: the grant must still land once
                response = http.post("/api/billing/webhook", content=payload, headers=headers)
                with lock:
                    statuses.append(response.status_code)

    threads = [threading.Thread(target=intake) for _ in range(40)]
    threads.append(threading.Thread(target=upgrade))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    counts = Counter(statuses)
    assert counts == {201: 40, 200: 3}, counts
    detail = _detail(base, client["client_id"])
    assert detail["plan"] == "pro"
    grants = [a for a in detail["metadata"]["credit_adjustments"] if a["amount"] == 150]
    assert len(grants) == 1
    assert detail["credits_remaining"] == 50 + 150 - 40
    assert len(detail["metadata"]["cost_log"]) == 40
