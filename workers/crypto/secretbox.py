"""Encryption of secrets at rest (client secrets, refresh tokens) with MultiFernet.

The first key encrypts; every key decrypts, so keys can be rotated by putting a
new one first and re-encrypting (:meth:`SecretBox.rotate`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from workers.errors import ConfigurationError


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigurationError(
                "TOKENKEEPER_SECRET_KEY is not set: give one or more Fernet keys (create one with `tokenkeeper genkey`)"
            )
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def seal(self, secrets: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(secrets, sort_keys=True).encode()).decode()

    def open(self, sealed: str) -> dict[str, str]:
        try:
            return json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken:
            raise ConfigurationError(
                "stored secrets cannot be decrypted with any key in TOKENKEEPER_SECRET_KEY"
            ) from None

    def rotate(self, sealed: str) -> str:
        """Re-encrypt ``sealed`` under the first key."""
        try:
            return self._fernet.rotate(sealed.encode()).decode()
        except InvalidToken:
            raise ConfigurationError(
                "stored secrets cannot be decrypted with any key in TOKENKEEPER_SECRET_KEY"
            ) from None


def generate_key() -> str:
    return Fernet.generate_key().decode()
