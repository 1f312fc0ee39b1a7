"""Access logs without secrets: query strings are dropped from uvicorn's access log.

A client that puts its key in a URL (``GET /api/billing/usage?api_key=oc_live_...``) is
answered 401 ``credentials_in_query`` (see :mod:`.deps`), but the access log line is written
whatever the answer, and a key in a log file is a leaked key. So every query string, of every
route and whatever its parameters, is replaced by ``?[redacted]`` before the line is written,
and anything in the path that looks like a client key, or is a configured secret (the admin
token, the Stripe keys), is masked too.

:func:`redact_access_log` attaches a filter to the ``uvicorn.access`` logger. It must run in
each worker process after uvicorn has configured logging: the reference gateway calls it in
its lifespan; a host app does the same (calling it again does nothing).
"""

from __future__ import annotations

import logging
import re

from ..settings import get_settings

ACCESS_LOGGER = "uvicorn.access"
REDACTED_QUERY = "?[redacted]"
_KEY = re.compile(r"oc_live_[0-9A-Za-z]*", re.IGNORECASE)


def redacted_target(target: str) -> str:
    """A request target (path and query) as it may be logged: no query, no client key, and
    none of the configured secrets (the admin token typed into a path, say)."""
    path, sep, _ = target.partition("?")
    path = _KEY.sub("oc_live_[redacted]", path)
    for secret in get_settings().secrets:
        path = path.replace(secret, "[redacted]")
    return path + (REDACTED_QUERY if sep else "")


class RedactQueryStrings(logging.Filter):
    """Rewrites the request target of uvicorn's access log records (its third argument:
    ``'%s - "%s %s HTTP/%s" %d'``, client, method, target, version, status). Records of
    another shape pass unchanged; none is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            target = redacted_target(args[2])
            if target != args[2]:
                record.args = (*args[:2], target, *args[3:])
        return True


def redact_access_log(logger_name: str = ACCESS_LOGGER) -> None:
    """Attach :class:`RedactQueryStrings` to the access logger (once)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactQueryStrings) for f in logger.filters):
        logger.addFilter(RedactQueryStrings())
