"""The HTTP session every outbound request goes through: checked addresses, pinned connections.

:class:`GuardedAdapter` resolves the URL's host once through the
:class:`~workers.addresses.AddressPolicy`, refuses a forbidden or unresolvable
host before anything is sent, and connects to exactly the address it checked.
Nothing resolves the name again between the check and the connect, so a DNS
answer that changes in between (rebinding) cannot steer the request elsewhere.
TLS is still verified against the name in the URL: it is sent as SNI and the
certificate must match it.
"""

from __future__ import annotations

import os
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3 import HTTPConnectionPool

from workers.addresses import AddressPolicy, AddressRefused


class ForbiddenAddressError(requests.exceptions.InvalidURL):
    """The policy refused the request's host; nothing was sent."""


class GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: AddressPolicy, **kwargs: Any) -> None:
        self.policy = policy
        super().__init__(**kwargs)

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: Any,
        proxies: Any = None,
        cert: Any = None,
    ) -> HTTPConnectionPool:
        parts = urlsplit(request.url or "")
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = self.policy.resolve_checked(host, port)
        except (AddressRefused, ValueError) as exc:
            raise ForbiddenAddressError(str(exc), request=request) from None
        if select_proxy(request.url, proxies):
            # The proxy resolves and connects; the check above is all that can be done here.
            return super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        host_params["host"] = str(address)
        if host_params["scheme"] == "https":
            # SNI and the certificate check use the name; the socket goes to the checked address.
            pool_kwargs["server_hostname"] = host
        request.headers["Host"] = parts.netloc.rpartition("@")[2]
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)


def guard(session: requests.Session, policy: AddressPolicy) -> requests.Session:
    """Route every http(s) request of ``session`` through ``policy``; returns the session."""
    for prefix in ("http://", "https://"):
        current = session.adapters.get(prefix)
        if not (isinstance(current, GuardedAdapter) and current.policy == policy):
            session.mount(prefix, GuardedAdapter(policy))
    return session


def guarded_session(policy: AddressPolicy) -> requests.Session:
    """The HTTP session for token, discovery, revocation and webhook requests.

    With no proxy configured in the environment, requests' per-request scan of
    the environment for proxy settings is skipped: it costs about a millisecond a
    request, as much as the request itself on loopback. With a proxy configured,
    requests keeps honouring it (and NO_PROXY) as usual.
    """
    session = requests.Session()
    if not urllib.request.getproxies():
        session.trust_env = False
        # What trust_env would have read besides proxies: a CA bundle for private CAs.
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
    return guard(session, policy)
