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
    "device_authorization_url": "device_authorization_endpoint",
}


def metadata_urls(issuer: str) -> list[str]:
    """Where the metadata may be: RFC 8414 §3.1 inserts the well-known part, OpenID appends it."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", ""))
    openid = urlunsplit((parts.scheme, parts.netloc, path + "/.well-known/openid-configuration", "", ""))
    return [rfc8414, openid] if rfc8414 != openid else [rfc8414]


def discover(client: TokenClient, issuer: str) -> dict[str, Any]:
    """The issuer's endpoints as spec fields, and the client authentication methods its token endpoint takes
    (``auth_methods``, when it says); raises SpecError naming ``issuer`` when none can be had."""
    problems: list[str] = []
    for url in metadata_urls(issuer):
        try:
            metadata = client.get_json(url, f"metadata at {url}")
        except ProviderError as error:
            problems.append(str(error))
            continue
        return endpoints_from(metadata, issuer)
    raise SpecError({"issuer": ["no usable metadata: " + "; ".join(problems)]})


def endpoints_from(metadata: Mapping[str, Any], issuer: str) -> dict[str, Any]:
    claimed = metadata.get("issuer")
    if claimed != issuer:
        raise SpecError({"issuer": [f"the metadata names issuer {claimed!r}, not {issuer!r}; refused"]})
    found = {field: value for field, key in ENDPOINTS.items() if isinstance(value := metadata.get(key), str) and value}
    if "token_url" not in found:
        raise SpecError({"issuer": ["the metadata has no token_endpoint"]})
    methods = metadata.get("token_endpoint_auth_methods_supported")
    result: dict[str, Any] = dict(found)
    aliases = metadata.get("mtls_endpoint_aliases")
    if isinstance(aliases, Mapping):
        result["mtls_aliases"] = {
            field: value for field, key in ENDPOINTS.items() if isinstance(value := aliases.get(key), str) and value
        }
    if isinstance(methods, list):
        result["auth_methods"] = tuple(method for method in methods if isinstance(method, str))
    return result


# The order methods are preferred in, where a spec holds what several need: a key or a certificate proves
# more than a shared secret, and HTTP Basic is what RFC 8414 §2 presumes when a server names none.
PREFERENCE = (
    ("private_key_jwt", "private_key"),
    ("tls_client_auth", "client_certificate"),
    ("client_secret_basic", "client_secret"),
    ("client_secret_post", "client_secret"),
    ("client_secret_jwt", "client_secret"),
)


def choose_auth_method(supported: tuple[str, ...], spec: Mapping[str, Any]) -> str | None:
    """The method a spec without ``auth_method`` uses at a server taking ``supported`` (RFC 8414 §2); None:
    nothing it holds fits, and validation says what is missing."""
    for method, needs in PREFERENCE:
        if method in supported and spec.get(needs):
            return method
    if "none" in supported and not spec.get("client_secret"):
        return "none"
    return None
