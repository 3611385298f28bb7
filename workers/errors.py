"""Every error tokenkeeper raises on purpose, and whether a retry can help.

    TokenkeeperError                 .retryable = False unless said otherwise
    ├── ConfigurationError           settings or keys missing / unusable
    ├── SpecError                    a spec was rejected; .field names what was wrong
    ├── ConflictError                the name is taken; the existing one is untouched
    ├── NotFoundError                no integration of that name
    ├── StateError                   the operation does not fit the integration's status
    ├── TemplateError                a template names an unknown integration or field
    ├── QueryError                   a list's filter, name prefix, cursor or size cannot be used
    ├── AuthorizationError           a consent callback that cannot be used; .status for the page
    │   ├── UnknownStateError        state unknown, expired, already used, or from another browser (400)
    │   ├── ConsentError             the provider or user refused, the issuer or the account is wrong (400)
    │   ├── LinkError                no valid authorization link: missing, forged, expired, spent (403)
    │   └── TooManyStatesError       a link has too many flows under way (429)
    ├── WebhookError                 the webhook did not take an event; .retryable for 5xx, 429, network
    └── ProviderError                the token endpoint did not give us a token
        ├── PermanentProviderError   RFC 6749 §5.2 rejections: stop, needs_reauth
        └── TransientProviderError   5xx, 429, timeouts, garbage: retry with backoff
            │                        (.retry_after honours the provider's Retry-After)
            └── UnclearProviderError an unknown error code, a CDN or firewall page: retried like
                                     any transient error, but only for a bounded time

Messages are written for the person who has to act on them and never carry a
secret: provider text is passed through :func:`scrub` before it lands here.
"""

from __future__ import annotations

from collections.abc import Iterable


class TokenkeeperError(Exception):
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(TokenkeeperError):
    pass


class SpecError(TokenkeeperError):
    def __init__(self, errors: dict[str, list[str]] | str) -> None:
        # A plain message is accepted so Celery can rebuild the error from its text.
        if isinstance(errors, str):
            super().__init__(errors)
            self.errors = {"_spec": [errors]}
            return
        self.errors = errors
        parts = [f"{field}: {'; '.join(messages)}" for field, messages in sorted(errors.items())]
        super().__init__("invalid spec: " + ", ".join(parts))

    @property
    def field(self) -> str:
        return sorted(self.errors)[0]


class StoredDataError(TokenkeeperError):
    """A value stored for an integration cannot be read (corrupted); that integration cannot go on."""


class ConflictError(TokenkeeperError):
    pass


class NotFoundError(TokenkeeperError):
    pass


class StateError(TokenkeeperError):
    pass


class TemplateError(TokenkeeperError):
    pass


class QueryError(TokenkeeperError):
    pass


class AuthorizationError(TokenkeeperError):
    status = 400


class UnknownStateError(AuthorizationError):
    pass


class ConsentError(AuthorizationError):
    pass


class LinkError(AuthorizationError):
    status = 403


class TooManyStatesError(AuthorizationError):
    status = 429


class ProviderError(TokenkeeperError):
    """The provider answered without a usable token.

    ``error`` is the RFC 6749 error code when the provider sent one, else a
    short code of ours (``http_502``, ``timeout``, ``malformed_response``...).
    """

    def __init__(
        self,
        error: str,
        description: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.error = error
        self.description = description
        self.status = status
        self.retry_after = retry_after
        text = error if not description else f"{error}: {description}"
        if status is not None:
            text += f" (HTTP {status})"
        super().__init__(text)


class PermanentProviderError(ProviderError):
    retryable = False


class TransientProviderError(ProviderError):
    retryable = True


class UnclearProviderError(TransientProviderError):
    """An answer that says neither "try later" nor "stop": retried until it has lasted too long."""


def scrub(text: str, secrets: Iterable[str | None], limit: int = 300) -> str:
    """Return ``text`` cut to ``limit`` characters with every known secret masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    if len(text) > limit:
        text = text[:limit] + "…"
    return text


class WebhookError(TokenkeeperError):
    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
