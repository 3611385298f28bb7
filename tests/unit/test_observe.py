"""The test helpers' secret search finds a secret however Celery encodes a message."""

from __future__ import annotations

import base64

import pytest

from tests.support.observe import spellings


@pytest.mark.parametrize("prefix", ["", "a", "ab", "abc", '{"client_secret": "'])
def test_a_secret_inside_a_base64_body_is_found_at_any_alignment(prefix: str) -> None:
    """Whatever precedes the secret in a message body, one of its spellings stands in the encoded body."""
    body = base64.b64encode(f'{prefix}PLANTED-secret-1234", "x": 1}}'.encode())
    assert any(form in body for form in spellings("PLANTED-secret-1234"))
    assert not any(form in body for form in spellings("PLANTED-other-5678")[1:])
