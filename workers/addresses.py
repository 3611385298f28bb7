"""Which network addresses a token, auth or refresh URL may point at (SSRF protection).

Loopback is allowed (local identity providers, tests). Link-local and cloud
metadata addresses are never allowed. Private, shared and reserved ranges are
refused unless the operator lists them. Hosts are checked as written (catching
``[::ffff:127.0.0.1]``, decimal ``2130706433`` and hex or octal forms) and again
after DNS resolution, right before each request.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, not covered by is_private


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` denotes if it is an IP literal in any common spelling, else None."""
    bare = host.strip("[]")
    try:
        address: IPAddress = ipaddress.ip_address(bare)
    except ValueError:
        try:
            # inet_aton reads the legacy forms browsers and libc accept: 2130706433, 0x7f.1, 0177.0.0.1.
            address = ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return _unmapped(address)


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


Resolver = Callable[..., list[tuple[Any, ...]]]


@dataclass(frozen=True)
class AddressPolicy:
    allowed_networks: tuple[Network, ...] = ()
    resolve: Resolver = socket.getaddrinfo

    @classmethod
    def from_strings(cls, networks: Iterable[str]) -> AddressPolicy:
        return cls(tuple(ipaddress.ip_network(network, strict=False) for network in networks))

    def problem(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be contacted, or None when it may."""
        address = _unmapped(address)
        if address.is_loopback:
            return None
        if address in METADATA or address.is_link_local:
            return f"{address} is a link-local or cloud metadata address"
        if any(address in network for network in self.allowed_networks):
            return None
        if address.is_private or address.is_reserved or address.is_multicast or address.is_unspecified or (
            isinstance(address, ipaddress.IPv4Address) and address in SHARED
        ):
            return f"{address} is in a private or reserved range (allow it with TOKENKEEPER_ALLOWED_NETWORKS)"
        return None

    def check_host(self, host: str) -> str | None:
        """Checks a host as written; names are checked later, once resolved."""
        address = literal_address(host)
        return self.problem(address) if address is not None else None

    def check_resolved(self, host: str, port: int) -> str | None:
        """Resolve ``host`` and check every address it has; the first problem, or None."""
        address = literal_address(host)
        if address is not None:
            return self.problem(address)
        try:
            infos = self.resolve(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return None  # the request itself will fail with a connection error
        for info in infos:
            problem = self.problem(ipaddress.ip_address(info[4][0].split("%")[0]))
            if problem:
                return f"{host} resolves to {problem}"
        return None
