"""Client API keys: ``oc_live_`` followed by 32 lowercase hex characters.

Only the SHA-256 digest of a key is ever stored; the plaintext is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

KEY_PREFIX = "oc_live_"
KEY_LENGTH = len(KEY_PREFIX) + 32
_KEY_RE = re.compile(r"oc_live_[0-9a-f]{32}")
#: How much of a key is kept for display ("oc_live_1a2b"): enough to tell keys apart, useless
#: for guessing (16 bits of 128).
DISPLAY_LENGTH = len(KEY_PREFIX) + 4


def generate_key() -> str:
    """A new random key from the OS CSPRNG (128 bits)."""
    return KEY_PREFIX + secrets.token_hex(16)


def is_well_formed(key: str) -> bool:
    """True for exactly ``oc_live_`` + 32 lowercase hex characters."""
    return len(key) == KEY_LENGTH and _KEY_RE.fullmatch(key) is not None


def digest_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is stored and looked up."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_LENGTH]


def digests_match(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


def secret_matches(provided: str | None, expected: str) -> bool:
    """Constant-time check of a presented secret (e.g. the admin token).

    Both sides are hashed first, so neither the length nor the content of the expected secret
    leaks through timing; any characters (non-ASCII included) are accepted without error.
    """
    if provided is None:
        return False
    a = hashlib.sha256(provided.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)
