from __future__ import annotations

import hashlib
import re

import pytest

from openclaw_billing import keys

KEY_RE = re.compile(r"^oc_live_[0-9a-f]{32}$")


def test_generated_keys_match_the_format_and_are_distinct() -> None:
    generated = [keys.generate_key() for _ in range(5000)]
    assert all(KEY_RE.fullmatch(k) for k in generated)
    assert len(set(generated)) == len(generated)


def test_digest_is_sha256_hex_of_the_key() -> None:
    key = keys.generate_key()
    assert keys.digest_key(key) == hashlib.sha256(key.encode()).hexdigest()


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "oc_live_",
        "oc_live_" + "a" * 31,
        "oc_live_" + "a" * 33,
        "oc_live_" + "A" * 32,
        "oc_test_" + "a" * 32,
        "OC_LIVE_" + "a" * 32,
        " oc_live_" + "a" * 32,
        "oc_live_" + "a" * 31 + "g",
        "oc_live_" + "a" * 31 + "\u0430",  # Cyrillic a
        "oc_live_" + "a" * 32 + "\n",
    ],
)
def test_malformed_keys_are_not_well_formed(candidate: str) -> None:
    assert not keys.is_well_formed(candidate)


def test_display_prefix_keeps_four_hex_characters() -> None:
    key = "oc_live_" + "0123456789abcdef" * 2
    assert keys.display_prefix(key) == "oc_live_0123"


@pytest.mark.parametrize("provided", ["tok\u00e9n", "\udcff", "x" * 10_000, "", "right-token "])
def test_secret_matches_never_raises_and_only_matches_exactly(provided: str) -> None:
    assert keys.secret_matches(provided, "right-token") is False
    assert keys.secret_matches("right-token", "right-token") is True
    assert keys.secret_matches(None, "right-token") is False
