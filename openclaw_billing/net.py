"""Client addresses: the TCP peer, or ``X-Forwarded-For`` from a configured trusted proxy only.

Used by brute-force throttling, the audit log and per-client IP allowlists, so all three agree
on who is asking. Nothing here imports FastAPI.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: What a request with no usable peer address (a test transport, a Unix socket) is called.
UNKNOWN_ADDRESS = "unknown"


def parse_networks(
    value: str | Iterable[str], setting: str = "network list"
) -> tuple[IPNetwork, ...]:
    """Parse IPs or CIDRs (comma-separated string or a list); a bare IP is a /32 or /128.

    Raises ``ValueError`` naming ``setting`` and the bad entry. Host bits are refused
    (``10.0.0.1/8``) because they usually mean a typo."""
    items = value.split(",") if isinstance(value, str) else list(value)
    networks: list[IPNetwork] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ValueError(f"{setting}: {item!r} is not an IP address or CIDR ({exc})") from None
    return tuple(networks)


def parse_address(value: str | None) -> IPAddress | None:
    if not value:
        return None
    try:
        return ipaddress.ip_address(value.strip().split("%", 1)[0])
    except ValueError:
        return None


def _in(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def resolve_client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[IPNetwork]
) -> str:
    """The address a request comes from, as a normalised string.

    Without trusted proxies the TCP peer is the answer and ``X-Forwarded-For`` is ignored (a
    client could write anything there). When the peer is a trusted proxy, the header is walked
    from the right, skipping trusted proxies; the first address that is not one is the client.
    An unparsable entry stops the walk at the last trusted hop, never at a forged value."""
    peer_address = parse_address(peer)
    if peer_address is None:
        return peer or UNKNOWN_ADDRESS
    address: IPAddress = peer_address
    if not trusted_proxies or not forwarded_for or not _in(address, trusted_proxies):
        return str(address)
    for hop in reversed(forwarded_for.split(",")):
        hop_address = parse_address(hop)
        if hop_address is None:
            break
        address = hop_address
        if not _in(address, trusted_proxies):
            break
    return str(address)


def address_allowed(address: str, allowlist: Sequence[IPNetwork]) -> bool:
    """True when ``allowlist`` is empty or holds ``address`` (IPv4-mapped IPv6 included)."""
    if not allowlist:
        return True
    parsed = parse_address(address)
    if parsed is None:
        return False
    mapped = parsed.ipv4_mapped if isinstance(parsed, ipaddress.IPv6Address) else None
    return _in(parsed, allowlist) or (mapped is not None and _in(mapped, allowlist))
