"""SSRF protection: addresses in every spelling, at validation and after resolution."""

from __future__ import annotations

import socket

import pytest

from workers.addresses import AddressPolicy, literal_address
from workers.errors import PermanentProviderError, SpecError
from workers.spec import validate_spec
from workers.token_client import TokenClient

CC = {"name": "svc", "grant_type": "client_credentials", "client_id": "id", "client_secret": "s"}


@pytest.mark.parametrize(("host", "address"), [
    ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("[::ffff:127.0.0.1]", "127.0.0.1"), ("167772161", "10.0.0.1"), ("[fd00:ec2::254]", "fd00:ec2::254"),
    ("idp.example", None),
])
def test_literal_addresses_in_every_spelling(host: str, address: str | None) -> None:
    """Decimal, hex, octal and IPv4-mapped forms are read as the address they denote."""
    found = literal_address(host)
    assert (str(found) if found else None) == address


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data", "https://[fd00:ec2::254]/t", "https://[fe80::1]/t",
    "https://10.1.2.3/t", "https://[::ffff:10.0.0.1]/t", "https://167772161/t", "https://192.168.0.1/t",
    "https://100.64.0.1/t", "https://0.0.0.0/t", "https://172.16.5.5/t",
])
def test_forbidden_addresses_are_refused_at_validation(url: str) -> None:
    """Link-local, metadata and private addresses are refused, the field named."""
    with pytest.raises(SpecError) as caught:
        validate_spec({**CC, "token_url": url})
    assert "token_url" in caught.value.errors and "must not point at" in str(caught.value)


def test_allowed_networks_open_private_ranges_but_never_metadata() -> None:
    """An operator may allow 10.0.0.0/8; 169.254.169.254 stays refused whatever is allowed."""
    policy = AddressPolicy.from_strings(["10.0.0.0/8", "169.254.0.0/16"])
    assert validate_spec({**CC, "token_url": "https://10.1.2.3/t"}, addresses=policy).token_url
    with pytest.raises(SpecError):
        validate_spec({**CC, "token_url": "https://169.254.169.254/t"}, addresses=policy)


def test_loopback_stays_allowed_in_any_spelling() -> None:
    """Local identity providers and tests use loopback."""
    for url in ("https://2130706433/t", "http://[::ffff:127.0.0.1]:8080/t", "http://127.0.0.2/t"):
        assert validate_spec({**CC, "token_url": url}).token_url == url


def resolver(answer: str):
    def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        family = socket.AF_INET6 if ":" in answer else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (answer, port))]
    return resolve


@pytest.mark.parametrize("answer", ["169.254.169.254", "10.0.0.7", "::ffff:192.168.1.1", "fd00:ec2::254"])
def test_a_name_resolving_to_a_forbidden_address_is_refused_before_any_request(answer: str) -> None:
    """Validation passes a hostname; the request-time lookup finds the bad address and sends nothing."""
    spec = validate_spec({**CC, "token_url": "https://idp.example/token"})
    sent: list[object] = []

    class Session:
        def post(self, *args: object, **kwargs: object) -> None:
            sent.append(args)

    client = TokenClient(session=Session(), clock=lambda: 0.0,  # type: ignore[arg-type]
                         addresses=AddressPolicy(resolve=resolver(answer)))
    with pytest.raises(PermanentProviderError) as caught:
        client.client_credentials(spec)
    assert caught.value.error == "forbidden_address" and "idp.example resolves to" in str(caught.value)
    assert sent == []
