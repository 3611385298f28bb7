"""Which network addresses a token, auth, discovery, revocation or webhook URL may reach (SSRF protection).

Link-local and cloud metadata addresses are never allowed. Loopback, private,
shared and reserved ranges are refused unless the operator allows them: all of
loopback and the private ranges with ``TOKENKEEPER_ALLOW_PRIVATE_NETWORKS``
(local try-outs, tests), or chosen networks with ``TOKENKEEPER_ALLOWED_NETWORKS``.
Hosts are checked as written at validation (catching ``[::ffff:127.0.0.1]``,
decimal ``2130706433``, hex or octal forms, and ``localhost``), and resolved
and checked again right before each request; the connection then goes to the
address that was checked (see :mod:`workers.oauth.transport`), so a name cannot
resolve to one address for the check and another for the connect.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, not covered by is_private
LOOPBACK_NAME = ipaddress.ip_address("127.0.0.1")


class AddressRefused(Exception):
    """A host may not be contacted; the message says why (it names no secret, only the host and address)."""


class ResolutionTimeout(Exception):
    """The name did not resolve in the time left; trying again later can help."""


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


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP literal: where plain ``http://`` cannot be read on the way."""
    if host.lower() == "localhost":
        return True
    address = literal_address(host)
    return address is not None and address.is_loopback


def is_loopback_name(host: str) -> bool:
    """``localhost`` and ``*.localhost`` always mean loopback (RFC 6761 §6.3)."""
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


Resolver = Callable[..., list[tuple[Any, ...]]]


@dataclass(frozen=True)
class AddressPolicy:
    allowed_networks: tuple[Network, ...] = ()
    # Loopback and every private range (TOKENKEEPER_ALLOW_PRIVATE_NETWORKS).
    allow_private: bool = False
    # The seam tests use to play DNS; getaddrinfo's signature.
    resolve: Resolver = socket.getaddrinfo

    @classmethod
    def from_strings(cls, networks: Iterable[str], *, allow_private: bool = False) -> AddressPolicy:
        return cls(tuple(ipaddress.ip_network(network, strict=False) for network in networks), allow_private)

    def problem(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be contacted, or None when it may."""
        address = _unmapped(address)
        if address in METADATA or address.is_link_local:
            return f"{address} is a link-local or cloud metadata address"
        if any(address in network for network in self.allowed_networks):
            return None
        if address.is_multicast or address.is_unspecified:
            return f"{address} is a multicast or unspecified address"
        if address.is_loopback:
            return (
                None
                if self.allow_private
                else (f"{address} is a loopback address (allow it with TOKENKEEPER_ALLOW_PRIVATE_NETWORKS=true)")
            )
        if (
            address.is_private
            or address.is_reserved
            or (isinstance(address, ipaddress.IPv4Address) and address in SHARED)
        ):
            if self.allow_private and not address.is_reserved:
                return None
            return (
                f"{address} is in a private or reserved range (allow it with "
                "TOKENKEEPER_ALLOWED_NETWORKS or TOKENKEEPER_ALLOW_PRIVATE_NETWORKS=true)"
            )
        return None

    def check_host(self, host: str) -> str | None:
        """Checks a host as written; other names are checked when resolved, before each request."""
        if is_loopback_name(host):
            return self.problem(LOOPBACK_NAME)
        address = literal_address(host)
        return self.problem(address) if address is not None else None

    def resolve_checked(self, host: str, port: int, timeout: float | None = None) -> IPAddress:
        """The one address to connect to for ``host``; raises AddressRefused when any address is forbidden.

        Every address the name has is checked, not only the one used: a resolver that
        answers in another order next time must not open a way in. With ``timeout``, a
        lookup that has not answered by then raises ResolutionTimeout.
        """
        problem = self.check_host(host)
        if problem:
            raise AddressRefused(problem)
        address = literal_address(host)
        if address is not None:
            return address
        try:
            infos = self._lookup(host, port, timeout)
        except (socket.gaierror, UnicodeError) as exc:
            raise AddressRefused(f"{host} does not resolve ({exc.__class__.__name__})") from None
        addresses = [_unmapped(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos]
        if not addresses:
            raise AddressRefused(f"{host} does not resolve to any address")
        for found in addresses:
            problem = self.problem(found)
            if problem:
                raise AddressRefused(f"{host} resolves to {problem}")
        return addresses[0]

    def _lookup(self, host: str, port: int, timeout: float | None) -> list[tuple[Any, ...]]:
        if timeout is None:
            return self.resolve(host, port, type=socket.SOCK_STREAM)
        # getaddrinfo cannot be interrupted: it runs in a daemon thread that is left behind if it
        # overruns (the system resolver gives up on its own after its configured timeouts).
        outcome: list[Any] = []

        def lookup() -> None:
            try:
                outcome.append(self.resolve(host, port, type=socket.SOCK_STREAM))
            except Exception as exc:  # noqa: BLE001 -- not swallowed: re-raised in the caller's thread below
                outcome.append(exc)

        thread = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
        thread.start()
        thread.join(max(0.0, timeout))
        if not outcome:
            raise ResolutionTimeout(f"{host} did not resolve within {max(0.0, timeout):.3g}s")
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]
