from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import ValidationError

from openclaw_billing.settings import (
    DEFAULT_BILLING_DB,
    MAX_HOLD_TTL_SECONDS,
    MAX_SWEEP_SECONDS,
    Settings,
    get_settings,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "OPENCLAW_ADMIN_TOKEN",
        "OPENCLAW_BILLING_DB",
        "OPENCLAW_GATEWAY_PORT",
        "STRIPE_SECRET_KEY",
        "STRIPE_API_BASE",
        "OPENCLAW_HOLD_TTL_SECONDS",
        "OPENCLAW_SWEEP_SECONDS",
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


def test_holds_keep_their_plans_time_to_live_and_sweep_every_30_s_by_default() -> None:
    settings = Settings()
    assert settings.hold_ttl_seconds is None
    assert settings.hold_ttl is None
    assert settings.sweep_seconds == 30


@pytest.mark.parametrize(
    ("value", "ttl"),
    [("1", timedelta(seconds=1)), ("2592000", timedelta(days=30)), (" ", None)],
)
def test_a_hold_time_to_live_for_every_plan_is_1_s_to_30_days(
    monkeypatch: pytest.MonkeyPatch, value: str, ttl: timedelta | None
) -> None:
    monkeypatch.setenv("OPENCLAW_HOLD_TTL_SECONDS", value)
    assert Settings().hold_ttl == ttl


@pytest.mark.parametrize(("value", "seconds"), [("1", 1.0), ("2.5", 2.5), ("3600", 3600.0)])
def test_the_sweep_interval_is_1_s_to_an_hour(
    monkeypatch: pytest.MonkeyPatch, value: str, seconds: float
) -> None:
    monkeypatch.setenv("OPENCLAW_SWEEP_SECONDS", value)
    assert Settings().sweep_seconds == seconds


@pytest.mark.parametrize(
    ("name", "value"),
    [
        *(
            ("OPENCLAW_HOLD_TTL_SECONDS", value)
            for value in ["0", "-5", str(MAX_HOLD_TTL_SECONDS + 1), "1.5", "1h"]
        ),
        *(
            ("OPENCLAW_SWEEP_SECONDS", value)
            for value in ["0.5", "0", str(MAX_SWEEP_SECONDS + 1), "nan", "inf", ""]
        ),
    ],
)
def test_a_time_to_live_or_sweep_interval_out_of_bounds_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name):
        Settings()
