"""Webhook signatures: what receivers check."""

from __future__ import annotations

from workers.ops.notifications import SIGNATURE_TOLERANCE, sign, verify

BODY = b'{"name":"crm","new_status":"needs_reauth"}'


def test_a_signature_verifies_only_with_the_same_secret_body_and_time() -> None:
    """Changing the secret, one byte of the body or the timestamp breaks the signature."""
    signature = sign("s3cret", "1700000000", BODY)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify("s3cret", "1700000000", BODY, signature, now=1700000010)
    assert not verify("other", "1700000000", BODY, signature, now=1700000010)
    assert not verify("s3cret", "1700000000", BODY.replace(b"crm", b"crn"), signature, now=1700000010)
    assert not verify("s3cret", "1700000001", BODY, signature, now=1700000010)


def test_an_old_signature_is_a_replay() -> None:
    """A correct signature older than the tolerance is refused; a non-numeric timestamp too."""
    signature = sign("s3cret", "1700000000", BODY)
    assert not verify("s3cret", "1700000000", BODY, signature, now=1700000000 + SIGNATURE_TOLERANCE + 1)
    assert not verify("s3cret", "17e8", BODY, sign("s3cret", "17e8", BODY), now=1700000000)
