"""Redis replies as text: clients may be built with or without ``decode_responses``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def text_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A hash reply with text keys and values."""
    return {text(key): text(value) for key, value in raw.items()}
