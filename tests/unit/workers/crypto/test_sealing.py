"""Sealed boxes for secrets in task arguments: derivation, sealing, opening, and the errors that name the field."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet
from nacl.public import PublicKey, SealedBox

from workers.crypto.sealing import SEALED_FIELDS, Opener, Sealer, decode_public_key, public_key_for
from workers.errors import ConfigurationError, SpecError


def new_key() -> str:
    return Fernet.generate_key().decode()


def test_the_public_key_is_derived_from_the_first_fernet_key() -> None:
    """The same Fernet key always gives the same 32-byte standard-base64 public key; a new first key a new one."""
    first, second = new_key(), new_key()
    assert public_key_for([first]) == public_key_for([first, second])
    assert public_key_for([second, first]) != public_key_for([first])
    assert len(base64.b64decode(public_key_for([first]), validate=True)) == 32


def test_a_box_made_by_plain_libsodium_opens() -> None:
    """A box made with crypto_box_seal and only the printed key (what any language does) opens to the secret."""
    key = new_key()
    box = SealedBox(PublicKey(base64.b64decode(public_key_for([key])))).encrypt("s3cret-é".encode())
    opened = Opener([key]).open_fields({"client_secret": {"sealed": base64.b64encode(box).decode()}})
    assert opened == {"client_secret": "s3cret-é"}


def test_sealing_seals_only_plain_secret_fields() -> None:
    """Every contract secret field in plain text is sealed; boxes, nulls and other fields stay as they are."""
    key = new_key()
    sealer = Sealer(public_key_for([key]))
    already = sealer.seal("kept")
    data = {
        "name": "n",
        "client_id": "id",
        **dict.fromkeys(SEALED_FIELDS, "plain"),
        "refresh_token": already,
        "subject_token": None,
    }
    sealed = sealer.seal_fields(data)
    assert sealed["name"] == "n" and sealed["client_id"] == "id" and sealed["subject_token"] is None
    assert sealed["refresh_token"] is already
    assert "plain" not in repr(sealed)
    assert Opener([key]).open_fields(sealed) == {**data, "refresh_token": "kept"}


def test_plain_text_is_refused_naming_the_field_and_how_to_seal() -> None:
    """A plain secret is refused unless plain secrets are accepted; the message names the field and the cure."""
    with pytest.raises(SpecError) as caught:
        Opener([new_key()]).open_fields({"client_secret": "CS-planted", "private_key": "PEM-planted"})
    message = str(caught.value)
    assert "client_secret: is plain text" in message and "private_key: is plain text" in message
    assert "tokenkeeper seal" in message and "crypto_box_seal" in message
    assert "planted" not in message
    assert Opener([new_key()], accept_plain=True).open_fields({"client_secret": "plain"}) == {"client_secret": "plain"}


def test_a_box_for_another_key_or_malformed_is_refused_without_echoing_it() -> None:
    """Another key's box, bad base64, extra keys and non-text plaintext each give a clear error naming the field."""
    key, other = new_key(), new_key()
    opener = Opener([key])
    foreign = Sealer(public_key_for([other])).seal("x")
    cases = [
        (foreign, "sealed to another key?"),
        ({"sealed": "not base64!"}, "not valid standard base64"),
        ({"sealed": foreign["sealed"], "extra": 1}, 'must be text in a sealed box: {"sealed": "<base64>"}'),
        ({"sealed": 5}, "must be text in a sealed box"),
        (
            {
                "sealed": base64.b64encode(
                    SealedBox(PublicKey(base64.b64decode(public_key_for([key])))).encrypt(b"\xff\xfe")
                ).decode()
            },
            "not UTF-8 text",
        ),
    ]
    for value, expected in cases:
        with pytest.raises(SpecError) as caught:
            opener.open_fields({"refresh_token": value})
        assert list(caught.value.errors) == ["refresh_token"]
        assert expected in str(caught.value) and caught.value.field == "refresh_token"


def test_every_listed_key_opens_and_a_removed_one_does_not() -> None:
    """After rotation (new key first) a box sealed to the old public key opens; without the old key it does not."""
    old, new = new_key(), new_key()
    box = Sealer(public_key_for([old])).seal("secret")
    assert Opener([new, old]).open("client_secret", box) == "secret"
    with pytest.raises(SpecError, match="sealed to another key"):
        Opener([new]).open("client_secret", box)


def test_bad_public_keys_and_missing_secret_keys_are_configuration_errors() -> None:
    """A public key that is not 32 bytes of base64, or no secret key at all, is refused with what to do."""
    for text in ("", "abc", base64.b64encode(b"x" * 31).decode()):
        with pytest.raises(ConfigurationError, match="32 bytes in standard base64"):
            decode_public_key(text)
    with pytest.raises(ConfigurationError, match="TOKENKEEPER_SECRET_KEY"):
        public_key_for([])
    with pytest.raises(ConfigurationError, match="TOKENKEEPER_SECRET_KEY"):
        Opener([])
