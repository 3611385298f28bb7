"""Authorization link tokens and link lifetimes: pure logic."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from workers.engine.links import LinkSigner, parse_duration
from workers.errors import ConfigurationError, LinkError

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def test_a_link_verifies_for_its_name_until_it_expires() -> None:
    """The name, expiry and new-account flag come back; another name or a later time is refused."""
    signer = LinkSigner([OLD])
    token = signer.issue("drive", 1000, new_account=True)
    link = signer.verify(token, "drive", 999)
    assert (link.name, link.expires_at, link.new_account) == ("drive", 1000, True) and link.id
    with pytest.raises(LinkError, match="another integration"):
        signer.verify(token, "other", 999)
    with pytest.raises(LinkError, match="expired"):
        signer.verify(token, "drive", 1000)


def test_links_survive_key_rotation_and_die_with_the_key() -> None:
    """Signed under the old key: valid while it is listed after the new one, refused once it is dropped."""
    token = LinkSigner([OLD]).issue("drive", 1000)
    assert LinkSigner([NEW, OLD]).verify(token, "drive", 0).name == "drive"
    with pytest.raises(LinkError, match="not issued by this service"):
        LinkSigner([NEW]).verify(token, "drive", 0)


@pytest.mark.parametrize("token", [None, "", "x", "a.b", "é.é", "a" * 2000 + ".b", "..", "!!!.###"])
def test_malformed_links_are_refused_with_a_link_error(token: str | None) -> None:
    """Garbage of any shape is a LinkError (a 403 page), never another exception."""
    with pytest.raises(LinkError):
        LinkSigner([OLD]).verify(token, "drive", 0)


def test_the_link_key_is_not_the_encryption_key() -> None:
    """A MAC made with the raw Fernet key (no label) does not verify: keys are derived per purpose."""
    import base64
    import hashlib
    import hmac

    body = base64.urlsafe_b64encode(b'{"a":false,"e":9999999999,"i":"x","n":"drive"}').rstrip(b"=").decode()
    raw = hmac.new(base64.urlsafe_b64decode(OLD), body.encode(), hashlib.sha256).digest()
    forged = body + "." + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    with pytest.raises(LinkError):
        LinkSigner([OLD]).verify(forged, "drive", 0)


def test_no_key_is_a_configuration_error() -> None:
    """Without TOKENKEEPER_SECRET_KEY links can be neither made nor checked, and the error says so."""
    with pytest.raises(ConfigurationError, match="TOKENKEEPER_SECRET_KEY"):
        LinkSigner([])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("120", 120), ("1.5h", 5400), (" 2H ", 7200)],
)
def test_durations(text: str, seconds: float) -> None:
    """Seconds, minutes, hours, days, or plain seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "0", "0s", "3w", "5 m s", "1e3"])
def test_bad_durations_name_the_value(text: str) -> None:
    """Anything else is a ValueError that quotes the value and shows the accepted forms."""
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)
