"""How task arguments are shown in Flower, events and logs: names yes, secrets never."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Spec fields whose values may be shown; every other value is hidden, so a
# misspelt secret field is hidden too.
SHOWN_FIELDS = frozenset(
    {
        "name",
        "grant_type",
        "client_id",
        "token_url",
        "auth_url",
        "refresh_url",
        "scopes",
        "auth_method",
        "pkce",
        "provider",
        "issuer",
        "revocation_url",
        # status-change events
        "id",
        "old_status",
        "new_status",
        "at",
    }
)
HIDDEN = "<redacted>"


def describe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: describe(val) if key in SHOWN_FIELDS else HIDDEN for key, val in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Sequence):
        return [describe(item) for item in value]
    return HIDDEN


def args_repr(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """``argsrepr`` and ``kwargsrepr`` for a task message of ours."""
    shown_args = tuple(describe(arg) for arg in args)
    shown_kwargs = {key: describe(val) if key in ("planned_at", "name") else HIDDEN for key, val in kwargs.items()}
    return repr(shown_args), repr(shown_kwargs)
