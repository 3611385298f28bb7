"""Integration specs the tests register, pointing at a test token server."""

from __future__ import annotations

from tests.support.token_server import TokenServer


def cc_spec(server: TokenServer, name: str = "svc", **extra: object) -> dict[str, object]:
    """A client-credentials spec against ``server``; ``extra`` adds or overrides fields."""
    return {
        "name": name,
        "grant_type": "client_credentials",
        "client_id": "client-id",
        "client_secret": "client-secret",
        "token_url": server.url,
        **extra,
    }


def rt_spec(server: TokenServer, name: str = "user", **extra: object) -> dict[str, object]:
    """A refresh-token spec against ``server``, with a refresh token the server has just issued."""
    return {
        "name": name,
        "grant_type": "refresh_token",
        "client_id": "client-id",
        "client_secret": "client-secret",
        "refresh_url": server.url,
        "refresh_token": server.new_refresh_token(),
        **extra,
    }
