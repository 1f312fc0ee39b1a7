"""Storage backends, chosen from one URL (``OPENCLAW_BILLING_DB``).

* a plain path or ``json:///abs/path`` / ``json://~/rel`` -> :class:`JsonFileStore` (default)

SQLite and PostgreSQL arrive with the scale-out storage work; until then their URLs are a
configuration error, raised at start with the list of what is supported.
"""

from __future__ import annotations

from ..errors import ConfigurationError
from .base import Store
from .json_file import JsonFileStore

__all__ = ["JsonFileStore", "Store", "open_store"]


def open_store(url: str, *, lock_timeout: float = 10.0) -> Store:
    """Open the store a URL names. Raises ``ConfigurationError`` for an unknown scheme and
    ``StoreCorrupt`` for a file that does not parse."""
    if url.startswith("json://"):
        return JsonFileStore(url.removeprefix("json://"), lock_timeout=lock_timeout)
    scheme, sep, _ = url.partition("://")
    if sep:
        raise ConfigurationError(
            f"OPENCLAW_BILLING_DB uses the unsupported scheme {scheme!r}; this release supports "
            "a file path or a json:// URL"
        )
    return JsonFileStore(url, lock_timeout=lock_timeout)
