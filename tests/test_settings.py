from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from openclaw_billing.settings import DEFAULT_BILLING_DB, Settings, get_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "OPENCLAW_ADMIN_TOKEN",
        "OPENCLAW_BILLING_DB",
        "OPENCLAW_GATEWAY_PORT",
        "STRIPE_SECRET_KEY",
        "STRIPE_API_BASE",
    ):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults_have_no_admin_token_and_a_state_dir_store() -> None:
    settings = Settings()
    assert settings.admin_token is None
    assert settings.billing_db == DEFAULT_BILLING_DB
    assert "/tmp" not in settings.billing_db
    assert settings.billing_db.startswith("~/.openclaw/billing/")
    assert settings.gateway_port == 18789
    assert settings.stripe_secret_key is None


@pytest.mark.parametrize("token", ["your-secret-admin-token", "changethis", "short-token"])
def test_placeholder_and_short_admin_tokens_are_refused(
    monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    monkeypatch.setenv("OPENCLAW_ADMIN_TOKEN", token)
    with pytest.raises(ValidationError, match="OPENCLAW_ADMIN_TOKEN"):
        Settings()


def test_blank_secrets_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCLAW_ADMIN_TOKEN", "   ")
    monkeypatch.setenv("STRIPE_SECRET_KEY", "")
    settings = Settings()
    assert settings.admin_token is None
    assert settings.stripe_secret_key is None


def test_environment_is_read_and_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCLAW_ADMIN_TOKEN", "a-real-token-of-enough-length")
    monkeypatch.setenv("OPENCLAW_GATEWAY_PORT", "19000")
    settings = get_settings()
    assert settings.gateway_port == 19000
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "a-real-token-of-enough-length"
    assert "a-real-token" not in repr(settings)
    assert get_settings() is settings  # cached


def test_invalid_port_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCLAW_GATEWAY_PORT", "70000")
    with pytest.raises(ValidationError):
        Settings()
