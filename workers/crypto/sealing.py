"""Secrets in task arguments travel sealed: ``{"sealed": "<base64>"}``, a libsodium sealed box.

A sealed box (``crypto_box_seal``) is anonymous public-key encryption: anyone with
the service's public key can make one, in any language, and only the service can
open it. So a secret in a task message is never readable by whoever can read the
broker, its AOF or its RDB file.

The X25519 key pairs are derived from the Fernet keys of ``TOKENKEEPER_SECRET_KEY``
(HKDF-SHA256), so there is no second secret to manage: the first key's pair is the
one producers seal to, and every listed key's pair opens, so rotating the Fernet
keys rotates the public key while boxes sealed to the previous one still open.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from workers.errors import ConfigurationError, SpecError

# Every spec field that holds a secret, whichever grant type uses it (docs/contract.md).
SEALED_FIELDS = ("client_secret", "refresh_token", "private_key", "client_key", "subject_token")
# Changing it changes every derived key pair: boxes sealed before would no longer open.
_HKDF_INFO = b"tokenkeeper sealed-box v1"
HOW_TO_SEAL = (
    'send it sealed as {"sealed": "<base64>"}: pipe it into `tokenkeeper seal`, or use '
    "libsodium crypto_box_seal with the key `tokenkeeper public-key` prints"
)


def derive_private_key(fernet_key: str) -> PrivateKey:
    """The X25519 private key belonging to one Fernet key (url-safe base64 of 32 bytes)."""
    raw = base64.urlsafe_b64decode(fernet_key.encode())
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(raw)
    return PrivateKey(material)


def encode_public_key(key: PublicKey) -> str:
    """Standard base64 (with padding), as libsodium's ``from_base64`` reads with ORIGINAL."""
    return base64.b64encode(bytes(key)).decode()


def decode_public_key(text: str) -> PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigurationError("the public key must be 32 bytes in standard base64 (`tokenkeeper public-key`)")
    return PublicKey(raw)


def public_key_for(fernet_keys: Sequence[str]) -> str:
    """The public key producers seal to: the first (current) Fernet key's."""
    if not fernet_keys:
        raise ConfigurationError("TOKENKEEPER_SECRET_KEY is not set, so there is no public key to derive")
    return encode_public_key(derive_private_key(fernet_keys[0]).public_key)


class Sealer:
    """Seals secrets to one public key; what producers use."""

    def __init__(self, public_key: str) -> None:
        self.public_key = public_key
        self._box = SealedBox(decode_public_key(public_key))

    def seal(self, secret: str) -> dict[str, str]:
        return {"sealed": base64.b64encode(self._box.encrypt(secret.encode())).decode()}

    def seal_fields(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with every plain-text secret field sealed; boxes and other values as they are."""
        return {
            key: self.seal(value) if key in SEALED_FIELDS and isinstance(value, str) else value
            for key, value in data.items()
        }


class Opener:
    """Opens boxes sealed to any of the service's key pairs; what workers use."""

    def __init__(self, fernet_keys: Sequence[str], *, accept_plain: bool = False) -> None:
        if not fernet_keys:
            raise ConfigurationError("TOKENKEEPER_SECRET_KEY is not set: sealed secrets cannot be opened")
        self._boxes = [SealedBox(derive_private_key(key)) for key in fernet_keys]
        self.accept_plain = accept_plain

    def open(self, field: str, value: Any) -> Any:
        """The plain secret of one field; plain text is refused unless the operator accepts it.

        Values that are neither text nor a box (a missing field, ``null`` removing one in
        an update, a number) are returned as they are, for spec validation to judge.
        """
        if isinstance(value, str):
            if self.accept_plain:
                return value
            raise SpecError({field: [f"is plain text; secrets must not travel in clear: {HOW_TO_SEAL}"]})
        if not isinstance(value, Mapping):
            return value
        if set(value) != {"sealed"} or not isinstance(value["sealed"], str):
            raise SpecError({field: ['must be text in a sealed box: {"sealed": "<base64>"}']})
        try:
            box = base64.b64decode(value["sealed"], validate=True)
        except (binascii.Error, ValueError):
            raise SpecError({field: ["the sealed box is not valid standard base64"]}) from None
        for sealed_box in self._boxes:
            try:
                plain = sealed_box.decrypt(box)
            except CryptoError:
                continue
            try:
                return plain.decode()
            except UnicodeDecodeError:
                raise SpecError({field: ["the sealed secret is not UTF-8 text"]}) from None
        raise SpecError(
            {
                field: [
                    "the sealed box does not open with this service's keys (sealed to another key? "
                    "seal again with the key `tokenkeeper public-key` prints)"
                ]
            }
        )

    def open_fields(self, data: Any) -> Any:
        """``data`` with every secret field opened; every field that fails is named at once."""
        if not isinstance(data, Mapping):
            return data  # validation says what is wrong
        opened = dict(data)
        errors: dict[str, list[str]] = {}
        for field in SEALED_FIELDS:
            if field in data:
                try:
                    opened[field] = self.open(field, data[field])
                except SpecError as exc:
                    errors.update(exc.errors)
        if errors:
            raise SpecError(errors)
        return opened
