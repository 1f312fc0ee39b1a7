"""The one rule of single-line text, and log lines that never carry a raw control character.

Input is checked at the edge against :data:`ONE_LINE` (names, reasons, labels, job ids, path
ids, query filters). Logs are the second line of defence: :class:`EscapeControls` rewrites
every control character of a log message as an escape (``\\x0a``, ``\\u2028``), so no value
can forge a log line or hide text behind a bidi override, whatever slipped through. It is
installed on every logger of the package when the package is imported (a host app's own
handlers see escaped messages too), and the reference gateway puts it on its handler.
"""

from __future__ import annotations

import logging
import re

__all__ = [
    "CONTROLS",
    "MULTI_LINE",
    "ONE_LINE",
    "PACKAGE_LOGGERS",
    "EscapeControls",
    "escape_controls",
    "is_one_line",
    "protect_loggers",
]

#: :data:`CONTROLS` but for the tab and the line breaks (LF, CR) of text of several lines.
_CONTROLS_IN_TEXT = (
    r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
)
#: Characters no single-line text may hold: C0 and C1 controls and DEL (NUL included), the
#: Unicode line and paragraph separators (U+2028, U+2029) and the bidirectional controls (they
#: would forge or disguise lines in logs, the audit trail and the CLI's tables). A regular
#: expression character class, valid in Python, pydantic (Rust) and JSON Schema alike.
CONTROLS = rf"\x09\x0a\x0d{_CONTROLS_IN_TEXT}"
#: The rule as a pattern: names, reasons, labels, job ids, path ids, query filters.
ONE_LINE = rf"^[^{CONTROLS}]*$"
#: Free text of several lines (a job's description): tabs and line breaks allowed, every
#: other character of :data:`CONTROLS` (NUL, escape sequences, bidi controls) refused.
MULTI_LINE = rf"^[^{_CONTROLS_IN_TEXT}]*$"
#: The rule's characters, and lone surrogates (they cannot be written as UTF-8).
_UNSAFE = re.compile(rf"[{CONTROLS}\ud800-\udfff]")

#: Every logger of the package (a test checks that the source names no other).
PACKAGE_LOGGERS = (
    "openclaw_billing",
    "openclaw_billing.api",
    "openclaw_billing.gateway",
    "openclaw_billing.ratelimit",
    "openclaw_billing.store",
    "openclaw_billing.stripe",
    "openclaw_billing.web",
)


def is_one_line(text: str) -> bool:
    """Whether ``text`` follows :data:`ONE_LINE` and is valid Unicode."""
    return _UNSAFE.search(text) is None


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every character :func:`is_one_line` refuses written as an escape."""
    return _UNSAFE.sub(_escape, text)


class EscapeControls(logging.Filter):
    """Rewrites a record's message with :func:`escape_controls` (the traceback of an
    exception, added by the formatter, keeps its lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = escape_controls(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


_FILTER = EscapeControls()


def protect_loggers(*names: str) -> None:
    """Install the filter on these loggers (default: the package's), once each."""
    for name in names or PACKAGE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, EscapeControls) for f in logger.filters):
            logger.addFilter(_FILTER)
