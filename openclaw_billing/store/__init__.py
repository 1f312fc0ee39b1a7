"""Storage backends, chosen from one URL (``OPENCLAW_BILLING_DB``).

* a plain path or ``json:///abs/path`` / ``json://~/rel`` -> :class:`JsonFileStore` (default)
* ``sqlite:///path/to/billing.db`` -> :class:`SqlStore` on SQLite (WAL)
* ``postgresql+psycopg://user@host/db`` -> :class:`SqlStore` on PostgreSQL (several gateways)

Anything else is a configuration error at start.
"""

from __future__ import annotations

from ..errors import ConfigurationError
from .base import Store
from .json_file import JsonFileStore
from .query import ClientQuery, ClientSort, ClientStatus, StoreOverview

__all__ = [
    "ClientQuery",
    "ClientSort",
    "ClientStatus",
    "JsonFileStore",
    "SqlStore",
    "Store",
    "StoreOverview",
    "open_store",
]

SQL_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")


def open_store(url: str, *, lock_timeout: float = 10.0) -> Store:
    """Open the store a URL names. Raises ``ConfigurationError`` for an unknown scheme and
    ``StoreCorrupt`` for a file that does not parse."""
    if url.startswith("json://"):
        return JsonFileStore(url.removeprefix("json://"), lock_timeout=lock_timeout)
    scheme, sep, _ = url.partition("://")
    if sep and scheme in SQL_SCHEMES:
        from .sql import SqlStore

        return SqlStore(url, lock_timeout=lock_timeout)
    if sep:
        raise ConfigurationError(
            f"OPENCLAW_BILLING_DB uses the unsupported scheme {scheme!r}; use a file path, "
            "json://, sqlite:///path or postgresql+psycopg://..."
        )
    return JsonFileStore(url, lock_timeout=lock_timeout)


def __getattr__(name: str) -> object:
    if name == "SqlStore":  # imported lazily: the JSON default never loads SQLAlchemy
        from .sql import SqlStore

        return SqlStore
    raise AttributeError(name)
