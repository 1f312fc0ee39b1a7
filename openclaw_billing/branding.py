"""The white-label logo (``OPENCLAW_BRAND_LOGO``): a PNG, JPEG, SVG or WebP file of at most
:data:`MAX_LOGO_BYTES`, whose type is read from its content and must agree with its extension.

The settings check the file when they are built (a missing, unreadable, oversized or
mistyped file stops the start with a message naming it); the pages read it again when they
serve it, so a file replaced while the gateway runs is served as it is now, or refused. No
FastAPI here: :mod:`openclaw_billing.settings` imports this module.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path

#: The largest logo accepted, in bytes (a header image, not a photograph).
MAX_LOGO_BYTES = 512 * 1024
#: The media type each accepted extension names.
LOGO_EXTENSIONS = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}
SVG = "image/svg+xml"

#: What an SVG file may hold before its root element: a byte-order mark, an XML declaration,
#: comments and a DOCTYPE without an internal subset (no entity definitions).
_SVG_START = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*\?>\s*)?(?:(?:<!--.*?-->|<!DOCTYPE svg[^\[>]*>)\s*)*"
    rb"<svg[\s>/]",
    re.DOTALL | re.IGNORECASE,
)
#: How much of an SVG file the check reads for its root element.
_SVG_HEAD_BYTES = 4096


class LogoRefused(ValueError):
    """The file cannot be the logo; the message says why and names the file."""


@dataclass(frozen=True)
class Logo:
    content: bytes
    media_type: str


def media_type_of(content: bytes) -> str | None:
    """The image type ``content`` is, read from its first bytes; None if none accepted."""
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(content) >= 12 and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    if _SVG_START.match(content[:_SVG_HEAD_BYTES]):
        return SVG
    return None


def read_logo(path: Path) -> Logo:
    """The logo file at ``path``, checked: a regular, readable file of at most
    :data:`MAX_LOGO_BYTES` whose content is the image type its extension names. Raises
    :class:`LogoRefused`."""
    expected = LOGO_EXTENSIONS.get(path.suffix.lower())
    if expected is None:
        names = ", ".join(sorted(LOGO_EXTENSIONS))
        raise LogoRefused(f"{path}: the logo must be a file ending in {names}")
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a directory, or a FIFO that would block
            raise LogoRefused(f"{path} is not a regular file")
        with path.open("rb") as file:
            content = file.read(MAX_LOGO_BYTES + 1)
    except OSError as exc:
        raise LogoRefused(f"{path} cannot be read: {exc.strerror or exc}") from None
    if len(content) > MAX_LOGO_BYTES:
        raise LogoRefused(f"{path} is larger than {MAX_LOGO_BYTES // 1024} KB")
    found = media_type_of(content)
    if found is None:
        raise LogoRefused(f"{path} is not a PNG, JPEG, SVG or WebP image")
    if found != expected:
        raise LogoRefused(f"{path} holds {found}, not the {expected} its extension names")
    return Logo(content, found)
