"""openclaw-billing: client authentication and billing for AI-agent job gateways.

The public surface is ``client_auth.py`` at the repository root; this package holds the
implementation, one module per concern (see ``docs/ARCHITECTURE.md``).
"""

import logging

__version__ = "0.1.0"

from .safetext import protect_loggers

#: Every module logs through this logger (or a child of it); it never sees a key or a token.
logger = logging.getLogger("openclaw_billing")
#: No log line carries a raw control character from input.
protect_loggers()
