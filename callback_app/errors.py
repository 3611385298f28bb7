"""Every error becomes a small page, in one place. Messages are ours and secret-free.

A provider's own words (error descriptions, unknown error codes) never reach a page: the domain
code puts them in the log and the integration's history, and a provider error that gets here
anyway is shown by kind only.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from flask import Flask, render_template
from werkzeug.exceptions import HTTPException

from workers.errors import (
    AuthorizationError,
    LinkError,
    NotFoundError,
    PermanentProviderError,
    ProviderError,
    StateError,
    TokenkeeperError,
    TooManyStatesError,
    TransientProviderError,
)

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[TokenkeeperError], int, str]] = [
    (NotFoundError, 404, "Not found"),
    (LinkError, 403, "This link cannot be used"),
    (TooManyStatesError, 429, "Too many attempts"),
    (AuthorizationError, 400, "Authorization did not complete"),
    (PermanentProviderError, 400, "The provider refused"),
    (TransientProviderError, 502, "The provider is not answering"),
    (StateError, 409, "Not possible right now"),
]


def register(app: Flask) -> None:
    app.register_error_handler(TokenkeeperError, _ours)
    app.register_error_handler(CeleryTimeout, _still_working)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(Exception, _unexpected)


def _page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("message.html", title=title, message=message, status=status), status


# Provider errors by kind: their text can carry what the provider (or someone posing as it) wrote.
_PROVIDER_MESSAGES = {
    PermanentProviderError: "The provider refused the request. Nothing was changed; the details are in the "
    "integration's status history.",
    TransientProviderError: "The provider did not answer properly. Nothing was changed; try again from the "
    "link in a few minutes.",
}


def _ours(error: TokenkeeperError) -> Any:
    for kind, status, title in _STATUS:
        if isinstance(error, kind):
            if isinstance(error, ProviderError):
                log.warning("provider error while serving a page: %r", str(error))
                message = next(text for cls, text in _PROVIDER_MESSAGES.items() if isinstance(error, cls))
                return _page(status, title, message)
            return _page(status, title, str(error))
    return _page(400, "Something is wrong", str(error))


def _still_working(error: CeleryTimeout) -> Any:
    return _page(
        202,
        "Still finishing",
        "The provider accepted, and tokenkeeper is still completing the "
        "connection. Check its status in a minute; there is no need to authorize again.",
    )


def _http(error: HTTPException) -> Any:
    return _page(error.code or 500, error.name, error.description or "")


def _unexpected(error: Exception) -> Any:
    # Logged by type only: an exception's text could carry a value we must not show.
    log.error("unexpected %s while serving a page", type(error).__name__)
    if type(error).__module__ == "workers.errors" or isinstance(error, TokenkeeperError):
        return _ours(error)  # type: ignore[arg-type]
    return _page(500, "Internal error", "Something went wrong on our side. Nothing was changed.")
