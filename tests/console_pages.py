"""What the tests of the console's pages about one client share: a signed-in console with a
client to act on (:func:`open_console`), its stored state, and hostile text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from openclaw_billing.audit import AuditAction, AuditQuery
from openclaw_billing.service import BillingService
from openclaw_billing.store.base import StripeRef
from tests.factories import create_client
from tests.test_console import CONSOLE, sign_in

HOSTILE = "<img src=x onerror=alert(1)>"
#: How a page shows it (autoescaped).
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
KEY = re.compile(r"oc_live_[0-9a-f]{32}")


@dataclass
class Console:
    """A signed-in console and one client (pro plan) to act on."""

    http: TestClient
    service: BillingService
    csrf: str
    client_id: str
    api_key: str

    @property
    def url(self) -> str:
        return f"{CONSOLE}/clients/{self.client_id}"

    @property
    def key_id(self) -> str:
        return self.service.get_client(self.client_id).api_keys[0].key_id

    def post(self, path: str, data: dict[str, str], *, csrf: bool = True) -> Any:
        body = data | ({"csrf_token": self.csrf} if csrf else {})
        return self.http.post(f"{self.url}{path}", data=body, follow_redirects=False)

    def state(self) -> tuple[dict[str, Any], int]:
        """The client's stored record and the number of audit events: what a refusal keeps."""
        record = self.service.store.get_client(self.client_id)
        assert record is not None
        return record.model_dump(mode="json"), self.service.audit_events(AuditQuery())[1]

    def events(self, action: AuditAction) -> list[Any]:
        wanted = AuditQuery(client_id=self.client_id, action=action)
        return self.service.audit_events(wanted)[0]


def open_console(http: TestClient, service: BillingService) -> Console:
    """Sign in, then create the client "Acme Corp" on the pro plan."""
    csrf = sign_in(http)
    created = create_client(http, "pro", name="Acme Corp")
    return Console(http, service, csrf, created["client_id"], created["api_key"])


def subscribe(service: BillingService, client_id: str, status: str = "active") -> None:
    """Give the client a Stripe subscription, as a verified webhook event would."""

    def change(record: Any) -> None:
        record.stripe_customer_id = "cus_test123"
        record.stripe_subscription_id = "sub_test123"
        record.metadata.subscription_status = status

    now = datetime.now(UTC)
    service.store.apply_stripe_event(
        f"evt_{status}", StripeRef(client_id, None, None), int(now.timestamp()), change, now
    )
