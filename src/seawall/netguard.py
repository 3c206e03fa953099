"""Outgoing requests to URLs that callers chose, without becoming a proxy into the local network.

Image URLs (:mod:`seawall.images`) and per-request review webhooks (:mod:`seawall.review.notify`)
go where a request says. Both follow the same rules, all here:

* the host is resolved once; every address it resolves to must be public (:func:`is_public`:
  not loopback, private or unique-local (``fc00::/7``), link-local, site-local, shared
  (``100.64.0.0/10``), reserved, multicast or unspecified such as ``0.0.0.0`` and ``::``;
  for an IPv6 address that embeds an IPv4 one — IPv4-mapped ``::ffff:127.0.0.1``,
  IPv4-compatible, 6to4, Teredo, NAT64 — the embedded address too);
* a host that is an address already is read as the operating system would read it, without
  asking the resolver: IPv6 literals, and IPv4 in every form ``inet_aton`` accepts — decimal
  ``2130706433``, hex ``0x7f.1``, octal ``0177.0.0.1``, short ``127.1`` (:func:`literal_address`);
* the connection then goes to a checked address (the caller pins it: the URL's host is replaced
  by the address, the ``Host`` header and the TLS server name stay the host name's), so a DNS
  answer that changes between the check and the connection (DNS rebinding) changes nothing;
* redirects are never followed (a redirect could name any address).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import unquote

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: ``resolver(host, port)`` answers the addresses to try, best first (async: image fetches).
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
#: The same, blocking (webhook deliveries run on a thread of their own).
SyncResolver = Callable[[str, int], Sequence[str]]

#: IPv6 prefixes whose last 32 bits are an IPv4 address: NAT64 (well-known and local-use),
#: IPv4-translated (SIIT) and the deprecated IPv4-compatible form.
_IPV4_IN_LAST_32_BITS = tuple(
    ipaddress.IPv6Network(prefix) for prefix in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96", "::/96")
)
#: What an IPv4 address in one of inet_aton's forms can be made of (digits, hex with 0x, dots).
_NUMERIC_IPV4 = re.compile(r"[0-9a-fA-FxX.]+")


class NonPublicAddress(Exception):
    """The host is, or resolves to, an address that is not public."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, and so could route to."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # (server, client)
    if any(address in prefix for prefix in _IPV4_IN_LAST_32_BITS):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_public(address: IPAddress) -> bool:
    """A globally routable unicast address, and so is any IPv4 address embedded in it.

    ``is_global`` alone is not enough: Python counts multicast (``224.0.0.0/4``, ``ff00::/8``,
    link-local ``ff02::1`` included) and IPv6 site-local (``fec0::/10``, deprecated but still
    routed inside some networks) as global."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        return not address.is_site_local and all(is_public(inner) for inner in embedded_ipv4(address))
    return True


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` is, when it is one (in any form the OS accepts); None for a name.

    >>> str(literal_address("0x7f.1")), str(literal_address("2130706433")), literal_address("example.com")
    ('127.0.0.1', '127.0.0.1', None)
    """
    host = unquote(host.strip("[]"))
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    numeric = host.removesuffix(".")
    if numeric and _NUMERIC_IPV4.fullmatch(numeric):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(numeric))
        except OSError:
            return None
    return None


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the system's order of preference."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_host_sync(host: str, port: int) -> list[str]:
    """:func:`resolve_host`, blocking."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_addresses(addresses: Sequence[str], *, allow_private: bool) -> list[str]:
    """``addresses`` (as connectable strings) if all are public or ``allow_private``; else raise
    :class:`NonPublicAddress`. All of them, not only the one used: a host that answers with any
    private address is refused."""
    checked: list[str] = []
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not allow_private and not is_public(address):
            raise NonPublicAddress(str(address))
        checked.append(text)
    return checked


__all__ = [
    "IPAddress",
    "NonPublicAddress",
    "Resolver",
    "SyncResolver",
    "check_addresses",
    "embedded_ipv4",
    "is_public",
    "literal_address",
    "resolve_host",
    "resolve_host_sync",
]
