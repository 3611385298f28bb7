"""Endpoints from an issuer: OAuth 2.0 Authorization Server Metadata (RFC 8414) and OpenID discovery.

Metadata whose ``issuer`` is not exactly the issuer asked for is refused (RFC 8414
§3.3): otherwise one server could hand out endpoints in another's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from workers.errors import ProviderError, SpecError
from workers.oauth.token_client import TokenClient

# Spec field <- metadata field.
ENDPOINTS = {
    "auth_url": "authorization_endpoint",
    "token_url": "token_endpoint",
    "revocation_url": "revocation_endpoint",
}


def metadata_urls(issuer: str) -> list[str]:
    """Where the metadata may be: RFC 8414 §3.1 inserts the well-known part, OpenID appends it."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", ""))
    openid = urlunsplit((parts.scheme, parts.netloc, path + "/.well-known/openid-configuration", "", ""))
    return [rfc8414, openid] if rfc8414 != openid else [rfc8414]


def discover(client: TokenClient, issuer: str) -> dict[str, str]:
    """The issuer's endpoints as spec fields; raises SpecError naming ``issuer`` when none can be had."""
    problems: list[str] = []
    for url in metadata_urls(issuer):
        try:
            metadata = client.get_json(url, f"metadata at {url}")
        except ProviderError as error:
            problems.append(str(error))
            continue
        return endpoints_from(metadata, issuer)
    raise SpecError({"issuer": ["no usable metadata: " + "; ".join(problems)]})


def endpoints_from(metadata: Mapping[str, Any], issuer: str) -> dict[str, str]:
    claimed = metadata.get("issuer")
    if claimed != issuer:
        raise SpecError({"issuer": [f"the metadata names issuer {claimed!r}, not {issuer!r}; refused"]})
    found = {field: value for field, key in ENDPOINTS.items() if isinstance(value := metadata.get(key), str) and value}
    if "token_url" not in found:
        raise SpecError({"issuer": ["the metadata has no token_endpoint"]})
    return found
