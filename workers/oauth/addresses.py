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

import functools
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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


# A DNS name is at most 253 characters; the bracketed IPv6 literal with a zone index fits too.
MAX_REMEMBERED_HOST = 255


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` denotes if it is an IP literal in any common spelling, else None.

    Remembered for hosts of a usual length: it is asked twice for every token request, and addresses
    are immutable. A longer one (a megabyte from a hostile discovery document) is worked out and
    forgotten, so the cache cannot be made to hold more than a thousand short strings.
    """
    return _literal_address(host) if len(host) <= MAX_REMEMBERED_HOST else _literal_address.__wrapped__(host)


@functools.lru_cache(maxsize=1024)
def _literal_address(host: str) -> IPAddress | None:
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


# How long a name's checked address is used for the requests that follow: a lookup (on a thread of
# its own, to bound it) per token request cost more than the request to a near provider, and the
# resolver besides. Every address used was checked; a changed DNS answer is followed this much later.
RESOLVED_FOR = 30.0


class _Resolved:
    """Checked addresses by (host, port), each with the monotonic time it stops being used."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[tuple[str, int], tuple[IPAddress, float]] = {}

    def get(self, key: tuple[str, int]) -> IPAddress | None:
        with self.lock:
            found = self.entries.get(key)
        return found[0] if found is not None and found[1] > time.monotonic() else None

    def put(self, key: tuple[str, int], address: IPAddress, seconds: float) -> None:
        with self.lock:
            if len(self.entries) >= 4096:
                self.entries.clear()
            self.entries[key] = (address, time.monotonic() + seconds)


@dataclass(frozen=True)
class AddressPolicy:
    allowed_networks: tuple[Network, ...] = ()
    # Loopback and every private range (TOKENKEEPER_ALLOW_PRIVATE_NETWORKS).
    allow_private: bool = False
    # The seam tests use to play DNS; getaddrinfo's signature.
    resolve: Resolver = socket.getaddrinfo
    # Seconds a name's checked address is reused (0: resolved before every request).
    resolved_for: float = RESOLVED_FOR
    _resolved: _Resolved = field(default_factory=_Resolved, compare=False, hash=False, repr=False)

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
        reused = self._resolved.get((host, port)) if self.resolved_for > 0 else None
        if reused is not None:
            return reused
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
        if self.resolved_for > 0:
            self._resolved.put((host, port), addresses[0], self.resolved_for)
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
