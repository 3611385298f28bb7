"""SSRF protection: addresses in every spelling, at validation and after resolution."""

from __future__ import annotations

import socket

import pytest
import requests

from workers.engine.spec import validate_spec
from workers.errors import PermanentProviderError, SpecError
from workers.oauth.addresses import AddressPolicy, AddressRefused, literal_address
from workers.oauth.token_client import TokenClient

CC = {"name": "svc", "grant_type": "client_credentials", "client_id": "id", "client_secret": "s"}


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "127.0.0.1"),
        ("167772161", "10.0.0.1"),
        ("[fd00:ec2::254]", "fd00:ec2::254"),
        ("idp.example", None),
    ],
)
def test_literal_addresses_in_every_spelling(host: str, address: str | None) -> None:
    """Decimal, hex, octal and IPv4-mapped forms are read as the address they denote."""
    found = literal_address(host)
    assert (str(found) if found else None) == address


def test_a_huge_host_is_read_but_not_remembered() -> None:
    """A megabyte of host (a hostile discovery document) is judged like any other, and forgotten: the
    cache of literal addresses holds short strings only."""
    from workers.oauth import addresses

    before = addresses._literal_address.cache_info().currsize
    padded = "0" * 1_000_000 + "177.0.0.1"  # inet_aton reads any number of leading zeros
    assert str(literal_address(padded)) == "127.0.0.1"
    assert literal_address("x" * 1_000_000) is None
    assert addresses._literal_address.cache_info().currsize == before
    assert str(literal_address("0177.0.0.1")) == "127.0.0.1"
    assert addresses._literal_address.cache_info().currsize in (before, before + 1)


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/t",
        "https://[fe80::1]/t",
        "https://10.1.2.3/t",
        "https://[::ffff:10.0.0.1]/t",
        "https://167772161/t",
        "https://192.168.0.1/t",
        "https://100.64.0.1/t",
        "https://0.0.0.0/t",
        "https://172.16.5.5/t",
    ],
)
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


@pytest.mark.parametrize(
    "url",
    [
        "https://2130706433/t",
        "http://[::ffff:127.0.0.1]:8080/t",
        "http://127.0.0.2/t",
        "http://localhost:8080/t",
        "https://api.localhost/t",
        "http://[::1]/t",
    ],
)
def test_loopback_in_any_spelling_is_refused_by_default_and_allowed_with_the_setting(url: str) -> None:
    """Loopback is refused unless TOKENKEEPER_ALLOW_PRIVATE_NETWORKS is on (local try-outs, tests)."""
    with pytest.raises(SpecError) as caught:
        validate_spec({**CC, "token_url": url})
    assert "TOKENKEEPER_ALLOW_PRIVATE_NETWORKS" in str(caught.value)
    assert validate_spec({**CC, "token_url": url}, addresses=AddressPolicy(allow_private=True)).token_url == url


def test_allowing_private_networks_never_opens_metadata_or_link_local() -> None:
    """With the setting on, 10/8 and loopback are reachable; the metadata address and fe80::/10 are not."""
    policy = AddressPolicy(allow_private=True)
    assert validate_spec({**CC, "token_url": "https://10.1.2.3/t"}, addresses=policy).token_url
    for url in ("https://169.254.169.254/t", "https://[fe80::1]/t", "https://[fd00:ec2::254]/t"):
        with pytest.raises(SpecError):
            validate_spec({**CC, "token_url": url}, addresses=policy)


def resolver(answer: str):
    def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        family = socket.AF_INET6 if ":" in answer else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (answer, port))]

    return resolve


@pytest.mark.parametrize("answer", ["169.254.169.254", "10.0.0.7", "::ffff:192.168.1.1", "fd00:ec2::254", "127.0.0.1"])
def test_a_name_resolving_to_a_forbidden_address_is_refused_before_any_request(answer: str) -> None:
    """Validation passes a hostname; the request-time lookup finds the bad address and sends nothing."""
    spec = validate_spec({**CC, "token_url": "https://idp.example/token"})
    sent: list[object] = []

    def connect(**kwargs: object) -> None:
        sent.append(kwargs)
        raise AssertionError("a connection was asked for")

    session = requests.Session()
    client = TokenClient(session=session, clock=lambda: 0.0, addresses=AddressPolicy(resolve=resolver(answer)))
    for adapter in session.adapters.values():
        adapter.poolmanager.connection_from_host = connect  # type: ignore[attr-defined]
    with pytest.raises(PermanentProviderError) as caught:
        client.client_credentials(spec)
    assert caught.value.error == "forbidden_address" and "idp.example resolves to" in str(caught.value)
    assert sent == []


def test_every_address_of_a_name_must_pass() -> None:
    """A name with one public and one private address is refused: the next lookup may answer in another order."""

    def both(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    with pytest.raises(AddressRefused, match=r"10\.0\.0\.7"):
        AddressPolicy(resolve=both).resolve_checked("idp.example", 443)
    assert str(AddressPolicy(resolve=resolver("93.184.216.34")).resolve_checked("idp.example", 443)) == "93.184.216.34"


@pytest.mark.parametrize("failure", ["gaierror", "empty"])
def test_a_name_that_does_not_resolve_is_refused_with_a_clear_error(failure: str) -> None:
    """No address (NXDOMAIN, or an empty answer) is a refusal that says so, not a request left to fail later."""

    def nothing(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        if failure == "gaierror":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return []

    with pytest.raises(AddressRefused, match=r"idp\.example does not resolve"):
        AddressPolicy(resolve=nothing).resolve_checked("idp.example", 443)
    client = TokenClient(session=requests.Session(), clock=lambda: 0.0, addresses=AddressPolicy(resolve=nothing))
    with pytest.raises(PermanentProviderError) as caught:
        client.client_credentials(validate_spec({**CC, "token_url": "https://idp.example/token"}))
    assert caught.value.error == "forbidden_address" and "does not resolve" in str(caught.value)
